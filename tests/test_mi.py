"""MI (arXiv:2403.03348): DSS plus a mutual-information term, as the authors' public code computes it."""

from __future__ import annotations

import pytest
import torch
from conftest import synth_training_set
from torch import nn

from qcrd_plugin.config import RunConfig, SynthTaskConfig
from qcrd_plugin.methods import build_method
from qcrd_plugin.methods.mi import mi_loss, pooled_distribution


def test_mi_loss_is_the_public_codes_cross_entropy_of_max_pooled_distributions():
    torch.manual_seed(0)
    label_logits = torch.randn(3, 4, 11)
    rationale_logits = torch.randn(3, 7, 11, requires_grad=True)
    no_padding_l, no_padding_r = torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 7, dtype=torch.long)
    ours = mi_loss(label_logits, no_padding_l, rationale_logits, no_padding_r)
    # The public code: nn.CrossEntropyLoss()(max_t softmax(expl), max_t softmax(pred).detach())
    reference = nn.CrossEntropyLoss()(
        rationale_logits.softmax(-1).max(dim=-2)[0], label_logits.softmax(-1).max(dim=-2)[0]
    )
    assert ours.shape == () and ours.item() == pytest.approx(reference.item(), rel=1e-6)
    assert pooled_distribution(label_logits, no_padding_l).shape == (3, 11)
    # Padding positions are left out of the max (the one deliberate difference).
    padded = no_padding_r.clone()
    padded[:, 5:] = -100
    assert mi_loss(label_logits, no_padding_l, rationale_logits, padded).item() != pytest.approx(ours.item(), rel=1e-6)


def test_mi_gradient_reaches_the_rationale_task_and_not_the_detached_label_target():
    label_logits = torch.randn(2, 3, 9, requires_grad=True)
    rationale_logits = torch.randn(2, 5, 9, requires_grad=True)
    labels = torch.zeros(2, 3, dtype=torch.long)
    mi_loss(label_logits, labels, rationale_logits, torch.zeros(2, 5, dtype=torch.long)).backward()
    assert label_logits.grad is None and rationale_logits.grad.abs().sum() > 0


def _setup(family: str, beta: float):
    cfg = RunConfig()
    cfg.task = SynthTaskConfig(n_train=8, n_valid=2, n_test=2)
    cfg.student.family = family
    cfg.method.mi_beta = beta
    torch.manual_seed(0)
    model, tok, examples = synth_training_set(cfg, 1.2)
    return cfg, model, tok, examples


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_mi_with_beta_zero_is_dss_and_its_loss_trains_both_tasks(family):
    cfg, model, tok, examples = _setup(family, 0.0)
    cfg.method.name = "mi"
    mi = build_method(cfg, model, tok, "cpu").loss(examples)
    cfg.method.name = "dss"
    dss = build_method(cfg, model, tok, "cpu").loss(examples)
    assert mi.total.item() == pytest.approx(dss.total.item(), rel=1e-5)
    assert mi.components["l_label"] == pytest.approx(dss.components["l_label"], rel=1e-5)

    cfg.method.name, cfg.method.mi_beta = "mi", 0.1
    out = build_method(cfg, model, tok, "cpu").loss(examples)
    assert out.components["l_mi"] > 0
    assert out.total.item() == pytest.approx(mi.total.item() + 0.1 * out.components["l_mi"], rel=1e-5)
    out.total.backward()
    assert sum(p.grad.abs().sum().item() for p in model.parameters() if p.grad is not None) > 0
