"""Leaderboard aggregation (CI arithmetic by hand), --from-runs on fixture runs, and the plots."""

from __future__ import annotations

import json
import math
import os
import shlex
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


def fixture_run(
    root: Path,
    task: str,
    method: str,
    seed: int,
    accs: list[float],
    rounds: int | None = None,
    j_back: int = 5,
    folder: str | None = None,
) -> Path:
    """A finished run as files: config.yaml and one metrics line per round."""
    run_dir = root / task / (folder or method) / f"seed{seed}"
    run_dir.mkdir(parents=True)
    config = {
        "name": f"seed{seed}",
        "output_dir": str(root / task / (folder or method)),
        "task": {"name": "synth"},
        "method": {"name": method},
        "negatives": {"j_back": j_back},
        "training": {"seed": seed, "rounds": rounds or len(accs)},
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    lines = []
    for k, acc in enumerate(accs, 1):
        lines.append(
            json.dumps(
                {
                    "round": k,
                    "headline_acc": acc,
                    "explain_task": "qcrd_synth_explain",
                    "eval": {
                        "qcrd_synth_explain": {
                            "rationale_acc": acc / 2,
                            "step_validity": 0.5,
                            "consistency": 0.4,
                            "rationale_words": 20.0,
                        }
                    },
                    "rationale_quality": {"rouge_l": 0.3, "bleu": 10.0, "distinct_2": 0.2},
                    "time_s": {"training": 10.0, "evaluation": 2.0},
                    "setup_time_s": {"judge_pretraining": 1.0},
                    "train_tokens_per_s": 1000.0,
                }
            )
        )
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
    assert sorted((r.method, r.seed) for r in results) == [
        ("dss", 0),
        ("dss", 1),
        ("dss", 2),
        ("qcrd", 0),
        ("qcrd", 1),
        ("qcrd", 2),
    ]
    board = aggregate(results)
    rows = {r["method"]: r for r in board["rows"]}
    assert rows["dss"]["acc"] == pytest.approx(0.25) and rows["qcrd"]["acc"] == pytest.approx(0.30)
    assert rows["dss"]["acc_ci95"] == pytest.approx(T_975_2DF * 0.05 / math.sqrt(3))
    (paired,) = board["paired"]
    deltas = [0.05, 0.02, 0.08]  # per seed, qcrd - dss
    sd = math.sqrt(sum((d - 0.05) ** 2 for d in deltas) / 2)
    assert paired["diff"] == pytest.approx(0.05) and paired["diff_ci95"] == pytest.approx(
        T_975_2DF * sd / math.sqrt(3)
    )
    assert rows["qcrd"]["wall_s"] == pytest.approx(1.0 + 2 * 12.0)


def test_from_runs_cli_writes_tables_and_plots(fixture_runs, tmp_path):
    out = tmp_path / "board"
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("qcrd-bench")),
            "leaderboard",
            "--from-runs",
            str(fixture_runs),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, MPLBACKEND="Agg"),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "qcrd − dss" in (out / "leaderboard.md").read_text()
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["format"] == "qcrd-leaderboard/1" and len(board["rows"]) == 2
    assert len((out / "leaderboard.csv").read_text().splitlines()) == 3
    for png in ("accuracy_per_round.png", "rationale_metrics_per_round.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_leaderboard_config_errors_name_the_key(tmp_path):
    from qcrd_plugin.errors import ConfigError

    bad = tmp_path / "lb.yaml"
    bad.write_text(f"base_config: {REPO / 'harness_configs' / 'default.yaml'}\nmethods: [dss, nope]\n")
    with pytest.raises(ConfigError, match="method 'nope'"):
        load_leaderboard_config(bad)
    bad.write_text("seedz: [1]\n")
    with pytest.raises(ConfigError, match="unknown key 'seedz'"):
        load_leaderboard_config(bad)
    assert load_leaderboard_config(REPO / "harness_configs" / "leaderboard.yaml").methods == [
        "finetune",
        "single_task",
        "dss",
        "mi",
        "qcrd",
    ]


def test_tensorboard_export_writes_event_files(fixture_runs, tmp_path):
    pytest.importorskip("tensorboard", reason="optional: pip install tensorboard")
    from qcrd_plugin.leaderboard import write_tensorboard

    write_tensorboard(collect([fixture_runs]), tmp_path / "tb")
    events = list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert len(events) == 6 and all(e.stat().st_size > 0 for e in events)


def test_runs_that_differ_in_one_key_are_two_cells_not_extra_seeds(fixture_runs):
    """An ablation (negatives.j_back=3) is its own row with a readable label, never averaged in."""
    for seed, acc in enumerate([0.5, 0.6]):
        fixture_run(fixture_runs, "synth", "qcrd", seed, [0.1, acc], j_back=3, folder="qcrd-ablation")
    board = aggregate(collect([fixture_runs]))
    rows = {r["label"]: r for r in board["rows"]}
    assert set(rows) == {"dss", "qcrd", "qcrd[j_back=3]"}
    assert rows["qcrd"]["seeds"] == [0, 1, 2] and rows["qcrd[j_back=3]"]["seeds"] == [0, 1]
    assert rows["qcrd[j_back=3]"]["acc"] == pytest.approx(0.55)
    assert rows["qcrd"]["config_hash"] != rows["qcrd[j_back=3]"]["config_hash"]
    assert {(d["contender"], d["baseline"]) for d in board["paired"]} == {("qcrd", "dss"), ("qcrd[j_back=3]", "dss")}


def test_leaderboard_json_is_strict_json_with_one_seed(tmp_path):
    from qcrd_plugin.leaderboard import write

    root = tmp_path / "grid"
    fixture_run(root, "synth", "dss", 0, [0.1, 0.2])
    results = collect([root])
    board = aggregate(results)
    assert math.isnan(board["rows"][0]["acc_ci95"])  # one seed: no interval
    write(board, results, tmp_path / "out")

    def refuse(constant):
        raise ValueError(f"bare {constant} in leaderboard.json")

    loaded = json.loads((tmp_path / "out" / "leaderboard.json").read_text(), parse_constant=refuse)
    assert loaded["rows"][0]["acc_ci95"] is None


def test_plot_gives_each_cell_one_colour_across_panels_and_one_legend(fixture_runs):
    from qcrd_plugin.leaderboard import figure

    fixture_run(fixture_runs, "other", "qcrd", 0, [0.9, 1.0])  # a second task: a second column of panels
    fig = figure(collect([fixture_runs]), ("acc", "step_validity"))
    colours: dict[str, set] = {}
    for ax in fig.axes:
        assert ax.get_legend() is None and ax.get_ylabel()
        assert all(float(t).is_integer() for t in ax.get_xticks())
        low, high = ax.get_ylim()
        assert low >= 0.0 and high <= 1.0
        for line in ax.get_lines():
            colours.setdefault(line.get_label(), set()).add(
                line.get_color() if isinstance(line.get_color(), str) else tuple(line.get_color())
            )
        for band in ax.collections:  # CI bands stay inside [0, 1]
            ys = band.get_paths()[0].vertices[:, 1]
            assert ys.min() >= 0.0 and ys.max() <= 1.0
    assert set(colours) == {"dss", "qcrd"} and all(len(c) == 1 for c in colours.values())
    assert colours["dss"] != colours["qcrd"]
    assert len(fig.legends) == 1 and any("95% CI" in t.get_text() and "seeds" in t.get_text() for t in fig.texts)


@pytest.mark.slow
def test_a_changed_config_trains_its_cell_again_instead_of_reusing_the_old_runs(tmp_path):
    """The grid's cell folder carries the hash of the resolved config: the same config is skipped
    as finished, a changed one is trained anew (real training, tiny budget)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import TINY_OVERRIDES

    from qcrd_plugin.leaderboard import run_grid
    from qcrd_plugin.training import run as run_training

    def grid(extra: list[str], report_to: list[str] = ()):
        spec = tmp_path / "lb.yaml"
        spec.write_text(
            yaml.safe_dump(
                {
                    "base_config": str(REPO / "harness_configs" / "default.yaml"),
                    "output_dir": str(tmp_path / "grid"),
                    "methods": ["finetune"],
                    "seeds": [0],
                    "tasks": {"synth": TINY_OVERRIDES + extra},
                }
            )
        )
        logged: list[str] = []
        dirs = run_grid(
            load_leaderboard_config(spec),
            lambda cfg: run_training(cfg, progress=False, log=lambda _: None, resume=True),
            log=logged.append,
            report_to=report_to,
        )
        return dirs, logged

    first, log1 = grid([])
    again, log2 = grid([])
    changed, log3 = grid(["training.learning_rate=0.001"], report_to=["tensorboard"])
    assert "training" in log1[0] and "finished, skipped" in log2[0] and "training" in log3[0]
    assert first == again and changed != first
    # A cell trained with report_to logs live into its run folder; report_to is not part of the identity.
    assert list((changed[0] / "tensorboard").glob("events.out.tfevents.*"))
    assert not (first[0] / "tensorboard").exists()
    assert (changed[0] / "metrics.jsonl").exists() and (first[0] / "metrics.jsonl").exists()
    results = collect([tmp_path / "grid"])
    assert len(aggregate(results)["rows"]) == 2  # two configs: two cells, never one cell of two seeds
    # --print-commands: a finished cell prints nothing; an unfinished one prints the command that
    # trains exactly that cell (after it, the cell counts as finished and the grid collects it).
    from qcrd_plugin.leaderboard import cell_commands

    grid([])  # rewrite lb.yaml for the finished config
    assert cell_commands(load_leaderboard_config(tmp_path / "lb.yaml")) == []
    spec = yaml.safe_load((tmp_path / "lb.yaml").read_text())
    spec["tasks"]["synth"] = TINY_OVERRIDES + ["training.learning_rate=0.002"]
    (tmp_path / "lb.yaml").write_text(yaml.safe_dump(spec))
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("qcrd-bench")),
            "leaderboard",
            "--config",
            str(tmp_path / "lb.yaml"),
            "--print-commands",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(lines) == 1 and lines[0].startswith("qcrd-bench run --config "), proc.stderr
    argv = shlex.split(lines[0])
    done = subprocess.run(
        [str(Path(sys.executable).with_name("qcrd-bench")), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert cell_commands(load_leaderboard_config(tmp_path / "lb.yaml")) == []
    assert len(aggregate(collect([tmp_path / "grid"]))["rows"]) == 3
