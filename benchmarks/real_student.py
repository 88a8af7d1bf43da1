"""The real-student benchmark: SmolLM2-135M-Instruct distilled on SVAMP from gpt-3.5 chains.

Teacher rationales: MCC-KD's release (10 gpt-3.5-turbo chains per SVAMP question, in
``$QCRD_DATA_DIR/mcc_kd``). It is the only pool here with several samples per question, which
QCRD needs: positives by self-consistency (the majority answer's chains) and LLM negatives (the
minority's). DSS trains on the first majority chain, as its single rationale; finetune on the gold
labels alone. Every row is scored on MCC-KD's SVAMP test set through lm-eval.

Rows:
- ``base few-shot CoT``: the base model, ``qcrd_svamp_cot`` (3-shot chain of thought), plain ``lm_eval``;
- ``base, student prompt``: the base model on the student's own prompts (``qcrd_svamp``: label,
  ``qcrd_svamp_explain``: rationale), plain ``lm_eval``;
- ``finetune``, ``dss``, ``qcrd`` after distillation (LoRA), one ``qcrd-bench run`` per seed,
  scored by the in-loop lm-eval evaluation (the same numbers as plain ``lm_eval`` on the round
  folder: tests/test_real_student.py checks it).

Metrics: label accuracy (``qcrd_svamp`` acc), rationale accuracy (the answer stated at the end of
the generated rationale, ``qcrd_svamp_explain`` acc), wall time, training tokens/s; QCRD - DSS
paired over seeds with a 95% t interval. The CPU default is sized to the 2 cores (about 2 hours
for the whole table); ``--device cuda --full`` runs the same script on a GPU at full size.

Usage:
  python benchmarks/real_student.py                       # CPU: subset, LoRA, short sequences, 3 seeds
  python benchmarks/real_student.py --device cuda --full  # GPU: every training question, 5 seeds
Resumable: finished runs are kept under --work and reused. Writes benchmarks/results/real_student[_<tag>]/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qcrd_plugin.significance import paired_test  # noqa: E402

DATA = os.environ.get("QCRD_DATA_DIR", str(REPO.parent / "shared" / "data"))
BIN = Path(sys.executable).parent


def sizes(args) -> dict:
    """The budget: a training subset, LoRA and short sequences on the CPU; everything on a GPU."""
    if args.full:
        return {
            "max_train": 0,
            "steps": 600,
            "batch": 16,
            "rounds": 3,
            "lora": 0,
            "seeds": [0, 1, 2, 3, 4],
            "limit": 0,
        }
    if args.smoke:  # the whole pipeline in a few minutes: nothing to read in its numbers
        return {"max_train": 8, "steps": 2, "batch": 4, "rounds": 1, "lora": 16, "seeds": [0], "limit": 4}
    # Sized to the 2 cores (about 80 minutes for the table, measured): every training question is seen
    # once; a QCRD step costs ~3.7x a DSS step (benchmarks/results/real_student_speed.json).
    return {"max_train": 128, "steps": 32, "batch": 4, "rounds": 1, "lora": 16, "seeds": [0, 1, 2], "limit": 0}


def run_overrides(args, budget: dict, method: str, seed: int, base: Path) -> list[str]:
    steps_per_round = max(1, budget["steps"] // budget["rounds"])
    out = [
        "task.name=svamp",
        "task.source=mcc_kd",
        f"task.data_dir={DATA}",
        f"task.max_train={budget['max_train']}",
        "teacher.kind=pool",
        "teacher.samples=10",
        f"student.pretrained={base}",
        f"student.lora_rank={budget['lora']}",
        f"student.max_input_tokens={args.max_input_tokens}",
        f"student.max_target_tokens={args.max_target_tokens}",
        f"method.name={method}",
        f"training.rounds={budget['rounds']}",
        f"training.steps_per_round={steps_per_round}",
        f"training.iteration_steps={args.iteration_steps}",
        f"training.batch_size={budget['batch']}",
        f"training.learning_rate={args.lr}",
        f"training.warmup_steps={max(1, budget['steps'] // 10)}",
        f"training.seed={seed}",
        f"training.device={args.device}",
        f"negatives.j_back={args.j_back}",
        f"negatives.max_new_tokens={args.max_target_tokens}",
        "negatives.batch_size=32",
        f"judge.pretrained={args.judge}",
        f"judge.pretrain_steps={args.judge_steps}",
        "judge.pretrain_batch_size=4",
        "evaluation.tasks=qcrd_svamp,qcrd_svamp_explain",
        f"evaluation.limit={budget['limit']}",
        f"evaluation.batch_size={args.eval_batch}",
        "evaluation.faithfulness=false",
        "evaluation.overlap=false",
    ]
    return out


def distil(args, budget: dict, method: str, seed: int, base: Path) -> dict:
    """One ``qcrd-bench run`` (reused when finished); its last round's figures."""
    name = f"{method}_seed{seed}"
    run_dir = args.work / "runs" / name
    metrics = run_dir / "metrics.jsonl"
    done = metrics.is_file() and len(metrics.read_text().splitlines()) >= budget["rounds"]
    if not done:
        cmd = [str(BIN / "qcrd-bench"), "run", "--output-dir", str(args.work / "runs"), "--name", name, "--quiet"]
        cmd += [x for o in run_overrides(args, budget, method, seed, base) for x in ("-o", o)]
        cmd += ["--resume"] if run_dir.exists() else []
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO)
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    last = records[-1]
    return {
        "method": method,
        "seed": seed,
        "acc": last["eval"]["qcrd_svamp"]["acc"],
        "rationale_acc": last["eval"]["qcrd_svamp_explain"]["acc"],
        # training, checkpoints, evaluation and setup (judge pre-training, negatives): the run's own clocks
        "wall_s": sum(sum(r["time_s"].values()) + sum(r.get("setup_time_s", {}).values()) for r in records),
        "train_tokens_per_s": mean([r["train_tokens_per_s"] for r in records if r.get("train_tokens_per_s")]),
        "rounds": [{k: r["eval"][k]["acc"] for k in ("qcrd_svamp", "qcrd_svamp_explain")} for r in records],
    }


