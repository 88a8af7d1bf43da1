"""Time to accuracy: DSS against QCRD on the default task, evaluated every n steps (issue 24, item 3).

Each run is the default job (`harness_configs/default.yaml`, what `make run` runs) in a child
process, with the method and `training.seed` set and its steps cut into rounds of `--every` steps:
lm-eval scores the test questions after each round. The schedule (warm-up, linear decay) depends
on the total step count alone, so the rounds change when the run is measured, not what it learns;
each round does reseed its own random streams (`seed_phase`), as any multi-round run does.

A run's clock is what the method costs: its training steps, its student-negative sampling and, at
time zero, its judge pre-training (`time_s` and `setup_time_s` in metrics.jsonl). Evaluation and
checkpoints are the measurement's cost and are left out; the simulated teacher's pool is shared by
both methods and left out too.

Reported, per method (mean over seeds, and each seed):
- the steps and seconds at which the run first reaches 0.5, 0.7 and DSS's final accuracy (mean);
- the accuracy at equal wall time (each method read at the other's checkpoints, stepwise);
- the accuracy at equal steps.

Usage: python benchmarks/bench_time_to_accuracy.py [--seeds 0 1 2] [--every 90] [--set key=value ...]
Writes benchmarks/results/time_to_accuracy.{json,md,png}. Run it alone: the clocks mean nothing on
a machine that is busy with anything else.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qcrd_plugin.config import load_config  # noqa: E402

METHODS = ("dss", "qcrd")
LEVELS = (0.5, 0.7)


def curve(run_dir: Path) -> list[dict]:
    """The run's (step, seconds, accuracy) after each round, from its metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    clock = records[0].get("setup_time_s", {}).get("judge_pretraining", 0.0)
    points = []
    for record in records:
        clock += record["time_s"].get("training", 0.0) + record["time_s"].get("negative_sampling", 0.0)
        points.append({"step": record["step"], "seconds": round(clock, 3), "acc": record["headline_acc"]})
    return points


def first_reaching(points: list[dict], level: float) -> dict | None:
    """The first evaluation at or above ``level`` (None: never reached)."""
    return next(({"step": p["step"], "seconds": p["seconds"]} for p in points if p["acc"] >= level), None)


def accuracy_at(points: list[dict], key: str, value: float) -> float:
    """The accuracy of the last evaluation at or before ``value`` of ``key`` (0.0 before the first)."""
    done = [p["acc"] for p in points if p[key] <= value + 1e-9]
    return done[-1] if done else 0.0


