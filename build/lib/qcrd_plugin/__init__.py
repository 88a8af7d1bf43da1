"""qcrd-bench: quality-guided contrastive rationale distillation (QCRD) for lm-evaluation-harness.

Ground floor modules (``answers``, ``synth``, ``config``) import nothing above them; the CLI
(``qcrd_plugin.cli``) is the roof and nothing imports it.
"""

__version__ = "0.1.0"
