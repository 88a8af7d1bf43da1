"""Would a small language model pick a chain's answer better than the rules? (issue 25, an experiment)

For every number chain of the development fixtures (``tests/fixtures/answer_labels*.jsonl`` whose
name lacks ``heldout``: the held-out files are never read here), the numbers of the chain's last
three sentences, plus the rules' own reading, are the candidates. SmolLM2-135M-Instruct (the
``smollm2`` extra) scores each by the log-likelihood of "Therefore, the answer to the question (a
number) is N." after the question and the chain. The script prints how often its top candidate
equals the hand label, against the rules, and what letting it overrule the rules above a margin
would gain and lose. Results: ``benchmarks/results/lm_answer_pick.json``; docs/data.md discusses
them. About 30 minutes on a 2-core CPU.

Usage: python benchmarks/lm_answer_pick.py
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qcrd_plugin.answers import answers_match, normalize_answer, stated_answer  # noqa: E402
from qcrd_plugin.quantities import NUMBER, split_sentences  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures"
RESULTS = REPO / "benchmarks" / "results" / "lm_answer_pick.json"
ENDING = "Therefore, the answer to the question (a number) is"
MARGINS = (0.0, 1.0, 2.0, 3.0, 5.0)  # nats by which the model's pick must beat the rules' answer


def candidates(chain: str, read: float | None) -> list[float]:
    """The distinct numbers of the chain's last three sentences, then the rules' reading."""
    found = []
    for sentence in split_sentences(chain)[-3:]:
        for text in re.findall(NUMBER, sentence.replace(",", "")):
            value = normalize_answer(text, "number", None)
            if value is not None and not any(answers_match(value, v) for v in found):
                found.append(value)
    if read is not None and not any(answers_match(read, v) for v in found):
        found.append(read)
    return found


def scorer(folder: Path):
    """A function (question, chain, values) -> one log-likelihood per value, by SmolLM2-135M."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qcrd_plugin.answers import format_number
    from qcrd_plugin.pretrained import dequantised_copy

    path = dequantised_copy("smollm2-135m", folder, "benchmark")
    # A folder written from the GGUF file by transformers itself: no model code to trust.
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, trust_remote_code=False).eval()

    @torch.no_grad()
    def score(question: str, chain: str, values: list[float]) -> list[float]:
        prompt = f"Question: {question.strip()}\nSolution: {chain.strip()}\n{ENDING}"
        ids = tokenizer(prompt, return_tensors="pt").input_ids[:, -1500:]
        out = model(ids, use_cache=True)  # the prompt once; each candidate continues from its cache
        cache, first, length = out.past_key_values, out.logits[0, -1].log_softmax(-1), ids.shape[1]
        scores = []
        for value in values:
            tokens = tokenizer(" " + format_number(value) + ".", add_special_tokens=False).input_ids
            if cache.get_seq_length() > length:
                cache.crop(length - cache.get_seq_length())  # back to the prompt alone
            total = first[tokens[0]].item()
            if len(tokens) > 1:
                logp = (
                    model(torch.tensor([tokens[:-1]]), past_key_values=cache, use_cache=True).logits[0].log_softmax(-1)
                )
                total += sum(logp[i, tokens[i + 1]].item() for i in range(len(tokens) - 1))
            scores.append(total)
        return scores

    return score


def main() -> None:
    rows = [
        json.loads(line)
        for path in sorted(FIXTURES.glob("answer_labels*.jsonl"))
        if "heldout" not in path.name
        for line in path.read_text().splitlines()
        if json.loads(line)["answer_type"] == "number"
    ]
    score = scorer(Path(tempfile.mkdtemp()) / "smollm2")
    right = lambda value, label: (value is None) == (label is None) and (label is None or answers_match(value, label))  # noqa: E731
    picked, rules, compared = 0, 0, 0
    overrule = {m: [0, 0] for m in MARGINS}
    for n, row in enumerate(rows):
        label = None if row["label"] is None else normalize_answer(row["label"], "number", None)
        read = stated_answer(row["rationale"], "number", None, question=row["question"])
        values = candidates(row["rationale"], read)
        if len(values) < 2:
            continue
        scores = score(row["question"], row["rationale"], values)
        top = max(range(len(values)), key=scores.__getitem__)
        if label is not None:
            compared += 1
            picked += right(values[top], label)
            rules += right(read, label)
        if read is not None:
            mine = next(i for i, v in enumerate(values) if answers_match(v, read))
            for margin in MARGINS:
                if top != mine and scores[top] - scores[mine] > margin:
                    overrule[margin][0] += right(values[top], label) and not right(read, label)
                    overrule[margin][1] += right(read, label) and not right(values[top], label)
        if n % 100 == 0:
            print(f"{n}/{len(rows)}", file=sys.stderr, flush=True)
    result = {
        "chains": len(rows),
        "with_an_answer_and_two_candidates": compared,
        "model_top_agrees": picked,
        "rules_agree": rules,
        "overrule_gain_loss_by_margin": {str(m): overrule[m] for m in MARGINS},
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
