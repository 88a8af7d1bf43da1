"""Evaluation through lm-evaluation-harness, in memory, after every training round.

The student object is wrapped in an ``HFLM`` (no checkpoint reload) and scored on the ``qcrd_*``
tasks in ``tasks/`` with lm-eval's evaluator. The same tasks run from the plain CLI:
``lm_eval --model hf --model_args pretrained=DIR,backend=seq2seq --tasks qcrd_synth --include_path tasks``.
"""

from __future__ import annotations

import dataclasses
import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from lm_eval.evaluator import evaluate as lm_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from .config import SHIPPED_TASKS
from .data import explain_prompt
from .files import atomic_write_json, write_jsonl
from .rationale_quality import distinct_n, faithfulness, overlap_metrics
from .rationales import select_pool

METRICS_FORMAT = "qcrd-metrics/1"


class StudentHFLM(HFLM):
    """``HFLM`` over the in-memory student (seq2seq or decoder-only), with lm-eval 0.4.13's
    seq2seq generation bound fixed.

    0.4.13 passes ``max_length = prompt length + max_gen_toks`` to ``generate`` even for
    encoder-decoder models, whose decoder then may produce far more than ``max_gen_toks`` tokens.
    Here the decoder is bounded by ``max_gen_toks`` (+1 for the decoder start token). Label
    accuracy is unaffected: a label that needs more than ``max_gen_toks`` tokens is wrong anyway.
    """

    def generate_until(self, requests, disable_tqdm: bool = False):
        # lm-eval passes ``disable`` to tqdm explicitly, which beats TQDM_DISABLE; honour it here.
        return super().generate_until(requests, disable_tqdm=disable_tqdm or bool(os.environ.get("TQDM_DISABLE")))

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        if self.backend == "seq2seq":
            max_length = max_length - context.shape[1] + 1
        return super()._model_generate(context, max_length, stop, **generation_kwargs)


def tasks_dir() -> Path:
    """The folder holding the ``qcrd_*`` task YAMLs: package data, so a wheel install has them
    (``qcrd-bench tasks-path`` prints it for ``lm_eval --include_path``; ``QCRD_TASKS_DIR`` overrides)."""
    override = os.environ.get("QCRD_TASKS_DIR")
    path = Path(override) if override else SHIPPED_TASKS
    if not path.is_dir():
        from .errors import UserInputError

        raise UserInputError(
            f"lm-eval task folder {path} not found; set QCRD_TASKS_DIR to a folder of qcrd task YAMLs "
            "(a checkout's tasks/)"
        )
    return path


def task_manager(metadata: dict[str, Any], names: list[str] = (), include_path: list[str] = ()) -> TaskManager:
    """A TaskManager over our tasks and ``include_path``'s (``evaluation.include_path``, as
    lm-eval's ``--include_path``), and over lm-eval's own only when ``names`` asks for a task
    outside ours: indexing lm-eval's ~14k built-in YAMLs costs seconds."""
    extra = [str(Path(folder).resolve()) for folder in include_path]
    return TaskManager(
        include_path=[str(tasks_dir()), *extra],
        include_defaults=any(not name.startswith("qcrd") for name in names),
        metadata=metadata,
    )


def check_task_names(names: list[str], include_path: list[str] = ()) -> None:
    """UserInputError naming ``evaluation.tasks`` when a name is not one of our tasks, an
    ``include_path`` task or in lm-eval's registry (tasks, groups, tags, globs), or when a task
    outside ours cannot load its data (offline, say): checked before any teacher sampling or
    training, not after them; an unknown name comes with lm-eval's own close-match suggestions."""
    from .errors import UserInputError

    for folder in include_path:
        if not Path(folder).is_dir():
            raise UserInputError(f"key 'evaluation.include_path': {folder} is not a folder")
    manager = task_manager({}, names, include_path)
    unknown = [name for name in names if not manager.match_tasks([name])]  # a glob must match something
    if unknown:
        hint = suggest_tasks(unknown[0], manager.all_tasks)
        raise UserInputError(
            f"key 'evaluation.tasks': {unknown[0]!r} is neither a qcrd task nor an lm-eval task, group or tag"
            + (f"; did you mean {', '.join(hint)}?" if hint else "")
            + " (`lm-eval ls tasks` lists lm-eval's, `qcrd-bench tasks-path` holds ours)"
        )
    for name in (n for n in names if not n.startswith("qcrd")):
        try:
            manager.load(manager.match_tasks([name]))
        except Exception as err:  # noqa: BLE001 - lm-eval and datasets raise anything; the user must see which task
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise UserInputError(
                f"key 'evaluation.tasks': lm-eval could not load {name!r}: {first} "
                "(its dataset comes from the Hugging Face Hub unless it is in the local datasets cache)"
            ) from None


