"""Fixtures of the extraction tests (helpers live in llm_fakes.py, the HTTP fake in fake_server.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def store(tmp_path):
    from extract.store import Store

    with Store(tmp_path / "t.duckdb") as s:
        yield s
