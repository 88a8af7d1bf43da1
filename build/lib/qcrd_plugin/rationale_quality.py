"""Rationale quality beyond correctness: overlap with the teacher, diversity, and faithfulness.

- ``rouge_l`` / ``bleu``: the student's test rationales against reference rationales (the gold
  rationale and the teacher's positives for that question, when the data has them). ROUGE-L is
  the best F-measure over the references (``rouge_score``); BLEU is sacreBLEU's corpus BLEU with
  every reference.
- ``distinct_1`` / ``distinct_2``: unique n-grams / all n-grams over all rationales (diversity).
- Faithfulness probes (after Lanham et al. 2023, "Measuring Faithfulness in Chain-of-Thought
  Reasoning"): does the answer depend on the reasoning? ``faithful_truncate``: keep the first half
  of the rationale's words, force the student to answer right after them ("The answer is"), and
  count how often the answer differs from the full rationale's. ``faithful_corrupt``: change one
  number in the rationale (+1), force the student to continue from right after it, and count how
  often the final answer changes. Higher = the answer follows the reasoning more.
"""

from __future__ import annotations

import re

import torch

from .answers import answers_match, stated_answer
from .data import pad

ANSWER_CUE = " The answer is"


def distinct_n(texts: list[str], n: int) -> float:
    """Unique word n-grams / all word n-grams across ``texts`` (0 when there are none)."""
    grams = [tuple(words[i : i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def overlap_metrics(rationales: list[str], references: list[list[str]]) -> dict[str, float]:
    """ROUGE-L (best F over references, averaged) and corpus BLEU of rationales with references.
    Questions without any reference are skipped; returns {} when none has one."""
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU

    pairs = [(r, refs) for r, refs in zip(rationales, references) if refs]
    if not pairs:
        return {}
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rouge = sum(max(scorer.score(ref, hyp)["rougeL"].fmeasure for ref in refs) for hyp, refs in pairs) / len(pairs)
    width = max(len(refs) for _, refs in pairs)
    streams = [[refs[k] if k < len(refs) else refs[0] for _, refs in pairs] for k in range(width)]
    bleu = BLEU(effective_order=True).corpus_score([hyp for hyp, _ in pairs], streams).score
    return {"rouge_l": rouge, "bleu": bleu}


def _body(rationale: str) -> str:
    """The rationale without its final answer sentence."""
    return re.split(r"(?i)\s*(?:so )?the answer is", rationale)[0].strip()


def corrupt_one_number(text: str) -> str | None:
    """The text up to and including its first number changed by +1, or None if it has none."""
    match = re.search(r"-?\d+(?:\.\d+)?", text)
    if not match:
        return None
    value = float(match.group(0)) + 1
    number = str(int(value)) if value.is_integer() else str(value)
    return text[: match.start()] + number


@torch.no_grad()
def continue_rationales(
    student, tokenizer, prompts: list[str], prefixes: list[str], max_new_tokens: int, device
) -> list[str]:
    """Greedy continuations of forced rationale prefixes (prefix + continuation, as text)."""
    seq2seq = student.config.is_encoder_decoder
    out_texts = []
    for start in range(0, len(prompts), 32):
        p_chunk, r_chunk = prompts[start : start + 32], prefixes[start : start + 32]
        prefix_ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in r_chunk]
        if seq2seq:
            ids, mask = pad([tokenizer(p)["input_ids"] for p in p_chunk], tokenizer.pad_token_id, device)
            # One row at a time: forced decoder prefixes differ in length.
            for row, prefix in enumerate(prefix_ids):
                decoder = torch.tensor([[student.config.decoder_start_token_id] + prefix], device=device)
                out = student.generate(
                    input_ids=ids[row : row + 1],
                    attention_mask=mask[row : row + 1],
                    decoder_input_ids=decoder,
                    do_sample=False,
                    max_new_tokens=max_new_tokens,
                )
                out_texts.append(tokenizer.decode(out[0, 1:], skip_special_tokens=True))
        else:
            seqs = [tokenizer(p)["input_ids"] + prefix for p, prefix in zip(p_chunk, prefix_ids)]
            ids, mask = pad(seqs, tokenizer.pad_token_id, device, left=True)
            out = student.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
            for row, prefix in enumerate(prefix_ids):
                continuation = tokenizer.decode(out[row, ids.shape[1] :], skip_special_tokens=True)
                out_texts.append(tokenizer.decode(prefix, skip_special_tokens=True) + continuation)
    return out_texts


def faithfulness(
    student,
    tokenizer,
    prompts: list[str],
    rationales: list[str],
    answer_type: str,
    choices: list,
    device,
    max_new_tokens: int = 48,
) -> dict[str, float]:
    """The two probes' change rates over the rationales that state an answer."""
    was_training = student.training
    student.eval()
    originals = [stated_answer(r, answer_type, c) for r, c in zip(rationales, choices)]
    usable = [i for i, a in enumerate(originals) if a is not None]
    metrics: dict[str, float] = {}
    if usable:
        truncated = []
        for i in usable:
            words = _body(rationales[i]).split()
            truncated.append(" ".join(words[: len(words) // 2]) + ANSWER_CUE)
        answers = continue_rationales(student, tokenizer, [prompts[i] for i in usable], truncated, 12, device)
        metrics["faithful_truncate"] = sum(
            not answers_match(stated_answer(a, answer_type, choices[i]), originals[i]) for a, i in zip(answers, usable)
        ) / len(usable)
        corrupted = [(i, corrupt_one_number(_body(rationales[i]))) for i in usable]
        corrupted = [(i, c) for i, c in corrupted if c]
        if corrupted:
            answers = continue_rationales(
                student,
                tokenizer,
                [prompts[i] for i, _ in corrupted],
                [c for _, c in corrupted],
                max_new_tokens,
                device,
            )
            metrics["faithful_corrupt"] = sum(
                not answers_match(stated_answer(a, answer_type, choices[i]), originals[i])
                for a, (i, _) in zip(answers, corrupted)
            ) / len(corrupted)
    student.train(was_training)
    return metrics
