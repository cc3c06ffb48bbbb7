"""Compare one CT's predicted lesions with its report records: findings, their weights, the disagreement score.

Per organ with a lesion channel:

* organ reported lesion-free (or one side of a paired organ): every predicted lesion there is
  ``lesion_in_normal_organ``;
* organ with reported tumours: reported lesions (a group of ``count`` lesions counts ``count`` times; its diameters
  belong to its largest, or to each when the report says so) are matched one-to-one to predicted lesions by
  :func:`scipy.optimize.linear_sum_assignment` on a cost of size ratio (|log|) plus location and side
  disagreement. Unmatched reported lesions are ``reported_not_found``; a predicted count other than the reported
  one (or below a lower bound, "at least 3") is ``count_mismatch``, weighed by the predicted lesions the report
  does not list (each by its size; those it lists and the model lacks are weighed as ``reported_not_found``);
  matched pairs can be a ``size_mismatch``, a
  ``likely_unit_error`` (about ten times off, or larger than the organ), a ``location_mismatch`` (another
  sub-segment or side) or an ``attenuation_mismatch``; a reported size no CT of this grid could show (larger
  than the organ, over twice the sub-segments it is reported in, smaller than one voxel) is a
  ``likely_unit_error`` whether or not a lesion matches it;
* across organs: a reported lesion not found in its organ and a lesion of its size predicted in an organ the report
  calls normal are one ``lesion_in_other_organ`` (the record's organ is likely wrong) instead of two findings;
* equivocal or unmentioned organs are not scored;
* predicted components mostly outside their organ on the organ map (``AuditConfig.min_organ_share``) are left
  out: a lesion channel firing in air or in another organ says nothing about the report.

A CT's score is its heaviest finding plus a fraction of the others (``AuditConfig.other_findings_factor``).

Pure functions on :class:`train.review.lesions.PredictedLesion` and :class:`train.data.records.CaseRecords`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from schemas.audit import AuditReason, CTAudit
from train.data.records import CaseRecords, ReportedTumor
from train.review.config import AuditConfig
from train.review.lesions import PredictedLesion, region_key

_UNKNOWN_SIZE_COST = 0.7  # |log| of a factor 2: an unsized report lesion takes any predicted one, not a sized one's
_PLACE_COST = 1.0  # another sub-segment or side costs as much as a factor e in size


@dataclasses.dataclass(frozen=True)
class ReportedLesion:
    """One lesion as the report states it (a group record gives ``count`` of these)."""

    organ: str
    diameter_mm: float | None
    segments: tuple[str, ...] = ()
    side: str | None = None
    attenuation: str = "unknown"


@dataclasses.dataclass(frozen=True)
class Finding:
    """One disagreement: its kind, organ, weight in the score and a line with the figures (no report text); a
    lesion the report states and the model lacks, or one the model predicts where the report says none, is kept
    for the cross-organ match."""

    reason: AuditReason
    organ: str
    weight: float
    text: str
    reported: ReportedLesion | None = None
    predicted: PredictedLesion | None = None


def reported_lesions(tumors: Sequence[ReportedTumor]) -> list[ReportedLesion]:
    """Reported tumours as single lesions: a group of ``count`` gives ``count`` lesions, the diameters going to the
    first (the largest) unless the report gives them for each."""
    out = []
    for t in tumors:
        size = max(t.diameters_mm) if t.diameters_mm else None
        side = t.side if t.side in ("left", "right") else None
        for i in range(max(1, t.count)):
            out.append(ReportedLesion(t.organ, size if i == 0 or t.size_applies_to_each else None, t.segments, side,
                                      t.attenuation))
    return out


def _place_cost(r: ReportedLesion, p: PredictedLesion) -> float:
    cost = 0.0
    if r.segments and p.segment is not None and p.segment not in r.segments:
        cost += _PLACE_COST
    if r.side and p.side and r.side != p.side:
        cost += _PLACE_COST
    return cost


def match_lesions(reported: Sequence[ReportedLesion], predicted: Sequence[PredictedLesion]) -> list[tuple[int, int]]:
    """(reported index, predicted index) pairs of the one-to-one matching of least total cost: |log| size ratio
    (:data:`_UNKNOWN_SIZE_COST` when the report gives no size) plus :data:`_PLACE_COST` per sub-segment or side
    disagreement. min(len(reported), len(predicted)) pairs."""
    if not reported or not predicted:
        return []
    cost = np.zeros((len(reported), len(predicted)))
    for i, r in enumerate(reported):
        for j, p in enumerate(predicted):
            size = (abs(math.log(r.diameter_mm / p.diameter_mm)) if r.diameter_mm and p.diameter_mm
                    else _UNKNOWN_SIZE_COST)
            cost[i, j] = size + _place_cost(r, p)
    rows, cols = linear_sum_assignment(cost)
    return sorted(zip(rows.tolist(), cols.tolist()))


def _where(p: PredictedLesion) -> str:
    parts = [x for x in (p.segment, p.side) if x]
    return f" ({', '.join(parts)})" if parts else ""


def _scale(diameter_mm: float | None, config: AuditConfig) -> float:
    """Weight factor of a lesion finding by size: full from ``full_weight_mm``, at least a quarter. An unsized
    lesion gets the quarter: reports leave unmeasured mostly what is too small to measure, which a model may miss
    at its detection threshold without anything being wrong."""
    if diameter_mm is None:
        return 0.25
    return min(1.0, max(0.25, diameter_mm / config.full_weight_mm))


def _implausible_size(r: ReportedLesion, extents_mm: Mapping[str, float], voxel_mm: float | None,
                      config: AuditConfig) -> str:
    """Why no CT of this grid could show ``r`` at its size ("" when it could): larger than the organ, far larger than
    the sub-segments it is reported in (``extents_mm``: :func:`organ_findings`), or smaller than one voxel of the
    grid's finest spacing ``voxel_mm`` (nothing that small can be measured)."""
    diameter_mm = r.diameter_mm
    organ_extent_mm = extents_mm.get(r.organ)
    if organ_extent_mm is not None and diameter_mm > config.organ_extent_factor * organ_extent_mm:
        return f"organ {organ_extent_mm:.0f} mm"
    region_mm = extents_mm.get(region_key(r.segments)) if r.segments else None
    if region_mm is not None and diameter_mm > config.segment_extent_factor * region_mm:
        return f"{', '.join(r.segments)} {region_mm:.0f} mm"
    if voxel_mm is not None and diameter_mm < config.measurable_voxels * voxel_mm:
        return f"voxel {voxel_mm:.1f} mm"
    return ""


