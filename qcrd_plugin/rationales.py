"""Self-consistency (paper §1.2): majority vote over the K parsed teacher answers.

Rationales whose answer is the majority answer become positives; the other parsed rationales are
the LLM negatives. Unparseable samples (no stated answer) are dropped from both sets and counted.
Ties go to the tied answer equal to gold when there is one (``tie_break: gold``), else to the
answer sampled first. With ``gold_filter`` only positives whose answer equals gold are kept.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .answers import CUT_OFF_REASONS, answers_match
from .config import SelfConsistencyConfig
from .pools import PoolEntry


@dataclass
class Selection:
    """The outcome of self-consistency for one question."""

    id: str
    gold: str
    positives: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)  # the LLM (teacher minority) negatives
    majority: float | None = None
    n_samples: int = 0
    n_unparseable: int = 0
    tie: bool = False


def select(entry: PoolEntry, cfg: SelfConsistencyConfig) -> Selection:
    """Split one question's samples into positives and LLM negatives."""
    sel = Selection(entry.id, entry.gold, n_samples=len(entry.samples))
    parsed = [(s.rationale, s.answer) for s in entry.samples if s.answer is not None]
    sel.n_unparseable = len(entry.samples) - len(parsed)
    if not cfg.enabled:
        # DSS-style: the first sample is the one rationale, whatever its answer.
        if entry.samples:
            first = entry.samples[0]
            sel.positives, sel.majority = [first.rationale], first.answer
        return sel
    if not parsed:
        return sel
    # Counter keeps first-seen order among equal counts, so ties fall back to sampling order.
    counts = Counter(answer for _, answer in parsed)
    top = max(counts.values())
    tied = [answer for answer, count in counts.items() if count == top]
    sel.tie = len(tied) > 1
    majority = tied[0]
    if sel.tie and cfg.tie_break == "gold":
        majority = next((a for a in tied if answers_match(a, entry.gold)), tied[0])
    sel.majority = majority
    for rationale, answer in parsed:
        is_positive = answer == majority
        if cfg.gold_filter:
            is_positive = answers_match(answer, entry.gold)
        (sel.positives if is_positive else sel.negatives).append(rationale)
    return sel


def select_pool(pool: list[PoolEntry], cfg: SelfConsistencyConfig) -> list[Selection]:
    """Self-consistency over a whole pool."""
    return [select(entry, cfg) for entry in pool]


def pool_statistics(pool: list[PoolEntry], selections: list[Selection]) -> dict[str, float]:
    """Statistics of a pool after selection, as logged and printed by ``qcrd-bench run``.

    - ``agreement_rate``: mean share of a question's parsed samples that give the majority answer
    - ``majority_eq_gold_rate``: share of questions whose majority answer equals gold
    - ``sample_accuracy``: share of all samples whose answer equals gold
    - ``positives_per_question`` / ``negatives_per_question``: mean set sizes
    - ``unparseable_rate``, ``tie_rate``, ``no_positive_rate``: share of samples / questions
    - ``cut_off_rate``: share of samples the teacher stopped before their end (its token limit)
    """
    n_q = max(1, len(selections))
    n_samples = max(1, sum(s.n_samples for s in selections))
    parsed = [s.n_samples - s.n_unparseable for s in selections]
    agreement = [
        sum(1 for x in e.samples if x.answer is not None and x.answer == s.majority) / p
        for e, s, p in zip(pool, selections, parsed)
        if p
    ]
    return {
        "questions": len(selections),
        "samples": sum(s.n_samples for s in selections),
        "agreement_rate": sum(agreement) / max(1, len(agreement)),
        "majority_eq_gold_rate": sum(answers_match(s.majority, s.gold) for s in selections) / n_q,
        "sample_accuracy": sum(answers_match(x.answer, e.gold) for e in pool for x in e.samples) / n_samples,
        "positives_per_question": sum(len(s.positives) for s in selections) / n_q,
        "negatives_per_question": sum(len(s.negatives) for s in selections) / n_q,
        "unparseable_rate": sum(s.n_unparseable for s in selections) / n_samples,
        "tie_rate": sum(s.tie for s in selections) / n_q,
        "no_positive_rate": sum(not s.positives for s in selections) / n_q,
        "cut_off_rate": sum(x.finish_reason in CUT_OFF_REASONS for e in pool for x in e.samples) / n_samples,
    }


def format_statistics(stats: dict) -> str:
    """Pool statistics as one line: counts as integers, rates to 3 significant digits."""
    return ", ".join(f"{k} {v}" if isinstance(v, int) else f"{k} {v:.3g}" for k, v in stats.items())


# Below these a pool is more likely misread than hard: the teacher agrees with gold on most
# questions of every shipped pool (docs/data.md), and a wrong answer_type reads ~0.
MIN_MAJORITY_EQ_GOLD = 0.5
MAX_UNPARSEABLE = 0.10
MAX_CUT_OFF = 0.10


def pool_warnings(pool: list[PoolEntry], stats: dict, k: int) -> list[str]:
    """What a user should look at before training on ``pool`` (asked for ``k`` samples per
    question): answers that are probably misread, questions without samples, fewer samples than
    asked. Printed by ``teach`` and ``run``."""
    warnings = []
    hint = "check the task's answer_type / answer_pattern with `qcrd-bench data inspect POOL`"
    if stats["samples"] and stats["majority_eq_gold_rate"] < MIN_MAJORITY_EQ_GOLD:
        warnings.append(f"majority answer == gold for only {stats['majority_eq_gold_rate']:.1%} of questions: {hint}")
    if stats["samples"] and stats["unparseable_rate"] > MAX_UNPARSEABLE:
        warnings.append(f"{stats['unparseable_rate']:.1%} of samples state no answer that could be read: {hint}")
    if stats["samples"] and stats.get("cut_off_rate", 0) > MAX_CUT_OFF:
        warnings.append(
            f"{stats['cut_off_rate']:.1%} of samples were stopped early by the teacher (its token limit or a "
            "content filter; only an answer they state explicitly is read): raise teacher.max_new_tokens "
            "and teach again"
        )
    counts = [len(entry.samples) for entry in pool]
    empty = [entry.id for entry in pool if not entry.samples]
    if empty:
        warnings.append(
            f"{len(empty)} of {len(pool)} questions have no teacher sample (first: {empty[0]!r}); "
            "they train without rationales"
        )
    short = [c for c in counts if 0 < c < k]
    if short:
        warnings.append(
            f"asked for {k} samples per question, but the pool has fewer for {len(short)} of {len(pool)} questions "
            f"(as few as {min(short)}; at most {max(counts)})"
        )
    return warnings
