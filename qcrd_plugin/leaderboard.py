"""The leaderboard: methods x tasks x seeds, compared with error bars.

``run_grid`` trains every cell that has not finished yet (resumable), ``collect`` reads finished
runs back from their ``metrics.jsonl`` and ``config.yaml``, ``aggregate`` turns them into
mean ± 95% CI per method and task plus the paired difference QCRD − DSS, and ``write`` renders
``leaderboard.{md,csv,json}`` and PNG plots. Formats: docs/formats.md.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .config import _opt, check_folder_name, load_config, read_yaml
from .errors import ConfigError
from .registry import METHODS

LEADERBOARD_FORMAT = "qcrd-leaderboard/1"
RATIONALE_KEYS = (
    "rationale_acc",
    "step_validity",
    "consistency",
    "rationale_words",
    "rouge_l",
    "bleu",
    "distinct_2",
    "faithful_truncate",
    "faithful_corrupt",
)


@dataclass
class LeaderboardConfig:
    """``harness_configs/leaderboard.yaml``: which runs make the grid."""

    name: str = _opt("leaderboard", "name of the grid; outputs go to <output_dir>/")
    output_dir: str = _opt(
        "runs/leaderboard", "runs go to <output_dir>/<task>/<method>/seed<k>/, tables and plots to <output_dir>/"
    )
    base_config: str = _opt("harness_configs/default.yaml", "run config every cell starts from")
    # Every registered method, read when a config is made (a plugin's method is compared too).
    methods: list = field(
        default_factory=lambda: list(METHODS),
        metadata={"help": "methods to compare (default: every registered method)"},
    )
    tasks: dict = _opt({"synth": []}, "task label -> list of KEY=VALUE overrides that make that task")
    seeds: list = _opt(
        [0, 1, 2],
        "training seeds: initialisation, batching and sampling (and, for real tasks without a validation pool, "
        "which task.heldout training questions are held out for the judge's AUC)",
    )
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


# Where a run is written and which seed it is: not part of what a cell compares.
NOT_IDENTITY = (
    "name",
    "output_dir",
    "training.seed",
    "training.report_to",
)  # where a run goes and logs, not what it trains


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"training": {"seed": 0}}`` -> ``{"training.seed": 0}``."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# Keys added after grids were trained, with the default they had implicitly before: at that
# default they are left out of the identity, so the cells trained before keep their hash.
ADDED_KEYS = {
    "task.label_source": "gold",
    "training.grad_accum_steps": 1,
    "evaluation.select": "last",
    "evaluation.include_path": [],
    "student.lora_rank": 0,
    "student.lora_alpha": 16.0,
    "student.lora_dropout": 0.0,
    "student.lora_target_modules": [],
    "judge.pretrained": "",
    "judge.encoder_learning_rate": 5e-5,
    "judge.max_tokens": 512,
    "method.selection": "every_step",
    "method.weight_norm": "none",
    "negatives.keep_correct": True,
}


def config_identity(config: dict) -> dict[str, Any]:
    """The resolved run config that defines a leaderboard cell: every key but the seed and the
    run's location. Runs with equal identities are seeds of one cell; any other difference (an
    ablation, a budget, a data setting) is another cell.

    A finetune run on gold labels asks no teacher (since 2026-11-30; before, its pool's rationales
    were part of the tokenizer's corpus): its teacher and self-consistency keys are replaced by
    one marker, so its cells never mix with those of earlier finetune runs."""
    flat = flatten(config)
    identity = {
        k: v for k, v in flat.items() if k not in NOT_IDENTITY and not (k in ADDED_KEYS and ADDED_KEYS[k] == v)
    }
    if flat.get("method.name") == "finetune" and flat.get("task.label_source", "gold") == "gold":
        identity = {k: v for k, v in identity.items() if not k.startswith(("teacher.", "self_consistency."))}
        identity["teacher"] = "not asked"
    return identity


def identity_hash(identity: dict) -> str:
    """Eight hex digits naming a cell's identity."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]


def config_hash(config: dict) -> str:
    """The hash of a resolved run config's identity (``config_identity``)."""
    return identity_hash(config_identity(config))


def cell_config(cfg: LeaderboardConfig, task_label: str, method: str, seed: int):
    """The run config of one cell of the grid, written to ``<output_dir>/<task>/<method>-<hash>/seed<k>``:
    the hash of the resolved config is part of the folder, so a changed config trains a new cell
    instead of reusing the old one's runs."""
    overrides = (
        list(cfg.overrides)
        + list(cfg.tasks[task_label])
        + [f"method.name={method}", f"training.seed={seed}", f"name=seed{seed}"]
    )
    run_cfg = load_config(cfg.base_config, overrides)
    run_cfg.output_dir = str(Path(cfg.output_dir) / task_label / f"{method}-{config_hash(run_cfg.to_dict())}")
    return run_cfg


def is_finished(run_dir: Path, expected_hash: str | None = None) -> bool:
    """A run is finished when its metrics hold one record per configured round (and, with
    ``expected_hash``, when the config it ran is that cell's)."""
    metrics, config = run_dir / "metrics.jsonl", run_dir / "config.yaml"
    if not metrics.exists() or not config.exists():
        return False
    resolved = yaml.safe_load(config.read_text())
    if expected_hash is not None and config_hash(resolved) != expected_hash:
        return False
    rounds = resolved["training"]["rounds"]
    lines = [line for line in metrics.read_text().splitlines() if line.strip()]
    return len(lines) >= rounds


def cell_commands(cfg: LeaderboardConfig) -> list[str]:
    """One ``qcrd-bench run`` command line per unfinished cell of the grid, for a SLURM array or
    any scheduler: each trains exactly the cell :func:`run_grid` would, into the same folder, so
    ``qcrd-bench leaderboard --from-runs <output_dir>`` aggregates them afterwards."""
    import shlex

    lines = []
    for task_label, method, seed in [(t, m, s) for t in cfg.tasks for m in cfg.methods for s in cfg.seeds]:
        run_cfg = cell_config(cfg, task_label, method, seed)
        if is_finished(Path(run_cfg.output_dir) / run_cfg.name, config_hash(run_cfg.to_dict())):
            continue
        overrides = (
            list(cfg.overrides) + list(cfg.tasks[task_label]) + [f"method.name={method}", f"training.seed={seed}"]
        )
        argv = [
            "qcrd-bench",
            "run",
            "--config",
            str(cfg.base_config),
            *[a for o in overrides for a in ("-o", o)],
            "--output-dir",
            run_cfg.output_dir,
            "--name",
            run_cfg.name,
            "--quiet",
        ]
        lines.append(shlex.join(argv))
    return lines


def run_grid(
    cfg: LeaderboardConfig, train: Callable, log: Callable[[str], None] = print, report_to: list[str] = ()
) -> list[Path]:
    """Train every unfinished cell (finished ones are skipped, so a killed grid resumes).
    ``report_to``: trackers every trained cell logs to live (``training.report_to``; not part of
    a cell's identity, so it never retrains a finished cell)."""
    run_dirs = []
    cells = [(t, m, s) for t in cfg.tasks for m in cfg.methods for s in cfg.seeds]
    for n, (task_label, method, seed) in enumerate(cells, 1):
        run_cfg = cell_config(cfg, task_label, method, seed)
        run_dir = Path(run_cfg.output_dir) / run_cfg.name
        run_dirs.append(run_dir)
        if is_finished(run_dir, config_hash(run_cfg.to_dict())):
            log(f"[{n}/{len(cells)}] {task_label} {method} seed {seed}: finished, skipped")
            continue
        log(f"[{n}/{len(cells)}] {task_label} {method} seed {seed}: training")
        if report_to:
            run_cfg.training.report_to = list(report_to)
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
    identity: dict = field(default_factory=dict)  # config_identity of the run's resolved config

    @property
    def config_hash(self) -> str:
        return identity_hash(self.identity)

    @property
    def final(self) -> dict:
        """The run's result: its last round, or the round ``evaluation.select: validation`` chose."""
        chosen = self.rounds[-1].get("selected_round")
        if chosen is None:
            return self.rounds[-1]
        return next((r for r in self.rounds if r.get("round") == chosen), self.rounds[-1])


def read_run(run_dir: Path) -> RunResult:
    """One finished run, from its files. Grid runs (``<task label>/<method>/seed<k>/``) keep
    their grid's task label; other runs are labelled by their ``task.name``."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    method, seed = config["method"]["name"], int(config["training"]["seed"])
    in_grid = run_dir.name == f"seed{seed}" and run_dir.parent.name.split("-")[0] == method
    label = run_dir.parent.parent.name if in_grid else config["task"]["name"]
    return RunResult(label, method, seed, rounds, str(run_dir), config_identity(config))


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


def metric_value(record: dict, key: str) -> float | None:
    """A round record's ``key``: ``acc`` is the method's own answer's accuracy (``headline_acc``);
    other keys come from the rationale task's scores, else from ``rationale_quality``."""
    if key == "acc":
        return record.get("headline_acc")
    value = record.get("eval", {}).get(record.get("explain_task", ""), {}).get(key)
    if value is None:
        value = record.get("rationale_quality", {}).get(key)
    return value


def run_cost(run: RunResult) -> tuple[float, float]:
    """(wall seconds of setup and every phase, mean training tokens/s) of one run."""
    wall = sum(run.rounds[0].get("setup_time_s", {}).values()) + sum(sum(r["time_s"].values()) for r in run.rounds)
    # Rounds that trained in the process that logged them (a round trained before a kill and only
    # evaluated after the resume has no training time of its own).
    measured = [
        r["train_tokens_per_s"] for r in run.rounds if r.get("train_tokens_per_s") and r["time_s"].get("training")
    ]
    return wall, (sum(measured) / len(measured) if measured else 0.0)


def cell_labels(results: list[RunResult]) -> dict[tuple[str, str], str]:
    """A readable name per (task, config hash): the method, plus every key on which the cell
    differs from the value most cells of its task share, e.g. ``qcrd[j_back=3]``."""
    labels = {}
    for task in {r.task for r in results}:
        cells = {r.config_hash: r for r in results if r.task == task}
        keys = sorted({k for r in cells.values() for k in r.identity} - {"method.name"})
        varying = {}
        for key in keys:
            values = [json.dumps(r.identity.get(key), sort_keys=True, default=str) for r in cells.values()]
            if len(set(values)) > 1:
                varying[key] = max(set(values), key=values.count)  # the most common value
        short = {
            k: k.rsplit(".", 1)[-1] for k in varying
        }  # the last part of the key, unless two varying keys share it
        for digest, run in cells.items():
            differing = [
                k
                for k, common in varying.items()
                if json.dumps(run.identity.get(k), sort_keys=True, default=str) != common
            ]
            names = [short[k] if list(short.values()).count(short[k]) == 1 else k for k in differing]
            extra = ",".join(f"{name}={run.identity.get(k)}" for name, k in zip(names, differing))
            labels[(task, digest)] = run.method + (f"[{extra}]" if extra else "")
    return labels


def aggregate(results: list[RunResult], baseline: str = "dss", contender: str = "qcrd") -> dict:
    """Mean ± 95% CI over seeds per cell (task, resolved config minus the seed), and the paired
    contender − baseline difference over the seeds both cells finished, for every pair of a
    contender cell and a baseline cell of a task."""
    rows, diffs = [], []
    labels = cell_labels(results)
    for task in sorted({r.task for r in results}):
        cells = sorted(
            {r.config_hash for r in results if r.task == task},
            key=lambda h: (_method_order(next(r.method for r in results if r.config_hash == h)), labels[(task, h)]),
        )
        for digest in cells:
            runs = [r for r in results if r.task == task and r.config_hash == digest]
            row = {
                "task": task,
                "method": runs[0].method,
                "label": labels[(task, digest)],
                "config_hash": digest,
                "seeds": sorted(r.seed for r in runs),
            }
            for key in ("acc",) + RATIONALE_KEYS:
                values = [v for v in (metric_value(r.final, key) for r in runs) if v is not None]
                if values:
                    row[key], row[f"{key}_ci95"], _ = mean_ci(values)
            walls, speeds = zip(*(run_cost(r) for r in runs))
            row["wall_s"], row["wall_s_ci95"], _ = mean_ci(list(walls))
            row["tokens_per_s"], _, _ = mean_ci(list(speeds))
            row["acc_per_round"] = [
                mean_ci([metric_value(r.rounds[k], "acc") for r in runs if k < len(r.rounds)])[0]
                for k in range(max(len(r.rounds) for r in runs))
            ]
            rows.append(row)
        by_cell = {
            row["config_hash"]: {
                r.seed: metric_value(r.final, "acc")
                for r in results
                if r.task == task and r.config_hash == row["config_hash"]
            }
            for row in rows
            if row["task"] == task
        }
        task_rows = [row for row in rows if row["task"] == task]
        for con in (row for row in task_rows if row["method"] == contender):
            for base in (row for row in task_rows if row["method"] == baseline):
                common = sorted(set(by_cell[base["config_hash"]]) & set(by_cell[con["config_hash"]]))
                if not common:
                    continue
                deltas = [by_cell[con["config_hash"]][s] - by_cell[base["config_hash"]][s] for s in common]
                mean, half, n = mean_ci(deltas)
                diffs.append(
                    {
                        "task": task,
                        "contender": con["label"],
                        "baseline": base["label"],
                        "diff": mean,
                        "diff_ci95": half,
                        "n_pairs": n,
                        "per_seed": dict(zip(common, deltas)),
                    }
                )
    return {"format": LEADERBOARD_FORMAT, "rows": rows, "paired": diffs}


def _method_order(method: str) -> tuple:
    names = METHODS.names()  # registration order: plainest baseline first, QCRD last
    return (names.index(method) if method in names else len(names), method)


def _fmt(value, half=None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.{digits}f}"
    if half is not None and not (isinstance(half, float) and math.isnan(half)):
        text += f" ± {half:.{digits}f}"
    return text


def to_markdown(board: dict) -> str:
    """The leaderboard as Markdown tables."""
    lines = [
        "# Leaderboard",
        "",
        "Final-round accuracy and rationale quality, mean ± 95% CI (t) over seeds.",
        "",
        (
            "| task | method | config | seeds | acc | rationale_acc | step_validity | consistency | words | ROUGE-L "
            "| BLEU | distinct-2 | wall s | tokens/s |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in board["rows"]:
        cells = [
            r["task"],
            r["label"],
            f"`{r['config_hash']}`",
            str(len(r["seeds"])),
            _fmt(r.get("acc"), r.get("acc_ci95")),
        ]
        for key in ("rationale_acc", "step_validity", "consistency"):
            cells.append(_fmt(r.get(key), r.get(f"{key}_ci95")))
        cells += [
            _fmt(r.get("rationale_words"), None, 1),
            _fmt(r.get("rouge_l")),
            _fmt(r.get("bleu"), None, 1),
            _fmt(r.get("distinct_2")),
            _fmt(r.get("wall_s"), None, 0),
            _fmt(r.get("tokens_per_s"), None, 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if board["paired"]:
        lines += [
            "",
            "Paired difference over seeds (same seed, same data):",
            "",
            "| task | difference | mean ± 95% CI | pairs |",
            "|---|---|---|---|",
        ]
        for d in board["paired"]:
            lines.append(
                f"| {d['task']} | {d['contender']} − {d['baseline']} | "
                f"{_fmt(d['diff'], d['diff_ci95'])} | {d['n_pairs']} |"
            )
    return "\n".join(lines) + "\n"


def write(board: dict, results: list[RunResult], out: Path) -> list[Path]:
    """Write leaderboard.{md,csv,json} and the PNG plots into ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    (out / "leaderboard.json").write_text(strict_json(board))
    (out / "leaderboard.md").write_text(to_markdown(board))
    keys = (
        ["task", "method", "label", "config_hash", "n_seeds", "acc", "acc_ci95"]
        + [k for key in RATIONALE_KEYS for k in (key, f"{key}_ci95")]
        + ["wall_s", "tokens_per_s"]
    )
    with open(out / "leaderboard.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for r in board["rows"]:
            writer.writerow({**r, "n_seeds": len(r["seeds"])})
    written += [out / "leaderboard.json", out / "leaderboard.md", out / "leaderboard.csv"]
    written += plot(results, out)
    return written


def strict_json(value: Any) -> str:
    """JSON that every parser reads: a NaN (a CI of one seed) becomes null, never a bare NaN."""

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value), indent=2, allow_nan=False)


PLOTS = {
    "accuracy_per_round.png": ("acc",),
    "rationale_metrics_per_round.png": ("rationale_acc", "step_validity", "consistency"),
}
METRIC_NAMES = {
    "acc": "accuracy",
    "rationale_acc": "rationale accuracy",
    "step_validity": "step validity",
    "consistency": "label-rationale consistency",
}


def _series(runs: list[RunResult], key: str) -> tuple[list[int], list[float], list[float]]:
    """Rounds, means and 95% CI half-widths (0 for one seed) of ``key`` over ``runs``."""
    stats_ = [
        mean_ci([v for v in (metric_value(r.rounds[k], key) for r in runs if k < len(r.rounds)) if v is not None])
        for k in range(max(len(r.rounds) for r in runs))
    ]
    kept = [(k + 1, m, 0.0 if math.isnan(h) else h) for k, (m, h, n) in enumerate(stats_) if n]
    return [k for k, _, _ in kept], [m for _, m, _ in kept], [h for _, _, h in kept]


def figure(results: list[RunResult], keys: tuple[str, ...], labels: dict[tuple[str, str], str] | None = None):
    """One panel per (metric, task): the mean per round of every cell with its 95% CI band,
    clipped to [0, 1] (every plotted metric is a rate). A cell keeps one colour in every panel, and
    the figure has one legend; the caption says what the band is and over how many seeds.
    ``labels``: a name per (task, config hash), legend in its order; default :func:`cell_labels`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r.task for r in results})
    if labels:  # the caller's names, in the caller's order
        cells = list(dict.fromkeys(labels.values()))
    else:
        labels = cell_labels(results)
        cells = sorted(set(labels.values()), key=lambda name: (_method_order(name.split("[")[0]), name))
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(cells)}
    # The legend sits above the panels: as many columns as the longest label lets fit (about 12
    # characters an inch at the default font), the figure widened for long labels, and the panels
    # pushed down by the legend's rows.
    longest = max((len(name) for name in cells), default=1)
    width = max(4.6 * len(tasks), min(18.0, 0.085 * longest + 1.0))
    ncol = max(1, min(len(cells), int(width * 12 // (longest + 6))))
    legend_in = 0.3 * math.ceil(len(cells) / ncol) + 0.2
    height = 3.2 * len(keys) + 0.5 + legend_in
    fig, axes = plt.subplots(len(keys), len(tasks), figsize=(width, height), squeeze=False)
    seeds = set()
    for col, task in enumerate(tasks):
        for row, key in enumerate(keys):
            ax = axes[row][col]
            rounds = 1
            for (cell_task, digest), name in sorted(labels.items(), key=lambda item: cells.index(item[1])):
                runs = [r for r in results if r.task == task and r.config_hash == digest]
                if cell_task != task or not runs:
                    continue
                seeds.add(len(runs))
                xs, means, halves = _series(runs, key)
                if not xs:
                    continue
                rounds = max(rounds, xs[-1])
                ax.plot(xs, means, marker="o", color=colours[name], label=name)
                ax.fill_between(
                    xs,
                    [max(0.0, m - h) for m, h in zip(means, halves)],
                    [min(1.0, m + h) for m, h in zip(means, halves)],
                    color=colours[name],
                    alpha=0.18,
                    linewidth=0,
                )
            ax.set_xticks(range(1, rounds + 1))
            ax.set_xlim(0.8, rounds + 0.2)
            ax.set_ylim(0.0, 1.0)
            ax.set_title(f"{task}: {METRIC_NAMES.get(key, key)}")
            ax.set_xlabel("round")
            ax.set_ylabel(METRIC_NAMES.get(key, key))
            ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colours[name], marker="o", label=name) for name in cells]
    fig.legend(handles=handles, loc="upper center", ncol=ncol, frameon=False)
    n_seeds = "/".join(str(n) for n in sorted(seeds)) or "0"
    plural = "" if seeds == {1} else "s"
    fig.text(
        0.5,
        0.01,
        f"mean ± 95% CI (t) over {n_seeds} seed{plural} per cell; bands clipped to [0, 1]",
        ha="center",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.3 / height, 1, 1 - legend_in / height))
    return fig


def plot(results: list[RunResult], out: Path) -> list[Path]:
    """Accuracy per round (one panel per task), and the rationale metrics per round (one row per
    metric): :func:`figure` for each, saved as PNG."""
    import matplotlib.pyplot as plt

    paths = []
    for filename, keys in PLOTS.items():
        fig = figure(results, keys)
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
