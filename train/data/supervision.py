"""From report records to supervised groups (pure functions, no I/O).

A *group* is a union of mask labels that the report talks about: the sub-segments hosting some tumours
(``liver_segment_7``), a side of a paired organ (``kidney_left``), a whole organ when a tumour's location is
unknown, or an organ the report declares lesion-free. Every tumour belongs to exactly one group; tumours whose
locations overlap are merged into one group (no one-hop unions, no duplicates). If any tumour of an organ has an
unknown location, the whole organ is one group, so no sub-segment is wrongly treated as lesion-free.
"""

from __future__ import annotations

import dataclasses
import math

from train.data.labels import ORGAN_PARTS
from train.data.records import CaseRecords, ReportedTumor

#: Report sub-segments that a mask may not carry, mapped onto the parts it usually does carry.
SUBSEGMENT_FALLBACK: dict[str, tuple[str, ...]] = {
    "pancreas_uncinate": ("pancreas_head",),
    "pancreas_neck": ("pancreas_head", "pancreas_body"),
}
_ATTENUATION_CODE = {"unknown": 0, "hypo": 1, "iso": 2, "hyper": 3}


@dataclasses.dataclass(frozen=True)
class TumorTarget:
    """One tumour as the losses see it (sizes in mm / mm3)."""

    diameters_mm: tuple[float, float, float]  # zeros when unknown
    volume_mm3: float
    size_known: bool
    attenuation: int  # train.losses.targets.Attenuation code


@dataclasses.dataclass(frozen=True)
class Group:
    """One supervised organ / sub-segment union.

    Attributes:
        organ: organ key; its lesion channel is ``<organ>_lesion``.
        labels: canonical label names whose union is the group's mask.
        state: 1 lesions reported, 2 lesion-free (train.losses.targets.GroupState).
        tumors: the group's tumours (empty for lesion-free groups).
        count: lesions reported in the group (0 for lesion-free).
        count_is_lower_bound: the count is "at least".
    """

    organ: str
    labels: tuple[str, ...]
    state: int
    tumors: tuple[TumorTarget, ...] = ()
    count: int = 0
    count_is_lower_bound: bool = False


@dataclasses.dataclass(frozen=True)
class CaseSupervision:
    """Groups of one report plus organs whose lesion channel is unknown inside the organ."""

    groups: tuple[Group, ...]
    unknown_organs: frozenset[str]  # equivocal, or lesions that cannot be located in this mask
    mentioned_organs: frozenset[str]  # organs the report says anything about


def tumor_target(entry: ReportedTumor) -> TumorTarget:
    """Diameters (1 -> sphere, 2 -> third is their mean) and ellipsoid volume pi*d1*d2*d3/6 in mm3."""
    d = list(entry.diameters_mm)
    if not d or min(d) <= 0:
        return TumorTarget((0.0, 0.0, 0.0), 0.0, False, _ATTENUATION_CODE.get(entry.attenuation, 0))
    axes = (d[0], d[0], d[0]) if len(d) == 1 else (d[0], d[1], (d[0] + d[1]) / 2) if len(d) == 2 else tuple(d[:3])
    volume = math.pi * axes[0] * axes[1] * axes[2] / 6.0
    return TumorTarget(tuple(float(a) for a in axes), volume, True, _ATTENUATION_CODE.get(entry.attenuation, 0))


def organ_labels(organ: str, available: frozenset[str]) -> tuple[str, ...]:
    """All available labels that make up an organ (the organ label and its parts)."""
    return tuple(n for n in (organ, *ORGAN_PARTS.get(organ, ())) if n in available)


