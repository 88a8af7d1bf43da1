"""The QCRD contrastive loss (Eqs. 3, 6, 7) on hand-computed tensors, and on a real tiny model:
the fast path (QCRD.loss) against the plain reference_loss, and against the full computation."""

import copy
import dataclasses
import io
import random
import sys
from pathlib import Path

import pytest
import torch
from conftest import synth_training_set

from qcrd_plugin.config import RunConfig, SynthTaskConfig
from qcrd_plugin.discriminator import QualityJudge
from qcrd_plugin.methods.base import label_loss, rationale_losses
from qcrd_plugin.methods.qcrd import QCRD, NegativeStatistics, contrastive_loss, reference_loss


def hand_case():
    # Question 0: positives l = [2.0, 1.0] (s = .9, .5); negatives l = [1.0, 2.5] (s = .2, .6)
    # Question 1: positive  l = [3.0]      (s = 1.);    negative  l = [4.0]      (s = 0.)
    pos = torch.tensor([2.0, 1.0, 3.0], requires_grad=True)
    neg = torch.tensor([1.0, 2.5, 4.0], requires_grad=True)
    pos_s = torch.tensor([0.9, 0.5, 1.0], requires_grad=True)
    neg_s = torch.tensor([0.2, 0.6, 0.0], requires_grad=True)
    group = torch.tensor([0, 0, 1])
    return pos, group, pos_s, neg, group.clone(), neg_s


def test_minmax_selection_and_hinge_by_hand():
    pos, pg, ps, neg, ng, ns = hand_case()
    loss, _ = contrastive_loss(pos, pg, ps, neg, ng, ns, n_questions=2, beta=0.2, delta=3.0)
    # q0: min positive 1.0 weighted by its s=.5 -> .5; max negative 2.5 -> hinge min(2.5-3, 0) = -.5,
    #     weighted by 1 - .6 = .4 -> -.2; L0 = .5 - .2 * (-.2) = .54
    # q1: 1.0 * 3.0 = 3.0; negative 4.0 is past delta -> hinge 0; L1 = 3.0
    assert loss.item() == pytest.approx((0.54 + 3.0) / 2)
    loss.backward()
    # Only the selected members get gradient; the negative past the margin gets none.
    assert pos.grad.tolist() == pytest.approx([0.0, 0.5 / 2, 1.0 / 2])
    assert neg.grad.tolist() == pytest.approx([0.0, -0.2 * 0.4 / 2, 0.0])
    # Weights are detached: nothing flows back into the judge's scores.
    assert ps.grad is None and ns.grad is None


def test_hinge_stops_at_delta():
    pos, pg, ps, neg, ng, ns = hand_case()
    below, _ = contrastive_loss(pos, pg, None, torch.tensor([2.9]), torch.tensor([0]), None, 2, 1.0, 3.0)
    at, _ = contrastive_loss(pos, pg, None, torch.tensor([3.0]), torch.tensor([0]), None, 2, 1.0, 3.0)
    beyond, _ = contrastive_loss(pos, pg, None, torch.tensor([7.0]), torch.tensor([0]), None, 2, 1.0, 3.0)
    assert at.item() == pytest.approx(beyond.item())
    assert below.item() == pytest.approx(at.item() + 0.1 / 2)


def test_no_judge_means_unit_weights_and_empty_sets_add_nothing():
    pos, pg, _, neg, ng, _ = hand_case()
    loss, _ = contrastive_loss(pos, pg, None, neg, ng, None, 2, 0.2, 3.0)
    assert loss.item() == pytest.approx((1.0 - 0.2 * -0.5 + 3.0) / 2)
    only_pos, _ = contrastive_loss(pos, pg, None, torch.zeros(0), torch.zeros(0, dtype=torch.long), None, 2, 0.2, 3.0)
    assert only_pos.item() == pytest.approx((1.0 + 3.0) / 2)


def test_other_set_reductions():
    pos, pg, ps, neg, ng, ns = hand_case()
    maxmin, _ = contrastive_loss(pos, pg, ps, neg, ng, ns, 2, 0.2, 3.0, "maxmin")
    # q0: max positive 2.0 (s .9) -> 1.8; min negative 1.0 -> hinge -2 weighted .8 -> -1.6; L0 = 1.8 + .32
    assert maxmin.item() == pytest.approx((1.8 + 0.2 * 1.6 + 3.0) / 2)
    mean, _ = contrastive_loss(pos, pg, ps, neg, ng, ns, 2, 0.2, 3.0, "mean")
    q0 = 0.7 * 1.5 - 0.2 * 0.6 * (-1.25)
    assert mean.item() == pytest.approx((q0 + 3.0) / 2)


