"""A real pretrained student: SmolLM2-135M-Instruct from the ``smollm2`` extra's wheel (a Q4_1
GGUF that transformers de-quantises), distilled on SVAMP with MCC-KD's gpt-3.5 chains.

One model load per module: the fixture's run de-quantises the GGUF into its ``base_model/``
folder, and every other test loads that ordinary folder.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qcrd_plugin.config import load_config
from qcrd_plugin.training import run

REPO = Path(__file__).resolve().parents[1]
DATA = os.environ.get("QCRD_DATA_DIR", str(REPO.parent / "shared" / "data"))
EVAL_LIMIT = 6
RUN = [
    "task.name=svamp",
    "task.source=mcc_kd",
    f"task.data_dir={DATA}",
    "task.max_train=4",
    "task.heldout=2",
    "teacher.kind=pool",
    "teacher.samples=3",
    "student.pretrained=smollm2-135m",
    "student.max_target_tokens=40",
    "training.rounds=1",
    "training.steps_per_round=2",
    "training.batch_size=2",
    "training.warmup_steps=0",
    "training.learning_rate=1e-3",
    "evaluation.tasks=qcrd_svamp",
    f"evaluation.limit={EVAL_LIMIT}",
    "evaluation.faithfulness=false",
    "evaluation.overlap=false",
]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A LoRA DSS run of SmolLM2 on 4 SVAMP questions, 2 steps: (run folder, round records)."""
    out = tmp_path_factory.mktemp("real_student")
    cfg = load_config(None, RUN + ["method.name=dss", "student.lora_rank=4", f"output_dir={out}", "name=lora"])
    lines: list[str] = []
    records = run(cfg, progress=False, log=lines.append)
    return out / "lora", records, lines


def test_the_gguf_is_dequantised_once_into_an_ordinary_folder(lora_run):
    run_dir, _, lines = lora_run
    base = run_dir / "base_model"
    assert (base / "model.safetensors").is_file() and (base / "tokenizer.json").is_file()
    config = json.loads((base / "config.json").read_text())
    assert config["model_type"] == "llama" and config["hidden_size"] == 576 and config["num_hidden_layers"] == 30
    assert "quantization_config" not in config
    assert sum("de-quantising smollm2-135m" in line for line in lines) == 1
    from safetensors import safe_open

    with safe_open(base / "model.safetensors", "pt") as weights:
        assert weights.get_tensor("model.embed_tokens.weight").shape == (49152, 576)
        assert weights.get_tensor("model.layers.0.self_attn.q_proj.weight").dtype == torch.float32


def test_a_round_scores_the_same_through_the_plain_lm_eval_cli(lora_run, tmp_path):
    run_dir, records, _ = lora_run
    folder = run_dir / "round_1"
    assert (folder / "adapter_model.safetensors").is_file() and not (folder / "model.safetensors").exists()
    record = json.loads((folder / "qcrd_run.json").read_text())
    assert record["base_model"] == str((run_dir / "base_model").resolve()) and record["backend"] == "causal"
    model_args = f"pretrained={record['base_model']},peft={folder.resolve()},backend=causal"
    assert model_args in (folder / "README.md").read_text()
    out = tmp_path / "lm_eval"
    cmd = [str(Path(sys.executable).with_name("lm_eval")), "--model", "hf", "--model_args", model_args]
    cmd += ["--tasks", "qcrd_svamp", "--include_path", str(REPO / "tasks"), "--device", "cpu"]
    cmd += ["--limit", str(EVAL_LIMIT), "--output_path", str(out)]
    env = {**os.environ, "QCRD_DATA_DIR": DATA}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(sorted(out.rglob("results_*.json"))[-1].read_text())
    assert results["n-samples"]["qcrd_svamp"]["effective"] == EVAL_LIMIT
    in_loop = records[0]["eval"]["qcrd_svamp"]["acc"]
    assert results["results"]["qcrd_svamp"]["acc,none"] == pytest.approx(in_loop)


