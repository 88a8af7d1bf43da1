"""The leaderboard: methods x tasks x seeds, compared with error bars.

``run_grid`` trains every cell that has not finished yet (resumable), ``collect`` reads finished
runs back from their ``metrics.jsonl`` and ``config.yaml``, ``aggregate`` turns them into
mean ± 95% CI per method and task plus the paired difference QCRD − DSS, and ``write`` renders
``leaderboard.{md,csv,json}`` and PNG plots. Formats: docs/formats.md.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from .config import METHOD_NAMES, ConfigError, _opt, check_folder_name, load_config, read_yaml

LEADERBOARD_FORMAT = "qcrd-leaderboard/1"
RATIONALE_KEYS = ("rationale_acc", "step_validity", "consistency", "rationale_words", "rouge_l", "bleu", "distinct_2",
                  "faithful_truncate", "faithful_corrupt")


@dataclass
class LeaderboardConfig:
    """``harness_configs/leaderboard.yaml``: which runs make the grid."""

    name: str = _opt("leaderboard", "name of the grid; outputs go to <output_dir>/")
    output_dir: str = _opt("runs/leaderboard", "runs go to <output_dir>/<task>/<method>/seed<k>/, tables and plots to <output_dir>/")
    base_config: str = _opt("harness_configs/default.yaml", "run config every cell starts from")
    methods: list = _opt(list(METHOD_NAMES), "methods to compare")
    tasks: dict = _opt({"synth": []}, "task label -> list of KEY=VALUE overrides that make that task")
    seeds: list = _opt([0, 1, 2], "training seeds: initialisation, batching and sampling (and, for real tasks without a validation pool, "
                               "which task.heldout training questions are held out for the judge's AUC)")
    overrides: list = _opt([], "KEY=VALUE overrides applied to every run (e.g. an equal training budget)")
    baseline: str = _opt("dss", "the paired difference is reported as <contender> − <baseline>")
    contender: str = _opt("qcrd", "see baseline")


def load_leaderboard_config(path: str | Path) -> LeaderboardConfig:
    """Read and validate a leaderboard YAML (ConfigError names the file and key)."""
    data = read_yaml(path)
    known = {f.name for f in dataclasses.fields(LeaderboardConfig)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{path}: unknown key '{key}' (known keys: {', '.join(sorted(known))})")
    cfg = LeaderboardConfig(**data)
    if not isinstance(cfg.methods, list) or not cfg.methods:
        raise ConfigError(f"{path}: key 'methods': expected a non-empty list")
    if not isinstance(cfg.tasks, dict) or not cfg.tasks or not all(isinstance(v, list) for v in cfg.tasks.values()):
        raise ConfigError(f"{path}: key 'tasks': expected a mapping of task label to a list of KEY=VALUE overrides")
    for label in cfg.tasks:  # a label is a folder under output_dir: it must not lead outside it
        check_folder_name(str(label), f"{path}: key 'tasks': label")
    if not isinstance(cfg.seeds, list) or not cfg.seeds or not all(isinstance(s, int) for s in cfg.seeds):
        raise ConfigError(f"{path}: key 'seeds': expected a non-empty list of integers")
    # Validate every cell's run config now, before hours of training.
    for label, task_overrides in cfg.tasks.items():
        for method in cfg.methods:
            try:
                cell_config(cfg, label, method, cfg.seeds[0])
            except ConfigError as err:
                raise ConfigError(f"{path}: task '{label}', method '{method}': {err}") from None
    return cfg


def cell_config(cfg: LeaderboardConfig, task_label: str, method: str, seed: int):
    """The run config of one cell of the grid."""
    overrides = list(cfg.overrides) + list(cfg.tasks[task_label]) + [
        f"method.name={method}", f"training.seed={seed}", f"output_dir={Path(cfg.output_dir) / task_label / method}",
        f"name=seed{seed}",
    ]
    return load_config(cfg.base_config, overrides)


def is_finished(run_dir: Path) -> bool:
    """A run is finished when its metrics hold one record per configured round."""
    metrics, config = run_dir / "metrics.jsonl", run_dir / "config.yaml"
    if not metrics.exists() or not config.exists():
        return False
    rounds = yaml.safe_load(config.read_text())["training"]["rounds"]
    lines = [line for line in metrics.read_text().splitlines() if line.strip()]
    return len(lines) >= rounds


def run_grid(cfg: LeaderboardConfig, train: Callable, log: Callable[[str], None] = print) -> list[Path]:
    """Train every unfinished cell (finished ones are skipped, so a killed grid resumes)."""
    run_dirs = []
    cells = [(t, m, s) for t in cfg.tasks for m in cfg.methods for s in cfg.seeds]
    for n, (task_label, method, seed) in enumerate(cells, 1):
        run_cfg = cell_config(cfg, task_label, method, seed)
        run_dir = Path(run_cfg.output_dir) / run_cfg.name
        run_dirs.append(run_dir)
        if is_finished(run_dir):
            log(f"[{n}/{len(cells)}] {task_label} {method} seed {seed}: finished, skipped")
            continue
        log(f"[{n}/{len(cells)}] {task_label} {method} seed {seed}: training")
        train(run_cfg)
    return run_dirs


@dataclass
class RunResult:
    """What the leaderboard needs from one finished run."""

    task: str
    method: str
    seed: int
    rounds: list[dict] = field(default_factory=list)
    path: str = ""

    @property
    def final(self) -> dict:
        return self.rounds[-1]


def read_run(run_dir: Path) -> RunResult:
    """One finished run, from its files. Grid runs (``<task label>/<method>/seed<k>/``) keep
    their grid's task label; other runs are labelled by their ``task.name``."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    method, seed = config["method"]["name"], int(config["training"]["seed"])
    in_grid = run_dir.name == f"seed{seed}" and run_dir.parent.name == method
    label = run_dir.parent.parent.name if in_grid else config["task"]["name"]
    return RunResult(label, method, seed, rounds, str(run_dir))


