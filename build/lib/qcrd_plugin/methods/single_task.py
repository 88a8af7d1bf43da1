"""Single-task rationale distillation (Fine-tune-CoT, Ho et al. 2023, arXiv:2212.10071).

One prompt, one target: ``explain: <question>`` -> "<teacher rationale> So the answer is <gold>."
(the answer sentence is added only when the rationale does not already state one). The student
answers by reasoning first, so its accuracy is the answer its rationale states
(``answer_from = "rationale"``: the leaderboard reads ``rationale_acc`` for it).
"""

from __future__ import annotations

from ..answers import stated_answer
from ..data import TrainExample, target_ids
from .base import LossOutput, Method, rationale_losses


class SingleTask(Method):
    name = "single_task"
    answer_from = "rationale"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._targets: dict[str, list[int]] = {}

    def target(self, ex: TrainExample) -> list[int]:
        """The example's single target sequence (token ids), built once."""
        if ex.id not in self._targets:
            rationale = self.tokenizer.decode(ex.positives[0], skip_special_tokens=True) if ex.positives else ""
            if stated_answer(rationale, ex.answer_type, ex.choices, require_phrase=True) is None:
                rationale = f"{rationale} So the answer is {ex.answer_text}.".strip()
            self._targets[ex.id] = target_ids(self.tokenizer, [rationale], self.cfg.student.max_target_tokens)[0]
        return self._targets[ex.id]

    def loss(self, batch: list[TrainExample]) -> LossOutput:
        losses = rationale_losses(
            self.student, batch, [self.target(ex) for ex in batch], list(range(len(batch))), self.device
        )
        total = losses.mean()
        return LossOutput(total, {"l_rationale": total.item(), "loss": total.item()})
