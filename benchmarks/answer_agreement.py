"""The answer reader against hand labels: agreement per fixture file and answer type (docs/data.md).

Each row of ``tests/fixtures/answer_labels*.jsonl`` is a real teacher chain and the answer a person
read from it (null: it states none). A sample agrees when the reader gives that answer, or none
for null. The ``*_heldout`` files were labelled before the rules they measure were written and
were never tuned on.

Usage: python benchmarks/answer_agreement.py    (prints one table; no model, no data folder needed)
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qcrd_plugin.answers import answers_match, normalize_answer, stated_answer  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures"
TYPES = ("number", "text", "choice", "label", "yesno")


def agreement(path: Path) -> dict[str, tuple[int, int]]:
    """(agreeing, total) per answer type of one fixture file."""
    counts: dict[str, Counter] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        kind, choices = row["answer_type"], row["choices"]
        got = stated_answer(row["rationale"], kind, choices, question=row["question"])
        want = None if row["label"] is None else normalize_answer(row["label"], kind, choices)
        ok = got is None and want is None or want is not None and answers_match(got, want)
        counts.setdefault(kind, Counter())[ok] += 1
    return {kind: (c[True], c[True] + c[False]) for kind, c in counts.items()}


def main() -> None:
    print("| fixture | " + " | ".join(TYPES) + " |")
    print("|---|" + "---|" * len(TYPES))
    for path in sorted(FIXTURES.glob("answer_labels*.jsonl")):
        found = agreement(path)
        cells = [
            f"{found[t][0]}/{found[t][1]} ({found[t][0] / found[t][1]:.3f})" if t in found else "–" for t in TYPES
        ]
        print(f"| {path.name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
