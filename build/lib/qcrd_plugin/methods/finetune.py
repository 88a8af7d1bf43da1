"""Standard fine-tuning: the label only (``predict:`` -> gold answer), no rationale at all."""

from __future__ import annotations

from ..data import TrainExample
from .base import LossOutput, Method, label_loss


class Finetune(Method):
    name = "finetune"

    def loss(self, batch: list[TrainExample]) -> LossOutput:
        l_label = label_loss(self.student, batch, self.device)
        return LossOutput(l_label, {"l_label": l_label.item(), "loss": l_label.item()})
