"""The training recipe: load -> set up -> for each round: train, checkpoint, evaluate, log.

Everything a run does is visible in :func:`_run`, in order. Files written (docs/formats.md):
``config.yaml``, ``pool_train.jsonl``, ``pool_validation.jsonl``, ``metrics.jsonl`` (one JSON
object per round), ``round_<k>/`` (an HF checkpoint: model + tokenizer, plus the training state
while it is the newest round), ``round_<k>/lm_eval_results.json`` and ``round_<k>/rationales.jsonl``.
Every file is written atomically (checkpoints.py), so a run killed at any moment resumes with
``--resume`` and ends with the metrics of an uninterrupted run.
"""

from __future__ import annotations

import itertools
import math
import random
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from safetensors import SafetensorError
import yaml
from tqdm.auto import tqdm

from . import evaluation, faults
from .checkpoints import (DEEPSPEED_DIR, DEEPSPEED_STAGING, STATE_FILE, RunLock, damaged, drop_partials, drop_stale_states,
                          has_run_data, load_state, save_round)
from .errors import RunAborted, UserInputError, WriteFailed
from .files import atomic_write_json, atomic_write_text, read_jsonl, write_jsonl
from .config import RunConfig
from .data import TrainExample, build_examples, explain_prompt, long_prompts, prompt_ids, target_ids
from .distributed import Parallel, TrainingStep, autocast_dtype, configure_cuda
from .discriminator import QualityJudge, follow_alpha3, judge_input, mean_scores, pretrain, roc_auc
from .methods import build_method
from .negatives import SnapshotRing, negative_generator, sample_negatives, upcoming_questions
from .rationales import format_statistics, pool_statistics, pool_warnings, select_pool
from .students import EXPLAIN_PREFIX, PREDICT_PREFIX, build_student, check_pretrained, judge_config, use_fused_gelu
from .pools import read_pool, write_pool
from .questions import Question, TaskData
from .rationale_quality import distinct_n, faithfulness, overlap_metrics
from .sources import heldout_split
from .tasks import default_train_split, load_task
from .teachers import build_teacher

METRICS_FORMAT = "qcrd-metrics/1"


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
        raise UserInputError(f"task {cfg.task.name}: training on the test split would score the student on what it was trained on")
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
        raise UserInputError(f"{run_dir}: metrics.jsonl records {done} rounds but round_{done}/{STATE_FILE} is missing; cannot resume")
    return records, (run_dir / f"round_{done}" if done else None), False


def run(cfg: RunConfig, progress: bool = True, log: Callable[[str], None] = print, resume: bool = False,
        overwrite: bool = False) -> list[dict]:
    """Run ``cfg`` end to end; returns the per-round metric records (also in metrics.jsonl).

    ``resume`` continues a run whose directory holds earlier rounds (after a kill, say) and ends
    with the metrics an uninterrupted run ends with; ``overwrite`` starts over in a directory
    that holds a run. Without either, such a directory is refused rather than clobbered.
    """
    parallel = Parallel(cfg.training.device)
    run_dir = Path(cfg.output_dir) / cfg.name
    lock, error = RunLock(run_dir), None
    if parallel.is_main:
        try:
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:  # output_dir is a file, read-only, or the name is too long for this file system
                raise UserInputError(f"output_dir {cfg.output_dir}: cannot create the run directory {run_dir} "
                                     f"({err.strerror or err})") from None
            try:
                lock.__enter__()
            except OSError as err:  # a read-only run directory
                raise UserInputError(f"{run_dir}: cannot write in the run directory ({err.strerror or err})") from None
            if has_run_data(run_dir) and not (resume or overwrite):
                lock.__exit__()
                raise UserInputError(f"{run_dir} already holds a run: continue it with `qcrd-bench run --resume {run_dir}` "
                                     "or start over with --overwrite")
        except UserInputError as err:
            error = err
    if parallel.any(error is not None):
        raise error or UserInputError(f"rank 0 could not take {run_dir}")
    try:
        records = _run(cfg, run_dir, parallel, progress if parallel.is_main else False, log if parallel.is_main else (lambda _: None),
                       resume, overwrite)
    except WriteFailed as err:  # a full disk or a folder turned read-only: every finished round is intact
        raise RunAborted(f"{err}; free space and continue with `qcrd-bench run --resume {run_dir}`") from err
    finally:
        if parallel.is_main:
            lock.__exit__()
    parallel.close()
    return records


