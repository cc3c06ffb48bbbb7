"""Phantom sets and seeded draws of the science benchmark: test-set strata, pool rendering, mask-case draw."""

from __future__ import annotations

import json

import pytest

from train.science import draws


def test_tumor_diameters_match_the_rendered_phantom():
    from train.data.phantoms import PhantomConfig, generate_case

    config = PhantomConfig(n=4, seed=5, shape=(24, 24, 16))
    for i in range(4):
        truth = [max(t["true_diameters_mm"]) for t in generate_case(config, i).ground_truth["tumors"]]
        assert draws.tumor_diameters(config, i) == pytest.approx(truth, abs=0.01)


def test_strata_and_quotas():
    assert draws.test_stratum([], 5, 40, 20) == "free"
    assert draws.test_stratum([12.0, 19.9], 5, 40, 20) == "small"
    assert draws.test_stratum([12.0, 20.0], 5, 40, 20) == "large"
    assert draws.test_stratum([4.0, 30.0], 5, 40, 20) is None
    assert draws.test_stratum([41.0], 5, 40, 20) is None
    assert draws.test_quotas(60, 0.3, 0.5) == {"free": 18, "small": 21, "large": 21}
    assert draws.test_quotas(3, 0.3, 0.5) == {"free": 1, "small": 1, "large": 1}


def test_select_test_indices_fills_every_stratum(make_settings):
    settings = make_settings(test_cases=10)
    config = draws.test_phantom_config(settings)
    indices = draws.select_test_indices(settings)
    strata = [draws.test_stratum(draws.tumor_diameters(config, i), 5, 40, 20) for i in indices]
    assert len(set(indices)) == 10
    assert {s: strata.count(s) for s in set(strata)} == {"free": 3, "small": 4, "large": 3}


def test_pool_is_rendered_once_and_again_when_its_tumour_mix_changes(make_settings):
    settings = make_settings(pool_cases=3, pool_tumor_count_probabilities=(0.0, 0.0, 0.0, 1.0))
    pool = draws.ensure_pool(settings)
    truth = draws.read_truth(pool)
    assert len(truth) == 3 and all(len(row["tumors"]) == 3 for row in truth.values())
    stamp = (pool / "ground_truth.jsonl").stat().st_mtime_ns
    assert draws.ensure_pool(settings) == pool
    assert (pool / "ground_truth.jsonl").stat().st_mtime_ns == stamp  # same settings: reused

    (pool / "cases" / "stale_case").mkdir()
    tumour_free = settings.model_copy(update={"pool_tumor_count_probabilities": (1.0,)})
    draws.ensure_pool(tumour_free)
    assert all(row["tumors"] == [] for row in draws.read_truth(pool).values())
    assert not (pool / "cases" / "stale_case").exists()
    manifest = json.loads((pool / draws.SUBSET_MANIFEST).read_text())
    assert manifest["indices"] == [0, 1, 2] and manifest["generator"]["tumor_count_probabilities"] == [1.0]


def test_mask_case_ids_depend_on_seed_only():
    organs = {f"CT{i:02d}": frozenset({"liver"} if i % 2 else ()) for i in range(30)}
    a = draws.mask_case_ids(organs, 10, 0)
    assert len(a) == 10 and a <= set(organs)
    assert a == draws.mask_case_ids(dict(reversed(organs.items())), 10, 0)
    assert a != draws.mask_case_ids(organs, 10, 1)


def _plain_draw(organs: dict, n_mask: int, seed: int) -> set[str]:
    import numpy as np

    ordered = sorted(organs)
    return {ordered[i] for i in np.random.default_rng([seed, 8]).permutation(len(ordered))[:n_mask]}


def test_mask_case_ids_give_every_tumour_organ_a_mask_ct_and_keep_a_draw_that_does():
    # One pancreas tumour among 40 CTs: the plain draw of 5 misses it for most seeds.
    organs = {f"CT{i:02d}": frozenset({"liver"} if i < 20 else {"kidney"} if i < 39 else {"pancreas", "liver"})
              for i in range(40)}
    covered = uncovered = 0
    for seed in range(20):
        plain, chosen = _plain_draw(organs, 5, seed), draws.mask_case_ids(organs, 5, seed)
        assert len(chosen) == 5
        assert {o for c in chosen for o in organs[c]} == {"liver", "kidney", "pancreas"}
        if {o for c in plain for o in organs[c]} == {"liver", "kidney", "pancreas"}:
            assert chosen == plain
            covered += 1
        else:
            assert len(chosen - plain) <= 2 and "CT39" in chosen
            uncovered += 1
    assert covered and uncovered
    # Fewer mask CTs than tumour organs: one mask CT per organ, as far as they go.
    assert len(draws.mask_case_ids(organs, 1, 0)) == 1


def test_pool_tumour_organs_read_the_ground_truth_and_name_a_bad_line(tmp_path):
    (tmp_path / "ground_truth.jsonl").write_text(
        '{"ct_id": "A", "tumors": [{"organ": "liver"}, {"organ": "kidney"}]}\n{"ct_id": "B", "tumors": []}\n')
    assert draws.pool_tumour_organs(tmp_path) == {"A": {"liver", "kidney"}, "B": frozenset()}
    (tmp_path / "ground_truth.jsonl").write_text('{"ct_id": "A", "tumors": []}\n{"ct_id": "B"}\n')
    with pytest.raises(ValueError, match=r"ground_truth.jsonl, line 2"):
        draws.pool_tumour_organs(tmp_path)
