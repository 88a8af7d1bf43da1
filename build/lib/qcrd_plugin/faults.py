"""Fault injection for the reliability tests (tests/reliability/). Inert unless ``QCRD_FAULT`` is set.

A real kill or a real full disk cannot be timed to land inside one chosen phase from outside the
process, so the loop names its crash-sensitive points and this module can make one of them fail:

    QCRD_FAULT="kill@training_step=5"        SIGKILL this process when step 5 begins
    QCRD_FAULT="kill@checkpoint_write=2"     ... halfway through writing round 2's checkpoint
    QCRD_FAULT="kill@evaluation=1"           ... after round 1's lm-eval, before its metrics are written
    QCRD_FAULT="kill@metrics_written=2"      ... after round 2's metrics, before round 1's training state is deleted
    QCRD_FAULT="enospc@checkpoint_write=2"   raise OSError(ENOSPC) there, as a full disk would
    QCRD_FAULT="devfull@checkpoint_write=2"  torch.save there onto /dev/full: torch's own error of a full disk
    QCRD_FAULT="nan@training_step=3"         make that step's loss NaN
    QCRD_FAULT="sigint@training_step=5"      send this process SIGINT (a Ctrl-C) when step 5 begins

Several faults may be given, comma-separated. Nothing else in the package reads the variable.
"""

from __future__ import annotations

import errno
import os
import signal

ENV = "QCRD_FAULT"


def _armed(point: str, value: int) -> list[str]:
    """The actions armed at ``point == value``."""
    spec = os.environ.get(ENV, "")
    actions = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        action, _, where = item.partition("@")
        name, _, at = where.partition("=")
        if name == point and at.strip() == str(value):
            actions.append(action)
    return actions


def point(name: str, value: int) -> bool:
    """Trigger whatever is armed at ``name == value``: kill or interrupt the process, raise ENOSPC, or return
    True for a fault the caller applies itself (``nan``). Returns False when nothing is armed."""
    if ENV not in os.environ:
        return False
    actions = _armed(name, value)
    if "kill" in actions:
        os.kill(os.getpid(), signal.SIGKILL)
    if "sigint" in actions:
        os.kill(os.getpid(), signal.SIGINT)  # Python raises KeyboardInterrupt here, as after a real Ctrl-C
    if "enospc" in actions:
        raise OSError(errno.ENOSPC, f"No space left on device (injected by {ENV} at {name}={value})")
    if "devfull" in actions:
        import torch

        torch.save(torch.zeros(2**20), "/dev/full")  # raises RuntimeError, as torch.save on a full disk does
    return "nan" in actions
