"""Pairwise judging of two runs' rationales through an OpenAI-compatible endpoint on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import ChatHandler, completion, serve

from qcrd_plugin.pairwise import parse_verdict


class AlwaysA(ChatHandler):
    """A judge that always prefers whatever it is shown as Rationale A."""

    def do_POST(self):
        self.read_body()
        self.reply(200, completion("A better. It is clearer."))


def fake_run(folder: Path, tag: str) -> Path:
    (folder / "round_1").mkdir(parents=True)
    rows = [
        {
            "id": f"q{i}",
            "question": f"q {i}?",
            "answer": "1",
            "label_generation": "1",
            "rationale": f"{tag} rationale {i}",
        }
        for i in range(20)
    ]
    (folder / "round_1" / "rationales.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_order_is_randomised_and_verdicts_map_back_to_runs(tmp_path):
    server, url = serve(AlwaysA)
    try:
        first, second = fake_run(tmp_path / "dss", "dss"), fake_run(tmp_path / "qcrd", "qcrd")
        out = tmp_path / "judge.json"
        proc = subprocess.run(
            [
                str(Path(sys.executable).with_name("qcrd-bench")),
                "judge",
                str(first),
                str(second),
                "--teacher",
                "openai",
                "--model",
                "judge",
                "--base-url",
                url,
                "--items",
                "16",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            env=dict(os.environ),
            timeout=120,
        )
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    swapped = sum(item["swapped"] for item in record["items"])
    assert len(record["items"]) == 16 and 0 < swapped < 16  # both orders occur
    # The judge always picks position A, so each run wins exactly where it was shown first.
    assert record["counts"]["first better"] == 16 - swapped and record["counts"]["second better"] == swapped
    assert f"{16 - swapped} / 0 / {swapped}" in proc.stdout


def test_parse_verdict():
    assert parse_verdict("B better, because ...") == "B better"
    assert parse_verdict("I think both good.") == "both good"
    assert parse_verdict("no idea") is None


def test_runs_of_different_tasks_are_refused_not_scored_zero(tmp_path):
    from helpers import invoke

    first = fake_run(tmp_path / "a", "a")
    second = tmp_path / "b"
    (second / "round_1").mkdir(parents=True)
    (second / "round_1" / "rationales.jsonl").write_text(
        json.dumps({"id": "other-0", "question": "?", "rationale": "r"}) + "\n"
    )
    proc = invoke(
        "judge", str(first), str(second), "--teacher", "openai", "--model", "judge", "--base-url", "http://127.0.0.1:9"
    )
    assert proc.returncode == 2 and "share no test question" in proc.stderr and "0 / 0 / 0" not in proc.stdout
