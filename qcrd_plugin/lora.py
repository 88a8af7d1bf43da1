"""LoRA students through peft (``student.lora_rank`` > 0): the base weights stay frozen and only
the adapters train, so a larger pretrained student fits where full fine-tuning does not.

The base is what every round's adapter sits on: ``student.pretrained`` when set (loaded again by
name), else the offline preset's fresh initialisation, saved once as ``<run>/base_model/``
(a resume must continue on the very same weights, which a new draw would not give). A round
folder holds the adapter (``adapter_model.safetensors``, ``adapter_config.json``) and the
tokenizer; lm-eval scores it with ``pretrained=<base>,peft=<round folder>``.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

BASE_DIR = "base_model"

# The attention projections of the two families: where the LoRA paper puts its adapters.
DEFAULT_TARGETS = {"seq2seq": ["q", "k", "v", "o"], "causal": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def is_lora(model) -> bool:
    """True for a peft model (a LoRA student)."""
    from peft import PeftModel

    return isinstance(model, PeftModel)


def add_lora(model, cfg):
    """``model`` with LoRA adapters (rank ``cfg.lora_rank``, ``cfg.lora_alpha``, dropout, target
    modules) on the projections; every other weight frozen."""
    from peft import LoraConfig, TaskType, get_peft_model

    seq2seq = model.config.is_encoder_decoder
    targets = list(cfg.lora_target_modules) or DEFAULT_TARGETS["seq2seq" if seq2seq else "causal"]
    config = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        task_type=TaskType.SEQ_2_SEQ_LM if seq2seq else TaskType.CAUSAL_LM,
    )
    try:
        with quiet_peft():
            return get_peft_model(model, config)
    except ValueError as err:  # peft: "Target modules {...} not found in the base model"
        from .errors import ConfigError

        raise ConfigError(f"key 'student.lora_target_modules': {str(err).splitlines()[0][:200]}") from None


def check_targets(cfg) -> None:
    """ConfigError now, before any teacher sampling, when ``cfg.lora_target_modules`` names no
    module of the student: the adapters are added to a weightless copy (meta device) of the preset
    or of ``cfg.pretrained``'s architecture."""
    if not cfg.lora_rank:
        return
    import torch

    from .students import tiny_causal_config, tiny_t5_config, train_tokenizer

    with torch.device("meta"):
        if cfg.pretrained:
            from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

            from .pretrained import load_config, resolve

            config = load_config(resolve(cfg.pretrained, "student.pretrained"), "student.pretrained")
            auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
            model = auto.from_config(config, trust_remote_code=cfg.trust_remote_code)
        else:
            from transformers import LlamaForCausalLM, T5ForConditionalGeneration

            tokenizer = train_tokenizer(["a b c"], 64, append_eos=cfg.family == "seq2seq")  # sizes do not matter
            if cfg.family == "causal":
                model = LlamaForCausalLM(tiny_causal_config(cfg, tokenizer))
            else:
                model = T5ForConditionalGeneration(tiny_t5_config(cfg, tokenizer))
        add_lora(model, cfg)


def lora_student(cfg, student, tokenizer, run_dir: Path, restore_from: Path | None, writes: bool, log):
    """The LoRA student of a run: adapters on ``student`` (a fresh run; ``writes``: this process
    saves the base), or on the run's saved base with the adapter of ``restore_from`` (a resume)."""
    from .checkpoints import damaged, save_base_model
    from .errors import UserInputError

    base_dir = run_dir / BASE_DIR
    if not cfg.student.pretrained and restore_from is None and writes:
        save_base_model(base_dir, student, tokenizer)
    elif not cfg.student.pretrained and restore_from is not None:
        try:
            student.load_state_dict(type(student).from_pretrained(base_dir).state_dict())
        except (OSError, RuntimeError, ValueError) as err:  # missing, truncated or corrupted
            raise UserInputError(damaged(base_dir / "model.safetensors", err)) from None
    model = load_adapter(student, restore_from) if restore_from is not None else add_lora(student, cfg.student)
    trainable, total = count_parameters(model)
    log(f"student: LoRA rank {cfg.student.lora_rank}: {trainable:,} of {total:,} parameters train")
    return model


def load_adapter(model, folder: Path):
    """``model`` (the base) with the trainable adapter saved in ``folder`` (a round checkpoint)."""
    from peft import PeftModel

    with quiet_peft():
        return PeftModel.from_pretrained(model, str(folder), is_trainable=True)


@contextmanager
def quiet_peft():
    """peft reads a transformers attribute that warns of its rename on every wrap: not the user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def base_reference(cfg, run_dir: Path) -> str:
    """Where a LoRA round's base weights are: ``student.pretrained``, else ``<run>/base_model``
    (the preset's initialisation, or the de-quantised copy of a GGUF ``student.pretrained``)."""
    from .pretrained import is_gguf

    if cfg.student.pretrained and not is_gguf(cfg.student.pretrained):
        return cfg.student.pretrained
    return str((run_dir / BASE_DIR).resolve())


def count_parameters(model) -> tuple[int, int]:
    """(trainable, all) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
