"""GPU benchmark: DSS and QCRD training steps of a T5-base-sized student (issue 5, "speed and scale").

The student is a randomly initialised ``T5ForConditionalGeneration`` of T5-base's shape (d_model
768, d_ff 3072, 12 encoder + 12 decoder layers, 12 heads, d_kv 64, vocab 32128, ReLU FFN, tied
embeddings, dropout 0 like the repo's default; no hub download). Each step is the repo's own
``method.loss(batch)`` (``qcrd_plugin.methods``: DSS, QCRD with its judge of
``judge.num_layers`` encoder layers of the student's width), then backward, gradient clipping at
``training.max_grad_norm`` and an AdamW step - what ``qcrd_plugin.training`` does per step on one
device. The questions are synthetic TrainExamples of random token ids at realistic lengths:
prompts ~64 tokens, rationales ~96, labels ~4 (each +-12%, ending in EOS); per question
``--positives`` (4) teacher positives and ``--llm-negatives`` (1) teacher negatives (K = 5
teacher samples) plus ``--student-negatives`` (1) student negatives set directly, so nothing is
sampled. QCRD runs with the repo defaults: minmax reduction (a no-grad pass scores the
rationales to pick one per set, and only the picks are decoded again with a graph; see
methods/qcrd.py), judge scores on every step, online judge update every ``judge.online_every``
(4) steps.

Measures (after ``--warmup`` steps, ``torch.cuda.synchronize`` around the timed ``--steps``):

- s/step and questions/s (``--batch-size`` questions per step; the fair DSS vs QCRD throughput)
- tokens/s: the non-pad input tokens plus target tokens of every forward pass a step runs,
  student and judge, with or without gradient, divided by s/step. Counted exactly from the
  token lists each pass receives (one encoder pass over every question's predict and explain
  prompts; label pass: each label; rationale passes: each scored rationale, decoded against the
  step's one encoding (DSS decodes its label and rationale in one packed call); judge: prompt +
  rationale).
  QCRD does more forward work per question than DSS, so its tokens/s is not a speed-up.
- MFU (model FLOPs utilisation) = achieved model FLOP/s / the GPU's peak dense bf16 FLOP/s.
  Model FLOPs use the usual approximation 6 x params x tokens for a pass with backward
  (2 forward + 4 backward) and 2 x params x tokens for a no-grad pass, applied per stack:
  encoder tokens x encoder params, decoder target tokens x (decoder params + the vocab x d_model
  LM-head matmul), judge tokens x judge params; embedding lookups, attention-score matmuls
  (~2% here) and padding are not counted, so padding and recomputation lower MFU, as they
  should. Peak: H100 SXM 989, H100 PCIe 756, H100 NVL 835, H200 989, A100 312, L4 121 TFLOP/s
  (dense bf16), else ``--peak-tflops``; MFU is always against the bf16 peak, even for fp32 runs.

Usage:
  python benchmarks/gpu_bench.py                        # CUDA, bf16 autocast, batch 32, 20 steps
  python benchmarks/gpu_bench.py --tf32 --compile --batch-size 64
  python benchmarks/gpu_bench.py --device cpu --tiny --steps 2   # smoke test, seconds
Writes benchmarks/results/gpu_bench.json (gpu_bench_cpu_smoke.json for --tiny or --device cpu;
``--out`` to choose) with machine info, and prints one table.

Results: NOT yet run on a GPU - only the CPU smoke path (--device cpu --tiny) has been run.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import platform
import random
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from transformers import T5Config, T5ForConditionalGeneration  # noqa: E402

from qcrd_plugin.config import RunConfig  # noqa: E402
from qcrd_plugin.data import TrainExample  # noqa: E402
from qcrd_plugin.discriminator import QualityJudge  # noqa: E402
from qcrd_plugin.methods import base as methods_base  # noqa: E402
from qcrd_plugin.methods import build_method  # noqa: E402
from qcrd_plugin.methods import dss as methods_dss  # noqa: E402
from qcrd_plugin.methods import qcrd as methods_qcrd  # noqa: E402
from qcrd_plugin.students import judge_config, use_fused_gelu  # noqa: E402
from qcrd_plugin.training import compile_blocks  # noqa: E402

PAD, EOS, FIRST_TOKEN = 0, 1, 4  # T5 convention: 0 pad, 1 eos; ids 0..3 are special in the repo

# Dense bf16 tensor-core peak, TFLOP/s (vendor data sheets, without sparsity).
PEAK_BF16_TFLOPS = {
    "H100 SXM": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H200": 989.0,
    "A100": 312.0,
    "L4": 121.0,
}

SHAPES = {
    # name: model dims and mean lengths (prompt, rationale, label incl. EOS)
    "t5-base": dict(
        d_model=768,
        d_ff=3072,
        num_layers=12,
        num_heads=12,
        d_kv=64,
        vocab_size=32128,
        prompt=64,
        rationale=96,
        label=4,
    ),
    "tiny": dict(
        d_model=64, d_ff=128, num_layers=2, num_heads=4, d_kv=16, vocab_size=512, prompt=16, rationale=24, label=3
    ),
}


def peak_tflops(gpu_name: str) -> float | None:
    """The dense bf16 peak of a GPU from its CUDA device name, or None if unknown."""
    name = gpu_name.upper()
    if "H100" in name:
        return PEAK_BF16_TFLOPS["H100 PCIe" if "PCIE" in name else "H100 NVL" if "NVL" in name else "H100 SXM"]
    if "H200" in name:
        return PEAK_BF16_TFLOPS["H100 NVL" if "NVL" in name else "H200"]  # H200 NVL: same 835 as H100 NVL
    if "A100" in name:
        return PEAK_BF16_TFLOPS["A100"]
    if name.replace("NVIDIA", "").strip() == "L4":
        return PEAK_BF16_TFLOPS["L4"]
    return None


def student_config(shape: dict) -> T5Config:
    return T5Config(
        vocab_size=shape["vocab_size"],
        d_model=shape["d_model"],
        d_ff=shape["d_ff"],
        d_kv=shape["d_kv"],
        num_layers=shape["num_layers"],
        num_decoder_layers=shape["num_layers"],
        num_heads=shape["num_heads"],
        dropout_rate=0.0,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=PAD,
        n_positions=512,
    )


def synthetic_examples(
    n: int, shape: dict, positives: int, llm_negatives: int, student_negatives: int, seed: int
) -> list[TrainExample]:
    """``n`` questions of random token ids at the shape's mean lengths (+-12%), each ending in EOS."""
    rng = random.Random(seed)
    vocab = shape["vocab_size"]

    def seq(mean: int) -> list[int]:
        spread = max(1, round(mean * 0.12))
        length = max(2, rng.randint(mean - spread, mean + spread))
        return [rng.randrange(FIRST_TOKEN, vocab) for _ in range(length - 1)] + [EOS]

    return [
        TrainExample(
            id=f"q{i}",
            predict_ids=seq(shape["prompt"]),
            explain_ids=seq(shape["prompt"]),
            label_ids=seq(shape["label"]),
            positives=[seq(shape["rationale"]) for _ in range(positives)],
            llm_negatives=[seq(shape["rationale"]) for _ in range(llm_negatives)],
            student_negatives=[seq(shape["rationale"]) for _ in range(student_negatives)],
        )
        for i in range(n)
    ]


