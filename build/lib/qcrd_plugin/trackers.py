"""Live experiment tracking, as ``transformers.TrainingArguments.report_to`` does it:
``training.report_to: [tensorboard, wandb]`` logs every step's losses, every round's metrics, the
config and the teacher pool's statistics while the run goes (rank 0 only).

TensorBoard event files go to ``<run_dir>/tensorboard/``; W&B writes under ``<run_dir>/wandb/``
and follows ``WANDB_MODE`` (``offline`` needs no network; ``wandb sync`` uploads later). A resumed
run continues the same W&B run (its id is derived from the run directory). Both packages are
optional extras: a missing one stops the run before any work, with exit code 2.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from .errors import UserInputError

EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # report_to name -> the package it needs


def check_available(names: list[str]) -> None:
    """UserInputError naming ``training.report_to`` when a tracker's package is not installed."""
    for name in names:
        if importlib.util.find_spec(EXTRAS[name]) is None:
            raise UserInputError(
                f"key 'training.report_to': {name} needs the {EXTRAS[name]} package: pip install 'qcrd-bench[{name}]'"
            )


def scalars(record: dict, prefix: str = "") -> dict[str, float]:
    """Every number in a (nested) metrics record, keyed by its path: ``eval/qcrd_synth/acc``."""
    out: dict[str, float] = {}
    for key, value in record.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(scalars(value, path + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[path] = float(value)
    return out


class Trackers:
    """The trackers ``training.report_to`` names, behind one small interface."""

    def __init__(self, names: list[str], run_dir: Path, config: dict):
        check_available(names)
        self.writer, self.wandb = None, None
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
            self.writer.add_text("config", "```yaml\n" + _yaml(config) + "\n```")
        if "wandb" in names:
            import wandb

            run_id = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
            self.wandb = wandb.init(
                project="qcrd-bench", name=run_dir.name, id=run_id, resume="allow", config=config, dir=str(run_dir)
            )

    def log_pool(self, statistics: dict) -> None:
        """The teacher pool's statistics (once per run)."""
        self._log(scalars(statistics, "pool/"), 0)

    def log_step(self, step: int, loss: float, components: dict[str, float], learning_rate: float) -> None:
        """One optimizer step's total loss, its components and the learning rate."""
        self._log({"train/loss": loss, "train/learning_rate": learning_rate, **scalars(components, "train/")}, step)

    def log_round(self, record: dict) -> None:
        """A round's metrics record (evaluation, judge, rationale quality, negatives, time), at its last step."""
        keep = {
            k: v
            for k, v in record.items()
            if k not in ("loss_curve", "pool", "setup_time_s", "round", "step", "iteration")
        }
        self._log({"round": float(record["round"]), **scalars(keep, "round/")}, record["step"])

    def _log(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def _yaml(config: dict) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False)
