"""LLM backends behind one interface (`extract.backends.base.Backend`), and `build_backend` to pick one by name.

Each backend module is imported only when built, so a missing optional runtime (vllm, llama-cpp) matters only
to the backend that needs it.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from extract.backends.base import Backend


class BackendName(str, Enum):
    openai = "openai"
    vllm = "vllm"
    local = "local"


class BackendConfigError(ValueError):
    """The settings cannot build the named backend; `setting` names the one at fault (`model`, `backend`)."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


def build_backend(backend: BackendName | str, *, urls: list[str], model: Optional[str], model_path: Optional[Path],
                  model_revision: str, quantization: str, concurrency: int, timeout_s: float, retries: int,
                  threads: int) -> Backend:
    """The backend `backend` (openai, vllm or local) configured from these settings; not started.

    Raises:
        BackendConfigError: an unknown backend name, an --llm-url that is not an http(s) URL, vllm without a
            model, or a local model that does not exist (not a GGUF file, an unknown model key).
    """
    try:
        backend = BackendName(backend)
    except ValueError:
        raise BackendConfigError(f"unknown backend {backend!r} (expected local, openai or vllm)",
                                 setting="backend") from None
    if backend is BackendName.openai:
        from extract.backends.openai import OpenAIBackend, OpenAIConfig

        for url in urls:  # a typo would otherwise cost the retries of every report before saying anything
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise BackendConfigError(f"{url!r} is not an http(s) URL; give the server's base URL, e.g. "
                                         "http://127.0.0.1:8000/v1", setting="llm-url")

        return OpenAIBackend(OpenAIConfig(urls=urls or ["http://127.0.0.1:8000/v1"], model=model,
                                          model_revision=model_revision, quantization=quantization,
                                          concurrency=concurrency, timeout_s=timeout_s, retries=retries))
    if backend is BackendName.vllm:
        from extract.backends.vllm import VllmBackend, VllmConfig

        if not model:
            raise BackendConfigError("--model is required with --backend vllm", setting="model")
        return VllmBackend(VllmConfig(model=model, model_revision=model_revision, quantization=quantization))
    from extract.backends.local import LocalBackend, LocalConfig, gguf_problem
    from extract.model import DEFAULT_MODEL, MODELS

    # Checked now, before the command does anything else (`rsuper demo` ingests first); start() checks again.
    if model_path is not None and (problem := gguf_problem(model_path)) is not None:
        raise BackendConfigError(problem, setting="model-path")
    if model_path is None and model is not None and model not in MODELS:
        raise BackendConfigError(f"unknown embedded model {model!r}; known: {', '.join(MODELS)} "
                                 "(or give --model-path)", setting="model")
    return LocalBackend(LocalConfig(model=model or DEFAULT_MODEL, model_path=model_path, n_threads=threads))
