"""The embedded model file: streamed join of package parts, digest check, verification note, clear errors."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import replace

import pytest

from extract.model import MODELS, ModelError, ensure_model, find_parts, is_verified, join_parts, verify_file


def _parts(tmp_path, chunks: list[bytes]):
    paths = []
    for i, chunk in enumerate(chunks, start=1):
        p = tmp_path / f"part{i:02d}.bin"
        p.write_bytes(chunk)
        paths.append(p)
    return paths


def test_join_concatenates_in_order_and_verifies(tmp_path):
    chunks = [b"GGUF" + bytes(range(200)), b"middle" * 1000, b"end"]
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    dest = join_parts(_parts(tmp_path, chunks), tmp_path / "cache" / "m.gguf", digest)
    assert dest.read_bytes() == b"".join(chunks)
    assert is_verified(dest, digest)
    verify_file(dest, digest)  # uses the note, no error
    dest.write_bytes(b"tampered")  # size and mtime change: the note no longer vouches for the file
    assert not is_verified(dest, digest)
    with pytest.raises(ModelError, match="does not match the pinned"):
        verify_file(dest, digest)


def test_join_with_wrong_digest_leaves_nothing(tmp_path):
    dest = tmp_path / "m.gguf"
    with pytest.raises(ModelError, match="expected"):
        join_parts(_parts(tmp_path, [b"a", b"b"]), dest, "0" * 64)
    assert not dest.exists() and not list(tmp_path.glob(".m.gguf*"))


def test_parts_are_found_from_installed_packages(tmp_path, monkeypatch):
    for i in (1, 2):
        pkg = tmp_path / f"fake_model_part{i}" / "data"
        pkg.mkdir(parents=True)
        (pkg.parent / "__init__.py").write_text("")
        (pkg / f"part{i:02d}.bin").write_bytes(b"x" * i)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = replace(MODELS["qwen2.5-coder-0.5b"], part_modules=("fake_model_part1", "fake_model_part2"))
    assert [p.name for p in find_parts(spec)] == ["part01.bin", "part02.bin"]
    missing = replace(spec, part_modules=("fake_model_part1", "no_such_model_part9"))
    with pytest.raises(ModelError, match="no_such_model_part9 is not installed"):
        find_parts(missing)
    for name in ("fake_model_part1", "fake_model_part2"):
        sys.modules.pop(name, None)


def test_unknown_model_key_is_refused(tmp_path):
    with pytest.raises(ModelError, match="unknown embedded model"):
        ensure_model("gpt-17", cache=tmp_path)
