"""QCRD: quality-guided contrastive rationale distillation (Wang et al., arXiv:2405.13014).

The paper's equations, as implemented here (docs/method.md explains every choice):

    s = D(x, r)                                                       (Eq. 1, discriminator.py)
    L_D = E_x[ -log( sum_pos exp(s_pos) / sum_neg exp(s_neg) ) ]      (Eq. 2, discriminator.py)
    L_cl = 1/N sum_i [ l(f(x_i), S_pos^i) - beta * l(f(x_i), S_neg^i) ]          (Eq. 3)
    l(f(x), S_pos) = s_pos * min_{r in S_pos} l(f(x), r)                         (Eq. 6)
    l(f(x), S_neg) = (1 - s_neg) * max_{r in S_neg} min(l(f(x), r) - delta, 0)   (Eq. 7)
    L_total = alpha1 * L_pred + alpha2 * L_cl + alpha3 * L_D                      (Eq. 8)

``l(f(x), r)`` is the per-token mean cross-entropy of rationale r under the ``explain:`` prompt.
The weights s are the judge's scores of the selected rationales, detached: D learns only through
``alpha3 * L_D``, and alpha3 is multiplied by ``alpha3_decay`` at every new iteration.

:func:`reference_loss` computes L_total the plain way, one equation a line. :meth:`QCRD.loss`, the
path training runs, computes the same total and gradient with less work (no-grad picks for the
min/max, no graph for a negative on the flat side of the hinge; see ``_selected_losses``), and
tests/test_qcrd_loss.py holds it equal to :func:`reference_loss`.
"""

from __future__ import annotations

import collections

import torch

from ..data import TrainExample
from ..discriminator import QualityJudge, judge_input, judge_loss, score
from .base import LossOutput, Method, encode_prompts, label_and_rationale_losses, label_loss, rationale_losses


