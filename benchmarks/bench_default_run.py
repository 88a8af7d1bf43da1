"""Wall time and peak memory of the default `qcrd-bench run` (installation excluded) against its
3-minute target.

Usage: python benchmarks/bench_default_run.py   (`make bench` runs it through bench_ratios.py --rss)
Writes benchmarks/results/default_run.json with the phase breakdown and machine info.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 180.0


def measure() -> dict:
    """Run the default job once in a child process; its wall time, peak RSS, phases and accuracy
    (also written to benchmarks/results/default_run.json)."""
    out = Path(tempfile.mkdtemp(prefix="qcrd-bench-"))
    cli = str(Path(sys.executable).with_name("qcrd-bench"))
    cmd = [
        cli,
        "run",
        "--config",
        str(REPO / "harness_configs" / "default.yaml"),
        "--output-dir",
        str(out),
        "--quiet",
        "--overwrite",
    ]
    start = time.perf_counter()
    subprocess.run(
        cmd,
        check=True,
        cwd=REPO,
        env=dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1"),
        capture_output=True,
    )
    wall = time.perf_counter() - start
    records = [json.loads(line) for line in (out / "default" / "metrics.jsonl").read_text().splitlines()]
    phases: dict[str, float] = dict(records[0]["setup_time_s"])
    for r in records:
        for k, v in r["time_s"].items():
            phases[k] = round(phases.get(k, 0.0) + v, 2)
    result = {
        "wall_s": round(wall, 1),
        "target_s": TARGET_S,
        "ratio_to_target": round(wall / TARGET_S, 3),
        # The largest child waited for so far: run this before starting other children.
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "phases_s": phases,
        "final_acc": records[-1]["eval"]["qcrd_synth"]["acc"],
        "acc_per_round": [r["eval"]["qcrd_synth"]["acc"] for r in records],
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    (REPO / "benchmarks" / "results").mkdir(exist_ok=True)
    (REPO / "benchmarks" / "results" / "default_run.json").write_text(json.dumps(result, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> None:
    result = measure()
    print(
        f"default run: {result['wall_s']:.1f} s wall (target {TARGET_S:.0f} s, "
        f"ratio {result['ratio_to_target']:.2f}), peak RSS {result['peak_rss_mib']} MiB; phases {result['phases_s']}"
    )
    print(f"accuracy per round: {result['acc_per_round']}")


if __name__ == "__main__":
    main()
