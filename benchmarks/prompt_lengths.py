"""How long are the prompts of every shipped task, in the tiny student's tokens?

``student.max_input_tokens`` must hold every shipped task's prompts, or the student trains on
cut questions (issue 14: the choices block of one dataset was cut from 86 of 111 test prompts at
128). For each family and source, and for the custom example task, this trains the tokenizer a
run would (``student.vocab_size`` BPE over the questions and the pool's rationales), then counts
the tokens of every ``explain:`` prompt over all splits.

    python benchmarks/prompt_lengths.py            # needs QCRD_DATA_DIR; writes benchmarks/results/prompt_lengths.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qcrd_plugin.config import StudentConfig, TaskConfig  # noqa: E402
from qcrd_plugin.data import explain_prompt, prompt_ids  # noqa: E402
from qcrd_plugin.questions import FAMILIES  # noqa: E402
from qcrd_plugin.students import EXPLAIN_PREFIX, PREDICT_PREFIX, train_tokenizer  # noqa: E402
from qcrd_plugin.tasks import load_task  # noqa: E402


def lengths(cfg: TaskConfig, vocab_size: int) -> list[int]:
    data = load_task(cfg)
    questions = [q for split in data.questions.values() for q in split]
    train = data.questions.get("train") or data.questions.get("validation") or []
    corpus = [PREDICT_PREFIX + EXPLAIN_PREFIX] + [q.question for q in train]
    corpus += [s.rationale for pool in data.pools.values() for entry in pool for s in entry.samples][:50000]
    tokenizer = train_tokenizer(corpus, vocab_size)
    return [len(ids) for ids in prompt_ids(tokenizer, [explain_prompt(q.question) for q in questions], 10**6)]


def main() -> None:
    vocab = StudentConfig().vocab_size
    cases = [TaskConfig(name="synth")] + [
        TaskConfig(name=family, source=source)
        for family, spec in FAMILIES.items()
        if family != "synth"
        for source in spec.sources
    ]
    cases.append(TaskConfig(name="custom", spec=str(REPO / "harness_configs" / "tasks" / "shop_math.yaml")))
    rows = []
    for cfg in cases:
        counts = sorted(lengths(cfg, vocab))
        row = {
            "task": cfg.name,
            "source": cfg.source or "-",
            "prompts": len(counts),
            "median": counts[len(counts) // 2],
            "p99": counts[int(0.99 * (len(counts) - 1))],
            "max": counts[-1],
            "over_128": sum(c > 128 for c in counts),
        }
        rows.append(row)
        print(" ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    out = REPO / "benchmarks" / "results" / "prompt_lengths.json"
    out.write_text(
        json.dumps({"vocab_size": vocab, "command": "python benchmarks/prompt_lengths.py", "rows": rows}, indent=1)
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