def suggest_tasks(name: str, known: list[str]) -> list[str]:
    """Up to three close matches for ``name``: difflib's nearest spellings, then lm-eval's own
    suggestions (its registry's prefix/substring rule)."""
    import difflib

    try:
        from lm_eval.api.registry import _suggest_similar  # private in 0.4.13: do without it if it moves
    except ImportError:
        _suggest_similar = None
    hint = difflib.get_close_matches(name, known, n=3, cutoff=0.8)
    hint += _suggest_similar(name, sorted(known)) if _suggest_similar else []
    return list(dict.fromkeys(hint))[:3]


def build_tasks(names: list[str], manager: TaskManager) -> list:
    """lm-eval Task (and Group) objects for ``names``, built once per run and reused every round:
    rebuilding them reads the YAMLs and reloads the datasets each time, which on a small model
    costs more than the generation itself."""
    loaded = manager.load(list(names))
    children = {child for members in loaded.get("group_map", {}).values() for child in members}
    top = [group for name, group in loaded["groups"].items() if name not in children]
    return top + [task for name, task in loaded["tasks"].items() if name not in children]


def on_questions(manager: TaskManager, name: str, questions: list):
    """lm-eval task ``name`` scoring ``questions`` instead of its test split: the run's validation
    questions, which ``evaluation.select: validation`` picks the best round on without a look at
    the test set. The task object is lm-eval's own; only its documents are the run's."""
    from datasets import Dataset

    task = manager.load([name])["tasks"][name]
    task.dataset["run_validation"] = Dataset.from_list([q.to_record() for q in questions])
    task.config.test_split = "run_validation"
    return task


def default_tasks(family: str) -> list[str]:
    """The tasks scored after every round: the family's label and rationale prompts."""
    return [f"qcrd_{family}", f"qcrd_{family}_explain"]


def task_metadata(task_cfg) -> dict[str, Any]:
    """lm-eval metadata that makes the run's own task family load exactly the run's questions
    (same generator settings, source, data directory or task spec). Under ``run_task`` so that
    other families evaluated in the same run keep their own defaults."""
    meta = dataclasses.asdict(task_cfg)
    for key in ("data_dir", "spec"):
        if meta.get(key):
            meta[key] = str(Path(meta[key]).resolve())
    return {"run_task": meta}


