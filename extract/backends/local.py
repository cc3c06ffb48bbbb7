"""The embedded backend: llama-cpp-python running a GGUF model in this process (CPU).

One call at a time (llama.cpp holds one context); calls run in a worker thread so the event loop keeps writing
results. The JSON schema is compiled to a GBNF grammar once and reused. llama.cpp keeps the evaluated tokens of
the previous call and re-evaluates only after the longest common prefix, so the fixed prompt prefix costs once.
Its grammar ignores `minimum`/`maximum`: the engine re-validates every answer with pydantic anyway.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from extract.backends.base import BackendError, BackendInfo, Completion, Message, SamplingConfig
from extract.model import DEFAULT_MODEL, MODELS, ensure_model, verify_file


class LocalConfig(BaseModel):
    """Settings of the embedded llama.cpp backend."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="key of extract.model.MODELS")
    model_path: Path | None = Field(None, description="a GGUF file to use instead of the packaged model")
    n_threads: int = Field(1, ge=1, le=256, description="CPU threads (1: two threads collapse under load)")
    n_ctx: int = Field(8192, ge=512, le=131072, description="context window (tokens)")


class LocalBackend:
    """llama-cpp-python chat completions with grammar-constrained JSON."""

    max_concurrency = 1

    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        self._llm: Any = None
        self._grammars: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def start(self) -> BackendInfo:
        return await asyncio.to_thread(self._load)

    def _load(self) -> BackendInfo:
        try:
            import llama_cpp
        except ImportError as exc:
            raise BackendError("the local backend needs llama-cpp-python: pip install 'rsuper[local]'") from exc
        cfg = self.config
        if cfg.model_path is not None:
            path = cfg.model_path
            if not path.is_file():
                raise BackendError(f"{path}: no such GGUF file")
            spec = next((s for s in MODELS.values() if s.filename == path.name), None)
            if spec is not None:
                verify_file(path, spec.sha256)
            model_id = spec.model_id if spec else path.stem
            revision = spec.revision if spec else ""
            quant = spec.quantization if spec else ""
        else:
            path, spec = ensure_model(cfg.model)
            model_id, revision, quant = spec.model_id, spec.revision, spec.quantization
        self._llm = llama_cpp.Llama(model_path=str(path), n_ctx=cfg.n_ctx, n_threads=cfg.n_threads,
                                    n_threads_batch=cfg.n_threads, verbose=False, seed=0)
        return BackendInfo(backend="local", backend_version=f"llama-cpp-python {llama_cpp.__version__}",
                           model_id=model_id, model_revision=revision, quantization=quant,
                           structured_output="gbnf from json schema",
                           extra={"n_threads": cfg.n_threads, "n_ctx": cfg.n_ctx, "file": os.fspath(path.name)})

    def _grammar(self, schema: dict[str, Any]) -> Any:
        from llama_cpp import LlamaGrammar

        key = json.dumps(schema)  # property order matters: the grammar emits keys in schema order
        if key not in self._grammars:
            self._grammars[key] = LlamaGrammar.from_json_schema(key, verbose=False)
        return self._grammars[key]

    def _call(self, messages: list[Message], schema: dict[str, Any], sampling: SamplingConfig) -> Completion:
        t0 = time.perf_counter()
        try:
            out = self._llm.create_chat_completion(
                messages=messages, grammar=self._grammar(schema), temperature=sampling.temperature,
                top_p=sampling.top_p, max_tokens=sampling.max_tokens, seed=sampling.seed)
        except ValueError as exc:  # e.g. the conversation exceeds n_ctx
            raise BackendError(f"llama.cpp refused the call: {exc}") from exc
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return Completion(text=choice["message"]["content"] or "", finish_reason=choice.get("finish_reason") or "stop",
                          prompt_tokens=int(usage.get("prompt_tokens") or 0),
                          output_tokens=int(usage.get("completion_tokens") or 0),
                          latency_s=time.perf_counter() - t0)

    async def complete(self, messages: list[Message], schema: dict[str, Any], sampling: SamplingConfig) -> Completion:
        if self._llm is None:
            raise BackendError("the local backend was not started")
        async with self._lock:
            return await asyncio.to_thread(self._call, messages, schema, sampling)

    async def aclose(self) -> None:
        if self._llm is not None:
            await asyncio.to_thread(self._llm.close)
            self._llm = None
