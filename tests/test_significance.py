"""Paired differences, Holm's correction and the verdicts of benchmarks/reproduce.py, by hand."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from qcrd_plugin.significance import holm, paired_test, verdict

REPO = Path(__file__).resolve().parent.parent


def test_holm_matches_a_hand_computation():
    # sorted: 0.005 (x4), 0.01 (x3), 0.03 (x2), 0.04 (x1) -> 0.02, 0.03, 0.06, max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = holm([0.01, math.nan, 0.02])  # a row without a test does not count towards m
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)


def test_paired_test_matches_the_closed_form_for_two_degrees_of_freedom():
    result = paired_test([0.05, 0.02, 0.08])  # mean 0.05, sd 0.03
    t = 0.05 / (0.03 / math.sqrt(3))
    assert result["diff"] == pytest.approx(0.05) and result["n"] == 3
    assert result["p"] == pytest.approx(1 - t / math.sqrt(t * t + 2))  # Student t, 2 df: P(|T| > t)
    assert math.isnan(paired_test([0.1])["p"]) and paired_test([0.0, 0.0])["p"] == 1.0


def test_verdicts_follow_the_adjusted_p_value():
    assert verdict(0.04, 0.01) == "better" and verdict(-0.04, 0.01) == "worse"
    assert verdict(0.04, 0.2) == "no detectable difference" and verdict(0.04, math.nan) == "no detectable difference"


def test_reproduce_rows_compare_each_row_with_its_reference():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from reproduce import Cell, table_rows

    from qcrd_plugin.leaderboard import RunResult

    def runs(accs):
        return [
            RunResult(
                "t",
                "m",
                seed,
                [{"headline_acc": a, "time_s": {"training": 1.0}, "setup_time_s": {}, "train_tokens_per_s": 10.0}],
            )
            for seed, a in enumerate(accs)
        ]

    cells = [Cell("base", ()), Cell("same", (), None, "base"), Cell("up", (), 69.0, "base")]
    rows = table_rows(
        cells,
        {
            "base": runs([0.30, 0.40, 0.35, 0.33, 0.37]),
            "same": runs([0.31, 0.39, 0.36, 0.33, 0.36]),
            "up": runs([0.50, 0.61, 0.54, 0.52, 0.58]),
        },
    )
    by = {r["label"]: r for r in rows}
    assert by["base"]["verdict"] == "reference" and by["same"]["verdict"] == "no detectable difference"
    assert by["up"]["verdict"] == "better" and by["up"]["diff"] == pytest.approx(0.2, abs=1e-9)
    assert by["up"]["p"] < by["same"]["p"]  # the smaller of two p-values: Holm multiplies it by m = 2
    assert by["up"]["p_holm"] == pytest.approx(2 * by["up"]["p"])