def to_builtin(value: Any) -> Any:
    """numpy scalars and nested containers -> plain JSON types."""
    if isinstance(value, dict):
        return {str(k): to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_builtin(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def evaluate(model, tokenizer, tasks: list, manager: TaskManager, batch_size: int, limit: int = 0) -> dict[str, Any]:
    """Run lm-eval on the in-memory student; returns lm-eval's results dict (with samples).

    ``tasks`` are task names or the objects :func:`build_tasks` returned for them.

    This is ``simple_evaluate`` minus what does not apply to an in-memory model between training
    steps: it calls lm-eval's ``evaluator.evaluate`` directly, because ``simple_evaluate`` also
    collects environment info by running ``pip list`` in a subprocess on every call, which costs
    more than scoring a small model on a few hundred items. No seeds are set, so the training RNGs
    are not reseeded; the model is put back in train mode afterwards (HFLM switches it to eval).
    """
    backend = "seq2seq" if model.config.is_encoder_decoder else "causal"
    lm = StudentHFLM(pretrained=model, tokenizer=tokenizer, backend=backend, batch_size=batch_size)
    loaded = manager.load(list(tasks))
    for task in loaded["tasks"].values():
        if (
            task.get_config("num_fewshot") is None
        ):  # simple_evaluate's default: zero-shot unless the YAML says otherwise
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=None)  # as simple_evaluate(fewshot_random_seed=None) does
    try:
        results = lm_evaluate(
            lm=lm, task_dict=loaded, limit=limit or None, bootstrap_iters=0, log_samples=True, verbosity="ERROR"
        )
    finally:
        model.train()
    results["config"] = {
        "model": f"in-memory {type(model).__name__} ({backend})",
        "batch_size": batch_size,
        "limit": limit or None,
        "lm_eval_version": version("lm_eval"),
    }
    return results


def task_scores(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` from lm-eval's results (filter suffix and stderr dropped)."""
    scores = {}
    for task, metrics in results["results"].items():
        scores[task] = {
            key.split(",")[0]: float(value)
            for key, value in metrics.items()
            if "," in key and "_stderr" not in key and isinstance(value, (int, float, np.generic))
        }
    return scores


def reference_rationales(task, teacher, cfg) -> dict[str, list[str]]:
    """Reference rationales per test question: the gold rationale, plus the teacher's positives
    when they come cheap (the simulated teacher, or a source that ships test pools)."""
    refs = {q.id: [q.gold_rationale] if q.gold_rationale else [] for q in task.questions.get("test", [])}
    pool = []
    if cfg.evaluation.overlap and cfg.teacher.kind == "simulated" and teacher is not None:  # None: not asked
        pool = teacher.sample(task.questions["test"], cfg.teacher.samples, cfg.teacher.temperature)
    elif cfg.evaluation.overlap and "test" in task.pools:
        pool = task.pools["test"]
    for sel in select_pool(pool, cfg.self_consistency):
        refs.setdefault(sel.id, []).extend(p for p in sel.positives if p not in refs[sel.id])
    return refs


def rationale_quality(
    student, tokenizer, explain_samples: list[dict], references: dict[str, list[str]], cfg, device
) -> dict:
    """Overlap, diversity and faithfulness of the student's test rationales (rationale_quality.py)."""
    docs = [s["doc"] for s in explain_samples]
    rationales = [s["resps"][1][0] for s in explain_samples]
    out: dict[str, float] = {}
    if cfg.evaluation.overlap:
        out.update(overlap_metrics(rationales, [references.get(d["id"], []) for d in docs]))
        out["distinct_1"], out["distinct_2"] = distinct_n(rationales, 1), distinct_n(rationales, 2)
    if cfg.evaluation.faithfulness:
        n = cfg.evaluation.faithfulness_items
        out.update(
            faithfulness(
                student,
                tokenizer,
                [explain_prompt(d["question"]) for d in docs[:n]],
                rationales[:n],
                docs[0].get("answer_type", "number"),
                [d.get("choices") for d in docs[:n]],
                device,
                cfg.negatives.max_new_tokens,
            )
        )
    return out


class Evaluator:
    """Scores the student after each round: lm-eval on the run's tasks, the judge's score and
    held-out ROC-AUC, rationale quality. Built once per run (on rank 0): the lm-eval task
    objects, the reference rationales and the judge's held-out pairs are reused every round.

    ``heldout``: the validation questions' TrainExamples, whose positives and LLM negatives are
    the judge's held-out pairs. ``timer``: a PhaseTimer the phases are timed on. With
    ``evaluation.select: validation``, ``validation`` (the run's validation Questions) are scored
    too, on the task that gives the headline accuracy (``answer_from``: label or rationale).
    """

    def __init__(
        self, cfg, task, teacher, tokenizer, heldout: list, device, timer, validation=(), answer_from="label"
    ):
        from .discriminator import judge_input

        self.cfg, self.tokenizer, self.device, self.timer = cfg, tokenizer, device, timer
        names = cfg.evaluation.tasks or default_tasks(cfg.task.name)
        # The headline accuracy: our first label task (lm-eval's own tasks name their metrics otherwise).
        ours = [t for t in names if t.startswith("qcrd")] or names
        self.label_task = next((t for t in ours if not t.endswith(("_explain", "_cot"))), ours[0])
        self.explain_task = next((t for t in names if t.endswith("_explain")), "")
        eos = tokenizer.eos_token_id
        self.heldout_pos = [judge_input(ex.explain_ids, r, eos) for ex in heldout for r in ex.positives]
        self.heldout_neg = [judge_input(ex.explain_ids, r, eos) for ex in heldout for r in ex.llm_negatives]
        self.manager = task_manager(task_metadata(cfg.task), names, cfg.evaluation.include_path)
        self.tasks = build_tasks(names, self.manager)
        self.references = reference_rationales(task, teacher, cfg)
        self.validation_tasks = []
        if cfg.evaluation.select == "validation":
            headline_task = self.explain_task if answer_from == "rationale" else self.label_task
            self.validation_tasks = [on_questions(self.manager, headline_task, validation)]

    def __call__(self, round_index: int, student, judge) -> dict:
        """The round's metrics record (the evaluation part); writes ``round_<k>/lm_eval_results.json``
        and ``round_<k>/rationales.jsonl``."""
        cfg = self.cfg
        checkpoint = Path(cfg.output_dir) / cfg.name / f"round_{round_index}"
        with self.timer("evaluation"):
            results = evaluate(
                student, self.tokenizer, self.tasks, self.manager, cfg.evaluation.batch_size, cfg.evaluation.limit
            )
        samples = results.pop("samples", {})
        atomic_write_json(checkpoint / "lm_eval_results.json", to_builtin(results))
        validation = {}
        if self.validation_tasks:
            with self.timer("validation"):
                validation = task_scores(
                    evaluate(student, self.tokenizer, self.validation_tasks, self.manager, cfg.evaluation.batch_size)
                )
        explain_samples = samples.get(self.explain_task, [])
        write_jsonl(
            checkpoint / "rationales.jsonl",
            [
                {
                    "id": s["doc"]["id"],
                    "question": s["doc"]["question"],
                    "answer": s["doc"]["answer"],
                    "label_generation": s["resps"][0][0],
                    "rationale": s["resps"][1][0],
                }
                for s in explain_samples
            ],
        )
        judged = self.judge_metrics(judge, explain_samples)
        quality = {}
        if explain_samples and (cfg.evaluation.overlap or cfg.evaluation.faithfulness):
            with self.timer("rationale_quality"):
                quality = rationale_quality(
                    student, self.tokenizer, explain_samples, self.references, cfg, self.device
                )
        return {
            "format": METRICS_FORMAT,
            "round": round_index,
            "task": cfg.task.name,
            "label_task": self.label_task,
            "explain_task": self.explain_task,
            "eval": task_scores(results),
            **({"validation": validation} if self.validation_tasks else {}),
            "rationale_quality": quality,
            **judged,
        }

    def judge_metrics(self, judge, explain_samples: list[dict]) -> dict:
        """The judge's mean score of the student's test rationales and its held-out ROC-AUC."""
        if judge is None:
            return {}
        from .data import explain_prompt, prompt_ids, target_ids
        from .discriminator import judge_input, mean_scores, roc_auc

        tok, limits = self.tokenizer, (self.cfg.student.max_input_tokens, self.cfg.student.max_target_tokens)
        with self.timer("judge_scoring"):
            rationales = [
                judge_input(
                    prompt_ids(tok, [explain_prompt(s["doc"]["question"])], limits[0])[0],
                    target_ids(tok, [s["resps"][1][0]], limits[1])[0],
                    tok.eos_token_id,
                )
                for s in explain_samples
            ]
            return {
                "judge_score_student": mean_scores(judge, rationales, tok.pad_token_id, self.device)
                if rationales
                else None,
                "judge_auc_heldout": roc_auc(judge, self.heldout_pos, self.heldout_neg, tok.pad_token_id, self.device),
            }
