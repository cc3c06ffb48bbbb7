"""Offline batch backend on GPU machines: `vllm.LLM.chat` with `StructuredOutputsParams(json=...)`.

The engine's concurrent calls are gathered into micro-batches: every call waiting when the GPU becomes free goes
into one `LLM.chat` call, so continuous batching sees hundreds of conversations at once. The fixed prompt prefix
comes first in every conversation and prefix caching is on, so it is computed once. Whitespace inside the JSON
is disabled at engine level (per-request settings are ignored by xgrammar). `vllm` is imported only here, lazily.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from extract.backends.base import BackendError, BackendInfo, Completion, Message, SamplingConfig


class VllmConfig(BaseModel):
    """Settings of the offline vLLM engine."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="Hugging Face id or local folder of the model")
    model_revision: str = ""
    quantization: str = ""
    max_batch: int = Field(512, ge=1, description="conversations per LLM.chat call")
    max_model_len: int = Field(16384, ge=512)
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    structured_backend: str = "xgrammar"
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="more vllm.LLM keyword arguments")


class VllmBackend:
    """Micro-batched offline generation with vLLM."""

    def __init__(self, config: VllmConfig) -> None:
        self.config = config
        self.max_concurrency = config.max_batch * 2  # one batch running, the next one filling
        self._llm: Any = None
        self._vllm: Any = None
        self._waiting: list[tuple[list[Message], dict[str, Any], SamplingConfig, asyncio.Future[Completion]]] = []
        self._wake: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None

    async def start(self) -> BackendInfo:
        try:
            import vllm
        except ImportError as exc:
            raise BackendError("the vllm backend needs vLLM >= 0.30 on a GPU machine: pip install 'rsuper[vllm]'") from exc
        cfg = self.config
        self._vllm = vllm
        self._llm = await asyncio.to_thread(
            vllm.LLM, model=cfg.model, revision=cfg.model_revision or None, quantization=cfg.quantization or None,
            max_model_len=cfg.max_model_len, tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization, enable_prefix_caching=True, seed=0,
            structured_outputs_config={"backend": cfg.structured_backend, "disable_any_whitespace": True},
            **cfg.engine_kwargs)
        self._wake = asyncio.Event()
        self._runner = asyncio.create_task(self._run_batches())
        return BackendInfo(backend="vllm", backend_version=f"vllm {getattr(vllm, '__version__', '?')}",
                           model_id=cfg.model, model_revision=cfg.model_revision, quantization=cfg.quantization,
                           structured_output=f"{cfg.structured_backend} (disable_any_whitespace)")

    def _sampling_params(self, schema: dict[str, Any], s: SamplingConfig) -> Any:
        from vllm.sampling_params import SamplingParams, StructuredOutputsParams

        return SamplingParams(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, seed=s.seed,
                              structured_outputs=StructuredOutputsParams(json=schema))

    def _generate(self, batch: list[tuple[list[Message], dict[str, Any], SamplingConfig, Any]]) -> list[Completion]:
        t0 = time.perf_counter()
        params = [self._sampling_params(schema, s) for _, schema, s, _ in batch]
        outputs = self._llm.chat([messages for messages, _, _, _ in batch], params, use_tqdm=False,
                                 chat_template_kwargs={"enable_thinking": False})
        latency = (time.perf_counter() - t0) / max(len(batch), 1)
        done = []
        for out in outputs:
            gen = out.outputs[0]
            done.append(Completion(text=gen.text, finish_reason=str(gen.finish_reason or "stop"),
                                   prompt_tokens=len(out.prompt_token_ids or ()), output_tokens=len(gen.token_ids),
                                   latency_s=latency))
        return done

    async def _run_batches(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                batch = self._waiting[: self.config.max_batch]
                del self._waiting[: len(batch)]
                try:
                    results = await asyncio.to_thread(self._generate, batch)
                except Exception as exc:  # an engine fault fails this batch's calls, not the run
                    for *_, fut in batch:
                        if not fut.done():
                            fut.set_exception(BackendError(f"vLLM generation failed: {exc}"))
                    continue
                for (*_, fut), result in zip(batch, results):
                    if not fut.done():
                        fut.set_result(result)

    async def complete(self, messages: list[Message], schema: dict[str, Any], sampling: SamplingConfig) -> Completion:
        if self._wake is None:
            raise BackendError("the vllm backend was not started")
        fut: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self._waiting.append((messages, schema, sampling, fut))
        self._wake.set()
        return await fut

    async def aclose(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError:
                pass
            self._runner = None
        self._llm = None
