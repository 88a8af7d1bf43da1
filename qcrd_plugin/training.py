"""The training recipe: :func:`setup`, then per round :func:`train_round`, :func:`save_round`
and :func:`evaluate_round`; :func:`run` reads like torchtune's ``recipe_main``.

Files written (docs/formats.md): ``config.yaml``, ``pool_train.jsonl``, ``pool_validation.jsonl``,
``metrics.jsonl`` (one JSON object per round), ``round_<k>/`` (an HF checkpoint: model +
tokenizer, plus the :class:`TrainState` while it is the newest round), ``round_<k>/lm_eval_results.json``
and ``round_<k>/rationales.jsonl``. Every file is written atomically (files.py), so a run killed
at any moment resumes with ``--resume`` and ends with the metrics of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from tqdm.auto import tqdm

from . import checkpoints, evaluation, faults
from .answers import format_number
from .checkpoints import (
    STATE_FILE,
    RunLock,
    check_weights,
    damaged,
    drop_partials,
    drop_stale_states,
    has_run_data,
    load_state,
)
from .config import RunConfig
from .data import TrainExample, build_examples, long_prompts
from .discriminator import QualityJudge, build_judge_model, follow_alpha3, pretrain
from .distributed import Launcher, TrainingStep, autocast_dtype, configure_cuda, grad_scaler, launcher_for
from .errors import RunAborted, UserInputError, WriteFailed
from .files import atomic_write_text, read_jsonl, write_jsonl
from .lora import BASE_DIR, check_targets, lora_student
from .methods import Method, build_method
from .model_card import RUN_RECORD, best_round, model_card, run_record
from .negatives import SnapshotRing, drop_correct, negative_generator, sample_negatives, upcoming_questions
from .pools import PoolEntry, read_pool, write_pool
from .pretrained import check_loadable, dequantised_copy, is_gguf
from .questions import Question, TaskData
from .rationales import format_statistics, pool_statistics, pool_warnings, select_pool
from .registry import METHODS
from .reporting import headline_accuracy, inactive_negatives_warning, round_summary, summary_table
from .sources import heldout_split
from .students import (
    EXPLAIN_PREFIX,
    PREDICT_PREFIX,
    build_student,
    check_pretrained,
    is_seq2seq,
    use_eager_attention,
    use_fused_gelu,
)
from .tasks import default_train_split, load_task
from .teachers import build_teacher
from .trackers import Trackers
from .trackers import check_available as check_trackers


class PhaseTimer:
    """Wall time per named phase, accumulated."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    def pop(self) -> dict[str, float]:
        out, self.seconds = {k: round(v, 3) for k, v in self.seconds.items()}, {}
        return out


