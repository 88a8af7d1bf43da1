"""Throughput on the real student (issue 23, part of `make bench`): SmolLM2-135M-Instruct, full
fine-tuning, on SVAMP with MCC-KD's gpt-3.5 chains, on the CPU.

- (a) our DSS training loop / HF ``Trainer`` on the same batches (tokens/s, target >= 1.2). The
      Trainer's ``compute_loss`` is the same multi-task loss, ``alpha * L_label + (1 - alpha) *
      L_rationale``, as two causal-LM calls (prompt + target, prompt tokens masked), which is how
      DSS's reference code trains; same model, batches in the same order, fused AdamW, lr, clipping.
- (b) a QCRD step / a DSS step on the same batches (loss, backward, clip, AdamW), with the work
      beside it: target tokens the step scores (QCRD scores every positive and student negative of
      each question, DSS one rationale). QCRD's judge is ``minilm-l6`` (judge.pretrained), as in
      benchmarks/real_student.py; the student negatives are sampled once before timing (that cost,
      paid once per iteration, is reported on its own line).

After one untimed run of ours (the process's first run is slower), the sides run in turns (ours,
HF, ours, ...) and each HF run is compared with the mean of the runs of ours around it, so a slow
spell of the shared machine favours neither.

Usage: python benchmarks/bench_real_student_speed.py [--steps 4] [--repeats 2]
Writes benchmarks/results/real_student_speed.json and prints one table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qcrd_plugin.config import JudgeConfig, load_config  # noqa: E402
from qcrd_plugin.data import build_examples, pad  # noqa: E402
from qcrd_plugin.discriminator import build_judge_model  # noqa: E402
from qcrd_plugin.methods import build_method  # noqa: E402
from qcrd_plugin.negatives import sample_negatives  # noqa: E402
from qcrd_plugin.pretrained import dequantised_copy  # noqa: E402
from qcrd_plugin.rationales import select_pool  # noqa: E402
from qcrd_plugin.students import build_student  # noqa: E402
from qcrd_plugin.tasks import load_task  # noqa: E402

DATA = os.environ.get("QCRD_DATA_DIR", str(REPO.parent / "shared" / "data"))


def setup(args):
    """(cfg, SmolLM2 from its de-quantised folder, tokenizer, the timed plan of batches)."""
    base = dequantised_copy("smollm2-135m", args.work / "smollm2_base", "student.pretrained")
    overrides = [
        "task.name=svamp",
        "task.source=mcc_kd",
        f"task.data_dir={DATA}",
        "teacher.samples=10",
        f"student.pretrained={base}",
        "student.max_input_tokens=160",
        f"student.max_target_tokens={args.max_target_tokens}",
        f"training.batch_size={args.batch}",
        "method.name=dss",
    ]
    cfg = load_config(None, overrides)
    task = load_task(cfg.task)
    count = args.batch * (args.warmup + args.steps)
    questions = task.questions["train"][:count]
    wanted = {q.id for q in questions}
    pool = [entry for entry in task.pools["train"] if entry.id in wanted]
    torch.manual_seed(0)
    model, tok = build_student(cfg.student, [], str(base))
    examples = build_examples(questions, select_pool(pool, cfg.self_consistency), tok, 160, args.max_target_tokens)
    examples = [ex for ex in examples if ex.positives]
    plan = [examples[i : i + args.batch] for i in range(0, len(examples) - args.batch + 1, args.batch)]
    return cfg, model, tok, plan


def our_step_seconds(cfg, model, tok, plan, warmup: int, judge=None) -> float:
    """training._run's step body (loss, backward, clip, fused AdamW) over the plan; seconds of the timed steps."""
    student = copy.deepcopy(model).train()
    method = build_method(cfg, student, tok, "cpu", judge=judge)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.training.learning_rate, fused=True)
    for i, batch in enumerate(plan):
        if i == warmup:
            start = time.perf_counter()
        loss = method.loss(batch).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    return time.perf_counter() - start


