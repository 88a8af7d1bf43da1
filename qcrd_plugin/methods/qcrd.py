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
"""

from __future__ import annotations

import torch

from ..data import TrainExample
from ..discriminator import QualityJudge, judge_input, judge_loss, score
from .base import LossOutput, Method, encode_prompts, label_and_rationale_losses, label_loss, rationale_losses


def as_matrix(values: torch.Tensor, group: torch.Tensor, n_groups: int, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
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


def reduce_set(losses: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor, how: str, pick_max: bool,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduce each row's set of losses to one loss and one weight.

    ``pick_max`` chooses argmax (else argmin) for the selecting reductions; the weight is that of
    the selected rationale. ``mean`` averages losses and weights; ``weighted_mean`` averages losses
    weighted by ``weights`` and returns weight 1 (the weighting already happened inside);
    ``sampling`` picks one member uniformly.
    """
    if how in ("minmax", "maxmin", "sampling"):
        if how == "sampling":
            index = torch.multinomial(mask.float() + (~mask.any(1, keepdim=True)).float(), 1, generator=generator).squeeze(1)
        else:
            masked = losses.masked_fill(~mask, float("-inf") if pick_max else float("inf"))
            index = masked.argmax(1) if pick_max else masked.argmin(1)
        rows = torch.arange(len(losses), device=losses.device)
        return losses[rows, index], weights[rows, index]
    count = mask.sum(1).clamp(min=1)
    if how == "mean":
        return (losses * mask).sum(1) / count, (weights * mask).sum(1) / count
    if how == "weighted_mean":
        w = weights * mask
        return (losses * w).sum(1) / w.sum(1).clamp(min=1e-8), torch.ones_like(count, dtype=losses.dtype)
    raise ValueError(f"unknown set reduction {how!r}")


