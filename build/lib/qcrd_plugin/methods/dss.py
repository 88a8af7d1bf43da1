"""Distilling step-by-step (Hsieh et al. 2023, arXiv:2305.02301).

``predict:`` -> gold label, ``explain:`` -> one teacher rationale;
``L = alpha * L_label + (1 - alpha) * L_rationale``. With self-consistency on, the rationale is the
first positive; with it off (the DSS setting), it is the first teacher sample whatever its answer.
"""

from __future__ import annotations

from ..data import TrainExample
from .base import LossOutput, Method, encode_prompts, label_and_rationale_losses, label_loss


class DSS(Method):
    name = "dss"

    def loss(self, batch: list[TrainExample]) -> LossOutput:
        owners = [i for i, ex in enumerate(batch) if ex.positives]
        encoded = encode_prompts(self.student, batch, self.device, ("predict", "explain") if owners else ("predict",))
        alpha = self.cfg.method.alpha
        if not owners:
            l_label = label_loss(self.student, batch, self.device, encoded["predict"])
            return LossOutput(alpha * l_label, {"l_label": l_label.item()})
        l_label, losses = label_and_rationale_losses(
            self.student, batch, [batch[i].positives[0] for i in owners], owners, self.device, encoded, pack=True
        )
        l_rationale = losses.mean()
        total = alpha * l_label + (1 - alpha) * l_rationale
        return LossOutput(total, {"l_label": l_label.item(), "l_rationale": l_rationale.item(), "loss": total.item()})