def collect(paths: list[Path]) -> list[RunResult]:
    """Every finished run under ``paths`` (run folders or folders above them); unfinished runs
    are left out."""
    results = []
    for root in paths:
        for metrics in sorted(Path(root).rglob("metrics.jsonl")):
            if is_finished(metrics.parent):
                results.append(read_run(metrics.parent))
    return results


def mean_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width of the two-sided t confidence interval, n). One value: half-width nan."""
    from scipy import stats

    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan, 1
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n), n


def _metric(record: dict, key: str) -> float | None:
    if key == "acc":
        return record.get("headline_acc")
    value = record.get("eval", {}).get(record.get("explain_task", ""), {}).get(key)
    if value is None:
        value = record.get("rationale_quality", {}).get(key)
    return value


def _cost(run: RunResult) -> tuple[float, float]:
    wall = sum(run.rounds[0].get("setup_time_s", {}).values()) + sum(sum(r["time_s"].values()) for r in run.rounds)
    speed = sum(r.get("train_tokens_per_s", 0.0) for r in run.rounds) / len(run.rounds)
    return wall, speed


def aggregate(results: list[RunResult], baseline: str = "dss", contender: str = "qcrd") -> dict:
    """Mean ± 95% CI over seeds per (task, method), and the paired contender − baseline
    difference over the seeds both finished."""
    rows, diffs = [], []
    tasks = sorted({r.task for r in results})
    for task in tasks:
        for method in sorted({r.method for r in results if r.task == task}, key=_method_order):
            runs = [r for r in results if r.task == task and r.method == method]
            row = {"task": task, "method": method, "seeds": sorted(r.seed for r in runs)}
            for key in ("acc",) + RATIONALE_KEYS:
                values = [v for v in (_metric(r.final, key) for r in runs) if v is not None]
                if values:
                    row[key], row[f"{key}_ci95"], _ = mean_ci(values)
            walls, speeds = zip(*(_cost(r) for r in runs))
            row["wall_s"], row["wall_s_ci95"], _ = mean_ci(list(walls))
            row["tokens_per_s"], _, _ = mean_ci(list(speeds))
            row["acc_per_round"] = [mean_ci([_metric(r.rounds[k], "acc") for r in runs if k < len(r.rounds)])[0]
                                    for k in range(max(len(r.rounds) for r in runs))]
            rows.append(row)
        by_seed = {m: {r.seed: _metric(r.final, "acc") for r in results if r.task == task and r.method == m} for m in (baseline, contender)}
        common = sorted(set(by_seed[baseline]) & set(by_seed[contender]))
        if common:
            deltas = [by_seed[contender][s] - by_seed[baseline][s] for s in common]
            mean, half, n = mean_ci(deltas)
            diffs.append({"task": task, "contender": contender, "baseline": baseline, "diff": mean, "diff_ci95": half,
                          "n_pairs": n, "per_seed": dict(zip(common, deltas))})
    return {"format": LEADERBOARD_FORMAT, "rows": rows, "paired": diffs}


def _method_order(method: str) -> tuple:
    return (METHOD_NAMES.index(method) if method in METHOD_NAMES else len(METHOD_NAMES), method)


def _fmt(value, half=None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.{digits}f}"
    if half is not None and not (isinstance(half, float) and math.isnan(half)):
        text += f" ± {half:.{digits}f}"
    return text


def to_markdown(board: dict) -> str:
    """The leaderboard as Markdown tables."""
    lines = ["# Leaderboard", "", "Final-round accuracy and rationale quality, mean ± 95% CI (t) over seeds.", "",
             "| task | method | seeds | acc | rationale_acc | step_validity | consistency | words | ROUGE-L | BLEU | distinct-2 | wall s | tokens/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in board["rows"]:
        cells = [r["task"], r["method"], str(len(r["seeds"])), _fmt(r.get("acc"), r.get("acc_ci95"))]
        for key in ("rationale_acc", "step_validity", "consistency"):
            cells.append(_fmt(r.get(key), r.get(f"{key}_ci95")))
        cells += [_fmt(r.get("rationale_words"), None, 1), _fmt(r.get("rouge_l")), _fmt(r.get("bleu"), None, 1), _fmt(r.get("distinct_2")),
                  _fmt(r.get("wall_s"), None, 0), _fmt(r.get("tokens_per_s"), None, 0)]
        lines.append("| " + " | ".join(cells) + " |")
    if board["paired"]:
        lines += ["", "Paired difference over seeds (same seed, same data):", "", "| task | difference | mean ± 95% CI | pairs |", "|---|---|---|---|"]
        for d in board["paired"]:
            lines.append(f"| {d['task']} | {d['contender']} − {d['baseline']} | {_fmt(d['diff'], d['diff_ci95'])} | {d['n_pairs']} |")
    return "\n".join(lines) + "\n"


def write(board: dict, results: list[RunResult], out: Path) -> list[Path]:
    """Write leaderboard.{md,csv,json} and the PNG plots into ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    (out / "leaderboard.json").write_text(json.dumps(board, indent=2, default=_json_default))
    (out / "leaderboard.md").write_text(to_markdown(board))
    keys = ["task", "method", "n_seeds", "acc", "acc_ci95"] + [k for key in RATIONALE_KEYS for k in (key, f"{key}_ci95")] + ["wall_s", "tokens_per_s"]
    with open(out / "leaderboard.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for r in board["rows"]:
            writer.writerow({**r, "n_seeds": len(r["seeds"])})
    written += [out / "leaderboard.json", out / "leaderboard.md", out / "leaderboard.csv"]
    written += plot(results, out)
    return written


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(type(value))


def plot(results: list[RunResult], out: Path) -> list[Path]:
    """Accuracy per round per method (one panel per task, mean with a 95% CI band), and the
    rationale metrics per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    tasks = sorted({r.task for r in results})
    paths = []
    for filename, keys in (("accuracy_per_round.png", ("acc",)), ("rationale_metrics_per_round.png", ("rationale_acc", "step_validity", "consistency"))):
        fig, axes = plt.subplots(len(keys), len(tasks), figsize=(4.5 * len(tasks), 3.2 * len(keys)), squeeze=False)
        for col, task in enumerate(tasks):
            for row, key in enumerate(keys):
                ax = axes[row][col]
                for method in sorted({r.method for r in results if r.task == task}, key=_method_order):
                    runs = [r for r in results if r.task == task and r.method == method]
                    n_rounds = max(len(r.rounds) for r in runs)
                    stats_ = [mean_ci([v for v in (_metric(r.rounds[k], key) for r in runs if k < len(r.rounds)) if v is not None])
                              for k in range(n_rounds)]
                    xs = [k + 1 for k, (m, _, n) in enumerate(stats_) if n]
                    means = [m for m, _, n in stats_ if n]
                    halves = [0.0 if math.isnan(h) else h for _, h, n in stats_ if n]
                    if not xs:
                        continue
                    ax.plot(xs, means, marker="o", label=method)
                    ax.fill_between(xs, [m - h for m, h in zip(means, halves)], [m + h for m, h in zip(means, halves)], alpha=0.2)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_title(f"{task}: {key}")
                ax.set_xlabel("round")
                ax.grid(alpha=0.3)
                if row == 0 and col == 0:
                    ax.legend()
        fig.tight_layout()
        fig.savefig(out / filename, dpi=110)
        plt.close(fig)
        paths.append(out / filename)
    return paths


def write_tensorboard(results: list[RunResult], folder: Path) -> None:
    """Every run's per-round scalars (eval metrics, rationale quality, losses) as TensorBoard events."""
    from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

    for run in results:
        writer = SummaryWriter(str(folder / run.task / run.method / f"seed{run.seed}"))
        for record in run.rounds:
            for task, metrics in record.get("eval", {}).items():
                for key, value in metrics.items():
                    writer.add_scalar(f"{task}/{key}", value, record["round"])
            for group in ("rationale_quality", "loss"):
                for key, value in record.get(group, {}).items():
                    writer.add_scalar(f"{group}/{key}", value, record["round"])
        writer.close()
