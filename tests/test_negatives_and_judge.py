"""Negatives that act, a judge that freezes with alpha3, and negative-term metrics with one
meaning under every set reduction."""

from __future__ import annotations

import pytest
import torch
from conftest import synth_training_set

from qcrd_plugin.answers import answers_match, normalize_answer, stated_answer
from qcrd_plugin.config import RunConfig, SynthTaskConfig
from qcrd_plugin.discriminator import QualityJudge, follow_alpha3, score
from qcrd_plugin.methods import build_method
from qcrd_plugin.methods.qcrd import NegativeStatistics, contrastive_loss
from qcrd_plugin.negatives import SnapshotRing, drop_correct, negative_generator
from qcrd_plugin.reporting import inactive_negatives_warning
from qcrd_plugin.students import judge_config
from qcrd_plugin.training import refresh_negatives


def _setup(**negatives):
    cfg = RunConfig()
    cfg.task = SynthTaskConfig(n_train=12, n_valid=2, n_test=2)
    cfg.negatives.j_back = 3
    cfg.negatives.max_new_tokens = 16
    for key, value in negatives.items():
        setattr(cfg.negatives, key, value)
    # An untrained student costs ~ln(vocab) = 6.4 nats a token on anything, so with a margin above
    # that every LLM-minority negative is within reach of the hinge.
    cfg.method.delta = 10.0
    cfg.judge.enabled = False
    torch.manual_seed(0)
    model, tok, examples = synth_training_set(cfg, 1.2)
    return cfg, model, tok, examples


def test_before_j_snapshots_exist_the_llm_minority_alone_makes_the_negative_term_act():
    cfg, model, tok, examples = _setup()
    ring = SnapshotRing(cfg.negatives.j_back)
    ring.take(model)  # iteration 1: one snapshot, none j_back = 3 iterations old yet
    assert ring.aged() is None and negative_generator(ring, cfg.negatives) is None
    refresh_negatives(cfg, model, negative_generator(ring, cfg.negatives), examples, [examples], 0, "cpu", False, tok)
    assert not any(ex.student_negatives for ex in examples)
    assert any(ex.llm_negatives for ex in examples)
    method = build_method(cfg, model, tok, "cpu")
    out = method.loss(examples)
    stats = method.pop_round_statistics()
    assert out.components["hinge_neg"] < 0  # the term is non-zero
    assert stats["neg_active_share"] == pytest.approx(sum(bool(ex.llm_negatives) for ex in examples) / len(examples))
    assert stats["neg_student_share"] == 0.0 and stats["neg_loss_quantiles"]["student"] is None


def test_the_earlier_behaviour_is_an_ablation_and_the_aged_snapshot_is_exactly_j_back_old():
    cfg, model, tok, examples = _setup(before_j="oldest")
    ring = SnapshotRing(cfg.negatives.j_back)
    ring.take(model)
    assert negative_generator(ring, cfg.negatives) is ring.oldest()  # the initial model samples
    refresh_negatives(
        cfg, model, negative_generator(ring, cfg.negatives), examples, [examples[:5]], 0, "cpu", False, tok
    )
    assert all(ex.student_negatives for ex in examples[:5]) and not any(ex.student_negatives for ex in examples[5:])
    stamps = []
    for i in range(1, 5):  # iterations 2..5
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        ring.take(model)
        stamps.append(next(iter(ring.aged().values())).clone() if ring.aged() is not None else None)
    # j_back = 3: at iteration 4 the aged snapshot is iteration 1's, at iteration 5 iteration 2's
    assert stamps[:2] == [None, None] and stamps[2] is not None and not torch.equal(stamps[2], stamps[3])


def test_student_negatives_that_state_the_gold_answer_are_dropped_only_when_asked():
    """``negatives.keep_correct: false`` removes a student negative that reaches the gold answer
    and keeps one that does not; the paper's default keeps both."""
    cfg, model, tok, examples = _setup(before_j="oldest")

    def reaches_gold(ex, ids) -> bool:
        text, question = (
            tok.decode(ids, skip_special_tokens=True),
            tok.decode(ex.explain_ids, skip_special_tokens=True),
        )
        read = stated_answer(text, ex.answer_type, ex.choices, question=question)
        return answers_match(read, normalize_answer(ex.answer_text, ex.answer_type, ex.choices))

    right = next(ex for ex in examples if ex.positives and reaches_gold(ex, ex.positives[0]))
    other = next(ex for ex in examples if ex.positives and not reaches_gold(right, ex.positives[0]))
    right.student_negatives = [right.positives[0], other.positives[0]]
    assert drop_correct([right], tok) == 1 and right.student_negatives == [other.positives[0]]
    assert RunConfig().negatives.keep_correct  # the paper filters nothing
    # Through the loop's refresh: the untrained initial model samples; what is kept never reaches gold.
    cfg.negatives.keep_correct = False
    ring = SnapshotRing(cfg.negatives.j_back)
    ring.take(model)
    refresh_negatives(cfg, model, negative_generator(ring, cfg.negatives), examples, [examples], 0, "cpu", False, tok)
    assert not any(reaches_gold(ex, ids) for ex in examples for ids in ex.student_negatives)
    assert sum(len(ex.student_negatives) for ex in examples) > 0


