"""Pairwise rationale judging (the paper's protocol): an LLM compares two students' rationales.

For the first ``items`` test questions both runs answered, the judge sees the question and the
two rationales as "Rationale A" and "Rationale B", in an order drawn at random per item (seeded),
and answers "A better", "both good" or "B better". Verdicts are mapped back to the runs and
counted. Any LLM teacher backend (``hf``, ``openai``) can judge.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

JUDGE_INSTRUCTION = (
    "You compare two explanations of the same answer to a question. Judge which explanation is the better "
    "reasoning: correct steps, relevant to the question, reaching the right answer. "
    'Reply with exactly one of: "A better", "both good", "B better".'
)
VERDICTS = ("A better", "both good", "B better")


@dataclass
class PairwiseResult:
    """Counts of ``first better / both good / second better`` (and unparseable verdicts)."""

    first: str
    second: str
    counts: dict[str, int] = field(default_factory=dict)
    items: list[dict] = field(default_factory=list)

    def to_record(self) -> dict:
        return {
            "format": "qcrd-pairwise/1",
            "first": self.first,
            "second": self.second,
            "counts": self.counts,
            "items": self.items,
        }


def read_rationales(run_dir: Path, round_index: int | None = None) -> dict[str, dict]:
    """A run's test rationales (``round_<k>/rationales.jsonl``; default: the last round)."""
    rounds = sorted(
        (int(p.name.split("_")[1]), p) for p in Path(run_dir).glob("round_*") if (p / "rationales.jsonl").exists()
    )
    if not rounds:
        raise FileNotFoundError(f"{run_dir}: no round_<k>/rationales.jsonl (a finished qcrd-bench run writes them)")
    path = dict(rounds)[round_index] if round_index else rounds[-1][1]
    return {
        r["id"]: r
        for r in (json.loads(line) for line in (path / "rationales.jsonl").read_text().splitlines() if line.strip())
    }


def judge_prompt(question: str, rationale_a: str, rationale_b: str) -> str:
    return f"Question: {question}\n\nRationale A: {rationale_a}\n\nRationale B: {rationale_b}\n\nWhich is better?"


def parse_verdict(text: str) -> str | None:
    """ "A better" / "both good" / "B better" from a judge's reply (the first one it states)."""
    found = [(m.start(), v) for v in VERDICTS for m in [re.search(re.escape(v), text or "", re.IGNORECASE)] if m]
    return min(found)[1] if found else None


def compare(first: Path, second: Path, ask, items: int = 50, seed: int = 0) -> PairwiseResult:
    """Judge ``items`` shared test questions; ``ask(prompt) -> reply`` is the judge LLM."""
    from .errors import UserInputError

    a_runs, b_runs = read_rationales(first), read_rationales(second)
    shared = [qid for qid in a_runs if qid in b_runs][:items]
    if not shared:  # two runs of different tasks (or test sets): nothing to compare is not "0 / 0 / 0"
        raise UserInputError(
            f"{first} and {second} share no test question: runs of different tasks? "
            "judge two runs of the same task and test split"
        )
    rng = random.Random(seed)
    result = PairwiseResult(
        str(first), str(second), {"first better": 0, "both good": 0, "second better": 0, "unparsed": 0}
    )
    for qid in shared:
        swap = rng.random() < 0.5  # True: the second run's rationale is shown as A
        a, b = (b_runs[qid], a_runs[qid]) if swap else (a_runs[qid], b_runs[qid])
        reply = ask(judge_prompt(a_runs[qid]["question"], a["rationale"], b["rationale"]))
        verdict = parse_verdict(reply)
        if verdict is None:
            outcome = "unparsed"
        elif verdict == "both good":
            outcome = "both good"
        else:
            a_wins = verdict == "A better"
            outcome = "first better" if a_wins != swap else "second better"
        result.counts[outcome] += 1
        result.items.append({"id": qid, "swapped": swap, "reply": reply, "outcome": outcome})
    return result
