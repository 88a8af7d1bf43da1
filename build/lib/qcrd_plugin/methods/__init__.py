"""Distillation methods behind one interface (:class:`Method`), looked up by name.

The names live in ``qcrd_plugin.registry.METHODS`` (re-exported here), which ``config.py`` and
the CLI read without importing torch; each method's module is imported on first lookup. A new
method is one class here plus one ``METHODS.register`` line (or the decorator form).
"""

from __future__ import annotations

from ..registry import METHODS
from .base import LossOutput, Method


def build_method(cfg, student, tokenizer, device, judge=None) -> Method:
    """Instantiate the method named by ``cfg.method.name``."""
    return METHODS[cfg.method.name](cfg, student, tokenizer, device, judge=judge)


__all__ = ["LossOutput", "Method", "METHODS", "build_method"]
