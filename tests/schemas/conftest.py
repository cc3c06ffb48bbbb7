import json
from pathlib import Path

import pytest

GOLD = Path(__file__).resolve().parents[3] / "shared" / "gold" / "dev_cases.jsonl"


@pytest.fixture(scope="session")
def gold_cases() -> list[dict]:
    """The 40 hand-written dev cases that sit beside the repository (../shared), as CI lays them out."""
    if not GOLD.exists():
        pytest.skip(f"gold dev cases not found at {GOLD}")
    return [json.loads(line) for line in GOLD.read_text().splitlines() if line.strip()]
