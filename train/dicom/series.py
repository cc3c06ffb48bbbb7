"""Group slice headers into studies and series, check every series, and choose one CT series per study.

The rule is :class:`train.dicom.config.SeriesRule`; every series that is not chosen keeps the reason why, so the
import can record, per study, what was chosen and what was skipped.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

from train.dicom.config import SeriesRule
from train.dicom.geometry import SeriesGeometry, SeriesProblem, series_geometry
from train.dicom.headers import SliceHeader


@dataclasses.dataclass(frozen=True)
class Grouped:
    """Studies (StudyInstanceUID -> SeriesInstanceUID -> slices) and the files dropped as repeats."""

    studies: dict[str, dict[str, list[SliceHeader]]]
    repeated_files: list[str]


@dataclasses.dataclass(frozen=True, eq=False)
class SeriesVerdict:
    """One series after the checks: usable (``reason`` None, ``geometry`` set) or skipped with a reason.

    Attributes:
        phase_rank: 0 preferred keyword, 1 contrast given, 2 neither, 3 avoided keyword (lower is better).
        phase_note: which word or tag gave the rank.
        path: a file of the series that shows the problem (or its first file).
    """

    series_uid: str
    series_number: int | None
    description: str
    n_files: int
    reason: str | None
    path: str
    geometry: SeriesGeometry | None = None
    phase_rank: int = 2
    phase_note: str = ""

    @property
    def label(self) -> str:
        number = self.series_number if self.series_number is not None else "?"
        return f"series {number} {self.description!r}" if self.description else f"series {number}"

    def rank_key(self) -> tuple:
        assert self.geometry is not None
        number = self.series_number if self.series_number is not None else 1 << 30
        return (self.phase_rank, round(self.geometry.slice_step_mm, 3), -self.n_files, number, self.series_uid)


@dataclasses.dataclass(frozen=True)
class StudyChoice:
    """The series chosen for one study (None when nothing is usable), why, and every other series with its reason."""

    study_uid: str
    chosen: SeriesVerdict | None
    why: str
    skipped: list[SeriesVerdict]


def group(headers: Iterable[SliceHeader]) -> Grouped:
    """Group by study and series; a SOPInstanceUID seen twice (the same slice exported twice) keeps its first file."""
    studies: dict[str, dict[str, list[SliceHeader]]] = {}
    seen: set[str] = set()
    repeated: list[str] = []
    for h in sorted(headers, key=lambda h: h.path):
        if h.sop_uid in seen:
            repeated.append(h.path)
            continue
        seen.add(h.sop_uid)
        studies.setdefault(h.study_uid, {}).setdefault(h.series_uid, []).append(h)
    return Grouped(studies, repeated)


def _word(keyword: str, text: str) -> bool:
    return re.search(rf"(?<![a-z0-9]){re.escape(keyword)}(?![a-z0-9])", text) is not None


def phase(slices: Sequence[SliceHeader], rule: SeriesRule) -> tuple[int, str]:
    """(phase rank, note) of a series from its SeriesDescription words and contrast tags."""
    text = slices[0].series_description.lower()
    avoided = [k for k in rule.avoid_keywords if _word(k, text)]
    if avoided:
        return 3, f"avoided keyword {avoided[0]!r} in SeriesDescription"
    preferred = [k for k in rule.preferred_keywords if _word(k, text)]
    if preferred:
        return 0, f"portal-venous keyword {preferred[0]!r} in SeriesDescription"
    if any(s.contrast_agent for s in slices):
        return 1, "contrast given (ContrastBolusAgent set), phase not named"
    return 2, "no phase named, no contrast tag"


def _sop_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name
    return f"{name} ({uid})" if name != uid else uid


def check_series(slices: Sequence[SliceHeader], rule: SeriesRule) -> SeriesVerdict:
    """Check one series against the rule (modality, SOP class, image type, slice count, geometry, thickness)."""
    first = slices[0]
    base = dict(series_uid=first.series_uid, series_number=first.series_number,
                description=first.series_description, n_files=len(slices), path=first.path)

    def skip(reason: str, path: str | None = None) -> SeriesVerdict:
        return SeriesVerdict(**{**base, "path": path or first.path}, reason=reason)

    modalities = sorted({s.modality or "(none)" for s in slices})
    if modalities != [rule.modality]:
        return skip(f"modality {'/'.join(modalities)}, not {rule.modality}")
    odd = next((s for s in slices if s.sop_class not in rule.sop_classes), None)
    if odd is not None:
        return skip(f"SOP class {_sop_name(odd.sop_class)} is not one of {[_sop_name(u) for u in rule.sop_classes]}",
                    odd.path)
    odd = next((s for s in slices if set(s.image_type) & set(rule.skip_image_types)), None)
    if odd is not None:
        return skip(f"ImageType {'/'.join(odd.image_type)}: {sorted(set(odd.image_type) & set(rule.skip_image_types))} "
                    "is skipped (a scout)", odd.path)
    if len(slices) < rule.min_slices:
        return skip(f"{len(slices)} slices, fewer than min_slices {rule.min_slices}")
    try:
        geometry = series_geometry(slices, rule)
    except SeriesProblem as problem:
        return skip(problem.reason, problem.path)
    thickness = max((s.slice_thickness for s in slices if s.slice_thickness), default=geometry.slice_step_mm)
    if thickness > rule.max_slice_thickness_mm:
        return skip(f"slice thickness {thickness:g} mm, over max_slice_thickness_mm {rule.max_slice_thickness_mm:g}")
    rank, note = phase(slices, rule)
    return SeriesVerdict(**base, reason=None, geometry=geometry, phase_rank=rank, phase_note=note)


def choose_series(study_uid: str, series: dict[str, list[SliceHeader]], rule: SeriesRule) -> StudyChoice:
    """Check every series of a study and choose one (ranking in :class:`SeriesRule`); deterministic."""
    verdicts = sorted((check_series(slices, rule) for slices in series.values()),
                      key=lambda v: (v.series_number if v.series_number is not None else 1 << 30, v.series_uid))
    usable = sorted((v for v in verdicts if v.reason is None), key=SeriesVerdict.rank_key)
    skipped = [v for v in verdicts if v.reason is not None]
    if not usable:
        why = "no usable series: " + "; ".join(f"{v.label}: {v.reason}" for v in skipped)
        return StudyChoice(study_uid, None, why, skipped)
    chosen, *others = usable
    g = chosen.geometry
    why = f"{chosen.phase_note}; {g.slice_step_mm:.2f} mm slice step, {chosen.n_files} slices"
    if others:
        why += f"; ranked first of {len(usable)} usable series (phase, then thinnest, then most slices)"
    for v in others:
        skipped.append(dataclasses.replace(
            v, reason=f"usable but ranked below {chosen.label}: {v.phase_note}; "
                      f"{v.geometry.slice_step_mm:.2f} mm slice step, {v.n_files} slices"))
    return StudyChoice(study_uid, chosen, why, skipped)
