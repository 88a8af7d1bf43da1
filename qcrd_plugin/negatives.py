"""Self-adversarial student negatives (paper §1.3), sampled from an earlier snapshot of the student.

The loop takes a snapshot of the student's weights at the start of every iteration; negatives
come from the snapshot taken exactly ``j_back`` iterations earlier. Until that snapshot exists,
S_neg is the LLM minority alone (``negatives.before_j: llm``). The earlier behaviour, sampling
from the oldest snapshot kept (at first the random initial model), is the ablation
``before_j: oldest``: its samples cost the student 11-22 nats a token, far beyond the margin, and
Eq. 7's max over S_neg then picks them and silences the whole negative term (docs/method.md).
Negatives are sampled only for the questions the coming iterations train on, right before they
are used, so every question's student negative really is ``j_back`` iterations old.
"""

from __future__ import annotations

import copy
from collections import deque

import torch
from tqdm.auto import tqdm

from .answers import answers_match, normalize_answer, stated_answer
from .config import NegativesConfig
from .data import TrainExample, pad


class SnapshotRing:
    """The last ``j_back + 1`` student weight snapshots, kept on the CPU."""

    def __init__(self, j_back: int):
        self.snapshots: deque = deque(maxlen=j_back + 1)
        self.initial: dict | None = None  # the very first snapshot (the "fixed generator" ablation)

    def take(self, model: torch.nn.Module) -> None:
        snapshot = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.snapshots.append(snapshot)
        if self.initial is None:
            self.initial = snapshot

    def oldest(self) -> dict:
        """The oldest snapshot kept (``j_back`` iterations back once that many have passed)."""
        return self.snapshots[0]

    def aged(self) -> dict | None:
        """The snapshot taken exactly ``j_back`` iterations ago, or None while fewer have passed."""
        return self.snapshots[0] if len(self.snapshots) == self.snapshots.maxlen else None

    def __len__(self) -> int:
        return len(self.snapshots)


def negative_generator(snapshots: SnapshotRing, cfg: NegativesConfig) -> dict | None:
    """The weights that sample this iteration's student negatives, or None for none (S_neg is then
    the LLM minority alone): the fixed initial model (``generator: fixed``), else the snapshot
    ``j_back`` iterations old, or before it exists the oldest kept if ``before_j: oldest``."""
    if cfg.generator == "fixed":
        return snapshots.initial
    aged = snapshots.aged()
    if aged is None and cfg.before_j == "oldest":
        return snapshots.oldest()
    return aged


def upcoming_questions(schedule: list[list[TrainExample]]) -> list[TrainExample]:
    """The distinct questions of the coming batches, in order of first use."""
    seen: dict[str, TrainExample] = {}
    for batch in schedule:
        for ex in batch:
            seen.setdefault(ex.id, ex)
    return list(seen.values())


@torch.no_grad()
def sample_negatives(
    student: torch.nn.Module,
    snapshot: dict,
    examples: list[TrainExample],
    per_question: int,
    temperature: float,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    device,
    progress: bool = True,
) -> None:
    """Fill ``example.student_negatives`` with samples of ``snapshot`` at ``temperature``.

    Sampling runs in batches with the KV cache on a copy of the student loaded with the snapshot.
    Token ids are stored directly, so nothing is decoded and re-tokenized.
    """
    sampler = copy.deepcopy(student)
    sampler.load_state_dict(snapshot)
    sampler.eval()
    config = sampler.config
    torch.manual_seed(seed)
    for start in tqdm(
        range(0, len(examples), batch_size), desc="student negatives", disable=not progress, leave=False
    ):
        chunk = examples[start : start + batch_size]
        seq2seq = config.is_encoder_decoder
        ids, mask = pad([ex.explain_ids for ex in chunk], config.pad_token_id, device, left=not seq2seq)
        out = sampler.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=temperature,
            top_k=0,
            num_return_sequences=per_question,
            max_new_tokens=max_new_tokens,
            use_cache=True,
            pad_token_id=config.pad_token_id,
        )
        # seq2seq: drop the decoder start token; decoder-only: drop the prompt
        out = out[:, 1:] if seq2seq else out[:, ids.shape[1] :]
        for row, ex in enumerate(chunk):
            ex.student_negatives = [_strip(out[row * per_question + k].tolist(), config) for k in range(per_question)]
    del sampler


def _strip(tokens: list[int], config) -> list[int]:
    """Cut at EOS, drop padding; end with EOS (as a target sequence)."""
    body = tokens
    if config.eos_token_id in body:
        body = body[: body.index(config.eos_token_id)]
    body = [t for t in body if t != config.pad_token_id]
    return body + [config.eos_token_id]


def negative_answer(ex: TrainExample, ids: list[int], tokenizer) -> float | str | None:
    """The answer a student negative ``ids`` states, read as a teacher sample is (the question's
    numbers are givens, not answers)."""
    question = tokenizer.decode(ex.explain_ids, skip_special_tokens=True)
    return stated_answer(
        tokenizer.decode(ids, skip_special_tokens=True), ex.answer_type, ex.choices, question=question
    )


def drop_correct(examples: list[TrainExample], tokenizer) -> int:
    """``negatives.keep_correct: false``: remove every student negative whose stated answer
    (:func:`negative_answer`) is the gold one, so that a correct sample is not pushed away.
    Returns how many were removed."""
    removed = 0
    for ex in examples:
        gold = normalize_answer(ex.answer_text, ex.answer_type, ex.choices)
        kept = [ids for ids in ex.student_negatives if not answers_match(negative_answer(ex, ids, tokenizer), gold)]
        removed += len(ex.student_negatives) - len(kept)
        ex.student_negatives = kept
    return removed