def lm_eval_base(args, base: Path, tasks: str, tag: str, limit: int = 0) -> dict:
    """Plain ``lm_eval`` on the base model (reused when done): {task: acc}, and the wall time."""
    out = args.work / "base" / tag
    found = sorted(out.rglob("results_*.json"))
    start = time.perf_counter()
    if not found:
        cmd = [str(BIN / "lm_eval"), "--model", "hf", "--model_args", f"pretrained={base},backend=causal"]
        cmd += ["--tasks", tasks, "--include_path", str(REPO / "tasks"), "--device", args.device]
        cmd += ["--batch_size", str(args.eval_batch), "--output_path", str(out)]
        cmd += ["--limit", str(limit)] if limit else []
        cmd += ["--metadata", json.dumps({"source": {"svamp": "mcc_kd"}})]
        subprocess.run(cmd, check=True, env={**os.environ, "QCRD_DATA_DIR": DATA})
        found = sorted(out.rglob("results_*.json"))
    results = json.loads(found[-1].read_text())["results"]
    return {task: results[task]["acc,none"] for task in tasks.split(",")} | {"wall_s": time.perf_counter() - start}


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def ci(values: list[float]) -> float:
    """Half-width of the 95% t interval of the mean (nan for one value)."""
    return paired_test(values)["ci95"] if len(values) > 1 else math.nan


