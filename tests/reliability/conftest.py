"""Reliability suite (issue 6): kills, injected faults, bad inputs, secrets.

Every test here records what it tried through :func:`record`; the session ends by printing the
suite's figures: kills survived, faults injected and survived, bad inputs tried, and bytes of
data lost (which the tests assert to be zero).
"""

from __future__ import annotations

from collections import Counter

import pytest

FIGURES: Counter = Counter()
FIGURE_LABELS = {
    "kills_survived": "kills survived (SIGKILL, then --resume, same final metrics)",
    "faults_injected": "faults injected",
    "faults_survived": "faults survived (retried, or stopped cleanly with nothing lost)",
    "bad_inputs_tried": "bad inputs tried (exit code 2 + one message, or a counted skip)",
    "bytes_lost": "bytes of data lost",
}


def record(figure: str, count: int = 1) -> None:
    """Add ``count`` to one of the suite's figures (keys of FIGURE_LABELS)."""
    if figure not in FIGURE_LABELS:
        raise KeyError(figure)
    FIGURES[figure] += count


@pytest.fixture
def figures():
    """The :func:`record` function, for tests that prefer a fixture to an import."""
    return record


def pytest_terminal_summary(terminalreporter):
    if not any(FIGURES.values()):
        return
    terminalreporter.section("reliability figures")
    for key, label in FIGURE_LABELS.items():
        terminalreporter.write_line(f"{label:<70} {FIGURES[key]:>8}")
