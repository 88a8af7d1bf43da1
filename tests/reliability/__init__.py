"""Reliability suite (issue 6). A package, so that its test modules import as
``reliability.test_*`` and never clash with the top-level tests' module names. The suite's
figures (``figures`` fixture) live in ``tests/conftest.py``."""
