"""Teachers: where rationales come from, behind one interface (``sample(questions, k, T)``).

- ``simulated``: a **simulated** component that stands in for an LLM when there is no network. It
  writes rationales for the synthetic task whose steps can go wrong the way an LLM's do
  (arithmetic slip, wrong operation, skipped or copied step) with a probability that grows with
  the temperature; the stated answer follows from the steps as written; phrasing varies.
- ``pool``: precomputed JSONL pools (made by ``qcrd-bench teach`` or converted from a public
  release by ``qcrd-bench data prepare``).
- ``hf``: a local transformers causal LM, batched, ``num_return_sequences = K``.
- ``openai``: any OpenAI-compatible chat-completions endpoint (a vLLM server, ...), with bounded
  concurrency, retries with exponential backoff and jitter, and a JSONL cache so that an
  interrupted run resumes without asking again.

The LLM teachers use the few-shot chain-of-thought prompt of ``qcrd_plugin.data.cot_prompt`` (the
same as the ``qcrd_*_cot`` lm-eval tasks) and read answers with ``qcrd_plugin.answers``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Iterable, Protocol
from urllib.parse import urlsplit, urlunsplit

from .answers import CUT_OFF_REASONS, answers_match, format_number, parse_stated_answer
from .config import TeacherConfig
from .data import COT_INSTRUCTION, cot_prompt
from .errors import UserInputError, WriteFailed
from .pools import POOL_FORMAT, PoolEntry, TeacherSample, read_pool  # noqa: F401  (re-exported)
from .questions import Question, TaskData
from .registry import TEACHERS
from .synth import SYMBOL_RESULT, Problem


class Teacher(Protocol):
    """Samples K rationales per question at a temperature."""

    def sample(self, questions: list[Question], k: int, temperature: float) -> list[PoolEntry]: ...


_OPENINGS = ("{n} starts with {a} {o}.", "At first {n} has {a} {o}.", "First, {n} has {a} {o}.", "")
_STEP_FORMS = (
    "{a} {op} {b} = {c}.",
    "{clause}, so {a} {op} {b} = {c}.",
    "Then {a} {op} {b} = {c}.",
    "Now {n} has {a} {op} {b} = {c} {o}.",
)
_ENDINGS = ("The answer is {ans}.", "So the answer is {ans}.")
_ERRORS = ("slip", "wrong_op", "skip", "copy")


class SimulatedTeacher:
    """A simulated LLM teacher for the synthetic task (see module docstring)."""

    def __init__(self, cfg: TeacherConfig, problems: dict[str, Problem] | None = None):
        self.cfg = cfg
        self.problems = problems or {}

    def step_error_probability(self, temperature: float) -> float:
        """Chance that one step goes wrong at this temperature (linear in T, capped at 0.9)."""
        return min(0.9, self.cfg.step_error_rate * temperature)

    def sample(self, problems: Iterable[Problem | Question], k: int, temperature: float) -> list[PoolEntry]:
        """K rationales per problem; deterministic for a given seed, question id and sample index."""
        entries = []
        for problem in problems:
            if not isinstance(problem, Problem):
                problem = self.problems[problem.id]
            samples = [
                self._one(problem, temperature, random.Random(f"{self.cfg.seed}:{problem.id}:{i}")) for i in range(k)
            ]
            entries.append(PoolEntry(problem.id, problem.question, problem.answer, samples))
        return entries

    def _one(self, problem: Problem, temperature: float, rng: random.Random) -> TeacherSample:
        p_error = self.step_error_probability(temperature)
        fmt = dict(n=problem.name, o=problem.object)
        parts = [rng.choice(_OPENINGS).format(a=problem.start, **fmt)]
        value, errors, previous = problem.start, [], None
        for step in problem.program:
            op, operand = step.op, step.operand
            error = rng.choice(_ERRORS) if rng.random() < p_error else ""
            if error == "copy" and previous is None:
                error = "slip"  # nothing to copy before the first step
            if error == "skip":
                errors.append(error)
                continue  # the running value is carried over unchanged
            if error == "copy":
                parts.append(previous)  # the previous step written again; value unchanged
                errors.append(error)
                continue
            if error == "wrong_op":
                op = rng.choice([o for o in SYMBOL_RESULT if o != op and (o != "*" or operand <= 3)])
            result = SYMBOL_RESULT[op](value, operand)
            if error == "slip":
                result += rng.choice((-3, -2, -1, 1, 2, 3))
            if error:
                errors.append(error)
            text = rng.choice(_STEP_FORMS).format(
                a=value, op=op, b=operand, c=result, clause=step.clause[0].upper() + step.clause[1:], **fmt
            )
            parts.append(text)
            previous, value = text, result
        unparseable = rng.random() < min(0.9, self.cfg.unparseable_rate * temperature)
        if unparseable:
            errors.append("no_answer")  # the sample trails off without stating an answer
        else:
            parts.append(rng.choice(_ENDINGS).format(ans=format_number(value)))
        rationale = " ".join(p for p in parts if p)
        return TeacherSample(rationale, parse_stated_answer(rationale), "+".join(errors))


class PoolTeacher:
    """Serves precomputed samples: the first K of each question (temperature is ignored)."""

    def __init__(self, entries: list[PoolEntry], where: str = "pool"):
        self.by_id = {entry.id: entry for entry in entries}
        self.where = where

    def sample(self, questions: list[Question], k: int, temperature: float) -> list[PoolEntry]:
        """The first ``k`` samples of each question that have a rationale (blank ones are left
        out). A question the pool has no sample for gets none (counted by
        :func:`~qcrd_plugin.rationales.pool_warnings`); none at all is an error, and so is a pool
        entry whose question text or gold differs from the task's (a pool of another version of
        the task would train on wrong positives): docs/formats.md, "Pools against the task"."""
        for q in questions:
            entry = self.by_id.get(q.id)
            if entry is not None and (
                " ".join(entry.question.split()) != " ".join(q.question.split())
                or not answers_match(entry.gold, q.answer)
            ):
                what = (
                    "gold answer"
                    if " ".join(entry.question.split()) == " ".join(q.question.split())
                    else "question text"
                )
                raise UserInputError(
                    f"{entry.where or self.where}: "
                    f"key '{'gold' if what == 'gold answer' else 'question'}': the {what} of "
                    f"{q.id!r} differs from the task's: a pool made for another version of the task? "
                    "make it again with `qcrd-bench teach`"
                )
        usable = {
            q.id: [s for s in self.by_id[q.id].samples if s.rationale.strip()] for q in questions if q.id in self.by_id
        }
        if questions and not any(usable.values()):
            raise UserInputError(
                f"{self.where}: no sample with a rationale for any of the {len(questions)} questions "
                f"(first: {questions[0].id!r}): is it the pool of another task or split?"
            )
        return [PoolEntry(q.id, q.question, q.answer, usable.get(q.id, [])[:k]) for q in questions]


class SampleCache:
    """An append-only JSONL cache of LLM samples keyed by (model, prompt, temperature, index).

    Every answer is written as one whole line as soon as it arrives (fsynced in groups, at least
    every ``SYNC_EVERY_S`` and when a sampling call ends), so an interrupted run (a crash, a kill,
    a teacher endpoint that gives up) asks only for what is missing when it starts again.
    Unreadable lines (a write cut by a kill) are skipped and counted in ``skipped``, with one
    notice; the next answer starts on a fresh line so it cannot be glued to the torn one.
    """

    SYNC_EVERY_S = 0.5

    def __init__(self, path: Path | None, read_also: Path | None = None):
        """``path``: the cache this run reads and appends to. ``read_also``: another cache whose
        answers are reused but never written (a cache shared between runs, kept outside the run
        directory, which a run must not write into)."""
        self.path = Path(path) if path else None
        self.lock = threading.Lock()
        self.items: dict[str, str] = {}
        self.finish_reasons: dict[str, str] = {}  # key -> why the teacher stopped ("" when not told)
        self.limits: dict[str, int] = {}  # key -> the token limit an answer stopped at ("length" only)
        self.skipped = 0
        self._torn_tail = False
        self._handle = None
        self._synced_at = time.monotonic()
        if read_also and Path(read_also).exists() and Path(read_also) != self.path:
            self._load(Path(read_also))
        if self.path and self.path.exists():
            self._torn_tail = self._load(self.path)

    def _load(self, path: Path) -> bool:
        """Read a cache file's answers into memory; returns whether its last line is torn."""
        # Bytes, decoded leniently: a kill can cut a line inside a multi-byte character, and the
        # records themselves are ASCII (json.dumps escapes the rest), so nothing valid changes.
        raw = path.read_bytes()
        skipped = 0
        for line in raw.decode("utf-8", errors="replace").split("\n"):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key, text, limit = record["key"], record["text"], int(record.get("max_tokens", 0))
                if not isinstance(key, str) or not isinstance(text, str):
                    raise TypeError(key)
            except (KeyError, TypeError, ValueError):  # ValueError: JSONDecodeError included
                skipped += 1  # a line cut by a kill mid-write
                continue
            why = record.get("finish_reason")
            why = why if isinstance(why, str) else ""
            # The later line wins, unless it was cut at a lower limit than an answer already read
            # (two caches merged: a shared one taught again with a higher limit).
            if key in self.items and self._rank(key) > (why != "length", limit):
                continue
            self.items[key], self.limits[key], self.finish_reasons[key] = text, limit, why
        if skipped:
            logging.getLogger(__name__).warning(
                "teacher cache %s: skipped %d unreadable line(s) (a write cut by a kill?); "
                "those samples are asked again",
                path,
                skipped,
            )
        self.skipped += skipped
        return bool(raw) and not raw.endswith(b"\n")

    @staticmethod
    def key(model: str, prompt: str, temperature: float, index: int) -> str:
        return hashlib.sha256(json.dumps([model, prompt, round(temperature, 6), index]).encode()).hexdigest()

    def get(self, key: str) -> str | None:
        return self.items.get(key)

    def finish_reason(self, key: str) -> str:
        """Why the teacher stopped the cached answer ("stop", "length", ...; "" when not told)."""
        return self.finish_reasons.get(key, "")

    def _rank(self, key: str) -> tuple[bool, int]:
        """Ended answers before cut ones, then the higher limit."""
        return self.finish_reasons.get(key) != "length", self.limits.get(key, 0)

    def answered(self, key: str, max_tokens: int) -> bool:
        """Whether ``key`` holds an answer worth keeping under a limit of ``max_tokens``: not one
        cut at a lower limit (the same request with a higher teacher.max_new_tokens asks again)."""
        return key in self.items and self._rank(key) >= (False, max_tokens)

    def put(self, key: str, text: str, finish_reason: str = "", max_tokens: int = 0) -> None:
        """Keep one answer: in memory, and on disk before returning (a paid-for answer survives a kill).
        ``finish_reason``: why the teacher stopped; ``max_tokens``: the limit it was asked with."""
        with self.lock:
            self.items[key], self.finish_reasons[key], self.limits[key] = text, finish_reason, max_tokens
            if self.path:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                record = {"key": key, "text": text}
                if finish_reason:
                    record |= {"finish_reason": finish_reason, "max_tokens": max_tokens}
                line = json.dumps(record) + "\n"
                if self._torn_tail:  # end the torn line first, or this record would be glued to it
                    line = "\n" + line
                    self._torn_tail = False
                # One unbuffered O_APPEND write per record: never interleaved or half-buffered, and in
                # the kernel (so it survives a kill of this process) before put() returns.
                try:
                    if self._handle is None:
                        self._handle = open(self.path, "ab", buffering=0)
                    self._handle.write(line.encode("utf-8"))
                except OSError as err:  # a full disk: the answers before this one are kept
                    raise WriteFailed(
                        f"cannot append to the teacher cache {self.path} ({err.strerror or err})"
                    ) from err
                # fsync (survival of a machine crash) is group-committed, at most every SYNC_EVERY_S:
                # one fsync per answer would serialise the concurrent requests behind the disk.
                if time.monotonic() - self._synced_at >= self.SYNC_EVERY_S:
                    self._sync_locked()

    def _sync_locked(self) -> None:
        if self._handle is not None:
            os.fsync(self._handle.fileno())
        self._synced_at = time.monotonic()

    def sync(self) -> None:
        """fsync what was written (teachers call it when a sampling call ends, however it ends)."""
        with self.lock:
            self._sync_locked()