def real_batch(run_dir: Path, method: str, lora: bool):
    """(cfg, SmolLM2 from the run's de-quantised folder, its tokenizer, 2 SVAMP examples with real chains)."""
    from qcrd_plugin.data import build_examples
    from qcrd_plugin.pools import read_pool
    from qcrd_plugin.rationales import select_pool
    from qcrd_plugin.students import build_student
    from qcrd_plugin.tasks import load_task

    cfg = load_config(None, RUN + [f"method.name={method}", f"student.lora_rank={4 if lora else 0}"])
    model, tok = build_student(cfg.student, [], str(run_dir / "base_model"))
    pool = read_pool(run_dir / "pool_train.jsonl")[:2]
    questions = {q.id: q for q in load_task(cfg.task).questions["train"]}
    examples = build_examples([questions[e.id] for e in pool], select_pool(pool, cfg.self_consistency), tok, 160, 40)
    return cfg, model, tok, examples


@pytest.mark.parametrize(
    "method, lora",
    [("finetune", True), ("single_task", True), ("dss", True), ("mi", True), ("qcrd", True)]
    + [("dss", False), ("qcrd", False)],
)
def test_two_steps_train_smollm2(lora_run, method, lora):
    """Every method trains the real student: with LoRA only the adapters change, without it the
    weights themselves; QCRD with its student negatives and the pretrained judge."""
    from qcrd_plugin.config import JudgeConfig
    from qcrd_plugin.discriminator import build_judge_model
    from qcrd_plugin.lora import add_lora
    from qcrd_plugin.methods import build_method
    from qcrd_plugin.negatives import sample_negatives

    cfg, model, tok, examples = real_batch(lora_run[0], method, lora)
    judge = None
    if method == "qcrd":
        sample_negatives(model, copy.deepcopy(model.state_dict()), examples, 1, 1.5, 8, 8, 0, "cpu", progress=False)
        judge = build_judge_model(JudgeConfig(pretrained="minilm-l6"), model, tok)
    student = add_lora(model, cfg.student) if lora else model
    before = {k: v.clone() for k, v in student.state_dict().items()}
    trainable = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=1e-2)
    loss = build_method(cfg, student, tok, "cpu", judge=judge)
    for _ in range(2):  # lora_B starts at zero: lora_A has no gradient before the first step
        optimizer.zero_grad()
        out = loss.loss(examples)
        assert torch.isfinite(out.total)
        out.total.backward()
        optimizer.step()
    after = student.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if lora:
        assert changed and all("lora_" in k for k in changed)
        assert any("lora_A" in k for k in changed) and any("lora_B" in k for k in changed)
    else:
        assert "model.layers.0.self_attn.q_proj.weight" in changed and "model.embed_tokens.weight" in changed


