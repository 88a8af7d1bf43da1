"""The launch modes, one class each, chosen once by :func:`launcher_for`: one process
(:class:`Launcher`, the default), and under ``accelerate launch`` (or torchrun), one process per
device: :class:`AllReduce`, :class:`FSDP` or :class:`DeepSpeed`. The recipe (training.py) calls
the same small interface whatever the mode.

The global batch (``training.batch_size`` questions) is split across ranks, each rank takes
``batch[rank::world_size]``, and after ``backward`` the gradients of the student and the judge
are averaged across ranks with one all-reduce. That is the update DDP computes, done by hand
because a QCRD step runs several forward passes per step (encoder once, the decoder per
rationale, the judge, and no-grad scoring passes between them), which DDP's reducer does not
follow. Rank 0 alone samples the teacher, writes files and runs lm-eval; the others wait at a
barrier. A single process (the default) takes none of these paths.

Under the FSDP profile the student and the judge are sharded as one FSDP2 unit around the whole
training step (:class:`TrainingStep`): between steps each rank holds 1/world of the parameters,
gradients and AdamW state; a step gathers the parameters once, runs all of the method's passes
(their number may differ between ranks: no collective happens inside the step) and
reduce-scatters the averaged gradients once in ``backward``. Sampling negatives, lm-eval and
checkpoints read a plain copy of the full weights (:meth:`FSDP.full_modules`).

Under the DeepSpeed profile (ZeRO stage 1 or 2) a DeepSpeed engine owns the student's optimizer:
its gradients are reduce-scattered during ``backward`` and each rank keeps 1/world of the AdamW
state (and, at stage 2, of the gradients); parameters stay whole on every rank, so negatives,
lm-eval and checkpoints read the training modules directly. DeepSpeed reduces gradients in
buckets filled in the order they become ready, so every rank must run the same passes: a step
checks that and stops with a clear message if a rank's shard took another path
(:meth:`DeepSpeed.check_same_passes`). The judge stays outside the engine (all-reduced by hand, on
its online-update steps only). Optimizer shards are saved with DeepSpeed's own checkpoint API
(checkpoints.py).
"""

from __future__ import annotations

import copy
import importlib.util
import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from .checkpoints import DEEPSPEED_DIR, DEEPSPEED_STAGING, load_deepspeed_shards, stage_deepspeed_shards
from .errors import RunAborted, UserInputError


