"""Config loading, validation and the CLI's exit code 2 for bad input."""

import subprocess
import sys

import pytest

from qcrd_plugin.config import load_config
from qcrd_plugin.errors import ConfigError


def test_defaults_and_overrides():
    cfg = load_config(None, ["training.rounds=5", "method.beta=0.3"])
    assert cfg.training.rounds == 5 and cfg.method.beta == 0.3


@pytest.mark.parametrize(
    "yaml_text, needle",
    [
        ("training:\n  roundz: 2\n", "unknown key 'training.roundz'"),
        ("training:\n  rounds: two\n", "key 'training.rounds': expected int"),
        ("teacher:\n  temperature: 5.0\n", "key 'teacher.temperature'"),
        ("method:\n  name: magic\n", "key 'method.name'"),
        ("training: [1, 2]\n", "key 'training': expected a mapping"),
        ("training:\n  rounds: [\n", "invalid YAML"),
    ],
)
def test_bad_configs_name_file_and_key(tmp_path, yaml_text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_cli_bad_config_exits_2_with_one_line_and_no_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("negatives:\n  j_back: -1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "qcrd_plugin.cli", "run", "--config", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(path) in lines[0] and "negatives.j_back" in lines[0]


def test_judge_auto_is_minilm_for_a_pretrained_student_only(tmp_path):
    """judge.pretrained defaults to auto: the pretrained MiniLM judge for a pretrained student (its
    measured AUC is higher on real chains), the from-scratch judge for the offline preset; an
    explicit value, the empty one for from scratch included, is kept."""
    assert load_config(None, []).judge.pretrained == ""
    assert load_config(None, [f"student.pretrained={tmp_path}"]).judge.pretrained == "minilm-l6"
    kept = load_config(None, [f"student.pretrained={tmp_path}", "judge.pretrained="])
    assert kept.judge.pretrained == ""