def mean(values: list[float]) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def train(method: str, seed: int, args, out: Path) -> list[dict]:
    """One run of the default job (reused if its metrics are complete); its curve."""
    cfg = load_config(REPO / "harness_configs" / "default.yaml", args.set)
    total = cfg.training.rounds * cfg.training.steps_per_round
    rounds = max(1, total // args.every)
    name = f"{method}_seed{seed}"
    overrides = [*args.set, f"method.name={method}", f"training.seed={seed}"]
    overrides += [f"training.rounds={rounds}", f"training.steps_per_round={total // rounds}"]
    run_dir = out / name
    metrics = run_dir / "metrics.jsonl"
    if not (metrics.is_file() and len(metrics.read_text().splitlines()) == rounds):
        cmd = [sys.executable, "-m", "qcrd_plugin.cli", "run", "--config", str(REPO / "harness_configs/default.yaml")]
        cmd += ["--output-dir", str(out), "--name", name, "--overwrite", "--quiet"]
        cmd += [a for o in overrides for a in ("-o", o)]
        subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    points = curve(run_dir)
    print(f"{name}: " + " ".join(f"{p['step']}:{p['acc']:.3f}@{p['seconds']:.0f}s" for p in points), flush=True)
    return points


def summarise(curves: dict[str, dict[int, list[dict]]]) -> dict:
    """Thresholds, equal-time and equal-step accuracies (see the module docstring)."""
    dss_final = mean([c[-1]["acc"] for c in curves["dss"].values()])
    levels = {f"{level:g}": level for level in LEVELS} | {"dss_final": dss_final}
    table = {"dss_final_acc": dss_final}
    for method, runs in curves.items():
        other = curves["qcrd" if method == "dss" else "dss"]
        row = {"final_acc": mean([c[-1]["acc"] for c in runs.values()])}
        for name, level in levels.items():
            hits = [first_reaching(c, level) for c in runs.values()]
            row[f"reach_{name}"] = {
                "reached": sum(h is not None for h in hits),
                "of": len(hits),
                "steps": mean([h["step"] for h in hits if h]),
                "seconds": mean([h["seconds"] for h in hits if h]),
            }
        # Read this method at the other's evaluation times (same seed): equal wall time, equal steps.
        row["acc_at_other_times"] = {
            seed: [round(accuracy_at(runs[seed], "seconds", p["seconds"]), 4) for p in other[seed]]
            for seed in runs
            if seed in other
        }
        row["seconds_per_step"] = mean([c[-1]["seconds"] / c[-1]["step"] for c in runs.values()])
        table[method] = row
    steps = [p["step"] for p in next(iter(curves["dss"].values()))]
    table["acc_at_equal_steps"] = {
        m: [round(mean([accuracy_at(c, "step", s) for c in curves[m].values()]), 4) for s in steps] for m in curves
    }
    table["steps"] = steps
    return table


def markdown(table: dict, seeds: list[int]) -> str:
    lines = [f"# Time to accuracy, default task ({len(seeds)} seeds: {seeds})", ""]
    lines += [
        "| method | final acc | s/step | " + " | ".join(f"reaches {k}" for k in ("0.5", "0.7", "dss_final")) + " |"
    ]
    lines += ["|---|---|---|---|---|---|"]
    for method in METHODS:
        row = table[method]
        cells = []
        for key in ("0.5", "0.7", "dss_final"):
            hit = row[f"reach_{key}"]
            cells.append(
                f"{hit['reached']}/{hit['of']}: step {hit['steps']:.0f}, {hit['seconds']:.0f} s"
                if hit["reached"]
                else f"0/{hit['of']}"
            )
        lines.append(
            f"| {method} | {row['final_acc']:.3f} | {row['seconds_per_step']:.3f} | " + " | ".join(cells) + " |"
        )
    lines += ["", f"DSS's final accuracy (mean): {table['dss_final_acc']:.3f}", ""]
    lines += [
        "Accuracy at equal wall time (each method read at the other's evaluation times, same seed; mean over seeds):",
        "",
    ]
    for method in METHODS:
        other = "qcrd" if method == "dss" else "dss"
        per_seed = list(table[method]["acc_at_other_times"].values())
        if per_seed:
            at = [mean([run[i] for run in per_seed]) for i in range(min(len(run) for run in per_seed))]
            lines.append(f"- {method} at {other}'s times: " + ", ".join(f"{a:.3f}" for a in at))
    lines.append("")
    lines += ["Accuracy at equal steps:", "", "| step | " + " | ".join(METHODS) + " |", "|---|---|---|"]
    for i, step in enumerate(table["steps"]):
        lines.append(f"| {step} | " + " | ".join(f"{table['acc_at_equal_steps'][m][i]:.3f}" for m in METHODS) + " |")
    return "\n".join(lines) + "\n"


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for method, color in zip(METHODS, ("tab:blue", "tab:red")):
        for i, (seed, points) in enumerate(sorted(curves[method].items())):
            ax.plot([0] + [p["seconds"] for p in points], [0] + [p["acc"] for p in points], color=color, alpha=0.7,
                    marker="o", markersize=3, label=method if i == 0 else None)  # fmt: skip
    ax.set_xlabel("seconds of the method's own work (training, negatives, judge pre-training)")
    ax.set_ylabel("test label accuracy (lm-eval)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(title="one line per seed")
    ax.set_title("DSS vs QCRD on the default task: accuracy against wall time")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--every", type=int, default=90, help="evaluate every this many steps")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for both methods (key=value)")
    parser.add_argument("--work", type=Path, default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        curves = {m: {s: train(m, s, args, work) for s in args.seeds} for m in METHODS}
    table = summarise(curves)
    args.out.mkdir(parents=True, exist_ok=True)
    # The command as run, less --work's folder (a machine's path; it holds the runs, not the result).
    argv = [("<work>" if prev == "--work" else a) for prev, a in zip([""] + sys.argv, sys.argv)]
    payload = {"command": " ".join(argv), "seeds": args.seeds, "every": args.every, "set": args.set}
    payload |= {
        "curves": curves,
        "table": table,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    (args.out / "time_to_accuracy.json").write_text(json.dumps(payload, indent=1) + "\n")
    (args.out / "time_to_accuracy.md").write_text(markdown(table, args.seeds))
    plot(curves, args.out / "time_to_accuracy.png")
    print(markdown(table, args.seeds))


if __name__ == "__main__":
    main()