def _run(cfg: RunConfig, run_dir: Path, parallel: Parallel, progress: bool, log: Callable[[str], None], resume: bool,
         overwrite: bool) -> list[dict]:
    # ---- load -------------------------------------------------------------------------------
    main = parallel.is_main
    metrics_path = run_dir / "metrics.jsonl"
    def prepare_directory() -> None:
        drop_partials(run_dir)
        if overwrite and not resume:
            # The teacher cache stays: its samples were paid for and are still valid.
            metrics_path.unlink(missing_ok=True)
            for old in run_dir.glob("round_*"):
                shutil.rmtree(old)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    parallel.main_only(prepare_directory)
    records, restore_from, evaluate_pending = resume_point(run_dir, cfg.training.rounds) if resume else ([], None, False)
    if resume and main:
        drop_stale_states(run_dir, restore_from)
    if len(records) >= cfg.training.rounds:
        log(f"{run_dir}: all {cfg.training.rounds} rounds are done; nothing to resume")
        log(summary_table(records))
        return records
    torch.manual_seed(cfg.training.seed)
    if cfg.training.threads:
        torch.set_num_threads(cfg.training.threads)
    device = parallel.device
    configure_cuda(device)
    amp_dtype = autocast_dtype(device, cfg.training.precision)
    timer = PhaseTimer()
    log(f"run directory: {run_dir}   device: {device}" + (f" x {parallel.world_size} processes" if parallel.world_size > 1 else "")
        + f"   method: {cfg.method.name}" + (f"   resuming after round {len(records)}" if resume else ""))

    evaluation.check_task_names(cfg.evaluation.tasks or evaluation.default_tasks(cfg.task.name))
    check_pretrained(cfg.student)
    task = load_task(cfg.task)
    splits = training_splits(task, cfg)
    log(f"task {cfg.task.name} ({task.source}): " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()) + " questions"
        + "".join(f"; note: {n}" for n in task.notes))
    with timer("teacher_sampling"):
        # Rank 0 alone asks the teacher (LLM calls cost money); the other ranks read its pools.
        def sample_teacher():
            teacher = build_teacher(cfg.teacher, task, run_dir / "teacher_cache.jsonl", progress, str(device))
            pools = {split: teacher.sample(splits[split], cfg.teacher.samples, cfg.teacher.temperature)
                     for split in ("train", "validation")}
            for split, pool in pools.items():
                write_pool(run_dir / f"pool_{split}.jsonl", pool)
            if cfg.teacher.kind == "hf":
                # Only the simulated teacher is asked again (test references): let the LLM's weights
                # leave the GPU before the student needs it.
                teacher = None
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            return teacher, pools

        teacher, pools = parallel.main_only(sample_teacher) or (None, None)
        if not main:
            pools = {split: read_pool(run_dir / f"pool_{split}.jsonl") for split in ("train", "validation")}
    with timer("self_consistency"):
        selections = {split: select_pool(pool, cfg.self_consistency) for split, pool in pools.items()}
        pool_stats = pool_statistics(pools["train"], selections["train"])
    log("teacher pool (train): " + format_statistics(pool_stats))
    for warning in pool_warnings(pools["train"], pool_stats, cfg.teacher.samples):
        log(f"warning: teacher pool (train): {warning}")

    # ---- set up -----------------------------------------------------------------------------
    corpus = [PREDICT_PREFIX + EXPLAIN_PREFIX] + [q.question for q in splits["train"]]
    corpus += [s.rationale for entry in pools["train"] for s in entry.samples]
    student, tokenizer = build_student(cfg.student, corpus)
    use_fused_gelu(student)
    state = load_state(restore_from) if restore_from else None
    if state is not None:
        try:
            student.load_state_dict(type(student).from_pretrained(restore_from).state_dict())
        except (OSError, SafetensorError, RuntimeError, ValueError) as err:  # a truncated, corrupted or empty model file
            raise UserInputError(damaged(restore_from / "model.safetensors", err)) from None
    student.to(device).train()
    limits = (cfg.student.max_input_tokens, cfg.student.max_target_tokens)
    cut = long_prompts(tokenizer, splits["train"] + splits["validation"], limits[0])
    if cut:
        log(f"warning: {cut} of {len(splits['train']) + len(splits['validation'])} prompts are longer than student.max_input_tokens="
            f"{limits[0]} tokens and lose their middle (their end, with any choices, is kept); raise student.max_input_tokens")
    examples = build_examples(splits["train"], selections["train"], tokenizer, *limits)
    heldout = build_examples(splits["validation"], selections["validation"], tokenizer, *limits)
    eos = tokenizer.eos_token_id
    heldout_pos = [judge_input(ex.explain_ids, r, eos) for ex in heldout for r in ex.positives]
    heldout_neg = [judge_input(ex.explain_ids, r, eos) for ex in heldout for r in ex.llm_negatives]

    judge = None
    judge_pretrain_losses: list[float] = []
    if cfg.method.name == "qcrd" and cfg.judge.enabled:
        judge = QualityJudge(judge_config(student), cfg.judge.num_layers).to(device)
        use_fused_gelu(judge)
        if state is None:
            with timer("judge_pretraining"):
                judge_pretrain_losses = pretrain(judge, examples, cfg.judge, tokenizer, device, cfg.training.seed, progress)
        else:
            judge.load_state_dict(state["judge"])
        if judge_pretrain_losses:
            head, tail = judge_pretrain_losses[:10], judge_pretrain_losses[-10:]
            log(f"judge pre-training: L_D {sum(head) / len(head):.3f} -> {sum(tail) / len(tail):.3f} over {len(judge_pretrain_losses)} steps")

    method = build_method(cfg, student, tokenizer, device, judge=judge)
    if state is not None and state.get("launch", "") != parallel.launch_kind:
        raise UserInputError(f"{restore_from} was written by a run launched {state.get('launch') or 'without FSDP or DeepSpeed'}; "
                             "resume it under the same accelerate profile")
    # Under the FSDP profile this shards the student and the judge in place (docs/scaling.md).
    training_step = parallel.prepare(TrainingStep(method))
    # Two AdamWs: the student's, with the learning-rate schedule, and the judge's at a constant
    # rate. Separate, so that under DeepSpeed the engine owns the student's alone while the judge
    # steps only when it has gradients (its online-update steps), as in one process.
    # Fused AdamW (one kernel for all tensors, CPU and CUDA): 0.6 ms vs 3.5 ms a step on the tiny student.
    adamw = dict(weight_decay=cfg.training.weight_decay, fused=True)
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.training.learning_rate, **adamw)
    judge_params = [p for module in method.extra_modules() for p in module.parameters()]
    judge_optimizer = torch.optim.AdamW(judge_params, lr=cfg.judge.learning_rate, **adamw) if judge_params else None
    total_steps = cfg.training.rounds * cfg.training.steps_per_round
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_linear(cfg.training.warmup_steps, total_steps))
    # Under the DeepSpeed profile: the ZeRO engine that reduces, clips and applies the student's gradients.
    engine = parallel.deepspeed_engine(training_step, optimizer, cfg.training.max_grad_norm)
    snapshots = SnapshotRing(cfg.negatives.j_back)
    step, iteration = 0, 0
    if state is not None:
        parallel.load_optimizer_state(training_step, optimizer, state["optimizer"], restore_from)
        if judge_optimizer is not None:
            parallel.load_optimizer_state(training_step, judge_optimizer, state["judge_optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        method.load_state_dict(state["method"])
        snapshots.snapshots.extend(state["snapshots"])
        snapshots.initial = state["initial_snapshot"]
        for ex in examples:
            ex.student_negatives = state["student_negatives"].get(ex.id, [])
        step, iteration = state["step"], state["iteration"]
    if cfg.training.compile:
        compile_blocks(student)
        if judge is not None:
            compile_blocks(judge)
    # Every step's batch, drawn up front: negatives are sampled for the questions coming next, and a
    # resumed run continues the same sequence of batches.
    schedule = list(itertools.islice(batches(examples, cfg.training.batch_size, cfg.training.seed), total_steps))
    eval_tasks = cfg.evaluation.tasks or evaluation.default_tasks(cfg.task.name)
    label_task = next((t for t in eval_tasks if not t.endswith(("_explain", "_cot"))), eval_tasks[0])
    explain_task = next((t for t in eval_tasks if t.endswith("_explain")), "")

    def build_evaluation():
        manager = evaluation.task_manager(evaluation.task_metadata(cfg.task))
        return manager, evaluation.build_tasks(eval_tasks, manager), test_references(task, teacher, cfg)

    manager, prebuilt_tasks, references = parallel.main_only(build_evaluation) or (None, None, None)
    setup_times = timer.pop()

    # ---- train, round by round ----------------------------------------------------------------
    first_round = len(records) + 1
    for round_index in range(first_round, cfg.training.rounds + 1):
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}  # steps that logged each component (l_d: only the judge's update steps)
        round_stats: dict = {}
        tokens = 0
        loss_curve: list[float] = []
        checkpoint = run_dir / f"round_{round_index}"
        trained_here = not (evaluate_pending and round_index == first_round)
        if trained_here:
            seed_phase(cfg.training.seed, round_index, "training")
            bar = tqdm(range(cfg.training.steps_per_round), desc=f"round {round_index}/{cfg.training.rounds} training", disable=not progress)
            for _ in bar:
                inject_nan = faults.point("training_step", step + 1)
                if step % cfg.training.iteration_steps == 0:
                    iteration += 1
                    full_student, _ = parallel.full_modules(training_step)
                    snapshots.take(full_student)
                    method.start_iteration(iteration)
                    if judge_optimizer is not None and cfg.judge.lr_follows_alpha3:
                        follow_alpha3(judge_optimizer, cfg.judge.learning_rate, method.alpha3, cfg.method.alpha3)
                    if method.uses_student_negatives and (iteration - 1) % cfg.negatives.refresh_every == 0:
                        with timer("negative_sampling"):
                            refresh_negatives(cfg, full_student, negative_generator(snapshots, cfg.negatives), examples,
                                              schedule[step : step + cfg.negatives.refresh_every * cfg.training.iteration_steps],
                                              cfg.training.seed + iteration, device, progress)
                with timer("training"):
                    batch = schedule[step]
                    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                        total, components = (engine or training_step)(parallel.shard(batch))
                    total = total * float("nan") if inject_nan else total
                    loss_value = parallel.mean(float(total.detach()))
                    if not math.isfinite(loss_value):
                        kept = f"round_{round_index - 1}/" if round_index > 1 else "no checkpoint yet (none was written)"
                        raise RunAborted(f"loss is {loss_value} at step {step + 1} (round {round_index}); stopped before applying it. "
                                         f"The newest good checkpoint is {kept}. Lower training.learning_rate or "
                                         f"check the teacher pool, then resume with `qcrd-bench run --resume {run_dir}`")
                    if judge_optimizer is not None:
                        judge_optimizer.zero_grad(set_to_none=True)
                    if engine is None:
                        optimizer.zero_grad(set_to_none=True)
                        total.backward()
                        parallel.average_gradients([*student.parameters(), *judge_params])  # one all-reduce for both
                        if cfg.training.max_grad_norm:
                            torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.training.max_grad_norm)
                        optimizer.step()
                    else:  # DeepSpeed: backward reduce-scatters the student's gradients; step clips, applies and clears them
                        parallel.check_same_passes()
                        engine.backward(total)
                        engine.step()
                        parallel.average_gradients(judge_params)  # the judge is not in the engine
                    if judge_optimizer is not None:
                        judge_optimizer.step()
                    scheduler.step()
                step += 1
                tokens += sum(len(ex.predict_ids) + len(ex.explain_ids) for ex in batch)
                loss_curve.append(round(loss_value, 6))
                for key, value in components.items():
                    sums[key] = sums.get(key, 0.0) + value
                    counts[key] = counts.get(key, 0) + 1
                bar.set_postfix(loss=f"{loss_value:.3f}")

        # The weights lm-eval and the checkpoint read: the training modules themselves, or under
        # FSDP a plain copy with the gathered weights (every rank takes part in the gather).
        full_student, full_judge = parallel.full_modules(training_step)
        if trained_here:
            round_stats = method.pop_round_statistics()
            with timer("checkpoint"):
                optimizer_state = parallel.optimizer_state(training_step, optimizer, run_dir)
                judge_optimizer_state = None if judge_optimizer is None else parallel.optimizer_state(training_step, judge_optimizer)
                parallel.main_only(lambda: save_round(run_dir, round_index, full_student, tokenizer, {
                    "round": round_index, "step": step, "iteration": iteration, "launch": parallel.launch_kind,
                    "optimizer": optimizer_state, "judge_optimizer": judge_optimizer_state, "scheduler": scheduler.state_dict(),
                    "judge": full_judge.state_dict() if full_judge is not None else None,
                    "method": method.state_dict(),
                    "snapshots": list(snapshots.snapshots), "initial_snapshot": snapshots.initial,
                    "student_negatives": {ex.id: ex.student_negatives for ex in examples},
                    "loss_sums": sums, "loss_counts": counts, "round_stats": round_stats, "tokens": tokens, "loss_curve": loss_curve,
                }, move_in={DEEPSPEED_DIR: run_dir / DEEPSPEED_STAGING} if engine is not None else None))
        else:
            # Training of this round finished before the kill: only its evaluation is missing.
            sums, counts, tokens, loss_curve = state["loss_sums"], state["loss_counts"], state["tokens"], state["loss_curve"]
            round_stats = state["round_stats"]

        def evaluate_and_record() -> None:
            seed_phase(cfg.training.seed, round_index, "evaluation")
            record = evaluate_round(cfg, round_index, full_student, tokenizer, full_judge, prebuilt_tasks, manager, references,
                                    label_task, explain_task, heldout_pos, heldout_neg, device, timer)
            faults.point("evaluation", round_index)
            round_times = timer.pop()
            record.update({
                "step": step,
                "iteration": iteration,
                "method": cfg.method.name,
                "answer_from": method.answer_from,
                "loss": {k: v / counts[k] for k, v in sums.items()},
                "negatives": round_stats or None,
                "loss_curve": loss_curve,
                "method_state": method.log_state(),
                "pool": pool_stats,
                "time_s": round_times,
                "setup_time_s": setup_times,
                "train_tokens_per_s": tokens / max(1e-9, round_times.get("training", 0.0)),
                "world_size": parallel.world_size,
                "checkpoint": str(checkpoint),
            })
            record["headline_acc"] = headline_accuracy(record["eval"], label_task, explain_task, method.answer_from)
            records.append(record)
            write_jsonl(metrics_path, records)
            faults.point("metrics_written", round_index)
            # The previous round's training state is no longer the newest: only its weights stay
            # (a kill right here leaves it; the next --resume removes it: drop_stale_states).
            (run_dir / f"round_{round_index - 1}" / STATE_FILE).unlink(missing_ok=True)
            log(round_summary(record))
            warning = inactive_negatives_warning(cfg, record)
            if warning:
                log(warning)

        parallel.main_only(evaluate_and_record)  # rank 0 evaluates and writes; the others wait for it
    log(summary_table(records))
    return records


