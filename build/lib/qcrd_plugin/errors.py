"""The package's one error hierarchy. Nothing in the package sits below this module.

The CLI maps the two branches to exit codes: a :class:`UserInputError` is the user's to fix (exit
code 2, one line naming the file, line, key or flag); a :class:`RunAborted` is neither the user's
mistake nor a bug (a diverged loss, a full disk: exit code 1, one line saying what is kept and how
to continue). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class QcrdError(Exception):
    """Base of every error qcrd-bench raises on purpose."""


class UserInputError(QcrdError, ValueError):
    """A mistake in what the user gave (data, pools, specs, flags); the message names file, line
    and key. The CLI prints it as one line and exits with code 2."""


class ConfigError(UserInputError):
    """A run configuration mistake; the message names the file (or override) and the key."""


class DataMissingError(UserInputError, FileNotFoundError):
    """A task's data files are not where the data directory says; the message says how to fix it."""


class RunAborted(QcrdError):
    """The run stopped on purpose (diverged loss, failed write); the message says what is kept."""


class WriteFailed(RunAborted):
    """A file could not be written (a full disk, a read-only folder); the partial file is gone."""
