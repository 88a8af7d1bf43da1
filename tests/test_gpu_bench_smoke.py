"""benchmarks/gpu_bench.py runs end to end on its tiny CPU path (the GPU path shares every line but
the device, autocast and the peak table)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_bench_tiny_cpu(tmp_path):
    bench = load_bench()
    out = tmp_path / "gpu_bench.json"
    threads = torch.get_num_threads()
    try:
        report = bench.main(["--tiny", "--device", "cpu", "--steps", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)  # --tiny runs on one thread; leave the session as it was
    saved = json.loads(out.read_text())
    assert set(saved) >= {"machine", "settings", "definitions", "results", "qcrd_over_dss_step"}
    assert {"torch", "cuda", "device"} <= set(saved["machine"])
    for name in ("dss", "qcrd"):
        result = saved["results"][name]
        assert {"s_per_step", "questions_per_s", "tokens_per_s", "achieved_tflops", "mfu"} <= set(result)
        assert result["tokens_per_s"] > 0 and result["s_per_step"] > 0
        assert result["mfu"] is None  # no peak known for a CPU
    # QCRD reads every rationale (and the judge) where DSS reads one: more tokens per step.
    assert saved["results"]["qcrd"]["tokens_per_step"] > saved["results"]["dss"]["tokens_per_step"]
    assert report["qcrd_over_dss_step"] == saved["qcrd_over_dss_step"] > 0


def test_peak_table():
    bench = load_bench()
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.peak_tflops("NVIDIA H200") == 989.0
    assert bench.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.peak_tflops("NVIDIA L4") == 121.0
    assert bench.peak_tflops("NVIDIA L40S") is None


def test_token_counter_counts_each_pass_once():
    """DSS: one encoder pass over both prompts, then the label and the first positive decoded."""
    from types import SimpleNamespace

    from qcrd_plugin.config import RunConfig
    from qcrd_plugin.methods import build_method

    bench = load_bench()
    shape = bench.SHAPES["tiny"]
    student = bench.T5ForConditionalGeneration(bench.student_config(shape))
    examples = bench.synthetic_examples(4, shape, 2, 1, 1, seed=0)
    cfg = RunConfig()
    cfg.method.name = "dss"
    method = build_method(cfg, student, SimpleNamespace(pad_token_id=bench.PAD, eos_token_id=bench.EOS), "cpu")
    counter = bench.TokenCounter(student, None)
    with counter.installed():
        method.loss(examples)
    expected = sum(
        len(ex.predict_ids) + len(ex.explain_ids) + len(ex.label_ids) + len(ex.positives[0]) for ex in examples
    )
    assert counter.tokens == expected