def reference_loss(
    cfg,
    student,
    tokenizer,
    batch: list[TrainExample],
    negatives: list[list[list[int]]],
    alpha3: float,
    judge: QualityJudge | None = None,
    update_judge: bool = False,
    generator: torch.Generator | None = None,
    device="cpu",
) -> LossOutput:
    """The QCRD loss of one batch, computed the plain way: every rationale's loss with a graph,
    then Eqs. 3, 6, 7 and 8 question by question. :meth:`QCRD.loss` is an optimisation of this
    function: same total, components and gradient (tests/test_qcrd_loss.py holds the two equal)
    for a student without active dropout. Under dropout (a hub T5 keeps its 0.1) they differ in
    law, not only in draws: here a set's pick and its gradient share one dropout mask, there the
    pick is made under the no-grad pass's mask and the gradient taken under another.

    Arguments (N questions in the batch, R rationales in all their sets together):

    - ``cfg``: reads ``cfg.method`` (alpha1, alpha2, beta, delta, set_reduction), ``cfg.judge.loss``.
    - ``student``, ``tokenizer``: the student f, and its tokenizer (pad and EOS ids for the judge).
    - ``batch``: the N questions x_i; ``batch[i].positives`` is S_pos^i (token-id lists) and
      ``batch[i].label_ids`` the gold label that L_pred trains.
    - ``negatives``: S_neg^i of each question, N lists of token-id lists (:meth:`QCRD.negatives_of`).
    - ``alpha3``: the current weight of L_D (it decays every iteration).
    - ``judge``: the quality judge D, or None (every weight 1, L_D 0); ``update_judge``: D's online
      update step, L_D enters the total with a graph.
    - ``generator``: the random source of the ``sampling`` reduction.

    Tensors: ``losses``, ``s`` and the weights are [R], a set's slice [|S|]; the losses are scalars.
    Returns ``LossOutput(total, components)`` with :meth:`QCRD.loss`'s components (``l_pos``,
    ``w_pos``, ``hinge_neg``, ``w_neg``: means over the questions whose set is not empty).
    """
    m = cfg.method
    rationales, owner, is_pos = [], [], []
    for i, (ex, neg) in enumerate(zip(batch, negatives)):  # question by question: S_pos^i, then S_neg^i
        rationales += ex.positives + neg
        owner += [i] * (len(ex.positives) + len(neg))
        is_pos += [True] * len(ex.positives) + [False] * len(neg)
    # L_pred: the gold label's cross-entropy given `predict:`; l(f(x), r): per-token mean CE, [R], with a graph
    l_pred = label_loss(student, batch, device)
    losses = rationale_losses(student, batch, rationales, owner, device)
    pos_weight, neg_weight, l_d = _judge_weights(
        cfg, judge, tokenizer, batch, rationales, owner, is_pos, update_judge, device
    )
    pos_pick = neg_pick = [None] * len(batch)
    if m.set_reduction == "sampling":  # one uniform member per set: the positive sets' draw, then the negative sets'
        pos_pick = _uniform_picks([len(ex.positives) for ex in batch], generator)
        neg_pick = _uniform_picks([len(neg) for neg in negatives], generator)
    # Under maxmin the positive side takes the max and the negative side the min; otherwise min and max.
    pos_max, neg_max = m.set_reduction == "maxmin", m.set_reduction != "maxmin"
    pos_sets, neg_sets = {}, {}  # question i -> (its set's reduced loss, its set's weight)
    stop = 0
    for i, ex in enumerate(batch):
        pos = slice(stop, stop + len(ex.positives))  # S_pos^i within `losses` and the weights
        neg = slice(pos.stop, pos.stop + len(negatives[i]))  # S_neg^i
        stop = neg.stop
        if ex.positives:  # min_{r in S_pos} l(f(x), r) and s_pos  (Eq. 6; min under minmax)
            pos_sets[i] = _reduce_one_set(
                losses[pos], pos_weight[pos], losses[pos], m.set_reduction, pos_max, pos_pick[i]
            )
        if negatives[i]:
            hinged = torch.clamp(losses[neg] - m.delta, max=0.0)  # min(l(f(x), r) - delta, 0) on each negative (Eq. 7)
            # max_{r in S_neg} min(l(f(x), r) - delta, 0) and 1 - s_neg  (Eq. 7; max under minmax)
            neg_sets[i] = _reduce_one_set(hinged, neg_weight[neg], losses[neg], m.set_reduction, neg_max, neg_pick[i])
    if m.weight_norm == "batch_mean":  # ablation: each side's weights over their mean in the batch
        pos_sets, neg_sets = _over_batch_mean(pos_sets), _over_batch_mean(neg_sets)
    terms = []
    for i in range(len(batch)):
        positive_term = negative_term = losses.new_zeros(())  # an empty set adds no term
        if i in pos_sets:
            positive_term = pos_sets[i][1] * pos_sets[i][0]  # l(f(x), S_pos) = s_pos * min l  (Eq. 6)
        if i in neg_sets:
            negative_term = neg_sets[i][1] * neg_sets[i][0]  # l(f(x), S_neg) = (1 - s_neg) * max min(l - delta, 0)
        terms.append(positive_term - m.beta * negative_term)  # question i's summand of Eq. 3
    parts = {
        "l_pos": [v for v, _ in pos_sets.values()],
        "w_pos": [w for _, w in pos_sets.values()],
        "hinge_neg": [v for v, _ in neg_sets.values()],
        "w_neg": [w for _, w in neg_sets.values()],
    }
    l_cl = torch.stack(terms).mean()  # L_cl = 1/N sum_i [ l(f(x_i), S_pos^i) - beta * l(f(x_i), S_neg^i) ]  (Eq. 3)
    total = m.alpha1 * l_pred + m.alpha2 * l_cl + alpha3 * l_d  # L_total = a1 L_pred + a2 L_cl + a3 L_D  (Eq. 8)
    components = {"loss": total.item(), "l_pred": l_pred.item(), "l_cl": l_cl.item()}
    components.update((key, torch.stack(values).mean().item() if values else 0.0) for key, values in parts.items())
    if update_judge:
        components["l_d"] = l_d.item()
    return LossOutput(total, components)


