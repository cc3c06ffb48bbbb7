"""On-disk cache of preprocessed volumes: orientation to RAS, optional resampling, canonical labels, sub-segments.

Each case is preprocessed once into ``CACHE/<key[:2]>/<key>/`` where ``key`` hashes the case's content hash, the
label-name files and the preprocessing settings. The folder holds ``image.npy`` (int16 HU), ``labels.npy`` (uint8
canonical labels, :mod:`train.data.labels`), optionally ``lesions.npy`` (uint8 lesion codes), ``foreground.npy``
(voxel indices for oversampling) and ``meta.json``.
Arrays are memory-mapped when read, so a 96^3 patch costs a small read whatever the number of cases; a build that
stops half-way resumes where it stopped (each entry is written to a temporary folder and renamed when complete).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from train.data import labels as L
from train.data.subsegments import derive_subsegments

_FORMAT_VERSION = 2  # 2: lesion values of an organ label map count as their organ


class PreprocessConfig(BaseModel):
    """Settings that change the cached arrays (part of the cache key).

    Attributes:
        target_spacing_mm: resample to this spacing (mm along the RAS axes); None keeps the native spacing.
        foreground_samples: at most this many lesion / organ voxel indices kept per case for oversampling.
    """

    target_spacing_mm: tuple[float, float, float] | None = None
    foreground_samples: int = 20_000


@dataclasses.dataclass(frozen=True)
class CaseFiles:
    """Input files of one case."""

    ct_id: str
    image_path: str
    organ_mask_path: str | None
    lesion_mask_path: str | None
    content_sha256: str
    organ_label_names: dict[int, str]
    lesion_label_names: dict[int, str] | None


@dataclasses.dataclass(frozen=True)
class CachedCase:
    """A preprocessed case: memory-mapped arrays plus metadata.

    Attributes:
        image: int16 HU (X, Y, Z) in RAS orientation.
        labels: uint8 canonical labels (X, Y, Z).
        lesions: uint8 lesion codes (X, Y, Z) or None when the case has no lesion mask.
        foreground: int32 (N, 3) voxel indices of lesion voxels (organ voxels when there is no lesion).
        meta: spacing_mm, affine, available labels, label boxes / voxel counts, intensity statistics.
    """

    image: np.ndarray
    labels: np.ndarray
    lesions: np.ndarray | None
    foreground: np.ndarray
    meta: dict

    @property
    def spacing_mm(self) -> np.ndarray:
        return np.asarray(self.meta["spacing_mm"], float)

    @functools.cached_property
    def foreground_by_lesion(self) -> list[np.ndarray]:
        """Indices into ``foreground`` per lesion code present (ascending code); empty without a lesion mask.

        Reading every foreground voxel's code is done once per opened case, not once per crop.
        """
        if self.lesions is None:
            return []
        codes = np.asarray(self.lesions[tuple(np.asarray(self.foreground).T)])
        return [np.flatnonzero(codes == code) for code in np.unique(codes[codes > 0])]


def cache_key(case: CaseFiles, config: PreprocessConfig) -> str:
    """Hex key of the preprocessed entry: content, label names and settings."""
    payload = json.dumps(
        {
            "v": _FORMAT_VERSION,
            # labels.npy holds indices into CANONICAL_LABELS, which an added organ renumbers
            "label_index": hashlib.sha256("\n".join(L.CANONICAL_LABELS).encode()).hexdigest()[:16],
            "content": case.content_sha256,
            "organ_labels": case.organ_label_names,
            "lesion_labels": case.lesion_label_names,
            "has_organ_mask": case.organ_mask_path is not None,
            "has_lesion_mask": case.lesion_mask_path is not None,
            "config": config.model_dump(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _to_ras(array: np.ndarray, affine: np.ndarray, spacing: tuple[float, float, float] | None, mode: str):
    """Reorient (and resample) one 3D array with MONAI; returns (array, affine)."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    t = MetaTensor(torch.from_numpy(np.ascontiguousarray(array))[None], affine=torch.as_tensor(affine, dtype=torch.float64))
    t = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(t)
    if spacing is not None:
        t = Spacing(pixdim=spacing, mode=mode, padding_mode="border" if mode == "nearest" else "zeros")(t)
    return t.array[0], np.asarray(t.affine, float)


def available_labels(organ_label_names: dict[int, str], derived: list[str]) -> list[str]:
    """Canonical labels this case's mask provides: declared names plus derived parts (lesion names excluded)."""
    declared = {n for n in organ_label_names.values() if n in L.CANONICAL_INDEX and n != L.BACKGROUND}
    return sorted(declared | set(derived))


def preprocess_case(case: CaseFiles, config: PreprocessConfig) -> tuple[dict[str, np.ndarray], dict]:
    """Load, canonicalise, derive sub-segments, reorient / resample, and summarise one case.

    Returns:
        Arrays (``image``, ``labels``, optional ``lesions``) and metadata for :func:`write_entry`.

    Raises:
        ValueError: unreadable file, or a label value not in the label-name file (naming the file).
    """
    import nibabel as nib

    img = nib.load(case.image_path)
    affine = np.asarray(img.affine, float)
    hu = np.asarray(img.dataobj, dtype=np.float32)
    if hu.ndim == 4 and hu.shape[-1] == 1:
        hu = hu[..., 0]
    labels = np.zeros(hu.shape, np.uint8)
    derived: list[str] = []
    if case.organ_mask_path:
        raw = np.asarray(nib.load(case.organ_mask_path).dataobj).astype(np.int64)
        labels = _apply_lut(raw, L.canonical_lut(case.organ_label_names), case.organ_mask_path)
        labels, derived = derive_subsegments(labels, affine)
    lesions = None
    if case.lesion_mask_path:
        raw = np.asarray(nib.load(case.lesion_mask_path).dataobj).astype(np.int64)
        names = case.lesion_label_names or case.organ_label_names
        lesions = _apply_lut(raw, L.lesion_lut(names), case.lesion_mask_path)
        lesions = _resolve_generic_lesions(lesions, labels)

    spacing = config.target_spacing_mm
    hu_ras, ras_affine = _to_ras(hu, affine, spacing, "bilinear")
    labels_ras, _ = _to_ras(labels, affine, spacing, "nearest")
    arrays = {
        "image": np.clip(np.rint(hu_ras), -1024, 3071).astype(np.int16),
        "labels": np.rint(labels_ras).astype(np.uint8),
    }
    if lesions is not None:
        arrays["lesions"] = np.rint(_to_ras(lesions, affine, spacing, "nearest")[0]).astype(np.uint8)
    meta, arrays["foreground"] = summarise(arrays, ras_affine, case, derived, config)
    return arrays, meta