def launched() -> bool:
    """Whether this process was started by ``accelerate launch`` / torchrun with several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class TrainingStep(nn.Module):
    """One training step's loss as a module: the student and the judge are its children and its
    forward is ``method.loss(batch)``, returned as ``(total, components)``. The loop always steps
    through it; under FSDP it is the one sharded unit, so the parameters are gathered once per
    step however many passes the method makes."""

    def __init__(self, method):
        super().__init__()
        self.student = method.student
        self.judge = method.judge
        self.method = method

    def forward(self, batch: list) -> tuple[torch.Tensor, dict[str, float]]:
        out = self.method.loss(batch)
        return out.total, out.components


class Launcher:
    """One process, the default launch mode; also the base of the multi-process modes.

    The interface the recipe uses, the same in every mode: :meth:`wrap` the training step,
    :meth:`attach` its optimizers, then per optimizer step :meth:`zero_grad`, :meth:`forward` and
    :meth:`backward` for each micro-batch (``training.grad_accum_steps``) and one :meth:`step`;
    :meth:`full_modules` for sampling, evaluation and checkpoints, :meth:`optimizer_state` /
    :meth:`load_optimizer_state` for checkpoints, and the few collectives (:meth:`main_only`,
    :meth:`mean`, :meth:`any`, :meth:`barrier`), which in one process are plain calls.
    """

    launch_kind = ""  # how the optimizer state is laid out: "" (whole on every rank), "fsdp" or "deepspeed"

    def __init__(self, device: torch.device, state=None):
        self.device, self.state = device, state
        self.rank = state.process_index if state is not None else 0
        self.world_size = state.num_processes if state is not None else 1
        self.optimizer: torch.optim.Optimizer | None = None  # the student's
        self.judge_optimizer: torch.optim.Optimizer | None = None
        self.scaler: torch.amp.GradScaler | None = None  # training.precision fp16 only
        self.max_grad_norm = 0.0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: list) -> list:
        """This rank's share of the global batch."""
        return batch[self.rank :: self.world_size] if self.world_size > 1 else batch

    def wrap(self, step: TrainingStep) -> TrainingStep:
        """The training step as this mode trains it (build the optimizers after this)."""
        return step

    def attach(
        self,
        step: TrainingStep,
        optimizer: torch.optim.Optimizer,
        judge_optimizer: torch.optim.Optimizer | None,
        max_grad_norm: float,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        """Take the optimizers :meth:`step` applies: the student's (clipped at ``max_grad_norm``) and
        the judge's; ``scaler`` scales the fp16 losses (None: no scaling)."""
        self.optimizer, self.judge_optimizer, self.max_grad_norm = optimizer, judge_optimizer, max_grad_norm
        self.scaler = scaler

    def forward(self, step: TrainingStep, batch: list) -> tuple[torch.Tensor, dict[str, float]]:
        """(total loss, components) of this rank's share of ``batch``."""
        return step(self.shard(batch))

    def zero_grad(self) -> None:
        """Clear the gradients before an optimizer step's first micro-batch."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.judge_optimizer is not None:
            self.judge_optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor) -> None:
        """Add ``loss``'s gradients (scaled under fp16) to those of the step's earlier micro-batches."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self) -> None:
        """Average the accumulated gradients over ranks, clip the student's, step both optimizers.
        The judge steps only when it has gradients (its online-update steps). Under fp16 the
        gradients are unscaled first, and a step whose gradients overflowed is skipped by the scaler."""
        student_params = self.optimizer.param_groups[0]["params"]
        judge_params = [] if self.judge_optimizer is None else self.judge_optimizer.param_groups[0]["params"]
        self.average_gradients([*student_params, *judge_params])  # one all-reduce for both
        optimizers = [self.optimizer]
        if judge_params and any(p.grad is not None for p in judge_params):
            optimizers.append(self.judge_optimizer)
        if self.scaler is not None:
            for optimizer in optimizers:
                self.scaler.unscale_(optimizer)
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(student_params, self.max_grad_norm)
        if self.scaler is None:
            for optimizer in optimizers:
                optimizer.step()
            return
        for optimizer in optimizers:
            self.scaler.step(optimizer)
        self.scaler.update()

    def average_gradients(self, parameters) -> None:
        """Nothing to average in one process (see :class:`AllReduce`)."""

    def full_modules(self, step: TrainingStep) -> tuple[nn.Module, nn.Module | None]:
        """(student, judge) with the current full weights, as plain modules that any one rank may
        run (generate, lm-eval, save_pretrained): here the training modules themselves."""
        return step.student, step.judge

    def optimizer_state(
        self, step: TrainingStep, optimizer: torch.optim.Optimizer, run_dir: Path | None = None
    ) -> dict:
        """The optimizer's state for a checkpoint (every rank must call)."""
        return optimizer.state_dict()

    def load_optimizer_state(
        self, step: TrainingStep, optimizer: torch.optim.Optimizer, state: dict, checkpoint: Path | None = None
    ) -> None:
        """Restore :meth:`optimizer_state`'s result."""
        optimizer.load_state_dict(state)

    def checkpoint_folders(self, run_dir: Path) -> dict[str, Path] | None:
        """Folders written beside the state (DeepSpeed's optimizer shards) that ``save_round`` moves in."""
        return None

    def barrier(self) -> None:
        if self.world_size > 1:
            self.state.wait_for_everyone()

    def main_only(self, work: Callable[[], Any]) -> Any:
        """``work()`` on rank 0 (its result; None on the other ranks). If it raises, every rank
        raises, so no rank is left waiting at a barrier for a rank 0 that has stopped."""
        result, error = None, None
        if self.is_main:
            try:
                result = work()
            except BaseException as err:  # noqa: BLE001 - re-raised below, on every rank
                error = err
        if self.any(error is not None):
            raise error if error is not None else RunAborted("rank 0 stopped (its output says why)")
        return result

    def mean(self, value: float) -> float:
        """The mean of a scalar over ranks (for the logged loss)."""
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any rank (a rank's error stops all ranks)."""
        if self.world_size == 1:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(tensor)
        return bool(tensor.item() > 0)

    def close(self) -> None:
        """Destroy the process group once every rank is done. Call it after a run that ended well
        (torchtitan does the same): a gloo group still alive at interpreter exit can abort the
        process with "terminate called without an active exception" after the work is finished.
        After an error it is skipped, since a rank stuck in a collective would hang the others here."""
        if self.world_size > 1 and dist.is_initialized():
            self.barrier()
            dist.destroy_process_group()


class AllReduce(Launcher):
    """Several processes, DDP's update by hand: after ``backward`` the gradients of the student
    and the judge are averaged across ranks with one all-reduce."""

    def average_gradients(self, parameters) -> None:
        """All-reduce-mean the gradients of ``parameters`` in one flat buffer. A parameter with no
        gradient on this rank contributes zeros, so every rank reduces the same buffer layout; one
        with no gradient on any rank (the judge on a step without its online update) is left
        without one, as in a single process, so AdamW skips it instead of stepping on zeros."""
        params = [p for p in parameters if p.requires_grad]
        had_grad = torch.tensor([float(p.grad is not None) for p in params], device=self.device)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params] + [had_grad])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p, anywhere in zip(params, flat[-len(params) :].tolist()):
            n = p.numel()
            if anywhere > 0:
                p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            else:
                p.grad = None
            offset += n


