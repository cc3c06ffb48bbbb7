"""Where does one lesion channel fire on the test set? Per organ part, the share of voxels a run's predictions mark,
and per test CT the marked volume against the organ and the true tumour (issue 23's diagnosis of a mask-free class).

A channel that learnt the tumours marks little of the organ and most of each tumour; one that learnt a location
prior marks the same share of the same parts in every CT, tumour or not.

Usage::

    python benchmarks/diag_no_mask.py runs/science/cpu/runs/masks_reports_truth_seed0_<fp> --organ liver
    python benchmarks/diag_no_mask.py RUN --organ pancreas --test runs/science/cpu/test --cases 10

Prints one JSON line per CT (``--cases`` of them) and a final line per organ part.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def organ_channel_use(run: Path, test: Path, organ: str) -> tuple[list[dict], dict[str, dict]]:
    """Per test CT and per organ part (label names starting with ``organ``): voxels marked by the run's
    ``predictions/<ct>/lesions.nii.gz`` as ``<organ>_lesion``, against the organ and the true tumour voxels."""
    import nibabel as nib

    from train.data.labels import load_label_names
    from train.science.draws import read_truth

    truth = read_truth(test)
    organ_names = load_label_names(test / "labels.json")
    lesion_names = {v: k for k, v in load_label_names(test / "lesion_labels.json").items()}
    parts = {v: k for k, v in organ_names.items() if v == organ or v.startswith(organ + "_")}
    if not parts:
        raise SystemExit(f"{test / 'labels.json'}: no label of {organ}")
    per_ct, part_marked, part_voxels = [], dict.fromkeys(parts, 0), dict.fromkeys(parts, 0)
    for ct in sorted(truth):
        pred_dir = run / "predictions" / ct
        codes = {v: int(k) for k, v in json.loads((pred_dir / "labels.json").read_text())["lesions"].items()}
        pred = np.asarray(nib.load(pred_dir / "lesions.nii.gz").dataobj) == codes[f"{organ}_lesion"]
        organs = np.asarray(nib.load(test / "cases" / ct / "organs.nii.gz").dataobj)
        tumour = np.asarray(nib.load(test / "cases" / ct / "lesions.nii.gz").dataobj) == lesion_names[
            f"{organ}_lesion"]
        in_organ = np.isin(organs, list(parts.values()))
        for name, value in parts.items():
            part_marked[name] += int((pred & (organs == value)).sum())
            part_voxels[name] += int((organs == value).sum())
        per_ct.append({"ct_id": ct, "tumours_mm": [round(max(t["true_diameters_mm"])) for t in truth[ct]["tumors"]
                                                   if t["organ"] == organ],
                       "marked_voxels": int(pred.sum()), "organ_share_marked": round(float(
                           (pred & in_organ).sum() / max(1, in_organ.sum())), 3),
                       "tumour_voxels": int(tumour.sum()), "tumour_voxels_marked": int((pred & tumour).sum())})
    shares = {name: {"voxels": part_voxels[name], "share_marked": round(part_marked[name] / max(1, part_voxels[name]),
                                                                         3)} for name in parts}
    return per_ct, shares


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path, help="a science run directory (holds predictions/)")
    p.add_argument("--organ", required=True)
    p.add_argument("--test", type=Path, default=Path("runs/science/cpu/test"))
    p.add_argument("--cases", type=int, default=30, help="CTs printed (all are counted)")
    args = p.parse_args(argv)
    per_ct, shares = organ_channel_use(args.run, args.test, args.organ)
    for row in per_ct[: args.cases]:
        print(json.dumps(row))
    free = [r for r in per_ct if not r["tumours_mm"]]
    sick = [r for r in per_ct if r["tumours_mm"]]
    print(json.dumps({
        "organ": args.organ, "parts": shares, "tumour_free_cts": len(free),
        "mean_share_marked_tumour_free": round(float(np.mean([r["organ_share_marked"] for r in free])), 3)
        if free else None,
        "mean_voxels_marked_tumour_free": round(float(np.mean([r["marked_voxels"] for r in free])), 1)
        if free else None,
        "tumour_voxels_marked": f"{sum(r['tumour_voxels_marked'] for r in sick)} / "
                                f"{sum(r['tumour_voxels'] for r in sick)}",
        "tumour_cts_hit": f"{sum(r['tumour_voxels_marked'] > 0 for r in sick)} / {len(sick)}"}))


if __name__ == "__main__":
    main()
