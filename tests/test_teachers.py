"""Teacher backends against real components: an HTTP server on 127.0.0.1 speaking the
OpenAI chat-completions protocol, and a tiny transformers causal LM built offline."""

from __future__ import annotations

import json
import threading

import pytest
from helpers import ChatHandler, completion, serve

from qcrd_plugin.config import TeacherConfig
from qcrd_plugin.questions import Question, TaskData
from qcrd_plugin.teachers import OpenAITeacher, SampleCache, backoff_seconds, build_teacher

QUESTIONS = [Question(f"q{i}", f"Ada has {i} pens and buys 2 more. How many pens?", str(i + 2)) for i in range(6)]


class ChatServer:
    """A small OpenAI-compatible endpoint: every third request first gets a 429, every fifth a 503;
    answers state ``prompt number + 2`` so the parsed answers can be checked."""

    def __init__(self):
        self.hits = 0
        self.failures = 0
        self.seen: dict[str, int] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(ChatHandler):
            def do_POST(self):
                body = self.read_body()
                prompt = body["messages"][-1]["content"]
                key = f"{prompt}|{body['seed']}"
                with server.lock:
                    server.hits += 1
                    tries = server.seen[key] = server.seen.get(key, 0) + 1
                    fail = tries == 1 and server.hits % 3 == 0 and 429 or tries == 1 and server.hits % 5 == 0 and 503
                    if fail:
                        server.failures += 1
                if fail:
                    self.reply(fail, b"", {"Retry-After": "0"})
                    return
                number = int(prompt.rsplit("Ada has ", 1)[1].split()[0])
                self.reply(
                    200,
                    completion(
                        f"Ada has {number} pens, so {number} + 2 = {number + 2}. "
                        f"So the answer is {number + 2}.\n\nQ: made up"
                    ),
                )

        self.httpd, self.url = serve(Handler)

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def server():
    s = ChatServer()
    yield s
    s.close()


def test_openai_teacher_retries_caches_and_resumes(server, tmp_path):
    cfg = TeacherConfig(kind="openai", model="local", base_url=server.url, concurrency=3, max_retries=4)
    cache = tmp_path / "cache.jsonl"
    teacher = build_teacher(cfg, TaskData("custom", "test", {"train": QUESTIONS}), cache)
    teacher.sleep = lambda seconds: None
    pool = teacher.sample(QUESTIONS, 2, 0.7)
    assert server.failures > 0 and teacher.retries == server.failures
    assert [[s.answer for s in e.samples] for e in pool] == [[float(q.answer)] * 2 for q in QUESTIONS]
    assert all("Q:" not in s.rationale for e in pool for s in e.samples)  # cut at the made-up next item
    assert len(cache.read_text().splitlines()) == len(QUESTIONS) * 2
    # A second teacher (a restarted run) asks the server nothing: every sample is in the cache.
    hits = server.hits
    again = build_teacher(cfg, TaskData("custom", "test", {"train": QUESTIONS}), cache).sample(QUESTIONS, 2, 0.7)
    assert server.hits == hits and [e.to_record() for e in again] == [e.to_record() for e in pool]
    # A torn last line (a kill mid-write) is ignored, and only that sample is asked again.
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    build_teacher(cfg, TaskData("custom", "test", {"train": QUESTIONS}), cache).sample(QUESTIONS, 2, 0.7)
    assert server.hits == hits + 1


def test_openai_teacher_gives_up_with_a_clear_error(tmp_path):
    cfg = TeacherConfig(kind="openai", model="m", base_url="http://127.0.0.1:9/v1", max_retries=1, timeout_s=0.5)
    teacher = OpenAITeacher(cfg, [], SampleCache(None), sleep=lambda s: None)
    with pytest.raises(RuntimeError, match="gave up after 2 tries"):
        teacher.sample(QUESTIONS[:1], 1, 0.7)


def test_backoff_grows_exponentially_with_jitter():
    import random

    rng = random.Random(0)
    waits = [backoff_seconds(a, rng, base=1.0, cap=100.0) for a in range(6) for _ in range(50)]
    for attempt in range(6):
        chunk = waits[attempt * 50 : (attempt + 1) * 50]
        assert max(chunk) <= 2**attempt and len(set(chunk)) > 1


def tiny_causal_lm(folder):
    """A tiny GPT-2 with a locally trained tokenizer, saved like any HF model."""
    from tokenizers import processors
    from transformers import GPT2Config, GPT2LMHeadModel

    from qcrd_plugin.students import train_tokenizer

    corpus = [q.question + " So the answer is 5." for q in QUESTIONS] * 3
    tok = train_tokenizer(corpus, 120)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B", special_tokens=[])
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tok),
            n_positions=256,
            n_embd=32,
            n_layer=1,
            n_head=2,
            bos_token_id=tok.eos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    )
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def causal_lm(tmp_path_factory):
    return tiny_causal_lm(tmp_path_factory.mktemp("gpt2"))


