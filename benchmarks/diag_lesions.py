"""Per-case lesion diagnostics of a checkpoint: does the network fit its training tumours, and find held-out ones?

For every lesion channel of every mask-annotated case (validation cases, and optionally the run's training mask
cases), prints one JSON line: tumour voxels, Dice at p > 0.5 and p > 0.3, mean / max probability inside the
tumour, false-positive voxels (and how many lie inside the tumour's organ, i.e. the channel learnt the organ), and
the largest probability outside the tumour. Cases and crops are the trainer's validation view (organ box + margin).

    python benchmarks/diag_lesions.py runs/demo/best.pt --sets val train
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch


def _finite(value: float) -> float | None:
    """Rounded value, None for NaN (Dice of an empty truth), so every line is valid JSON."""
    return None if math.isnan(value) else round(value, 4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--sets", nargs="+", choices=["val", "train"], default=["val"])
    p.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from train.datasource import CaseData
    from train.evaluate import dice_per_channel
    from train.inference import predict_probabilities
    from train.predict import load_network

    net, cfg = load_network(args.checkpoint)
    data = CaseData.from_config(cfg.data, seed=cfg.seed)
    classes = list(cfg.data.classes)
    chosen = {"val": None, "train": [c for c in data.train_cases if c.has_mask]}
    for name in args.sets:
        for case in data.val_cases(chosen[name]):
            prob = predict_probabilities(net, case.image, cfg.data.patch_size, args.overlap, "cpu", sw_batch_size=4)
            truth = case.labels > 0.5
            for c in cfg.data.lesion_channels:
                t, pc = truth[c], prob[c]
                if not t.any() and not (pc > 0.5).any():
                    continue
                organ = classes[c].removesuffix("_lesion")
                in_organ = truth[classes.index(organ)] if organ in classes else torch.zeros_like(t)
                fp = (pc > 0.5) & ~t
                row = {
                    "set": name, "ct_id": case.ct_id, "channel": classes[c], "tumour_voxels": int(t.sum()),
                    "dice": _finite(dice_per_channel((pc > 0.5)[None], t[None])[0]),
                    "dice_p03": _finite(dice_per_channel((pc > 0.3)[None], t[None])[0]),
                    "p_in_mean": round(pc[t].mean().item(), 4) if t.any() else None,
                    "p_in_max": round(pc[t].max().item(), 4) if t.any() else None,
                    "fp_voxels": int(fp.sum()), "fp_voxels_in_organ": int((fp & in_organ).sum()),
                    "organ_voxels": int(in_organ.sum()), "p_out_max": round(pc[~t].max().item(), 4),
                }
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
