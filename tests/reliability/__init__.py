"""Reliability suite (issue 6). A package, so that its conftest is imported as
``reliability.conftest`` and never replaces ``tests/conftest.py`` as the module ``conftest``
(which ``from conftest import ...`` in the top-level tests needs)."""
