"""Do the students learn? QCRD, DSS and a decoder-only DSS on the default budget, over seeds.

Each run is the default job (`harness_configs/default.yaml`, what `make run` runs) in a child
process, with only the method / student family and `training.seed` changed, so the wall time is
that of `make run` once installed. One row per setting: mean and [min, max] over the seeds of
- wall time of the whole run (target <= 180 s),
- final label accuracy (targets of the converging-miniature issue: QCRD >= 0.80, causal DSS
  >= 0.70; DSS keeps the earlier >= 0.60),
- final step validity (target >= 0.90),
- the smallest `neg_active_share` of any round after the first (QCRD; target >= 0.10),
- the judge's held-out ROC-AUC in the final round (QCRD; target >= 0.85).

Usage: python benchmarks/bench_learning.py [--seeds 0 1 2] [--only qcrd,dss,causal-dss]
Writes benchmarks/results/learning.json (every run's per-round figures, the table, machine info).
Run it alone: two cores are easily saturated and the wall times would mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SETTINGS = {
    "qcrd": [],
    "dss": ["method.name=dss"],
    "causal-dss": ["method.name=dss", "student.family=causal"],
}
TARGETS = {
    "wall_s": ("<=", 180.0),
    "acc": (">=", {"qcrd": 0.80, "dss": 0.60, "causal-dss": 0.70}),
    "step_validity": (">=", 0.90),
    "min_neg_active_after_round_1": (">=", 0.10),
    "judge_auc": (">=", 0.85),
}


def run_once(setting: str, seed: int, out: Path) -> dict:
    """One default run with ``setting``'s overrides and ``training.seed=seed``; its figures."""
    cli = str(Path(sys.executable).with_name("qcrd-bench"))
    name = f"{setting}_seed{seed}"
    overrides = [arg for o in SETTINGS[setting] + [f"training.seed={seed}"] for arg in ("-o", o)]
    cmd = [
        cli,
        "run",
        "--config",
        str(REPO / "harness_configs" / "default.yaml"),
        *overrides,
        "--name",
        name,
        "--output-dir",
        str(out),
        "--quiet",
        "--overwrite",
    ]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        env=dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1"),
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{setting} seed {seed} failed:\n{proc.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
    final = records[-1]
    explain = final["eval"][final["explain_task"]]
    active = [(r.get("negatives") or {}).get("neg_active_share") for r in records]
    return {
        "setting": setting,
        "seed": seed,
        "wall_s": round(wall, 1),
        "acc": final["eval"][final["label_task"]]["acc"],
        "step_validity": explain.get("step_validity"),
        "rationale_acc": explain.get("rationale_acc"),
        "min_neg_active_after_round_1": min(active[1:]) if len(active) > 1 and None not in active[1:] else None,
        "judge_auc": final.get("judge_auc_heldout"),
        "per_round": [
            {
                "acc": r["eval"][r["label_task"]]["acc"],
                "step_validity": r["eval"][r["explain_task"]].get("step_validity"),
                "judge_auc": r.get("judge_auc_heldout"),
                "negatives": r.get("negatives"),
                "loss": r["loss"],
                "time_s": r["time_s"],
            }
            for r in records
        ],
    }


def summarise(runs: list[dict]) -> dict:
    """Per setting and figure: mean, min, max over seeds (None where a figure does not apply)."""
    table = {}
    for setting in dict.fromkeys(r["setting"] for r in runs):
        rows = [r for r in runs if r["setting"] == setting]
        table[setting] = {}
        for key in TARGETS:
            values = [r[key] for r in rows if r[key] is not None]
            table[setting][key] = (
                {"mean": round(sum(values) / len(values), 4), "min": min(values), "max": max(values)}
                if values
                else None
            )
    return table


def target_of(key: str, setting: str) -> tuple[str, float] | None:
    sign, value = TARGETS[key]
    value = value.get(setting) if isinstance(value, dict) else value
    return None if value is None else (sign, value)


def format_table(table: dict, seeds: list[int]) -> str:
    header = f"{'setting':<11} " + " ".join(f"{k:>30}" for k in TARGETS)
    lines = [
        f"default budget, seeds {seeds}: mean [min, max]; target and whether the mean meets it",
        header,
        "-" * len(header),
    ]
    for setting, figures in table.items():
        cells = []
        for key in TARGETS:
            cell, target = figures[key], target_of(key, setting)
            if cell is None:
                cells.append(f"{'-':>30}")
                continue
            met = (
                ""
                if target is None
                else (
                    " ok"
                    if (cell["mean"] <= target[1] if target[0] == "<=" else cell["mean"] >= target[1])
                    else " MISS"
                )
            )
            goal = "" if target is None else f" ({target[0]}{target[1]:g}{met})"
            cells.append(f"{cell['mean']:.3f} [{cell['min']:.3f}, {cell['max']:.3f}]{goal}".rjust(30))
        lines.append(f"{setting:<11} " + " ".join(cells))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    parser.add_argument(
        "--only", default=",".join(SETTINGS), help=f"comma-separated settings among {', '.join(SETTINGS)}"
    )
    args = parser.parse_args()
    settings = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        parser.error(f"--only: unknown setting(s) {', '.join(unknown)} (known: {', '.join(SETTINGS)})")
    out = Path(tempfile.mkdtemp(prefix="qcrd-learning-"))
    runs = []
    try:
        for setting in settings:
            for seed in args.seeds:
                runs.append(run_once(setting, seed, out))
                r = runs[-1]
                print(
                    f"{setting} seed {seed}: {r['wall_s']:.0f} s, acc {r['acc']:.3f}, "
                    f"step validity {r['step_validity']:.3f}",
                    flush=True,
                )
    finally:
        shutil.rmtree(out, ignore_errors=True)
    table = summarise(runs)
    text = format_table(table, args.seeds)
    print(text)
    result = {
        "command": "python benchmarks/bench_learning.py " + " ".join(sys.argv[1:]),
        "seeds": args.seeds,
        "table": table,
        "table_text": text,
        "runs": runs,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    (REPO / "benchmarks" / "results").mkdir(exist_ok=True)
    (REPO / "benchmarks" / "results" / "learning.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
