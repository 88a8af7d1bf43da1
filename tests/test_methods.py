"""Every method's loss on a tiny batch, for both student families, and what each ablation removes."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import synth_training_set

from qcrd_plugin.config import RunConfig, SynthTaskConfig
from qcrd_plugin.discriminator import QualityJudge
from qcrd_plugin.methods import METHODS, build_method
from qcrd_plugin.negatives import SnapshotRing, sample_negatives
from qcrd_plugin.students import judge_config


def setup(family: str, **switches):
    cfg = RunConfig()
    cfg.task = SynthTaskConfig(n_train=8, n_valid=2, n_test=2)
    cfg.student.family = family
    for dotted, value in switches.items():
        section, key = dotted.split("__")
        setattr(getattr(cfg, section), key, value)
    torch.manual_seed(0)
    model, tok, examples = synth_training_set(cfg, 1.2)
    return cfg, model, tok, examples


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_gives_a_finite_loss_that_trains_the_student(family, method):
    cfg, model, tok, examples = setup(family, method__name=method)
    if method == "qcrd":
        sample_negatives(model, copy.deepcopy(model.state_dict()), examples, 1, 1.5, 12, 8, 0, "cpu", progress=False)
        assert all(ex.student_negatives and ex.student_negatives[0][-1] == tok.eos_token_id for ex in examples)
    judge = QualityJudge(judge_config(model), 1) if method == "qcrd" else None
    out = build_method(cfg, model, tok, "cpu", judge=judge).loss(examples)
    assert torch.isfinite(out.total) and out.total.item() > 0
    out.total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    expected = {
        "finetune": {"l_label"},
        "single_task": {"l_rationale"},
        "dss": {"l_label", "l_rationale"},
        "mi": {"l_label", "l_rationale", "l_mi"},
        "qcrd": {"l_pred", "l_cl"},
    }[method]
    assert expected <= set(out.components)
    if method == "finetune":
        assert "l_rationale" not in out.components  # label only


def test_one_shared_encoder_pass_gives_the_loss_and_gradient_of_separate_passes():
    """DSS encodes the predict: and explain: prompts in one padded encoder call: same loss value
    and same gradient as encoding each prompt set on its own."""
    from qcrd_plugin.methods.base import label_loss, rationale_losses

    cfg, model, tok, examples = setup("seq2seq", method__name="dss")
    out = build_method(cfg, model, tok, "cpu").loss(examples)
    out.total.backward()
    shared = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    alpha = cfg.method.alpha
    separate = (
        alpha * label_loss(model, examples, "cpu")
        + (1 - alpha)
        * rationale_losses(
            model, examples, [ex.positives[0] for ex in examples], list(range(len(examples))), "cpu"
        ).mean()
    )
    separate.backward()
    assert (
        all(ex.positives for ex in examples) and len({len(ex.predict_ids) for ex in examples}) > 1
    )  # padding is exercised
    assert out.total.item() == pytest.approx(separate.item(), rel=1e-6)
    for a, b in zip(shared, (p.grad for p in model.parameters())):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_decoding_gives_the_losses_and_gradients_of_separate_calls(attention):
    """packed_losses decodes each question's label and several of its rationales in one row: every
    loss and the gradient equal those of one decoder call for the labels and one for the rationales.
    Few relative-position buckets with a short max distance, so rows run far into T5's
    logarithmic buckets; one question has no rationale (a label-only row)."""
    from transformers import T5ForConditionalGeneration

    from qcrd_plugin.methods.base import encode_prompts, label_loss, packed_losses, packs_targets, rationale_losses

    cfg, model, tok, examples = setup("seq2seq", method__name="qcrd")
    config = model.config.to_dict() | {"relative_attention_num_buckets": 6, "relative_attention_max_distance": 12}
    torch.manual_seed(0)
    config = type(model.config).from_dict(config)
    config._attn_implementation = attention
    model = T5ForConditionalGeneration(config)
    assert packs_targets(model) and model.config._attn_implementation == attention
    rationales, owner = [], []
    for q, ex in enumerate(examples[1:], 1):  # question 0: label only
        for r in (ex.positives + ex.llm_negatives)[:3]:
            rationales.append(r), owner.append(q)
    assert max(owner.count(q) for q in set(owner)) >= 2 and max(len(r) for r in rationales) > 12

    def losses(packed: bool):
        model.zero_grad()
        encoded = encode_prompts(model, examples, "cpu")
        if packed:
            l_pred, each = packed_losses(model, examples, rationales, owner, "cpu", encoded)
        else:
            l_pred = label_loss(model, examples, "cpu", encoded["predict"])
            each = rationale_losses(model, examples, rationales, owner, "cpu", encoded=encoded["explain"])
        (l_pred + (each * torch.linspace(0.5, 1.5, len(each))).sum()).backward()
        return l_pred.detach(), each.detach(), [p.grad.clone() for p in model.parameters()]

    (p_pred, p_each, p_grad), (s_pred, s_each, s_grad) = losses(True), losses(False)
    assert torch.allclose(p_pred, s_pred, rtol=1e-5) and torch.allclose(p_each, s_each, rtol=1e-5)
    for a, b in zip(p_grad, s_grad):  # float32 summation order differs: equal to 1e-5 of each tensor's largest entry
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_single_task_target_is_the_rationale_then_the_answer():
    cfg, model, tok, examples = setup("seq2seq", method__name="single_task")
    method = build_method(cfg, model, tok, "cpu")
    text = tok.decode(method.target(examples[0]), skip_special_tokens=True)
    assert text.rstrip(".").endswith(f"answer is {examples[0].answer_text}")


def test_causal_loss_scores_only_the_target_tokens():
    from qcrd_plugin.methods.base import causal_losses

    cfg, model, tok, examples = setup("causal")
    ex = examples[0]
    base = causal_losses(model, [ex.explain_ids], [ex.positives[0]], "cpu")
    # Changing the prompt changes the loss; padding another row does not change this row's loss.
    other = causal_losses(
        model, [ex.explain_ids, ex.explain_ids + ex.explain_ids], [ex.positives[0], ex.positives[0]], "cpu"
    )
    assert other[0].item() == pytest.approx(base.item(), rel=1e-4)
    assert other[1].item() != pytest.approx(base.item(), rel=1e-4)


def test_causal_losses_at_target_positions_equal_full_logits():
    """The vocabulary projection at the target positions alone gives the values and gradients of
    scoring every position's logits (rows of unequal prompt and target lengths, right padding)."""
    from qcrd_plugin.methods.base import causal_logits, causal_losses, sequence_losses

    cfg, model, tok, examples = setup("causal")
    prompts = [ex.explain_ids for ex in examples[:3]]
    targets = [examples[0].positives[0], examples[1].positives[0][:3], examples[2].label_ids]
    assert len({len(p) + len(t) for p, t in zip(prompts, targets)}) == 3
    fast = causal_losses(model, prompts, targets, "cpu")
    (fast_grad,) = torch.autograd.grad(fast.sum(), model.get_output_embeddings().weight)
    full = sequence_losses(*causal_logits(model, prompts, targets, "cpu"))
    (full_grad,) = torch.autograd.grad(full.sum(), model.get_output_embeddings().weight)
    assert torch.allclose(fast, full, atol=1e-5)
    assert torch.allclose(fast_grad, full_grad, atol=1e-6)
    assert fast_grad.abs().max() > 1e-4  # the gradient is not trivially zero on both sides
    batch_mean = causal_losses(model, prompts, targets, "cpu", per_sequence=False)
    weights = torch.tensor([float(len(t)) for t in targets])
    assert batch_mean.item() == pytest.approx((full * weights).sum().item() / weights.sum().item(), rel=1e-5)