@pytest.fixture(scope="module")
def tiny_setup():
    cfg = RunConfig()
    cfg.task = SynthTaskConfig(n_train=12, n_valid=2, n_test=2)
    model, tok, examples = synth_training_set(cfg, 1.2)
    for ex in examples:  # stand-in student negatives: a positive with its tail cut
        ex.student_negatives = (
            [ex.positives[0][: len(ex.positives[0]) // 2] + [tok.eos_token_id]] if ex.positives else []
        )
    return cfg, model, tok, examples


@pytest.mark.parametrize("delta", ["all_flat", "median"])
def test_efficient_minmax_step_equals_the_full_computation(tiny_setup, delta):
    """The no-grad picks, the skipped singletons and the graph-free flat negatives give the loss
    value and the gradient of computing every rationale's loss with a graph."""
    cfg, model, tok, examples = tiny_setup
    torch.manual_seed(0)
    judge = QualityJudge(model.config, 1)
    cfg.judge.online_every = 0
    rationales, owner, positive, from_student = QCRD(cfg, model, tok, "cpu", judge=judge).gather(examples)
    is_pos, group, is_student = torch.tensor(positive), torch.tensor(owner), torch.tensor(from_student)
    with torch.no_grad():
        neg_losses = rationale_losses(model, examples, rationales, owner, "cpu")[~is_pos]
    # "median": half the negatives sit below delta (active hinge), half above (flat).
    # (midway between two neighbours, so that no loss sits exactly on the hinge's corner).
    ordered = neg_losses.sort().values
    middle = len(ordered) // 2
    cfg.method.delta = (
        float(ordered[middle - 1] + ordered[middle]) / 2 if delta == "median" else float(ordered[0]) - 1e-3
    )
    method = QCRD(cfg, model, tok, "cpu", judge=judge)
    model.zero_grad()
    out = method.loss(examples)
    out.total.backward()
    fast_grad = [p.grad.clone() for p in model.parameters()]
    fast_stats = method.pop_round_statistics()

    # Full computation: every rationale with gradient, then the same contrastive_loss.
    model.zero_grad()
    losses = rationale_losses(model, examples, rationales, owner, "cpu")
    scores = method._scores(examples, rationales, owner, grad=False)
    l_cl, parts = contrastive_loss(
        losses[is_pos],
        group[is_pos],
        scores[is_pos],
        losses[~is_pos],
        group[~is_pos],
        scores[~is_pos],
        len(examples),
        cfg.method.beta,
        cfg.method.delta,
        neg_from_student=is_student[~is_pos],
    )
    assert l_cl.item() == pytest.approx(out.components["l_cl"], rel=1e-5)
    # The negative-term statistics of the fast step equal those of the full computation.
    full_stats = NegativeStatistics()
    full_stats.add(parts, losses[~is_pos], is_student[~is_pos])
    full_summary = full_stats.summary()
    for key in ("neg_active_share", "neg_student_share", "neg_term_share"):
        expected = full_summary[key]  # None: no negative pushes (all flat)
        assert fast_stats[key] == (None if expected is None else pytest.approx(expected, rel=1e-4, abs=1e-7)), key
    for source in ("llm", "student"):
        assert fast_stats["neg_loss_quantiles"][source] == pytest.approx(
            full_summary["neg_loss_quantiles"][source], rel=1e-4
        )
    (cfg.method.alpha1 * label_loss(model, examples, "cpu") + cfg.method.alpha2 * l_cl).backward()
    for fast, full in zip(fast_grad, (p.grad for p in model.parameters())):
        assert torch.allclose(fast, full, atol=1e-6, rtol=1e-4)


def test_gradient_reaches_the_student_and_not_the_judge_through_the_weights(tiny_setup):
    cfg, model, tok, examples = tiny_setup
    judge = QualityJudge(model.config, 1)
    cfg.judge.online_every = 0  # no L_D this step: only L_pred + L_cl, whose weights come from D
    model.zero_grad()
    out = QCRD(cfg, model, tok, "cpu", judge=judge).loss(examples)
    out.total.backward()
    assert all(p.grad is None for p in judge.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # With the online update on, L_D does train the judge.
    cfg.judge.online_every = 1
    model.zero_grad()
    QCRD(cfg, model, tok, "cpu", judge=judge).loss(examples).total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in judge.parameters())


def random_batch(examples, tok, rng: random.Random, size: int = 6):
    """``size`` questions drawn from ``examples``, each with 0-2 random student negatives (a
    positive cut at a random point, or random tokens), so that the sets vary in size."""
    vocab = range(5, tok.vocab_size)
    batch = []
    for ex in rng.sample(examples, size):
        student = []
        for _ in range(rng.randint(0, 2)):
            base = (
                rng.choice(ex.positives)
                if ex.positives and rng.random() < 0.5
                else [rng.choice(vocab) for _ in range(rng.randint(3, 30))]
            )
            student.append(base[: rng.randint(1, len(base))] + [tok.eos_token_id])
        batch.append(dataclasses.replace(ex, student_negatives=student))
    return batch


def random_delta(model, batch, negatives, rng: random.Random) -> float:
    """A margin between two neighbouring negative losses of the upper half: some hinges act and
    some are flat, also for the max of a set (and no loss sits on the hinge's corner)."""
    rationales = [r for neg in negatives for r in neg]
    owner = [i for i, neg in enumerate(negatives) for _ in neg]
    with torch.no_grad():
        ordered = rationale_losses(model, batch, rationales, owner, "cpu").sort().values
    if len(ordered) < 2:
        return 3.0
    k = rng.randrange(max(1, len(ordered) // 2), len(ordered))
    return float(ordered[k - 1] + ordered[k]) / 2


@pytest.mark.parametrize("source", ["llm", "union"])  # without and with student negatives
@pytest.mark.parametrize("judging", ["none", "weights", "online"])  # no judge; judge weights only; weights and L_D
@pytest.mark.parametrize("reduction", ["minmax", "maxmin", "mean", "weighted_mean", "sampling"])
def test_fast_path_equals_reference_loss(tiny_setup, reduction, judging, source):
    """QCRD.loss, the optimised path, gives reference_loss's total, components and gradients
    (student and judge) on several random batches."""
    assert_fast_path_equals_reference(tiny_setup, reduction, judging, source)


@pytest.mark.parametrize("reduction", ["minmax", "maxmin", "mean", "sampling"])
def test_fast_path_equals_reference_loss_with_batch_mean_weights(tiny_setup, reduction):
    """The ``method.weight_norm=batch_mean`` ablation is the same in both paths, and its logged
    set weights average exactly 1 over the batch: the judge moves weight, it does not shrink it."""
    fast, paper = assert_fast_path_equals_reference(tiny_setup, reduction, "weights", "union", "batch_mean")
    assert fast.components["w_pos"] == pytest.approx(1.0) and fast.components["w_neg"] == pytest.approx(1.0)
    assert paper.components["w_pos"] != pytest.approx(1.0)  # the paper's weights: the judge's scores


def assert_fast_path_equals_reference(tiny_setup, reduction, judging, source, weight_norm="none"):
    """Assert QCRD.loss equals reference_loss on one random batch of this setting; returns the fast
    path's output and, for comparison, the fast path's output under the paper's weights."""
    base_cfg, model, tok, examples = tiny_setup
    rng = random.Random(f"{reduction}-{judging}-{source}" + ("" if weight_norm == "none" else weight_norm))
    for _ in range(1):  # one random batch per setting: 30 settings keep the suite's time in bounds
        cfg = copy.deepcopy(base_cfg)
        cfg.method.set_reduction, cfg.negatives.source, cfg.method.alpha3 = reduction, source, 0.3
        cfg.method.weight_norm = weight_norm
        cfg.judge.enabled, cfg.judge.online_every = judging != "none", 1 if judging == "online" else 0
        torch.manual_seed(rng.randrange(2**31))
        judge = QualityJudge(model.config, 1) if judging != "none" else None
        modules = [model] + ([judge] if judge is not None else [])
        batch = random_batch(examples, tok, rng)
        negatives = [QCRD(cfg, model, tok, "cpu", judge=judge).negatives_of(ex) for ex in batch]
        cfg.method.delta = random_delta(model, batch, negatives, rng)

        def loss_and_gradient(compute):
            for module in modules:
                module.zero_grad()
            out = compute()
            out.total.backward()
            return out, [
                torch.zeros_like(p) if p.grad is None else p.grad.clone()
                for module in modules
                for p in module.parameters()
            ]

        fast, fast_grad = loss_and_gradient(lambda: QCRD(cfg, model, tok, "cpu", judge=judge).loss(batch))
        ref, ref_grad = loss_and_gradient(
            lambda: reference_loss(
                cfg,
                model,
                tok,
                batch,
                negatives,
                cfg.method.alpha3,
                judge=judge,
                update_judge=judging == "online",
                generator=torch.Generator().manual_seed(cfg.training.seed),
            )
        )  # QCRD's sampling generator, in its initial state
        assert fast.total.item() == pytest.approx(ref.total.item(), rel=1e-5, abs=1e-5)
        assert fast.components.keys() == ref.components.keys()
        for key, value in ref.components.items():
            assert fast.components[key] == pytest.approx(value, rel=1e-5, abs=1e-5), key
        for a, b in zip(fast_grad, ref_grad):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
        cfg.method.weight_norm = "none"
        paper = QCRD(cfg, model, tok, "cpu", judge=judge).loss(batch)
    return fast, paper


def test_last_seen_selection_is_off_by_default_and_picks_by_the_remembered_losses(tiny_setup):
    """``method.selection=last_seen`` (approximate): a batch nothing is remembered of gets the exact
    step; afterwards each set's pick follows the remembered losses, not the current ones."""
    from qcrd_plugin.config import load_config
    from qcrd_plugin.errors import ConfigError

    assert RunConfig().method.selection == "every_step"
    with pytest.raises(ConfigError, match="key 'method.selection'"):
        load_config(None, ["method.selection=last_seen", "method.set_reduction=mean"])
    cfg, model, tok, examples = copy.deepcopy(tiny_setup)
    cfg.judge.enabled, cfg.negatives.enabled = False, False  # positive sets only: unit weights, one min each
    batch = [ex for ex in examples if len(ex.positives) > 1][:4]
    exact = QCRD(cfg, model, tok, "cpu")
    exact_out = exact.loss(batch)
    assert exact.last_seen == {}  # the exact default remembers nothing

    cfg.method.selection = "last_seen"
    method = QCRD(cfg, model, tok, "cpu")
    assert method.loss(batch).total.item() == pytest.approx(exact_out.total.item(), rel=1e-6)
    rationales, owner, _, from_student = method.gather(batch)
    keys = method.memory_keys(batch, owner, from_student)
    assert set(method.last_seen) == set(keys)  # every member scored once is remembered
    with torch.no_grad():
        current = rationale_losses(model, batch, rationales, owner, "cpu")
    worst = [max((i for i, o in enumerate(owner) if o == q), key=lambda i: current[i]) for q in range(len(batch))]
    for i in worst:  # remembered as the easiest member: last_seen now picks the hardest positive
        method.last_seen[keys[i]] = -1.0
    stale = method.loss(batch)
    assert stale.components["l_pos"] == pytest.approx(float(current[worst].mean()), rel=1e-5)
    assert exact_out.components["l_pos"] < stale.components["l_pos"]  # the exact step takes each set's min
    # The memory is part of the method's state: a resumed run picks as the killed one would have.
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    resumed = QCRD(cfg, model, tok, "cpu")
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert resumed.last_seen == method.last_seen and len(resumed.last_seen) == len(keys)


def test_the_benchmarks_direct_qcrd_reference_gives_the_efficient_steps_loss(tiny_setup):
    """benchmarks/bench_ratios.py times a DirectQCRD (every rationale's loss with a graph) beside
    QCRD; it overrides a method of QCRD, so a change of that method's signature or result shows
    here, not first in `make bench`."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from bench_ratios import DirectQCRD

    cfg, model, tok, examples = tiny_setup
    torch.manual_seed(0)
    judge = QualityJudge(model.config, 1)
    cfg = copy.deepcopy(cfg)
    cfg.judge.online_every = 0
    efficient = QCRD(cfg, model, tok, "cpu", judge=judge).loss(examples)
    direct = DirectQCRD(cfg, model, tok, "cpu", judge=judge).loss(examples)
    assert direct.total.item() == pytest.approx(efficient.total.item(), rel=1e-5)
    assert direct.components["l_cl"] == pytest.approx(efficient.components["l_cl"], rel=1e-5)
