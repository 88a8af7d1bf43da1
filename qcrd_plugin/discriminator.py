"""The quality judge D (paper §1.5, Eqs. 1 and 2).

D is a separate network: an encoder, max-pooling over tokens, two linear layers and a sigmoid,
scoring a (question, rationale) pair in [0, 1] (Eq. 1). The encoder is either a T5 encoder of
the student's width trained from scratch on the student's token ids (:class:`QualityJudge`), or a
pretrained encoder that reads the pair as text with its own tokenizer (:class:`PretrainedJudge`,
``judge.pretrained``; the paper's is a pretrained T5-base encoder). It is
pre-trained on teacher positives vs negatives, where negatives are topped up by masking or
replacing words of positives so the classes balance, and then updated online during training
through ``alpha3 * L_D``. Its scores weight the student's contrastive terms only as detached
numbers, so D never learns from the student's loss.
"""

from __future__ import annotations

import dataclasses
import random

import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm.auto import tqdm
from transformers import T5Config, T5EncoderModel

from .config import JudgeConfig, auto_judge
from .data import TrainExample, pad


class QualityJudge(nn.Module):
    """D(x, r) -> s in (0, 1): encoder + max-pool + 2 linear layers + sigmoid (Eq. 1)."""

    def __init__(self, config: T5Config, num_layers: int | None = None):
        super().__init__()
        if num_layers is not None:
            config = T5Config.from_dict({**config.to_dict(), "num_layers": num_layers})
        self.encoder = T5EncoderModel(config)
        width = config.d_model
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        hidden = hidden.masked_fill(attention_mask.unsqueeze(-1) == 0, torch.finfo(hidden.dtype).min)
        pooled = hidden.max(dim=1).values
        return torch.sigmoid(self.head(pooled)).squeeze(-1)

    def encode(self, inputs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) of judge inputs given as the student's token ids: D reads them as they are."""
        return pad(inputs, pad_id, device)

    def param_groups(self, cfg: JudgeConfig) -> list[dict]:
        """AdamW parameter groups: every weight at ``judge.learning_rate``."""
        return [{"params": list(self.parameters()), "lr": cfg.learning_rate, "base_lr": cfg.learning_rate}]


class PretrainedJudge(QualityJudge):
    """D(x, r) with a pretrained encoder (a BERT-style ``AutoModel`` folder such as all-MiniLM-L6-v2):
    the same max-pool and two-layer head over its last hidden states, but it reads the (question,
    rationale) pair as *text* with its own tokenizer. Judge inputs arrive as student token ids
    (the loss and the evaluator build them), so :meth:`encode` decodes them with the student's
    tokenizer first; D therefore works with any student vocabulary."""

    def __init__(self, folder: str, student_tokenizer, max_tokens: int = 512):
        nn.Module.__init__(self)
        from transformers import AutoModel, AutoTokenizer

        # A local encoder folder (a shipped extra or the user's): its code is never run.
        self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        self.encoder = AutoModel.from_pretrained(folder, trust_remote_code=False, dtype=torch.float32)
        self.student_tokenizer = student_tokenizer
        self.max_tokens = min(max_tokens, getattr(self.encoder.config, "max_position_embeddings", max_tokens))
        width = self.encoder.config.hidden_size
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))

    def texts(self, inputs: list[list[int]]) -> list[str]:
        """The judge inputs as text (the student's special tokens, such as EOS, dropped)."""
        return self.student_tokenizer.batch_decode(inputs, skip_special_tokens=True)

    def encode(self, inputs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) in the judge's own vocabulary; ``pad_id`` (the student's) is not used."""
        enc = self.tokenizer(
            self.texts(inputs), padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        return enc["input_ids"].to(device), enc["attention_mask"].to(device)

    def param_groups(self, cfg: JudgeConfig) -> list[dict]:
        """The pretrained encoder at ``judge.encoder_learning_rate`` (a from-scratch rate would wipe
        out what it knows), the fresh head at ``judge.learning_rate``."""
        return [
            {
                "params": list(self.encoder.parameters()),
                "lr": cfg.encoder_learning_rate,
                "base_lr": cfg.encoder_learning_rate,
            },
            {"params": list(self.head.parameters()), "lr": cfg.learning_rate, "base_lr": cfg.learning_rate},
        ]


def build_judge_model(cfg: JudgeConfig, student, student_tokenizer) -> QualityJudge:
    """D for a run: ``judge.pretrained`` (a folder or a short name such as ``minilm-l6``), else a
    from-scratch T5 encoder of the student's width (:func:`students.judge_config`). ``auto`` is
    resolved when a run's config is loaded; a config built in code resolves it here the same way."""
    if cfg.pretrained == "auto":
        cfg = dataclasses.replace(cfg, pretrained=auto_judge(getattr(student.config, "_name_or_path", "")))
    if cfg.pretrained:
        from .pretrained import resolve

        return PretrainedJudge(resolve(cfg.pretrained, "judge.pretrained").name, student_tokenizer, cfg.max_tokens)
    from .students import judge_config

    return QualityJudge(judge_config(student), cfg.num_layers)


