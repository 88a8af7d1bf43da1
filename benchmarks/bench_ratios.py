"""Speed ratios measured side by side in one run (issue 5; part of `make bench`).

- (a) our DSS training throughput / an HF ``Seq2SeqTrainer`` with the same multi-task loss on the
      same batches (target >= 1.2)
- (b) QCRD step time / DSS step time on the same questions and batches (target <= 1.5)
- (c) in-loop lm-eval evaluation wall / raw batched ``generate`` wall on the same prompts (target <= 1.3)
- (d) `openai` teacher throughput against a local server with a fixed per-request latency /
      that server's ideal throughput at the configured concurrency (target >= 0.9)
- (e) QCRD step time as the number of teacher rationales per question grows (K = 1, 5, 10),
      and (with --rss) the wall time and peak RSS of the default run (bench_default_run.py, run
      first, which also writes default_run.json with its phase breakdown)

Usage: python benchmarks/bench_ratios.py [--steps 40] [--rss]
Writes benchmarks/results/ratios.json (with machine info) and prints one table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gpu_bench import TokenCounter  # noqa: E402

from qcrd_plugin.config import RunConfig, TeacherConfig  # noqa: E402
from qcrd_plugin.data import build_examples  # noqa: E402
from qcrd_plugin.discriminator import QualityJudge  # noqa: E402
from qcrd_plugin.methods import build_method  # noqa: E402
from qcrd_plugin.methods.base import label_and_rationale_losses  # noqa: E402
from qcrd_plugin.methods.qcrd import QCRD  # noqa: E402
from qcrd_plugin.negatives import sample_negatives  # noqa: E402
from qcrd_plugin.questions import Question, TaskData  # noqa: E402
from qcrd_plugin.rationales import select_pool  # noqa: E402
from qcrd_plugin.students import build_student, judge_config, use_eager_attention, use_fused_gelu  # noqa: E402
from qcrd_plugin.tasks import load_task  # noqa: E402
from qcrd_plugin.teachers import SampleCache, build_teacher  # noqa: E402
from qcrd_plugin.training import batches  # noqa: E402


class DirectQCRD(QCRD):
    """QCRD computed the direct way, for reference: every rationale's loss with a graph, then
    Eq. 6's min and Eq. 7's max. Same loss and gradient as the efficient step (tests/test_qcrd_loss.py
    checks the efficient step against every rationale's loss computed with a graph); only the cost differs."""

    def _selected_losses(self, batch, rationales, owner, group, is_pos, encoded, remembered=None):
        # ``remembered`` (method.selection=last_seen) is unused: the reference is the exact loss.
        l_pred, losses = label_and_rationale_losses(self.student, batch, rationales, owner, self.device, encoded)
        keep = self._selected(losses.detach(), group, is_pos, len(batch))
        return l_pred, losses[keep], keep, losses.detach()  # as QCRD's: ..., every rationale's loss for the statistics


def step_times(k: int, steps: int, direct: bool = False) -> dict[str, float]:
    """Median seconds per optimizer step of DSS and QCRD (and with ``direct`` the reference
    :class:`DirectQCRD`) on the default synthetic setup with K samples. The methods step in turns
    on the same batches (DSS step i, QCRD step i, ...), so a slow spell of this shared machine hits
    all alike and the ratio stays honest."""
    cfg, student, tok, examples = setup_examples(k)
    runners = {}
    for name in ("dss", "qcrd") + (("qcrd_direct",) if direct else ()):
        cfg.method.name = "dss" if name == "dss" else "qcrd"
        model = copy.deepcopy(student)
        judge = QualityJudge(judge_config(model), cfg.judge.num_layers) if name != "dss" else None
        for module in (model, judge):  # as training._run sets them up
            if module is not None:
                use_fused_gelu(module)
                use_eager_attention(module if module is model else module.encoder)
        if name == "qcrd_direct":
            method = DirectQCRD(copy.deepcopy(cfg), model, tok, "cpu", judge=judge)
        else:
            method = build_method(copy.deepcopy(cfg), model, tok, "cpu", judge=judge)
        params = list(model.parameters()) + [p for m in method.extra_modules() for p in m.parameters()]
        runners[name] = (method, torch.optim.AdamW(params, lr=1e-3, fused=True))
    stream = batches(examples, cfg.training.batch_size, 0)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for i in range(steps + 3):
        batch = next(stream)
        for name, (method, optimizer) in runners.items():
            start = time.perf_counter()
            loss = method.loss(batch).total
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if i >= 3:  # warm-up steps are not timed
                times[name].append(time.perf_counter() - start)
    out = {name: statistics.median(values) for name, values in times.items()}
    # The work behind the times: model FLOPs per step (gpu_bench's count: 6 x parameters x tokens
    # for a pass with backward, 2 x for a no-grad pass), over 10 more steps, untimed.
    count_batches = [next(stream) for _ in range(10)]
    for name in ("dss", "qcrd"):
        method, _ = runners[name]
        counter = TokenCounter(method.student, method.judge)
        with counter.installed():
            for batch in count_batches:
                method.loss(batch).total.backward()
        out[f"{name}_model_gflops"] = counter.flops / len(count_batches) / 1e9
    return out


def qcrd_step_breakdown(k: int = 5, steps: int = 20) -> dict[str, float]:
    """Where a QCRD step's time goes (milliseconds per step, means over ``steps`` after 3 warm-up
    steps, so the judge's online update every ``judge.online_every`` steps is amortised): the
    helpers qcrd.py calls are wrapped with timers (this machine's CPU is synchronous, so a wall
    clock around a call is that call's cost). ``selection`` is the no-grad pass that scores every
    rationale for Eq. 6's min and Eq. 7's max; ``label_and_picks`` decodes the labels and the
    chosen rationales with a graph (one packed decoder call); ``judge`` is D's scoring (with grad
    on online-update steps)."""
    from qcrd_plugin.methods import qcrd as qcrd_module

    cfg, student, tok, examples = setup_examples(k)
    cfg.method.name = "qcrd"
    judge = QualityJudge(judge_config(student), cfg.judge.num_layers)
    use_fused_gelu(student), use_fused_gelu(judge)  # as training._run sets them up
    use_eager_attention(student), use_eager_attention(judge.encoder)
    method = build_method(cfg, student, tok, "cpu", judge=judge)
    optimizer = torch.optim.AdamW(list(student.parameters()) + list(judge.parameters()), lr=1e-3, fused=True)
    spent: dict[str, float] = {}

    def timed(name_of, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                name = name_of()
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    names = {
        "encode_prompts": lambda: "encode",
        "label_and_rationale_losses": lambda: "label_and_picks",
        "rationale_losses": lambda: "selection",
        "score": lambda: "judge",
    }
    originals = {name: getattr(qcrd_module, name) for name in names}
    per_step: dict[str, list[float]] = {}
    try:
        for name, name_of in names.items():
            setattr(qcrd_module, name, timed(name_of, originals[name]))
        stream = batches(examples, cfg.training.batch_size, 0)
        for i in range(steps + 3):
            spent.clear()
            start = time.perf_counter()
            loss = method.loss(next(stream)).total
            forward = time.perf_counter() - start
            start = time.perf_counter()
            optimizer.zero_grad()
            loss.backward()
            spent["backward"] = time.perf_counter() - start
            start = time.perf_counter()
            optimizer.step()
            spent["optimizer"] = time.perf_counter() - start
            spent["other"] = forward - sum(v for key, v in spent.items() if key not in ("backward", "optimizer"))
            if i >= 3:
                for key, value in spent.items():
                    per_step.setdefault(key, []).append(value)
    finally:
        for name, function in originals.items():
            setattr(qcrd_module, name, function)
    return {key: 1000 * statistics.fmean(values) for key, values in per_step.items()}


def setup_examples(k: int = 5):
    """The default synthetic setup: (cfg, student, tokenizer, examples with one student negative each)."""
    cfg = RunConfig()
    cfg.teacher.kind = "simulated"
    task = load_task(cfg.task)
    questions = task.questions["train"]
    pool = build_teacher(cfg.teacher, task).sample(questions, k, cfg.teacher.temperature)
    torch.manual_seed(0)
    student, tok = build_student(
        cfg.student, [q.question for q in questions] + [s.rationale for e in pool for s in e.samples]
    )
    examples = build_examples(
        questions,
        select_pool(pool, cfg.self_consistency),
        tok,
        cfg.student.max_input_tokens,
        cfg.student.max_target_tokens,
    )
    sample_negatives(
        student,
        copy.deepcopy(student.state_dict()),
        examples,
        1,
        1.5,
        cfg.negatives.max_new_tokens,
        200,
        0,
        "cpu",
        progress=False,
    )
    return cfg, student, tok, examples


def ours_vs_seq2seq_trainer(steps: int, warmup: int = 3, repeats: int = 5) -> dict[str, float]:
    """(a) DSS training throughput: our loop's step (loss, backward, clip, AdamW, schedule) vs an
    HF ``Seq2SeqTrainer`` whose ``compute_loss`` is the same multi-task loss
    ``alpha * L_label + (1 - alpha) * L_rationale`` (how DSS's reference code trains), on the same
    batches in the same order, same model, optimizer (fused AdamW: the Trainer's default and ours),
    learning rate and clipping. The Trainer gets the model as transformers builds it; ours runs it
    as qcrd-bench trains it: one encoder call for both prompts, label and rationale packed into one
    decoder call, no KV cache, the fused tanh-GELU, eager attention (all exact up to float rounding).
    Tokens = prompt + target tokens of both tasks per step (identical for both sides).
    The two sides run in turns, ``repeats`` times each (ours, HF, ours, ..., ours); each HF run is
    compared with the mean of the runs of ours just before and after it, and the median of those
    ratios is reported, so a slow spell of this shared machine cannot favour one side."""
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

    from qcrd_plugin.data import pad, pad_labels

    cfg, student, tok, examples = setup_examples()
    cfg.method.name = "dss"
    stream = batches(examples, cfg.training.batch_size, 0)
    plan = [next(stream) for _ in range(warmup + steps)]
    tokens = sum(
        len(ex.predict_ids) + len(ex.label_ids) + len(ex.explain_ids) + len(ex.positives[0])
        for b in plan[warmup:]
        for ex in b
    )
    lr, alpha = cfg.training.learning_rate, cfg.method.alpha

    def ours() -> float:
        """The body of training._run's step loop over the plan, on the student as training sets it up
        (use_fused_gelu, and use_eager_attention for this tiny T5 preset since issue 24); seconds for
        the timed steps."""
        model = copy.deepcopy(student).train()
        use_fused_gelu(model)
        use_eager_attention(model)
        method = build_method(cfg, model, tok, "cpu")
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, fused=True)  # as training._run
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        for i, batch in enumerate(plan):
            if i == warmup:
                start = time.perf_counter()
            loss = method.loss(batch).total
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
        return time.perf_counter() - start

    # HF: the same batches, flattened in order, read back sequentially by the Trainer.
    pad_id = tok.pad_token_id

    def collate(items):
        p_ids, p_mask = pad([ex.predict_ids for ex in items], pad_id)
        e_ids, e_mask = pad([ex.explain_ids for ex in items], pad_id)
        return {
            "input_ids": p_ids,
            "attention_mask": p_mask,
            "labels": pad_labels([ex.label_ids for ex in items]),
            "explain_ids": e_ids,
            "explain_mask": e_mask,
            "rationale_labels": pad_labels([ex.positives[0] for ex in items]),
        }

    class MultiTaskTrainer(Seq2SeqTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            l_label = model(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=inputs["labels"]
            ).loss
            l_rat = model(
                input_ids=inputs["explain_ids"],
                attention_mask=inputs["explain_mask"],
                labels=inputs["rationale_labels"],
            ).loss
            return alpha * l_label + (1 - alpha) * l_rat

        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    class Clock(TrainerCallback):
        start = end = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                Clock.start = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            Clock.end = time.perf_counter()

    def hf(output_dir: str) -> float:
        """One Trainer run over the plan; seconds for the timed steps."""
        targs = Seq2SeqTrainingArguments(
            output_dir=output_dir,
            per_device_train_batch_size=cfg.training.batch_size,
            max_steps=warmup + steps,
            learning_rate=lr,
            lr_scheduler_type="constant",
            weight_decay=0.0,
            max_grad_norm=1.0,
            optim="adamw_torch_fused",
            save_strategy="no",
            report_to=[],
            logging_strategy="no",
            use_cpu=True,
            dataloader_num_workers=0,
            remove_unused_columns=False,
            disable_tqdm=True,
            seed=0,
        )
        trainer = MultiTaskTrainer(
            model=copy.deepcopy(student).train(),
            args=targs,
            train_dataset=[ex for b in plan for ex in b],
            data_collator=collate,
            callbacks=[Clock()],
        )
        trainer.train()
        return Clock.end - Clock.start

    ours_s, hf_s = [ours()], []
    with tempfile.TemporaryDirectory() as output_dir:
        for _ in range(repeats):
            hf_s.append(hf(output_dir))
            ours_s.append(ours())
    ratios = [h / ((before + after) / 2) for h, before, after in zip(hf_s, ours_s, ours_s[1:])]
    return {
        "ours_tokens_per_s": tokens / statistics.median(ours_s),
        "hf_tokens_per_s": tokens / statistics.median(hf_s),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "repeats": repeats,
    }


def eval_over_generate(repeats: int = 7) -> dict[str, float]:
    """(c) lm-eval's in-loop evaluation of ``qcrd_synth`` vs raw batched greedy ``generate`` on the
    same 200 prompts, same model, batch size and token budget (16 new tokens). Each takes well
    under a second, so both run ``repeats`` times in turns and the medians are compared."""
    from qcrd_plugin import evaluation
    from qcrd_plugin.data import pad, predict_prompt

    cfg = RunConfig()
    task = load_task(cfg.task)
    questions = task.questions["test"]
    torch.manual_seed(0)
    student, tok = build_student(cfg.student, [q.question for q in task.questions["train"]])
    manager = evaluation.task_manager(evaluation.task_metadata(cfg.task))
    tasks = evaluation.build_tasks(["qcrd_synth"], manager)  # once per run, as the training loop does
    evaluation.evaluate(student, tok, tasks, manager, 64, 8)  # warm-up (first-call caches)

    def generate() -> None:
        student.eval()
        with torch.no_grad():
            for i in range(0, len(questions), 64):
                ids, mask = pad(
                    tok([predict_prompt(q.question) for q in questions[i : i + 64]])["input_ids"], tok.pad_token_id
                )
                student.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=16)

    walls: dict[str, list[float]] = {"lm_eval": [], "generate": []}
    for _ in range(repeats):
        for name, work in (
            ("lm_eval", lambda: evaluation.evaluate(student, tok, tasks, manager, 64)),
            ("generate", generate),
        ):
            start = time.perf_counter()
            work()
            walls[name].append(time.perf_counter() - start)
    lm_eval_s, generate_s = statistics.median(walls["lm_eval"]), statistics.median(walls["generate"])
    return {"lm_eval_s": lm_eval_s, "generate_s": generate_s, "ratio": lm_eval_s / generate_s, "repeats": repeats}


class SlowServer(BaseHTTPRequestHandler):
    """Answers every chat completion after a fixed latency."""

    latency = 0.05
    # Keep-alive (one connection per client thread, as a real endpoint allows) with Nagle off, so
    # the header and body writes of a response are not held back waiting for a delayed ACK.
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.latency)
        payload = json.dumps({"choices": [{"message": {"content": "1 + 1 = 2. So the answer is 2."}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _serve(port_queue, latency: float) -> None:
    SlowServer.latency = latency
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowServer)
    server.daemon_threads = True
    port_queue.put(server.server_address[1])
    server.serve_forever()


def teacher_throughput(latency: float, concurrency: int = 8, questions: int = 40, k: int = 5) -> dict[str, float]:
    """(d) ``questions x k`` requests at ``concurrency`` against a server answering each after
    ``latency`` seconds. The server runs in its own process, as a real endpoint would: sharing the
    client's GIL with its threads would charge the server's Python overhead to the client."""
    import multiprocessing

    ports = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(ports, latency), daemon=True)
    server.start()
    try:
        cfg = TeacherConfig(
            kind="openai",
            model="bench",
            base_url=f"http://127.0.0.1:{ports.get(timeout=30)}/v1",
            concurrency=concurrency,
        )
        items = [Question(f"q{i}", f"What is {i} + 1?", str(i + 1)) for i in range(questions)]
        teacher = build_teacher(cfg, TaskData("bench", "bench", {"train": items}), None)
        teacher.cache = SampleCache(None)
        start = time.perf_counter()
        teacher.sample(items, k, 0.7)
        wall = time.perf_counter() - start
    finally:
        server.terminate()
    measured = questions * k / wall
    ideal = concurrency / latency
    return {
        "latency_s": latency,
        "concurrency": concurrency,
        "requests": questions * k,
        "requests_per_s": measured,
        "ideal_requests_per_s": ideal,
        "ratio": measured / ideal,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=40, help="timed steps per step-time measurement (after 3 warm-up steps)"
    )
    parser.add_argument("--rss", action="store_true", help="also run the default job once and record its peak RSS")
    args = parser.parse_args()
    default_run = None
    if args.rss:  # first: peak RSS is the largest child process waited for so far
        from bench_default_run import measure

        default_run = measure()
    results: dict = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
    }
    results["a_ours_over_seq2seq_trainer"] = {**ours_vs_seq2seq_trainer(args.steps), "target": ">= 1.2"}
    scaling = {k: step_times(k, args.steps, direct=k == 5) for k in (1, 5, 10)}
    results["b_qcrd_over_dss_step"] = {
        "ratio": scaling[5]["qcrd"] / scaling[5]["dss"],
        "target": "<= 1.5",
        "dss_s": scaling[5]["dss"],
        "qcrd_s": scaling[5]["qcrd"],
        "direct_qcrd_s": scaling[5]["qcrd_direct"],
        "direct_qcrd_over_dss": scaling[5]["qcrd_direct"] / scaling[5]["dss"],
        "work_ratio": scaling[5]["qcrd_model_gflops"] / scaling[5]["dss_model_gflops"],
    }
    results["b_qcrd_step_breakdown_ms"] = qcrd_step_breakdown(5, args.steps)
    results["c_lm_eval_over_generate"] = {**eval_over_generate(), "target": "<= 1.3"}
    # 50 ms is far below an LLM's answer time and so the harshest test of the client's overhead;
    # 200 ms is still short for an LLM.
    results["d_openai_teacher_throughput"] = {**teacher_throughput(0.05), "target": ">= 0.9"}
    results["d_openai_teacher_throughput_200ms"] = {**teacher_throughput(0.2), "target": ">= 0.9"}
    results["e_step_time_vs_k"] = {str(k): v for k, v in scaling.items()}
    if default_run:
        results["e_default_run_peak_rss_mib"] = default_run["peak_rss_mib"]
        results["e_default_run_wall_s"] = default_run["wall_s"]
    (REPO / "benchmarks" / "results").mkdir(exist_ok=True)
    (REPO / "benchmarks" / "results" / "ratios.json").write_text(json.dumps(results, indent=2))
    print(f"{'measure':<44} {'value':>8}  target")
    print(
        f"{'(a) our DSS tokens/s / HF Seq2SeqTrainer':<44} "
        f"{results['a_ours_over_seq2seq_trainer']['ratio']:>8.2f}  >= 1.2"
    )
    print(f"{'(b) QCRD step / DSS step (K=5)':<44} {results['b_qcrd_over_dss_step']['ratio']:>8.2f}  <= 1.5")
    print(
        f"{'    (b) reference: QCRD computed directly':<44} "
        f"{results['b_qcrd_over_dss_step']['direct_qcrd_over_dss']:>8.2f}"
    )
    print(f"{'    (b) work: QCRD model FLOPs / DSS':<44} {results['b_qcrd_over_dss_step']['work_ratio']:>8.2f}")
    parts = results["b_qcrd_step_breakdown_ms"]
    print(
        "    QCRD step, ms: "
        + ", ".join(f"{key} {value:.1f}" for key, value in sorted(parts.items(), key=lambda kv: -kv[1]))
    )
    print(f"{'(c) lm-eval evaluation / raw generate':<44} {results['c_lm_eval_over_generate']['ratio']:>8.2f}  <= 1.3")
    print(
        f"{'(d) openai teacher / ideal, 50 ms latency':<44} "
        f"{results['d_openai_teacher_throughput']['ratio']:>8.2f}  >= 0.9"
    )
    print(
        f"{'(d) openai teacher / ideal, 200 ms latency':<44} "
        f"{results['d_openai_teacher_throughput_200ms']['ratio']:>8.2f}  >= 0.9"
    )
    for k, v in scaling.items():
        print(f"{f'(e) step s at K={k}: dss / qcrd':<44} {v['dss']:>8.3f}  {v['qcrd']:.3f}")
    if default_run:
        print(f"{'(e) default run wall s (target 180)':<44} {default_run['wall_s']:>8.1f}")
        print(f"{'(e) default run peak RSS (MiB)':<44} {default_run['peak_rss_mib']:>8.0f}")


if __name__ == "__main__":
    main()
