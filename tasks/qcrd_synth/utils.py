"""lm-eval glue for the qcrd_synth tasks. All logic lives in ``qcrd_plugin``; nothing is re-implemented here."""

from __future__ import annotations

import dataclasses

from datasets import Dataset, DatasetDict
from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask

from qcrd_plugin.config import SynthTaskConfig
from qcrd_plugin.data import explain_prompt, predict_prompt
from qcrd_plugin.metrics import label_metrics, rationale_metrics
from qcrd_plugin.synth import SPLITS, generate


def load_synth(**metadata) -> DatasetDict:
    """The synthetic splits. Generator settings come from task metadata (``--metadata`` on the
    CLI, or the run's config in the training loop); other metadata keys are ignored."""
    fields = {f.name for f in dataclasses.fields(SynthTaskConfig)}
    cfg = SynthTaskConfig(**{k: v for k, v in metadata.items() if k in fields and k != "name"})
    splits = generate(cfg)
    return DatasetDict({split: Dataset.from_list([p.to_record() for p in splits[split]]) for split in SPLITS})


def predict_text(doc: dict) -> str:
    return predict_prompt(doc["question"])


def explain_text(doc: dict) -> str:
    return explain_prompt(doc["question"])


def process_predict(doc: dict, results: list[str]) -> dict[str, float]:
    return label_metrics(results[0], doc["answer"])


def process_explain(doc: dict, results: list[str]) -> dict[str, float]:
    label_generation, rationale = results
    return rationale_metrics(rationale, label_generation, doc["answer"])


class ExplainTask(ConfigurableTask):
    """Asks each question twice, ``predict:`` then ``explain:``, so that ``process_results`` can
    score the rationale against the student's own label (rationale-label consistency)."""

    def __init__(self, config: dict | None = None, **kwargs):
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        super().__init__(config=config, **kwargs)

    def construct_requests(self, doc: dict, ctx: str, **kwargs):
        kwargs.pop("apply_chat_template", None)
        kwargs.pop("chat_template", None)
        gen = dict(self.config.generation_kwargs)
        label_request = Instance("generate_until", doc, (predict_text(doc), dict(gen, max_gen_toks=16)), idx=0, **kwargs)
        rationale_request = Instance("generate_until", doc, (ctx, gen), idx=1, **kwargs)
        return [label_request, rationale_request]
