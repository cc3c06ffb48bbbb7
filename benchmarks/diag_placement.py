"""Report-crop diagnostics on a phantom set: does the Ball Loss place its pseudo-masks on the true tumours, and
is any tumour voxel trained as background?

Report CTs keep their lesion masks hidden from training; here the phantom truth is read back to score what the
trainer builds for them. For report crops drawn as in training (a lesion group inside each crop), the Ball Loss
runs on a flat prediction (``--logit``, what an immature network gives) or on a trained network's prediction
(``--checkpoint``, its EMA weights), and the script prints one JSON line:

* ``positives_on_tumour``: share of the placed positive voxels that lie on a true tumour;
* ``placements_hitting``: placements with at least one positive voxel on a true tumour;
* ``tumour_voxels_known_negative``: tumour voxels in the crops that the ordinary segmentation loss treats as
  background (outside the lesion channel's unknown region); this should be 0.

    python benchmarks/diag_placement.py runs/science/cpu/pool --cases 40
    python benchmarks/diag_placement.py runs/science/cpu/pool --set ball_positive_fraction=0.9 \\
        --set ball_attenuation_prior=false
    python benchmarks/diag_placement.py runs/science/cpu/pool --checkpoint RUN/train/latest.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phantoms", type=Path, help="a phantom set (rsuper phantoms or the science benchmark's pool)")
    p.add_argument("--config", type=Path, default=REPO / "configs/science/cpu.yaml", help="TrainConfig YAML")
    p.add_argument("--cases", type=int, default=40, help="first N cases of the set, all used as report CTs")
    p.add_argument("--crops", type=int, default=2, help="crops per case")
    p.add_argument("--logit", type=float, default=-3.0, help="the flat lesion logit the Ball Loss sees")
    p.add_argument("--checkpoint", type=Path, help="place on this network's prediction instead of a flat one")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="LossConfig field KEY=VALUE (YAML value), e.g. ball_positive_fraction=0.9")
    args = p.parse_args()

    from train.config import TrainConfig
    from train.data.cache import ensure_cached
    from train.science.protocol import pool_cases

    from train.data.batching import collate
    from train.data.cases import TrainingCase, discover
    from train.data.dataset import CaseDataset
    from train.data.painting import paint_masks
    from train.data.records import records_from_ground_truth
    from train.data.placement import extract_patch
    from train.losses import BallLoss, LossConfig
    from train.predict import load_network

    cfg = TrainConfig.model_validate(yaml.safe_load(args.config.read_text()))
    data_cfg = cfg.data.model_copy(update={"random_crop_probability": 0.0, "mirror_axes": ()})
    classes = data_cfg.classes
    loss_fields = {"lesion_channels": [i for i, c in enumerate(classes) if c.endswith("_lesion")]}
    for text in args.overrides:
        key, _, value = text.partition("=")
        loss_fields[key.strip()] = yaml.safe_load(value)
    net = None
    if args.checkpoint is not None:
        net, net_cfg = load_network(args.checkpoint)
        if net_cfg.data.classes != classes or net_cfg.data.hu_window != data_cfg.hu_window:
            raise SystemExit(f"{args.checkpoint}: classes / HU window differ from {args.config}")
    ball = BallLoss(LossConfig.model_validate({**cfg.loss.model_dump(), **loss_fields}))  # validated overrides

    masked = pool_cases(args.phantoms)[: args.cases]  # with their lesion masks: the truth to score against
    records = records_from_ground_truth(args.phantoms / "ground_truth.jsonl")
    report_cases = [TrainingCase(dataclasses.replace(c.files, lesion_mask_path=None), records[c.report_id])
                    for c in masked]
    lesion_code = {name: code for code, name in discover(args.phantoms).lesion_label_names.items()}

    on_tumour = positives = hits = placements = known_negative = tumour_voxels = 0
    with tempfile.TemporaryDirectory() as tmp:
        ds = CaseDataset(report_cases, Path(tmp) / "report", data_cfg)
        for i, case in enumerate(masked):
            truth = ensure_cached(Path(tmp) / "truth", case.files, data_cfg.preprocess)
            for seed in range(args.crops):
                sample = ds[(i, seed)]
                plan = sample["plan"]
                lesions = extract_patch(truth.lesions, plan.crop_start, data_cfg.patch_size, fill=0)
                labels = np.zeros((plan.num_channels, *plan.labels.shape), bool)
                unknown = np.zeros_like(labels)
                paint_masks(plan, labels, unknown, np.zeros((len(plan.groups), *plan.labels.shape), bool))
                for c, name in enumerate(classes):
                    if name in lesion_code:
                        tumour = lesions == lesion_code[name]
                        tumour_voxels += int(tumour.sum())
                        known_negative += int((tumour & ~unknown[c]).sum())
                batch = collate([sample])
                if net is None:
                    z = torch.full((1, len(classes), *batch["image"].shape[-3:]), args.logit)
                else:
                    with torch.no_grad():
                        z = net(batch["image"])  # eval mode: the final head only
                out = ball(z, batch["targets"], batch["image_hu"])
                true = torch.from_numpy(lesions > 0)
                for placement, _ in out.placements.values():
                    pos = placement.positive > 0
                    hit = int((pos & true).sum())
                    on_tumour += hit
                    positives += int(pos.sum())
                    hits += hit > 0
                    placements += 1
    print(json.dumps({
        "bench": "diag_placement", "cases": len(masked), "crops": len(masked) * args.crops,
        "positives_on_tumour": round(on_tumour / max(positives, 1), 3), "positive_voxels": positives,
        "placements_hitting": f"{hits}/{placements}",
        "tumour_voxels_known_negative": known_negative, "tumour_voxels": tumour_voxels,
        "prediction": str(args.checkpoint) if net is not None else f"flat logit {args.logit}",
        "overrides": args.overrides,
    }))


if __name__ == "__main__":
    main()
