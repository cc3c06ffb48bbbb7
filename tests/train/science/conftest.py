from __future__ import annotations

from pathlib import Path

import pytest

from train.science.protocol import ScienceSettings

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def make_settings(tmp_path):
    """ScienceSettings of a tiny benchmark under tmp_path, with keyword overrides."""

    def make(**kw) -> ScienceSettings:
        base = dict(scale="test", train_config=REPO / "configs/science/cpu.yaml", work_dir=tmp_path / "work",
                    results=tmp_path / "out" / "results.json", pool_cases=4, mask_cases=2, test_cases=3,
                    phantom_shape=(32, 32, 24))
        return ScienceSettings(**{**base, **kw})

    return make