def refresh_negatives(cfg: RunConfig, student, generator: dict | None, examples: list[TrainExample],
                      coming: list[list[TrainExample]], seed: int, device, progress: bool) -> None:
    """New student negatives for the questions of the ``coming`` batches, sampled by ``generator``
    (weights; None = no student negatives yet); every other question's are dropped."""
    for ex in examples:
        ex.student_negatives = []
    if generator is not None:
        neg = cfg.negatives
        sample_negatives(student, generator, upcoming_questions(coming), neg.per_question, neg.temperature,
                         neg.max_new_tokens, neg.batch_size, seed, device, progress)


def evaluate_round(cfg: RunConfig, round_index: int, student, tokenizer, judge, tasks: list, manager, references: dict,
                   label_task: str, explain_task: str, heldout_pos: list, heldout_neg: list, device, timer: PhaseTimer) -> dict:
    """lm-eval scores, judge scores and rationale quality of the student after ``round_index``;
    writes ``round_<k>/lm_eval_results.json`` and ``round_<k>/rationales.jsonl``."""
    checkpoint = Path(cfg.output_dir) / cfg.name / f"round_{round_index}"
    with timer("evaluation"):
        results = evaluation.evaluate(student, tokenizer, tasks, manager, cfg.evaluation.batch_size, cfg.evaluation.limit)
    samples = results.pop("samples", {})
    atomic_write_json(checkpoint / "lm_eval_results.json", evaluation.to_builtin(results))
    scores = evaluation.task_scores(results)
    explain_samples = samples.get(explain_task, [])
    write_jsonl(checkpoint / "rationales.jsonl", [
        {"id": s["doc"]["id"], "question": s["doc"]["question"], "answer": s["doc"]["answer"],
         "label_generation": s["resps"][0][0], "rationale": s["resps"][1][0]}
        for s in explain_samples
    ])

    judge_metrics = {}
    if judge is not None:
        with timer("judge_scoring"):
            eos, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
            student_rationales = [
                judge_input(prompt_ids(tokenizer, [explain_prompt(s["doc"]["question"])], cfg.student.max_input_tokens)[0],
                            target_ids(tokenizer, [s["resps"][1][0]], cfg.student.max_target_tokens)[0], eos)
                for s in explain_samples
            ]
            judge_metrics = {
                "judge_score_student": mean_scores(judge, student_rationales, pad_id, device) if student_rationales else None,
                "judge_auc_heldout": roc_auc(judge, heldout_pos, heldout_neg, pad_id, device),
            }

    quality = {}
    if explain_samples and (cfg.evaluation.overlap or cfg.evaluation.faithfulness):
        with timer("rationale_quality"):
            quality = rationale_quality(student, tokenizer, explain_samples, references, cfg, device)
    return {
        "format": METRICS_FORMAT,
        "round": round_index,
        "task": cfg.task.name,
        "label_task": label_task,
        "explain_task": explain_task,
        "eval": scores,
        "rationale_quality": quality,
        **judge_metrics,
    }


