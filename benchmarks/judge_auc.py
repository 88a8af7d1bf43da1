"""Held-out ROC-AUC of the quality judge: from scratch (a T5 encoder of the student's width on the
student's tokens) against a pretrained encoder (``judge.pretrained=minilm-l6``), on real teacher text.

Two pools, one held-out split of questions each (never trained on):
- ``svamp``: MCC-KD's SVAMP pool (gpt-3.5-turbo, 10 chains per question); the judge separates
  chains whose answer is gold from chains whose answer is not (``self_consistency.gold_filter``:
  correct vs incorrect, not majority vs minority). The student tokenizer is SmolLM2's, as for a
  pretrained student (the from-scratch judge then has SmolLM2's 49,152-token vocabulary).
- ``synth``: the synthetic task's simulated teacher at T = 0.7 (positives: majority chains,
  negatives: minority chains), with the tiny preset's tokenizer, as in the default run.

Both judges are pre-trained exactly as in a run (``discriminator.pretrain``: balanced sets, word
augmentation), for the same steps and questions per step; the AUC before pre-training is printed
too (the untrained head over a pretrained encoder is not at chance). Several seeds per cell.

Usage: python benchmarks/judge_auc.py [--pools svamp synth] [--seeds 0 1 2] [--steps 100]
Writes benchmarks/results/judge_auc.json. Run it alone (two cores are easily saturated).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qcrd_plugin.config import JudgeConfig, SelfConsistencyConfig, StudentConfig, TaskConfig, TeacherConfig  # noqa: E402
from qcrd_plugin.data import build_examples  # noqa: E402
from qcrd_plugin.discriminator import build_judge_model, judge_input, pretrain, roc_auc  # noqa: E402
from qcrd_plugin.rationales import select_pool  # noqa: E402
from qcrd_plugin.sources import heldout_split  # noqa: E402
from qcrd_plugin.students import tiny_t5_config, train_tokenizer  # noqa: E402
from qcrd_plugin.tasks import load_task  # noqa: E402
from qcrd_plugin.teachers import PoolTeacher, SimulatedTeacher  # noqa: E402


@functools.lru_cache(maxsize=None)  # one read per pool, shared by its judges and seeds
def svamp_pool(max_train: int, heldout: int):
    """(train questions, held-out questions, pool entries by id, student tokenizer, student config)."""
    from qcrd_plugin.pretrained import load_config, resolve

    data = load_task(TaskConfig(name="svamp", source="mcc_kd", data_dir=os.environ.get("QCRD_DATA_DIR", "")))
    questions = data.questions["train"]
    train, held = heldout_split(questions, heldout, seed=0)
    train = train[:max_train]
    teacher = PoolTeacher(data.pools["train"])
    pool = teacher.sample(train + held, 10, 0.7)
    ref = resolve("smollm2-135m", "student.pretrained")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ref.name, gguf_file=ref.gguf_file, trust_remote_code=False)
    return train, held, pool, tokenizer, load_config(ref, "student.pretrained")


@functools.lru_cache(maxsize=None)
def synth_pool(max_train: int, heldout: int):
    """The default run's synthetic task, simulated teacher and tiny-preset tokenizer."""
    task = TaskConfig()
    data = load_task(task)
    train, held = data.questions["train"][:max_train], data.questions["validation"][:heldout]
    pool = SimulatedTeacher(TeacherConfig(), data.problems).sample(train + held, 5, 0.7)
    corpus = [q.question for q in train] + [s.rationale for e in pool for s in e.samples]
    tokenizer = train_tokenizer(corpus, StudentConfig().vocab_size)
    return train, held, pool, tokenizer, tiny_t5_config(StudentConfig(), tokenizer)


def heldout_inputs(examples, eos_id):
    pos = [judge_input(ex.explain_ids, r, eos_id) for ex in examples for r in ex.positives]
    neg = [judge_input(ex.explain_ids, r, eos_id) for ex in examples for r in ex.llm_negatives]
    return pos, neg


def measure(name: str, kind: str, seed: int, args) -> dict:
    train, held, pool, tokenizer, student_config = POOLS[name](args.max_train, args.heldout)
    sc = SelfConsistencyConfig(gold_filter=name == "svamp")
    selections = select_pool(pool, sc)
    limits = (448, args.max_target_tokens)
    train_ex = build_examples(train, [s for s in selections if s.id in {q.id for q in train}], tokenizer, *limits)
    held_ex = build_examples(held, [s for s in selections if s.id in {q.id for q in held}], tokenizer, *limits)
    cfg = JudgeConfig(
        pretrained="minilm-l6" if kind == "pretrained" else "",
        pretrain_steps=args.steps,
        pretrain_batch_size=args.batch,
    )
    torch.manual_seed(seed)
    judge = build_judge_model(cfg, SimpleNamespace(config=student_config), tokenizer)
    pos, neg = heldout_inputs(held_ex, tokenizer.eos_token_id)
    before = roc_auc(judge, pos, neg, tokenizer.pad_token_id, "cpu")
    start = time.perf_counter()
    losses = pretrain(judge, train_ex, cfg, tokenizer, "cpu", seed, progress=False)
    seconds = time.perf_counter() - start
    after = roc_auc(judge, pos, neg, tokenizer.pad_token_id, "cpu")
    params = sum(p.numel() for p in judge.parameters())
    print(
        f"{name:6} {kind:10} seed {seed}: AUC {before:.3f} -> {after:.3f}  ({len(pos)} pos / {len(neg)} neg held out, "
        f"{params / 1e6:.1f}M params, {seconds:.0f} s, L_D {losses[0]:.3f} -> {losses[-1]:.3f})",
        flush=True,
    )
    return {
        "pool": name,
        "judge": kind,
        "seed": seed,
        "auc_before": before,
        "auc": after,
        "heldout_pos": len(pos),
        "heldout_neg": len(neg),
        "train_questions": len(train_ex),
        "params": params,
        "pretrain_s": seconds,
        "loss_first": losses[0],
        "loss_last": losses[-1],
    }


POOLS = {"svamp": svamp_pool, "synth": synth_pool}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pools", nargs="+", default=["svamp", "synth"], choices=sorted(POOLS))
    parser.add_argument("--judges", nargs="+", default=["scratch", "pretrained"], choices=["scratch", "pretrained"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100, help="pre-training steps (a run's default: 300)")
    parser.add_argument("--batch", type=int, default=8, help="questions per pre-training step")
    parser.add_argument("--max-train", type=int, default=400, help="training questions the judge learns from")
    parser.add_argument("--heldout", type=int, default=100, help="held-out questions it is scored on")
    parser.add_argument("--max-target-tokens", type=int, default=160)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "judge_auc.json"))
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    rows = [measure(p, j, s, args) for p in args.pools for j in args.judges for s in args.seeds]
    table = []
    for p in args.pools:
        for j in args.judges:
            aucs = [r["auc"] for r in rows if r["pool"] == p and r["judge"] == j]
            spread = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
            table.append({"pool": p, "judge": j, "auc_mean": statistics.mean(aucs), "auc_sd": spread, "n": len(aucs)})
            print(f"{p:6} {j:10} AUC {statistics.mean(aucs):.3f} +- {spread:.3f} (sd over {len(aucs)} seeds)")
    out = {
        "args": vars(args),
        "rows": rows,
        "table": table,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
    }
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
