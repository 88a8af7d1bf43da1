"""The method interface and the loss pieces every method shares."""

from __future__ import annotations

import itertools
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

    def new_step(self) -> None:
        """The training loop starts an optimizer step (before its micro-batches' :meth:`loss` calls)."""

    def start_iteration(self, iteration: int) -> None:
        """Called by the loop when iteration ``iteration`` (1-based) begins."""

    def pop_round_statistics(self) -> dict:
        """Statistics accumulated over the round's steps (QCRD: its negative term), then reset.
        Called by the loop once per round, when the round's training ends."""
        return {}

    def log_state(self) -> dict[str, float]:
        """Method state worth logging each round (e.g. the current alpha3)."""
        return {}

    def state_dict(self) -> dict:
        """State a resumed run needs besides the weights (saved with each round checkpoint)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""


def causal_logits(
    student, prompts: list[list[int]], targets: list[list[int]], device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder-only students: prompt and target as one sequence. Returns (logits [batch, length - 1,
    vocab], labels [batch, length - 1]) aligned for next-token scoring; prompt tokens and padding
    are -100, so only target tokens are scored."""
    ids, mask = pad([p + t for p, t in zip(prompts, targets)], student.config.pad_token_id, device)
    labels, _ = pad([[-100] * len(p) + t for p, t in zip(prompts, targets)], -100, device)
    logits = student(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
    return logits, labels[:, 1:]


def causal_losses(
    student, prompts: list[list[int]], targets: list[list[int]], device, per_sequence: bool = True
) -> torch.Tensor:
    """Decoder-only students: cross-entropy of each target continuing its prompt, prompt and target
    as one sequence. Returns one token-mean loss per sequence (``per_sequence``), or the token mean
    over the whole batch.

    Only the positions whose next token is a target go through the vocabulary projection
    (transformers' boolean ``logits_to_keep``): prompts are most of each row, and a 49k-token
    projection and softmax at every prompt position is a large share of a small model's step.
    Same values as scoring :func:`causal_logits` (tests/test_methods.py checks values and gradients).
    """
    ids, mask = pad([p + t for p, t in zip(prompts, targets)], student.config.pad_token_id, device)
    labels, _ = pad([[-100] * len(p) + t for p, t in zip(prompts, targets)], -100, device)
    keep = torch.zeros_like(ids, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != -100  # position i predicts token i + 1
    logits = student(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=keep).logits
    if logits.dim() == 3:  # a model class without boolean logits_to_keep returned every position
        logits = logits[keep]
    token_loss = F.cross_entropy(logits, labels[:, 1:][keep[:, :-1]], reduction="none")
    if not per_sequence:
        return token_loss.mean()
    rows = keep.nonzero()[:, 0]
    sums = torch.zeros(len(prompts), dtype=token_loss.dtype, device=token_loss.device).index_add(0, rows, token_loss)
    return sums / keep.sum(dim=1).clamp(min=1)


Encoded = tuple[torch.Tensor, torch.Tensor]  # (encoder states [batch, length, width], attention mask [batch, length])


def encode_prompts(
    student, batch: list[TrainExample], device, which: tuple[str, ...] = ("predict", "explain")
) -> dict[str, Encoded | None]:
    """The seq2seq student's encoder output for the batch's ``predict:`` and/or ``explain:``
    prompts, from one encoder call (None per prompt for decoder-only students, which have no encoder).

    A step that needs both prompts (DSS, QCRD) pays one batched encoder pass instead of one per
    loss term: same values (padding is masked), fewer and larger matmuls.
    """
    if not student.config.is_encoder_decoder:
        return dict.fromkeys(which)
    n = len(batch)
    ids, mask = pad(
        [getattr(ex, f"{kind}_ids") for kind in which for ex in batch], student.config.pad_token_id, device
    )
    states = student.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    return {kind: (states[i * n : (i + 1) * n], mask[i * n : (i + 1) * n]) for i, kind in enumerate(which)}


def label_loss(student, batch: list[TrainExample], device, encoded: Encoded | None = None) -> torch.Tensor:
    """L_pred: token-mean cross-entropy of the gold label given the ``predict:`` prompt.
    ``encoded``: the prompts' encoder output from :func:`encode_prompts`, if the step has it."""
    if not student.config.is_encoder_decoder:
        return causal_losses(
            student, [ex.predict_ids for ex in batch], [ex.label_ids for ex in batch], device, per_sequence=False
        )
    labels = pad_labels([ex.label_ids for ex in batch], device)
    if encoded is None:
        ids, mask = pad([ex.predict_ids for ex in batch], student.config.pad_token_id, device)
        return student(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
    states, mask = encoded
    return student(encoder_outputs=(states,), attention_mask=mask, labels=labels, use_cache=False).loss


def rationale_losses(
    student,
    batch: list[TrainExample],
    rationales: list[list[int]],
    owner: list[int],
    device,
    bucket_size: int = 0,
    encoded: Encoded | None = None,
) -> torch.Tensor:
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
        return _bucketed(
            lambda idx: causal_losses(student, [prompts[i] for i in idx], [rationales[i] for i in idx], device),
            [len(prompts[i]) + len(r) for i, r in enumerate(rationales)],
            bucket_size,
            device,
        )
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
        logits = student(
            encoder_outputs=(states,), attention_mask=states_mask, decoder_input_ids=decoder_input_ids, use_cache=False
        ).logits
        return sequence_losses(logits, labels)

    return _bucketed(decode, [len(r) for r in rationales], bucket_size, device)


def label_and_rationale_losses(
    student,
    batch: list[TrainExample],
    rationales: list[list[int]],
    owner: list[int],
    device,
    encoded: dict[str, Encoded | None],
    pack: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_pred of the batch and ``l(f(x), r)`` of each rationale (``owner`` as in :func:`rationale_losses`),
    with a graph, from the step's encoding ``encoded`` (:func:`encode_prompts` with both prompts).

    With ``pack``, students with T5's relative attention decode everything in one call
    (:func:`packed_losses`); otherwise one decoder call decodes the labels and one the rationales.
    Same values either way. Packing pays when it saves a call without making rows much longer,
    i.e. for one rationale per question: a DSS step (label + one rationale per row) is faster
    packed, but QCRD's label + two picks per row is slower packed: attention work grows with the
    square of the row length, and every packed row cross-attends over both prompts (measured on
    the default CPU student: docs/performance.md). The choice is the method's, not the batch's, so
    every rank of a data-parallel step runs the same passes (DeepSpeed needs that).
    """
    if pack and rationales and packs_targets(student):
        return packed_losses(student, batch, rationales, owner, device, encoded)
    l_pred = label_loss(student, batch, device, encoded["predict"])
    return l_pred, rationale_losses(student, batch, rationales, owner, device, encoded=encoded.get("explain"))


def packs_targets(student) -> bool:
    """Whether several targets can share one decoder row: T5-family seq2seq students, whose attention
    sees only relative positions, so a target decodes the same wherever it starts in the row."""
    return bool(student.config.is_encoder_decoder) and student.config.model_type in ("t5", "mt5")


def packed_losses(
    student,
    batch: list[TrainExample],
    rationales: list[list[int]],
    owner: list[int],
    device,
    encoded: dict[str, Encoded | None],
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`label_and_rationale_losses` in one decoder call: row q holds question q's label and then
    each of its rationales, one after another.

    A label and a short rationale decoded in separate calls pay the per-call cost twice (on the
    default CPU student the 3-token label call costs as much time as half the rationale call).
    Packed, each target is its own segment: it is shifted right on its own (starting from the
    decoder start token), its tokens attend causally to their own segment only, and they
    cross-attend only to their own prompt's encoding (the label to ``predict:``, rationales to
    ``explain:``; both prompts' states are concatenated along the sequence). T5's attention bias
    depends only on the distance between positions, so every target gets exactly the logits a
    call of its own gives (tests/test_methods.py checks values and gradients).
    """
    (predict_states, predict_mask), (explain_states, explain_mask) = encoded["predict"], encoded["explain"]
    start = student.config.decoder_start_token_id
    rows: list[list[tuple[int, list[int]]]] = [
        [(0, ex.label_ids)] for ex in batch
    ]  # (prompt: 0 predict, 1 explain; target)
    place = []  # (row, segment number) of each rationale; segment numbers start at 1 (0 = padding)
    for tokens, q in zip(rationales, owner):
        rows[q].append((1, tokens))
        place.append((q, len(rows[q])))

    def flat(per_segment) -> list[list[int]]:
        return [
            list(
                itertools.chain.from_iterable(
                    per_segment(number, prompt, tokens) for number, (prompt, tokens) in enumerate(row, 1)
                )
            )
            for row in rows
        ]

    ids, _ = pad(flat(lambda _, __, t: [start] + t[:-1]), student.config.pad_token_id, device)
    labels = pad_labels(flat(lambda _, __, t: t), device)
    segment, _ = pad(flat(lambda number, _, t: [number] * len(t)), 0, device)
    prompt, _ = pad(flat(lambda _, p, t: [p] * len(t)), -1, device)

    length = ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    # Padding positions (segment 0) see the padding before them: never an empty row, never in the loss.
    attend_self = (segment[:, :, None] == segment[:, None, :]) & causal
    key_prompt = torch.cat([predict_mask - 1, 2 * explain_mask - 1], dim=1)  # 0 predict, 1 explain token, -1 padding
    attend_prompt = (prompt[:, :, None] == key_prompt[:, None, :]) | (segment == 0)[:, :, None]
    states = torch.cat([predict_states, explain_states], dim=1)

    def additive(allowed: torch.Tensor) -> torch.Tensor:  # [n, 1, queries, keys]; works with eager and sdpa attention
        return torch.zeros(allowed.shape, dtype=states.dtype, device=device).masked_fill(
            ~allowed, torch.finfo(states.dtype).min
        )[:, None]

    logits = student(
        encoder_outputs=(states,),
        attention_mask=additive(attend_prompt),
        decoder_input_ids=ids,
        decoder_attention_mask=additive(attend_self),
        use_cache=False,
    ).logits
    token_loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="none"
    ).view(labels.shape)
    scored = labels != -100
    is_label = scored & (prompt == 0)
    l_pred = (token_loss * is_label).sum() / is_label.sum().clamp(min=1)
    return l_pred, _segment_means(token_loss, scored, segment, place, device)


def _segment_means(token_loss, scored, segment, place: list[tuple[int, int]], device) -> torch.Tensor:
    """The token-mean loss of every (row, segment) of a packed call, then of each rationale at its
    ``place`` (row, segment number): [number of rationales]."""
    n, width = segment.shape[0], segment.shape[1] + 1
    key = (torch.arange(n, device=device)[:, None] * width + segment).reshape(-1)
    zeros = torch.zeros(n * width, dtype=token_loss.dtype, device=device)
    sums = zeros.index_add(0, key, (token_loss * scored).reshape(-1))
    counts = zeros.index_add(0, key, scored.reshape(-1).to(token_loss.dtype))
    index = torch.tensor([q * width + number for q, number in place], device=device)
    return sums[index] / counts[index].clamp(min=1)


def sequence_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token-mean cross-entropy of each row of ``labels`` (-100 = ignored) under ``logits``.
    Flattened to (tokens, vocab): the transposed (batch, vocab, length) layout is several times
    slower in the CPU cross-entropy kernel."""
    token_loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="none"
    )
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