def test_the_pretrained_judge_reads_text_with_its_own_tokenizer_and_learns_online(lora_run):
    from qcrd_plugin.config import JudgeConfig
    from qcrd_plugin.discriminator import (
        PretrainedJudge,
        augment_negative,
        build_judge_model,
        judge_input,
        judge_loss,
        number_tokens,
        score,
    )

    _, model, tok, examples = real_batch(lora_run[0], "qcrd", lora=False)
    judge = build_judge_model(JudgeConfig(pretrained="minilm-l6"), model, tok)
    assert isinstance(judge, PretrainedJudge)
    assert judge.tokenizer.vocab_size == 30522 and len(tok) == 49152  # BERT's WordPiece, not SmolLM2's BPE
    ex = examples[0]
    # A negative: the teacher's minority chain, else a positive with its numbers changed (as pre-training makes them).
    vocab = list(range(len(tok)))
    wrong = ex.llm_negatives[:1] or [
        augment_negative(ex.positives[0], random.Random(0), vocab, 0, 0.3, number_tokens(tok))
    ]
    inputs = [judge_input(ex.explain_ids, r, tok.eos_token_id) for r in ex.positives + wrong]
    assert "explain:" in judge.texts(inputs)[0] and ex.positives  # the student's ids arrive as text
    ids, _ = judge.encode(inputs, tok.pad_token_id, "cpu")
    assert ids[0, 0].item() == judge.tokenizer.cls_token_id
    before = score(judge, inputs, tok.pad_token_id, "cpu").detach()
    optimizer = torch.optim.AdamW(judge.param_groups(JudgeConfig()))
    labels = torch.tensor([True] * len(ex.positives) + [False])
    for _ in range(3):  # the online update: alpha3 * L_D on the batch's rationales
        loss = judge_loss(
            score(judge, inputs, tok.pad_token_id, "cpu"), torch.zeros(len(inputs), dtype=torch.long), labels, 1, "bce"
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = score(judge, inputs, tok.pad_token_id, "cpu").detach()
    assert not torch.allclose(before, after)
    assert after[labels].mean() - after[~labels].mean() > before[labels].mean() - before[~labels].mean()


def test_the_hf_teacher_runs_smollm2_instruct_in_process_with_its_chat_template(lora_run, tmp_path):
    """teacher.kind=hf on SmolLM2-135M-Instruct (the run's de-quantised folder): prompts go through
    the model's own chat template, K samples per question come back, and a rerun reads the cache."""
    from qcrd_plugin.config import TeacherConfig
    from qcrd_plugin.tasks import load_task
    from qcrd_plugin.teachers import build_teacher

    cfg = load_config(None, RUN + ["method.name=dss"])
    task = load_task(cfg.task)
    questions = task.questions["train"][:2]
    teacher_cfg = TeacherConfig(kind="hf", model=str(lora_run[0] / "base_model"), max_new_tokens=24, batch_size=4)
    cache = tmp_path / "cache.jsonl"
    teacher = build_teacher(teacher_cfg, task, cache)
    prompt = teacher.prompt(questions[0])
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n")
    assert questions[0].question in prompt
    pool = teacher.sample(questions, 2, 0.7)
    assert [len(entry.samples) for entry in pool] == [2, 2]
    assert all(s.rationale.strip() and "<|im_end|>" not in s.rationale for e in pool for s in e.samples)
    assert len(cache.read_text().splitlines()) == 4
    again = build_teacher(teacher_cfg, task, cache).sample(questions, 2, 0.7)
    assert [e.to_record() for e in again] == [e.to_record() for e in pool]


# ---- bad input: exit code 2 and one line, before any teacher sampling ------------------------


def unsupported_gguf(path: Path) -> Path:
    """A GGUF file whose architecture (``rwkv9``) transformers cannot read, written with gguf's own writer."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "rwkv9")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert path.read_bytes()[:4] == b"GGUF" and struct.unpack("<I", path.read_bytes()[4:8])[0] >= 2
    return path


def cli(*args: str, cwd: Path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "qcrd_plugin.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_a_gguf_transformers_cannot_read_stops_before_the_teacher(tmp_path, figures):
    model = unsupported_gguf(tmp_path / "odd.gguf")
    proc = cli(
        "run", "--output-dir", str(tmp_path), "--name", "odd", "-o", f"student.pretrained={model}", cwd=tmp_path
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "student.pretrained" in lines[0] and "odd.gguf" in lines[0] and "rwkv9" in lines[0]
    assert not list((tmp_path / "odd").glob("pool_*.jsonl"))
    missing = cli("run", "-o", f"student.pretrained={tmp_path}/nowhere.gguf", cwd=tmp_path)
    assert missing.returncode == 2 and "student.pretrained" in missing.stderr and "not found" in missing.stderr
    figures("bad_inputs_tried", 2)


def test_a_missing_extra_names_the_key_and_the_fix(monkeypatch, tmp_path, figures):
    """The short names resolve through the installed package's metadata; one whose package is not
    installed (here: renamed to a distribution that does not exist) says which extra installs it."""
    from helpers import invoke

    from qcrd_plugin import pretrained

    for name, key in (("smollm2-135m", "student.pretrained"), ("minilm-l6", "judge.pretrained")):
        gone = dataclasses.replace(pretrained.SHIPPED[name], distribution="qcrd-no-such-distribution")
        monkeypatch.setitem(pretrained.SHIPPED, name, gone)
        proc = invoke("run", "-o", f"{key}={name}", "--name", "x", "--output-dir", str(tmp_path))
        assert proc.returncode == 2 and not list((tmp_path / "x").glob("pool_*.jsonl"))
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and key in lines[0] and f"pip install 'qcrd-bench[{gone.extra}]'" in lines[0]
    # A pretrained student's QCRD judge is minilm-l6 by default (auto): the same stop, with the way
    # out to a from-scratch judge (a local student folder: only its config is read before the stop).
    from transformers import LlamaConfig

    folder = tmp_path / "student"
    LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                             vocab_size=64).save_pretrained(folder)  # fmt: skip
    proc = invoke("run", "-o", f"student.pretrained={folder}", "-o", "method.name=qcrd", "--name", "y",
                  "--output-dir", str(tmp_path))  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "judge.pretrained= (empty)" in lines[0], lines
    figures("bad_inputs_tried", 3)