def _apply_lut(raw: np.ndarray, lut: np.ndarray, path: str) -> np.ndarray:
    bad = (raw < 0) | (raw >= len(lut))
    if bad.any():
        values = sorted(set(np.unique(raw[bad]).tolist()))[:5]
        raise ValueError(f"{path}: label values {values} are not in the label-name file")
    return lut[raw]


def _resolve_generic_lesions(lesions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Generic lesion voxels (code 255) take the organ of the organ label at the voxel; outside organs: dropped."""
    generic = lesions == 255
    if not generic.any():
        return lesions
    organ_code = np.zeros(len(L.CANONICAL_LABELS), np.uint8)
    for i, name in enumerate(L.CANONICAL_LABELS):
        organ = L.organ_of_label(name)
        organ_code[i] = L.lesion_code(organ) if organ else 0
    out = lesions.copy()
    out[generic] = organ_code[labels[generic]]
    return out


def summarise(arrays: dict[str, np.ndarray], affine: np.ndarray, case: CaseFiles, derived: list[str],
              config: PreprocessConfig) -> tuple[dict, np.ndarray]:
    """Metadata the sampler needs without touching the arrays (boxes, voxel counts, statistics), and up to
    ``config.foreground_samples`` foreground voxel indices (N, 3) int32 for oversampling."""
    labels, image = arrays["labels"], arrays["image"]
    counts = np.bincount(labels.ravel(), minlength=len(L.CANONICAL_LABELS))
    boxes: dict[str, list[list[int]]] = {}
    present = [i for i in np.flatnonzero(counts) if i != 0]
    for i in present:
        idx = np.argwhere(labels == i)
        boxes[L.CANONICAL_LABELS[i]] = [idx.min(0).tolist(), idx.max(0).tolist()]
    body = image > -500
    values = image[body] if body.any() else image.ravel()
    rng = np.random.default_rng(int(hashlib.sha256(case.ct_id.encode()).hexdigest()[:8], 16))
    fg_source = arrays.get("lesions")
    if fg_source is None or not fg_source.any():
        fg_source = labels
    fg = np.argwhere(fg_source > 0)
    if len(fg) > config.foreground_samples:
        fg = fg[rng.choice(len(fg), config.foreground_samples, replace=False)]
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(0))
    return {
        "ct_id": case.ct_id,
        "shape": list(labels.shape),
        "spacing_mm": [float(s) for s in spacing],
        "affine": affine.tolist(),
        "available_labels": available_labels(case.organ_label_names, derived),
        "derived_labels": derived,
        "lesion_organs": _lesion_organs(case),
        "label_boxes": boxes,
        "label_voxels": {L.CANONICAL_LABELS[i]: int(counts[i]) for i in present},
        "hu_mean": float(values.mean()),
        "hu_std": float(values.std() + 1e-6),
    }, fg.astype(np.int32)


def _lesion_organs(case: CaseFiles) -> list[str]:
    """Organs whose lesions the lesion mask annotates ("all" for a generic lesion label)."""
    if not case.lesion_mask_path:
        return []
    names = (case.lesion_label_names or case.organ_label_names).values()
    if L.GENERIC_LESION in names:
        return ["all"]
    return sorted(n.removesuffix("_lesion") for n in names if n in L.LESION_LABELS)


def entry_dir(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / key[:2] / key


def write_entry(cache_dir: Path, key: str, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write one entry atomically (temporary folder, then rename)."""
    final = entry_dir(cache_dir, key)
    tmp = final.with_name(f".{key}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, array in arrays.items():
        np.save(tmp / f"{name}.npy", array)
    (tmp / "meta.json").write_text(json.dumps(meta))
    try:
        os.replace(tmp, final)
    except OSError:  # another worker finished it first
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def load_entry(cache_dir: Path, key: str) -> CachedCase | None:
    """Memory-map a complete entry; None when it is not cached yet."""
    d = entry_dir(cache_dir, key)
    if not (d / "meta.json").is_file():
        return None
    meta = json.loads((d / "meta.json").read_text())
    lesions = np.load(d / "lesions.npy", mmap_mode="r") if (d / "lesions.npy").is_file() else None
    return CachedCase(
        np.load(d / "image.npy", mmap_mode="r"),
        np.load(d / "labels.npy", mmap_mode="r"),
        lesions,
        np.load(d / "foreground.npy", mmap_mode="r"),
        meta,
    )


def ensure_cached(cache_dir: Path, case: CaseFiles, config: PreprocessConfig) -> CachedCase:
    """Return the cached case, preprocessing it first if needed (resumable)."""
    key = cache_key(case, config)
    cached = load_entry(cache_dir, key)
    if cached is None:
        arrays, meta = preprocess_case(case, config)
        write_entry(cache_dir, key, arrays, meta)
        cached = load_entry(cache_dir, key)
    assert cached is not None
    return cached
