"""Evaluation: voxel metrics where masks exist, per-CT detection against report records.

Voxel metrics (per lesion channel, CTs whose true mask for it is non-empty): Dice and NSD (normalised surface
Dice) at a stated tolerance in mm, both through ``monai.metrics``.

Detection (per organ with a lesion channel): a CT is *truly positive* when its report records list a lesion
in the organ, *truly negative* when the report declares the organ lesion-free; other CTs are not scored for that
organ. A CT is *predicted positive* when its predicted lesion volume (mm3, see
:func:`train.predict.detection_summary`) is at least a threshold T; T is swept over
:data:`VOLUME_THRESHOLDS_MM3`. Sensitivity, specificity and F1 are given per T; AUROC uses the maximum lesion
probability in the organ as the score. The ``small`` stratum keeps the negatives and only the positives whose
largest reported tumour is below 20 mm.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

SMALL_TUMOR_MM = 20.0
#: Keys of the per-CT detection metrics (:func:`per_ct_metrics`; the ``_small`` stratum adds the suffix).
DETECTION_KEYS = ("f1", "sensitivity", "specificity", "auroc")
VOLUME_THRESHOLDS_MM3: tuple[float, ...] = tuple(
    sorted({*range(10, 100, 10), *range(100, 1000, 10), *range(1000, 10_000, 100), *range(10_000, 100_000, 1000)})
)


# --------------------------------------------------------------------------------------------- voxel metrics


def dice_per_channel(pred: torch.Tensor, truth: torch.Tensor) -> list[float]:
    """Dice per channel of binary masks (C, X, Y, Z); NaN where the truth is empty."""
    from monai.metrics import DiceMetric

    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=True)
    values = metric(pred[None].float(), truth[None].float())[0]
    return [float(v) for v in values]


def nsd_per_channel(
    pred: torch.Tensor, truth: torch.Tensor, spacing_mm: Sequence[float], tolerance_mm: float
) -> list[float]:
    """Normalised surface Dice per channel at ``tolerance_mm`` (spacing-aware); NaN where the truth is empty."""
    from monai.metrics import SurfaceDiceMetric

    c = pred.shape[0]
    metric = SurfaceDiceMetric(class_thresholds=[tolerance_mm] * c, include_background=True, reduction="none")
    values = metric(pred[None].float(), truth[None].float(), spacing=[float(s) for s in spacing_mm])[0]
    empty = truth.flatten(1).sum(1) == 0
    return [math.nan if bool(e) else float(v) for v, e in zip(values, empty)]


# --------------------------------------------------------------------------------------------- detection


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties counted half; NaN if one class."""
    s = np.asarray(scores, float)
    y = np.asarray(labels, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks of tied scores
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores: Sequence[float], labels: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) over all score thresholds, from (0, 0) to (1, 1)."""
    s = np.asarray(scores, float)
    y = np.asarray(labels, bool)
    thresholds = np.unique(s)[::-1]
    tpr = [0.0] + [float((s[y] >= t).mean()) if y.any() else 0.0 for t in thresholds]
    fpr = [0.0] + [float((s[~y] >= t).mean()) if (~y).any() else 0.0 for t in thresholds]
    return np.asarray(fpr + [1.0]), np.asarray(tpr + [1.0])


def confusion_at(volumes: Sequence[float], labels: Sequence[bool], threshold_mm3: float) -> dict[str, float]:
    """Sensitivity, specificity, F1 and counts when a CT is positive for predicted volume >= threshold."""
    v = np.asarray(volumes, float)
    y = np.asarray(labels, bool)
    p = v >= threshold_mm3
    tp, fp = int((p & y).sum()), int((p & ~y).sum())
    fn, tn = int((~p & y).sum()), int((~p & ~y).sum())
    nan = math.nan
    return {
        "threshold_mm3": float(threshold_mm3), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "sensitivity": tp / (tp + fn) if tp + fn else nan,
        "specificity": tn / (tn + fp) if tn + fp else nan,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else nan,
    }


def detection_metrics(
    volumes: Sequence[float], scores: Sequence[float], labels: Sequence[bool], threshold_mm3: float,
    sweep: Sequence[float] = VOLUME_THRESHOLDS_MM3,
) -> dict:
    """Operating point at ``threshold_mm3``, the threshold sweep and AUROC for one organ / stratum."""
    return {
        "n_positive": int(np.sum(labels)), "n_negative": int(len(labels) - np.sum(labels)),
        "auroc": roc_auc(scores, labels),
        **confusion_at(volumes, labels, threshold_mm3),
        "sweep": [confusion_at(volumes, labels, t) for t in sweep],
    }


def report_truth(records: dict, mapping: dict[str, str], organs: Sequence[str]) -> dict[str, dict[str, dict]]:
    """Per CT and organ: ``{"positive": bool, "largest_mm": float | None}`` from report records.

    Args:
        records: report_id -> :class:`train.data.records.CaseRecords`.
        mapping: ct_id -> report_id.
        organs: organs to score.

    Organs that are neither reported with a lesion nor declared lesion-free are left out.
    """
    out: dict[str, dict[str, dict]] = {}
    for ct_id, report_id in mapping.items():
        rec = records.get(report_id)
        if rec is None:
            continue
        row = {}
        for organ in organs:
            tumors = [t for t in rec.tumors if t.organ == organ]
            free = organ in rec.lesion_free or all(f"{organ}_{s}" in rec.lesion_free for s in ("left", "right"))
            if tumors:
                sizes = [max(t.diameters_mm) for t in tumors if t.diameters_mm]
                row[organ] = {"positive": True, "largest_mm": max(sizes) if sizes else None}
            elif free:
                row[organ] = {"positive": False, "largest_mm": None}
        out[ct_id] = row
    return out


def evaluate_detection(
    summaries: dict[str, dict], truth: dict[str, dict[str, dict]], threshold_mm3: float
) -> dict[str, dict]:
    """Detection metrics per organ (``all`` and ``small`` strata) from ``predict`` summaries.

    Args:
        summaries: ct_id -> summary.json content (``organs.<organ>.lesion_volume_mm3 / max_probability``).
        truth: :func:`report_truth` output.
        threshold_mm3: operating-point volume threshold.
    """
    out: dict[str, dict] = {}
    organs = sorted({o for s in summaries.values() for o in s["organs"]})
    for organ in organs:
        rows = [
            (s["organs"][organ], truth[ct][organ])
            for ct, s in summaries.items()
            if ct in truth and organ in truth[ct] and organ in s["organs"]
        ]
        if not rows:
            continue
        for stratum in ("all", "small"):
            keep = [
                (p, t) for p, t in rows
                if stratum == "all" or not t["positive"]
                or (t["largest_mm"] is not None and t["largest_mm"] < SMALL_TUMOR_MM)
            ]
            if not keep:
                continue
            out[f"{organ}/{stratum}"] = detection_metrics(
                [p["lesion_volume_mm3"] for p, _ in keep], [p["max_probability"] for p, _ in keep],
                [t["positive"] for _, t in keep], threshold_mm3,
            )
            out[f"{organ}/{stratum}"]["roc"] = [a.tolist() for a in roc_curve(
                [p["max_probability"] for p, _ in keep], [t["positive"] for _, t in keep])]
    return out


def per_ct_metrics(summaries: dict[str, dict], truth: dict[str, dict], dice: dict[str, float],
                   threshold_mm3: float, small_mm: float) -> dict[str, float | int]:
    """Per-CT detection (organs pooled) and mean tumour Dice, overall and for the small-tumour stratum.

    A CT is predicted positive when its predicted lesion volume (summed over organs) reaches ``threshold_mm3``;
    its AUROC score is the largest lesion probability in the CT. Unlike :func:`evaluate_detection`, the truth
    is the phantom's, so every CT is scored. The ``_small`` metrics keep the tumour-free CTs and the CTs whose
    largest tumour is below ``small_mm``.

    Args:
        summaries: ct_id -> ``summary.json`` of ``rsuper predict``.
        truth: ct_id -> ground-truth row (``tumors[].true_diameters_mm``).
        dice: ct_id -> union lesion Dice (tumour-bearing CTs, :func:`lesion_dice`).
        threshold_mm3: a CT is predicted positive when its summed predicted lesion volume reaches this.
        small_mm: small stratum: tumour-free CTs and CTs whose largest tumour is below this diameter.
    """
    rows = []
    for ct_id, s in summaries.items():
        sizes = [max(t["true_diameters_mm"]) for t in truth[ct_id]["tumors"]]
        organs = s["organs"].values()
        rows.append({
            "volume": sum(o["lesion_volume_mm3"] for o in organs),
            "score": max((o["max_probability"] for o in organs), default=0.0),
            "positive": bool(sizes), "small": bool(sizes) and max(sizes) < small_mm, "ct_id": ct_id,
        })
    out: dict[str, float | int] = {}
    for suffix, keep in (("", lambda r: True), ("_small", lambda r: not r["positive"] or r["small"])):
        sel = [r for r in rows if keep(r)]
        m = detection_metrics([r["volume"] for r in sel], [r["score"] for r in sel], [r["positive"] for r in sel],
                              threshold_mm3, sweep=())
        for k in DETECTION_KEYS:
            out[k + suffix] = m[k]
        out["n_positive" + suffix] = m["n_positive"]
        out["n_negative" + suffix] = m["n_negative"]
        d = [dice[r["ct_id"]] for r in sel if r["positive"] and not math.isnan(dice.get(r["ct_id"], math.nan))]
        out["dice" + suffix] = float(np.mean(d)) if d else math.nan
    return out


# --------------------------------------------------------------------------------------------- files


def read_mapping(path: Path) -> dict[str, str]:
    """ct_id -> report_id from a CSV with those columns (the phantom set's ``case_reports.csv``)."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"ct_id", "report_id"} <= set(rows[0]):
        raise ValueError(f"{path}: needs columns ct_id, report_id")
    return {r["ct_id"]: r["report_id"] for r in rows}


def _lesion_class_masks(pred_dir: Path, truth_lesions: Path, lesion_names: dict[int, str]):
    """(class names, predicted masks (N, X, Y, Z), true masks, voxel spacing mm) of the lesion classes that both the
    prediction's ``labels.json`` and the truth's label names hold; None when they share none."""
    import nibabel as nib

    labels = json.loads((pred_dir / "labels.json").read_text())["lesions"]
    pred_img = nib.load(str(pred_dir / "lesions.nii.gz"))
    truth_img = nib.load(str(truth_lesions))
    if not np.allclose(pred_img.affine, truth_img.affine, atol=1e-3) or pred_img.shape != truth_img.shape:
        raise ValueError(f"{pred_dir / 'lesions.nii.gz'}: grid differs from {truth_lesions}")
    pred = np.asarray(pred_img.dataobj)
    truth = np.asarray(truth_img.dataobj)
    name_to_truth = {n: v for v, n in lesion_names.items()}
    names = [n for n in labels.values() if n in name_to_truth]
    if not names:
        return None
    inv = {n: int(v) for v, n in labels.items()}
    p = torch.from_numpy(np.stack([pred == inv[n] for n in names]))
    t = torch.from_numpy(np.stack([truth == name_to_truth[n] for n in names]))
    return names, p, t, np.linalg.norm(pred_img.affine[:3, :3], axis=0)


def voxel_metrics_for_case(pred_dir: Path, truth_lesions: Path, lesion_names: dict[int, str],
                           tolerance_mm: float) -> dict[str, dict[str, float]]:
    """Dice / NSD per lesion class of one CT (prediction and truth on the same grid)."""
    masks = _lesion_class_masks(pred_dir, truth_lesions, lesion_names)
    if masks is None:
        return {}
    names, p, t, spacing = masks
    dice = dice_per_channel(p, t)
    nsd = nsd_per_channel(p, t, spacing, tolerance_mm)
    return {n: {"dice": d, "nsd": s} for n, d, s in zip(names, dice, nsd) if not math.isnan(d)}


def lesion_dice_per_class(pred_dir: Path, truth_lesions: Path, lesion_names: dict[int, str]) -> dict[str, float]:
    """Dice per lesion class (``liver_lesion`` ...) of one CT, for the classes with a true lesion in it."""
    masks = _lesion_class_masks(pred_dir, truth_lesions, lesion_names)
    if masks is None:
        return {}
    names, p, t, _ = masks
    return {n: d for n, d in zip(names, dice_per_channel(p, t)) if not math.isnan(d)}


def per_organ_metrics(summaries: dict[str, dict], truth: dict[str, dict], dice: dict[str, dict[str, float]],
                      threshold_mm3: float) -> dict[str, dict[str, float | int]]:
    """Per-CT detection and mean tumour Dice of each lesion organ of the prediction, on its own.

    For organ X a CT is positive when its truth holds a tumour in X, predicted positive when the X lesion volume
    reaches ``threshold_mm3``, and scored for AUROC by the largest X lesion probability. Dice is the X lesion
    class's, averaged over the CTs with a tumour in X.

    Args:
        summaries: ct_id -> ``summary.json`` of ``rsuper predict``.
        truth: ct_id -> ground-truth row (``tumors[].organ``).
        dice: ct_id -> lesion class -> Dice (:func:`lesion_dice_per_class`).
    """
    organs = sorted({o for s in summaries.values() for o in s["organs"]})
    out: dict[str, dict[str, float | int]] = {}
    for organ in organs:
        cts = [ct for ct, s in summaries.items() if organ in s["organs"]]
        positive = [any(t["organ"] == organ for t in truth[ct]["tumors"]) for ct in cts]
        m = detection_metrics([summaries[ct]["organs"][organ]["lesion_volume_mm3"] for ct in cts],
                              [summaries[ct]["organs"][organ]["max_probability"] for ct in cts], positive,
                              threshold_mm3, sweep=())
        d = [dice[ct][f"{organ}_lesion"] for ct, pos in zip(cts, positive)
             if pos and f"{organ}_lesion" in dice.get(ct, {})]
        out[organ] = {**{k: m[k] for k in DETECTION_KEYS}, "n_positive": m["n_positive"],
                      "n_negative": m["n_negative"], "dice": float(np.mean(d)) if d else math.nan}
    return out


def lesion_dice(pred_lesions: Path, truth_lesions: Path) -> float:
    """Dice of the union of all lesion classes (NaN when the truth is empty); both maps on the same grid."""
    import nibabel as nib

    pred = np.asarray(nib.load(str(pred_lesions)).dataobj) > 0
    truth = np.asarray(nib.load(str(truth_lesions)).dataobj) > 0
    if pred.shape != truth.shape:
        raise ValueError(f"{pred_lesions}: shape {pred.shape} differs from {truth_lesions} {truth.shape}")
    return dice_per_channel(torch.from_numpy(pred[None]), torch.from_numpy(truth[None]))[0]


def summarise_voxel(per_case: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean Dice / NSD per lesion class over the CTs where it exists."""
    out: dict[str, dict[str, float]] = {}
    names = sorted({n for v in per_case.values() for n in v})
    for n in names:
        vals = [v[n] for v in per_case.values() if n in v]
        out[n] = {"n": len(vals), "dice": float(np.mean([x["dice"] for x in vals])),
                  "nsd": float(np.nanmean([x["nsd"] for x in vals])) if vals else math.nan}
    return out


def plot_detection(result: dict[str, dict], path: Path) -> Path:
    """ROC curves and sensitivity / specificity against the volume threshold, one row per organ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in result if k.endswith("/all")]
    n = max(1, len(keys))
    fig, axes = plt.subplots(n, 2, figsize=(9, 3.2 * n), squeeze=False)
    for (ax_roc, ax_thr), key in zip(axes, keys):
        organ = key.split("/")[0]
        for stratum, style in (("all", "-"), ("small", "--")):
            r = result.get(f"{organ}/{stratum}")
            if r is None:
                continue
            fpr, tpr = r["roc"]
            ax_roc.plot(fpr, tpr, style, label=f"{stratum} AUROC {r['auroc']:.3f}")
        ax_roc.plot([0, 1], [0, 1], ":", color="gray")
        ax_roc.set(title=f"{organ}: ROC (score = max lesion prob.)", xlabel="1 - specificity", ylabel="sensitivity")
        ax_roc.legend(fontsize=7)
        sweep = result[key]["sweep"]
        t = [s["threshold_mm3"] for s in sweep]
        ax_thr.semilogx(t, [s["sensitivity"] for s in sweep], label="sensitivity")
        ax_thr.semilogx(t, [s["specificity"] for s in sweep], label="specificity")
        ax_thr.semilogx(t, [s["f1"] for s in sweep], label="F1")
        ax_thr.axvline(result[key]["threshold_mm3"], color="gray", ls=":")
        ax_thr.set(title=f"{organ}: predicted lesion volume threshold", xlabel="mm3", ylim=(-0.02, 1.02))
        ax_thr.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def format_table(voxel: dict, detection: dict, tolerance_mm: float) -> str:
    """Plain-text tables of the voxel and detection results."""
    lines = []
    if voxel:
        lines.append(f"{'lesion class':<20}{'CTs':>5}{'Dice':>8}{f'NSD@{tolerance_mm:g}mm':>12}")
        for n, v in voxel.items():
            lines.append(f"{n:<20}{v['n']:>5}{v['dice']:>8.3f}{v['nsd']:>12.3f}")
        lines.append("")
    if detection:
        lines.append(f"{'organ/stratum':<20}{'pos':>5}{'neg':>5}{'T mm3':>8}{'sens':>7}{'spec':>7}{'F1':>7}{'AUROC':>7}")
        for k, r in detection.items():
            lines.append(
                f"{k:<20}{r['n_positive']:>5}{r['n_negative']:>5}{r['threshold_mm3']:>8g}{r['sensitivity']:>7.3f}"
                f"{r['specificity']:>7.3f}{r['f1']:>7.3f}{r['auroc']:>7.3f}"
            )
    return "\n".join(lines)
