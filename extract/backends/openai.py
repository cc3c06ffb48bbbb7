"""Async client for OpenAI-compatible chat servers (`vllm serve`, llama-cpp-python's server, others).

- Structured output: vLLM's dialect first (`response_format` type `json_schema`). A server that refuses it (an
  error whose body names `response_format`/`json_schema`; llama-cpp-python's server answers HTTP 500 with its
  validation error) is switched once, for that endpoint only, to `json_object` with the schema inline. Until the
  first answer arrives, an endpoint takes one call at a time, so at most one call is refused.
- Several base URLs are load-balanced: each call goes to the endpoint with the fewest calls in flight. An endpoint
  that fails `down_after` calls in a row in transport is left out for a cool-down (doubling up to
  `down_max_s`), then tried again; retries go to another endpoint, so one dead replica costs its share of the
  calls only a few times instead of failing them. When every endpoint is down, calls go to the one due back
  first, and the engine's outage breaker decides when to stop.
- aiohttp, not httpx: httpcore's pool costs ~10 ms of CPU per request at 64 connections (it re-checks every
  connection on each request), which alone would cap a run near 100 reports/s.
- `start` asks each endpoint's `/models` (for the model name, or with `--model` just for an answer): a server
  that answers nothing (refused connection, unknown host) fails the run there, in one error, instead of every
  report after its retries.
- Transport errors, timeouts, 5xx/429 and unreadable bodies are retried with exponential backoff and jitter;
  past the budget the call raises `BackendError`. `finish_reason` is returned as is: the engine treats
  `length` as a failure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from extract.backends.base import BackendError, BackendInfo, Completion, Message, SamplingConfig, TransportError

log = logging.getLogger("rsuper.openai")

_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_SCHEMA_NAME = "ct_report_extraction"


class OpenAIConfig(BaseModel):
    """Settings of the OpenAI-compatible client."""

    model_config = ConfigDict(extra="forbid")

    urls: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:8000/v1"], min_length=1)
    model: str | None = Field(None, description="served model name; None = the first of /v1/models")
    model_revision: str = ""
    quantization: str = ""
    concurrency: int = Field(64, ge=1, le=4096, description="calls in flight over all endpoints")
    timeout_s: float = Field(300.0, gt=0, description="read timeout of one call (s)")
    connect_timeout_s: float = Field(10.0, gt=0)
    retries: int = Field(4, ge=0, le=20, description="retries of one call after transport errors")
    backoff_s: float = Field(0.5, ge=0, description="first retry delay (s); doubles each retry")
    backoff_max_s: float = Field(30.0, ge=0)
    down_after: int = Field(3, ge=1, description="transport failures in a row that take an endpoint out")
    down_s: float = Field(1.0, gt=0, description="first cool-down of an endpoint taken out (s); doubles")
    down_max_s: float = Field(30.0, gt=0, description="longest cool-down (s)")
    api_key: str = "EMPTY"


def normalize_url(url: str) -> str:
    """Base URL ending in `/v1` (`http://host:8000` and `http://host:8000/v1/` both give `.../v1`)."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def response_format(mode: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The `response_format` field for a dialect: `json_schema` (vLLM, OpenAI) or `json_object` (llama.cpp)."""
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": _SCHEMA_NAME, "schema": schema, "strict": True}}
    return {"type": "json_object", "schema": schema}


def is_dialect_rejection(status: int, body: str) -> bool:
    """True when an error answer refuses the `json_schema` response format (so `json_object` should be tried).

    A 400/422 naming either word counts; so does a 500 naming both, which is how llama-cpp-python's server
    reports its request-validation error.
    """
    low = body.lower()
    if status in (400, 422):
        return "response_format" in low or "json_schema" in low
    return status == 500 and "response_format" in low and "json_schema" in low


@dataclass
class _Endpoint:
    url: str
    mode: str = "json_schema"
    in_flight: int = 0
    model: str | None = None
    failures_in_a_row: int = 0
    down_until: float = 0.0  # time.monotonic() before which no call is sent here (unless all are down)
    cooldowns: int = 0  # cool-downs since the last answer (the next one is twice as long)

    def is_down(self, now: float) -> bool:
        return self.down_until > now


class _Retryable(Exception):
    """A failure worth retrying (transport, 5xx, unreadable body)."""