def batches(examples: list[TrainExample], batch_size: int, seed: int) -> Iterator[list[TrainExample]]:
    """Endless shuffled epochs of batches."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1 if len(order) >= batch_size else 1, batch_size):
            yield [examples[i] for i in order[start : start + batch_size]]


def warmup_then_linear(warmup: int, total: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up, then linear decay to 10% at the last step."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.1, 1.0 - 0.9 * (step - warmup) / max(1, total - warmup))

    return factor


def training_splits(task: TaskData, cfg: RunConfig) -> dict[str, list[Question]]:
    """The questions a run trains on and holds out for the judge's ROC-AUC.

    ``validation`` is the task's own when it has one with teacher rationales (or the teacher is
    an LLM / the simulated one, which can sample any question); otherwise ``task.heldout``
    training questions are held out by a seeded draw. Never the test split: lm-eval scores that.
    """
    train_name = cfg.task.train_split or default_train_split(task)
    if train_name not in task.questions or not task.questions[train_name]:
        raise UserInputError(f"task {cfg.task.name}: no {train_name!r} split (available: {', '.join(task.questions)})")
    if train_name == "test":
        raise UserInputError(
            f"task {cfg.task.name}: training on the test split would score the student on what it was trained on"
        )
    train = list(task.questions[train_name])
    validation = task.questions.get("validation") if train_name != "validation" else None
    pool_has_validation = cfg.teacher.kind != "pool" or cfg.teacher.pool or "validation" in task.pools
    if not validation or not pool_has_validation:
        train, validation = heldout_split(train, cfg.task.heldout, cfg.training.seed)
    if cfg.task.max_train:
        train = train[: cfg.task.max_train]
    return {"train": train, "validation": list(validation)}


def compile_blocks(model, dynamic: bool = True) -> int:
    """``torch.compile`` every transformer block of ``model`` in place; returns how many.

    Block by block rather than the whole model, because the methods call the encoder and decoder
    separately (encode once, decode many rationales), which a compiled top-level forward would
    not cover. ``dynamic``: batch and sequence lengths change every step (dynamic padding).
    """
    names = set(getattr(model, "_no_split_modules", None) or ()) | {"T5Block", "LlamaDecoderLayer"}
    blocks = [module for module in model.modules() if type(module).__name__ in names]
    for block in blocks:
        block.compile(dynamic=dynamic)
    return len(blocks)


def seed_phase(seed: int, round_index: int, phase: str) -> None:
    """Reseed python, numpy and torch at the start of a round's training or evaluation, so that a
    resumed run draws exactly the numbers an uninterrupted one draws from there on."""
    value = (seed * 1_000_003 + round_index * 2 + (phase == "evaluation")) % 2**32
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def resume_point(run_dir: Path, rounds: int) -> tuple[list[dict], Path | None, bool]:
    """Where a killed run picks up: (finished round records, checkpoint to restore, whether that
    checkpoint's round still needs its evaluation). The checkpoint is the newest complete one:
    ``round_<n+1>`` when training of round n+1 finished but its metrics were never written,
    otherwise ``round_<n>`` (n = rounds recorded in metrics.jsonl)."""
    metrics = run_dir / "metrics.jsonl"
    records = [record for _, record in read_jsonl(metrics)] if metrics.exists() else []
    done = len(records)
    if [r.get("round") for r in records] != list(range(1, done + 1)):
        raise UserInputError(f"{metrics}: rounds are not 1..{done} in order; cannot resume from it")
    if done < rounds and (run_dir / f"round_{done + 1}" / STATE_FILE).exists():
        return records, run_dir / f"round_{done + 1}", True
    if done and not (run_dir / f"round_{done}" / STATE_FILE).exists():
        raise UserInputError(
            f"{run_dir}: metrics.jsonl records {done} rounds but round_{done}/{STATE_FILE} is missing; cannot resume"
        )
    return records, (run_dir / f"round_{done}" if done else None), False


@dataclass
class RoundLog:
    """What one round's training adds up for its metrics record."""

    sums: dict[str, float] = field(default_factory=dict)  # loss components summed over steps
    counts: dict[str, int] = field(default_factory=dict)  # steps that logged each (l_d: the judge's update steps)
    tokens: int = 0
    loss_curve: list[float] = field(default_factory=list)
    stats: dict = field(default_factory=dict)  # the method's negative statistics (pop_round_statistics)

    def add(self, loss: float, components: dict[str, float], batch: list[TrainExample]) -> None:
        self.tokens += sum(len(ex.predict_ids) + len(ex.explain_ids) for ex in batch)
        self.loss_curve.append(round(loss, 6))
        for key, value in components.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def mean_losses(self) -> dict[str, float]:
        return {k: v / self.counts[k] for k, v in self.sums.items()}


@dataclass
class TrainState:
    """Everything besides the weights that training needs to continue bit for bit, saved in
    ``round_<k>/training_state.pt``. :meth:`state_dict` and :meth:`load_state_dict` mirror each
    other key by key; the launcher lays out the optimizer state (whole, FSDP or DeepSpeed shards)."""

    method: Method
    optimizer: torch.optim.Optimizer  # the student's
    judge_optimizer: torch.optim.Optimizer | None
    scheduler: torch.optim.lr_scheduler.LRScheduler
    snapshots: SnapshotRing  # earlier student weights, the generators of student negatives
    examples: list[TrainExample]  # whose current student negatives are part of the state
    scaler: torch.amp.GradScaler | None = None  # training.precision fp16: the loss scale goes on with the run
    step: int = 0
    iteration: int = 0
    log: RoundLog = field(default_factory=RoundLog)

    def state_dict(self, launcher: Launcher, step_module: TrainingStep, run_dir: Path) -> dict:
        """Every rank must call (the optimizer state may be gathered or saved in shards)."""
        judge_optimizer = (
            None if self.judge_optimizer is None else launcher.optimizer_state(step_module, self.judge_optimizer)
        )
        return {
            "step": self.step,
            "iteration": self.iteration,
            "launch": launcher.launch_kind,
            "optimizer": launcher.optimizer_state(step_module, self.optimizer, run_dir),
            "judge_optimizer": judge_optimizer,
            "scheduler": self.scheduler.state_dict(),
            "method": self.method.state_dict(),
            "snapshots": list(self.snapshots.snapshots),
            "initial_snapshot": self.snapshots.initial,
            "student_negatives": {ex.id: ex.student_negatives for ex in self.examples},
            "loss_sums": self.log.sums,
            "loss_counts": self.log.counts,
            "round_stats": self.log.stats,
            "tokens": self.log.tokens,
            "loss_curve": self.log.loss_curve,
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict, launcher: Launcher, step_module: TrainingStep, checkpoint: Path) -> None:
        if state.get("launch", "") != launcher.launch_kind:
            raise UserInputError(
                f"{checkpoint} was written by a run launched {state.get('launch') or 'without FSDP or DeepSpeed'}; "
                "resume it under the same accelerate profile"
            )
        self.step, self.iteration = state["step"], state["iteration"]
        launcher.load_optimizer_state(step_module, self.optimizer, state["optimizer"], checkpoint)
        if self.judge_optimizer is not None:
            launcher.load_optimizer_state(step_module, self.judge_optimizer, state["judge_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.method.load_state_dict(state["method"])
        self.snapshots.snapshots.extend(state["snapshots"])
        self.snapshots.initial = state["initial_snapshot"]
        for ex in self.examples:
            ex.student_negatives = state["student_negatives"].get(ex.id, [])
        self.log = RoundLog(
            state["loss_sums"], state["loss_counts"], state["tokens"], state["loss_curve"], state["round_stats"]
        )
        if self.scaler is not None and state.get("scaler"):  # absent in states written before fp16 existed
            self.scaler.load_state_dict(state["scaler"])


@dataclass
class Run:
    """A run once set up: what every round reads (config, launcher, models, data) and updates."""

    cfg: RunConfig
    run_dir: Path
    launcher: Launcher
    log: Callable[[str], None]
    progress: bool
    timer: PhaseTimer
    step_module: TrainingStep  # the method's loss as a module: student and judge are its children
    tokenizer: object
    state: TrainState
    schedule: list[list[TrainExample]]  # every step's batch, drawn up front
    evaluator: evaluation.Evaluator | None  # rank 0 only
    records: list[dict]  # metrics of the finished rounds
    first_round: int
    evaluate_pending: bool  # the first round trained before a kill; only its evaluation is missing
    pool_stats: dict
    setup_times: dict[str, float]
    amp_dtype: torch.dtype | None
    trackers: Trackers | None  # training.report_to, rank 0 only


def run(
    cfg: RunConfig,
    progress: bool = True,
    log: Callable[[str], None] = print,
    resume: bool = False,
    overwrite: bool = False,
) -> list[dict]:
    """Run ``cfg`` end to end; returns the per-round metric records (also in metrics.jsonl).

    ``resume`` continues a run whose directory holds earlier rounds (after a kill, say) and ends
    with the metrics an uninterrupted run ends with; ``overwrite`` starts over in a directory
    that holds a run. Without either, such a directory is refused rather than clobbered.
    """
    launcher = launcher_for(cfg.training.device)
    run_dir = Path(cfg.output_dir) / cfg.name
    lock = take_run_directory(run_dir, launcher, resume, overwrite)
    if not launcher.is_main:
        progress, log = False, (lambda _: None)
    try:
        recipe = setup(cfg, run_dir, launcher, progress, log, resume, overwrite)
        if isinstance(recipe, Run):
            for round_index in range(recipe.first_round, cfg.training.rounds + 1):
                trains = not (recipe.evaluate_pending and round_index == recipe.first_round)
                if trains:
                    train_round(recipe, round_index)
                # Lm-eval and the checkpoint read plain modules with the full weights (FSDP: a gathered copy).
                student, judge = launcher.full_modules(recipe.step_module)
                if trains:
                    save_round(recipe, round_index, student, judge)
                evaluate_round(recipe, round_index, student, judge)
        records = recipe.records if isinstance(recipe, Run) else recipe
        log(summary_table(records))
        if isinstance(recipe, Run) and recipe.trackers is not None:
            recipe.trackers.close()
    except WriteFailed as err:  # a full disk or a folder turned read-only: every finished round is intact
        raise RunAborted(f"{err}; free space and continue with `qcrd-bench run --resume {run_dir}`") from err
    finally:
        if lock is not None:
            lock.__exit__()
    launcher.close()
    return records


def take_run_directory(run_dir: Path, launcher: Launcher, resume: bool, overwrite: bool) -> RunLock | None:
    """Create and lock ``run_dir`` (rank 0; the lock it returns), refusing a directory that holds
    a run unless ``resume`` or ``overwrite`` says what to do with it. Every rank raises if it fails."""
    lock, error = RunLock(run_dir), None
    if launcher.is_main:
        try:
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:  # output_dir is a file, read-only, or the name is too long for this file system
                raise UserInputError(
                    f"output_dir {run_dir.parent}: cannot create the run directory {run_dir} ({err.strerror or err})"
                ) from None
            try:
                lock.__enter__()
            except OSError as err:  # a read-only run directory
                raise UserInputError(f"{run_dir}: cannot write in the run directory ({err.strerror or err})") from None
            if has_run_data(run_dir) and not (resume or overwrite):
                lock.__exit__()
                raise UserInputError(
                    f"{run_dir} already holds a run: continue it with `qcrd-bench run --resume {run_dir}` "
                    "or start over with --overwrite"
                )
        except UserInputError as err:
            error = err
    if launcher.any(error is not None):
        raise error or UserInputError(f"rank 0 could not take {run_dir}")
    return lock if launcher.is_main else None


def prepare_directory(run_dir: Path, cfg: RunConfig, resume: bool, overwrite: bool) -> None:
    """Drop half-written checkpoints (and with ``overwrite``, the old run's rounds) and save the config."""
    drop_partials(run_dir)
    if overwrite and not resume:
        # The teacher cache stays: its samples were paid for and are still valid.
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        for old in run_dir.glob("round_*"):
            shutil.rmtree(old)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def setup(
    cfg: RunConfig,
    run_dir: Path,
    launcher: Launcher,
    progress: bool,
    log: Callable[[str], None],
    resume: bool,
    overwrite: bool,
) -> Run | list[dict]:
    """Everything before the first round: the teacher's pools, the student, the judge, the
    method, optimizers and the restored state of a resumed run. A resumed run with nothing
    left to do returns its records instead."""
    launcher.main_only(lambda: prepare_directory(run_dir, cfg, resume, overwrite))
    records, restore_from, evaluate_pending = (
        resume_point(run_dir, cfg.training.rounds) if resume else ([], None, False)
    )
    if resume and launcher.is_main:
        drop_stale_states(run_dir, restore_from)
    if len(records) >= cfg.training.rounds:
        log(f"{run_dir}: all {cfg.training.rounds} rounds are done; nothing to resume")
        return records
    start_process(cfg, run_dir, launcher, records, log)
    source = student_source(cfg, run_dir, launcher, log)
    if restore_from is not None:  # a damaged checkpoint stops here, before any teacher sampling
        check_weights(restore_from)
    saved = load_state(restore_from) if restore_from else None
    timer = PhaseTimer()
    task, splits, teacher, pools = sample_teacher(cfg, run_dir, launcher, progress, log, timer)
    selections, pool_stats = select_rationales(cfg, splits, pools, log, timer)
    student, tokenizer, examples, heldout = build_student_and_examples(
        cfg, splits, pools, selections, saved, restore_from, launcher.device, log, run_dir, launcher.is_main, source
    )
    judge = build_judge(cfg, student, tokenizer, examples, saved, launcher.device, progress, log, timer)
    method = build_method(cfg, student, tokenizer, launcher.device, judge=judge)
    step_module = launcher.wrap(TrainingStep(method))  # under FSDP this shards the student and the judge in place
    state = build_train_state(cfg, method, launcher, step_module, examples)
    if saved is not None:
        state.load_state_dict(saved, launcher, step_module, restore_from)
    if cfg.training.compile:
        for module in (student, judge):
            if module is not None:
                compile_blocks(module)
    total_steps = cfg.training.rounds * cfg.training.steps_per_round
    # Drawn up front: negatives are sampled for the questions coming next, and a resumed run
    # continues the same sequence of batches.
    schedule = list(itertools.islice(batches(examples, cfg.training.batch_size, cfg.training.seed), total_steps))
    evaluator = launcher.main_only(
        lambda: evaluation.Evaluator(
            cfg, task, teacher, tokenizer, heldout, launcher.device, timer, splits["validation"], method.answer_from
        )
    )
    trackers = launcher.main_only(
        lambda: Trackers(cfg.training.report_to, run_dir, cfg.to_dict()) if cfg.training.report_to else None
    )
    if trackers is not None:
        trackers.log_pool(pool_stats)
    return Run(
        cfg,
        run_dir,
        launcher,
        log,
        progress,
        timer,
        step_module,
        tokenizer,
        state,
        schedule,
        evaluator,
        records,
        len(records) + 1,
        evaluate_pending,
        pool_stats,
        timer.pop(),
        autocast_dtype(launcher.device, cfg.training.precision),
        trackers,
    )


def start_process(
    cfg: RunConfig, run_dir: Path, launcher: Launcher, records: list[dict], log: Callable[[str], None]
) -> None:
    """Seed, threads and CUDA settings; the run's first line; the checks that must pass before
    any teacher sampling (evaluation tasks, trackers, the pretrained student)."""
    torch.manual_seed(cfg.training.seed)
    if cfg.training.threads:
        torch.set_num_threads(cfg.training.threads)
    configure_cuda(launcher.device)
    world = f" x {launcher.world_size} processes" if launcher.world_size > 1 else ""
    log(
        f"run directory: {run_dir}   device: {launcher.device}{world}   method: {cfg.method.name}"
        + (f"   resuming after round {len(records)}" if records else "")
    )
    evaluation.check_task_names(
        cfg.evaluation.tasks or evaluation.default_tasks(cfg.task.name), cfg.evaluation.include_path
    )
    check_trackers(cfg.training.report_to)
    check_pretrained(cfg.student)
    if cfg.method.name == "qcrd" and cfg.judge.enabled:
        check_loadable(cfg.judge.pretrained, "judge.pretrained")
    check_targets(cfg.student)
    check_launch_mode(cfg, launcher)


def student_source(cfg: RunConfig, run_dir: Path, launcher: Launcher, log: Callable[[str], None]) -> str:
    """The folder or hub id the pretrained student loads from ("" for the tiny preset). A GGUF
    ``student.pretrained`` (a file or a short name such as ``smollm2-135m``) is de-quantised once
    into ``<run>/base_model/``, an ordinary Hugging Face folder that a resume, a LoRA round's
    ``pretrained=`` and lm-eval read without the GGUF file."""
    if not is_gguf(cfg.student.pretrained):
        return cfg.student.pretrained
    folder = run_dir / BASE_DIR
    if not (folder / "config.json").is_file():
        log(f"student: de-quantising {cfg.student.pretrained} into {folder} (once per run)")
    launcher.main_only(lambda: dequantised_copy(cfg.student.pretrained, folder, "student.pretrained"))
    launcher.barrier()
    return str(folder)


def check_launch_mode(cfg: RunConfig, launcher: Launcher) -> None:
    """What the multi-process modes do not take: DeepSpeed's engine accumulates and scales by its
    own config, which the loop does not build, and FSDP's sharded gradients would need a sharded
    scaler (each rank must agree on a skipped step)."""
    if launcher.launch_kind == "deepspeed" and cfg.training.grad_accum_steps > 1:
        raise UserInputError(
            "key 'training.grad_accum_steps': not supported under the DeepSpeed profile; "
            "launch with harness_configs/accelerate/ddp.yaml or fsdp.yaml"
        )
    if launcher.launch_kind and cfg.student.lora_rank:
        raise UserInputError(
            f"key 'student.lora_rank': LoRA students are not supported under the {launcher.launch_kind} profile; "
            "train them in one process or with harness_configs/accelerate/ddp.yaml"
        )
    if launcher.launch_kind and cfg.method.selection == "last_seen":
        raise UserInputError(
            f"key 'method.selection': last_seen is not supported under the {launcher.launch_kind} profile "
            "(each process would remember only its own questions); train in one process"
        )
    if launcher.launch_kind and cfg.training.precision == "fp16":
        raise UserInputError(
            f"key 'training.precision': fp16 is not supported under the {launcher.launch_kind} profile; "
            "use bf16 there, or fp16 in one process or with harness_configs/accelerate/ddp.yaml"
        )


def select_rationales(
    cfg: RunConfig, splits: dict, pools: dict, log: Callable[[str], None], timer: PhaseTimer
) -> tuple:
    """(selections per split, the train pool's statistics): self-consistency over the pools, and
    with ``task.label_source: teacher_majority`` the train questions relabelled (in ``splits``)."""
    with timer("self_consistency"):
        selections = {split: select_pool(pool, cfg.self_consistency) for split, pool in pools.items()}
    if not needs_teacher(cfg):  # finetune on gold labels: empty pools, nothing to report
        return selections, {}
    pool_stats = pool_statistics(pools["train"], selections["train"])
    if cfg.task.label_source == "teacher_majority":
        splits["train"], dropped = teacher_labels(splits["train"], selections["train"])
        log(f"labels: the teacher's majority answer ({dropped} questions without one dropped)")
    log("teacher pool (train): " + format_statistics(pool_stats))
    for warning in pool_warnings(pools["train"], pool_stats, cfg.teacher.samples):
        log(f"warning: teacher pool (train): {warning}")
    return selections, pool_stats


def sample_teacher(
    cfg: RunConfig, run_dir: Path, launcher: Launcher, progress: bool, log: Callable[[str], None], timer: PhaseTimer
) -> tuple[TaskData, dict, object, dict]:
    """(task, splits, teacher, pools): the run's questions and the teacher's rationales for the
    train and validation splits. Rank 0 alone asks the teacher (LLM calls cost money) and writes
    the pools; the other ranks read them."""
    task = load_task(cfg.task)
    splits = training_splits(task, cfg)
    log(
        f"task {cfg.task.name} ({task.source}): "
        + ", ".join(f"{k} {len(v)}" for k, v in splits.items())
        + " questions"
        + "".join(f"; note: {n}" for n in task.notes)
    )

    if not needs_teacher(cfg):
        log(f"teacher: not asked (method {cfg.method.name} trains on the gold labels alone)")
        return (
            task,
            splits,
            None,
            {split: [PoolEntry(q.id, q.question, q.answer) for q in splits[split]] for split in splits},
        )

    def ask():
        teacher = build_teacher(cfg.teacher, task, run_dir / "teacher_cache.jsonl", progress, str(launcher.device))
        pools = {
            split: teacher.sample(splits[split], cfg.teacher.samples, cfg.teacher.temperature)
            for split in ("train", "validation")
        }
        for split, pool in pools.items():
            write_pool(run_dir / f"pool_{split}.jsonl", pool)
        if cfg.teacher.kind == "hf":
            # Only the simulated teacher is asked again (test references): let the LLM's weights
            # leave the GPU before the student needs it.
            teacher = None
            if launcher.device.type == "cuda":
                torch.cuda.empty_cache()
        return teacher, pools

    with timer("teacher_sampling"):
        teacher, pools = launcher.main_only(ask) or (None, None)
        if not launcher.is_main:
            pools = {split: read_pool(run_dir / f"pool_{split}.jsonl") for split in ("train", "validation")}
    return task, splits, teacher, pools


def needs_teacher(cfg: RunConfig) -> bool:
    """False for a method that trains on labels alone (finetune) on gold labels: no teacher call, no pool."""
    return cfg.method.name not in METHODS.names(rationales=False) or cfg.task.label_source != "gold"


def teacher_labels(questions: list[Question], selections: list) -> tuple[list[Question], int]:
    """``questions`` labelled with the teacher's self-consistent (majority) answer instead of gold,
    as DSS's ``--label_type llm`` (the paper's Table 3 setting); gold is not used in training. A
    question whose samples give no majority is dropped. Returns (questions, how many dropped)."""
    majority = {sel.id: sel.majority for sel in selections}
    kept = []
    for q in questions:
        answer = majority.get(q.id)
        if answer is None:
            continue
        text = format_number(answer) if q.answer_type == "number" and isinstance(answer, float) else str(answer)
        kept.append(dataclasses.replace(q, answer=text))
    return kept, len(questions) - len(kept)


def build_student_and_examples(
    cfg: RunConfig,
    splits: dict,
    pools: dict,
    selections: dict,
    saved: dict | None,
    restore_from: Path | None,
    device,
    log: Callable[[str], None],
    run_dir: Path,
    is_main: bool,
    source: str = "",
) -> tuple:
    """(student, tokenizer, train examples, held-out examples). The student's weights are those of
    ``restore_from`` on a resume, else ``source`` (a pretrained folder, :func:`student_source`) or a
    fresh initialisation; with ``student.lora_rank`` it is a peft model whose adapters alone train
    (lora.py)."""
    corpus = [PREDICT_PREFIX + EXPLAIN_PREFIX] + [q.question for q in splits["train"]]
    corpus += [s.rationale for entry in pools["train"] for s in entry.samples]
    student, tokenizer = build_student(cfg.student, corpus, source)
    use_fused_gelu(student)
    if not source and cfg.student.family == "seq2seq":
        use_eager_attention(student)  # the tiny T5 preset (the Llama preset is faster with SDPA)
    if cfg.student.lora_rank:
        student = lora_student(cfg, student, tokenizer, run_dir, restore_from, is_main, log)
    elif saved is not None:
        try:
            student.load_state_dict(type(student).from_pretrained(restore_from).state_dict())
        except (
            OSError,
            SafetensorError,
            RuntimeError,
            ValueError,
        ) as err:  # a truncated, corrupted or empty model file
            raise UserInputError(damaged(restore_from / "model.safetensors", err)) from None
    student.to(device).train()
    limits = (cfg.student.max_input_tokens, cfg.student.max_target_tokens)
    cut = long_prompts(tokenizer, splits["train"] + splits["validation"], limits[0])
    if cut:
        log(
            f"warning: {cut} of {len(splits['train']) + len(splits['validation'])} prompts are longer than "
            f"student.max_input_tokens={limits[0]} tokens and lose their middle "
            "(their end, with any choices, is kept); raise student.max_input_tokens"
        )
    examples = build_examples(splits["train"], selections["train"], tokenizer, *limits)
    heldout = build_examples(splits["validation"], selections["validation"], tokenizer, *limits)
    return student, tokenizer, examples, heldout


def build_judge(
    cfg: RunConfig,
    student,
    tokenizer,
    examples: list[TrainExample],
    saved: dict | None,
    device,
    progress: bool,
    log: Callable[[str], None],
    timer: PhaseTimer,
) -> QualityJudge | None:
    """QCRD's quality judge: pre-trained on the pool's positives and negatives, or restored."""
    if cfg.method.name != "qcrd" or not cfg.judge.enabled:
        return None
    judge = build_judge_model(cfg.judge, student, tokenizer).to(device)
    use_fused_gelu(judge)
    if isinstance(judge, QualityJudge) and not cfg.student.pretrained:
        use_eager_attention(judge.encoder)  # the from-scratch judge of a tiny preset
    if saved is not None:
        judge.load_state_dict(saved["judge"])  # its weights, saved with the round's state
        return judge
    with timer("judge_pretraining"):
        losses = pretrain(judge, examples, cfg.judge, tokenizer, device, cfg.training.seed, progress)
    if losses:
        head, tail = losses[:10], losses[-10:]
        log(
            f"judge pre-training: L_D {sum(head) / len(head):.3f} -> {sum(tail) / len(tail):.3f} "
            f"over {len(losses)} steps"
        )
    return judge


def build_train_state(
    cfg: RunConfig, method: Method, launcher: Launcher, step_module: TrainingStep, examples: list[TrainExample]
) -> TrainState:
    """Optimizers, schedule and snapshots at step 0. Two AdamWs: the student's, with the
    learning-rate schedule, and the judge's at a constant rate; separate, so that under DeepSpeed
    the engine owns the student's alone while the judge steps only when it has gradients (its
    online-update steps), as in one process. Fused AdamW: one kernel for all tensors (docs/performance.md)."""
    adamw = dict(weight_decay=cfg.training.weight_decay, fused=True)
    trainable = [p for p in method.student.parameters() if p.requires_grad]  # a LoRA student: its adapters
    optimizer = torch.optim.AdamW(trainable, lr=cfg.training.learning_rate, **adamw)
    judge_groups = [group for module in method.extra_modules() for group in module.param_groups(cfg.judge)]
    judge_optimizer = torch.optim.AdamW(judge_groups, **adamw) if judge_groups else None
    total_steps = cfg.training.rounds * cfg.training.steps_per_round
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_then_linear(cfg.training.warmup_steps, total_steps)
    )
    scaler = grad_scaler(launcher.device, cfg.training.precision)
    # DeepSpeed: the engine takes the student's optimizer.
    launcher.attach(step_module, optimizer, judge_optimizer, cfg.training.max_grad_norm, scaler)
    snapshots = SnapshotRing(cfg.negatives.j_back)
    return TrainState(method, optimizer, judge_optimizer, scheduler, snapshots, examples, scaler)


def train_round(run: Run, round_index: int) -> None:
    """``training.steps_per_round`` steps: a new iteration (snapshot, negatives) every
    ``training.iteration_steps``, then forward, backward and the optimizer steps."""
    cfg, state, launcher = run.cfg, run.state, run.launcher
    state.log = RoundLog()
    seed_phase(cfg.training.seed, round_index, "training")
    bar = tqdm(
        range(cfg.training.steps_per_round),
        desc=f"round {round_index}/{cfg.training.rounds} training",
        disable=not run.progress,
    )
    for _ in bar:
        inject_nan = faults.point("training_step", state.step + 1)
        if state.step % cfg.training.iteration_steps == 0:
            start_iteration(run)
        with run.timer("training"):
            batch = run.schedule[state.step]
            state.method.new_step()
            launcher.zero_grad()
            loss, components = accumulate_gradients(
                launcher, run.step_module, batch, cfg.training.grad_accum_steps, run.amp_dtype, inject_nan
            )
            if not math.isfinite(loss):
                kept = f"round_{round_index - 1}/" if round_index > 1 else "no checkpoint yet (none was written)"
                raise RunAborted(
                    f"loss is {loss} at step {state.step + 1} (round {round_index}); stopped before applying it. "
                    f"The newest good checkpoint is {kept}. Lower training.learning_rate or "
                    f"check the teacher pool, then resume with `qcrd-bench run --resume {run.run_dir}`"
                )
            launcher.step()
            state.scheduler.step()
        state.step += 1
        state.log.add(loss, components, batch)
        if run.trackers is not None:
            run.trackers.log_step(state.step, loss, components, state.scheduler.get_last_lr()[0])
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)  # drawn at the next refresh (mininterval)
    state.log.stats = state.method.pop_round_statistics()


def micro_batches(batch: list, count: int) -> list[list]:
    """``batch`` cut into ``count`` consecutive parts of (nearly) equal size."""
    bounds = [round(i * len(batch) / count) for i in range(count + 1)]
    return [batch[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def accumulate_gradients(
    launcher: Launcher, step_module: TrainingStep, batch: list, count: int, amp_dtype, inject_nan: bool = False
) -> tuple[float, dict]:
    """Forward and backward ``batch`` in ``count`` micro-batches (``training.grad_accum_steps``),
    each loss weighted by its share of the questions, so the accumulated gradient is the whole
    batch's (exactly so where the loss is a mean over micro-batches holding equal shares of its
    terms). Returns the step's (loss, components), weighted the same way; the loss is not finite
    when any micro-batch's is, and the caller stops before the optimizer applies anything."""
    local_loss, sums, shares = 0.0, {}, {}
    for micro in micro_batches(batch, count):
        share = len(micro) / len(batch)
        with torch.autocast(launcher.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            total, parts = launcher.forward(step_module, micro)
        total = total * float("nan") if inject_nan else total
        launcher.backward(total * share)
        local_loss += share * float(total.detach())
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + share * value
            shares[key] = shares.get(key, 0.0) + share
    # The mean over ranks is linear: one all-reduce per step gives the weighted mean of every rank's micro-batches.
    return launcher.mean(local_loss), {key: sums[key] / shares[key] for key in sums}


def start_iteration(run: Run) -> None:
    """A new iteration: snapshot the student, let the method update its weights (alpha3), and
    every ``negatives.refresh_every`` iterations sample student negatives for the coming batches."""
    cfg, state = run.cfg, run.state
    state.iteration += 1
    student, _ = run.launcher.full_modules(run.step_module)
    state.snapshots.take(student)
    state.method.start_iteration(state.iteration)
    if state.judge_optimizer is not None and cfg.judge.lr_follows_alpha3:
        follow_alpha3(state.judge_optimizer, cfg.judge.learning_rate, state.method.alpha3, cfg.method.alpha3)
    if state.method.uses_student_negatives and (state.iteration - 1) % cfg.negatives.refresh_every == 0:
        coming = run.schedule[state.step : state.step + cfg.negatives.refresh_every * cfg.training.iteration_steps]
        with run.timer("negative_sampling"):
            refresh_negatives(
                cfg,
                student,
                negative_generator(state.snapshots, cfg.negatives),
                state.examples,
                coming,
                cfg.training.seed + state.iteration,
                run.launcher.device,
                run.progress,
                run.tokenizer,
            )


def save_round(run: Run, round_index: int, student, judge) -> None:
    """``round_<k>/``: the HF checkpoint and the training state (checkpoints.save_round writes it atomically)."""
    launcher = run.launcher
    with run.timer("checkpoint"):
        state = run.state.state_dict(launcher, run.step_module, run.run_dir)
        state |= {"round": round_index, "judge": judge.state_dict() if judge is not None else None}
        record = json.dumps(
            run_record(run.cfg, round_index, is_seq2seq(student)), indent=2
        )  # what lm-eval reads to score the right test set
        launcher.main_only(
            lambda: checkpoints.save_round(
                run.run_dir,
                round_index,
                student,
                run.tokenizer,
                state,
                move_in=launcher.checkpoint_folders(run.run_dir),
                files={RUN_RECORD: record},
            )
        )


def evaluate_round(run: Run, round_index: int, student, judge) -> None:
    """Rank 0 scores the student, appends the round's record to metrics.jsonl and drops the
    previous round's training state; the other ranks wait for it."""
    cfg, state = run.cfg, run.state

    def evaluate_and_record() -> None:
        seed_phase(cfg.training.seed, round_index, "evaluation")
        record = run.evaluator(round_index, student, judge)
        faults.point("evaluation", round_index)
        round_times = run.timer.pop()
        record.update(
            {
                "step": state.step,
                "iteration": state.iteration,
                "method": cfg.method.name,
                "answer_from": state.method.answer_from,
                "loss": state.log.mean_losses(),
                "negatives": state.log.stats or None,
                "loss_curve": state.log.loss_curve,
                "method_state": state.method.log_state(),
                "pool": run.pool_stats,
                "time_s": round_times,
                "setup_time_s": run.setup_times,
                # None for a round trained before a kill and only evaluated here: no training time to divide by.
                "train_tokens_per_s": state.log.tokens / round_times["training"]
                if round_times.get("training")
                else None,
                "world_size": run.launcher.world_size,
                "checkpoint": str(run.run_dir / f"round_{round_index}"),
            }
        )
        record["headline_acc"] = headline_accuracy(
            record["eval"], record["label_task"], record["explain_task"], state.method.answer_from
        )
        if "validation" in record:
            record["validation_acc"] = headline_accuracy(
                record["validation"], record["label_task"], record["explain_task"], state.method.answer_from
            )
            record["selected_round"] = best_round(run.records + [record], "validation_acc")
        run.records.append(record)
        folder = run.run_dir / f"round_{round_index}"
        atomic_write_text(
            folder / "README.md",
            model_card(run_record(cfg, round_index, is_seq2seq(student)), record, folder.resolve()),
        )
        write_jsonl(run.run_dir / "metrics.jsonl", run.records)
        faults.point("metrics_written", round_index)
        # The previous round's training state is no longer the newest: only its weights stay
        # (a kill right here leaves it; the next --resume removes it: drop_stale_states).
        (run.run_dir / f"round_{round_index - 1}" / STATE_FILE).unlink(missing_ok=True)
        if run.trackers is not None:
            run.trackers.log_round(record)
        run.log(round_summary(record))
        warning = inactive_negatives_warning(cfg, record)
        if warning:
            run.log(warning)

    run.launcher.main_only(evaluate_and_record)


def refresh_negatives(
    cfg: RunConfig,
    student,
    generator: dict | None,
    examples: list[TrainExample],
    coming: list[list[TrainExample]],
    seed: int,
    device,
    progress: bool,
    tokenizer,
) -> None:
    """New student negatives for the questions of the ``coming`` batches, sampled by ``generator``
    (weights; None = no student negatives yet); every other question's are dropped. Under
    ``negatives.keep_correct: false`` those that state the gold answer are dropped too (``tokenizer``
    reads them)."""
    for ex in examples:
        ex.student_negatives = []
    if generator is not None:
        neg = cfg.negatives
        sample_negatives(
            student,
            generator,
            upcoming_questions(coming),
            neg.per_question,
            neg.temperature,
            neg.max_new_tokens,
            neg.batch_size,
            seed,
            device,
            progress,
        )
        if not neg.keep_correct:
            drop_correct(upcoming_questions(coming), tokenizer)
