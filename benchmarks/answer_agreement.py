"""The answer reader against hand labels: agreement per fixture file and answer type (docs/data.md).

Each row of ``tests/fixtures/answer_labels*.jsonl`` is a real teacher chain and the answer a person
read from it (null: it states none). A sample agrees when the reader gives that answer, or none
for null. The ``*_heldout`` files were labelled before the rules they measure were written and
were never tuned on. ``second_labels_*.jsonl`` hold a second person's labels of the same chains,
read blind to the first labels and to the reader: how often two labellers agree bounds what any
reader can be measured to reach.

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


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _reading(row: dict):
    """The reader's answer to a fixture row, read as a pool sample is (a chain its teacher stopped
    at the token limit gives only an explicit answer)."""
    why = row.get("finish_reason", "")
    return stated_answer(
        row["rationale"], row["answer_type"], row["choices"], question=row["question"], finish_reason=why
    )


def _label(label: str | None, row: dict):
    return None if label is None else normalize_answer(label, row["answer_type"], row["choices"])


def _same(a, b) -> bool:
    return a is None and b is None or a is not None and b is not None and answers_match(a, b)


def agreement(path: Path) -> dict[str, tuple[int, int]]:
    """(agreeing, total) per answer type of one fixture file."""
    counts: dict[str, Counter] = {}
    for row in _rows(path):
        counts.setdefault(row["answer_type"], Counter())[_same(_reading(row), _label(row["label"], row))] += 1
    return {kind: (c[True], c[True] + c[False]) for kind, c in counts.items()}


def second_labeller(path: Path, kind: str) -> dict[str, tuple[int, int]]:
    """(agreeing, total) of labeller against labeller, the reader against each, and the reader on
    the chains both labellers agree on, over the ``kind`` chains of one ``second_labels_*.jsonl`` file."""
    second = {row["id"]: row["label"] for row in _rows(path)}
    firsts = [row for f in sorted(FIXTURES.glob("answer_labels*.jsonl")) for row in _rows(f) if row["id"] in second]
    counts = Counter()
    for row in (row for row in firsts if row["answer_type"] == kind):
        first, other, got = _label(row["label"], row), _label(second[row["id"]], row), _reading(row)
        agree = _same(first, other)
        counts.update(labellers=agree, reader_first=_same(got, first), reader_second=_same(got, other))
        counts.update(rows=1, agreed=agree, reader_on_agreed=agree and _same(got, first))
    n = counts["rows"]
    return {
        "first labeller vs second": (counts["labellers"], n),
        "reader vs first labeller": (counts["reader_first"], n),
        "reader vs second labeller": (counts["reader_second"], n),
        "reader on the chains both agree on": (counts["reader_on_agreed"], counts["agreed"]),
    }


def main() -> None:
    print("| fixture | " + " | ".join(TYPES) + " |")
    print("|---|" + "---|" * len(TYPES))
    for path in sorted(FIXTURES.glob("answer_labels*.jsonl")):
        found = agreement(path)
        cells = [
            f"{found[t][0]}/{found[t][1]} ({found[t][0] / found[t][1]:.3f})" if t in found else "–" for t in TYPES
        ]
        print(f"| {path.name} | " + " | ".join(cells) + " |")
    for path in sorted(FIXTURES.glob("second_labels_*.jsonl")):
        for kind in ("number", "text"):
            found = second_labeller(path, kind)
            if found["first labeller vs second"][1]:
                print(f"\n| {path.name} ({kind}) | agreeing |\n|---|---|")
                for what, (k, n) in found.items():
                    print(f"| {what} | {k}/{n} ({k / n:.3f}) |")


if __name__ == "__main__":
    main()
