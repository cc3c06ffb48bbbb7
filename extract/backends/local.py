"""The embedded backend: llama-cpp-python running a GGUF model in this process (CPU).

One call at a time (llama.cpp holds one context); calls run in a worker thread so the event loop keeps writing
results. The JSON schema is compiled to a GBNF grammar once and reused. llama.cpp keeps the evaluated tokens of
the previous call and re-evaluates only after the longest common prefix, so the fixed prompt prefix costs once.
Its grammar ignores `minimum`/`maximum`: the engine re-validates every answer with pydantic anyway.

Before the model is loaded here, a child process decodes a few tokens with it (`probe_runtime`): a
llama-cpp-python built for another CPU dies with SIGILL/SIGSEGV inside decode, which would kill the run; in a
child it becomes one BackendError that says how to rebuild.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from extract.backends.base import BackendError, BackendInfo, Completion, Message, SamplingConfig
from extract.model import DEFAULT_MODEL, MODELS, ensure_model, verify_file


REBUILD_HINT = ("rebuild it for this CPU with `make rebuild-llama` (or `scripts/install_llama_cpp.sh .venv/bin/python`; "
                "set LLAMA_CMAKE_ARGS for other flags, see README 'Install')")
_PROBE_TIMEOUT_S = 600.0
_probed: dict[tuple[str, str], str] = {}  # (model file, llama_cpp file) -> cpu features, once per process


class RuntimeProbeError(BackendError):
    """The embedded llama.cpp runtime cannot decode on this machine."""


def _probe_command(model_path: Path) -> list[str]:
    return [sys.executable, "-m", "extract.backends.local", "--probe", os.fspath(model_path)]


def probe_runtime(model_path: Path, timeout_s: float = _PROBE_TIMEOUT_S) -> str:
    """Load `model_path` and decode a few tokens in a child process; return llama.cpp's CPU feature line.

    Raises:
        RuntimeProbeError: the child crashed (signal), failed or timed out; the message names the rebuild.
    """
    import llama_cpp

    key = (os.fspath(model_path), os.fspath(Path(llama_cpp.__file__).resolve()))
    if key in _probed:
        return _probed[key]
    try:
        proc = subprocess.run(_probe_command(model_path), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeProbeError(f"the embedded llama.cpp runtime did not decode one token of {model_path.name} "
                                f"in {timeout_s:.0f} s; {REBUILD_HINT}") from exc
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        raise RuntimeProbeError(
            f"the embedded llama.cpp runtime ({llama_cpp.__version__}, {Path(llama_cpp.__file__).parent}) crashed "
            f"with {sig} decoding one token of {model_path.name}: it was built for another CPU (GGML_NATIVE on a "
            f"machine with AVX-512/AMX is the usual cause); {REBUILD_HINT}")
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [""])[-1]  # the child's error line, not its traceback
        raise RuntimeProbeError(f"the embedded llama.cpp runtime failed decoding one token of {model_path.name} "
                                f"(exit {proc.returncode}): {tail}")
    _probed[key] = proc.stdout.strip()
    return _probed[key]


def gguf_problem(path: Path) -> str | None:
    """Why `path` cannot be a GGUF model file (missing, a folder, other bytes), or None when it can."""
    if not path.is_file():
        return f"{path}: no such GGUF file"
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        return f"{path}: cannot read the model file ({exc.strerror or exc})"
    if magic != b"GGUF":  # every GGUF file starts so; llama.cpp would fail on it with a traceback in the probe
        return f"{path}: not a GGUF model file (it does not start with 'GGUF'); give a .gguf file"
    return None


def _probe_main(model_path: str) -> None:
    """Child side of `probe_runtime`: a batched prompt and two generated tokens (both kernel paths)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=model_path, n_ctx=512, n_threads=1, n_threads_batch=1, verbose=False, seed=0)
    out = llm.create_chat_completion(messages=[{"role": "user", "content": "Liver: 9 mm cyst in segment 2."}],
                                     max_tokens=2, temperature=0.0)
    if int(out["usage"]["completion_tokens"]) < 1:
        raise SystemExit("the model generated no token")
    print(llama_cpp.llama_print_system_info().decode(errors="replace").strip())


class LocalConfig(BaseModel):
    """Settings of the embedded llama.cpp backend."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="key of extract.model.MODELS")
    model_path: Path | None = Field(None, description="a GGUF file to use instead of the packaged model")
    n_threads: int = Field(1, ge=1, le=256, description="CPU threads (1: two threads collapse under load)")
    n_ctx: int = Field(8192, ge=512, le=131072, description="context window (tokens)")
    prompt_lookup_tokens: int = Field(
        0, ge=0, le=64, description="prompt-lookup (n-gram) speculative decoding: tokens drafted from the prompt "
        "per step (0: off). Part of the run key: it changed answers here. llama-cpp-python then keeps logits of "
        "every position (n_ctx x vocabulary x 4 bytes), which made it slower on CPU (docs/extraction.md)")


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
            problem = gguf_problem(path)
            if problem is not None:
                raise BackendError(problem)
            spec = next((s for s in MODELS.values() if s.filename == path.name), None)
            if spec is not None:
                verify_file(path, spec.sha256)
            model_id = spec.model_id if spec else path.stem
            revision = spec.revision if spec else ""
            quant = spec.quantization if spec else ""
        else:
            path, spec = ensure_model(cfg.model)
            model_id, revision, quant = spec.model_id, spec.revision, spec.quantization
        cpu_features = probe_runtime(path)
        draft = None
        if cfg.prompt_lookup_tokens:
            from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

            draft = LlamaPromptLookupDecoding(num_pred_tokens=cfg.prompt_lookup_tokens)
        # A draft model needs logits of every position; 0.3.36 sizes its logit buffer from this argument
        # alone and otherwise fails the first long prompt ("could not broadcast ... into shape (0,)").
        self._llm = llama_cpp.Llama(model_path=str(path), n_ctx=cfg.n_ctx, n_threads=cfg.n_threads,
                                    n_threads_batch=cfg.n_threads, verbose=False, seed=0, draft_model=draft,
                                    logits_all=draft is not None)
        return BackendInfo(backend="local", backend_version=f"llama-cpp-python {llama_cpp.__version__}",
                           model_id=model_id, model_revision=revision, quantization=quant,
                           structured_output="gbnf from json schema",
                           decoding={"prompt_lookup_tokens": cfg.prompt_lookup_tokens} if draft else {},
                           extra={"n_threads": cfg.n_threads, "n_ctx": cfg.n_ctx, "file": os.fspath(path.name),
                                  "cpu_features": cpu_features})

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


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--probe":
        raise SystemExit("usage: python -m extract.backends.local --probe MODEL.gguf")
    _probe_main(sys.argv[2])
