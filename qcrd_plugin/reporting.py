"""The per-round line and the end-of-run table a run prints, and the round's headline figures."""

from __future__ import annotations


def headline_accuracy(scores: dict, label_task: str, explain_task: str, answer_from: str) -> float | None:
    """The method's accuracy: its label prompt's, or (single_task) the answer its rationale states."""
    if answer_from == "rationale":
        return scores.get(explain_task, {}).get("rationale_acc")
    return scores.get(label_task, {}).get("acc")


def inactive_negatives_warning(cfg, record: dict) -> str | None:
    """A warning line when the negative term acted for fewer than 1% of the round's questions."""
    share = (record.get("negatives") or {}).get("neg_active_share")
    if share is None or share >= 0.01 or not cfg.negatives.enabled:
        return None
    return (
        f"warning: round {record['round']}: the negative term (Eq. 7) was non-zero for {100 * share:.2f}% "
        f"of questions: their negatives sit beyond delta = {cfg.method.delta} or they have none "
        "(the round's negatives.neg_loss_quantiles in metrics.jsonl show which)"
    )


def round_summary(record: dict) -> str:
    """One line per finished round."""
    label = record["eval"].get(record["label_task"], {}).get("acc")
    rat = record["eval"].get(record["explain_task"], {})
    parts = [f"round {record['round']}: acc {label:.3f}" if label is not None else f"round {record['round']}:"]
    for key in ("rationale_acc", "step_validity", "consistency"):
        if key in rat:
            parts.append(f"{key} {rat[key]:.3f}")
    if record.get("validation_acc") is not None:
        parts.append(f"validation acc {record['validation_acc']:.3f} (selected: round {record['selected_round']})")
    if record.get("judge_auc_heldout") is not None:
        parts.append(f"judge AUC {record['judge_auc_heldout']:.3f}")
    if (record.get("negatives") or {}).get("neg_active_share") is not None:
        parts.append(f"negatives active {record['negatives']['neg_active_share']:.3f}")
    return "  ".join(parts)


def summary_table(records: list[dict]) -> str:
    """The end-of-run table: one row per round."""
    header = (
        f"{'round':>5} {'acc':>6} {'rat_acc':>8} {'step_ok':>8} {'consist':>8} {'words':>6} "
        f"{'judge_s':>8} {'judge_auc':>9} {'train_s':>8} {'eval_s':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in records:
        label = r["eval"].get(r["label_task"], {})
        rat = r["eval"].get(r["explain_task"], {})
        fmt = lambda v, w: f"{v:>{w}.3f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"  # noqa: E731
        lines.append(
            f"{r['round']:>5} {fmt(label.get('acc'), 6)} {fmt(rat.get('rationale_acc'), 8)} "
            f"{fmt(rat.get('step_validity'), 8)} {fmt(rat.get('consistency'), 8)} "
            f"{fmt(rat.get('rationale_words'), 6)} {fmt(r.get('judge_score_student'), 8)} "
            f"{fmt(r.get('judge_auc_heldout'), 9)} {fmt(r['time_s'].get('training'), 8)} "
            f"{fmt(r['time_s'].get('evaluation'), 7)}"
        )
    if records and records[-1].get("selected_round"):
        lines.append(f"selected round (best validation accuracy): {records[-1]['selected_round']}")
    return "\n".join(lines)
