"""``qcrd-bench``: the command line. Nothing imports this module (it is the roof)."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import click

from .config import RunConfig, config_field, describe_fields, field_choices, field_help, load_config, value_problem
from .errors import RunAborted, UserInputError, WriteFailed
from .questions import real_families, source_names
from .registry import TEACHERS


def _fail(message: str) -> None:
    """A user's mistake: one line on stderr, exit code 2, no traceback."""
    click.echo(f"qcrd-bench: error: {message}", err=True)
    sys.exit(2)


def _check_writable(path: Path, flag: str) -> None:
    """Exit 2 naming ``flag`` unless ``path`` can be written (checked before any long work)."""
    if path.is_dir():
        _fail(f"{flag} {path}: is a folder; give a file path")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        _fail(f"{flag} {path}: {blocking} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # read-only, or a name too long
        _fail(f"{flag} {path}: cannot create its folder ({err.strerror or err})")
    if not os.access(path.parent, os.W_OK):
        _fail(f"{flag} {path}: the folder {path.parent} is not writable")


# ---- flags built from config fields ---------------------------------------------------------
# A flag that sets a config key (`--rounds` -> training.rounds) takes its type, bounds, choices
# and help from that key's dataclass field (config.py), as TRL's TrlParser builds its arguments
# from dataclasses: they are declared once, so a flag cannot drift from the key it sets.


class LiveChoice(click.Choice):
    """click.Choice over names read when used (from a registry), so a name registered after the
    CLI was built is accepted, listed in --help and completed."""

    def __init__(self, names: Callable[[], Iterable[str]]):
        self._names = names
        super().__init__(())

    @property
    def choices(self) -> tuple:
        return tuple(self._names())

    @choices.setter
    def choices(self, _value) -> None:  # click.Choice.__init__ assigns it; the registry stays the source
        pass


class _FieldRange:
    """Mixin for click.IntRange / FloatRange: click shows the range in --help, and a value out of
    range is refused in the config's own words (config.value_problem), as YAML and -o are."""

    def __init__(self, meta):
        self.meta = meta
        super().__init__(min=meta.get("min"), max=meta.get("max"))

    def convert(self, value, param, ctx):
        number = (click.INT if isinstance(self, click.IntRange) else click.FLOAT).convert(value, param, ctx)
        problem = value_problem(number, self.meta)
        if problem:
            self.fail(problem, param, ctx)
        return number


class _FieldIntRange(_FieldRange, click.IntRange):
    pass


class _FieldFloatRange(_FieldRange, click.FloatRange):
    pass


def _field_type(expected: type, meta) -> click.ParamType:
    """The click type of a config field: its choices, else its bounds, else its Python type."""
    if field_choices(meta):
        return LiveChoice(lambda: field_choices(meta))
    ranged = {int: _FieldIntRange, float: _FieldFloatRange}.get(expected)
    if ranged and (meta.get("min") is not None or meta.get("max") is not None):
        return ranged(meta)
    if expected not in (int, float, str, bool):
        raise TypeError(f"no CLI flag for a config key of type {expected.__name__}; use -o KEY=VALUE")
    return {int: click.INT, float: click.FLOAT, str: click.STRING, bool: click.BOOL}[expected]


class ConfigOption(click.Option):
    """A flag that overrides the config key ``config_key``; ``note`` is added to its help, and
    ``type`` (a click type) replaces the field's where the flag can check more (a file path)."""

    def __init__(self, param_decls, config_key: str, note: str = "", type: click.ParamType | None = None, **attrs):
        expected, self._meta, _ = config_field(config_key)
        self.config_key, self._note = config_key, note
        super().__init__(param_decls, type=type or _field_type(expected, self._meta), help=self._help_text(), **attrs)

    def _help_text(self) -> str:
        text = field_help(self._meta).rstrip(".")
        first = text.split(" ", 1)[0]
        # A sentence starts upper-case; a value ("auto (cuda when present)") or a backend prefix
        # ("hf: model folder") keeps its spelling.
        if not first.endswith(":") and first.strip(",;") not in field_choices(self._meta):
            text = text[:1].upper() + text[1:]
        text += f". Overrides `{self.config_key}`."
        return f"{text} {self._note}" if self._note else text

    def get_help_record(self, ctx):
        self.help = self._help_text()  # re-read: a registry may have grown since the CLI was built
        return super().get_help_record(ctx)

    def get_error_hint(self, ctx) -> str:
        return f"{super().get_error_hint(ctx)} (key '{self.config_key}')"


class Flag(NamedTuple):
    """A spec entry of :func:`config_options` that needs more than its key."""

    key: str
    note: str = ""  # added to the field's help
    type: click.ParamType | None = None  # instead of the field's type (e.g. click.Path)


def config_options(spec: dict[str, str | Flag]) -> Callable:
    """Decorator: one :class:`ConfigOption` per ``"--flag -f": "dotted.key"`` (or ``Flag``) of
    ``spec``, listed in ``spec``'s order. The command receives ``config_flags``: {dotted key:
    value} of the flags given (absent ones left out)."""
    entries = [(decls.split(), Flag(value) if isinstance(value, str) else value) for decls, value in spec.items()]
    params = {flag.key: "config__" + flag.key.replace(".", "__") for _, flag in entries}

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def with_config_flags(*args, **kwargs):
            given = {key: kwargs.pop(name) for key, name in params.items()}
            return command(*args, config_flags={k: v for k, v in given.items() if v is not None}, **kwargs)

        for decls, flag in reversed(entries):  # click lists options in the reverse order they are added
            add = click.option(
                *decls, params[flag.key], cls=ConfigOption, config_key=flag.key, note=flag.note, type=flag.type
            )
            add(with_config_flags)
        return with_config_flags

    return decorate


def _as_overrides(config_flags: dict) -> list[str]:
    """``{"training.rounds": 2}`` -> ``["training.rounds=2"]``: flags go through load_config like
    ``-o`` overrides (given before them, so an explicit ``-o`` wins)."""
    listed = {
        key: f"[{value}]" for key, value in config_flags.items() if config_field(key)[0] is list
    }  # "a,b" -> [a,b]
    return [f"{key}={listed.get(key, value)}" for key, value in config_flags.items()]


class OneLineErrors(click.Group):
    """click's own usage errors (a bad flag value, a missing argument) as one line and exit code
    2, like every other mistake, instead of click's usage block."""

    def main(self, *args, **kwargs):
        kwargs.pop("standalone_mode", None)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as err:
            click.echo(f"qcrd-bench: error: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        except UserInputError as err:  # the user's to fix: data, pools, specs, config keys, flags
            click.echo(f"qcrd-bench: error: {err}", err=True)
            sys.exit(2)
        except RunAborted as err:  # not the user's mistake, not a bug: a full disk, a diverged loss
            click.echo(f"qcrd-bench: stopped: {err}", err=True)
            sys.exit(1)
        except click.exceptions.Abort as err:  # Ctrl-C (click turns KeyboardInterrupt into Abort)
            cause = err.__cause__
            detail = str(cause) if cause is not None and str(cause) else "interrupted; a run continues with --resume"
            click.echo(f"qcrd-bench: {detail}", err=True)
            sys.stdout.flush()
            sys.stderr.flush()
            # Not sys.exit: teacher threads may still wait on the endpoint, and joining them would
            # hold the Ctrl-C for up to teacher.timeout_s. Everything answered or saved is on disk.
            os._exit(130)
        sys.exit(code if isinstance(code, int) else 0)


PROGRESS_INTERVAL_S = 15  # seconds between progress-bar refreshes when stderr is not a terminal


def _quiet_libraries(no_progress_bars: bool = False) -> None:
    """Keep lm-eval's and transformers' per-call notices out of the progress output.

    tqdm reads ``TQDM_DISABLE`` when it is first imported, so with ``no_progress_bars`` this
    must run before the heavy imports; it then silences our bars and lm-eval's, transformers'
    and datasets' alike.
    """
    if no_progress_bars:
        os.environ["TQDM_DISABLE"] = "1"
    elif not sys.stderr.isatty():
        # A log file or a pipe keeps every refresh of a bar (tqdm's default: every 0.1 s), which buries
        # the round results; refresh at most every PROGRESS_INTERVAL_S there, and at each bar's end.
        # TQDM_MININTERVAL reaches lm-eval's and transformers' bars too; a value set by the user wins.
        os.environ.setdefault("TQDM_MININTERVAL", str(PROGRESS_INTERVAL_S))
    for name in ("lm_eval", "transformers", "datasets", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "DS_ACCELERATOR" not in os.environ:
        import torch

        # transformers imports DeepSpeed when it is installed, and DeepSpeed then warns on every
        # run that it found no GPU; naming the CPU leaves it nothing to warn about.
        if not torch.cuda.is_available():
            os.environ["DS_ACCELERATOR"] = "cpu"


# Flags that set a config key (built by config_options from the key's field).
RUN_FLAGS = {
    "--name": "name",
    "--output-dir": "output_dir",
    "--task": "task.name",
    "--data-dir": "task.data_dir",
    "--method": "method.name",
    "--rounds": "training.rounds",
    "--seed": "training.seed",
    "--device": "training.device",
    "--report-to": Flag("training.report_to", note="Comma-separated, e.g. tensorboard,wandb.", type=click.STRING),
}
TEACH_FLAGS = {
    "--task": "task.name",
    "--source": "task.source",
    "--spec": Flag("task.spec", type=click.Path(dir_okay=False)),
    "--data-dir": "task.data_dir",
    "--teacher": "teacher.kind",
    "--model": "teacher.model",
    "--base-url": "teacher.base_url",
    "--api-key-env": "teacher.api_key_env",
    "--concurrency": "teacher.concurrency",
    "--samples -k": "teacher.samples",
    "--temperature -t": "teacher.temperature",
    "--cache": Flag("teacher.cache", "Here the default is <out>.cache.jsonl; a rerun resumes from it."),
}


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qcrd-bench")
def main() -> None:
    """qcrd-bench: QCRD and baseline rationale distillation, evaluated with lm-evaluation-harness.

    \b
    Quick start (offline, CPU, about 3 minutes):
      qcrd-bench run --config harness_configs/default.yaml
    Then score any checkpoint with the plain lm-eval CLI:
      lm_eval --model hf --model_args pretrained=runs/default/round_3,backend=seq2seq \\
              --tasks qcrd_synth --include_path tasks --device cpu
    """


def _resume_config(resume_dir: Path, config_path, every: list[str], overwrite: bool) -> tuple[Path, list[str]]:
    """(config file, overrides) of ``--resume``: the run's own saved config, nothing changed but,
    to extend a run, more ``training.rounds`` (the learning-rate schedule then spans the new total)."""
    extend = [o for o in every if o.split("=", 1)[0].strip() == "training.rounds"]
    if config_path or overwrite or len(extend) < len(every):
        _fail(
            "--resume continues a run with the config saved in its directory; drop --config, --overwrite and the "
            "override flags (only --rounds / -o training.rounds=N may extend it)"
        )
    saved = resume_dir / "config.yaml"
    if not saved.is_file():
        started = resume_dir.is_dir() and (resume_dir / ".lock").exists()
        _fail(
            f"{resume_dir}: the run was stopped before it saved its config.yaml (nothing was trained yet): "
            "start it again with the command that began it"
            if started
            else f"{resume_dir}: not a run directory (no config.yaml)"
        )
    if extend:
        before = load_config(saved).training.rounds
        after = load_config(saved, extend[-1:]).training.rounds
        if after < before:
            _fail(
                f"--rounds {after}: the run has {before} rounds already; a resumed run can be extended, not shortened"
            )
    return saved, [f"output_dir={resume_dir.resolve().parent}", f"name={resume_dir.resolve().name}", *extend[-1:]]


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help=(
        "Run config YAML, or the name of a shipped one (default, svamp_mcckd; see harness_configs/). "
        "Without it, built-in defaults are used."
    ),
)
@config_options(RUN_FLAGS)
@click.option(
    "--set",
    "-o",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override any config key, e.g. -o method.beta=0.5 -o negatives.j_back=3 (repeatable).",
)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Continue the run in this directory (after a kill, a full disk, a diverged loss) with its saved config.yaml; "
    "it ends with the metrics an uninterrupted run ends with. With --rounds N: extend a run to N rounds.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Start over in a run directory that already holds a run (its teacher cache is kept).",
)
@click.option(
    "--quiet",
    is_flag=True,
    help="No progress bars (ours, lm-eval's or transformers'); per-round lines and the summary stay.",
)
def run(config_path, config_flags, overrides, resume_dir, overwrite, quiet) -> None:
    """Distil a student round by round, evaluating it with lm-eval after every round.

    Per round it trains `training.steps_per_round` steps, saves an HF checkpoint to
    `round_<k>/`, scores it in memory on the configured lm-eval tasks and appends one JSON
    object to `metrics.jsonl` (accuracy, rationale quality, judge score and AUC, loss
    components, teacher-pool statistics, wall time per phase). `qcrd-bench config --list`
    documents every key.
    """
    every = _as_overrides(config_flags) + list(overrides)
    if resume_dir is not None:
        config_path, every = _resume_config(resume_dir, config_path, every, overwrite)
    cfg = load_config(config_path, every)
    if not cfg.student.pretrained or Path(cfg.student.pretrained).exists():
        # Nothing needs the hub: make any accidental hub look-up fail at once instead of hanging.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    _quiet_libraries(no_progress_bars=quiet)
    from .training import run as run_training  # heavy imports only once the config is valid

    run_training(cfg, progress=not quiet, log=click.echo, resume=resume_dir is not None, overwrite=overwrite)


@main.group()
def data() -> None:
    """Read the public release layouts under the data directory ($QCRD_DATA_DIR)."""


@data.command("prepare")
@click.option(
    "--task",
    "family",
    type=LiveChoice(lambda: (*real_families(), "all")),
    default="all",
    show_default=True,
    help="Task family to convert (all = every family from every source).",
)
@click.option("--source", help=f"Data source ({', '.join(source_names())}); default: every source of the family.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder holding the release layouts. Default: $QCRD_DATA_DIR.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("prepared"),
    show_default=True,
    help="Where the canonical JSONL goes: <out>/<task>-<source>/{questions,pool}_<split>.jsonl.",
)
@click.option("--check", is_flag=True, help="Only read and count; write nothing.")
def data_prepare(family, source, data_dir, out, check) -> None:
    """Convert a source into canonical JSONL (questions and teacher pools) and print its counts.

    \b
    Counts per split: questions; questions with teacher samples, samples and samples per
    question; teacher sample accuracy against gold; questions whose majority answer is gold.
    """
    from .answers import answers_match
    from .config import SelfConsistencyConfig
    from .files import write_jsonl
    from .pools import write_pool
    from .questions import FAMILIES
    from .rationales import pool_statistics, pool_warnings, select_pool
    from .sources import load_source

    families = list(real_families()) if family == "all" else [family]
    header = (
        f"{'task':<11} {'source':<10} {'split':<10} {'questions':>9} {'pooled':>7} {'samples':>8} {'per_q':>6} "
        f"{'teacher_acc':>11} {'maj=gold':>9} {'unread':>7}"
    )
    click.echo(header)
    click.echo("-" * len(header))
    for fam in families:
        sources = [source] if source else list(FAMILIES[fam].sources)
        for src in sources:
            data_ = load_source(fam, src, data_dir)

            folder = out / f"{fam}-{src}"
            if not check:
                folder.mkdir(parents=True, exist_ok=True)
            for split, questions in data_.questions.items():
                pool = data_.pools.get(split, [])
                samples = sum(len(e.samples) for e in pool)
                correct = sum(answers_match(x.answer, e.gold) for e in pool for x in e.samples)
                selections = select_pool(pool, SelfConsistencyConfig()) if pool else []
                majority = sum(answers_match(sel.majority, sel.gold) for sel in selections)
                acc = f"{correct / samples:.3f}" if samples else "-"
                unread = f"{sum(x.answer is None for e in pool for x in e.samples) / samples:.3f}" if samples else "-"
                click.echo(
                    f"{fam:<11} {src:<10} {split:<10} {len(questions):>9} {len(pool):>7} {samples:>8} "
                    f"{(samples / len(pool) if pool else 0):>6.2f} {acc:>11} "
                    f"{majority if pool else '-':>9} {unread:>7}"
                )
                if pool:
                    for warning in pool_warnings(pool, pool_statistics(pool, selections), 0):
                        click.echo(f"  warning ({fam}/{src} {split}): {warning}")
                if not check:
                    write_jsonl(folder / f"questions_{split}.jsonl", [q.to_record() for q in questions])
                    if pool:
                        write_pool(folder / f"pool_{split}.jsonl", pool)
            for note in data_.notes:
                click.echo(f"  note ({fam}/{src}): {note}")
    if not check:
        click.echo(f"written under {out}/")


@data.command("inspect")
@click.argument("pool_path", metavar="POOL", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--questions", "-n", type=int, default=5, show_default=True, help="Questions to show (drawn at random).")
@click.option("--wrong", is_flag=True, help="Only samples whose answer is not gold (or could not be read).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the draw.")
@click.option(
    "--chars", type=int, default=240, show_default=True, help="Characters shown from the end of each rationale."
)
def data_inspect(pool_path, questions, wrong, seed, chars) -> None:
    """Show sample rationales of a pool, the answer read from each, and gold.

    \b
    A quick look at whether answers are read as you read them: each line ends with the answer
    the parser took from the rationale, then the gold answer (a mark when they differ). If many
    are misread, set the task's answer_type or answer_pattern (docs/data.md) and teach again.
    """
    import random

    from .answers import answers_match
    from .config import SelfConsistencyConfig
    from .pools import read_pool
    from .rationales import format_statistics, pool_statistics, pool_warnings, select_pool

    pool = read_pool(pool_path)
    if questions < 1 or chars < 20:
        _fail("--questions: at least 1" if questions < 1 else "--chars: at least 20")
    shown = [e for e in pool if not wrong or any(not answers_match(x.answer, e.gold) for x in e.samples)]
    for entry in random.Random(seed).sample(shown, min(questions, len(shown))):
        click.echo(f"\n{entry.id}  gold {entry.gold!r}  question: {' '.join(entry.question.split())[:160]}")
        for i, sample in enumerate(entry.samples):
            if wrong and answers_match(sample.answer, entry.gold):
                continue
            tail = " ".join(sample.rationale.split())
            tail = tail if len(tail) <= chars else "..." + tail[-chars:]
            mark = "ok" if answers_match(sample.answer, entry.gold) else "XX"
            click.echo(f"  [{i}] {tail}\n      -> read {sample.answer!r}  gold {entry.gold!r}  {mark}")
    stats = pool_statistics(pool, select_pool(pool, SelfConsistencyConfig()))
    click.echo(
        f"\n{pool_path}: {len(shown)} of {len(pool)} questions {'with a wrong sample ' if wrong else ''}"
        f"({min(questions, len(shown))} shown); " + format_statistics(stats)
    )
    for warning in pool_warnings(pool, stats, max((len(e.samples) for e in pool), default=0)):
        click.echo(f"warning: {warning}", err=True)


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Run config YAML whose task/teacher sections to start from.",
)
@config_options(TEACH_FLAGS)
@click.option("--split", default="train", show_default=True, help="Which split's questions to explain.")
@click.option("--limit", type=click.IntRange(min=0), default=0, help="Only the first N questions (0 = all).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Pool JSONL to write.")
@click.option(
    "--set", "-o", "overrides", multiple=True, metavar="KEY=VALUE", help="Any other config key (repeatable)."
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def teach(config_path, config_flags, split, limit, out, overrides, quiet) -> None:
    """Sample K teacher rationales per question, write a pool and print its statistics.

    \b
    Examples:
      qcrd-bench teach --task svamp --source mcc_kd --teacher pool -k 10 --out pools/svamp.jsonl
      qcrd-bench teach --task gsm8k --teacher openai --model my-llm --base-url http://127.0.0.1:8000/v1 \\
                       -k 5 -t 0.7 --limit 100 --out pools/gsm8k.jsonl
    The pool feeds a run with -o teacher.kind=pool -o teacher.pool=<out>.
    """
    config_flags.setdefault("teacher.cache", str(out) + ".cache.jsonl")
    every = _as_overrides(config_flags) + list(overrides)
    cfg = load_config(config_path, every)
    _quiet_libraries(no_progress_bars=quiet)
    from .distributed import resolve_device
    from .pools import write_pool
    from .rationales import format_statistics, pool_statistics, pool_warnings, select_pool
    from .tasks import load_task
    from .teachers import build_teacher

    _check_writable(out, "--out")
    if Path(cfg.teacher.cache).is_dir():
        _fail(f"--cache {cfg.teacher.cache}: is a folder; give the cache file's path (JSONL)")
    task = load_task(cfg.task)
    questions = task.questions.get(split)
    if not questions:
        _fail(f"task {cfg.task.name} has no {split!r} split (available: {', '.join(task.questions)})")
    questions = questions[:limit] if limit else questions
    # The hf teacher generates on the run's device (`training.device`: a GPU when there is one).
    device = str(resolve_device(cfg.training.device))
    teacher = build_teacher(cfg.teacher, task, Path(cfg.teacher.cache), progress=not quiet, device=device)
    pool = teacher.sample(questions, cfg.teacher.samples, cfg.teacher.temperature)
    try:
        write_pool(out, pool)
    except WriteFailed as err:  # the disk filled up, or the folder changed while the teacher sampled
        cached = cfg.teacher.kind in TEACHERS.names(llm=True)
        kept = f"the teacher's answers are kept in {cfg.teacher.cache}" if cached else "nothing was cached"
        raise WriteFailed(f"--out: {err}; {kept}") from err
    stats = pool_statistics(pool, select_pool(pool, cfg.self_consistency))
    per_question = stats["samples"] / max(1, len(pool))
    click.echo(
        f"wrote {out}: {len(pool)} questions x {per_question:.3g} samples on average "
        f"({cfg.teacher.samples} asked, {cfg.teacher.kind} teacher)"
    )
    click.echo("pool statistics: " + format_statistics(stats))
    for note in task.notes:
        click.echo(f"note: {note}")
    for warning in pool_warnings(pool, stats, cfg.teacher.samples):
        click.echo(f"warning: {warning}", err=True)


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Leaderboard YAML (methods x tasks x seeds; see harness_configs/leaderboard.yaml).",
)
@click.option(
    "--from-runs",
    "from_runs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Build the tables and plots from finished runs under these folders, without training (repeatable).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where tables and plots go (default: the grid's output_dir).",
)
@click.option(
    "--report-to",
    default="none",
    show_default=True,
    help="Comma-separated tensorboard,wandb: every cell trained now logs live (as run --report-to), and "
    "tensorboard also gets every run's per-round scalars afterwards (extras: pip install 'qcrd-bench[tensorboard]').",
)
@click.option(
    "--print-commands",
    is_flag=True,
    help="Train nothing: print one `qcrd-bench run` line per unfinished cell (for a SLURM array or any scheduler); "
    "aggregate them afterwards with --from-runs <the grid's output_dir>.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def leaderboard(config_path, from_runs, out, report_to, print_commands, quiet) -> None:
    """Compare methods on the same data, student and budget, with error bars.

    \b
    With --config: trains every cell of the grid that has not finished (a killed grid resumes
    where it stopped), then writes leaderboard.md / .csv / .json: final accuracy per method and
    task as mean ± 95% CI over seeds, the paired difference QCRD − DSS with its CI, rationale
    quality and training cost; and accuracy_per_round.png, rationale_metrics_per_round.png.
    With --from-runs: the same outputs from finished runs, no training.
    """
    from . import leaderboard as lb

    trackers = [name.strip() for name in report_to.split(",") if name.strip() and name.strip() != "none"]
    unknown = [name for name in trackers if name not in ("tensorboard", "wandb")]
    if unknown:
        _fail(f"--report-to: {unknown[0]!r} is not a tracker (tensorboard, wandb)")
    if "wandb" in trackers and not (config_path and not from_runs):
        _fail("--report-to wandb logs runs while they train: it needs --config (no --from-runs)")
    if not config_path and not from_runs:
        _fail("give --config (train the grid) or --from-runs DIR (tables from finished runs)")
    cfg = None
    if config_path:
        cfg = lb.load_leaderboard_config(config_path)
    if print_commands:
        if cfg is None:
            _fail("--print-commands needs --config (the grid whose cells to print)")
        for line in lb.cell_commands(cfg):
            click.echo(line)
        return
    if cfg and not from_runs:
        _quiet_libraries(no_progress_bars=quiet)
        from .training import run as run_training

        def train(run_cfg):
            # An unfinished cell continues from its newest checkpoint (a fresh cell starts at round 1).
            return run_training(run_cfg, progress=not quiet, log=click.echo, resume=True)

        from .trackers import check_available

        check_available(trackers)
        run_dirs = lb.run_grid(cfg, train, log=click.echo, report_to=trackers)
        results = [lb.read_run(d) for d in run_dirs if lb.is_finished(d)]
    else:
        results = lb.collect(list(from_runs))
    if not results:
        _fail("no finished runs found (a run is finished when metrics.jsonl has one line per configured round)")
    board = lb.aggregate(results, cfg.baseline if cfg else "dss", cfg.contender if cfg else "qcrd")
    target = out or (Path(cfg.output_dir) if cfg else Path(from_runs[0]))
    written = lb.write(board, results, target)
    if "tensorboard" in trackers:
        try:
            lb.write_tensorboard(results, target / "tensorboard")
        except ImportError:
            _fail("--report-to tensorboard needs the tensorboard package: pip install tensorboard")
    click.echo(lb.to_markdown(board))
    click.echo("wrote " + ", ".join(str(p) for p in written))


@main.command("judge")
@click.argument("first", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("second", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--teacher", "kind", type=LiveChoice(lambda: TEACHERS.names(llm=True)), required=True, help="The LLM that judges."
)
@click.option("--model", required=True, help="hf: model folder or hub id; openai: the served model name.")
@click.option("--base-url", help="openai: endpoint base URL.")
@click.option(
    "--api-key-env", default="OPENAI_API_KEY", show_default=True, help="openai: environment variable holding the key."
)
@click.option("--items", type=int, default=50, show_default=True, help="Test questions to judge (the paper: 50).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the per-item A/B order.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="JSON with counts and every verdict.")
def judge_command(first, second, kind, model, base_url, api_key_env, items, seed, out) -> None:
    """Pairwise rationale judging of two finished runs (e.g. runs/dss vs runs/qcrd).

    An LLM sees each test question with both runs' final-round rationales as "Rationale A" and
    "Rationale B" (order randomised per item) and answers "A better", "both good" or "B better".
    Prints the counts "FIRST better / both good / SECOND better", as in the paper.
    """
    from .pairwise import JUDGE_INSTRUCTION, compare
    from .questions import TaskData
    from .teachers import SampleCache, build_teacher

    overrides = [f"teacher.kind={kind}", f"teacher.model={model}", f"teacher.api_key_env={api_key_env}"]
    if base_url:
        overrides.append(f"teacher.base_url={base_url}")
    cfg = load_config(None, overrides)
    teacher = build_teacher(cfg.teacher, TaskData("judge", kind), None)
    teacher.cache = SampleCache(None)
    result = compare(first, second, lambda prompt: teacher.ask(prompt, JUDGE_INSTRUCTION), items, seed)
    c = result.counts
    click.echo(
        f"{first} better / both good / {second} better: {c['first better']} / {c['both good']} / {c['second better']}"
        + (f"   ({c['unparsed']} verdicts unreadable)" if c["unparsed"] else "")
    )
    if out:
        out.write_text(json.dumps(result.to_record(), indent=2))


@main.command("config")
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="Config YAML to resolve."
)
@click.option("--set", "-o", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key (repeatable).")
@click.option("--list", "list_keys", is_flag=True, help="List every key with its default and meaning.")
def config_command(config_path, overrides, list_keys) -> None:
    """Validate a config and print it fully resolved (or list every key with --list)."""
    if list_keys:
        for key, default, help_text in describe_fields(RunConfig):
            click.echo(f"{key:32} {default!r:>18}  {help_text}")
        return
    cfg = load_config(config_path, overrides)
    import yaml

    click.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False), nl=False)


@main.command("export")
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--round",
    "which",
    default="last",
    show_default=True,
    help="Which round: a number, last, or best (highest headline accuracy; test-split scores).",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="New folder to write.")
def export_command(run_dir, which, out) -> None:
    """Write one round of a finished run as a folder ready for the Hugging Face hub.

    \b
    Weights, tokenizer, model card (README.md), qcrd_run.json and lm-eval results; no training
    state. Upload it with push_to_hub or `huggingface-cli upload <repo> <out>` (needs a network).
    """
    from .model_card import export_round

    source = export_round(run_dir, which, out)
    click.echo(f"wrote {out} from {source}")


@main.command("tasks-path")
def tasks_path_command() -> None:
    """Print the folder of the qcrd_* lm-eval task YAMLs shipped with the package.

    \b
    For the plain lm-eval CLI, from a checkout or a pip install alike:
      lm_eval --model hf --model_args pretrained=runs/default/round_3,backend=seq2seq \\
              --tasks qcrd_synth --include_path "$(qcrd-bench tasks-path)"
    """
    from .config import SHIPPED_TASKS

    click.echo(str(SHIPPED_TASKS))


if __name__ == "__main__":
    main()