def _pair_findings(r: ReportedLesion, p: PredictedLesion, organ: str, extents_mm: Mapping[str, float],
                   voxel_mm: float | None, config: AuditConfig) -> list[Finding]:
    w = config.weights
    out = []
    if r.diameter_mm:
        ratio = r.diameter_mm / p.diameter_mm
        line = f"{organ}{_where(p)}: reported {r.diameter_mm:.1f} mm, predicted {p.diameter_mm:.1f} mm (x{ratio:.2f})"
        implausible = _implausible_size(r, extents_mm, voxel_mm, config)
        if ratio >= config.unit_error_factor or ratio <= 1 / config.unit_error_factor or implausible:
            extra = f", {implausible}" if implausible else ""
            out.append(Finding(AuditReason.LIKELY_UNIT_ERROR, organ, w.likely_unit_error, line + extra))
        elif abs(math.log(ratio)) > math.log1p(config.size_tolerance):
            out.append(Finding(AuditReason.SIZE_MISMATCH, organ, w.size_mismatch * min(3.0, abs(math.log2(ratio))),
                               line))
    if _place_cost(r, p):
        said = ", ".join([*r.segments, *([r.side] if r.side else [])])
        seen = ", ".join(x for x in (p.segment, p.side) if x)
        out.append(Finding(AuditReason.LOCATION_MISMATCH, organ, w.location_mismatch,
                           f"{organ}: reported in {said}, predicted in {seen}"))
    contrast = p.hu_contrast
    if contrast is not None and (
            (r.attenuation == "hypo" and contrast > config.attenuation_contrast_hu)
            or (r.attenuation == "hyper" and contrast < -config.attenuation_contrast_hu)):
        out.append(Finding(AuditReason.ATTENUATION_MISMATCH, organ, w.attenuation_mismatch,
                           f"{organ}{_where(p)}: reported {r.attenuation}attenuating, predicted lesion "
                           f"{contrast:+.0f} HU against its organ"))
    return out


Pairs = list[tuple[ReportedLesion, PredictedLesion | None]]