def hf_trainer_seconds(cfg, model, tok, plan, warmup: int, output_dir: str) -> float:
    """HF ``Trainer`` over the same batches with the same multi-task loss; seconds of the timed steps."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    alpha, pad_id = cfg.method.alpha, tok.pad_token_id

    def joined(prompts, targets):
        ids, mask = pad([p + t for p, t in zip(prompts, targets)], pad_id)
        labels, _ = pad([[-100] * len(p) + t for p, t in zip(prompts, targets)], -100)
        return ids, mask, labels

    def collate(items):
        l_ids, l_mask, l_labels = joined([ex.predict_ids for ex in items], [ex.label_ids for ex in items])
        r_ids, r_mask, r_labels = joined([ex.explain_ids for ex in items], [ex.positives[0] for ex in items])
        return {"input_ids": l_ids, "attention_mask": l_mask, "labels": l_labels, "r_ids": r_ids, "r_mask": r_mask,
                "r_labels": r_labels}  # fmt: skip

    class MultiTaskTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            l_label = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                            labels=inputs["labels"]).loss  # fmt: skip
            l_rat = model(input_ids=inputs["r_ids"], attention_mask=inputs["r_mask"], labels=inputs["r_labels"]).loss
            return alpha * l_label + (1 - alpha) * l_rat

        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    class Clock(TrainerCallback):
        start = end = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                Clock.start = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            Clock.end = time.perf_counter()

    targs = TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=len(plan[0]), max_steps=len(plan),
        learning_rate=cfg.training.learning_rate, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0,
        optim="adamw_torch_fused", save_strategy="no", report_to=[], logging_strategy="no", use_cpu=True,
        dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = MultiTaskTrainer(
        model=copy.deepcopy(model).train(), args=targs, train_dataset=[ex for b in plan for ex in b],
        data_collator=collate, callbacks=[Clock()],
    )  # fmt: skip
    trainer.train()
    return Clock.end - Clock.start


def target_tokens(plan, warmup: int, method: str) -> int:
    """Target tokens a step scores, over the timed steps: label + one rationale (DSS), label + every
    positive and negative (QCRD)."""
    total = 0
    for batch in plan[warmup:]:
        for ex in batch:
            rationales = (
                [ex.positives[0]] if method == "dss" else ex.positives + ex.llm_negatives + ex.student_negatives
            )
            total += len(ex.label_ids) + sum(len(r) for r in rationales)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="HF runs (ours runs one more, around them)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-target-tokens", type=int, default=96)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "real_student")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    cfg, model, tok, plan = setup(args)
    tokens = sum(len(ex.predict_ids) + len(ex.label_ids) + len(ex.explain_ids) + len(ex.positives[0])
                 for b in plan[args.warmup:] for ex in b)  # fmt: skip

    # One untimed run of ours first: the process's first training run is slower on this machine
    # (allocator and thread-pool warm-up), which would bias the first ratio against whichever side runs first.
    our_step_seconds(cfg, model, tok, plan, args.warmup)
    ours_s, hf_s = [our_step_seconds(cfg, model, tok, plan, args.warmup)], []
    with tempfile.TemporaryDirectory() as output_dir:
        for _ in range(args.repeats):
            hf_s.append(hf_trainer_seconds(cfg, model, tok, plan, args.warmup, output_dir))
            ours_s.append(our_step_seconds(cfg, model, tok, plan, args.warmup))
    ratios = [h / ((before + after) / 2) for h, before, after in zip(hf_s, ours_s, ours_s[1:])]

    start = time.perf_counter()
    examples = [ex for b in plan for ex in b]
    sample_negatives(model, copy.deepcopy(model.state_dict()), examples, 1, 1.5, args.max_target_tokens, 32, 0, "cpu",
                     progress=False)  # fmt: skip
    negatives_s = time.perf_counter() - start
    qcrd_cfg = copy.deepcopy(cfg)
    qcrd_cfg.method.name = "qcrd"
    judge = build_judge_model(JudgeConfig(pretrained="minilm-l6"), model, tok)
    dss_s = statistics.median(ours_s)
    qcrd_s = our_step_seconds(qcrd_cfg, model, tok, plan, args.warmup, judge=judge)
    work = target_tokens(plan, args.warmup, "qcrd") / target_tokens(plan, args.warmup, "dss")

    result = {
        "ours_tokens_per_s": tokens / dss_s,
        "hf_tokens_per_s": tokens / statistics.median(hf_s),
        "ours_over_hf": statistics.median(ratios),
        "ratios": ratios,
        "dss_step_s": dss_s / args.steps,
        "qcrd_step_s": qcrd_s / args.steps,
        "qcrd_over_dss_time": qcrd_s / dss_s,
        "qcrd_over_dss_target_tokens": work,
        "negatives_s_per_question": negatives_s / len(examples),
        "settings": {k: os.path.relpath(v, REPO) if isinstance(v, Path) else str(v) for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
    }
    out = REPO / "benchmarks" / "results" / "real_student_speed.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"SmolLM2-135M, full fine-tuning, SVAMP/MCC-KD, batch {args.batch}, targets <= {args.max_target_tokens}:")
    print(f"{'(a) our DSS tokens/s / HF Trainer':<44} {result['ours_over_hf']:.2f}  "
          f"({result['ours_tokens_per_s']:.0f} vs {result['hf_tokens_per_s']:.0f} tokens/s)")  # fmt: skip
    print(f"{'(b) QCRD step / DSS step':<44} {result['qcrd_over_dss_time']:.2f}  "
          f"({result['qcrd_step_s']:.1f} vs {result['dss_step_s']:.1f} s; {work:.1f}x the target tokens)")  # fmt: skip
    print(f"{'student negatives, once per iteration':<44} {result['negatives_s_per_question']:.1f} s per question")


if __name__ == "__main__":
    main()