def test_lr_follows_alpha3_scales_the_judges_step():
    """AdamW's step ignores the loss scale, so alpha3 * L_D alone does not slow the judge; the
    learning rate following alpha3 / alpha3_0 does (first step of Adam moves each weight by ~lr)."""
    ids = torch.randint(4, 50, (6, 12))

    def first_step(alpha3: float, follow: bool) -> float:
        torch.manual_seed(0)
        judge = QualityJudge(judge_config(_tiny_t5()), 1)
        before = [p.detach().clone() for p in judge.parameters()]
        optimizer = torch.optim.AdamW(judge.parameters(), lr=1e-3, weight_decay=0.0)
        if follow:
            follow_alpha3(optimizer, 1e-3, alpha3, 0.5)
        (alpha3 * score(judge, ids.tolist(), 0, "cpu").sum()).backward()
        optimizer.step()
        return sum((p.detach() - b).abs().sum().item() for p, b in zip(judge.parameters(), before))

    full, decayed, decayed_followed = first_step(0.5, False), first_step(0.05, False), first_step(0.05, True)
    assert decayed == pytest.approx(full, rel=0.05)  # the scale alone changes nothing
    assert decayed_followed == pytest.approx(0.1 * full, rel=0.05)


def _tiny_t5():
    from transformers import T5Config, T5ForConditionalGeneration

    return T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=16, d_ff=32, d_kv=4, num_heads=4, num_layers=1))


# Three questions; negatives (loss, from the student?) with delta = 3:
#   q0: 1.0 llm, 2.0 student   (both below delta)
#   q1: 5.0 llm, 1.0 student   (one beyond delta)
#   q2: no negative
NEG = torch.tensor([1.0, 2.0, 5.0, 1.0])
NEG_GROUP = torch.tensor([0, 0, 1, 1])
NEG_STUDENT = torch.tensor([False, True, False, True])
POS, POS_GROUP = torch.tensor([0.5, 0.8, 0.4]), torch.tensor([0, 1, 2])


@pytest.mark.parametrize(
    "reduction, active, used, used_student",
    [
        ("minmax", 1, 1, 1),  # q0's max hinge is its student member (-1); q1's is 0 (the llm one at 5.0: flat)
        ("maxmin", 2, 2, 1),  # min hinge: q0 llm (-2), q1 student (-2)
        ("mean", 2, 3, 2),  # every member is used, and all but q1's llm one (flat) push; q0 -1.5, q1 -1.0
        ("weighted_mean", 2, 3, 2),
    ],
)
def test_negative_metrics_have_one_definition_under_every_reduction(reduction, active, used, used_student):
    beta = 0.2
    loss, parts = contrastive_loss(
        POS, POS_GROUP, None, NEG, NEG_GROUP, None, 3, beta, 3.0, reduction, neg_from_student=NEG_STUDENT
    )
    assert parts["questions"] == 3 and parts["neg_active"] == active
    assert parts["neg_used"] == used and parts["neg_used_student"] == used_student
    # |L_cl| split: the negative term's share from the reduced hinge values, recomputed here
    hinge = {"minmax": [-1.0, 0.0], "maxmin": [-2.0, -2.0], "mean": [-1.5, -1.0], "weighted_mean": [-1.5, -1.0]}[
        reduction
    ]
    positive = 0.5 + 0.8 + 0.4  # one positive per question: every reduction reads it
    assert parts["neg_term_abs"] == pytest.approx(beta * sum(abs(h) for h in hinge))
    assert parts["pos_term_abs"] == pytest.approx(positive)
    stats = NegativeStatistics()
    stats.add(parts, NEG, NEG_STUDENT)
    summary = stats.summary()
    assert summary["neg_active_share"] == pytest.approx(active / 3)
    assert summary["neg_student_share"] == pytest.approx(used_student / used)
    assert summary["neg_loss_quantiles"]["student"]["p50"] == pytest.approx(1.5)
    assert summary["neg_loss_quantiles"]["llm"]["count"] == 2


def test_l_d_is_logged_only_on_the_judges_update_steps():
    cfg, model, tok, examples = _setup()
    cfg.judge.enabled, cfg.judge.online_every = True, 2
    method = build_method(cfg, model, tok, "cpu", judge=QualityJudge(judge_config(model), 1))
    logged = ["l_d" in method.loss(examples[:6]).components for _ in range(4)]
    assert logged == [False, True, False, True]


def test_a_round_with_an_inactive_negative_term_prints_a_warning():
    cfg = RunConfig()
    assert "0.50%" in inactive_negatives_warning(cfg, {"round": 2, "negatives": {"neg_active_share": 0.005}})
    assert inactive_negatives_warning(cfg, {"round": 2, "negatives": {"neg_active_share": 0.02}}) is None
    assert inactive_negatives_warning(cfg, {"round": 2, "negatives": None}) is None