def _entry(q: Question, texts: list[str], teacher: str, finish_reasons: list[str]) -> PoolEntry:
    samples = [
        TeacherSample(t.strip(), q.stated(t, finish_reason=why), teacher=teacher, finish_reason=why)
        for t, why in zip(texts, finish_reasons)
    ]
    return PoolEntry(q.id, q.question, q.answer, samples)


def cut_generation(text: str) -> str:
    """A completion up to the next few-shot item the model starts to make up."""
    for stop in ("\n\nQ:", "\nQ:"):
        text = text.split(stop, 1)[0]
    return text.strip()


def _cut_with_reason(text: str, finish_reason: str) -> tuple[str, str]:
    """(:func:`cut_generation` of ``text``, why it ended): a chain followed by a made-up next item
    ended before the token limit, whatever stopped the generation."""
    cut = cut_generation(text)
    return cut, ("stop" if cut != text.strip() else finish_reason)


class HFTeacher:
    """A local transformers causal LM as the teacher (batched; ``num_return_sequences = K``)."""

    def __init__(
        self,
        cfg: TeacherConfig,
        exemplars: list[Question],
        cache: SampleCache,
        device: str = "cpu",
        progress: bool = False,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .pretrained import load_gguf_causal_lm, resolve

        self.cfg, self.exemplars, self.cache, self.device, self.progress = cfg, exemplars, cache, device, progress
        ref = resolve(cfg.model, "teacher.model")  # a GGUF file or short name (smollm2-135m) is de-quantised
        # Explicit, never transformers' default: code shipped with a model runs only when the user says so.
        try:
            if ref.gguf_file:
                self.model, self.tokenizer = load_gguf_causal_lm(ref)
            else:
                self.tokenizer = AutoTokenizer.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
                self.model = AutoModelForCausalLM.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
            self.model = self.model.to(device).eval()
        except ValueError as err:
            if "trust_remote_code" not in str(err):
                raise
            raise UserInputError(
                f"teacher.model {cfg.model}: the model ships its own Python code, which is not run "
                "unless you set teacher.trust_remote_code=true (only for a model you trust)"
            ) from None
        self.tokenizer.padding_side = "left"  # decoder-only: pad on the left so generation continues the prompt
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def prompt(self, q: Question) -> str:
        text = cot_prompt(q.question, [e for e in self.exemplars if e.id != q.id])
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": COT_INSTRUCTION}, {"role": "user", "content": text}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text

    def ask(self, prompt: str, system: str = "") -> str:
        """One greedy reply to ``prompt`` (the pairwise judge uses this)."""
        import torch

        if getattr(self.tokenizer, "chat_template", None):
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}
            ]
            prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            prompt = f"{system}\n\n{prompt}\nAnswer:" if system else prompt
        enc = self.tokenizer([prompt], return_tensors="pt").to(self.device)
        with torch.no_grad():
            out = self.model.generate(
                **enc, do_sample=False, max_new_tokens=16, pad_token_id=self.tokenizer.pad_token_id
            )
        return self.tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    def sample(self, questions: list[Question], k: int, temperature: float) -> list[PoolEntry]:
        import torch
        from tqdm.auto import tqdm

        prompts = [self.prompt(q) for q in questions]
        keys = [[SampleCache.key(self.cfg.model, p, temperature, i) for i in range(k)] for p in prompts]
        limit = self.cfg.max_new_tokens
        texts = [[self.cache.get(key) if self.cache.answered(key, limit) else None for key in row] for row in keys]
        todo = [n for n, row in enumerate(texts) if any(t is None for t in row)]
        for start in tqdm(range(0, len(todo), self.cfg.batch_size), desc="teacher (hf)", disable=not self.progress):
            batch = todo[start : start + self.cfg.batch_size]
            enc = self.tokenizer([prompts[n] for n in batch], return_tensors="pt", padding=True).to(self.device)
            with torch.no_grad():
                out = self.model.generate(
                    **enc,
                    do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else None,
                    num_return_sequences=k,
                    max_new_tokens=self.cfg.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            generated = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            reasons = self.finish_reasons(new_tokens)
            for row, n in enumerate(batch):
                for i in range(k):
                    text, why = _cut_with_reason(generated[row * k + i], reasons[row * k + i])
                    self.cache.put(keys[n][i], text, why, limit)
                    texts[n][i] = text
        self.cache.sync()
        reasons_of = [[self.cache.finish_reason(key) for key in row] for row in keys]
        return [_entry(q, row, self.cfg.model, why) for q, row, why in zip(questions, texts, reasons_of)]

    def finish_reasons(self, new_tokens) -> list[str]:
        """Per generated row (batch x new tokens, padded): "length" when it never produced an
        end-of-sequence token and filled ``max_new_tokens``, else "stop" (OpenAI's names)."""
        eos = self.model.generation_config.eos_token_id  # what generate stops on (an id, a list or None)
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        full = new_tokens.shape[1] >= self.cfg.max_new_tokens
        if not eos:
            return ["length" if full else "stop"] * new_tokens.shape[0]
        ended = (new_tokens[..., None] == new_tokens.new_tensor(eos)).any(-1).any(-1)
        return ["stop" if done or not full else "length" for done in ended.tolist()]


class RetryableError(Exception):
    """A response worth asking again for (408, 429, 5xx, timeout, dropped connection, malformed body)."""


class TeacherError(UserInputError, RuntimeError):
    """The teacher endpoint refused (400, 401, ...) or kept failing after ``teacher.max_retries``.

    A :class:`UserInputError`, so the CLI prints it as one line (exit code 2, no traceback): the
    fix is the user's (the endpoint, the key, the model name). Everything answered before it was
    raised is in the cache, so a rerun asks only for what is missing.
    """


class _Stopped(TeacherError):
    """A request not sent (or not retried) because another one of its batch failed for good."""


def _public_url(url: str) -> str:
    """``url`` without any ``user:password@`` part, for messages."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


def _completion(response, where: str, limit: int) -> tuple[str, str]:
    """(text, finish reason) of a chat-completions response; RetryableError when the body is not one.

    A body cut short or mangled on the way (a proxy, a server restarting under load) is worth
    asking again for, like a 5xx; so is an empty or ``null`` content, which is never cached as an
    answer (a rerun against a working server would otherwise send nothing). An empty content that
    stopped at the token limit would come back empty again: a TeacherError at once, saying so.
    """
    try:
        body = response.json()
    except ValueError:
        raise RetryableError("a malformed body (not JSON)") from None
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise RetryableError("a malformed body (no choices[0].message.content)") from None
    reason = body["choices"][0].get("finish_reason") if isinstance(body["choices"][0], dict) else None
    reason = reason if isinstance(reason, str) else ""
    if content is None or isinstance(content, str) and not content.strip():
        if reason in CUT_OFF_REASONS:
            raise TeacherError(
                f"{where}: an empty answer stopped by finish_reason {reason!r} at teacher.max_new_tokens = {limit} "
                "(a reasoning model that spends the budget thinking?): raise teacher.max_new_tokens"
            )
        raise RetryableError("an empty answer (content is " + ("null)" if content is None else "empty)"))
    if not isinstance(content, str):
        raise RetryableError(f"a malformed body (content is {type(content).__name__}, not text)")
    return content, reason


def backoff_seconds(attempt: int, rng: random.Random, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0, min(cap, base * 2**attempt))


class OpenAITeacher:
    """Any OpenAI-compatible chat-completions endpoint as the teacher.

    One request per (question, sample index), ``concurrency`` in flight; 408, 429, 5xx, timeouts,
    dropped connections and malformed bodies are retried up to ``max_retries`` times with
    exponential backoff and jitter (``Retry-After`` is honoured, up to 30 s); other 4xx fail at
    once. Either way the failure is a :class:`TeacherError` whose message never holds the API key,
    and every answer received before it is in the cache already.
    """

    def __init__(
        self,
        cfg: TeacherConfig,
        exemplars: list[Question],
        cache: SampleCache,
        progress: bool = False,
        sleep: Callable[[float], None] | None = None,
    ):
        import requests

        self.cfg, self.exemplars, self.cache, self.progress = cfg, exemplars, cache, progress
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Content-Type": "application/json"}
        # The key is read from the environment only (no config key holds one), kept in the request
        # header and nowhere else; messages go through _redact in case an endpoint echoes it.
        self._key = os.environ.get(cfg.api_key_env, "")
        if self._key:
            self.headers["Authorization"] = f"Bearer {self._key}"
        self.session = requests.Session()
        self.retries = 0
        self.lock = threading.Lock()
        self._stop = threading.Event()  # set when one request failed for good: the others stop retrying
        # A backoff wait ends early when the batch is being stopped (tests pass a no-op sleep).
        self.sleep = sleep or self._stop.wait

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "<redacted>") if self._key else text

    def messages(self, q: Question) -> list[dict]:
        text = cot_prompt(q.question, [e for e in self.exemplars if e.id != q.id])
        return [{"role": "system", "content": COT_INSTRUCTION}, {"role": "user", "content": text}]

    def _ask(self, messages: list[dict], temperature: float, index: int) -> tuple[str, str]:
        """(text, finish reason) of one request, retried as the class docstring says."""
        import requests

        body = {
            "model": self.cfg.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": self.cfg.max_new_tokens,
            "n": 1,
            "seed": index,
        }
        rng = random.Random(f"{index}:{messages[-1]['content'][-64:]}")
        where = f"teacher endpoint {_public_url(self.url)}"
        # A body cut mid-way (ChunkedEncodingError) is no ConnectionError in requests, yet the same fault.
        transient = (
            RetryableError,
            requests.Timeout,
            requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        )
        for attempt in range(self.cfg.max_retries + 1):
            if self._stop.is_set():
                raise _Stopped(f"{where}: stopped, another request failed")
            try:
                response = self._post(body)
                status = response.status_code
                if status in (408, 429) or status >= 500:
                    raise RetryableError(f"HTTP {status}", response.headers.get("Retry-After"))
                if status >= 400:
                    hint = (
                        f"; check the key in ${self.cfg.api_key_env} (teacher.api_key_env)"
                        if status in (401, 403)
                        else "; check teacher.base_url and teacher.model"
                        if status == 404
                        else ""
                    )
                    detail = " ".join(self._redact(response.text)[:200].split())  # redacted before the cut
                    raise TeacherError(
                        self._redact(
                            f"{where} answered HTTP {status} {response.reason or ''}".rstrip()
                            + (f": {detail}" if detail else "")
                            + hint
                        )
                    )
                return _completion(response, where, self.cfg.max_new_tokens)
            except transient as err:
                if attempt == self.cfg.max_retries:
                    reason = err.args[0] if isinstance(err, RetryableError) else type(err).__name__
                    raise TeacherError(
                        self._redact(
                            f"{where}: gave up after {attempt + 1} tries (last: {reason}); "
                            "answers so far are cached, a rerun asks only for the rest"
                        )
                    ) from None
                with self.lock:
                    self.retries += 1
                retry_after = err.args[1] if isinstance(err, RetryableError) and len(err.args) > 1 else None
                try:
                    # Retry-After is honoured, within the backoff cap: a server asking for an hour
                    # must not hang the run (the retry budget still bounds the total).
                    wait = min(30.0, max(0.0, float(retry_after))) if retry_after else backoff_seconds(attempt, rng)
                except ValueError:  # an HTTP date
                    wait = backoff_seconds(attempt, rng)
                self.sleep(wait)
            except requests.RequestException as err:  # a bad URL and the like: asking again cannot help
                raise TeacherError(self._redact(f"{where}: {type(err).__name__}: {err}")) from None
        raise AssertionError("unreachable")

    def _post(self, body: dict):
        """POST ``body``; the whole answer must arrive within ``teacher.timeout_s``. requests'
        timeout bounds each socket read only, so a server that trickles its body a byte at a time
        would hold a request forever: the body is read in small pieces against a deadline."""
        import requests
        import urllib3

        deadline = time.monotonic() + self.cfg.timeout_s
        response = self.session.post(
            self.url, json=body, headers=self.headers, timeout=self.cfg.timeout_s, stream=True
        )
        chunks = []
        try:
            # read1 returns whatever has arrived (iter_content would wait for a whole chunk).
            while chunk := response.raw.read1(65536, decode_content=True):
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise requests.Timeout(f"no whole answer within teacher.timeout_s = {self.cfg.timeout_s} s")
        except urllib3.exceptions.HTTPError as err:  # what iter_content would turn into requests' own errors
            raise (
                requests.Timeout if isinstance(err, urllib3.exceptions.ReadTimeoutError) else requests.ConnectionError
            )(str(err)) from None
        finally:
            response.close()
        response._content = b"".join(chunks)  # what .json() and .text read
        return response

    def ask(self, prompt: str, system: str = "") -> str:
        """One greedy reply to ``prompt`` (the pairwise judge uses this), cached like samples."""
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        key = SampleCache.key(self.cfg.model, json.dumps(messages), 0.0, 0)
        cached = self.cache.get(key) if self.cache.answered(key, self.cfg.max_new_tokens) else None
        if cached is None:
            cached, why = self._ask(messages, 0.0, 0)
            self.cache.put(key, cached, why, self.cfg.max_new_tokens)
        return cached

    def sample(self, questions: list[Question], k: int, temperature: float) -> list[PoolEntry]:
        from tqdm.auto import tqdm

        jobs = []
        for n, q in enumerate(questions):
            messages = self.messages(q)
            prompt_key = json.dumps(messages)
            for i in range(k):
                jobs.append((n, i, messages, SampleCache.key(self.cfg.model, prompt_key, temperature, i)))
        texts: list[list[str]] = [[""] * k for _ in questions]
        reasons: list[list[str]] = [[""] * k for _ in questions]
        todo = []
        for n, i, messages, key in jobs:
            if not self.cache.answered(key, self.cfg.max_new_tokens):
                todo.append((n, i, messages, key))
            else:
                texts[n][i], reasons[n][i] = self.cache.get(key), self.cache.finish_reason(key)

        def work(job):
            n, i, messages, key = job
            try:
                text, why = _cut_with_reason(*self._ask(messages, temperature, i))
            except BaseException:
                self._stop.set()  # set here, in the worker, so that no queued request starts after it
                raise
            self.cache.put(key, text, why, self.cfg.max_new_tokens)  # on disk before anything else can fail
            return n, i, text, why

        # Stop at the first request that fails for good (or a Ctrl-C): queued requests never start
        # and those waiting to retry give up, while those in flight finish and are cached on the way
        # out of the pool, so a rerun pays only for what is missing.
        # A Ctrl-C does not wait for the requests in flight (up to teacher.timeout_s each): what was
        # answered is in the cache already, and the caller exits at once (TeacherInterrupted).
        self._stop.clear()
        failure = None
        pool = ThreadPoolExecutor(max_workers=self.cfg.concurrency)
        futures = [pool.submit(work, job) for job in todo]
        try:
            for future in tqdm(
                as_completed(futures), total=len(todo), desc="teacher (openai)", disable=not self.progress
            ):
                n, i, text, why = future.result()
                texts[n][i], reasons[n][i] = text, why
        except KeyboardInterrupt:
            self._stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            self.cache.sync()
            raise TeacherInterrupted(
                f"interrupted: {len(self.cache.items)} teacher answers are kept in {self.cache.path}; "
                "the same command asks only for the rest"
            ) from None
        except BaseException as err:
            self._stop.set()
            for future in futures:
                future.cancel()
            failure = err
        pool.shutdown(wait=True)
        self.cache.sync()
        if failure is not None:
            # Report the cause, not a request that merely stopped because of it (all are done now).
            causes = [
                f.exception()
                for f in futures
                if not f.cancelled() and f.exception() is not None and not isinstance(f.exception(), _Stopped)
            ]
            raise causes[0] if isinstance(failure, _Stopped) and causes else failure
        return [_entry(q, row, self.cfg.model, why) for q, row, why in zip(questions, texts, reasons)]


class TeacherInterrupted(KeyboardInterrupt):
    """Ctrl-C during LLM sampling; the message says what was kept. Threads may still be waiting
    on the endpoint, so the command line exits without joining them (``os._exit``)."""


def exemplars_for(data: TaskData, count: int = 3) -> list[Question]:
    """Few-shot exemplars for LLM teachers: the first training questions with a gold rationale."""
    train = data.questions.get("train") or data.questions.get("validation") or []
    return [q for q in train if q.gold_rationale][:count]


# One builder per teacher kind, registered by name in registry.TEACHERS (where config.py and the
# CLI read the names without importing this module); build_teacher dispatches through it.


def simulated_teacher(
    cfg: TeacherConfig, data: TaskData, cache_path: Path | None, progress: bool, device: str
) -> Teacher:
    """``teacher.kind: simulated``: LLM-like rationales for the synthetic task."""
    if not data.problems:
        raise ValueError("the simulated teacher writes rationales for the synth task only")
    return SimulatedTeacher(cfg, data.problems)


def pool_teacher(cfg: TeacherConfig, data: TaskData, cache_path: Path | None, progress: bool, device: str) -> Teacher:
    """``teacher.kind: pool``: ``teacher.pool``, else the pools shipped with the task's source."""
    if cfg.pool:
        return PoolTeacher(read_pool(Path(cfg.pool)), cfg.pool)
    entries = [entry for pool in data.pools.values() for entry in pool]
    if not entries:
        raise UserInputError(
            f"task {data.family} (source {data.source}) ships no teacher rationales; set teacher.pool to a pool file "
            "(make one with `qcrd-bench teach`)"
        )
    return PoolTeacher(entries, f"{data.family}/{data.source} pools")


def _llm_cache(cfg: TeacherConfig, cache_path: Path | None) -> SampleCache:
    # A run passes its own cache file (in the run directory) and only reads `teacher.cache`, so no
    # config value makes it write outside the run directory; `teach` passes `teacher.cache` itself.
    shared = Path(cfg.cache) if cfg.cache else None
    return SampleCache(cache_path or shared, read_also=shared)


def hf_teacher(cfg: TeacherConfig, data: TaskData, cache_path: Path | None, progress: bool, device: str) -> Teacher:
    """``teacher.kind: hf``: a local causal LM on ``device``, answers cached."""
    return HFTeacher(cfg, exemplars_for(data), _llm_cache(cfg, cache_path), device, progress)


def openai_teacher(
    cfg: TeacherConfig, data: TaskData, cache_path: Path | None, progress: bool, device: str
) -> Teacher:
    """``teacher.kind: openai``: an OpenAI-compatible endpoint, answers cached."""
    return OpenAITeacher(cfg, exemplars_for(data), _llm_cache(cfg, cache_path), progress)


def build_teacher(
    cfg: TeacherConfig, data: TaskData, cache_path: Path | None = None, progress: bool = False, device: str = "cpu"
) -> Teacher:
    """The teacher backend named by ``teacher.kind`` (a name of ``registry.TEACHERS``) for this
    task's data; an unknown kind raises ``registry.UnknownName`` (a UserInputError)."""
    return TEACHERS[cfg.kind](cfg, data, cache_path, progress, device)