def organ_findings(organ: str, reported: Sequence[ReportedLesion], predicted: Sequence[PredictedLesion],
                   records: CaseRecords, config: AuditConfig, extents_mm: Mapping[str, float] | None = None,
                   count_is_lower_bound: bool = False, voxel_mm: float | None = None) -> tuple[list[Finding], Pairs]:
    """The findings of one organ (module docstring) and each reported lesion with its matched prediction (None:
    not found).

    Args:
        organ: organ key.
        reported: the report's lesions in this organ (:func:`reported_lesions`).
        predicted: the predicted lesions of this organ's channel.
        records: the CT's records (for the lesion-free and equivocal organs and sides).
        config: tolerances and weights.
        extents_mm: organ and sub-segment set (:func:`train.review.lesions.region_key`) -> its largest extent
            (mm), for the implausible-size checks; a missing key skips that check.
        count_is_lower_bound: the report's count is "at least".
        voxel_mm: the prediction grid's finest voxel spacing (mm), for the too-small check; None to skip it.
    """
    w = config.weights
    extents_mm = extents_mm or {}
    out: list[Finding] = []
    free = organ in records.lesion_free or all(f"{organ}_{s}" in records.lesion_free for s in ("left", "right"))
    if free and not reported:
        for p in predicted:
            weight = w.lesion_in_normal_organ * _scale(p.diameter_mm, config) * (p.max_probability or 1.0)
            out.append(Finding(AuditReason.LESION_IN_NORMAL_ORGAN, organ, weight,
                               f"{organ}{_where(p)}: reported without lesion, predicted {p.diameter_mm:.1f} mm "
                               f"({p.volume_mm3:.0f} mm3)", predicted=p))
        return out, []
    if not reported:  # equivocal or not mentioned: nothing to compare with
        return out, []
    normal_sides = {s for s in ("left", "right") if f"{organ}_{s}" in records.lesion_free}
    in_normal_side = [p for p in predicted if p.side in normal_sides]
    for p in in_normal_side:
        out.append(Finding(AuditReason.LESION_IN_NORMAL_ORGAN, organ,
                           w.lesion_in_normal_organ * _scale(p.diameter_mm, config) * (p.max_probability or 1.0),
                           f"{organ}{_where(p)}: reported without lesion on the {p.side}, predicted "
                           f"{p.diameter_mm:.1f} mm", predicted=p))
    predicted = [p for p in predicted if p.side not in normal_sides]
    pairs = match_lesions(reported, predicted)
    matched = {i for i, _ in pairs}
    for i, r in enumerate(reported):
        if i not in matched:
            size = f"{r.diameter_mm:.1f} mm" if r.diameter_mm else "unsized"
            where = ", ".join([*r.segments, *([r.side] if r.side else [])])
            line = f"{organ}{f' ({where})' if where else ''}: reported {size} lesion, none predicted"
            implausible = _implausible_size(r, extents_mm, voxel_mm, config) if r.diameter_mm else ""
            if implausible:
                out.append(Finding(AuditReason.LIKELY_UNIT_ERROR, organ, w.likely_unit_error, f"{line}, {implausible}"))
            else:
                out.append(Finding(AuditReason.REPORTED_NOT_FOUND, organ,
                                   w.reported_not_found * _scale(r.diameter_mm, config), line, reported=r))
    n_r, n_p = len(reported), len(predicted)
    if n_p != n_r and not (count_is_lower_bound and n_p >= n_r):
        # Each predicted lesion the report does not list weighs by its size (and probability): a 20 mm one says more
        # than a speck. Reported lesions the model lacks weigh nothing here: each is a `reported_not_found` already.
        found = {j for _, j in pairs}
        extra = ([] if n_r > n_p else [_scale(p.diameter_mm, config) * (p.max_probability or 1.0)
                                       for j, p in enumerate(predicted) if j not in found])
        out.append(Finding(AuditReason.COUNT_MISMATCH, organ, w.count_mismatch * sum(extra),
                           f"{organ}: reported {'at least ' if count_is_lower_bound else ''}{n_r} lesion(s), "
                           f"predicted {n_p}"))
    for i, j in pairs:
        out.extend(_pair_findings(reported[i], predicted[j], organ, extents_mm, voxel_mm, config))
    match = dict(pairs)
    return out, [(r, predicted[match[i]] if i in match else None) for i, r in enumerate(reported)]