def test_references(task: TaskData, teacher, cfg: RunConfig) -> dict[str, list[str]]:
    """Reference rationales per test question: the gold rationale, plus the teacher's positives
    when they come cheap (the simulated teacher, or a source that ships test pools)."""
    refs = {q.id: [q.gold_rationale] if q.gold_rationale else [] for q in task.questions.get("test", [])}
    pool = []
    if cfg.evaluation.overlap and cfg.teacher.kind == "simulated":
        pool = teacher.sample(task.questions["test"], cfg.teacher.samples, cfg.teacher.temperature)
    elif cfg.evaluation.overlap and "test" in task.pools:
        pool = task.pools["test"]
    for sel in select_pool(pool, cfg.self_consistency):
        refs.setdefault(sel.id, []).extend(p for p in sel.positives if p not in refs[sel.id])
    return refs


def rationale_quality(student, tokenizer, explain_samples: list[dict], references: dict[str, list[str]], cfg: RunConfig, device) -> dict:
    """Overlap, diversity and faithfulness of the student's test rationales (rationale_quality.py)."""
    docs = [s["doc"] for s in explain_samples]
    rationales = [s["resps"][1][0] for s in explain_samples]
    out: dict[str, float] = {}
    if cfg.evaluation.overlap:
        out.update(overlap_metrics(rationales, [references.get(d["id"], []) for d in docs]))
        out["distinct_1"], out["distinct_2"] = distinct_n(rationales, 1), distinct_n(rationales, 2)
    if cfg.evaluation.faithfulness:
        n = cfg.evaluation.faithfulness_items
        out.update(faithfulness(student, tokenizer, [explain_prompt(d["question"]) for d in docs[:n]], rationales[:n],
                                docs[0].get("answer_type", "number"), [d.get("choices") for d in docs[:n]], device,
                                cfg.negatives.max_new_tokens))
    return out