class FSDP(Launcher):
    """The FSDP profile: the training step is one FSDP2 unit; ``backward`` reduce-scatters the
    averaged gradients, so there is nothing to average by hand; whole-model work reads a plain copy."""

    launch_kind = "fsdp"

    def wrap(self, step: TrainingStep) -> TrainingStep:
        """Keep a plain copy for :meth:`full_modules`, then shard ``step`` in place (its parameters
        become DTensor shards)."""
        from torch.distributed.fsdp import fully_shard

        parts = {"student": step.student} | ({"judge": step.judge} if step.judge is not None else {})
        self._full_copy = nn.ModuleDict({name: copy.deepcopy(module) for name, module in parts.items()})
        fully_shard(step)
        return step

    def full_modules(self, step: TrainingStep) -> tuple[nn.Module, nn.Module | None]:
        """Every rank must call this: it gathers the weights into the plain copy."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        self._full_copy.load_state_dict(get_model_state_dict(step, options=StateDictOptions(full_state_dict=True)))
        return self._full_copy["student"], self._full_copy["judge"] if "judge" in self._full_copy else None

    def optimizer_state(
        self, step: TrainingStep, optimizer: torch.optim.Optimizer, run_dir: Path | None = None
    ) -> dict:
        """Whole on rank 0 (gathered to the CPU)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(
            step, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )

    def load_optimizer_state(
        self, step: TrainingStep, optimizer: torch.optim.Optimizer, state: dict, checkpoint: Path | None = None
    ) -> None:
        """Each rank keeps its shard of the whole state."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(step, optimizer, state, options=StateDictOptions(full_state_dict=True))


class DeepSpeed(AllReduce):
    """The DeepSpeed profile (ZeRO stage 1 or 2): an engine owns the student's optimizer and
    reduce-scatters its gradients in ``backward``; the judge is all-reduced by hand. Optimizer
    shards are saved with DeepSpeed's own checkpoint API (``deepspeed/`` of a round)."""

    launch_kind = "deepspeed"

    def __init__(self, device: torch.device, state, zero_stage: int):
        super().__init__(device, state)
        self.zero_stage, self.engine, self._passes = zero_stage, None, 0

    def attach(
        self,
        step: TrainingStep,
        optimizer: torch.optim.Optimizer,
        judge_optimizer: torch.optim.Optimizer | None,
        max_grad_norm: float,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        """Build the ZeRO engine around ``step`` that owns ``optimizer`` and clips at ``max_grad_norm``
        (training.check_launch_mode refuses fp16, gradient accumulation and LoRA under DeepSpeed)."""
        super().attach(step, optimizer, judge_optimizer, max_grad_norm)
        if self.device.type == "cpu":
            os.environ.setdefault("DS_ACCELERATOR", "cpu")  # else DeepSpeed looks for a GPU
        import deepspeed
        from deepspeed.utils import logger as deepspeed_logger

        deepspeed_logger.setLevel("WARNING")
        config = {
            "train_micro_batch_size_per_gpu": 1,  # bookkeeping only: the loop feeds the engine its own batches
            "gradient_accumulation_steps": 1,
            "gradient_clipping": max_grad_norm,
            "zero_optimization": {"stage": self.zero_stage},
            "zero_allow_untested_optimizer": True,  # torch's fused AdamW
            "steps_per_print": 2**31 - 1,
        }
        self.engine, _, _, _ = deepspeed.initialize(model=step, optimizer=optimizer, config=config)

        def count(*_):
            if torch.is_grad_enabled():
                self._passes += 1

        # Every call of the student (decoder passes) and of its encoder, with gradient.
        step.student.register_forward_pre_hook(count)
        if getattr(step.student.config, "is_encoder_decoder", False):
            step.student.get_encoder().register_forward_pre_hook(count)

    def forward(self, step: TrainingStep, batch: list) -> tuple[torch.Tensor, dict[str, float]]:
        return self.engine(self.shard(batch))

    def zero_grad(self) -> None:
        """The engine clears the student's gradients in its step; only the judge's are left."""
        if self.judge_optimizer is not None:
            self.judge_optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor) -> None:
        """The engine's backward reduce-scatters the student's gradients."""
        self.check_same_passes()
        self.engine.backward(loss)

    def step(self) -> None:
        """The engine's step clips, applies and clears the student's gradients. The judge is not in
        the engine: averaged by hand, stepped when it has gradients."""
        self.engine.step()
        if self.judge_optimizer is not None:
            judge_params = self.judge_optimizer.param_groups[0]["params"]
            self.average_gradients(judge_params)
            self.judge_optimizer.step()

    def check_same_passes(self) -> None:
        """Before ``backward``: stop if the ranks ran different numbers of passes with gradient
        this step (their gradients would fill DeepSpeed's buckets in different orders and be
        summed crosswise). It happens only when a rank's share of the batch has, say, no
        rationale at all; the all-reduce profile (ddp.yaml) has no such limit."""
        counts = torch.tensor([self._passes, -self._passes], device=self.device)
        self._passes = 0
        dist.all_reduce(counts, op=dist.ReduceOp.MAX)
        if counts[0] != -counts[1]:
            raise RunAborted(
                f"under DeepSpeed every rank must run the same passes, but this step's ranks ran between "
                f"{-int(counts[1])} and {int(counts[0])} (a rank's share of the batch took another path); "
                "launch with harness_configs/accelerate/ddp.yaml or fsdp.yaml instead (docs/scaling.md)"
            )

    def optimizer_state(
        self, step: TrainingStep, optimizer: torch.optim.Optimizer, run_dir: Path | None = None
    ) -> dict:
        """The engine's optimizer: every rank saves its shard into ``<run_dir>/``
        :data:`DEEPSPEED_STAGING` (``save_round`` moves it into the checkpoint) and a reference
        to it is returned. The judge's optimizer is whole on every rank."""
        if optimizer is not self.optimizer:
            return optimizer.state_dict()
        tag = stage_deepspeed_shards(self.engine, run_dir, self.is_main, self.barrier)
        return {"deepspeed": tag, "world_size": self.world_size, "zero_stage": self.zero_stage}

    def load_optimizer_state(
        self, step: TrainingStep, optimizer: torch.optim.Optimizer, state: dict, checkpoint: Path | None = None
    ) -> None:
        if optimizer is not self.optimizer:
            optimizer.load_state_dict(state)
            return
        if state.get("world_size") != self.world_size:
            raise UserInputError(
                f"{checkpoint}: written by {state.get('world_size')} DeepSpeed processes; "
                f"resume it with the same number (now {self.world_size})"
            )
        load_deepspeed_shards(self.engine, checkpoint, state["deepspeed"])

    def checkpoint_folders(self, run_dir: Path) -> dict[str, Path]:
        return {DEEPSPEED_DIR: run_dir / DEEPSPEED_STAGING}  # the shards stage_deepspeed_shards wrote


