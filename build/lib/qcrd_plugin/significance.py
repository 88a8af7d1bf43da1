"""Paired comparisons over seeds: mean difference with its 95% t interval, the paired t-test's
p-value, and Holm's step-down correction across the rows of one table."""

from __future__ import annotations

import math


def paired_test(differences: list[float]) -> dict:
    """Mean of per-seed differences, the half-width of its two-sided 95% t interval and the
    two-sided paired t-test p-value (``nan`` with fewer than two pairs; p = 1 for identical
    pairs, 0 for a constant non-zero difference)."""
    from scipy import stats

    n = len(differences)
    if n == 0:
        return {"diff": math.nan, "ci95": math.nan, "p": math.nan, "n": 0}
    mean = sum(differences) / n
    if n == 1:
        return {"diff": mean, "ci95": math.nan, "p": math.nan, "n": 1}
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    if sd == 0:
        return {"diff": mean, "ci95": 0.0, "p": 1.0 if mean == 0 else 0.0, "n": n}
    p = 2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1)
    return {"diff": mean, "ci95": half, "p": float(p), "n": n}


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order: the i-th smallest p times (m - i + 1), made
    monotone and capped at 1. ``nan`` entries stay ``nan`` and do not count towards m."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m = len(indexed)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(diff: float, adjusted_p: float, alpha: float = 0.05) -> str:
    """``better`` / ``worse`` when the Holm-adjusted p is below ``alpha``, else ``no detectable
    difference`` (also when there are too few seeds to test)."""
    if math.isnan(adjusted_p) or adjusted_p >= alpha:
        return "no detectable difference"
    return "better" if diff > 0 else "worse"
