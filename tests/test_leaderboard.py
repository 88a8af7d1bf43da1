"""Leaderboard aggregation (CI arithmetic by hand), --from-runs on fixture runs, and the plots."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qcrd_plugin.leaderboard import aggregate, collect, load_leaderboard_config, mean_ci

REPO = Path(__file__).resolve().parent.parent
T_975_2DF = 4.302652729749464  # Student t quantile, 0.975, 2 degrees of freedom (tables)


def test_mean_ci_matches_a_hand_computation():
    mean, half, n = mean_ci([0.1, 0.2, 0.3])
    assert n == 3 and mean == pytest.approx(0.2)
    assert half == pytest.approx(T_975_2DF * 0.1 / math.sqrt(3))  # sd 0.1
    assert math.isnan(mean_ci([0.5])[1])


def fixture_run(root: Path, task: str, method: str, seed: int, accs: list[float], rounds: int | None = None) -> Path:
    """A finished run as files: config.yaml and one metrics line per round."""
    run_dir = root / task / method / f"seed{seed}"
    run_dir.mkdir(parents=True)
    config = {"task": {"name": "synth"}, "method": {"name": method}, "training": {"seed": seed, "rounds": rounds or len(accs)}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    lines = []
    for k, acc in enumerate(accs, 1):
        lines.append(json.dumps({
            "round": k, "headline_acc": acc, "explain_task": "qcrd_synth_explain",
            "eval": {"qcrd_synth_explain": {"rationale_acc": acc / 2, "step_validity": 0.5, "consistency": 0.4, "rationale_words": 20.0}},
            "rationale_quality": {"rouge_l": 0.3, "bleu": 10.0, "distinct_2": 0.2},
            "time_s": {"training": 10.0, "evaluation": 2.0}, "setup_time_s": {"judge_pretraining": 1.0}, "train_tokens_per_s": 1000.0,
        }))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


@pytest.fixture
def fixture_runs(tmp_path):
    root = tmp_path / "grid"
    for seed, (dss, qcrd) in enumerate([(0.20, 0.25), (0.30, 0.32), (0.25, 0.33)]):
        fixture_run(root, "synth", "dss", seed, [0.1, dss])
        fixture_run(root, "synth", "qcrd", seed, [0.1, qcrd])
    fixture_run(root, "synth", "finetune", 0, [0.1], rounds=2)  # unfinished: left out
    return root


def test_aggregate_paired_difference_by_hand(fixture_runs):
    results = collect([fixture_runs])
    assert sorted((r.method, r.seed) for r in results) == [("dss", 0), ("dss", 1), ("dss", 2), ("qcrd", 0), ("qcrd", 1), ("qcrd", 2)]
    board = aggregate(results)
    rows = {r["method"]: r for r in board["rows"]}
    assert rows["dss"]["acc"] == pytest.approx(0.25) and rows["qcrd"]["acc"] == pytest.approx(0.30)
    assert rows["dss"]["acc_ci95"] == pytest.approx(T_975_2DF * 0.05 / math.sqrt(3))
    (paired,) = board["paired"]
    deltas = [0.05, 0.02, 0.08]  # per seed, qcrd - dss
    sd = math.sqrt(sum((d - 0.05) ** 2 for d in deltas) / 2)
    assert paired["diff"] == pytest.approx(0.05) and paired["diff_ci95"] == pytest.approx(T_975_2DF * sd / math.sqrt(3))
    assert rows["qcrd"]["wall_s"] == pytest.approx(1.0 + 2 * 12.0)


def test_from_runs_cli_writes_tables_and_plots(fixture_runs, tmp_path):
    out = tmp_path / "board"
    proc = subprocess.run([str(Path(sys.executable).with_name("qcrd-bench")), "leaderboard", "--from-runs", str(fixture_runs), "--out", str(out)],
                          capture_output=True, text=True, env=dict(os.environ, MPLBACKEND="Agg"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "qcrd − dss" in (out / "leaderboard.md").read_text()
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["format"] == "qcrd-leaderboard/1" and len(board["rows"]) == 2
    assert len((out / "leaderboard.csv").read_text().splitlines()) == 3
    for png in ("accuracy_per_round.png", "rationale_metrics_per_round.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_leaderboard_config_errors_name_the_key(tmp_path):
    from qcrd_plugin.config import ConfigError

    bad = tmp_path / "lb.yaml"
    bad.write_text(f"base_config: {REPO / 'harness_configs' / 'default.yaml'}\nmethods: [dss, nope]\n")
    with pytest.raises(ConfigError, match="method 'nope'"):
        load_leaderboard_config(bad)
    bad.write_text("seedz: [1]\n")
    with pytest.raises(ConfigError, match="unknown key 'seedz'"):
        load_leaderboard_config(bad)
    assert load_leaderboard_config(REPO / "harness_configs" / "leaderboard.yaml").methods == ["finetune", "single_task", "dss", "qcrd"]


def test_tensorboard_export_writes_event_files(fixture_runs, tmp_path):
    pytest.importorskip("tensorboard", reason="optional: pip install tensorboard")
    from qcrd_plugin.leaderboard import write_tensorboard

    write_tensorboard(collect([fixture_runs]), tmp_path / "tb")
    events = list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert len(events) == 6 and all(e.stat().st_size > 0 for e in events)
