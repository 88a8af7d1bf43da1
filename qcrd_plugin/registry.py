"""Registries of the names a user picks: distillation methods and teacher kinds.

Every list of these names (config ``choices``, the CLI's ``click.Choice``s and help texts, the
leaderboard's method order) is read from here, so registering a name is the only step that
makes it known everywhere.

Why the names are registered here and not next to their classes: ``config.py`` validates a
name and must stay importable without torch, while the method and teacher modules import torch.
So each entry names its implementation by a lazy ``"module:attr"`` path, resolved on first
lookup, as lm-evaluation-harness's ``api/registry.py`` does for its models. This module imports
nothing above ``errors``; the heavy modules import it, never the other way round. Task families
have their registry in ``questions.FAMILIES``, which is light already.

A plugin registers more before the CLI or a run reads the config::

    from qcrd_plugin.registry import METHODS

    @METHODS.register("mine", help="what it trains")
    class Mine(Method): ...                       # or METHODS.register("mine", "pkg.mod:Mine")
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Iterator

from .errors import UserInputError


class UnknownName(UserInputError, KeyError):
    """A name no entry of a registry has; the message lists the names there are. A KeyError, so
    ``registry.get(name, default)`` works as on a dict."""

    def __str__(self) -> str:  # KeyError's own __str__ would show the message quoted
        return str(self.args[0]) if self.args else ""


@dataclass
class Entry:
    """One registered name: its implementation (an object or a lazy ``"module:attr"`` path), a
    short description for help texts, and tags to select a subset (e.g. ``llm=True``)."""

    name: str
    target: Any
    help: str = ""
    tags: dict = field(default_factory=dict)


class Registry(Mapping):
    """An ordered mapping of names to implementations; lazy paths are imported on first lookup.

    Iteration, ``in`` and :meth:`names` never import anything, so the light modules can list
    and check names; ``registry[name]`` returns the implementation.
    """

    def __init__(self, kind: str, package: str | None = __package__):
        self.kind = kind  # "method", "teacher kind": used in messages
        self._package = package  # relative lazy paths (".methods.dss:DSS") resolve against it
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, target: Any = None, *, help: str = "", replace: bool = False, **tags) -> Any:
        """Register ``target`` under ``name``; without a target, return a decorator that
        registers what it decorates. A name is registered once unless ``replace``."""
        if target is None:
            return lambda obj: self.register(name, obj, help=help, replace=replace, **tags)
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is registered already")
        self._entries[name] = Entry(name, target, help, tags)
        return target

    def unregister(self, name: str) -> None:
        """Forget ``name`` (a test's temporary entry, a plugin replacing a default)."""
        del self._entries[name]

    def names(self, **tags) -> tuple[str, ...]:
        """Registered names in registration order; with tags, only the entries that carry them."""
        return tuple(n for n, e in self._entries.items() if all(e.tags.get(k) == v for k, v in tags.items()))

    def help(self, name: str) -> str:
        """The short description ``name`` was registered with."""
        return self._entries[name].help

    def describe(self, **tags) -> str:
        """``a (its help), b (its help), ...``: the names for a help text."""
        return ", ".join(f"{n} ({self.help(n)})" if self.help(n) else n for n in self.names(**tags))

    def __getitem__(self, name: str) -> Any:
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownName(f"unknown {self.kind} {name!r}; expected one of {', '.join(self._entries)}")
        if isinstance(entry.target, str):
            module, _, attr = entry.target.partition(":")
            entry.target = getattr(importlib.import_module(module, self._package), attr)
        return entry.target

    def __contains__(self, name: object) -> bool:  # Mapping's would import the implementation
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


# The order is the leaderboard's row order: from the plainest baseline to QCRD.
METHODS = Registry("method")
# rationales=False: trains on labels alone, so the teacher is asked only for its labels (task.label_source).
METHODS.register("finetune", ".methods.finetune:Finetune", help="label only", rationales=False)
METHODS.register("single_task", ".methods.single_task:SingleTask", help="rationale then answer as one target")
METHODS.register("dss", ".methods.dss:DSS", help="distilling step-by-step: label and rationale as two tasks")
METHODS.register("mi", ".methods.mi:MI", help="dss + a mutual-information term")
METHODS.register("qcrd", ".methods.qcrd:QCRD", help="quality-guided contrastive rationale distillation")

# A teacher builder takes (cfg: TeacherConfig, data: TaskData, cache_path, progress, device).
# llm=True: a language model behind it (needs teacher.model, answers are cached, it can judge).
TEACHERS = Registry("teacher kind")
TEACHERS.register("simulated", ".teachers:simulated_teacher", help="synth only")
TEACHERS.register("pool", ".teachers:pool_teacher", help="JSONL pools")
TEACHERS.register("hf", ".teachers:hf_teacher", help="local causal LM", llm=True)
TEACHERS.register("openai", ".teachers:openai_teacher", help="chat-completions endpoint", llm=True)
