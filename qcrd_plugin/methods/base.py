"""The method interface and the loss pieces every method shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..data import TrainExample, pad, pad_labels


@dataclass
class LossOutput:
    """A step's total loss and its named components (floats, for logging)."""

    total: torch.Tensor
    components: dict[str, float] = field(default_factory=dict)


class Method(ABC):
    """A distillation method: turns a batch of questions into one loss for the student.

    Methods with extra trainable parts (QCRD's judge) return them from ``extra_modules`` so
    the training loop can optimise them; methods that react to iteration boundaries (QCRD's
    alpha3 decay) override ``start_iteration``.
    """

    name: str = ""
    uses_student_negatives: bool = False
    answer_from: str = "label"  # where the student's answer is read: its label prompt or its rationale

    def __init__(self, cfg, student, tokenizer, device, judge=None):
        self.cfg, self.student, self.tokenizer, self.device = cfg, student, tokenizer, device
        self.judge = judge

    def extra_modules(self) -> list:
        """Trainable modules besides the student (optimised with the judge's learning rate)."""
        return [self.judge] if self.judge is not None else []

    @abstractmethod
    def loss(self, batch: list[TrainExample]) -> LossOutput:
        """The loss of one batch (with a graph to the student's parameters)."""

    def start_iteration(self, iteration: int) -> None:
        """Called by the loop when iteration ``iteration`` (1-based) begins."""

    def log_state(self) -> dict[str, float]:
        """Method state worth logging each round (e.g. the current alpha3)."""
        return {}

    def state_dict(self) -> dict:
        """State a resumed run needs besides the weights (saved with each round checkpoint)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""


def causal_losses(student, prompts: list[list[int]], targets: list[list[int]], device, per_sequence: bool = True) -> torch.Tensor:
    """Decoder-only students: cross-entropy of each target continuing its prompt.

    Prompt and target are concatenated; only target tokens are scored. Returns one token-mean
    loss per sequence (``per_sequence``), or the token mean over the whole batch.
    """
    ids, mask = pad([p + t for p, t in zip(prompts, targets)], student.config.pad_token_id, device)
    labels, _ = pad([[-100] * len(p) + t for p, t in zip(prompts, targets)], -100, device)  # prompt tokens are not scored
    logits = student(input_ids=ids, attention_mask=mask).logits[:, :-1]
    shifted = labels[:, 1:]
    if not per_sequence:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), shifted.reshape(-1), ignore_index=-100)
    return sequence_losses(logits, shifted)


Encoded = tuple[torch.Tensor, torch.Tensor]  # (encoder states [batch, length, width], attention mask [batch, length])


def encode_prompts(student, batch: list[TrainExample], device, which: tuple[str, ...] = ("predict", "explain")) -> dict[str, Encoded | None]:
    """The seq2seq student's encoder output for the batch's ``predict:`` and/or ``explain:``
    prompts, from one encoder call (None per prompt for decoder-only students, which have no encoder).

    A step that needs both prompts (DSS, QCRD) pays one batched encoder pass instead of one per
    loss term: same values (padding is masked), fewer and larger matmuls.
    """
    if not student.config.is_encoder_decoder:
        return dict.fromkeys(which)
    n = len(batch)
    ids, mask = pad([getattr(ex, f"{kind}_ids") for kind in which for ex in batch], student.config.pad_token_id, device)
    states = student.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    return {kind: (states[i * n : (i + 1) * n], mask[i * n : (i + 1) * n]) for i, kind in enumerate(which)}


def label_loss(student, batch: list[TrainExample], device, encoded: Encoded | None = None) -> torch.Tensor:
    """L_pred: token-mean cross-entropy of the gold label given the ``predict:`` prompt.
    ``encoded``: the prompts' encoder output from :func:`encode_prompts`, if the step has it."""
    if not student.config.is_encoder_decoder:
        return causal_losses(student, [ex.predict_ids for ex in batch], [ex.label_ids for ex in batch], device, per_sequence=False)
    labels = pad_labels([ex.label_ids for ex in batch], device)
    if encoded is None:
        ids, mask = pad([ex.predict_ids for ex in batch], student.config.pad_token_id, device)
        return student(input_ids=ids, attention_mask=mask, labels=labels).loss
    states, mask = encoded
    return student(encoder_outputs=(states,), attention_mask=mask, labels=labels).loss


def rationale_losses(student, batch: list[TrainExample], rationales: list[list[int]], owner: list[int], device,
                     bucket_size: int = 0, encoded: Encoded | None = None) -> torch.Tensor:
    """Per-rationale token-mean cross-entropy ``l(f(x), r)``, one value per rationale.

    ``owner[i]`` is the batch index of the question rationale ``i`` explains. For seq2seq students
    each ``explain:`` prompt is encoded once (or taken from ``encoded``, see :func:`encode_prompts`)
    and its encoder output shared by all of that question's rationales; decoder-only students read
    prompt + rationale as one sequence.
    With ``bucket_size``, rationales are decoded in length-sorted buckets of that many, each padded
    only to its own longest member (for no-grad scoring of many rationales of mixed lengths).
    """
    if not rationales:
        return torch.zeros(0, device=device)
    if not student.config.is_encoder_decoder:
        prompts = [batch[o].explain_ids for o in owner]
        return _bucketed(lambda idx: causal_losses(student, [prompts[i] for i in idx], [rationales[i] for i in idx], device),
                         [len(prompts[i]) + len(r) for i, r in enumerate(rationales)], bucket_size, device)
    encoded, mask = encoded or encode_prompts(student, batch, device, ("explain",))["explain"]

    def decode(idx: list[int]) -> torch.Tensor:
        owners = [owner[i] for i in idx]
        if owners == list(range(len(batch))):  # one rationale per question, in order: no gather copy
            states, states_mask = encoded, mask
        else:
            index = torch.tensor(owners, device=device)
            states, states_mask = encoded[index], mask[index]
        labels = pad_labels([rationales[i] for i in idx], device)
        # Decoder inputs from the labels ourselves: passing labels= would make the model compute a
        # batch-mean loss of its own, which we would throw away.
        decoder_input_ids = student.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = student(encoder_outputs=(states,), attention_mask=states_mask, decoder_input_ids=decoder_input_ids).logits
        return sequence_losses(logits, labels)

    return _bucketed(decode, [len(r) for r in rationales], bucket_size, device)


def sequence_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token-mean cross-entropy of each row of ``labels`` (-100 = ignored) under ``logits``.
    Flattened to (tokens, vocab): the transposed (batch, vocab, length) layout is several times
    slower in the CPU cross-entropy kernel."""
    token_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="none")
    return token_loss.view(labels.shape).sum(dim=1) / (labels != -100).sum(dim=1).clamp(min=1)


def _bucketed(losses_of, lengths: list[int], bucket_size: int, device) -> torch.Tensor:
    """``losses_of(all indices)``, or the same values gathered from length-sorted buckets."""
    if not bucket_size or len(lengths) <= bucket_size:
        return losses_of(list(range(len(lengths))))
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    parts = [losses_of(order[start : start + bucket_size]) for start in range(0, len(order), bucket_size)]
    out = torch.empty(len(lengths), device=device, dtype=parts[0].dtype)
    out[torch.tensor(order, device=device)] = torch.cat(parts)
    return out
