"""Students: a tiny T5 built offline (config + a tokenizer trained locally), or any HF seq2seq model.

The tiny preset writes one folder with ``save_pretrained`` (model + tokenizer) that loads with
``transformers`` and with ``lm_eval --model hf --model_args pretrained=DIR,backend=seq2seq``.
"""

from __future__ import annotations

import string
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from .config import StudentConfig

PAD, EOS, UNK, MASK = "<pad>", "</s>", "<unk>", "<mask>"
SPECIAL_TOKENS = (PAD, EOS, UNK, MASK)  # ids 0..3, T5's convention for pad/eos/unk
PREDICT_PREFIX, EXPLAIN_PREFIX = "predict: ", "explain: "


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a BPE tokenizer on ``corpus``; digits are always split one by one.

    Spaces become a ``▁`` marker (as in T5's sentencepiece) so decoding restores them exactly,
    and every encoding ends with ``</s>`` as T5 expects.
    """
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Punctuation(),
    ])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=list(string.printable.strip()) + ["▁"],
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    eos_id = tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", pair=f"$A $B {EOS}", special_tokens=[(EOS, eos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK, mask_token=MASK)


def tiny_t5_config(cfg: StudentConfig, tokenizer: PreTrainedTokenizerFast) -> T5Config:
    """The T5 config of the tiny offline preset."""
    return T5Config(
        vocab_size=len(tokenizer),
        d_model=cfg.d_model,
        d_ff=cfg.d_ff,
        d_kv=cfg.d_kv,
        num_layers=cfg.num_layers,
        num_decoder_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        dropout_rate=cfg.dropout,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        # lm-eval reads the context window from here; generation budgets must stay below it.
        n_positions=512,
    )


def build_student(cfg: StudentConfig, corpus: Iterable[str]) -> tuple[T5ForConditionalGeneration, PreTrainedTokenizerFast]:
    """The student and its tokenizer: the tiny preset trained on ``corpus``, or ``cfg.pretrained``.

    ``pretrained`` may be a local folder (works offline) or a hub id (needs a network; never used
    by the tests or the default run).
    """
    if cfg.pretrained:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(cfg.pretrained)
        model = AutoModelForSeq2SeqLM.from_pretrained(cfg.pretrained)
        return model, tokenizer
    tokenizer = train_tokenizer(corpus, cfg.vocab_size)
    model = T5ForConditionalGeneration(tiny_t5_config(cfg, tokenizer))
    return model, tokenizer
