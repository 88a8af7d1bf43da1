"""The paper's tables in miniature: every method, every ablation, with significance.

On the synthetic task with the simulated (noisy) teacher and the default students, each table of
Wang et al. (arXiv:2405.13014) is re-run over several seeds and printed beside the paper's
numbers (SVAMP, T5-base, single runs):

- table1: finetune, single_task, DSS, MI, QCRD                       (reference: DSS)
- table4: the ablation ladder DSS -> +ED -> +NK -> +QJ               (reference: the rung above)
- table5: set reductions MinMax, MaxMin, Sampling, Mean, W-mean       (reference: MinMax)
- negatives: j = 3 / 5 / 10, a fixed generator, LLM minority only    (reference: j = 5)
- fig4: DSS and QCRD on 25 / 50 / 75 / 100% of the training set     (reference: DSS, same size)
- review: QCRD with batch-mean judge weights, and without student negatives that reach gold
  (the December review's points (b) and (d); not in the paper)     (reference: QCRD)
- review_confirm: QCRD and its batch-mean weights alone, for fresh seeds (--first-seed 5)

Every row gives the final label accuracy (mean ± 95% CI over seeds), the paired difference to
its reference row (same seeds, same data) with its CI, the paired t-test's p-value Holm-corrected
across the rows of its table and a verdict (better / worse / no detectable difference at 0.05),
rationale quality (step validity, consistency, the faithfulness probes) and cost (wall time,
training tokens/s). Runs are shared by hash of the resolved config, so a cell that appears in
several tables (QCRD's default is in four) is trained once, and the grid resumes where it stopped.

Usage:
  python benchmarks/reproduce.py                          # everything, 5 seeds (hours on 2 CPU cores)
  python benchmarks/reproduce.py --experiments table1 --seeds 5
  python benchmarks/reproduce.py --noise 0.3              # a noisier teacher (teacher.step_error_rate)
  python benchmarks/reproduce.py -o student.d_model=256 -o student.num_layers=4   # e.g. larger students on a GPU
Writes benchmarks/results/reproduce/report.md (+ report.json and one plot per table); runs go to
runs/reproduce/ (--runs-dir).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import matplotlib.pyplot as plt  # noqa: E402

from qcrd_plugin.leaderboard import (  # noqa: E402
    RunResult,
    config_hash,
    figure,
    identity_hash,
    is_finished,
    mean_ci,
    metric_value,
    read_run,
    run_cost,
    strict_json,
)
from qcrd_plugin.significance import holm, paired_test, verdict  # noqa: E402

QUALITY = ("step_validity", "consistency", "faithful_truncate", "faithful_corrupt")


@dataclass(frozen=True)
class Cell:
    label: str
    overrides: tuple[str, ...]
    paper: float | None = None  # the paper's SVAMP accuracy (%), T5-base
    reference: str | None = None  # the label of the row this one is compared with


def ladder(rows: list[tuple[str, tuple[str, ...], float | None]]) -> list[Cell]:
    """Cells each compared with the one above (the first is the reference)."""
    return [
        Cell(label, overrides, paper, rows[i - 1][0] if i else None)
        for i, (label, overrides, paper) in enumerate(rows)
    ]


def against(reference: str, rows: list[tuple[str, tuple[str, ...], float | None]]) -> list[Cell]:
    return [
        Cell(label, overrides, paper, None if label == reference else reference) for label, overrides, paper in rows
    ]


QCRD = ("method.name=qcrd",)
EXPERIMENTS: dict[str, tuple[str, list[Cell]]] = {
    "table1": (
        "Table 1: methods",
        against(
            "dss",
            [
                ("finetune", ("method.name=finetune",), 63.0),
                ("single_task", ("method.name=single_task",), 59.0),
                ("dss", ("method.name=dss",), 65.5),
                ("mi", ("method.name=mi",), 67.5),
                ("qcrd", QCRD, 69.0),
            ],
        ),
    ),
    "table4": (
        "Table 4: the ablation ladder",
        ladder(
            [
                ("DSS", ("method.name=dss", "self_consistency.enabled=false"), 65.5),
                ("+ED", QCRD + ("negatives.enabled=false", "judge.enabled=false"), 67.0),
                ("+NK", QCRD + ("judge.enabled=false",), 68.5),
                ("+QJ", QCRD, 69.0),
            ]
        ),
    ),
    "table5": (
        "Table 5: set reductions",
        against(
            "MinMax",
            [
                ("MinMax", QCRD, 69.0),
                ("MaxMin", QCRD + ("method.set_reduction=maxmin",), 67.0),
                ("Sampling", QCRD + ("method.set_reduction=sampling",), 66.5),
                ("Mean", QCRD + ("method.set_reduction=mean",), 65.0),
                ("W-mean", QCRD + ("method.set_reduction=weighted_mean",), 66.0),
            ],
        ),
    ),
    "negatives": (
        "Negative sources",
        against(
            "j=5",
            [
                ("j=3", QCRD + ("negatives.j_back=3",), 68.0),
                ("j=5", QCRD, 69.0),
                ("j=10", QCRD + ("negatives.j_back=10",), 68.5),
                ("Fixed", QCRD + ("negatives.generator=fixed",), 66.5),
                ("SC (LLM minority only)", QCRD + ("negatives.source=llm",), 64.5),
            ],
        ),
    ),
    "review": (
        "Two testable points of the December review (not in the paper)",
        against(
            "QCRD",
            [
                ("DSS", ("method.name=dss",), 65.5),
                ("QCRD", QCRD, 69.0),
                ("QCRD, weights / batch mean", QCRD + ("method.weight_norm=batch_mean",), None),
                ("QCRD, correct student negatives dropped", QCRD + ("negatives.keep_correct=false",), None),
            ],
        ),
    ),
    "review_confirm": (
        "Batch-mean judge weights on fresh seeds (run with --first-seed 5)",
        against(
            "QCRD",
            [("QCRD", QCRD, 69.0), ("QCRD, weights / batch mean", QCRD + ("method.weight_norm=batch_mean",), None)],
        ),
    ),
    "fig4": (
        "Fig. 4: training-set size",
        [
            cell
            for share in (25, 50, 75, 100)
            for cell in (
                Cell(f"DSS {share}%", ("method.name=dss", f"task.n_train={40 * share}")),
                Cell(f"QCRD {share}%", QCRD + (f"task.n_train={40 * share}",), None, f"DSS {share}%"),
            )
        ],
    ),
}


def run_cell(cell: Cell, seed: int, common: list[str], runs_dir: Path, log) -> Path:
    """Train one (cell, seed) unless a finished run of the same resolved config exists; its folder."""
    from qcrd_plugin.config import load_config
    from qcrd_plugin.training import run

    cfg = load_config(REPO / "harness_configs" / "default.yaml", [*common, *cell.overrides, f"training.seed={seed}"])
    digest = config_hash(cfg.to_dict())
    cfg.output_dir, cfg.name = str(runs_dir / digest), f"seed{seed}"
    run_dir = runs_dir / digest / cfg.name
    if is_finished(run_dir, digest):
        log(f"  {cell.label} seed {seed}: finished ({digest}), reused")
        return run_dir
    log(f"  {cell.label} seed {seed}: training ({digest})")
    start = time.perf_counter()
    run(cfg, progress=False, log=lambda _: None, resume=True)
    log(f"  {cell.label} seed {seed}: done in {time.perf_counter() - start:.0f} s")
    return run_dir


def accuracy(run: RunResult) -> float:
    return metric_value(run.final, "acc")


def table_rows(cells: list[Cell], runs: dict[str, list[RunResult]]) -> list[dict]:
    """One row per cell: accuracy, paired difference to the reference, Holm-corrected p, quality, cost."""
    rows = []
    for cell in cells:
        mine = runs[cell.label]
        acc, acc_ci, n = mean_ci([accuracy(r) for r in mine])
        row = {
            "label": cell.label,
            "paper": cell.paper,
            "reference": cell.reference,
            "seeds": sorted(r.seed for r in mine),
            "acc": acc,
            "acc_ci95": acc_ci,
            "n": n,
        }
        if cell.reference:
            theirs = {r.seed: accuracy(r) for r in runs[cell.reference]}
            row.update(paired_test([accuracy(r) - theirs[r.seed] for r in mine if r.seed in theirs]))
        for key in QUALITY:
            values = [v for v in (metric_value(r.final, key) for r in mine) if v is not None]
            row[key] = mean_ci(values)[0] if values else None
        walls, speeds = zip(*(run_cost(r) for r in mine))
        row["wall_s"], row["tokens_per_s"] = sum(walls) / len(walls), sum(speeds) / len(speeds)
        rows.append(row)
    adjusted = holm([row.get("p", math.nan) for row in rows])
    for row, p_holm in zip(rows, adjusted):
        row["p_holm"] = p_holm
        row["verdict"] = verdict(row["diff"], p_holm) if row["reference"] else "reference"
    return rows


def fmt(value, half=None, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" + ("" if half is None or math.isnan(half) else f" ± {half:.{digits}f}")


def markdown(title: str, rows: list[dict]) -> str:
    lines = [
        f"## {title}",
        "",
        "| row | paper (SVAMP %) | acc | vs | difference | p (Holm) | verdict | step validity | consistency | "
        "faithful trunc. | faithful corrupt | wall s | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            " | ".join(
                [
                    f"| {r['label']}",
                    fmt(r["paper"], digits=1),
                    f"{fmt(r['acc'], r['acc_ci95'])} (n={r['n']})",
                    r["reference"] or "–",
                    fmt(r.get("diff"), r.get("ci95")),
                    fmt(r.get("p_holm")),
                    r["verdict"],
                    *(fmt(r[k]) for k in QUALITY),
                    fmt(r["wall_s"], digits=0),
                    fmt(r["tokens_per_s"], digits=0),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def run_experiment(name: str, seeds: range, common: list[str], runs_dir: Path, out: Path) -> list[dict]:
    """Train (or reuse) every run of one table, then its rows and its plot ``<out>/<name>.png``."""
    title, cells = EXPERIMENTS[name]
    print(title, flush=True)
    runs = {
        cell.label: [
            read_run(run_cell(cell, seed, common, runs_dir, lambda m: print(m, flush=True))) for seed in seeds
        ]
        for cell in cells
    }
    rows = table_rows(cells, runs)
    # One series per row, named by the row (runs shared between rows are plotted under each).
    plotted = [
        RunResult(name, r.method, r.seed, r.rounds, r.path, {"row": label}) for label, rs in runs.items() for r in rs
    ]
    fig = figure(
        plotted, ("acc", "step_validity"), labels={(name, identity_hash({"row": label})): label for label in runs}
    )
    fig.savefig(out / f"{name}.png", dpi=110)
    plt.close(fig)
    print(markdown(title, rows), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument(
        "--experiments", default=",".join(EXPERIMENTS), help=f"comma-separated, among {', '.join(EXPERIMENTS)}"
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds per cell (default 5)")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds are FIRST..FIRST+N-1 (default 0); fresh seeds test a finding on runs it was not read from",
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=0.16,
        help="simulated teacher's step_error_rate per unit of temperature (default 0.16)",
    )
    parser.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        help="KEY=VALUE applied to every run (e.g. a larger student on a GPU)",
    )
    parser.add_argument(
        "--runs-dir",
        default=str(REPO / "runs" / "reproduce"),
        help="where the runs go (shared across tables, resumable)",
    )
    parser.add_argument(
        "--out",
        default=str(REPO / "benchmarks" / "results" / "reproduce"),
        help="where report.md, report.json and plots go",
    )
    args = parser.parse_args()
    chosen = [e.strip() for e in args.experiments.split(",") if e.strip()]
    unknown = [e for e in chosen if e not in EXPERIMENTS]
    if unknown or args.seeds < 1 or args.first_seed < 0:
        parser.error(
            f"--experiments: unknown {', '.join(unknown)} (known: {', '.join(EXPERIMENTS)})"
            if unknown
            else "--seeds: at least 1"
            if args.seeds < 1
            else "--first-seed: at least 0"
        )
    common = [f"teacher.step_error_rate={args.noise}", *args.override]
    out, runs_dir = Path(args.out), Path(args.runs_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report = {
        "command": "python benchmarks/reproduce.py " + " ".join(sys.argv[1:]),
        "noise": args.noise,
        "seeds": args.seeds,
        "first_seed": args.first_seed,
        "overrides": args.override,
        "tables": {},
    }
    sections = []
    for name in chosen:
        rows = run_experiment(name, range(args.first_seed, args.first_seed + args.seeds), common, runs_dir, out)
        report["tables"][name] = {"title": EXPERIMENTS[name][0], "rows": rows}
        sections.append(markdown(EXPERIMENTS[name][0], rows) + f"\n![{EXPERIMENTS[name][0]}]({name}.png)\n")
    report["wall_s"] = round(time.perf_counter() - started, 1)
    report["machine"] = {"platform": platform.platform(), "python": platform.python_version()}
    header = [
        "# The paper's tables in miniature",
        "",
        f"Command: `{report['command']}`. Synthetic task, simulated teacher with step_error_rate {args.noise} "
        "per unit of temperature, the default students and budget (`harness_configs/default.yaml`), "
        f"{args.seeds} seeds per row. The paper's column is SVAMP with T5-base, single runs: compare directions, "
        "not levels. Differences are paired over seeds; p is the paired t-test's, Holm-corrected across the rows of "
        "each table.",
        "",
    ]
    (out / "report.md").write_text("\n".join(header) + "\n".join(sections))
    (out / "report.json").write_text(strict_json(report))
    print(f"report: {out / 'report.md'} ({report['wall_s']:.0f} s this sitting)")


if __name__ == "__main__":
    main()