def judge_input(explain_ids: list[int], rationale_ids: list[int], eos_id: int) -> list[int]:
    """The judge reads the question prompt then the rationale, in one sequence."""
    question = explain_ids[:-1] if explain_ids and explain_ids[-1] == eos_id else explain_ids
    return question + rationale_ids


def score(judge: QualityJudge, inputs: list[list[int]], pad_id: int, device) -> torch.Tensor:
    """Scores of many judge inputs (student token ids) in one padded batch."""
    ids, mask = judge.encode(inputs, pad_id, device)
    return judge(ids, mask)


def judge_loss(
    scores: torch.Tensor, group: torch.Tensor, is_positive: torch.Tensor, n_groups: int, kind: str = "printed"
) -> torch.Tensor:
    """L_D over a batch of scored rationales; ``group`` says which question each belongs to.

    - ``printed`` (Eq. 2 as printed): ``-log( sum_pos exp(s) / sum_neg exp(s) )`` per question
    - ``infonce``: ``-log( sum_pos exp(s) / sum_all exp(s) )`` per question
    - ``bce``: binary cross-entropy of each score against its label

    Questions lacking positives or negatives are skipped (for ``printed``/``infonce``).
    Returns 0 (with a graph) when no question qualifies.
    """
    if kind == "bce":
        return F.binary_cross_entropy(scores, is_positive.float())
    # Scores lie in (0, 1), so plain exp sums are numerically safe.
    exp = scores.exp()
    zeros = torch.zeros(n_groups, dtype=scores.dtype, device=scores.device)
    pos_sum = zeros.index_add(0, group, exp * is_positive)
    neg_sum = zeros.index_add(0, group, exp * ~is_positive)
    has_both = (pos_sum > 0) & (neg_sum > 0)
    if not has_both.any():
        return scores.sum() * 0.0
    # Select before the log: log(0) of a question without negatives would be -inf, and its zero
    # share of the gradient would come back as 0 * inf = NaN in every judge weight.
    pos_sum, neg_sum = pos_sum[has_both], neg_sum[has_both]
    if kind == "printed":
        per_question = -(pos_sum.log() - neg_sum.log())
    else:  # infonce
        per_question = -(pos_sum.log() - (pos_sum + neg_sum).log())
    return per_question.mean()


def augment_negative(
    rationale: list[int],
    rng: random.Random,
    vocab: list[int],
    mask_id: int,
    mask_prob: float,
    numbers: list[int] | None = None,
) -> list[int]:
    """A synthetic negative: tokens of a positive changed with probability ``mask_prob`` each.

    Word mode (``numbers`` None): any token is masked or replaced by a random vocabulary token.
    Number mode: only number tokens (``numbers``: their ids) are replaced, each by a different
    number, which turns "4 + 2 = 6" into "4 + 2 = 8": the slips an LLM's wrong rationales make,
    where a masked word is trivially told apart. A rationale without numbers falls back to words.
    At least one token changes, and the final token (EOS) is kept.
    """
    body, tail = rationale[:-1], rationale[-1:]
    out = list(body)
    number_set = set(numbers or ())
    candidates = [i for i, t in enumerate(body) if t in number_set] if number_set else []
    if candidates:
        positions = [i for i in candidates if rng.random() < mask_prob] or [rng.choice(candidates)]
        for i in positions:
            out[i] = rng.choice([t for t in numbers if t != body[i]])
        return out + tail
    positions = [i for i in range(len(body)) if rng.random() < mask_prob] or (
        [rng.randrange(len(body))] if body else []
    )
    for i in positions:
        out[i] = mask_id if rng.random() < 0.5 else rng.choice(vocab)
    return out + tail


def number_tokens(tokenizer) -> list[int]:
    """Ids of the vocabulary's tokens that are numbers (digits, with or without a word marker)."""
    return sorted(i for token, i in tokenizer.get_vocab().items() if token.lstrip("▁Ġ ").isdigit())


def pretraining_pairs(
    examples: list[TrainExample],
    rng: random.Random,
    vocab: list[int],
    mask_id: int,
    mask_prob: float,
    numbers: list[int] | None = None,
) -> list[tuple[list[list[int]], list[list[int]]]]:
    """Per question: (positives, negatives) with negatives topped up by augmentation to balance."""
    pairs = []
    for ex in examples:
        if not ex.positives:
            continue
        negatives = list(ex.llm_negatives)
        while len(negatives) < len(ex.positives):
            negatives.append(augment_negative(rng.choice(ex.positives), rng, vocab, mask_id, mask_prob, numbers))
        pairs.append((ex.positives, negatives))
    return pairs


