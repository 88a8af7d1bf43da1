"""Crash-safe run state: atomic file writes, round checkpoints that carry the whole training
state, and the lock that keeps two runs out of one run directory.

A round's checkpoint is written into ``.round_<k>.partial/`` and renamed to ``round_<k>/`` only
when complete, so a kill or a full disk mid-write leaves the previous round's checkpoint as the
newest one. ``round_<k>/training_state.pt`` holds everything besides the weights that training
needs to continue bit-for-bit: optimizer, scheduler, judge, method state, snapshots, negatives.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError

from . import faults
from .errors import RunAborted, UserInputError, WriteFailed
from .files import fsync_dir

STATE_FILE = "training_state.pt"
# DeepSpeed's optimizer shards: written by every rank into the staging folder of the run
# directory, then moved into round_<k>/ under DEEPSPEED_DIR before the round is renamed into place.
DEEPSPEED_STAGING = ".deepspeed.partial"
DEEPSPEED_DIR = "deepspeed"
DEEPSPEED_TAG = "optimizer"  # DeepSpeed's name for the one checkpoint in a round's deepspeed/ folder
# 2: separate student and judge optimizers, launch kind; 3: per-round loss counts and negative statistics
STATE_FORMAT = "qcrd-training-state/3"


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock`` for the life of a run. The kernel drops it
    when the process dies, even by SIGKILL, so a killed run never leaves a stale lock behind."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.handle = None

    def __enter__(self) -> "RunLock":
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "unknown"
            self.handle.close()
            raise UserInputError(
                f"run directory {self.path.parent} is in use by another qcrd-bench run (pid {holder}); "
                "wait for it to finish or choose another --name"
            ) from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def save_base_model(folder: Path, model, tokenizer) -> None:
    """A LoRA run's frozen base weights and tokenizer (lora.py), written once before training,
    atomically: a kill or a full disk leaves no half-written base for a resume to build on."""
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        shutil.rmtree(folder, ignore_errors=True)  # an earlier run's, under --overwrite
        os.replace(partial, folder)
        fsync_dir(folder.parent)
    except (OSError, RuntimeError, SafetensorError) as err:
        shutil.rmtree(partial, ignore_errors=True)
        raise WriteFailed(f"cannot write {folder} ({getattr(err, 'strerror', None) or err})") from err


def save_round(
    run_dir: Path,
    round_index: int,
    student,
    tokenizer,
    state: dict,
    move_in: dict[str, Path] | None = None,
    files: dict[str, str] | None = None,
) -> Path:
    """Write ``round_<k>/`` (HF model + tokenizer + training state) atomically; returns its path.
    ``move_in``: folders written beforehand (DeepSpeed's optimizer shards) to move into it, by name;
    ``files``: text files to write into it, by name (the run record).

    On any failure (a full disk, say) the partial folder is removed and the error re-raised as
    :class:`RunAborted`; earlier checkpoints are never touched.
    """
    final = run_dir / f"round_{round_index}"
    partial = run_dir / f".round_{round_index}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir()
        student.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        for name, text in (files or {}).items():
            (partial / name).write_text(text, encoding="utf-8")
        faults.point("checkpoint_write", round_index)
        torch.save({"format": STATE_FORMAT, **state}, partial / STATE_FILE)
        for name, folder in (move_in or {}).items():
            os.replace(folder, partial / name)
        for file in partial.rglob("*"):
            if file.is_file():
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
        if final.exists():  # left by a run that was killed before recording this round's metrics
            shutil.rmtree(final)
        os.replace(partial, final)
        fsync_dir(run_dir)
    except (
        OSError,
        RuntimeError,
        SafetensorError,
    ) as err:  # a full disk: OSError, or torch's / safetensors' own errors
        shutil.rmtree(partial, ignore_errors=True)
        previous = (
            f"the newest intact checkpoint is round_{round_index - 1}/"
            if round_index > 1
            else "there is no earlier checkpoint"
        )
        reason = getattr(err, "strerror", None) or " ".join(str(err).split())[:160]
        raise RunAborted(
            f"could not write the round {round_index} checkpoint ({reason}); "
            f"{previous} — free space and continue with "
            f"`qcrd-bench run --resume {run_dir}`"
        ) from err
    return final


def stage_deepspeed_shards(engine, run_dir: Path, is_main: bool, barrier) -> str:
    """Every rank saves its shard of the DeepSpeed engine's optimizer into ``<run_dir>/``
    :data:`DEEPSPEED_STAGING` with DeepSpeed's own checkpoint API; :func:`save_round` then moves
    the folder into ``round_<k>/deepspeed/`` before the round is renamed into place. Every rank
    must call (``barrier``: the launcher's). Returns the tag :func:`load_deepspeed_shards` takes."""
    staging = run_dir / DEEPSPEED_STAGING
    if is_main:
        shutil.rmtree(staging, ignore_errors=True)
    barrier()
    engine.save_checkpoint(str(staging), tag=DEEPSPEED_TAG, save_latest=False)
    barrier()
    return DEEPSPEED_TAG


def load_deepspeed_shards(engine, checkpoint: Path, tag: str) -> None:
    """Each rank loads its optimizer shard from ``round_<k>/deepspeed/``. DeepSpeed's own loader
    unpickles: resume only run directories you wrote."""
    engine.load_checkpoint(
        str(checkpoint / DEEPSPEED_DIR), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=False
    )


def load_state(checkpoint: Path) -> dict:
    """The training state saved with a round checkpoint (tensors only: ``weights_only`` load). A
    damaged file raises UserInputError naming it and saying how to resume from the round before."""
    try:
        state = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        raise UserInputError(damaged(checkpoint / STATE_FILE, err)) from None
    if state.get("format") != STATE_FORMAT:
        raise UserInputError(f"{checkpoint / STATE_FILE}: unknown training-state format {state.get('format')!r}")
    return state


def check_weights(checkpoint: Path) -> None:
    """UserInputError (worded by :func:`damaged`) when a weights file of the round is truncated,
    corrupted or empty: safetensors' header check finds each, so a resume stops before any
    teacher sampling or model building rather than after them."""
    from safetensors import safe_open

    for path in sorted(checkpoint.glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise UserInputError(damaged(path, err)) from None


def damaged(path: Path, err: BaseException) -> str:
    """The message for a checkpoint file that cannot be read back (truncated, corrupted, empty)."""
    return (
        f"{path}: damaged checkpoint ({type(err).__name__}: {' '.join(str(err).split())[:120]}); remove "
        f"{path.parent} to resume from the round before it, or start over with --overwrite"
    )


def drop_stale_states(run_dir: Path, keep: Path | None) -> None:
    """Remove ``training_state.pt`` from every round but ``keep`` (the one a resume restores): a
    kill between writing metrics.jsonl and deleting the previous round's state can leave one."""
    for state in run_dir.glob(f"round_*/{STATE_FILE}"):
        if keep is None or state.parent.resolve() != keep.resolve():
            state.unlink(missing_ok=True)


def drop_partials(run_dir: Path) -> None:
    """Remove half-written checkpoints a killed run left behind."""
    for partial in [*run_dir.glob(".round_*.partial"), run_dir / DEEPSPEED_STAGING]:
        shutil.rmtree(partial, ignore_errors=True)


def has_run_data(run_dir: Path) -> bool:
    """Whether ``run_dir`` already holds a run's metrics or checkpoints."""
    return (run_dir / "metrics.jsonl").exists() or any(run_dir.glob("round_*"))