def _in_other_organs(findings: list[Finding], config: AuditConfig) -> list[Finding]:
    """``findings`` with each reported lesion not found in its organ and a lesion of its size (within
    ``size_tolerance``) predicted in another organ the report calls normal merged into one
    ``lesion_in_other_organ`` (closest sizes first)."""
    unfound = [f for f in findings if f.reported is not None and f.reported.diameter_mm]
    in_normal = [f for f in findings if f.predicted is not None]
    candidates = sorted(
        (abs(math.log(u.reported.diameter_mm / n.predicted.diameter_mm)), i, j)
        for i, u in enumerate(unfound) for j, n in enumerate(in_normal) if u.organ != n.organ)
    used_u, used_n, merged = set(), set(), []
    for cost, i, j in candidates:
        if cost > math.log1p(config.size_tolerance) or i in used_u or j in used_n:
            continue
        used_u.add(i)
        used_n.add(j)
        u, n = unfound[i], in_normal[j]
        p = n.predicted
        weight = config.weights.lesion_in_other_organ * _scale(p.diameter_mm, config) * (p.max_probability or 1.0)
        merged.append(Finding(AuditReason.LESION_IN_OTHER_ORGAN, u.organ, weight,
                              f"{u.organ}: reported {u.reported.diameter_mm:.1f} mm lesion, none predicted; "
                              f"{n.organ}{_where(p)}, reported without lesion: predicted {p.diameter_mm:.1f} mm"))
    gone = {id(unfound[i]) for i in used_u} | {id(in_normal[j]) for j in used_n}
    return [f for f in findings if id(f) not in gone] + merged


def ct_score(weights: Sequence[float], config: AuditConfig) -> float:
    """The heaviest weight plus ``other_findings_factor`` times the rest (:class:`AuditConfig`)."""
    if not weights:
        return 0.0
    top = max(weights)
    return top + config.other_findings_factor * (sum(weights) - top)


def audit_case(ct_id: str, records: CaseRecords, predicted: Sequence[PredictedLesion], organs: Sequence[str],
               config: AuditConfig, organ_extents_mm: Mapping[str, float] | None = None,
               predictions: str = "", voxel_mm: float | None = None) -> tuple[CTAudit, list[Finding], Pairs]:
    """The audit row of one CT, its findings (heaviest first) and its reported lesions with their matches.

    Args:
        ct_id: the CT.
        records: its report's records.
        predicted: its predicted lesions (:func:`train.review.lesions.predicted_lesions`).
        organs: organs the model has a lesion channel for (others cannot be audited).
        config: tolerances and weights.
        organ_extents_mm: organ (and sub-segment set, :func:`train.review.lesions.region_key`) -> largest extent
            (mm) for the implausible-size checks.
        predictions: the audited predictions folder, recorded in the row.
        voxel_mm: the prediction grid's finest voxel spacing (mm), for the too-small check; None to skip it.
    """
    # Components mostly outside their organ are the model's misfires, not statements about the organ.
    predicted = [p for p in predicted if p.organ_share is None or p.organ_share >= config.min_organ_share]
    findings: list[Finding] = []
    pairs: Pairs = []
    n_reported = 0
    sizes: list[float] = []
    for organ in organs:
        tumors = [t for t in records.tumors if t.organ == organ]
        reported = reported_lesions(tumors)
        n_reported += len(reported)
        sizes += [r.diameter_mm for r in reported if r.diameter_mm]
        found, matched = organ_findings(organ, reported, [p for p in predicted if p.organ == organ], records, config,
                                        organ_extents_mm, voxel_mm=voxel_mm,
                                        count_is_lower_bound=any(t.count_is_lower_bound for t in tumors))
        findings += found
        pairs += matched
    findings = _in_other_organs(findings, config)
    findings.sort(key=lambda f: -f.weight)
    by_reason: dict[AuditReason, float] = {}
    for f in findings:
        by_reason[f.reason] = by_reason.get(f.reason, 0.0) + f.weight
    scored = [p for p in predicted if p.organ in organs]
    row = CTAudit(
        ct_id=ct_id, report_id=records.report_id, score=round(ct_score([f.weight for f in findings], config), 4),
        reasons=sorted(by_reason, key=lambda r: -by_reason[r]),
        findings=[f"{f.reason.value}: {f.text}" for f in findings],
        organs=sorted({f.organ for f in findings}), n_reported=n_reported, n_predicted=len(scored),
        reported_largest_mm=max(sizes) if sizes else None,
        predicted_largest_mm=max((p.diameter_mm for p in scored), default=None),
        predicted_volume_mm3=round(sum(p.volume_mm3 for p in scored), 1), predictions=predictions,
    )
    return row, findings, pairs
