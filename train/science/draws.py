"""The science benchmark's phantom sets and seeded draws.

The training pool is phantoms ``0 .. pool_cases - 1`` of seed ``pool_seed``. The held-out test set is stratified:
``test_free_fraction`` tumour-free, tumours 5-40 mm, ``test_small_fraction`` of the tumour-bearing CTs with the
largest tumour below ``small_mm``; candidates are taken in index order until each stratum is full, so the set is
reproducible. Per seed, :func:`mask_case_ids` draws the pool CTs that keep their voxel masks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from train.science.protocol import ScienceSettings


def tumor_diameters(config: Any, index: int) -> list[float]:
    """Largest true diameter (mm) of each tumour of phantom ``index``, without rendering it.

    Draws from the same random stream as :func:`train.data.phantoms.generate_case` (anatomy stream, then count,
    then tumours), so it agrees with the rendered case's ``true_diameters_mm`` (tested).
    """
    from train.data.phantoms import sample_anatomy, sample_tumors

    rng = np.random.default_rng([config.seed, index, 0])
    anatomy = sample_anatomy(rng)
    count = int(rng.choice(len(config.tumor_count_probabilities), p=config.tumor_count_probabilities))
    return [float(t.diameters_mm[0]) for t in sample_tumors(rng, anatomy, count, config.small_lesion_probability)]


def test_stratum(diameters_mm: list[float], min_mm: float, max_mm: float, small_mm: float) -> str | None:
    """``free``, ``small`` (largest < small_mm) or ``large``; None when a tumour is outside [min_mm, max_mm]."""
    if not diameters_mm:
        return "free"
    if min(diameters_mm) < min_mm or max(diameters_mm) > max_mm:
        return None
    return "small" if max(diameters_mm) < small_mm else "large"


def test_quotas(n: int, free_fraction: float, small_fraction: float) -> dict[str, int]:
    """Cases per stratum for a test set of ``n`` CTs."""
    free = round(n * free_fraction)
    small = round((n - free) * small_fraction)
    return {"free": free, "small": small, "large": n - free - small}


def select_test_indices(settings: ScienceSettings, max_candidates_factor: int = 40) -> list[int]:
    """Phantom indices of the test set (seed ``test_seed``) filling the stratum quotas in index order.

    Raises:
        RuntimeError: the quotas cannot be met within ``max_candidates_factor * test_cases`` candidates.
    """
    config = test_phantom_config(settings)
    need = test_quotas(settings.test_cases, settings.test_free_fraction, settings.test_small_fraction)
    chosen: list[int] = []
    for index in range(max_candidates_factor * settings.test_cases):
        stratum = test_stratum(tumor_diameters(config, index), settings.test_min_mm, settings.test_max_mm,
                               settings.small_mm)
        if stratum is not None and need[stratum] > 0:
            need[stratum] -= 1
            chosen.append(index)
            if not any(need.values()):
                return chosen
    raise RuntimeError(f"test set: quotas not met after {max_candidates_factor * settings.test_cases} candidates "
                       f"(missing {need})")


def test_phantom_config(settings: ScienceSettings):
    """Test phantoms: no 'too small to characterise' tumours (all are 5 mm or more by construction)."""
    from train.data.phantoms import PhantomConfig

    return PhantomConfig(n=max(1, settings.test_cases), seed=settings.test_seed, shape=settings.phantom_shape,
                         small_lesion_probability=0.0)


SUBSET_MANIFEST = "subset.json"


def subset_manifest(config: Any, indices: list[int]) -> dict:
    """What a rendered phantom subset was made from: the generator settings and the phantom indices."""
    return {"generator": config.model_dump(mode="json"), "indices": list(indices)}


def ensure_case_subset(out: Path, config: Any, indices: list[int]) -> Path:
    """Render the subset unless ``out`` already holds exactly it (checked against its ``subset.json``)."""
    from train.data.phantoms import write_phantom_set

    manifest = subset_manifest(config, indices)
    path = out / SUBSET_MANIFEST
    if path.is_file() and json.loads(path.read_text()) == manifest and (out / "ground_truth.jsonl").is_file():
        return out
    if out.exists():
        shutil.rmtree(out)  # another pool or test set: its cases must not linger
    write_phantom_set(out, config, indices=indices)
    path.write_text(json.dumps(manifest, sort_keys=True) + "\n")
    return out


def ensure_pool(settings: ScienceSettings) -> Path:
    """The training pool (seed ``pool_seed``, tumour mix ``pool_tumor_count_probabilities``, tiny unsized
    tumours included)."""
    from train.data.phantoms import PhantomConfig

    config = PhantomConfig(n=settings.pool_cases, seed=settings.pool_seed, shape=settings.phantom_shape,
                           tumor_count_probabilities=settings.pool_tumor_count_probabilities)
    return ensure_case_subset(settings.work_dir / "pool", config, list(range(settings.pool_cases)))


def ensure_test(settings: ScienceSettings) -> Path:
    """The stratified held-out test set."""
    return ensure_case_subset(settings.work_dir / "test", test_phantom_config(settings), select_test_indices(settings))


def read_truth(root: Path) -> dict[str, dict]:
    """ct_id -> ground-truth row of a phantom set.

    Raises:
        ValueError: a line that is not JSON or lacks ``ct_id`` or a tumour's ``organ``, naming file and line.
    """
    path = root / "ground_truth.jsonl"
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if any("organ" not in t for t in row["tumors"]):
                raise KeyError("organ")
            out[row["ct_id"]] = row
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}, line {n}: not a ground-truth record ({exc!r})") from exc
    return out


def mask_case_ids(tumour_organs: dict[str, frozenset[str]], n_mask: int, seed: int) -> set[str]:
    """The pool CTs that keep their masks for ``seed`` (same for every arm of that seed).

    A seeded draw, stratified so that every organ with a tumour in the pool has a mask CT with a tumour there
    (while ``n_mask`` allows). Reports refine a tumour class the masks introduce; with no voxel example of a
    pancreas tumour the report losses taught the pancreas-lesion channel to mark the whole organ (docs/science.md,
    seed 2 of the sixth run). A draw that already covers every organ is kept as it is.

    Args:
        tumour_organs: ct_id -> organs holding a tumour in that CT (empty for a tumour-free CT).
    """
    rng = np.random.default_rng([seed, 8])
    ordered = sorted(tumour_organs)
    drawn = [ordered[i] for i in rng.permutation(len(ordered))]
    chosen: list[str] = []
    for organ in sorted({o for organs in tumour_organs.values() for o in organs}):
        if len(chosen) < n_mask and not any(organ in tumour_organs[c] for c in chosen):
            chosen.append(next(c for c in drawn if organ in tumour_organs[c]))
    return {*chosen, *[c for c in drawn if c not in chosen][:n_mask - len(chosen)]}


def pool_tumour_organs(pool: Path) -> dict[str, frozenset[str]]:
    """ct_id -> organs holding a tumour, from the pool's ``ground_truth.jsonl``."""
    return {ct: frozenset(t["organ"] for t in row["tumors"]) for ct, row in read_truth(pool).items()}