def tumor_location(entry: ReportedTumor, available: frozenset[str]) -> frozenset[str] | None:
    """Mask labels hosting a tumour, or None when its location cannot be expressed in this mask."""
    if entry.side == "bilateral":
        return None
    labels: set[str] = set()
    for seg in entry.segments:
        if seg in available:
            labels.add(seg)
        elif all(f in available for f in SUBSEGMENT_FALLBACK.get(seg, ("-",))):
            labels.update(SUBSEGMENT_FALLBACK[seg])
        elif entry.side is None:
            return None
        # else: a part the mask lacks (e.g. a kidney pole): fall back on the side below
    if not labels and entry.side in ("left", "right"):
        sided = f"{entry.organ}_{entry.side}"
        if sided in available:
            labels.add(sided)
    return frozenset(labels) or None


def _merge_overlapping(locations: list[frozenset[str]]) -> list[list[int]]:
    """Indices of locations grouped into connected components of 'shares a label'."""
    parent = list(range(len(locations)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(locations)):
        for j in range(i):
            if locations[i] & locations[j]:
                parent[find(i)] = find(j)
    comps: dict[int, list[int]] = {}
    for i in range(len(locations)):
        comps.setdefault(find(i), []).append(i)
    return list(comps.values())


def _expand(entries: list[ReportedTumor], max_tumors: int) -> tuple[tuple[TumorTarget, ...], int, bool]:
    """Tumour targets of a group: a record of count n gives n tumours, sized only where the size applies."""
    tumors: list[TumorTarget] = []
    count, lower = 0, False
    for e in entries:
        count += e.count
        lower |= e.count_is_lower_bound
        sized = tumor_target(e)
        unsized = dataclasses.replace(sized, diameters_mm=(0.0, 0.0, 0.0), volume_mm3=0.0, size_known=False)
        for k in range(e.count):
            exact_size = e.count == 1 and not e.count_is_lower_bound
            tumors.append(sized if (exact_size or e.size_applies_to_each or k == 0) else unsized)
    return tuple(tumors[:max_tumors]), count, lower


def _organ_of_key(key: str) -> str:
    """Organ of an organ key or sided key (``kidney_left`` -> ``kidney``)."""
    return key.removesuffix("_left").removesuffix("_right")


def build_supervision(records: CaseRecords, available: frozenset[str], max_tumors: int = 16) -> CaseSupervision:
    """Turn one report's records into groups for a mask that provides the ``available`` labels.

    Args:
        records: what the report says.
        available: canonical label names present in (or derivable for) this case's organ mask.
        max_tumors: cap on tumour targets per group (the count stays exact).

    Returns:
        The case's groups and the organs whose lesion channel is unknown.
    """
    by_organ: dict[str, list[ReportedTumor]] = {}
    for t in records.tumors:
        by_organ.setdefault(t.organ, []).append(t)
    groups: list[Group] = []
    unknown: set[str] = {_organ_of_key(key) for key in records.equivocal}
    for organ, entries in by_organ.items():
        whole = organ_labels(organ, available)
        if not whole:
            unknown.add(organ)  # lesions in an organ the mask does not show
            continue
        locations = [tumor_location(e, available) for e in entries]
        if any(loc is None for loc in locations):
            components = [list(range(len(entries)))]
            locs = [frozenset(whole)]
        else:
            components = _merge_overlapping(locations)  # type: ignore[arg-type]
            locs = [frozenset().union(*(locations[i] for i in comp)) for comp in components]
        for comp, loc in zip(components, locs):
            tumors, count, lower = _expand([entries[i] for i in comp], max_tumors)
            groups.append(Group(organ, tuple(sorted(loc)), 1, tumors, count, lower))
    for key in sorted(records.lesion_free):
        organ = _organ_of_key(key)
        if organ in by_organ and key == organ:
            continue  # contradictory: lesions and lesion-free for the same whole organ
        labels = (key,) if key != organ else organ_labels(organ, available)
        taken = {lab for g in groups if g.organ == organ for lab in g.labels}
        labels = tuple(lab for lab in labels if lab in available and lab not in taken)
        if labels:
            groups.append(Group(organ, tuple(sorted(labels)), 2))
    mentioned = set(by_organ) | unknown | {_organ_of_key(k) for k in records.lesion_free}
    return CaseSupervision(tuple(groups), frozenset(unknown), frozenset(mentioned))
