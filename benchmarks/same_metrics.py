"""Do two runs end with the same metrics? Compares two runs' metrics.jsonl record by record,
leaving out the fields that measure the machine (wall times, tokens/s, the checkpoint's path).

Usage: python benchmarks/same_metrics.py RUN_A RUN_B     (exit code 0 when identical, 1 otherwise)
Used to check that a refactor leaves a seeded run unchanged (issue 16), e.g. the default run
from two checkouts:  qcrd-bench run --config default --output-dir /tmp/a --name before  (old code)
                     qcrd-bench run --config default --output-dir /tmp/b --name after   (new code)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TIMING = {"time_s", "setup_time_s", "train_tokens_per_s", "checkpoint"}


def records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines if line.strip()]


def differences(a: object, b: object, path: str = "") -> list[str]:
    """Every leaf path where ``a`` and ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in sorted(set(a) | set(b)) for d in differences(a.get(key), b.get(key), f"{path}.{key}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def main() -> int:
    first, second = (Path(p) for p in sys.argv[1:3])
    found = differences(records(first), records(second))
    n = len(records(first))
    if found:
        print(f"{len(found)} differences over {n} rounds:\n  " + "\n  ".join(found[:20]))
        return 1
    print(f"identical: {n} rounds of metrics.jsonl (timings aside) in {first} and {second}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
