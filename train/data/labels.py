"""Mask label vocabulary: label-name files, the canonical label index used in the cache, organ of a label.

A dataset's label-name file maps the integer values of its label maps to names (docs/data.md). Accepted forms
(JSON or YAML): ``{"0": "background", "1": "liver", ...}`` (value -> name), ``{"background": 0, "liver": 1}``
(name -> value), or an nnU-Net v2 ``dataset.json`` whose ``labels`` entry is one of these (a one-element list
value counts as its element).

Names are read as users have them and resolved through the alias table of :mod:`schemas.label_aliases`
(TotalSegmentator, AbdomenAtlas and dataset spellings, lesion names such as ``liver_tumor``): the resolved names
are background, organ keys, sub-segment keys, sided names of paired organs (``kidney_left``), lesion names
(``liver_lesion``) and the generic ``lesion`` (its organ is then read from the organ mask, or is the file's only
organ). Structures with no organ key (vessels, muscles...) read as background and are listed as ignored.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from schemas.label_aliases import (
    BACKGROUND, GENERIC_LESION, LESION_LABELS, MASK_LABELS, OWN_LABELS, SIDES, normalise_label_name, organ_of_own_label,
    resolve_label_name,
)
from schemas.vocab import ORGAN_SUBSEGMENTS, ORGANS, PAIRED_ORGANS, SUBSEGMENTS, Organ

#: Canonical label names; a cached label map stores the index into this tuple (uint8).
CANONICAL_LABELS: tuple[str, ...] = MASK_LABELS
CANONICAL_INDEX: dict[str, int] = {name: i for i, name in enumerate(CANONICAL_LABELS)}
KNOWN_LABELS: frozenset[str] = OWN_LABELS


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
    return organ_of_own_label(name)


@dataclasses.dataclass(frozen=True)
class LabelNames:
    """A label-name table as written and as resolved (:mod:`schemas.label_aliases`).

    Attributes:
        source: where the names come from (a file path), for messages.
        raw: value -> name as written.
        names: value -> our name; ignored structures read as ``background``; unknown names stay as written.
        ignored: value -> name as written, for structures with no organ key.
        unknown: names as written that resolve to nothing, sorted.
    """

    source: str
    raw: dict[int, str]
    names: dict[int, str]
    ignored: dict[int, str]
    unknown: list[str]

    def error(self) -> str | None:
        """One line naming the source and its unknown names; None when every name is known."""
        if not self.unknown:
            return None
        return (f"{self.source}: unknown label names {self.unknown}: not an organ, sub-segment, <organ>_<side> or "
                f"lesion name and not in the alias table (schemas/label_aliases.py); rename them or add an alias")


def resolve_label_names(raw: dict[int, str], source: str) -> LabelNames:
    """Resolve a value -> name table through the alias table.

    A generic lesion name (``tumor``, ``cancer``) in a table that names exactly one organ is that organ's lesion
    (MSD liver: ``liver`` + ``cancer``; KiTS: ``kidney`` + ``tumor`` + ``cyst``).
    """
    names: dict[int, str] = {}
    ignored: dict[int, str] = {}
    unknown: list[str] = []
    for value, name in raw.items():
        alias = resolve_label_name(name)
        if alias is None:
            names[value] = name
            unknown.append(name)
        elif alias.label is None:
            names[value] = BACKGROUND
            ignored[value] = name
        else:
            names[value] = alias.label
    organs = {organ_of_own_label(n) for n in names.values() if n not in LESION_LABELS} - {None}
    if len(organs) == 1:
        (organ,) = organs
        names = {v: f"{organ}_lesion" if n == GENERIC_LESION else n for v, n in names.items()}
    return LabelNames(source, dict(raw), names, ignored, sorted(unknown))


def read_label_file(path: str | Path) -> LabelNames:
    """Read a label-name file (JSON or YAML; forms in the module docstring) and resolve its names.

    Raises:
        LabelFileError: unreadable file, a non-integer value, a region (several values for one name), a duplicate
            value or name, value 0 not background.
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
        if isinstance(value, list):
            if len(value) != 1:  # nnU-Net region-based training: a union of labels, not one voxel class
                raise LabelFileError(f"{path}: entry {key!r}: {value!r} is a region of several labels; give each "
                                     f"voxel value its own name")
            value = value[0]
        as_value, as_name = (key, value) if _is_int(key) else (value, key)
        if not _is_int(as_value) or not isinstance(as_name, str):
            raise LabelFileError(f"{path}: entry {key!r}: {value!r} is neither value->name nor name->value")
        v = int(as_value)
        if v in names:
            raise LabelFileError(f"{path}: label value {v} is given twice")
        if as_name.strip() in names.values():
            raise LabelFileError(f"{path}: label name {as_name!r} is given twice")
        if not 0 <= v <= 65535:
            raise LabelFileError(f"{path}: label value {v} is outside 0..65535")
        names[v] = as_name.strip()
    if normalise_label_name(names.setdefault(0, BACKGROUND)) != BACKGROUND:
        raise LabelFileError(f"{path}: label value 0 must be background, got {names[0]!r}")
    names[0] = BACKGROUND
    return resolve_label_names(dict(sorted(names.items())), str(path))


def load_label_names(path: str | Path) -> dict[int, str]:
    """Value -> our label name from a label-name file (:func:`read_label_file`), always with 0 -> ``background``.

    Unknown names are kept as written: :func:`canonical_lut` and `rsuper cases` refuse them, naming them.
    """
    return read_label_file(path).names


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
    """Lookup table dataset value -> canonical index (uint8, length max value + 1).

    ``<organ>_lesion`` maps to its organ: a lesion lies inside its organ, so a label map that marks lesion voxels
    with a lesion value (nnU-Net style) still gives the whole organ. The generic ``lesion`` maps to 0.

    Raises:
        LabelFileError: a name outside the vocabulary.
    """
    unknown = unknown_label_names(names)
    if unknown:
        raise LabelFileError(f"unknown label names {unknown}; known: organs, sub-segments, <organ>_<side>, "
                             f"<organ>_lesion and the aliases of schemas/label_aliases.py")
    lut = np.zeros(max(names) + 1, np.uint8)
    for value, name in names.items():
        lut[value] = CANONICAL_INDEX.get(organ_of_own_label(name) if name in LESION_LABELS else name, 0)
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
