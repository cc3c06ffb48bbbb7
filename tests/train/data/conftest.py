"""Shared tiny phantom set for the training-data tests (written once per session)."""

from __future__ import annotations

import pytest

from train.data.phantoms import PhantomConfig, write_phantom_set


@pytest.fixture(scope="session")
def phantom_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms")
    # Every case has at least one tumour so report groups exist.
    write_phantom_set(out, PhantomConfig(n=5, seed=21, shape=(56, 56, 40), tumor_count_probabilities=(0, 0.5, 0.3, 0.2),
                                         small_lesion_probability=0.0))
    return out
