"""Distillation methods behind one interface (:class:`Method`), looked up by name."""

from __future__ import annotations

from ..config import METHOD_NAMES
from .base import LossOutput, Method
from .dss import DSS
from .finetune import Finetune
from .mi import MI
from .qcrd import QCRD
from .single_task import SingleTask

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (Finetune, SingleTask, DSS, MI, QCRD)}
assert tuple(METHODS) == METHOD_NAMES, "config.METHOD_NAMES and the method registry must list the same methods"


def build_method(cfg, student, tokenizer, device, judge=None) -> Method:
    """Instantiate the method named by ``cfg.method.name``."""
    return METHODS[cfg.method.name](cfg, student, tokenizer, device, judge=judge)


__all__ = ["LossOutput", "Method", "METHODS", "build_method"]
