"""Mask label vocabulary: label-name files, the canonical label index used in the cache, organ of a label.

A dataset's label-name file maps the integer values of its label maps to names (docs/data.md). Accepted forms
(JSON or YAML): ``{"0": "background", "1": "liver", ...}`` (value -> name), ``{"background": 0, "liver": 1}``
(name -> value), or an nnU-Net ``dataset.json`` whose ``labels`` entry is one of these.

Known names: ``background``, the organ keys and sub-segment keys of :mod:`schemas.vocab`, sided names of paired
organs (``kidney_left``), lesion names (``liver_lesion``) and the generic ``lesion`` (its organ is then read from
the organ mask).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from schemas.vocab import ORGAN_SUBSEGMENTS, ORGANS, PAIRED_ORGANS, SUBSEGMENTS, Organ

BACKGROUND = "background"
GENERIC_LESION = "lesion"
SIDES = ("left", "right")

#: Canonical label names; a cached label map stores the index into this tuple (uint8).
CANONICAL_LABELS: tuple[str, ...] = (
    BACKGROUND,
    *ORGANS,
    *SUBSEGMENTS,
    *(f"{organ.value}_{side}" for organ in sorted(PAIRED_ORGANS, key=lambda o: o.value) for side in SIDES),
)
CANONICAL_INDEX: dict[str, int] = {name: i for i, name in enumerate(CANONICAL_LABELS)}
LESION_LABELS: tuple[str, ...] = tuple(f"{organ}_lesion" for organ in ORGANS)
KNOWN_LABELS: frozenset[str] = frozenset(CANONICAL_LABELS) | frozenset(LESION_LABELS) | {GENERIC_LESION}



def _organ_parts() -> dict[str, tuple[str, ...]]:
    parts: dict[str, tuple[str, ...]] = {}
    for organ in Organ:
        subs = {s.value for s in ORGAN_SUBSEGMENTS.get(organ, ())}
        sided = [f"{organ.value}_{side}" for side in SIDES] if organ in PAIRED_ORGANS else []
        if subs or sided:
            parts[organ.value] = tuple(s for s in SUBSEGMENTS if s in subs) + tuple(sided)
    return parts


#: Sub-segment labels each organ's mask can carry (sided labels included for paired organs).
ORGAN_PARTS: dict[str, tuple[str, ...]] = _organ_parts()

assert len(CANONICAL_LABELS) < 256, "cached label maps are uint8"


class LabelFileError(ValueError):
    """A label-name file that cannot be used; the message names the file and the entry."""


def organ_of_label(name: str) -> str | None:
    """Organ key a label name belongs to (``liver_segment_7`` -> ``liver``); None for background / generic lesion."""
    if name in (BACKGROUND, GENERIC_LESION):
        return None
    if name in LESION_LABELS:
        return name.removesuffix("_lesion")
    if name in ORGANS:
        return name
    for organ, parts in ORGAN_PARTS.items():
        if name in parts:
            return organ
    return None


def load_label_names(path: str | Path) -> dict[int, str]:
    """Read a label-name file (JSON or YAML; forms in the module docstring).

    Returns:
        value -> name, always with 0 -> ``background``.

    Raises:
        LabelFileError: unreadable file, a non-integer value, a duplicate value or name.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raw = json.loads(text)
    except (OSError, ValueError) as exc:
        raise LabelFileError(f"{path}: cannot read label names: {exc}") from exc
    if isinstance(raw, dict) and isinstance(raw.get("labels"), dict):  # nnU-Net dataset.json
        raw = raw["labels"]
    if not isinstance(raw, dict) or not raw:
        raise LabelFileError(f"{path}: expected a mapping of label values to names")
    names: dict[int, str] = {}
    for key, value in raw.items():
        as_value, as_name = (key, value) if _is_int(key) else (value, key)
        if not _is_int(as_value) or not isinstance(as_name, str):
            raise LabelFileError(f"{path}: entry {key!r}: {value!r} is neither value->name nor name->value")
        v = int(as_value)
        if v in names:
            raise LabelFileError(f"{path}: label value {v} is given twice")
        if as_name in names.values():
            raise LabelFileError(f"{path}: label name {as_name!r} is given twice")
        if not 0 <= v <= 65535:
            raise LabelFileError(f"{path}: label value {v} is outside 0..65535")
        names[v] = as_name.strip()
    if names.setdefault(0, BACKGROUND) != BACKGROUND:
        raise LabelFileError(f"{path}: label value 0 must be background, got {names[0]!r}")
    return dict(sorted(names.items()))


def _is_int(x: object) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, int):
        return True
    return isinstance(x, str) and x.strip().isdigit()


def unknown_label_names(names: dict[int, str]) -> list[str]:
    """Names outside the known vocabulary (module docstring), sorted."""
    return sorted(n for n in names.values() if n not in KNOWN_LABELS)


def canonical_lut(names: dict[int, str]) -> np.ndarray:
    """Lookup table dataset value -> canonical index (uint8, length max value + 1); lesion names map to 0.

    Raises:
        LabelFileError: a name outside the vocabulary.
    """
    unknown = unknown_label_names(names)
    if unknown:
        raise LabelFileError(f"unknown label names {unknown}; known: organs, sub-segments, <organ>_<side>, <organ>_lesion")
    lut = np.zeros(max(names) + 1, np.uint8)
    for value, name in names.items():
        lut[value] = CANONICAL_INDEX.get(name, 0)
    return lut


def lesion_lut(names: dict[int, str]) -> np.ndarray:
    """Lookup table dataset value -> lesion code: 0 none, 255 generic lesion, else 1 + index of its organ key."""
    lut = np.zeros(max(names) + 1, np.uint8)
    for value, name in names.items():
        if name == GENERIC_LESION:
            lut[value] = 255
        elif name in LESION_LABELS:
            lut[value] = 1 + ORGANS.index(name.removesuffix("_lesion"))
    return lut


def lesion_code(organ: str) -> int:
    """Lesion code of an organ's lesions in a cached lesion map (1 + index of the organ key)."""
    return 1 + ORGANS.index(organ)