def _reduce_one_set(
    values: torch.Tensor, weights: torch.Tensor, losses: torch.Tensor, how: str, pick_max: bool, pick: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One set's value and weight for :func:`reference_loss` (``values``, ``weights``, ``losses``: [|S|]).

    ``minmax``/``maxmin``: the member with the largest (``pick_max``) or smallest loss ``l(f(x), r)``,
    its value and its weight. On the negative side ``values`` are the hinged losses; the hinge never
    decreases, so that member also holds the max (min) of the hinged values, and choosing it by its
    loss decides which weight goes with a flat max. ``sampling``: member ``pick``. ``mean``: the mean
    value and the mean weight. ``weighted_mean``: the weights-weighted mean value, and weight 1.
    """
    if how == "mean":
        return values.mean(), weights.mean()
    if how == "weighted_mean":
        return (weights * values).sum() / weights.sum().clamp(min=1e-8), values.new_ones(())
    if how == "sampling":
        return values[pick], weights[pick]
    if how not in ("minmax", "maxmin"):
        raise ValueError(f"unknown set reduction {how!r}")
    j = losses.argmax() if pick_max else losses.argmin()
    return values[j], weights[j]


def _over_batch_mean(sets: dict) -> dict:
    """``method.weight_norm=batch_mean``: each question's (value, weight) with the weight divided by
    the mean weight of the batch's sets (a batch whose weights are all 0 keeps them)."""
    if not sets:
        return sets
    mean = torch.stack([w for _, w in sets.values()]).mean()
    return {i: (v, w / mean if mean > 0 else w) for i, (v, w) in sets.items()}


def _judge_weights(cfg, judge, tokenizer, batch, rationales, owner, is_pos, update_judge: bool, device) -> tuple:
    """(positive weights, negative weights, L_D) of :func:`reference_loss`: s for a positive
    (Eq. 6) and 1 - s for a negative (Eq. 7), each [R], with s = D(x, r) (Eq. 1); L_D (Eq. 2, in
    the form ``cfg.judge.loss`` names) when the judge updates. Without a judge every weight is 1."""
    ones, l_d = torch.ones(len(rationales), device=device), torch.zeros((), device=device)
    if judge is None or not rationales:
        return ones, ones, l_d
    inputs = [judge_input(batch[o].explain_ids, r, tokenizer.eos_token_id) for r, o in zip(rationales, owner)]
    with torch.set_grad_enabled(update_judge):
        s = score(judge, inputs, tokenizer.pad_token_id, device)
    if update_judge:
        group, positive = torch.tensor(owner, device=device), torch.tensor(is_pos, device=device)
        l_d = judge_loss(s, group, positive, len(batch), cfg.judge.loss)
    # Detached: no gradient reaches D through the weights; D learns through alpha3 * L_D alone.
    return s.detach(), 1.0 - s.detach(), l_d


def _uniform_picks(sizes: list[int], generator: torch.Generator | None) -> list[int]:
    """One member per set, uniformly at random, for sets of ``sizes`` (an empty set gets an unused index).
    Drawn as :func:`contrastive_loss` draws them (one multinomial over the sets, each padded with
    weight 0 to the largest), so a generator in the same state gives both the same picks."""
    width = max([1, *sizes])
    weights = torch.tensor([[1.0 if j < size or size == 0 else 0.0 for j in range(width)] for size in sizes])
    return torch.multinomial(weights, 1, generator=generator).squeeze(1).tolist()


def as_matrix(
    values: torch.Tensor, group: torch.Tensor, n_groups: int, fill: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter a flat vector into a ``[n_groups, max_set_size]`` matrix (row = question) plus a mask."""
    order = torch.argsort(group, stable=True)
    values, group = values[order], group[order]
    counts = torch.bincount(group, minlength=n_groups)
    starts = torch.cumsum(counts, 0) - counts
    column = torch.arange(len(group), device=group.device) - starts[group]
    width = max(1, int(counts.max())) if len(group) else 1
    matrix = values.new_full((n_groups, width), fill)
    matrix = matrix.index_put((group, column), values)
    mask = torch.zeros((n_groups, width), dtype=torch.bool, device=values.device)
    mask[group, column] = True
    return matrix, mask


def reduce_set(
    losses: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor,
    how: str,
    pick_max: bool,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reduce each row's set of losses to one loss and one weight.

    ``pick_max`` chooses argmax (else argmin) for the selecting reductions; the weight is that of
    the selected rationale. ``mean`` averages losses and weights; ``weighted_mean`` averages losses
    weighted by ``weights`` and returns weight 1 (the weighting already happened inside);
    ``sampling`` picks one member uniformly.

    Returns (loss [rows], weight [rows], used [rows, width]): ``used`` marks the members the
    reduction reads, the selected one or, for the means, every member of the set.
    """
    rows = torch.arange(len(losses), device=losses.device)
    if how in ("minmax", "maxmin", "sampling"):
        if how == "sampling":
            index = torch.multinomial(
                mask.float() + (~mask.any(1, keepdim=True)).float(), 1, generator=generator
            ).squeeze(1)
        else:
            masked = losses.masked_fill(~mask, float("-inf") if pick_max else float("inf"))
            index = masked.argmax(1) if pick_max else masked.argmin(1)
        used = torch.zeros_like(mask)
        used[rows, index] = True
        return losses[rows, index], weights[rows, index], used & mask
    count = mask.sum(1).clamp(min=1)
    if how == "mean":
        return (losses * mask).sum(1) / count, (weights * mask).sum(1) / count, mask
    if how == "weighted_mean":
        w = weights * mask
        return (losses * w).sum(1) / w.sum(1).clamp(min=1e-8), torch.ones_like(count, dtype=losses.dtype), mask
    raise ValueError(f"unknown set reduction {how!r}")


def contrastive_loss(
    pos_losses: torch.Tensor,
    pos_group: torch.Tensor,
    pos_scores: torch.Tensor | None,
    neg_losses: torch.Tensor,
    neg_group: torch.Tensor,
    neg_scores: torch.Tensor | None,
    n_questions: int,
    beta: float,
    delta: float,
    reduction: str = "minmax",
    generator: torch.Generator | None = None,
    neg_from_student: torch.Tensor | None = None,
    weight_norm: str = "none",
) -> tuple[torch.Tensor, dict[str, float]]:
    """L_cl (Eqs. 3, 6, 7) for a batch of ``n_questions`` questions.

    ``*_losses`` are per-rationale losses l(f(x), r) [rationales]; ``*_group`` the question each
    belongs to [rationales]; ``*_scores`` the judge's scores s [rationales] (None = no judge: every
    weight is 1). Scores are detached here whatever the caller passes, so no gradient reaches the
    judge through the weights. A question with an empty positive (negative) set contributes no
    positive (negative) term. ``neg_from_student`` [negatives] marks student negatives (else LLM).
    ``weight_norm``: ``batch_mean`` divides each side's set weights by their mean over the
    questions that have the set (``method.weight_norm``, an ablation); ``none`` is the paper's.

    Returns (L_cl, parts). ``parts`` holds round-mean values (``l_pos``, ``hinge_neg``, ``w_pos``,
    ``w_neg``) and counts the round sums up (:data:`NEGATIVE_COUNTS`), each with one meaning
    under every reduction: ``questions``; ``neg_active`` questions whose negative term is non-zero;
    ``neg_used`` negatives that push, i.e. that the reduction reads (the pick, or every member for
    the means) and whose loss is below delta, and ``neg_used_student`` those of them from the
    student; ``pos_term_abs`` / ``neg_term_abs``, the summed |positive term| and |beta x negative
    term|.
    """
    # Reductions with "max" on the positive side pair with "min" on the negative side.
    pos_pick_max = reduction == "maxmin"
    neg_pick_max = reduction != "maxmin"
    ones = lambda t: torch.ones_like(t)  # noqa: E731
    pos_w = ones(pos_losses) if pos_scores is None else pos_scores.detach()
    # Eq. 7 weights a negative by (1 - s_neg): a negative the judge finds good is pushed less.
    neg_w = ones(neg_losses) if neg_scores is None else 1.0 - neg_scores.detach()

    pos_matrix, pos_mask = as_matrix(pos_losses, pos_group, n_questions, 0.0)
    pos_w_matrix, _ = as_matrix(pos_w, pos_group, n_questions, 0.0)
    l_pos, w_pos, _ = reduce_set(pos_matrix, pos_mask, pos_w_matrix, reduction, pos_pick_max, generator)
    has_pos = pos_mask.any(1)
    if weight_norm == "batch_mean":
        w_pos = _over_present_mean(w_pos, has_pos)
    positive_term = torch.where(has_pos, w_pos * l_pos, torch.zeros_like(l_pos))

    # The hinge min(l - delta, 0) on each negative: pushed until its loss reaches delta, then free.
    hinged = torch.clamp(neg_losses - delta, max=0.0)
    neg_matrix, neg_mask = as_matrix(hinged, neg_group, n_questions, 0.0)
    neg_w_matrix, _ = as_matrix(neg_w, neg_group, n_questions, 0.0)
    h_neg, w_neg, used = reduce_set(neg_matrix, neg_mask, neg_w_matrix, reduction, neg_pick_max, generator)
    has_neg = neg_mask.any(1)
    if weight_norm == "batch_mean":
        w_neg = _over_present_mean(w_neg, has_neg)
    negative_term = torch.where(has_neg, w_neg * h_neg, torch.zeros_like(h_neg))

    loss = (positive_term - beta * negative_term).mean()
    student = torch.zeros_like(neg_losses) if neg_from_student is None else neg_from_student.to(neg_losses.dtype)
    student_matrix, _ = as_matrix(student, neg_group, n_questions, 0.0)
    # Members the reduction uses whose hinge is not flat: the negatives that push. (A flat member
    # adds nothing, and which of several flat ones a max "selects" is an arbitrary tie.)
    acting = used & (neg_matrix.detach() < 0)
    mean_of = lambda values, where: values[where].mean().item() if where.any() else 0.0  # noqa: E731
    parts = {
        "l_pos": mean_of(l_pos, has_pos),
        "hinge_neg": mean_of(h_neg, has_neg),
        "w_pos": mean_of(w_pos, has_pos),
        "w_neg": mean_of(w_neg, has_neg),
        "questions": float(n_questions),
        "neg_active": float((negative_term.detach() != 0).sum()),
        "neg_used": float(acting.sum()),
        "neg_used_student": float((student_matrix * acting).sum()),
        "pos_term_abs": float(positive_term.detach().abs().sum()),
        "neg_term_abs": float(beta * negative_term.detach().abs().sum()),
    }
    return loss, parts


def _over_present_mean(weights: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``weights`` [questions] over their mean where ``present`` (:func:`_over_batch_mean`'s rule)."""
    mean = weights[present].mean() if present.any() else weights.new_zeros(())
    return weights / mean if mean > 0 else weights


# Parts of contrastive_loss that are counts: a round sums them (NegativeStatistics), never averages.
NEGATIVE_COUNTS = ("questions", "neg_active", "neg_used", "neg_used_student", "pos_term_abs", "neg_term_abs")


class NegativeStatistics:
    """A round's account of the negative term, one meaning under every set reduction:

    - ``neg_active_share``: share of questions whose negative term is non-zero
    - ``neg_student_share``: share of the negatives that push (used by the reduction, loss below
      delta) that came from the student
    - ``neg_term_share``: the negative term's share of |L_cl| (beta |neg| / (|pos| + beta |neg|))
    - ``neg_loss_quantiles``: per source (``llm``, ``student``), the 10/50/90% quantiles of every
      negative's per-token loss l(f(x), r) seen in the round
    """

    def __init__(self):
        self.counts = dict.fromkeys(NEGATIVE_COUNTS, 0.0)
        self.losses: dict[str, list[float]] = {"llm": [], "student": []}

    def add(self, parts: dict[str, float], neg_losses: torch.Tensor, from_student: torch.Tensor) -> None:
        for key in NEGATIVE_COUNTS:
            self.counts[key] += parts[key]
        values = neg_losses.detach().float().cpu()
        self.losses["student"] += values[from_student.cpu()].tolist()
        self.losses["llm"] += values[~from_student.cpu()].tolist()

    def summary(self) -> dict:
        c = self.counts
        share = lambda a, b: a / b if b else None  # noqa: E731
        quantiles = {
            source: (
                {f"p{q}": round(float(torch.quantile(torch.tensor(v), q / 100)), 4) for q in (10, 50, 90)}
                | {"count": len(v)}
            )
            if v
            else None
            for source, v in self.losses.items()
        }
        return {
            "neg_active_share": share(c["neg_active"], c["questions"]),
            "neg_student_share": share(c["neg_used_student"], c["neg_used"]),
            "neg_term_share": share(c["neg_term_abs"], c["pos_term_abs"] + c["neg_term_abs"]),
            "neg_loss_quantiles": quantiles,
        }


class QCRD(Method):
    """The QCRD method: multi-task label loss + contrastive rationale loss + judge loss."""

    name = "qcrd"

    def __init__(self, cfg, student, tokenizer, device, judge: QualityJudge | None = None):
        super().__init__(cfg, student, tokenizer, device, judge=judge if cfg.judge.enabled else None)
        self.alpha3 = cfg.method.alpha3
        self.steps = 0  # optimizer steps: the judge's online update comes every judge.online_every
        self.loop_counts_steps = False  # True once the loop calls new_step: then loss() is one micro-batch
        # On the training device: torch.multinomial refuses a CPU generator for a CUDA tensor.
        self.generator = torch.Generator(device=device).manual_seed(cfg.training.seed)
        neg = cfg.negatives
        self.uses_student_negatives = neg.enabled and neg.source in ("student", "union")
        # Length-sorted buckets for the no-grad scoring pass, each padded only to its own longest
        # rationale: a step's rationales differ several-fold in length, and one batch padded to the
        # longest spends much of its work on padding. A bucket costs one more decoder call (the
        # encoder output is shared), which the saved padding outweighs on the CPU as well as on a
        # GPU. The measurement: docs/performance.md.
        self.bucket_size = 32
        self.negative_stats = NegativeStatistics()
        # method.selection=last_seen: each teacher rationale's loss from the last step that scored it,
        # keyed "<question id>#<index among its positives and LLM negatives>" (an approximation, off by default).
        self.last_seen: dict[str, float] = {}

    def new_step(self) -> None:
        self.steps += 1
        self.loop_counts_steps = True

    def start_iteration(self, iteration: int) -> None:
        if iteration > 1:
            self.alpha3 *= self.cfg.method.alpha3_decay

    def log_state(self) -> dict[str, float]:
        return {"alpha3": self.alpha3}

    def state_dict(self) -> dict:
        return {
            "alpha3": self.alpha3,
            "steps": self.steps,
            "generator": self.generator.get_state(),
            "last_seen": dict(self.last_seen),
        }

    def load_state_dict(self, state: dict) -> None:
        self.alpha3, self.steps = state["alpha3"], state["steps"]
        self.generator.set_state(state["generator"])
        self.last_seen = dict(state.get("last_seen", {}))

    def negative_sets(self, ex: TrainExample) -> tuple[list[list[int]], list[list[int]]]:
        """S_neg of one question under ``negatives.source``, as (LLM minority, student samples)."""
        neg = self.cfg.negatives
        if not neg.enabled:
            return [], []
        llm = ex.llm_negatives if neg.source in ("llm", "union") else []
        student = ex.student_negatives if neg.source in ("student", "union") else []
        return llm, student

    def negatives_of(self, ex: TrainExample) -> list[list[int]]:
        """S_neg of one question under ``negatives.source``."""
        llm, student = self.negative_sets(ex)
        return llm + student

    def gather(self, batch: list[TrainExample]) -> tuple[list[list[int]], list[int], list[bool], list[bool]]:
        """Every rationale of the batch: (token ids, owning question index, is-positive, from-student)."""
        rationales, owner, positive, from_student = [], [], [], []
        for q, ex in enumerate(batch):
            llm, student = self.negative_sets(ex)
            members = (
                [(r, True, False) for r in ex.positives]
                + [(r, False, False) for r in llm]
                + [(r, False, True) for r in student]
            )
            for r, is_pos, sampled_by_student in members:
                rationales.append(r), owner.append(q), positive.append(is_pos), from_student.append(sampled_by_student)
        return rationales, owner, positive, from_student

    @staticmethod
    def memory_keys(batch: list[TrainExample], owner: list[int], from_student: list[bool]) -> list[str | None]:
        """:meth:`gather`'s rationales (its ``owner`` and ``from_student``) as ``method.selection=last_seen``
        remembers them: a teacher rationale by its question and its place among that question's
        teacher rationales, a student negative not at all (each refresh samples new ones)."""
        places = collections.Counter()
        keys: list[str | None] = []
        for q, sampled_by_student in zip(owner, from_student):
            keys.append(None if sampled_by_student else f"{batch[q].id}#{places[q]}")
            places[q] += not sampled_by_student
        return keys

    def pop_round_statistics(self) -> dict:
        stats, self.negative_stats = self.negative_stats.summary(), NegativeStatistics()
        return stats

    def loss(self, batch: list[TrainExample]) -> LossOutput:
        cfg, device = self.cfg, self.device
        if not self.loop_counts_steps:  # called directly (tests, benchmarks): each call is one step
            self.steps += 1
        rationales, owner, positive, from_student = self.gather(batch)
        # One encoder pass for both prompts; every decoding below reads it.
        encoded = encode_prompts(self.student, batch, device, ("predict", "explain") if rationales else ("predict",))
        if not rationales:
            l_pred = label_loss(self.student, batch, device, encoded["predict"])
            return LossOutput(cfg.method.alpha1 * l_pred, {"l_pred": l_pred.item()})
        group = torch.tensor(owner, device=device)
        is_pos = torch.tensor(positive, device=device)
        is_student = torch.tensor(from_student, device=device)

        # Online judge update (Eq. 2) on every rationale of the batch, every `online_every` steps.
        l_d = torch.zeros((), device=device)
        online = self.judge is not None and cfg.judge.online_every > 0 and self.steps % cfg.judge.online_every == 0
        all_scores = None
        if online:
            all_scores = self._scores(batch, rationales, owner)
            l_d = judge_loss(all_scores, group, is_pos, len(batch), cfg.judge.loss)

        if cfg.method.set_reduction in ("minmax", "maxmin"):
            l_pred, losses, keep, every_loss = self._selected_losses(
                batch, rationales, owner, group, is_pos, encoded, self._remembered(batch, owner, from_student)
            )
            negative_losses = every_loss[~is_pos]
            negative_sources = is_student[~is_pos]
            rationales = [rationales[i] for i in keep]
            owner = [owner[i] for i in keep]
            group, is_pos, is_student = group[keep], is_pos[keep], is_student[keep]
            all_scores = None if all_scores is None else all_scores[keep]
        else:
            l_pred, losses = label_and_rationale_losses(self.student, batch, rationales, owner, device, encoded)
            negative_losses, negative_sources = losses[~is_pos], is_student[~is_pos]

        scores = None
        if self.judge is not None:
            scores = (
                all_scores.detach() if all_scores is not None else self._scores(batch, rationales, owner, grad=False)
            )

        l_cl, parts = contrastive_loss(
            losses[is_pos],
            group[is_pos],
            None if scores is None else scores[is_pos],
            losses[~is_pos],
            group[~is_pos],
            None if scores is None else scores[~is_pos],
            len(batch),
            cfg.method.beta,
            cfg.method.delta,
            cfg.method.set_reduction,
            self.generator,
            is_student[~is_pos],
            cfg.method.weight_norm,
        )
        self.negative_stats.add(parts, negative_losses, negative_sources)
        m = cfg.method
        total = m.alpha1 * l_pred + m.alpha2 * l_cl + self.alpha3 * l_d
        components = {"loss": total.item(), "l_pred": l_pred.item(), "l_cl": l_cl.item()}
        components.update((k, v) for k, v in parts.items() if k not in NEGATIVE_COUNTS)
        if online:  # a round's l_d averages only the steps that updated the judge
            components["l_d"] = l_d.item()
        return LossOutput(total, components)

    def _scores(self, batch, rationales, owner, grad: bool = True) -> torch.Tensor:
        """s = D(x, r) for each rationale (Eq. 1)."""
        eos = self.tokenizer.eos_token_id
        inputs = [judge_input(batch[o].explain_ids, r, eos) for r, o in zip(rationales, owner)]
        with torch.set_grad_enabled(grad):
            return score(self.judge, inputs, self.tokenizer.pad_token_id, self.device)

    def _remembered(self, batch, owner, from_student) -> tuple[list[str | None], dict[int, float]] | None:
        """Under ``method.selection=last_seen``: the batch's memory keys and the remembered losses
        (by position in :meth:`gather`'s order); None under the exact ``every_step``."""
        if self.cfg.method.selection != "last_seen":
            return None
        keys = self.memory_keys(batch, owner, from_student)
        return keys, {i: self.last_seen[k] for i, k in enumerate(keys) if k in self.last_seen}

    def _selected_losses(
        self, batch, rationales, owner, group, is_pos, encoded, remembered=None
    ) -> tuple[torch.Tensor, torch.Tensor, list[int], torch.Tensor]:
        """Under min/max reductions: L_pred, the losses of the rationale each set selects, their
        indices, and every rationale's loss (detached; for the statistics).

        min/max pick one rationale per set, and the gradient of a min (max) is that of the selected
        member. So the picks are made under no_grad (length-bucketed), and only the picks are
        decoded again with a graph: same loss value and gradient as the full computation (without
        active dropout: see :func:`reference_loss`), at a fraction of the cost. Two more exact
        savings: a set with one member needs no pick, and a picked negative whose loss is already
        above delta sits on the flat side of Eq. 7's hinge (value 0, gradient 0), so it needs no
        graph either: its no-grad loss stands in.
        Both passes read the step's one encoding of the prompts (``encoded``), the no-grad pass a
        detached view of it; the picks are decoded together with the labels (L_pred), in one
        decoder call where the student allows it (``label_and_rationale_losses``).

        ``remembered`` (``method.selection=last_seen``, approximate): (keys, losses by position) from
        :meth:`_remembered`. A remembered rationale is not scored; its last loss stands in for the
        picks and the flat test, and every scored or picked rationale's loss is remembered.
        """
        device, delta = self.device, self.cfg.method.delta
        explain = encoded["explain"]
        n = len(batch)
        sizes = torch.bincount(group * 2 + is_pos.long(), minlength=2 * n)  # members per (question, side)
        crowded = (sizes[group * 2 + is_pos.long()] > 1).tolist()
        keys, known = remembered or (None, {})
        scored = [i for i, c in enumerate(crowded) if c and i not in known]
        no_grad_losses = torch.full((len(rationales),), float("nan"), device=device)
        if known:
            no_grad_losses[list(known)] = torch.tensor(list(known.values()), device=device)
        if scored:
            with torch.no_grad():
                no_grad_losses[scored] = rationale_losses(
                    self.student,
                    batch,
                    [rationales[i] for i in scored],
                    [owner[i] for i in scored],
                    device,
                    bucket_size=self.bucket_size,
                    encoded=None if explain is None else (explain[0].detach(), explain[1]),
                )
        # Singletons are their set's pick whatever their loss (NaN never wins an argmin/argmax here).
        keep = self._selected(no_grad_losses.nan_to_num(0.0), group, is_pos, n)
        # A negative above delta is flat; a singleton's NaN never is (NaN > delta is False).
        flat = (~is_pos & (no_grad_losses > delta)).tolist()
        graph = [k for k, i in enumerate(keep) if not flat[i]]  # positions in `keep` that need a graph
        l_pred, with_grad = label_and_rationale_losses(
            self.student, batch, [rationales[keep[k]] for k in graph], [owner[keep[k]] for k in graph], device, encoded
        )
        losses = no_grad_losses[keep].clone()
        if graph:
            losses = losses.index_put((torch.tensor(graph, device=device),), with_grad)
        every_loss = no_grad_losses.index_put((torch.tensor(keep, device=device),), losses.detach())
        if keys is not None:
            self.last_seen.update(
                (k, v) for k, v in zip(keys, every_loss.tolist()) if k is not None and v == v
            )  # v == v: not NaN (a singleton neither scored nor picked)
        return l_pred, losses, keep, every_loss

    def _selected(self, losses: torch.Tensor, group: torch.Tensor, is_pos: torch.Tensor, n: int) -> list[int]:
        """Indices of the rationale each set's min/max picks (the argmin positive, the argmax negative
        under minmax)."""
        keep = []
        for side, pick_max in (
            (is_pos, self.cfg.method.set_reduction == "maxmin"),
            (~is_pos, self.cfg.method.set_reduction != "maxmin"),
        ):
            index = torch.nonzero(side).squeeze(1)
            if len(index) == 0:
                continue
            matrix, mask = as_matrix(index.float(), group[index], n, -1.0)
            values, _ = as_matrix(losses[index], group[index], n, 0.0)
            masked = values.masked_fill(~mask, float("-inf") if pick_max else float("inf"))
            column = masked.argmax(1) if pick_max else masked.argmin(1)
            chosen = matrix[torch.arange(n, device=matrix.device), column]
            keep += [int(i) for i in chosen[mask.any(1)].tolist()]
        return sorted(keep)
