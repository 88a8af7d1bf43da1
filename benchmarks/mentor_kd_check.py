"""Independent check of the answer reader (issue 25) on the Mentor-KD release's other tasks.

Mentor-KD (github.com/2hojae/mentor-kd, Apache-2.0) ships three teacher chains per question for
ASDiv, date understanding, object tracking and last-letter concatenation, every one flagged
``initial_correct``. The issue kept these out of all labelling and rule writing. This script
prints, per task, how often the reader's answer equals the gold answer (with the flags, that is
how often it reads a chain as its upstream filter did), how often it reads nothing, and, for
ASDiv, lm-eval's GSM8K ``flexible-extract`` (the last number) beside it. It prints no chain, so
that running it does not turn the check into tuning data.

Usage: python benchmarks/mentor_kd_check.py DIR    (DIR: a checkout of 2hojae/mentor-kd, or a
folder holding its data/main/*_3_train.json)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qcrd_plugin.answers import answers_match, normalize_answer, stated_answer  # noqa: E402

TASKS = {
    "asdiv": "number",
    "date_understanding": "choice",
    "tracking_shuffled_objects": "choice",
    "last_letter_concatenation": "text",
}
_LAST_NUMBER = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")  # lm-eval gsm8k flexible-extract


def last_number(text: str) -> float | None:
    """lm-eval's GSM8K ``flexible-extract``: the last number-like token, "$" and "," dropped."""
    found = _LAST_NUMBER.findall(text)
    if not found:
        return None
    token = next(x for x in found[-1] if x).replace("$", "").replace(",", "").rstrip(".")
    try:
        return float(token)
    except ValueError:
        return None


def main() -> None:
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "data" / "main").is_dir():
        print("usage: python benchmarks/mentor_kd_check.py DIR  (DIR/data/main/*_3_train.json)", file=sys.stderr)
        raise SystemExit(2)
    print("| task | answer type | chains | reader = gold | read nothing | last number = gold |")
    print("|---|---|---|---|---|---|")
    for task, kind in TASKS.items():
        rows = json.loads((Path(sys.argv[1]) / "data" / "main" / f"{task}_3_train.json").read_text())
        agree = unread = last = 0
        for row in rows:
            got = stated_answer(row["chain"], kind, None, question=row["input"])
            gold = normalize_answer(str(row["answer"]), kind, None)
            agree += got is not None and answers_match(got, gold)
            unread += got is None
            last += kind == "number" and answers_match(last_number(row["chain"]), gold)
        n = len(rows)
        tail = f"{last / n:.3f}" if kind == "number" else "–"
        print(f"| {task} | {kind} | {n} | {agree / n:.3f} | {unread / n:.3f} | {tail} |")


if __name__ == "__main__":
    main()