def contrastive_loss(
    pos_losses: torch.Tensor, pos_group: torch.Tensor, pos_scores: torch.Tensor | None,
    neg_losses: torch.Tensor, neg_group: torch.Tensor, neg_scores: torch.Tensor | None,
    n_questions: int, beta: float, delta: float, reduction: str = "minmax",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L_cl (Eqs. 3, 6, 7) for a batch of ``n_questions`` questions.

    ``*_losses`` are per-rationale losses l(f(x), r); ``*_group`` the question each belongs to;
    ``*_scores`` the judge's scores s (None = no judge: every weight is 1). Scores are detached
    here whatever the caller passes, so no gradient reaches the judge through the weights.
    A question with an empty positive (negative) set contributes no positive (negative) term.
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
    l_pos, w_pos = reduce_set(pos_matrix, pos_mask, pos_w_matrix, reduction, pos_pick_max, generator)
    has_pos = pos_mask.any(1)
    positive_term = torch.where(has_pos, w_pos * l_pos, torch.zeros_like(l_pos))

    # The hinge min(l - delta, 0) on each negative: pushed until its loss reaches delta, then free.
    hinged = torch.clamp(neg_losses - delta, max=0.0)
    neg_matrix, neg_mask = as_matrix(hinged, neg_group, n_questions, 0.0)
    neg_w_matrix, _ = as_matrix(neg_w, neg_group, n_questions, 0.0)
    h_neg, w_neg = reduce_set(neg_matrix, neg_mask, neg_w_matrix, reduction, neg_pick_max, generator)
    has_neg = neg_mask.any(1)
    negative_term = torch.where(has_neg, w_neg * h_neg, torch.zeros_like(h_neg))

    loss = (positive_term - beta * negative_term).mean()
    parts = {
        "l_pos": l_pos[has_pos].mean().item() if has_pos.any() else 0.0,
        "hinge_neg": h_neg[has_neg].mean().item() if has_neg.any() else 0.0,
        "l_neg_raw": neg_losses.detach().mean().item() if len(neg_losses) else 0.0,
        "neg_active": float((neg_losses < delta).float().mean()) if len(neg_losses) else 0.0,
        "w_pos": w_pos[has_pos].mean().item() if has_pos.any() else 0.0,
        "w_neg": w_neg[has_neg].mean().item() if has_neg.any() else 0.0,
    }
    return loss, parts


class QCRD(Method):
    """The QCRD method: multi-task label loss + contrastive rationale loss + judge loss."""

    name = "qcrd"

    def __init__(self, cfg, student, tokenizer, device, judge: QualityJudge | None = None):
        super().__init__(cfg, student, tokenizer, device, judge=judge if cfg.judge.enabled else None)
        self.alpha3 = cfg.method.alpha3
        self.steps = 0
        self.generator = torch.Generator().manual_seed(cfg.training.seed)
        neg = cfg.negatives
        self.uses_student_negatives = neg.enabled and neg.source in ("student", "union")
        # Length-sorted buckets for the no-grad scoring pass, each padded only to its own longest
        # rationale. Default CPU setup (94 rationales of 20-65 tokens): the pass alone takes 54 ms
        # in one batch and 43-45 ms in buckets of 32 or 48 (a whole QCRD step: 1-2% faster).
        self.bucket_size = 32

    def start_iteration(self, iteration: int) -> None:
        if iteration > 1:
            self.alpha3 *= self.cfg.method.alpha3_decay

    def log_state(self) -> dict[str, float]:
        return {"alpha3": self.alpha3}

    def state_dict(self) -> dict:
        return {"alpha3": self.alpha3, "steps": self.steps, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.alpha3, self.steps = state["alpha3"], state["steps"]
        self.generator.set_state(state["generator"])

    def negatives_of(self, ex: TrainExample) -> list[list[int]]:
        """S_neg of one question under ``negatives.source``."""
        neg = self.cfg.negatives
        if not neg.enabled:
            return []
        llm = ex.llm_negatives if neg.source in ("llm", "union") else []
        student = ex.student_negatives if neg.source in ("student", "union") else []
        return llm + student

    def gather(self, batch: list[TrainExample]) -> tuple[list[list[int]], list[int], list[bool]]:
        """Every rationale of the batch: (token ids, owning question index, is-positive)."""
        rationales, owner, positive = [], [], []
        for q, ex in enumerate(batch):
            for r, is_pos in [(r, True) for r in ex.positives] + [(r, False) for r in self.negatives_of(ex)]:
                rationales.append(r), owner.append(q), positive.append(is_pos)
        return rationales, owner, positive

    def loss(self, batch: list[TrainExample]) -> LossOutput:
        cfg, device = self.cfg, self.device
        self.steps += 1
        rationales, owner, positive = self.gather(batch)
        # One encoder pass for both prompts; every decoding below reads it.
        encoded = encode_prompts(self.student, batch, device, ("predict", "explain") if rationales else ("predict",))
        if not rationales:
            l_pred = label_loss(self.student, batch, device, encoded["predict"])
            return LossOutput(cfg.method.alpha1 * l_pred, {"l_pred": l_pred.item()})
        group = torch.tensor(owner, device=device)
        is_pos = torch.tensor(positive, device=device)

        # Online judge update (Eq. 2) on every rationale of the batch, every `online_every` steps.
        l_d = torch.zeros((), device=device)
        online = self.judge is not None and cfg.judge.online_every > 0 and self.steps % cfg.judge.online_every == 0
        all_scores = None
        if online:
            all_scores = self._scores(batch, rationales, owner)
            l_d = judge_loss(all_scores, group, is_pos, len(batch), cfg.judge.loss)

        if cfg.method.set_reduction in ("minmax", "maxmin"):
            l_pred, losses, keep = self._selected_losses(batch, rationales, owner, group, is_pos, encoded)
            rationales = [rationales[i] for i in keep]
            owner = [owner[i] for i in keep]
            group, is_pos = group[keep], is_pos[keep]
            all_scores = None if all_scores is None else all_scores[keep]
        else:
            l_pred, losses = label_and_rationale_losses(self.student, batch, rationales, owner, device, encoded)

        scores = None
        if self.judge is not None:
            scores = all_scores.detach() if all_scores is not None else self._scores(batch, rationales, owner, grad=False)

        l_cl, parts = contrastive_loss(
            losses[is_pos], group[is_pos], None if scores is None else scores[is_pos],
            losses[~is_pos], group[~is_pos], None if scores is None else scores[~is_pos],
            len(batch), cfg.method.beta, cfg.method.delta, cfg.method.set_reduction, self.generator,
        )
        m = cfg.method
        total = m.alpha1 * l_pred + m.alpha2 * l_cl + self.alpha3 * l_d
        components = {"loss": total.item(), "l_pred": l_pred.item(), "l_cl": l_cl.item(), "l_d": l_d.item(), **parts}
        if scores is not None:
            components["judge_score_pos"] = float(scores[is_pos].mean()) if is_pos.any() else 0.0
            components["judge_score_neg"] = float(scores[~is_pos].mean()) if (~is_pos).any() else 0.0
        return LossOutput(total, components)

    def _scores(self, batch, rationales, owner, grad: bool = True) -> torch.Tensor:
        """s = D(x, r) for each rationale (Eq. 1)."""
        eos = self.tokenizer.eos_token_id
        inputs = [judge_input(batch[o].explain_ids, r, eos) for r, o in zip(rationales, owner)]
        with torch.set_grad_enabled(grad):
            return score(self.judge, inputs, self.tokenizer.pad_token_id, self.device)

    def _selected_losses(self, batch, rationales, owner, group, is_pos, encoded) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Under min/max reductions: L_pred, the losses of the rationale each set selects, and their indices.

        min/max pick one rationale per set, and the gradient of a min (max) is that of the selected
        member. So the picks are made under no_grad (length-bucketed), and only the picks are
        decoded again with a graph: same loss value and gradient as the full computation, at a
        fraction of the cost. Two more exact savings: a set with one member needs no pick, and a
        picked negative whose loss is already above delta sits on the flat side of Eq. 7's hinge
        (value 0, gradient 0), so it needs no graph either: its no-grad loss stands in.
        Both passes read the step's one encoding of the prompts (``encoded``), the no-grad pass a
        detached view of it; the picks are decoded together with the labels (L_pred), in one
        decoder call where the student allows it (``label_and_rationale_losses``).
        """
        device, delta = self.device, self.cfg.method.delta
        explain = encoded["explain"]
        n = len(batch)
        sizes = torch.bincount(group * 2 + is_pos.long(), minlength=2 * n)  # members per (question, side)
        crowded = (sizes[group * 2 + is_pos.long()] > 1).tolist()
        scored = [i for i, c in enumerate(crowded) if c]
        no_grad_losses = torch.full((len(rationales),), float("nan"), device=device)
        if scored:
            with torch.no_grad():
                no_grad_losses[scored] = rationale_losses(self.student, batch, [rationales[i] for i in scored], [owner[i] for i in scored],
                                                          device, bucket_size=self.bucket_size,
                                                          encoded=None if explain is None else (explain[0].detach(), explain[1]))
        # Singletons are their set's pick whatever their loss (NaN never wins an argmin/argmax here).
        keep = self._selected(no_grad_losses.nan_to_num(0.0), group, is_pos, n)
        # A negative above delta is flat; a singleton's NaN never is (NaN > delta is False).
        flat = (~is_pos & (no_grad_losses > delta)).tolist()
        graph = [k for k, i in enumerate(keep) if not flat[i]]  # positions in `keep` that need a graph
        l_pred, with_grad = label_and_rationale_losses(self.student, batch, [rationales[keep[k]] for k in graph],
                                                       [owner[keep[k]] for k in graph], device, encoded)
        losses = no_grad_losses[keep].clone()
        if graph:
            losses = losses.index_put((torch.tensor(graph, device=device),), with_grad)
        return l_pred, losses, keep

    def _selected(self, losses: torch.Tensor, group: torch.Tensor, is_pos: torch.Tensor, n: int) -> list[int]:
        """Indices of the rationale each set's min/max picks (the argmin positive, the argmax negative under minmax)."""
        keep = []
        for side, pick_max in ((is_pos, self.cfg.method.set_reduction == "maxmin"), (~is_pos, self.cfg.method.set_reduction != "maxmin")):
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
