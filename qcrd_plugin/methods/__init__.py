"""Distillation methods behind one interface (:class:`Method`), looked up by name."""

from __future__ import annotations

from .base import LossOutput, Method
from .dss import DSS
from .finetune import Finetune
from .qcrd import QCRD
from .single_task import SingleTask

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (Finetune, SingleTask, DSS, QCRD)}


def build_method(cfg, student, tokenizer, device, judge=None) -> Method:
    """Instantiate the method named by ``cfg.method.name``."""
    return METHODS[cfg.method.name](cfg, student, tokenizer, device, judge=judge)


__all__ = ["LossOutput", "Method", "METHODS", "build_method"]
