"""LoRA students (student.lora_rank, through peft): only the adapters train, for every method and
both families; a LoRA run resumes onto its saved base, and lm-eval scores a round with
``pretrained=<base>,peft=<round>``."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_OVERRIDES
from test_methods import setup

from qcrd_plugin.checkpoints import load_state
from qcrd_plugin.config import load_config
from qcrd_plugin.discriminator import QualityJudge
from qcrd_plugin.lora import add_lora, is_lora
from qcrd_plugin.methods import METHODS, build_method
from qcrd_plugin.negatives import sample_negatives
from qcrd_plugin.students import judge_config
from qcrd_plugin.training import run

REPO = Path(__file__).resolve().parents[1]
TIMING = {"time_s", "setup_time_s", "train_tokens_per_s", "checkpoint"}


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_training_steps_change_the_adapters_and_nothing_else(family, method):
    cfg, model, tok, examples = setup(family, method__name=method, student__lora_rank=4)
    if method == "qcrd":
        sample_negatives(model, copy.deepcopy(model.state_dict()), examples, 1, 1.5, 12, 8, 0, "cpu", progress=False)
    judge = QualityJudge(judge_config(model), 1) if method == "qcrd" else None
    student = add_lora(model, cfg.student)
    assert is_lora(student) and student.config.is_encoder_decoder == (family == "seq2seq")
    before = {k: v.clone() for k, v in student.state_dict().items()}
    trainable = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=1.0)
    method = build_method(cfg, student, tok, "cpu", judge=judge)
    for _ in range(2):  # lora_B starts at zero, so lora_A has no gradient before the first step
        optimizer.zero_grad()
        method.loss(examples).total.backward()
        optimizer.step()
    after = student.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "the step changed no weight"
    assert all("lora_" in k for k in changed), sorted(k for k in changed if "lora_" not in k)[:3]
    assert any("lora_A" in k for k in changed) and any("lora_B" in k for k in changed)


def test_a_lora_run_resumes_onto_its_base_and_lm_eval_scores_the_adapter(tmp_path):
    """In fp16 too: the loss scaler's state goes on with the run."""
    from lm_eval.models.huggingface import HFLM
    from safetensors.torch import load_file

    # Warm-up over every step: the schedule does not depend on the total, so 1 round + 1 resumed
    # round must end where 2 rounds do.
    lora = TINY_OVERRIDES + ["method.name=dss", "student.lora_rank=4", "training.precision=fp16"]
    lora += ["training.warmup_steps=12", "task.n_test=12", "evaluation.overlap=false", f"output_dir={tmp_path}"]
    fresh = run(load_config(None, lora + ["name=fresh"]), progress=False, log=lambda _: None)
    run(load_config(None, lora + ["name=extended", "training.rounds=1"]), progress=False, log=lambda _: None)
    extended = run(load_config(None, lora + ["name=extended"]), progress=False, log=lambda _: None, resume=True)
    assert [{k: v for k, v in r.items() if k not in TIMING} for r in extended] == [
        {k: v for k, v in r.items() if k not in TIMING} for r in fresh
    ]
    assert load_state(tmp_path / "fresh" / "round_2")["scaler"]["scale"] > 0

    folder = tmp_path / "fresh" / "round_2"
    assert (folder / "adapter_model.safetensors").is_file() and not (folder / "model.safetensors").exists()
    base = tmp_path / "fresh" / "base_model"
    assert (base / "model.safetensors").is_file()
    record = json.loads((folder / "qcrd_run.json").read_text())
    assert record["base_model"] == str(base.resolve())
    model_args = f"pretrained={record['base_model']},peft={folder.resolve()},backend=seq2seq"
    assert model_args in (folder / "README.md").read_text()

    # lm-eval's own loader (HFLM with peft=) holds exactly the adapter weights the run saved.
    lm = HFLM(pretrained=str(base), peft=str(folder), backend="seq2seq", device="cpu")
    saved = load_file(folder / "adapter_model.safetensors")
    loaded = {k.replace(".default", ""): v for k, v in lm.model.state_dict().items() if "lora_" in k}
    assert saved and len(saved) == len(loaded)
    assert all(torch.equal(loaded[key], value) for key, value in saved.items())

    # The plain lm-eval CLI, as the card says: the record in the adapter's folder picks the run's
    # test set (no --metadata), and the accuracy is the one measured in the loop.
    out = tmp_path / "lm_eval"
    cmd = [str(Path(sys.executable).with_name("lm_eval")), "--model", "hf", "--model_args", model_args]
    cmd += ["--tasks", "qcrd_synth", "--include_path", str(REPO / "tasks"), "--device", "cpu"]
    proc = subprocess.run(cmd + ["--output_path", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(sorted(out.rglob("results_*.json"))[-1].read_text())
    assert results["n-samples"]["qcrd_synth"]["effective"] == 12  # the run's task.n_test
    assert results["results"]["qcrd_synth"]["acc,none"] == pytest.approx(fresh[1]["eval"]["qcrd_synth"]["acc"])


def test_lora_on_a_local_pretrained_causal_student(tmp_path):
    """``student.pretrained`` as a local folder (no network needed): the base is that folder, so no
    ``base_model/`` is written; the record and the card name it with the causal backend read from
    the model; a target module the model lacks stops before the teacher is asked."""
    from qcrd_plugin.errors import ConfigError

    _, model, tok, _ = setup("causal")
    pretrained = tmp_path / "pretrained"
    model.save_pretrained(pretrained)
    tok.save_pretrained(pretrained)
    lora = TINY_OVERRIDES + [f"student.pretrained={pretrained}", "student.lora_rank=4", "method.name=dss"]
    lora += ["training.rounds=1", "evaluation.faithfulness=false", f"output_dir={tmp_path}"]
    records = run(load_config(None, lora + ["name=lora"]), progress=False, log=lambda _: None)
    assert records[0]["eval"]["qcrd_synth"]["acc"] is not None
    run_dir = tmp_path / "lora"
    assert not (run_dir / "base_model").exists()
    record = json.loads((run_dir / "round_1" / "qcrd_run.json").read_text())
    assert record["base_model"] == str(pretrained) and record["backend"] == "causal"
    card = (run_dir / "round_1" / "README.md").read_text()
    assert f"pretrained={pretrained},peft={(run_dir / 'round_1').resolve()},backend=causal" in card

    with pytest.raises(ConfigError, match="lora_target_modules"):  # Llama has q_proj, not T5's q
        run(load_config(None, lora + ["name=bad", "student.lora_target_modules=[q]"]), progress=False, log=print)
    assert not (tmp_path / "bad" / "pool_train.jsonl").exists()