def qcrd_parts(**switches):
    cfg, model, tok, examples = setup("seq2seq", method__name="qcrd", **switches)
    for ex in examples:
        ex.student_negatives = (
            [ex.positives[0][: len(ex.positives[0]) // 2] + [tok.eos_token_id]] if ex.positives else []
        )
    judge = QualityJudge(judge_config(model), 1) if cfg.judge.enabled else None
    method = build_method(cfg, model, tok, "cpu", judge=judge)
    return method, examples, method.loss(examples)


def test_ablation_switches_remove_what_they_name():
    method, examples, full = qcrd_parts()
    assert full.components["w_pos"] != 1.0 and any(method.negatives_of(ex) for ex in examples)
    _, _, no_judge = qcrd_parts(judge__enabled=False)
    assert (
        no_judge.components["w_pos"] == 1.0
        and no_judge.components["w_neg"] == 1.0
        and "l_d" not in no_judge.components
    )
    method, examples, no_neg = qcrd_parts(negatives__enabled=False)
    assert not any(method.negatives_of(ex) for ex in examples) and no_neg.components["hinge_neg"] == 0.0
    method, examples, _ = qcrd_parts(negatives__source="llm")
    assert all(method.negatives_of(ex) == ex.llm_negatives for ex in examples)
    method, examples, _ = qcrd_parts(negatives__source="student")
    assert all(method.negatives_of(ex) == ex.student_negatives for ex in examples)
    _, examples, _ = qcrd_parts(self_consistency__enabled=False)
    assert all(len(ex.positives) <= 1 and not ex.llm_negatives for ex in examples)  # one rationale, as in DSS
    for how in ("maxmin", "sampling", "mean", "weighted_mean"):
        _, _, out = qcrd_parts(method__set_reduction=how)
        assert torch.isfinite(out.total)


def test_fixed_generator_keeps_the_initial_snapshot():
    ring = SnapshotRing(j_back=1)
    model = torch.nn.Linear(2, 2)
    ring.take(model)
    first = {k: v.clone() for k, v in ring.initial.items()}
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(1.0)
        ring.take(model)
    assert torch.equal(ring.initial["weight"], first["weight"])
    assert not torch.equal(ring.oldest()["weight"], first["weight"])  # j_back=1: a recent one


def test_decoder_only_student_runs_end_to_end(tmp_path):
    """A decoder-only (Llama-style) student through the whole loop, scored by lm-eval's causal HFLM."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import TINY_OVERRIDES

    from qcrd_plugin.config import load_config
    from qcrd_plugin.training import run

    cfg = load_config(
        None, TINY_OVERRIDES + [f"output_dir={tmp_path}", "name=causal", "student.family=causal", "training.rounds=1"]
    )
    (record,) = run(cfg, progress=False, log=lambda _: None)
    assert 0.0 <= record["eval"]["qcrd_synth"]["acc"] <= 1.0 and "rouge_l" in record["rationale_quality"]
    config = json.loads((tmp_path / "causal" / "round_1" / "config.json").read_text())
    assert config["model_type"] == "llama" and not config.get("is_encoder_decoder", False)
