"""``qcrd-bench``: the command line. Nothing imports this module (it is the roof)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from .config import ConfigError, RunConfig, describe_fields, load_config


def _fail(message: str) -> None:
    """A user's mistake: one line on stderr, exit code 2, no traceback."""
    click.echo(f"qcrd-bench: error: {message}", err=True)
    sys.exit(2)


def _quiet_libraries(no_progress_bars: bool = False) -> None:
    """Keep lm-eval's and transformers' per-call notices out of the progress output.

    tqdm reads ``TQDM_DISABLE`` when it is first imported, so with ``no_progress_bars`` this
    must run before the heavy imports; it then silences our bars and lm-eval's, transformers'
    and datasets' alike.
    """
    if no_progress_bars:
        os.environ["TQDM_DISABLE"] = "1"
    for name in ("lm_eval", "transformers", "datasets", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Run config YAML (see harness_configs/). Without it, built-in defaults are used.")
@click.option("--name", help="Run name; outputs go to <output-dir>/<name>/. Overrides the config's `name`.")
@click.option("--output-dir", help="Parent folder of run directories. Overrides `output_dir`.")
@click.option("--method", type=click.Choice(["dss", "qcrd"]), help="Distillation method. Overrides `method.name`.")
@click.option("--rounds", type=int, help="Training rounds (lm-eval runs after each). Overrides `training.rounds`.")
@click.option("--seed", type=int, help="Training seed. Overrides `training.seed`.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Overrides `training.device`.")
@click.option("--set", "-o", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any config key, e.g. -o method.beta=0.5 -o negatives.j_back=3 (repeatable).")
@click.option("--quiet", is_flag=True, help="No progress bars (ours, lm-eval's or transformers'); per-round lines and the summary stay.")
def run(config_path, name, output_dir, method, rounds, seed, device, overrides, quiet) -> None:
    """Distil a student round by round, evaluating it with lm-eval after every round.

    Per round it trains `training.steps_per_round` steps, saves an HF checkpoint to
    `round_<k>/`, scores it in memory on the configured lm-eval tasks and appends one JSON
    object to `metrics.jsonl` (accuracy, rationale quality, judge score and AUC, loss
    components, teacher-pool statistics, wall time per phase). `qcrd-bench config --list`
    documents every key.
    """
    flags = {"name": name, "output_dir": output_dir, "method.name": method, "training.rounds": rounds,
             "training.seed": seed, "training.device": device}
    every = [f"{k}={v}" for k, v in flags.items() if v is not None] + list(overrides)
    try:
        cfg = load_config(config_path, every)
    except ConfigError as err:
        _fail(str(err))
    if not cfg.student.pretrained or Path(cfg.student.pretrained).exists():
        # Nothing needs the hub: make any accidental hub look-up fail at once instead of hanging.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    _quiet_libraries(no_progress_bars=quiet)
    from .training import run as run_training  # heavy imports only once the config is valid

    run_training(cfg, progress=not quiet, log=click.echo)


@main.command("config")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="Config YAML to resolve.")
@click.option("--set", "-o", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key (repeatable).")
@click.option("--list", "list_keys", is_flag=True, help="List every key with its default and meaning.")
def config_command(config_path, overrides, list_keys) -> None:
    """Validate a config and print it fully resolved (or list every key with --list)."""
    if list_keys:
        for key, default, help_text in describe_fields(RunConfig):
            click.echo(f"{key:32} {default!r:>18}  {help_text}")
        return
    try:
        cfg = load_config(config_path, overrides)
    except ConfigError as err:
        _fail(str(err))
    import yaml

    click.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False), nl=False)


if __name__ == "__main__":
    main()
