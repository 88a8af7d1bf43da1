"""How many of QCRD's student negatives reach the gold answer? (a measurement, December review (d))

QCRD pushes the student away from rationales its own snapshot of ``negatives.j_back`` iterations
earlier samples at temperature 1.5 (Eq. 7); nothing checks their answers, so a correct sample is
pushed away like a wrong one. This script trains the default job (``harness_configs/default.yaml``)
for a few seeds and, each time the negatives are refreshed, reads every sampled negative with the
project's answer reader: the share that states an answer, the share whose answer equals gold, and
the student's greedy accuracy after each round for comparison. The training itself is untouched;
the script only watches the sampler's output (it wraps ``training.sample_negatives`` and
``training.build_student`` to see the samples and the tokenizer).

Usage: python benchmarks/student_negative_answers.py [--seeds 3]   (about 3 minutes a seed on 2 cores)
Writes benchmarks/results/student_negative_answers.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qcrd_plugin import training  # noqa: E402
from qcrd_plugin.answers import answers_match, normalize_answer  # noqa: E402
from qcrd_plugin.config import load_config  # noqa: E402
from qcrd_plugin.negatives import negative_answer  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "student_negative_answers.json"


def watch(seen: dict) -> None:
    """Wrap the sampler and the student builder so that every refresh's negatives are read."""
    build, sample = training.build_student, training.sample_negatives

    def build_student(*args, **kwargs):
        student, tokenizer = build(*args, **kwargs)
        seen["tokenizer"] = tokenizer
        return student, tokenizer

    def sample_negatives(student, snapshot, examples, *args, **kwargs):
        sample(student, snapshot, examples, *args, **kwargs)
        counts = {"negatives": 0, "answered": 0, "gold": 0}
        for ex in examples:
            gold = normalize_answer(ex.answer_text, ex.answer_type, ex.choices)
            for ids in ex.student_negatives:
                read = negative_answer(ex, ids, seen["tokenizer"])  # as negatives.keep_correct=false reads them
                counts["negatives"] += 1
                counts["answered"] += read is not None
                counts["gold"] += read is not None and answers_match(read, gold)
        seen["refreshes"].append(counts)

    training.build_student, training.sample_negatives = build_student, sample_negatives


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    seeds = parser.parse_args().seeds
    results = []
    for seed in range(seeds):
        seen = {"refreshes": []}
        watch(seen)
        with tempfile.TemporaryDirectory() as out:
            overrides = [f"training.seed={seed}", f"output_dir={out}"]
            cfg = load_config(REPO / "harness_configs" / "default.yaml", overrides)
            records = training.run(cfg, progress=False, log=lambda _: None, overwrite=True)
        refreshes = seen["refreshes"]
        total = {key: sum(r[key] for r in refreshes) for key in ("negatives", "answered", "gold")}
        accuracy = [r["eval"].get(r["label_task"], {}).get("acc") for r in records]
        results.append({"seed": seed, "refreshes": len(refreshes), **total, "round_accuracy": accuracy})
        share = total["gold"] / total["negatives"] if total["negatives"] else float("nan")
        print(
            f"seed {seed}: {total['negatives']} negatives in {len(refreshes)} refreshes, "
            f"{total['answered']} state an answer, {total['gold']} reach gold ({share:.3f}); accuracy {accuracy}"
        )
    every = {key: sum(r[key] for r in results) for key in ("negatives", "answered", "gold")}
    print(f"all seeds: {every['gold']}/{every['negatives']} student negatives reach the gold answer")
    RESULTS.write_text(json.dumps({"per_seed": results, "all": every}, indent=1) + "\n")


if __name__ == "__main__":
    main()