class OpenAIBackend:
    """Chat completions against one or more OpenAI-compatible servers."""

    def __init__(self, config: OpenAIConfig) -> None:
        self.config = config
        self.max_concurrency = config.concurrency
        self._endpoints = [_Endpoint(normalize_url(u)) for u in config.urls]
        self._client: aiohttp.ClientSession | None = None
        self._next = 0
        self._encoded: dict[tuple[str, str], str] = {}
        self._formats: dict[tuple[str, int], str] = {}

    async def start(self) -> BackendInfo:
        cfg = self.config
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=cfg.concurrency + 8),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=cfg.connect_timeout_s, sock_read=cfg.timeout_s),
            headers={"Authorization": f"Bearer {cfg.api_key}"}, trust_env=False)
        try:
            silent: list[tuple[_Endpoint, TransportError]] = []
            for ep in self._endpoints:
                try:
                    if cfg.model:  # any answer will do: only a server that answers nothing stops the run here
                        await self._with_retries(ep, partial(self._request, "GET", f"{ep.url}/models"))
                        ep.model = cfg.model
                    else:
                        ep.model = await self._first_model(ep)
                except TransportError as exc:
                    silent.append((ep, exc))
            if len(silent) == len(self._endpoints):
                exc = silent[0][1]
                raise TransportError(f"{exc}; is the server running? Start it, or point --llm-url at it") from exc
            for ep, exc in silent:  # the run goes on with the others; this one is tried again after its cool-down
                self._failed(ep, str(exc), force=True)
            models = sorted({ep.model for ep in self._endpoints if ep.model is not None})
            if len(models) != 1:
                raise BackendError(f"the endpoints serve different models: {models}; pass --model")
            for ep, _ in silent:  # assumed to serve the same model as the others (a replica)
                ep.model = models[0]
        except BaseException:
            await self.aclose()  # the engine closes only a started backend; an open session is logged at exit
            raise
        return BackendInfo(backend="openai", backend_version=f"aiohttp {aiohttp.__version__}", model_id=models[0],
                           model_revision=cfg.model_revision, quantization=cfg.quantization,
                           structured_output="json_schema (json_object fallback)",
                           extra={"endpoints": [ep.url for ep in self._endpoints]})

    async def _first_model(self, ep: _Endpoint) -> str:
        try:
            data = await self._with_retries(ep, lambda: self._get_json(f"{ep.url}/models"))
            return str(data["data"][0]["id"])
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError(f"{ep.url}/models: no model listed; pass --model") from exc

    def _body(self, ep: _Endpoint, messages: list[Message], schema: dict[str, Any], sampling: SamplingConfig) -> bytes:
        """The request JSON, assembled from cached pieces: the fixed prompt turns and the schema are encoded once
        per run instead of once per report (they are most of the bytes)."""
        parts = []
        for m in messages:
            key = (m["role"], m["content"])
            text = self._encoded.get(key)
            if text is None:
                text = json.dumps(m, ensure_ascii=False)
                if len(self._encoded) < 64:  # the fixed turns come first; report turns are not kept
                    self._encoded[key] = text
            parts.append(text)
        fmt_key = (ep.mode, id(schema))
        if fmt_key not in self._formats:
            self._formats[fmt_key] = json.dumps(response_format(ep.mode, schema))
        head = json.dumps({"model": ep.model, "temperature": sampling.temperature, "top_p": sampling.top_p,
                           "max_tokens": sampling.max_tokens, "seed": sampling.seed})
        return (head[:-1] + ', "messages": [' + ", ".join(parts) + '], "response_format": '
                + self._formats[fmt_key] + "}").encode()

    async def _request(self, method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body bytes); transport failures, timeouts and cut bodies raise `_Retryable`."""
        assert self._client is not None
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            async with self._client.request(method, url, data=body, headers=headers) as r:
                return r.status, await r.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc

    async def _get_json(self, url: str) -> Any:
        status, raw = await self._request("GET", url)
        if status in _RETRY_STATUS:
            raise _Retryable(f"HTTP {status}")
        if status >= 400:
            raise BackendError(f"{url}: HTTP {status}: {raw[:200].decode(errors='replace')}")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise _Retryable(f"unreadable response body ({len(raw)} bytes)") from exc

    def _pick(self, avoid: _Endpoint | None = None) -> _Endpoint:
        """Fewest in flight among the endpoints not cooling down, ties round-robin so equal endpoints share the load;
        a retry `avoid`s the endpoint that just failed it (failing fast, it has the fewest in flight)."""
        n = len(self._endpoints)
        order = [self._endpoints[(self._next + i) % n] for i in range(n)]
        self._next = (self._next + 1) % n
        now = time.monotonic()
        up = [ep for ep in order if not ep.is_down(now)]
        if not up:  # all down: the one due back first gets the call
            return min(order, key=lambda ep: ep.down_until)
        others = [ep for ep in up if ep is not avoid]
        return min(others or up, key=lambda ep: ep.in_flight)

    def _failed(self, ep: _Endpoint, why: str, force: bool = False) -> None:
        """Count a transport failure of `ep`; take it out for a cool-down at `down_after` in a row."""
        ep.failures_in_a_row += 1
        now = time.monotonic()
        if (force or ep.failures_in_a_row >= self.config.down_after) and not ep.is_down(now):
            cooldown = min(self.config.down_max_s, self.config.down_s * 2 ** ep.cooldowns)
            ep.cooldowns += 1
            ep.down_until = now + cooldown
            if len(self._endpoints) > 1:
                log.warning("%s: not answering (%s); calls go to the other endpoints for %.0f s", ep.url, why, cooldown)

    @staticmethod
    def _answered(ep: _Endpoint) -> None:
        if ep.cooldowns and ep.failures_in_a_row:
            log.warning("%s: answering again", ep.url)
        ep.failures_in_a_row = ep.cooldowns = 0
        ep.down_until = 0.0

    async def _with_retries(self, ep: _Endpoint, call: Any) -> Any:
        cfg = self.config
        for attempt in range(cfg.retries + 1):
            try:
                return await call()
            except _Retryable as exc:
                if attempt == cfg.retries:
                    raise TransportError(f"{ep.url}: gave up after {attempt + 1} tries: {exc}") from exc
                await self._back_off(attempt)
        raise AssertionError("unreachable")

    async def _back_off(self, attempt: int) -> None:
        """Sleep before retry `attempt + 1`: `backoff_s` doubling per attempt up to `backoff_max_s`, with jitter."""
        delay = min(self.config.backoff_max_s, self.config.backoff_s * 2 ** attempt)
        await asyncio.sleep(delay * (0.5 + random.random() / 2))

    async def complete(self, messages: list[Message], schema: dict[str, Any], sampling: SamplingConfig) -> Completion:
        cfg = self.config
        t0 = time.perf_counter()
        # No call waits for another to learn the dialect: every slot is in use from the first request (a queue
        # behind one probe crawls through an outage), and a server refusing json_schema costs each call in flight
        # then one quick refusal before `_post_chat` switches the endpoint to json_object.
        ep = None
        for attempt in range(cfg.retries + 1):
            ep = self._pick(avoid=ep)  # each try picks again: a retry goes to another endpoint where there is one
            ep.in_flight += 1
            try:
                data = await self._post_chat(ep, messages, schema, sampling)
            except _Retryable as exc:
                self._failed(ep, str(exc))
                if attempt == cfg.retries:
                    raise TransportError(f"{ep.url}: gave up after {attempt + 1} tries: {exc}") from exc
                await self._back_off(attempt)
                continue
            finally:
                ep.in_flight -= 1
            self._answered(ep)
            break
        tries = attempt + 1
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
            finish = str(choice.get("finish_reason") or "stop")
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError(f"{ep.url}: response without choices[0].message.content") from exc
        usage = data.get("usage") or {}
        return Completion(text=text, finish_reason=finish, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                          output_tokens=int(usage.get("completion_tokens") or 0),
                          latency_s=time.perf_counter() - t0, retries=tries - 1)

    async def _post_chat(self, ep: _Endpoint, messages: list[Message], schema: dict[str, Any],
                         sampling: SamplingConfig) -> dict[str, Any]:
        for _ in range(2):  # the second pass only after switching the endpoint's dialect
            mode = ep.mode
            body = self._body(ep, messages, schema, sampling)
            status, raw = await self._request("POST", f"{ep.url}/chat/completions", body)
            if status >= 400:
                text = raw.decode(errors="replace")
                if mode == "json_schema" and is_dialect_rejection(status, text):
                    ep.mode = "json_object"
                    continue
                if status in _RETRY_STATUS:
                    raise _Retryable(f"HTTP {status}")
                if ep.mode != mode:  # another call switched the dialect meanwhile
                    continue
                raise BackendError(f"{ep.url}: HTTP {status}: {text[:300]}")
            try:
                return json.loads(raw)
            except ValueError as exc:
                raise _Retryable(f"unreadable response body ({len(raw)} bytes)") from exc
        raise BackendError(f"{ep.url}: the server refuses both json_schema and json_object response formats")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
