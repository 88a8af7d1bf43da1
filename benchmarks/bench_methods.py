"""Method comparison benchmark: finetune / single_task / dss / qcrd, 3 seeds, equal budget.

Usage:
  python benchmarks/bench_methods.py                       # synthetic task (teacher noise 0.16)
  python benchmarks/bench_methods.py --noise 0.32          # a noisier simulated teacher
  python benchmarks/bench_methods.py --config benchmarks/configs/methods_svamp.yaml   # real SVAMP

Runs `qcrd-bench leaderboard` on the grid (resumable), then copies the tables and plots to
benchmarks/results/<grid name>[_noise<x>]/ together with the command that produced them.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "benchmarks" / "configs" / "methods_synth.yaml"))
    parser.add_argument(
        "--noise", type=float, help="simulated teacher: step error rate per unit of temperature (default 0.16)"
    )
    args = parser.parse_args()
    grid = yaml.safe_load(Path(args.config).read_text())
    name = grid["name"]
    if args.noise is not None:
        name += f"_noise{args.noise:g}"
        grid["name"], grid["output_dir"] = name, f"{grid['output_dir']}_noise{args.noise:g}"
        grid["overrides"] = list(grid.get("overrides") or []) + [f"teacher.step_error_rate={args.noise}"]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(grid, handle)
    cli = str(Path(sys.executable).with_name("qcrd-bench"))
    cmd = [cli, "leaderboard", "--config", handle.name, "--quiet"]
    subprocess.run(cmd, check=True, cwd=REPO)
    results = REPO / "benchmarks" / "results" / name
    results.mkdir(parents=True, exist_ok=True)
    for file in (
        "leaderboard.md",
        "leaderboard.csv",
        "leaderboard.json",
        "accuracy_per_round.png",
        "rationale_metrics_per_round.png",
    ):
        shutil.copy(REPO / grid["output_dir"] / file, results / file)
    command = "python benchmarks/bench_methods.py" + (
        f" --config {Path(args.config).resolve().relative_to(REPO)}" if "synth" not in args.config else ""
    )
    command += f" --noise {args.noise:g}" if args.noise is not None else ""
    (results / "command.txt").write_text(command + "\n")
    print((results / "leaderboard.md").read_text())


if __name__ == "__main__":
    main()
