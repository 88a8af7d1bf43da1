"""The quality judge: Eq. 2 by hand, augmentation, and pre-training lowering L_D."""

import random

import pytest
import torch
from conftest import synth_training_set

from qcrd_plugin.config import JudgeConfig, RunConfig, SynthTaskConfig
from qcrd_plugin.discriminator import (
    QualityJudge,
    augment_negative,
    batch_loss,
    judge_loss,
    pretrain,
    pretraining_pairs,
)


def test_printed_eq2_by_hand():
    s = torch.tensor([0.9, 0.8, 0.1, 0.5, 0.2])
    group = torch.tensor([0, 0, 0, 1, 1])
    positive = torch.tensor([True, True, False, True, True])  # question 1 has no negative: skipped
    loss = judge_loss(s, group, positive, 2, "printed")
    expected = -(torch.log(torch.exp(torch.tensor(0.9)) + torch.exp(torch.tensor(0.8))) - 0.1)
    assert loss.item() == pytest.approx(expected.item())


def test_augmented_negative_changes_a_token_and_keeps_eos():
    rng = random.Random(0)
    r = [10, 11, 12, 13, 1]
    for _ in range(20):
        out = augment_negative(r, rng, vocab=list(range(4, 50)), mask_id=3, mask_prob=0.1)
        assert out[-1] == 1 and len(out) == len(r) and out != r


def test_pretraining_lowers_judge_loss():
    cfg = RunConfig()
    cfg.task = SynthTaskConfig(n_train=64, n_valid=2, n_test=2)
    model, tok, examples = synth_training_set(cfg, 0.7)
    torch.manual_seed(0)
    judge = QualityJudge(model.config, 1)
    sets = pretraining_pairs(examples, random.Random(1), list(range(4, len(tok))), tok.mask_token_id, 0.3)
    kept = [ex for ex in examples if ex.positives]

    def full_loss():
        with torch.no_grad():
            return batch_loss(judge, kept, sets, "printed", tok.pad_token_id, tok.eos_token_id, "cpu").item()

    before = full_loss()
    losses = pretrain(
        judge, examples, JudgeConfig(pretrain_steps=40, pretrain_batch_size=16), tok, "cpu", seed=1, progress=False
    )
    assert len(losses) == 40
    assert full_loss() < before - 0.05


def test_judge_loss_gradient_is_finite_when_a_question_has_no_negatives():
    """A question with positives only is skipped, and must not turn the judge's gradient into NaN
    (log of its empty negative sum is -inf; selecting after the log gave 0 * inf)."""
    for kind in ("printed", "infonce"):
        scores = torch.tensor([0.6, 0.4, 0.7, 0.55], requires_grad=True)
        group = torch.tensor([0, 0, 1, 1])
        positive = torch.tensor([True, False, True, True])  # question 1 has no negative
        loss = judge_loss(scores, group, positive, 2, kind)
        loss.backward()
        assert torch.isfinite(scores.grad).all(), kind
        assert scores.grad[2] == 0 and scores.grad[3] == 0 and scores.grad[0] != 0, kind
