"""MI: Distilling step-by-step plus a mutual-information term between its two tasks
(Chen et al., ACL 2024 Findings, arXiv:2403.03348; public code ``xinchen9/cot_distillation_ACL2024``).

    L = alpha * L_label + (1 - alpha) * L_rationale + beta_MI * L_MI

The paper maximises a variational lower bound on the mutual information between the label task's
and the rationale task's representations. Its public code (``TaskPrefixTrainer.compute_loss``)
implements that bound as a cross-entropy between the two tasks' output distributions, each
max-pooled over its target positions::

    p_label     = max_t softmax(label logits)_t       (detached)        [batch, vocab]
    p_rationale = max_t softmax(rationale logits)_t                     [batch, vocab]
    L_MI        = -sum_v p_label[v] * log_softmax(p_rationale)[v]        (mean over the batch)

``log_softmax`` is applied to the pooled *probabilities*, as ``nn.CrossEntropyLoss(p_rationale,
p_label)`` does there; we keep that exactly. One deliberate difference: the max runs over real
target tokens only, where the public code also pools padded positions (docs/method.md).
beta_MI = 0.1 as in their runs (``method.mi_beta``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data import TrainExample, pad_labels
from .base import LossOutput, Method, causal_logits, encode_prompts, sequence_losses


def target_logits(
    student, batch: list[TrainExample], prompt: str, targets: list[list[int]], device, encoded=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of each target continuing its ``prompt`` (``"predict"`` or ``"explain"``) and the
    labels they score: (logits [batch, positions, vocab], labels [batch, positions], -100 = not a
    target token). ``encoded``: the seq2seq prompts' encoder output, if the step has it."""
    prompts = [getattr(ex, f"{prompt}_ids") for ex in batch]
    if not student.config.is_encoder_decoder:
        return causal_logits(student, prompts, targets, device)
    states, mask = encoded if encoded is not None else encode_prompts(student, batch, device, (prompt,))[prompt]
    labels = pad_labels(targets, device)
    decoder_input_ids = student.prepare_decoder_input_ids_from_labels(labels=labels)
    logits = student(
        encoder_outputs=(states,), attention_mask=mask, decoder_input_ids=decoder_input_ids, use_cache=False
    ).logits
    return logits, labels


def pooled_distribution(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """max over target positions of the softmax: [batch, positions, vocab] -> [batch, vocab]."""
    probs = logits.float().softmax(dim=-1)
    return probs.masked_fill((labels == -100)[:, :, None], 0.0).amax(dim=1)


def mi_loss(
    label_logits: torch.Tensor,
    label_labels: torch.Tensor,
    rationale_logits: torch.Tensor,
    rationale_labels: torch.Tensor,
) -> torch.Tensor:
    """L_MI as the public code computes it (module docstring); the label side is detached.

    Args: label / rationale logits [batch, positions, vocab] and their labels [batch, positions]
    (-100 = padding or prompt). Returns a scalar.
    """
    target = pooled_distribution(label_logits.detach(), label_labels)
    pooled = pooled_distribution(rationale_logits, rationale_labels)
    return -(target * F.log_softmax(pooled, dim=-1)).sum(dim=-1).mean()


class MI(Method):
    """DSS (``predict:`` -> gold label, ``explain:`` -> first positive) plus beta_MI * L_MI."""

    name = "mi"

    def loss(self, batch: list[TrainExample]) -> LossOutput:
        alpha, beta = self.cfg.method.alpha, self.cfg.method.mi_beta
        owners = [i for i, ex in enumerate(batch) if ex.positives]  # as DSS: questions with a rationale
        encoded = encode_prompts(self.student, batch, self.device, ("predict", "explain") if owners else ("predict",))
        label_logits, label_labels = target_logits(
            self.student, batch, "predict", [ex.label_ids for ex in batch], self.device, encoded["predict"]
        )
        l_label = F.cross_entropy(
            label_logits.reshape(-1, label_logits.shape[-1]), label_labels.reshape(-1), ignore_index=-100
        )
        if not owners:  # no rationale anywhere in the batch: the label task alone
            return LossOutput(alpha * l_label, {"l_label": l_label.item()})
        explain = encoded["explain"]
        if explain is not None and len(owners) < len(batch):
            index = torch.tensor(owners, device=self.device)
            explain = (explain[0][index], explain[1][index])
        rationale_logits, rationale_labels = target_logits(
            self.student,
            [batch[i] for i in owners],
            "explain",
            [batch[i].positives[0] for i in owners],
            self.device,
            explain,
        )
        l_rationale = sequence_losses(rationale_logits, rationale_labels).mean()
        # L_MI pairs each question's two tasks: the label rows of the questions that have a rationale.
        l_mi = mi_loss(label_logits[owners], label_labels[owners], rationale_logits, rationale_labels)
        total = alpha * l_label + (1 - alpha) * l_rationale + beta * l_mi
        return LossOutput(
            total,
            {"loss": total.item(), "l_label": l_label.item(), "l_rationale": l_rationale.item(), "l_mi": l_mi.item()},
        )