def test_hf_teacher_samples_k_per_question_and_caches(causal_lm, tmp_path):
    cfg = TeacherConfig(kind="hf", model=str(causal_lm), max_new_tokens=12, batch_size=4)
    cache = tmp_path / "hf_cache.jsonl"
    data = TaskData("custom", "test", {"train": QUESTIONS})
    pool = build_teacher(cfg, data, cache).sample(QUESTIONS, 3, 1.0)
    assert [len(e.samples) for e in pool] == [3] * len(QUESTIONS)
    assert len(cache.read_text().splitlines()) == 3 * len(QUESTIONS)
    again = build_teacher(cfg, data, cache).sample(QUESTIONS, 3, 1.0)
    assert [e.to_record() for e in again] == [e.to_record() for e in pool]


class CutOffServer:
    """An OpenAI-compatible endpoint that stops every chain at its ``max_tokens`` the way a server
    does (``finish_reason: "length"``) while the limit is under 50, and lets it end otherwise."""

    CHAIN = "Ada has {n} pens. She buys 2 more, so she has {n} + 2 = {total} pens. To check, we count"

    def __init__(self):
        self.hits = 0
        self.lock = threading.Lock()
        server = self

        class Handler(ChatHandler):
            def do_POST(self):
                body = self.read_body()
                with server.lock:
                    server.hits += 1
                n = int(body["messages"][-1]["content"].rsplit("Ada has ", 1)[1].split()[0])
                text = server.CHAIN.format(n=n, total=n + 2)
                cut = body["max_tokens"] < 50
                reply = completion(text if cut else text + f" again: {n + 2}. The answer is {n + 2}.")
                reply["choices"][0]["finish_reason"] = "length" if cut else "stop"
                self.reply(200, reply)

        self.httpd, self.url = serve(Handler)


def test_a_chain_stopped_at_the_token_limit_is_recorded_and_read_only_for_an_explicit_answer(tmp_path):
    """The server's ``finish_reason`` reaches the pool and the cache; a chain stopped at the limit
    gives no answer from its closing quantity (wherever the limit fell), the pool statistics count
    it, and the same request with a higher limit asks again (a chain that ended is never re-asked)."""
    from qcrd_plugin.config import SelfConsistencyConfig
    from qcrd_plugin.pools import PoolEntry
    from qcrd_plugin.rationales import pool_statistics, pool_warnings, select_pool

    server = CutOffServer()
    try:
        data, cache = TaskData("custom", "test", {"train": QUESTIONS}), tmp_path / "cache.jsonl"
        cut = build_teacher(
            TeacherConfig(kind="openai", model="m", base_url=server.url, max_new_tokens=32), data, cache
        )
        pool = cut.sample(QUESTIONS, 2, 0.7)
        samples = [s for e in pool for s in e.samples]
        assert {s.finish_reason for s in samples} == {"length"} and {s.answer for s in samples} == {None}
        # Without the finish reason the same text reads as its closing sum: the reason is what changes it.
        assert QUESTIONS[3].stated(samples[6].rationale) == 5.0
        record = pool[0].to_record()
        assert PoolEntry.from_record(record).samples[0].finish_reason == "length"
        stats = pool_statistics(pool, select_pool(pool, SelfConsistencyConfig()))
        assert stats["cut_off_rate"] == 1.0
        assert any("token limit" in w and "teacher.max_new_tokens" in w for w in pool_warnings(pool, stats, 2))
        # A rerun with the same limit reuses the cached cut chains; a higher limit asks for them again.
        hits = server.hits
        build_teacher(
            TeacherConfig(kind="openai", model="m", base_url=server.url, max_new_tokens=32), data, cache
        ).sample(QUESTIONS, 2, 0.7)
        assert server.hits == hits
        longer = TeacherConfig(kind="openai", model="m", base_url=server.url, max_new_tokens=64)
        ended = build_teacher(longer, data, cache).sample(QUESTIONS, 2, 0.7)
        assert server.hits == hits + 2 * len(QUESTIONS)
        assert [[s.answer for s in e.samples] for e in ended] == [[float(q.answer)] * 2 for q in QUESTIONS]
        assert {s.finish_reason for e in ended for s in e.samples} == {"stop"}
        build_teacher(longer, data, cache).sample(QUESTIONS, 2, 0.7)
        assert server.hits == hits + 2 * len(QUESTIONS)
    finally:
        server.httpd.shutdown()


