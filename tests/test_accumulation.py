"""Gradient accumulation (training.grad_accum_steps) and fp16 with a loss scaler (training.precision)."""

from __future__ import annotations

import copy

import pytest
import torch
from test_methods import setup

from qcrd_plugin.distributed import Launcher, TrainingStep, grad_scaler
from qcrd_plugin.methods import build_method
from qcrd_plugin.training import accumulate_gradients, micro_batches


def equal_share_batch(examples, size: int) -> list:
    """``size`` examples with one label length and a positive each: every micro-batch of an even
    cut then holds the same share of DSS's label tokens and rationales, the case where the
    accumulated gradient must equal the whole batch's."""
    by_length: dict[int, list] = {}
    for ex in examples:
        if ex.positives:
            by_length.setdefault(len(ex.label_ids), []).append(ex)
    group = max(by_length.values(), key=len)
    assert len(group) >= size, f"the synthetic set has only {len(group)} examples of one label length"
    return group[:size]


def one_step(model, cfg, tok, batch, count: int, precision: str = "fp32"):
    """One optimizer step on a copy of ``model`` with ``count`` micro-batches: (loss, grads, new weights)."""
    model = copy.deepcopy(model)
    method = build_method(cfg, model, tok, "cpu")
    launcher, step_module = Launcher(torch.device("cpu")), TrainingStep(method)
    # SGD: the update is the (clipped) gradient itself; AdamW's first step is about lr * sign(gradient),
    # which turns float noise in a near-zero gradient into a full-size difference.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = grad_scaler(torch.device("cpu"), precision)
    launcher.attach(step_module, optimizer, None, 1.0, scaler)
    launcher.zero_grad()
    amp = torch.float16 if precision == "fp16" else None
    loss, _ = accumulate_gradients(launcher, step_module, batch, count, amp)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    launcher.step()
    return loss, grads, {n: p.detach().clone() for n, p in model.named_parameters()}, scaler


def test_micro_batches_cover_the_batch_in_order():
    batch = list(range(10))
    assert micro_batches(batch, 1) == [batch]
    assert micro_batches(batch, 3) == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]
    assert [x for part in micro_batches(batch, 4) for x in part] == batch


@pytest.mark.parametrize("count", [2, 4])
def test_accumulating_micro_batches_equals_one_step_on_the_whole_batch(count):
    cfg, model, tok, examples = setup("seq2seq", method__name="dss", task__n_train=64)
    batch = equal_share_batch(examples, 8)
    whole_loss, whole_grads, whole_weights, _ = one_step(model, cfg, tok, batch, 1)
    loss, grads, weights, _ = one_step(model, cfg, tok, batch, count)
    assert loss == pytest.approx(whole_loss, rel=1e-6)
    assert grads.keys() == whole_grads.keys()
    worst = max((grads[n] - whole_grads[n]).abs().max().item() for n in grads)
    scale = max(g.abs().max().item() for g in whole_grads.values())
    assert worst <= 1e-5 * scale, f"accumulated gradient differs by {worst} (largest gradient {scale})"
    assert all(torch.allclose(weights[n], whole_weights[n], atol=1e-6) for n in weights)
    # And the comparison can fail: half the batch alone gives another gradient.
    _, half_grads, _, _ = one_step(model, cfg, tok, batch[: len(batch) // 2], 1)
    assert max((half_grads[n] - whole_grads[n]).abs().max().item() for n in grads) > 100 * worst


def test_fp16_steps_and_a_step_that_overflows_is_skipped_while_the_scale_shrinks():
    cfg, model, tok, examples = setup("seq2seq", method__name="finetune")
    batch = examples[:4]
    loss, grads, weights, scaler = one_step(model, cfg, tok, batch, 1, "fp16")
    assert torch.isfinite(torch.tensor(loss))
    before = dict(model.named_parameters())
    assert any(not torch.equal(weights[n], before[n]) for n in weights), "an fp16 step changed nothing"
    assert scaler.get_scale() == 2.0**16  # nothing overflowed: the initial scale stands

    # A loss so large that its scaled gradients overflow: the scaler must skip the step.
    model16 = copy.deepcopy(model)
    method = build_method(cfg, model16, tok, "cpu")
    launcher, step_module = Launcher(torch.device("cpu")), TrainingStep(method)
    optimizer = torch.optim.AdamW(model16.parameters(), lr=1e-3)
    scaler = grad_scaler(torch.device("cpu"), "fp16")
    launcher.attach(step_module, optimizer, None, 1.0, scaler)
    launcher.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        total, _ = launcher.forward(step_module, batch)
    launcher.backward(total * 1e35)
    launcher.step()
    assert scaler.get_scale() == 2.0**15
    assert all(torch.equal(p, before[n]) for n, p in model16.named_parameters()), "an overflowed step was applied"
