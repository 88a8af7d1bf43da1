"""Students: a tiny T5 built offline (config + a tokenizer trained locally), or any HF seq2seq model.

The tiny preset writes one folder with ``save_pretrained`` (model + tokenizer) that loads with
``transformers`` and with ``lm_eval --model hf --model_args pretrained=DIR,backend=seq2seq``.
"""

from __future__ import annotations

import string
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration
from transformers.activations import GELUTanh, NewGELUActivation

from .config import StudentConfig
from .errors import UserInputError

PAD, EOS, UNK, MASK = "<pad>", "</s>", "<unk>", "<mask>"
SPECIAL_TOKENS = (PAD, EOS, UNK, MASK)  # ids 0..3, T5's convention for pad/eos/unk
PREDICT_PREFIX, EXPLAIN_PREFIX = "predict: ", "explain: "


def train_tokenizer(corpus: Iterable[str], vocab_size: int, append_eos: bool = True) -> PreTrainedTokenizerFast:
    """Train a BPE tokenizer on ``corpus``; digits are always split one by one.

    Spaces become a ``▁`` marker (as in T5's sentencepiece) so decoding restores them exactly.
    With ``append_eos`` (seq2seq students) every encoding ends with ``</s>`` as T5 expects.
    Decoder-only students get a tokenizer that adds nothing, as causal LMs' tokenizers do: lm-eval
    encodes a causal model's context with the tokenizer's default special tokens, and a context
    that ended in ``</s>`` would tell the student the text is over before its answer begins.
    """
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Punctuation(),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=list(string.printable.strip()) + ["▁"],
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    if append_eos:
        eos_id = tok.token_to_id(EOS)
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A {EOS}", pair=f"$A $B {EOS}", special_tokens=[(EOS, eos_id)]
        )
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


def tiny_causal_config(cfg: StudentConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    """The decoder-only tiny preset: a Llama-style model (RoPE, RMSNorm, SwiGLU) of the same size."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.num_heads * cfg.d_kv,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=2 * cfg.num_layers,  # as deep as the T5 preset's encoder + decoder
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        # RoPE: positions cost no parameters; a prompt and its target must fit in one sequence.
        max_position_embeddings=max(512, cfg.max_input_tokens + cfg.max_target_tokens),
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )


def is_seq2seq(model) -> bool:
    """True for encoder-decoder students (T5-style), False for decoder-only ones."""
    return bool(getattr(model.config, "is_encoder_decoder", False))


def check_pretrained(cfg: StudentConfig) -> None:
    """UserInputError now, before any teacher sampling, when ``cfg.pretrained`` cannot be loaded
    (a hub id without a network, a folder without a model config, a short name whose extra is not
    installed, a GGUF of an architecture transformers cannot read)."""
    from .pretrained import check_loadable

    check_loadable(cfg.pretrained, "student.pretrained", cfg.trust_remote_code)


def build_student(cfg: StudentConfig, corpus: Iterable[str], source: str | None = None):
    """The student and its tokenizer: the tiny preset of ``cfg.family`` trained on ``corpus``, or
    the pretrained model ``source`` (default ``cfg.pretrained``; seq2seq or decoder-only, read from
    its config).

    ``source`` may be a local folder (works offline) or a hub id (needs a network; never used by
    the tests or the default run). A GGUF ``cfg.pretrained`` arrives here as the run's de-quantised
    copy (:func:`pretrained.dequantised_copy`).
    """
    source = cfg.pretrained if source is None else source
    if source:
        return load_pretrained_student(source, cfg.trust_remote_code)
    tokenizer = train_tokenizer(corpus, cfg.vocab_size, append_eos=cfg.family == "seq2seq")
    if cfg.family == "causal":
        return LlamaForCausalLM(tiny_causal_config(cfg, tokenizer)), tokenizer
    model = T5ForConditionalGeneration(tiny_t5_config(cfg, tokenizer))
    init_output_layer(model)
    return model, tokenizer


def load_pretrained_student(source: str, trust_remote_code: bool):
    """(model, tokenizer) of a Hugging Face folder or hub id; its pad token is its EOS when it has none."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from .pretrained import ModelRef, load_config

    # Explicit, never transformers' default: code shipped with a model runs only when the user says so.
    seq2seq = getattr(
        load_config(ModelRef(source), "student.pretrained", trust_remote_code), "is_encoder_decoder", False
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_pretrained(
            source, trust_remote_code=trust_remote_code
        )
    except OSError as err:  # a folder without weights or tokenizer files
        raise UserInputError(
            f"key 'student.pretrained': cannot load {source!r} ({str(err).splitlines()[0][:160]})"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:  # the loss pads with the config's id (methods/base.py)
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def init_output_layer(model: T5ForConditionalGeneration) -> None:
    """Re-initialise an untied T5 ``lm_head`` for training from scratch with AdamW.

    transformers draws it with std 1.0 (``initializer_factor``), which suits T5's own pretraining
    (Adafactor, tied embeddings rescaled by d_model^-0.5) but makes the tiny preset's first logits
    about sqrt(d_model) wide: a first-step loss of ~59 nats per token where a uniform guess costs
    ln(vocab) ≈ 6.4. std d_model^-0.5 gives logits of unit scale (the decoder's final RMSNorm
    outputs unit-scale features), so the first loss sits near ln(vocab).
    """
    nn.init.normal_(model.lm_head.weight, std=model.config.d_model**-0.5)


def use_fused_gelu(model: nn.Module) -> int:
    """Swap transformers' Python tanh-GELU (``gelu_new``, T5 v1.1 / Flan-T5 and the tiny preset:
    seven elementwise ops forward, more in backward) for its one-kernel equivalent ``GELUTanh``
    (``gelu_pytorch_tanh``: the same formula; transformers documents the two as equivalent up to
    rounding) in ``model``, in place. Returns how many were swapped. The config is left alone, so
    a checkpoint still loads as ``gelu_new``. One kernel in place of several elementwise ops (each
    with its own launch and intermediate tensor) makes every training step cheaper (measured:
    docs/performance.md)."""
    swaps = [
        (parent, name)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is NewGELUActivation
    ]
    for parent, name in swaps:
        setattr(parent, name, GELUTanh())
    return len(swaps)


def use_eager_attention(model) -> None:
    """Run the tiny T5 preset (student, or the from-scratch judge) with transformers' eager
    attention, not SDPA.

    At the preset's width (4 heads of 16) SDPA's fused kernel saves nothing, and T5's relative
    position bias must first be merged into a float mask (one ``torch.where`` per layer and call,
    and its backward); eager adds the bias to the scores directly. The Llama preset, which has no
    such bias, measured slightly faster with SDPA and keeps it, as pretrained models keep their
    own choice. Measurements: docs/performance.md. Not saved with the model: lm-eval loads a
    round's folder with transformers' default."""
    model.set_attn_implementation("eager")


def judge_config(student) -> T5Config:
    """The judge's encoder config, of the student's width: the student's own T5 config, or for a
    decoder-only student a T5 encoder of the same hidden size and vocabulary."""
    config = student.config
    if isinstance(config, T5Config):
        return config
    heads = config.num_attention_heads
    return T5Config(
        vocab_size=config.vocab_size,
        d_model=config.hidden_size,
        d_ff=config.intermediate_size,
        d_kv=config.hidden_size // heads,
        num_heads=heads,
        num_layers=1,
        feed_forward_proj="gated-gelu",
        pad_token_id=config.pad_token_id,
        eos_token_id=config.eos_token_id,
        dropout_rate=0.0,
    )