def test_the_hf_teacher_tells_a_chain_stopped_at_max_new_tokens(causal_lm, tmp_path):
    """Real generation with the tiny LM: with no end-of-sequence token to stop on, every chain fills
    max_new_tokens ("length", in the pool and the cache); with the end-of-sequence token forced at
    the limit, every chain ended ("stop"). Rows padded after their end (pad != eos) and a list of
    end-of-sequence ids are read by the same rule."""
    import torch

    data, cfg = TaskData("custom", "test", {"train": QUESTIONS}), TeacherConfig(kind="hf", model=str(causal_lm))
    cfg.max_new_tokens = 12
    for forced, expected in ((False, "length"), (True, "stop")):
        teacher = build_teacher(cfg, data, tmp_path / f"cache_{forced}.jsonl")
        eos = teacher.tokenizer.eos_token_id
        teacher.model.generation_config.eos_token_id = eos if forced else None
        teacher.model.generation_config.forced_eos_token_id = eos if forced else None
        pool = teacher.sample(QUESTIONS[:2], 2, 1.0)
        assert [s.finish_reason for e in pool for s in e.samples] == [expected] * 4
        cached = [json.loads(line) for line in (tmp_path / f"cache_{forced}.jsonl").read_text().splitlines()]
        assert [(r["finish_reason"], r["max_tokens"]) for r in cached] == [(expected, 12)] * 4
    teacher.model.generation_config.eos_token_id = [eos, 99]
    rows = torch.tensor([[5, 6, 7] * 4, [5, 99, 0] + [0] * 9, [5, eos, 0] + [0] * 9])  # 0: padding, not an end
    assert teacher.finish_reasons(rows) == ["length", "stop", "stop"]
    assert teacher.finish_reasons(rows[:, :3]) == ["stop"] * 3  # shorter than the limit: every row ended


def test_the_cache_keeps_the_better_of_two_records_and_skips_bad_ones(tmp_path):
    """A cut answer read after an ended one of the same key (two caches merged) does not replace it;
    records with a key or text of the wrong type are skipped and counted, a null reason is unknown."""
    shared, own = tmp_path / "shared.jsonl", tmp_path / "own.jsonl"
    shared.write_text(json.dumps({"key": "k", "text": "ended", "finish_reason": "stop", "max_tokens": 64}) + "\n")
    bad = [{"key": ["a"], "text": "x"}, {"key": "n", "text": None}, {"key": "r", "text": "t", "max_tokens": "many"}]
    own.write_text(
        "\n".join(
            json.dumps(r)
            for r in [{"key": "k", "text": "cut", "finish_reason": "length", "max_tokens": 32}, *bad]
            + [{"key": "z", "text": "zz", "finish_reason": None}]
        )
        + "\n"
    )
    cache = SampleCache(own, read_also=shared)
    assert cache.get("k") == "ended" and cache.answered("k", 128) and cache.skipped == 3
    assert cache.get("n") is None and cache.finish_reason("z") == "" and cache.answered("z", 999)
    cut = SampleCache(own)
    assert cut.get("k") == "cut" and cut.answered("k", 32) and not cut.answered("k", 33)


def test_a_cut_chain_is_read_up_to_its_last_finished_sentence():
    """The limit can fall inside the answer statement itself: "The answer is 1" of "... is 12"."""
    from qcrd_plugin.pools import PoolEntry

    q = Question("q", "Ada has 5 pens and buys 7 more. How many pens?", "12")
    assert q.stated("She has 5 + 7 = 12 pens. The answer is 1", finish_reason="length") is None
    assert q.stated("She has 5 + 7 = 12 pens. The answer is 12.\nTo check", finish_reason="length") == 12.0
    assert q.stated("She has 5 + 7 = 12 pens. The answer is 1", finish_reason="stop") == 1.0
    record = {"id": "q", "question": q.question, "gold": "12", "samples": [{"rationale": "x", "finish_reason": None}]}
    assert PoolEntry.from_record(record).samples[0].finish_reason == ""


def test_an_empty_answer_stopped_at_the_limit_fails_at_once_with_what_to_raise(tmp_path):
    """A reasoning model that spends max_tokens thinking returns empty content with finish_reason
    "length": asking again would return the same, so the teacher stops after one request."""
    hits = []

    class Handler(ChatHandler):
        def do_POST(self):
            self.read_body()
            hits.append(1)
            reply = completion("")
            reply["choices"][0]["finish_reason"] = "length"
            self.reply(200, reply)

    httpd, url = serve(Handler)
    try:
        cfg = TeacherConfig(kind="openai", model="m", base_url=url, max_new_tokens=16, max_retries=3)
        teacher = OpenAITeacher(cfg, [], SampleCache(None), sleep=lambda s: None)
        with pytest.raises(RuntimeError, match=r"empty answer .*max_new_tokens = 16.*raise teacher.max_new_tokens"):
            teacher.sample(QUESTIONS[:1], 1, 0.7)
        assert len(hits) == 1
    finally:
        httpd.shutdown()