def stack_params(stack) -> int:
    """Parameters of a T5Stack that take part in matmuls (its blocks and final norm, not the embedding)."""
    return sum(p.numel() for name, p in stack.named_parameters() if not name.startswith("embed_tokens"))


class TokenCounter:
    """Counts the tokens and model FLOPs of every pass by wrapping the methods' loss helpers.

    The wrappers read the Python token lists the helpers receive, so counting adds no GPU work
    or synchronisation and leaves torch.compile's graphs alone.
    """

    def __init__(self, student, judge):
        self.p_enc = stack_params(student.encoder)
        self.p_dec = (
            stack_params(student.decoder) + student.config.vocab_size * student.config.d_model
        )  # + LM-head matmul
        self.p_judge = (
            0
            if judge is None
            else stack_params(judge.encoder.encoder) + sum(p.numel() for p in judge.head.parameters())
        )
        self.reset()

    def reset(self) -> None:
        self.tokens = 0
        self.flops = 0.0

    def add(self, enc: int, dec: int, judge: int = 0) -> None:
        factor = 6 if torch.is_grad_enabled() else 2
        self.tokens += enc + dec + judge
        self.flops += factor * (self.p_enc * enc + self.p_dec * dec + self.p_judge * judge)

    @contextmanager
    def installed(self):
        """Wrap encode_prompts / label_loss / rationale_losses / label_and_rationale_losses / score where dss.py and
        qcrd.py look them up. A step encodes its prompts once (encode_prompts) and the loss helpers then decode
        against that encoding; a helper called without one encodes its prompts itself."""
        originals = {}

        # Pass-through signatures: only the leading arguments are read, the rest is forwarded.
        def encode_prompts(student, batch, device, which=("predict", "explain")):
            self.add(sum(len(getattr(ex, f"{kind}_ids")) for kind in which for ex in batch), 0)
            return originals["encode_prompts"](student, batch, device, which)

        def label_loss(student, batch, *args, **kwargs):
            encoded = args[1] if len(args) > 1 else kwargs.get("encoded")  # (device, encoded)
            self.add(
                0 if encoded is not None else sum(len(ex.predict_ids) for ex in batch),
                sum(len(ex.label_ids) for ex in batch),
            )
            return originals["label_loss"](student, batch, *args, **kwargs)

        def rationale_losses(student, batch, rationales, *args, **kwargs):
            encoded = args[3] if len(args) > 3 else kwargs.get("encoded")  # (owner, device, bucket_size, encoded)
            if rationales:  # an empty call encodes nothing
                self.add(
                    0 if encoded is not None else sum(len(ex.explain_ids) for ex in batch),
                    sum(len(r) for r in rationales),
                )
            return originals["rationale_losses"](student, batch, rationales, *args, **kwargs)

        def label_and_rationale_losses(student, batch, rationales, *args, **kwargs):
            # Always given the step's encoding: decoder tokens only (labels + rationales).
            self.add(0, sum(len(ex.label_ids) for ex in batch) + sum(len(r) for r in rationales))
            return originals["label_and_rationale_losses"](student, batch, rationales, *args, **kwargs)

        def score(judge, inputs, *args, **kwargs):
            self.add(0, 0, sum(len(i) for i in inputs))
            return originals["score"](judge, inputs, *args, **kwargs)

        patches = [
            (module, name, wrapper)
            for module in (methods_dss, methods_qcrd)
            for name, wrapper in (
                ("encode_prompts", encode_prompts),
                ("label_loss", label_loss),
                ("rationale_losses", rationale_losses),
                ("label_and_rationale_losses", label_and_rationale_losses),
            )
            if hasattr(module, name)
        ]
        patches.append((methods_qcrd, "score", score))
        saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
        originals.update(
            encode_prompts=methods_base.encode_prompts,
            label_loss=methods_base.label_loss,
            rationale_losses=methods_base.rationale_losses,
            label_and_rationale_losses=methods_base.label_and_rationale_losses,
            score=methods_qcrd.score,
        )
        try:
            for module, name, wrapper in patches:
                setattr(module, name, wrapper)
            yield self
        finally:
            for module, name, original in saved:
                setattr(module, name, original)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_method(name: str, base_student, examples: list[TrainExample], args, device: torch.device) -> dict:
    """Time ``args.steps`` optimizer steps of method ``name`` after ``args.warmup`` warm-up steps."""
    cfg = RunConfig()
    cfg.method.name = name
    cfg.training.seed = args.seed
    student = copy.deepcopy(base_student).to(device).train()
    judge = QualityJudge(judge_config(student), cfg.judge.num_layers).to(device).train() if name == "qcrd" else None
    for module in (student, judge):  # as qcrd_plugin.training sets them up (a no-op for this ReLU shape)
        if module is not None:
            use_fused_gelu(module)
    tokenizer = SimpleNamespace(pad_token_id=PAD, eos_token_id=EOS)
    method = build_method(cfg, student, tokenizer, device, judge=judge)
    compiled = 0
    if args.compile:
        compiled = compile_blocks(student) + sum(compile_blocks(m) for m in method.extra_modules())
    groups = [{"params": list(student.parameters()), "lr": cfg.training.learning_rate}]
    groups += [{"params": list(m.parameters()), "lr": cfg.judge.learning_rate} for m in method.extra_modules()]
    optimizer = torch.optim.AdamW(
        groups, weight_decay=cfg.training.weight_decay, fused=True
    )  # as qcrd_plugin.training builds it
    all_params = [p for g in groups for p in g["params"]]
    counter = TokenCounter(student, judge)
    bs = args.batch_size
    batches = [examples[i : i + bs] for i in range(0, len(examples) - bs + 1, bs)]
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def step(i: int) -> float:
        with amp:
            loss = method.loss(batches[i % len(batches)]).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.training.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(all_params, cfg.training.max_grad_norm)
        optimizer.step()
        return float(loss.detach())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with counter.installed():
        warm_start = time.perf_counter()
        for i in range(args.warmup):
            step(i)
        sync(device)
        warmup_s = time.perf_counter() - warm_start
        counter.reset()
        start = time.perf_counter()
        for i in range(args.warmup, args.warmup + args.steps):
            last_loss = step(i)
        sync(device)
        elapsed = time.perf_counter() - start
    s_per_step = elapsed / args.steps
    tokens_per_step = counter.tokens / args.steps
    flops_per_step = counter.flops / args.steps
    out = {
        "s_per_step": s_per_step,
        "questions_per_s": bs / s_per_step,
        "tokens_per_step": tokens_per_step,
        "tokens_per_s": tokens_per_step / s_per_step,
        "model_tflops_per_step": flops_per_step / 1e12,
        "achieved_tflops": flops_per_step / s_per_step / 1e12,
        "warmup_s": warmup_s,
        "last_loss": last_loss,
        "student_params": sum(p.numel() for p in student.parameters()),
        "judge_params": 0 if judge is None else sum(p.numel() for p in judge.parameters()),
        "compiled_blocks": compiled,
    }
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def machine_info(device: torch.device) -> dict:
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=torch.cuda.get_device_name(device),
            gpu_count=torch.cuda.device_count(),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            compute_capability=f"{props.major}.{props.minor}",
            cudnn=torch.backends.cudnn.version(),
        )
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.autocast to bf16 around the forward passes (default: on for cuda, off for cpu)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile every transformer block of the student and judge"
    )
    parser.add_argument("--tf32", action="store_true", help="allow TF32 matmuls and convolutions (CUDA)")
    parser.add_argument(
        "--steps", type=int, default=20, help="timed steps per method (default 20: 5 online judge updates)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first (default 3, 8 with --compile, 1 with --tiny)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="questions per step")
    parser.add_argument("--positives", type=int, default=4, help="teacher positives per question")
    parser.add_argument(
        "--llm-negatives", type=int, default=1, help="teacher negatives per question (positives + these = K)"
    )
    parser.add_argument(
        "--student-negatives", type=int, default=1, help="student negatives per question (set directly, not sampled)"
    )
    parser.add_argument("--methods", default="dss,qcrd", help="comma-separated methods to time")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and lengths: a CPU smoke test in seconds")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s for MFU (default: from the GPU name)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: 1 with --tiny, so a smoke test on a busy machine is not slowed by "
        "oversubscription; else torch's default)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=None, help="result JSON (default benchmarks/results/gpu_bench[_cpu_smoke].json)"
    )
    args = parser.parse_args(argv)
    if args.bf16 is None:
        args.bf16 = args.device == "cuda"
    if args.warmup is None:
        args.warmup = 1 if args.tiny else 8 if args.compile else 3
    if args.tiny and args.batch_size == 32:
        args.batch_size = 4
    if args.threads is None and args.tiny:
        args.threads = 1
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (use --device cpu --tiny for the smoke test)")
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    shape = SHAPES["tiny" if args.tiny else "t5-base"]
    torch.manual_seed(args.seed)
    base_student = T5ForConditionalGeneration(student_config(shape))
    n_batches = max(4, args.warmup + args.steps) if args.tiny else 8
    examples = synthetic_examples(
        args.batch_size * n_batches, shape, args.positives, args.llm_negatives, args.student_negatives, args.seed
    )

    peak = args.peak_tflops
    if peak is None and device.type == "cuda":
        peak = peak_tflops(torch.cuda.get_device_name(device))
    results = {}
    for name in [m.strip() for m in args.methods.split(",") if m.strip()]:
        r = bench_method(name, base_student, examples, args, device)
        gc.collect()  # free this method's model, judge and optimizer state before the next one
        if device.type == "cuda":
            torch.cuda.empty_cache()
        r["mfu"] = r["achieved_tflops"] / peak if peak else None
        results[name] = r

    report = {
        "machine": machine_info(device),
        "settings": {
            "shape": "tiny" if args.tiny else "t5-base",
            **{k: v for k, v in shape.items()},
            "device": args.device,
            "bf16_autocast": args.bf16,
            "tf32": args.tf32,
            "compile": args.compile,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "warmup": args.warmup,
            "positives": args.positives,
            "llm_negatives": args.llm_negatives,
            "student_negatives": args.student_negatives,
            "peak_tflops_bf16_dense": peak,
        },
        "definitions": {
            "tokens_per_s": "non-pad input + target tokens of every student and judge forward pass of a step "
            "(with or without grad) / s_per_step",
            "model_flops": "6 x params x tokens per pass with backward, 2 x params x tokens per no-grad pass; "
            "per stack (encoder, decoder + LM head, judge); "
            "embedding lookups, attention scores and padding not counted",
            "mfu": "achieved model FLOP/s / peak dense bf16 FLOP/s of the GPU",
        },
        "results": results,
    }
    if "dss" in results and "qcrd" in results:
        report["qcrd_over_dss_step"] = results["qcrd"]["s_per_step"] / results["dss"]["s_per_step"]
    smoke = args.tiny or device.type == "cpu"
    out = args.out or REPO / "benchmarks" / "results" / ("gpu_bench_cpu_smoke.json" if smoke else "gpu_bench.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")

    gpu = report["machine"].get("gpu", "cpu")
    print(
        f"{gpu} | torch {torch.__version__} | {report['settings']['shape']} | batch {args.batch_size} | "
        f"bf16 {args.bf16} | tf32 {args.tf32} | compile {args.compile} | "
        f"{args.steps} steps after {args.warmup} warm-up"
    )
    print(
        f"{'method':<6} {'s/step':>8} {'questions/s':>12} {'tokens/s':>11} {'TFLOP/s':>9} {'MFU':>7} {'peak GiB':>9}"
    )
    for name, r in results.items():
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        mem = f"{r['peak_memory_gib']:.1f}" if "peak_memory_gib" in r else "n/a"
        print(
            f"{name:<6} {r['s_per_step']:>8.4f} {r['questions_per_s']:>12.1f} {r['tokens_per_s']:>11.0f} "
            f"{r['achieved_tflops']:>9.3f} {mfu:>7} {mem:>9}"
        )
    if "qcrd_over_dss_step" in report:
        print(f"QCRD step / DSS step: {report['qcrd_over_dss_step']:.2f}")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
