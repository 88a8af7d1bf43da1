"""Would a ranker learned from the hand labels pick a chain's answer better than the rules? (issue 25)

An experiment, not part of the reader. Every number chain of the development fixtures
(``tests/fixtures/answer_labels*.jsonl`` whose name lacks ``heldout``: the held-out files are never
read here) becomes a set of candidates: each distinct quantity of the chain, the rules' own
reading, and "no answer". Each candidate gets features the rules use one at a time (where it
stands, whether an "=" gives it, whether its unit fits what the question asks, whether the question
gave it, whether an answer statement or the rules name it) and one they lack: how close, by
all-MiniLM-L6-v2 (the ``minilm`` extra), the sentence that says it is to the sentence that asks.
scikit-learn's gradient-boosted trees learn from those which candidate a person read; the pick is
the candidate scored highest.

Each fixture file is one draw, so the estimate leaves one file out at a time: the ranker is fitted
on the other files and measured on the one left out, against the rules on the same chains.
Results: ``benchmarks/results/answer_ranker.json``; docs/data.md discusses them. About three
minutes on a 2-core CPU, most of it embedding sentences.

Usage: python benchmarks/answer_ranker.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qcrd_plugin.answers import answer_statements, answers_match, normalize_answer, stated_answer  # noqa: E402
from qcrd_plugin.asked import asked_for, fits  # noqa: E402
from qcrd_plugin.quantities import quantities, split_sentences, unit_quantities  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures"
RESULTS = REPO / "benchmarks" / "results" / "answer_ranker.json"
NONE = object()  # the "no answer" candidate


def _same(a, b) -> bool:
    return a is not None and b is not None and answers_match(a, b)


class SentenceSimilarity:
    """Cosine similarity of all-MiniLM-L6-v2 sentence embeddings (mean-pooled, as the model is meant
    to be used), read with transformers from the ``minilm`` extra's folder; results are cached."""

    def __init__(self):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from qcrd_plugin.pretrained import shipped_path

        folder = shipped_path("minilm-l6", "benchmark")
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        self.model = AutoModel.from_pretrained(folder, trust_remote_code=False).eval()
        self.cache: dict[str, np.ndarray] = {}

    def _embed(self, texts: list[str]) -> None:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        for start in range(0, len(todo), 64):
            batch = todo[start : start + 64]
            encoded = self.tokenizer(batch, padding=True, truncation=True, max_length=128, return_tensors="pt")
            with self.torch.no_grad():
                hidden = self.model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            pooled = self.torch.nn.functional.normalize(pooled, dim=-1).numpy()
            self.cache.update(zip(batch, pooled))

    def to(self, query: str, sentences: list[str]) -> list[float]:
        self._embed([query, *sentences])
        return [float(self.cache[query] @ self.cache[s]) for s in sentences]


def candidates(row: dict, similarity: SentenceSimilarity) -> tuple[object, list, np.ndarray]:
    """The rules' reading, the candidates (values, then :data:`NONE`) and one feature row each."""
    question, chain = row["question"], row["rationale"]
    read = stated_answer(chain, "number", None, question=question, finish_reason=row.get("finish_reason", ""))
    sentences = split_sentences(chain) or [""]
    asked = asked_for(question)
    givens, stated = quantities(question), [q for s in answer_statements(chain) for q in quantities(s)]
    close = similarity.to(asked.sentence or question, sentences)
    said: dict[float, list[tuple[int, bool, bool]]] = {}  # value -> (sentence, given by "=", unit fits)
    for at, sentence in enumerate(sentences):
        for value, unit, result in unit_quantities(sentence):
            key = next((k for k in said if _same(k, value)), value)
            said.setdefault(key, []).append((at, result, bool(unit) and fits(unit, sentence, asked)))
    if read is not None and not any(_same(k, read) for k in said):
        said[read] = []
    count, last_sentence = len(sentences), len(sentences) - 1
    shared = [float(read is None), count, len(said), len(chain.split()), float(asked.compares), float(asked.left)]
    values, rows = [], []
    for value, places in said.items():
        at = max((p[0] for p in places), default=last_sentence)
        rows.append(
            [
                0.0,
                float(_same(value, read)),
                *shared,
                len(places),
                last_sentence - at,
                at / count,
                float(any(p[1] for p in places)),
                float(any(p[2] for p in places)),
                float(any(p[1] and p[0] == at for p in places)),
                float(any(p[2] and p[0] == at for p in places)),
                float(any(_same(value, g) for g in givens)),
                float(any(_same(value, s) for s in stated)),
                close[at],
                max((close[p[0]] for p in places), default=0.0),
                float(bool(asked.owners & set(re.findall(r"[A-Z][a-z]+", sentences[at])))),
            ]
        )
        values.append(value)
    rows.append([1.0, 0.0, *shared] + [0.0] * (len(rows[0]) - 2 - len(shared) if rows else 12))
    return read, [*values, NONE], np.array(rows)


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    similarity = SentenceSimilarity()
    draws: dict[str, list] = {}
    for path in sorted(FIXTURES.glob("answer_labels*.jsonl")):
        if "heldout" in path.name:
            continue
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["answer_type"] != "number":
                continue
            want = None if row["label"] is None else normalize_answer(row["label"], "number", None)
            read, values, features = candidates(row, similarity)
            right = np.array([(v is NONE and want is None) or (v is not NONE and _same(v, want)) for v in values])
            draws.setdefault(path.name, []).append((want, read, features, right))
    table, totals = {}, [0, 0, 0]
    for left_out in draws:
        fitted = [item for name, items in draws.items() if name != left_out for item in items]
        ranker = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15, random_state=0)
        ranker.fit(np.vstack([f for _, _, f, _ in fitted]), np.concatenate([r for _, _, _, r in fitted]))
        rules = sum((read is None and want is None) or _same(read, want) for want, read, _, _ in draws[left_out])
        picks = sum(bool(r[int(np.argmax(ranker.predict_proba(f)[:, 1]))]) for _, _, f, r in draws[left_out])
        table[left_out] = {"chains": len(draws[left_out]), "rules": int(rules), "ranker": int(picks)}
        totals = [totals[0] + len(draws[left_out]), totals[1] + int(rules), totals[2] + picks]
        print(f"{left_out:48s} {len(draws[left_out]):5d} rules {rules:4d} ranker {picks:4d}")
    every = "all development files, each left out once"
    print(f"{every:48s} {totals[0]:5d} rules {totals[1]:4d} ranker {totals[2]:4d}")
    reachable = sum(bool(r.any()) for items in draws.values() for _, _, _, r in items)
    print(f"chains whose label is among the candidates: {reachable}/{totals[0]}")
    RESULTS.write_text(
        json.dumps(
            {
                "per_file": table,
                "chains": totals[0],
                "rules": totals[1],
                "ranker": int(totals[2]),
                "label_among_candidates": reachable,
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