def headline_accuracy(scores: dict, label_task: str, explain_task: str, answer_from: str) -> float | None:
    """The method's accuracy: its label prompt's, or (single_task) the answer its rationale states."""
    if answer_from == "rationale":
        return scores.get(explain_task, {}).get("rationale_acc")
    return scores.get(label_task, {}).get("acc")


def inactive_negatives_warning(cfg: RunConfig, record: dict) -> str | None:
    """A warning line when the negative term acted for fewer than 1% of the round's questions."""
    share = (record.get("negatives") or {}).get("neg_active_share")
    if share is None or share >= 0.01 or not cfg.negatives.enabled:
        return None
    return (f"warning: round {record['round']}: the negative term (Eq. 7) was non-zero for {100 * share:.2f}% of questions: "
            f"their negatives sit beyond delta = {cfg.method.delta} or they have none "
            "(the round's negatives.neg_loss_quantiles in metrics.jsonl show which)")


def round_summary(record: dict) -> str:
    """One line per finished round."""
    label = record["eval"].get(record["label_task"], {}).get("acc")
    rat = record["eval"].get(record["explain_task"], {})
    parts = [f"round {record['round']}: acc {label:.3f}" if label is not None else f"round {record['round']}:"]
    for key in ("rationale_acc", "step_validity", "consistency"):
        if key in rat:
            parts.append(f"{key} {rat[key]:.3f}")
    if record.get("judge_auc_heldout") is not None:
        parts.append(f"judge AUC {record['judge_auc_heldout']:.3f}")
    if (record.get("negatives") or {}).get("neg_active_share") is not None:
        parts.append(f"negatives active {record['negatives']['neg_active_share']:.3f}")
    return "  ".join(parts)


def summary_table(records: list[dict]) -> str:
    """The end-of-run table: one row per round."""
    header = f"{'round':>5} {'acc':>6} {'rat_acc':>8} {'step_ok':>8} {'consist':>8} {'words':>6} {'judge_s':>8} {'judge_auc':>9} {'train_s':>8} {'eval_s':>7}"
    lines = [header, "-" * len(header)]
    for r in records:
        label = r["eval"].get(r["label_task"], {})
        rat = r["eval"].get(r["explain_task"], {})
        fmt = lambda v, w: f"{v:>{w}.3f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"  # noqa: E731
        lines.append(
            f"{r['round']:>5} {fmt(label.get('acc'), 6)} {fmt(rat.get('rationale_acc'), 8)} {fmt(rat.get('step_validity'), 8)} "
            f"{fmt(rat.get('consistency'), 8)} {fmt(rat.get('rationale_words'), 6)} {fmt(r.get('judge_score_student'), 8)} "
            f"{fmt(r.get('judge_auc_heldout'), 9)} {fmt(r['time_s'].get('training'), 8)} {fmt(r['time_s'].get('evaluation'), 7)}"
        )
    return "\n".join(lines)