def batch_loss(
    judge: QualityJudge,
    examples: list[TrainExample],
    sets: list[tuple[list[list[int]], list[list[int]]]],
    kind: str,
    pad_id: int,
    eos_id: int,
    device,
) -> torch.Tensor:
    """L_D on a batch of (positives, negatives) sets."""
    inputs, group, positive = [], [], []
    for q, (ex, (pos, neg)) in enumerate(zip(examples, sets)):
        for rationale, is_pos in [(r, True) for r in pos] + [(r, False) for r in neg]:
            inputs.append(judge_input(ex.explain_ids, rationale, eos_id))
            group.append(q)
            positive.append(is_pos)
    scores = score(judge, inputs, pad_id, device)
    return judge_loss(
        scores, torch.tensor(group, device=device), torch.tensor(positive, device=device), len(examples), kind
    )


def pretrain(
    judge: QualityJudge,
    examples: list[TrainExample],
    cfg: JudgeConfig,
    tokenizer,
    device,
    seed: int,
    progress: bool = True,
) -> list[float]:
    """Pre-train D for ``cfg.pretrain_steps`` steps; returns the L_D of every step."""
    rng = random.Random(seed)
    vocab = [i for i in range(len(tokenizer)) if i not in tokenizer.all_special_ids]
    by_id = {ex.id: ex for ex in examples}
    numbers = number_tokens(tokenizer) if cfg.augment == "numbers" else None
    sets = pretraining_pairs(examples, rng, vocab, mask_token_id(tokenizer), cfg.mask_prob, numbers)
    ids = [ex.id for ex in examples if ex.positives]
    optimizer = torch.optim.AdamW(judge.param_groups(cfg))
    judge.train()
    losses = []
    for _ in tqdm(range(cfg.pretrain_steps), desc="judge pre-training", disable=not progress, leave=False):
        picks = rng.sample(range(len(ids)), min(cfg.pretrain_batch_size, len(ids)))
        loss = batch_loss(
            judge,
            [by_id[ids[i]] for i in picks],
            [sets[i] for i in picks],
            cfg.loss,
            tokenizer.pad_token_id,
            tokenizer.eos_token_id,
            device,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def mask_token_id(tokenizer) -> int:
    """The student's mask token for augmentation; a causal LM's tokenizer often has none, and then
    its unknown (else EOS) token stands in: a pretrained judge decodes either as a dropped word."""
    for token_id in (tokenizer.mask_token_id, tokenizer.unk_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    raise ValueError("the student's tokenizer has no mask, unknown or EOS token")


def follow_alpha3(optimizer: torch.optim.Optimizer, base_lr: float, alpha3: float, alpha3_initial: float) -> None:
    """Set D's learning rates to ``lr_0 * alpha3 / alpha3_initial`` (``judge.lr_follows_alpha3``),
    where ``lr_0`` is each parameter group's own starting rate (``base_lr`` for a group without one).

    D's only loss is ``alpha3 * L_D`` and it has its own AdamW, whose update m / sqrt(v) does not
    change when the loss is scaled: decaying alpha3 alone leaves D's step size where it was, and
    the paper's "D gradually freezes" never happens. Scaling the learning rate with alpha3 does it.
    """
    factor = alpha3 / alpha3_initial if alpha3_initial > 0 else 0.0
    for group in optimizer.param_groups:
        group["lr"] = group.get("base_lr", base_lr) * factor


@torch.no_grad()
def roc_auc(
    judge: QualityJudge,
    positives: list[list[int]],
    negatives: list[list[int]],
    pad_id: int,
    device,
    batch_size: int = 256,
) -> float | None:
    """ROC-AUC of D separating positive from negative judge inputs (None if a class is empty)."""
    if not positives or not negatives:
        return None
    scores = mean_scores(judge, positives + negatives, pad_id, device, batch_size, reduce=False)
    return float(roc_auc_score([1] * len(positives) + [0] * len(negatives), scores))


@torch.no_grad()
def mean_scores(
    judge: QualityJudge, inputs: list[list[int]], pad_id: int, device, batch_size: int = 256, reduce: bool = True
):
    """D's scores of many inputs (their mean when ``reduce``), in eval mode, batched."""
    was_training = judge.training
    judge.eval()
    out: list[float] = []
    for start in range(0, len(inputs), batch_size):
        out += score(judge, inputs[start : start + batch_size], pad_id, device).tolist()
    judge.train(was_training)
    if reduce:
        return sum(out) / len(out) if out else None
    return out
