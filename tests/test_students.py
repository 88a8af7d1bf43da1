"""Student set-up for training: the fused tanh-GELU swap changes speed, not the model; the tiny
presets start near a uniform guess."""

from __future__ import annotations

import pytest
import torch
from transformers import T5ForConditionalGeneration
from transformers.activations import GELUTanh, NewGELUActivation

from qcrd_plugin.config import StudentConfig
from qcrd_plugin.students import build_student, use_eager_attention, use_fused_gelu


def test_fused_gelu_gives_the_same_outputs_and_saves_as_gelu_new(tmp_path):
    torch.manual_seed(0)
    student, tok = build_student(StudentConfig(), ["predict: explain: the cat sat on 12 mats"] * 4)
    ids = torch.randint(4, len(tok), (3, 9))
    decoder_ids = torch.randint(4, len(tok), (3, 7))
    before = student(input_ids=ids, decoder_input_ids=decoder_ids).logits
    assert use_fused_gelu(student) == 2 * StudentConfig().num_layers  # one per feed-forward layer
    assert not any(type(m) is NewGELUActivation for m in student.modules()) and any(
        isinstance(m, GELUTanh) for m in student.modules()
    )
    after = student(input_ids=ids, decoder_input_ids=decoder_ids).logits
    assert torch.allclose(before, after, atol=1e-5, rtol=1e-5)
    student.save_pretrained(tmp_path)
    reloaded = T5ForConditionalGeneration.from_pretrained(tmp_path)
    assert reloaded.config.dense_act_fn == "gelu_new" and any(type(m) is NewGELUActivation for m in reloaded.modules())
    assert torch.allclose(reloaded(input_ids=ids, decoder_input_ids=decoder_ids).logits, after, atol=1e-5, rtol=1e-5)


def test_eager_attention_gives_the_same_loss_and_gradient_as_sdpa():
    """Training runs the tiny T5 preset with eager attention (faster at its width); the switch
    must change speed only: same loss and gradients, padding masks and T5's position bias included."""
    torch.manual_seed(0)
    student, tok = build_student(StudentConfig(), ["predict: explain: the cat sat on 12 mats"] * 4)
    ids = torch.randint(4, len(tok), (3, 9))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0  # one padded row
    labels = torch.randint(4, len(tok), (3, 7))

    def loss_and_grads():
        student.zero_grad()
        loss = student(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in student.parameters()]

    assert student.config._attn_implementation == "sdpa"
    before, grads_before = loss_and_grads()
    use_eager_attention(student)
    assert student.config._attn_implementation == "eager"
    after, grads_after = loss_and_grads()
    assert torch.allclose(before, after, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(grads_before, grads_after))


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_first_step_loss_of_the_tiny_presets_is_near_a_uniform_guess(family):
    """The output layer's initialisation: an untrained preset costs about ln(vocab) nats a token
    (transformers' T5 default, std 1.0 on an untied lm_head, gave ~59)."""
    import math

    from qcrd_plugin.config import StudentConfig, SynthTaskConfig
    from qcrd_plugin.data import target_ids
    from qcrd_plugin.methods.base import causal_losses, sequence_losses
    from qcrd_plugin.students import build_student
    from qcrd_plugin.synth import generate

    torch.manual_seed(0)
    problems = generate(SynthTaskConfig(n_train=64, n_valid=1, n_test=1))["train"]
    texts = [p.gold_rationale for p in problems]
    model, tok = build_student(StudentConfig(family=family), [p.question for p in problems] + texts)
    prompts = tok([f"explain: {p.question}" for p in problems])["input_ids"]
    targets = target_ids(tok, texts, 96)
    with torch.no_grad():
        if family == "causal":
            loss = causal_losses(model, prompts, targets, "cpu").mean().item()
        else:
            from qcrd_plugin.data import pad, pad_labels

            ids, mask = pad(prompts, tok.pad_token_id)
            labels = pad_labels(targets)
            logits = model(input_ids=ids, attention_mask=mask, labels=labels).logits
            loss = sequence_losses(logits, labels).mean().item()
    uniform = math.log(len(tok))
    assert abs(loss - uniform) < 1.0, (loss, uniform)
