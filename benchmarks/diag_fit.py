"""Has a network learnt the lesions at all? Per-channel Dice of a checkpoint on mask crops drawn as in training.

For the first ``--cases`` CTs of a phantom set (with their voxel masks), or the mask CTs of one science-benchmark
seed (``--mask-seed``), draws ``--crops`` mask crops per CT the way the trainer does (lesion-centred with
``foreground_probability``, no mirroring), runs the network on each crop and pools true / false positives per output
channel. Prints one JSON line: Dice and false-positive voxels per channel.

On the science pool, the first CTs are training CTs of the ``masks_all`` control, so a low lesion Dice there means
the recipe has not fitted even its own tumours (``docs/science.md``, fifth CPU run).

    python benchmarks/diag_fit.py runs/science/cpu/pool RUN/train/latest.pt --cases 12 --crops 3
    python benchmarks/diag_fit.py runs/science/cpu/pool RUN/train/latest.pt --weights model   # not the EMA
    python benchmarks/diag_fit.py runs/science/cpu/pool RUN/train/latest.pt --mask-seed 2   # seed 2's mask CTs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phantoms", type=Path, help="a phantom set with voxel masks (e.g. the science benchmark's pool)")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--cases", type=int, help="first N cases of the set (default 12); with --mask-seed, the number "
                   "of mask CTs drawn (default: the benchmark's mask_cases)")
    p.add_argument("--mask-seed", type=int, help="the CTs that keep their masks in this seed of the science "
                   "benchmark (its stratified draw) instead of the first ones")
    p.add_argument("--crops", type=int, default=3, help="crops per case")
    p.add_argument("--weights", choices=["ema", "model"], default="ema",
                   help="the EMA weights that prediction uses, or the raw optimiser weights")
    p.add_argument("--cache-dir", type=Path, help="preprocessed-volume cache (default: <phantoms>/../cache)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from train.science.draws import mask_case_ids, pool_tumour_organs
    from train.science.protocol import PRESETS, pool_cases
    from train.checkpoint import load_checkpoint, model_weights
    from train.config import TrainConfig
    from train.data.cases import TrainingCase
    from train.data.dataset import CaseDataset, build_sample
    from train.model import build_network

    ckpt = load_checkpoint(args.checkpoint, map_location="cpu")
    config = TrainConfig.model_validate(ckpt["config"])
    net = build_network(config.model, 1, len(config.data.classes))
    net.load_state_dict(model_weights(ckpt, prefer_ema=args.weights == "ema"))
    net.eval()
    classes = list(config.data.classes)
    data_cfg = config.data.model_copy(update={"mirror_axes": ()})
    pool = pool_cases(args.phantoms)
    if args.mask_seed is None:
        pool = pool[: args.cases or 12]
    else:
        n_mask = args.cases or PRESETS["cpu"]["mask_cases"]
        keep = mask_case_ids(pool_tumour_organs(args.phantoms), n_mask, args.mask_seed)
        pool = [c for c in pool if c.files.ct_id in keep]
    cases = [TrainingCase(c.files, None) for c in pool]
    dataset = CaseDataset(cases, args.cache_dir or args.phantoms.parent / "cache", data_cfg)
    dataset.prepare(progress=False)

    tp, fp, fn = (np.zeros(len(classes), np.int64) for _ in range(3))
    with torch.no_grad():
        for i, case in enumerate(cases):
            cached = dataset.cached(i)
            for k in range(args.crops):
                sample = build_sample(cached, case, data_cfg, np.random.default_rng([k, i]))
                logits = net(torch.from_numpy(sample["image"])[None])  # eval mode: the final head only
                pred = (torch.sigmoid(logits)[0] > 0.5).numpy().reshape(len(classes), -1)
                truth = sample["labels"].reshape(len(classes), -1)
                tp += (pred & truth).sum(1)
                fp += (pred & ~truth).sum(1)
                fn += (~pred & truth).sum(1)
    dice = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    print(json.dumps({"checkpoint": str(args.checkpoint), "weights": args.weights, "step": int(ckpt["step"]),
                      "crops": len(cases) * args.crops,
                      "dice": {c: round(float(d), 3) for c, d in zip(classes, dice)},
                      "false_positive_voxels": {c: int(v) for c, v in zip(classes, fp)}}))


if __name__ == "__main__":
    main()
