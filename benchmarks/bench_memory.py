"""What gradient accumulation and LoRA save, measured on this machine's CPU.

Each configuration runs in a fresh process: build the default student and a batch of synthetic
questions with simulated-teacher rationales, then one warm-up step and three timed optimizer
steps of QCRD (the method with the most activations per question: K rationales each). It
reports the step's peak resident memory above the process's resident memory before the first
step (``ru_maxrss`` growth, in MiB: activations, gradients and optimizer state together), the
seconds per step, and the trainable parameters.

- ``training.grad_accum_steps`` k = 1, 2, 4 on one batch: activation memory falls with k, the
  time per step grows (k smaller forward/backward passes instead of one).
- ``student.lora_rank`` 0 against 8: AdamW keeps state for the adapters only.

Usage: python benchmarks/bench_memory.py [--batch 128]
Writes benchmarks/results/memory.json and prints one table. CPU figures; a GPU run is still to come.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CASES = [
    {"grad_accum_steps": 1, "lora_rank": 0},
    {"grad_accum_steps": 2, "lora_rank": 0},
    {"grad_accum_steps": 4, "lora_rank": 0},
    {"grad_accum_steps": 1, "lora_rank": 8},
]


def one_case(batch_size: int, grad_accum_steps: int, lora_rank: int) -> dict:
    """Runs in the child process: the measurement of one configuration."""
    import torch

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import synth_training_set

    from qcrd_plugin.config import RunConfig, SynthTaskConfig
    from qcrd_plugin.discriminator import QualityJudge
    from qcrd_plugin.distributed import Launcher, TrainingStep
    from qcrd_plugin.lora import add_lora
    from qcrd_plugin.methods import build_method
    from qcrd_plugin.students import judge_config
    from qcrd_plugin.training import accumulate_gradients

    torch.manual_seed(0)
    cfg = RunConfig()
    cfg.task = SynthTaskConfig(n_train=batch_size, n_valid=2, n_test=2)
    cfg.student.lora_rank = lora_rank
    model, tok, examples = synth_training_set(cfg, 1.2)
    judge = QualityJudge(judge_config(model), cfg.judge.num_layers)
    student = add_lora(model, cfg.student) if lora_rank else model
    method = build_method(cfg, student, tok, "cpu", judge=judge)
    launcher, step = Launcher(torch.device("cpu")), TrainingStep(method)
    trainable = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3, fused=True)
    judge_optimizer = torch.optim.AdamW(judge.parameters(), lr=1e-3, fused=True)
    launcher.attach(step, optimizer, judge_optimizer, 1.0)

    def one_step():
        method.new_step()
        launcher.zero_grad()
        accumulate_gradients(launcher, step, examples, grad_accum_steps, None)
        launcher.step()

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    one_step()  # warm-up: the optimizer state is allocated here
    start = time.perf_counter()
    for _ in range(3):
        one_step()
    seconds = (time.perf_counter() - start) / 3
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "grad_accum_steps": grad_accum_steps,
        "lora_rank": lora_rank,
        "batch_size": batch_size,
        "peak_growth_mib": round((peak - before) / 1024, 1),  # ru_maxrss is in KiB on Linux
        "s_per_step": round(seconds, 3),
        "trainable_parameters": sum(p.numel() for p in trainable),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="questions per optimizer step")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()
    if args.case:
        print(json.dumps(one_case(args.batch, **json.loads(args.case))))
        return
    rows = []
    for case in CASES:
        out = subprocess.run(
            [sys.executable, __file__, "--batch", str(args.batch), "--case", json.dumps(case)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()}}
    result["rows"] = rows
    target = REPO / "benchmarks" / "results" / "memory.json"
    target.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'k':>3} {'lora':>5} {'peak growth MiB':>16} {'s/step':>7} {'trainable':>10}")
    for r in rows:
        print(
            f"{r['grad_accum_steps']:>3} {r['lora_rank']:>5} {r['peak_growth_mib']:>16} "
            f"{r['s_per_step']:>7} {r['trainable_parameters']:>10,}"
        )
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
