"""Training-step throughput and the share of step time spent in the loss (JSON lines).

On CUDA: 128^3 patch, batch 2, DynUNet with deep supervision, report losses on (lambda 0.1), bf16 autocast.
On CPU (no GPU): a small patch (default 32^3) so it finishes; the loss share is still meaningful.
Synthetic data (train.synthetic) so the figure measures the trainer, not the disk.

    python benchmarks/bench_train.py [--patch 128] [--batch 2] [--steps 10] [--warmup 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile

import torch

from train.config import load_config
from train.synthetic import SyntheticData
from train.trainer import DistInfo, Trainer


def main() -> None:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser()
    ap.add_argument("--patch", type=int, default=128 if cuda else 32)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10 if cuda else 4)
    ap.add_argument("--warmup", type=int, default=3 if cuda else 1)
    ap.add_argument("--filters", default="32,64,128,256,320" if cuda else "8,16,32,64")
    args = ap.parse_args()
    device = torch.device("cuda" if cuda else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, [
            "data.source=synthetic", "data.classes=[liver, pancreas, kidney, liver_lesion, pancreas_lesion, kidney_lesion]",
            f"data.patch_size=[{args.patch}, {args.patch}, {args.patch}]", f"data.batch_size={args.batch}",
            f"model.filters=[{args.filters}]", "optim.total_steps=1000", "loss.report_weight=0.1",
            f"output_dir={tmp}",
        ])
        data = SyntheticData(cfg.data)
        trainer = Trainer(cfg, data, DistInfo(device=device), resume=False)
        batches = data.train_batches(0, 1, 0)
        pre = [next(batches) for _ in range(args.warmup + args.steps)]  # data generation is not timed
        rows = [trainer.train_step(b, timing=True) for b in pre]
        rows = rows[args.warmup:]
    step = [r["time_forward_s"] + r["time_loss_s"] + r["time_backward_step_s"] for r in rows]
    loss = [r["time_loss_s"] for r in rows]
    med = statistics.median(step)
    print(json.dumps({
        "bench": "train_step", "device": torch.cuda.get_device_name() if cuda else "cpu",
        "patch": args.patch, "batch": args.batch, "filters": args.filters, "steps": len(rows),
        "step_s_median": med, "samples_per_s": args.batch / med,
        "forward_s_median": statistics.median(r["time_forward_s"] for r in rows),
        "loss_s_median": statistics.median(loss),
        "backward_step_s_median": statistics.median(r["time_backward_step_s"] for r in rows),
        "loss_share": statistics.median(l / s for l, s in zip(loss, step)),
        "amp": "bf16" if cuda else "off",
    }))


if __name__ == "__main__":
    main()