def launcher_for(device_name: str) -> Launcher:
    """The launch mode of this process, chosen once: one process, or under ``accelerate launch``
    the all-reduce, FSDP or DeepSpeed profile."""
    if not launched():
        return Launcher(resolve_device(device_name))
    from accelerate import PartialState

    zero_stage = deepspeed_stage(os.environ) if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" else 0
    # Resolve `auto` first: on a machine without CUDA a PartialState() that is not told to use
    # the CPU reports every rank as rank 0 of 1. The barrier timeout is long because the other
    # ranks wait there while rank 0 samples the teacher or runs lm-eval.
    cpu = resolve_device(device_name).type == "cpu" or os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true"
    state = PartialState(cpu=cpu, timeout=timedelta(hours=6))
    if state.num_processes == 1:
        return Launcher(state.device)
    if zero_stage:
        return DeepSpeed(state.device, state, zero_stage)
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return FSDP(state.device, state)
    return AllReduce(state.device, state)


def deepspeed_stage(env) -> int:
    """The ZeRO stage the accelerate DeepSpeed profile asks for (1 or 2), checked against what the
    loop supports: the loop builds the engine's config itself (clipping from
    ``training.max_grad_norm``), keeps fp32 master weights (``training.precision`` autocasts), and
    needs whole parameters on every rank (no stage 3, no offload)."""
    profile = "accelerate profile (DeepSpeed)"
    if env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"):
        raise UserInputError(
            f"{profile}: deepspeed_config_file is not read; set zero_stage in the profile instead "
            "(see harness_configs/accelerate/deepspeed_zero2.yaml)"
        )
    stage = env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    if stage not in ("1", "2"):
        raise UserInputError(
            f"{profile}: zero_stage {stage} is not supported (1 or 2: the loop needs whole parameters on every "
            "rank); for sharded parameters use harness_configs/accelerate/fsdp.yaml"
        )
    for key in ("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE"):
        if env.get(key, "none").lower() not in ("none", ""):
            raise UserInputError(
                f"{profile}: {key.removeprefix('ACCELERATE_DEEPSPEED_').lower()} {env[key]} "
                "is not supported; set it to none"
            )
    if importlib.util.find_spec("deepspeed") is None:
        raise UserInputError(f"{profile}: the deepspeed package is not installed: pip install 'qcrd-bench[deepspeed]'")
    return int(stage)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def configure_cuda(device: torch.device) -> None:
    """TF32 matmuls and convolutions on CUDA: Ampere and newer GPUs then run fp32 matmuls on their tensor cores."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of the training forward passes (None: fp32). ``auto`` is bf16 on a CUDA
    device that supports it and fp32 elsewhere; ``bf16`` and ``fp16`` are taken as asked on any
    device (on the CPU they are slower than fp32: there they exist to test the code path)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """The dynamic loss scaler fp16 needs (its small range underflows small gradients): losses are
    scaled up before ``backward``, gradients unscaled before clipping, and a step whose gradients
    overflowed is skipped while the scale shrinks. None for the other precisions."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None