def report(args, budget, base_rows, runs) -> str:
    lines = [
        f"# SmolLM2-135M-Instruct on SVAMP (MCC-KD test, {args.device})",
        "",
        f"Budget: {budget['max_train'] or 'all'} training questions, "
        f"{budget['steps']} steps x {budget['batch']} questions, "
        f"LoRA rank {budget['lora'] or 'off (full fine-tuning)'}, targets <= {args.max_target_tokens} tokens, "
        f"judge `{args.judge or 'from scratch'}`. Seeds: {budget['seeds']}.",
        "",
        "| row | label acc | rationale acc | wall s | train tokens/s | n |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in base_rows.items():
        label = row.get("qcrd_svamp", row.get("qcrd_svamp_cot"))
        rationale = row.get("qcrd_svamp_explain", row.get("qcrd_svamp_cot"))
        lines.append(f"| {name} | {label:.3f} | {rationale:.3f} | {row['wall_s']:.0f} | - | 1 |")
    for method in args.methods:
        rows = [r for r in runs if r["method"] == method]
        acc, rat = [r["acc"] for r in rows], [r["rationale_acc"] for r in rows]
        lines.append(
            f"| {method} | {mean(acc):.3f} ± {ci(acc):.3f} | {mean(rat):.3f} ± {ci(rat):.3f} | "
            f"{mean([r['wall_s'] for r in rows]):.0f} | "
            f"{mean([r['train_tokens_per_s'] for r in rows]):.0f} | {len(rows)} |"
        )
    by = {(r["method"], r["seed"]): r for r in runs}
    for metric in ("acc", "rationale_acc"):
        pairs = [
            by[("qcrd", s)][metric] - by[("dss", s)][metric]
            for s in budget["seeds"]
            if ("qcrd", s) in by and ("dss", s) in by
        ]
        test = paired_test(pairs)
        lines.append("")
        lines.append(
            f"QCRD - DSS ({metric}): {test['diff']:+.3f} ± {test['ci95']:.3f} (paired 95% t interval, "
            f"{test['n']} seeds, p = {test['p']:.3f})"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--full", action="store_true", help="every training question, full fine-tuning, 5 seeds")
    parser.add_argument("--smoke", action="store_true", help="2 steps, 4 test questions, one seed (a pipeline check)")
    parser.add_argument("--methods", nargs="+", default=["finetune", "dss", "qcrd"])
    parser.add_argument("--seeds", nargs="+", type=int, help="override the budget's seeds")
    parser.add_argument("--finetune-seeds", type=int, default=1, help="seeds of the finetune row (a reference row)")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--judge", default="minilm-l6", help="judge.pretrained of the QCRD runs ('' = from scratch)")
    parser.add_argument("--judge-steps", type=int, default=16)
    parser.add_argument("--j-back", type=int, default=1)
    parser.add_argument("--iteration-steps", type=int, default=8)
    parser.add_argument("--max-input-tokens", type=int, default=160)
    parser.add_argument("--max-target-tokens", type=int, default=96)
    parser.add_argument("--eval-batch", type=int, default=32)
    parser.add_argument("--skip-base", action="store_true", help="leave out the base-model rows")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "real_student")
    parser.add_argument("--tag", default="", help="results folder suffix")
    args = parser.parse_args()
    budget = sizes(args)
    if args.seeds:
        budget["seeds"] = args.seeds
    from qcrd_plugin.pretrained import dequantised_copy

    args.work.mkdir(parents=True, exist_ok=True)
    base = dequantised_copy("smollm2-135m", args.work / "smollm2_base", "student.pretrained")
    base_rows = {}
    if not args.skip_base:
        base_rows["base few-shot CoT (qcrd_svamp_cot)"] = lm_eval_base(
            args, base, "qcrd_svamp_cot", "cot", budget["limit"]
        )
        base_rows["base, student prompt"] = lm_eval_base(
            args, base, "qcrd_svamp,qcrd_svamp_explain", "student", budget["limit"]
        )
        print(base_rows, flush=True)
    runs = []
    for method in args.methods:
        seeds = budget["seeds"][: args.finetune_seeds] if method == "finetune" else budget["seeds"]
        for seed in seeds:
            runs.append(distil(args, budget, method, seed, base))
            print(runs[-1], flush=True)
    text = report(args, budget, base_rows, runs)
    results = REPO / "benchmarks" / "results" / ("real_student" + (f"_{args.tag}" if args.tag else ""))
    results.mkdir(parents=True, exist_ok=True)
    (results / "report.md").write_text(text)
    # Paths relative to the checkout: a results file names no machine's folders.
    shown = {k: os.path.relpath(v, REPO) if isinstance(v, Path) else str(v) for k, v in vars(args).items()}
    payload = {"args": shown, "budget": budget, "base": base_rows, "runs": runs}
    payload["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    (results / "report.json").write_text(json.dumps(payload, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
