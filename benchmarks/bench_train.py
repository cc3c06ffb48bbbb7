"""Training-step throughput and the share of step time spent in the loss (one JSON line).

On CUDA: 128^3 patch, batch 2, DynUNet 32-320 with one deep-supervision head, report losses on (lambda 0.1, half of
each batch report-only), bf16 autocast. On CPU (no GPU): a small patch (default 32^3) so it finishes.
Synthetic data (train.synthetic), generated before timing, so the figure measures the trainer, not the disk.

The step time is that of ``Trainer.train_step`` (forward, loss, backward, clipping, AdamW, EMA). The loss share
uses the loss forward + backward timed on its own: the same batch's network outputs, detached, go through the loss
and its backward, so the part of the backward pass that belongs to the loss is counted too.

    python benchmarks/bench_train.py [--patch 128] [--batch 2] [--steps 10] [--warmup 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch

from train.config import load_config
from train.synthetic import SyntheticData
from train.distributed import DistInfo
from train.inference import autocast_context
from train.trainer import Trainer


def loss_seconds(trainer: Trainer, batch: dict, sync) -> float:
    """Wall seconds of the loss forward + backward on detached network outputs of ``batch``."""
    batch = trainer._to_device(batch)
    trainer.model.train()
    with torch.no_grad(), autocast_context(trainer.config.optim.amp, trainer.device):
        outputs = [o.float() for o in trainer.model(batch["image"])]
    leaves = [o.detach().requires_grad_(True) for o in outputs]
    sync()
    t0 = time.perf_counter()
    total, _ = trainer.loss_fn(leaves, batch["labels"], batch["unknown_mask"], batch["has_mask"], batch["targets"],
                               batch["image_hu"])
    total.backward()
    sync()
    return time.perf_counter() - t0


def main() -> None:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patch", type=int, default=128 if cuda else 32)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10 if cuda else 6)
    ap.add_argument("--warmup", type=int, default=3 if cuda else 2)
    ap.add_argument("--filters", default="32,64,128,256,320" if cuda else "8,16,32")
    ap.add_argument("--threads", type=int, default=None if cuda else 1, help="torch CPU threads (cpu_threads).")
    args = ap.parse_args()
    device = torch.device("cuda" if cuda else "cpu")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, [
            "data.source=synthetic",
            "data.classes=[liver, pancreas, kidney, liver_lesion, pancreas_lesion, kidney_lesion]",
            f"data.patch_size=[{args.patch}, {args.patch}, {args.patch}]", f"data.batch_size={args.batch}",
            "data.mask_fraction=0.5", f"model.filters=[{args.filters}]", "model.deep_supervision_heads=1",
            "optim.total_steps=1000", "loss.report_weight=0.1", f"output_dir={tmp}",
            *([f"cpu_threads={args.threads}"] if args.threads else []),
        ])
        data = SyntheticData(cfg.data)
        trainer = Trainer(cfg, data, DistInfo(device=device), resume=False)
        batches = data.train_batches(0, 1, 0)
        pre = [next(batches) for _ in range(args.warmup + args.steps)]  # data generation is not timed
        rows = [trainer.train_step(b, timing=True) for b in pre][args.warmup:]
        loss_fb = [loss_seconds(trainer, b, sync) for b in pre[args.warmup:]]
        memory_gib = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    step = [r["time_forward_s"] + r["time_loss_s"] + r["time_backward_step_s"] for r in rows]
    med = statistics.median(step)
    print(json.dumps({
        "bench": "train_step", "device": torch.cuda.get_device_name() if cuda else "cpu",
        "threads": torch.get_num_threads(), "patch": args.patch, "batch": args.batch, "filters": args.filters,
        "report_weight": 0.1, "amp": "bf16" if cuda else "off", "steps": len(rows),
        "step_s_median": round(med, 4), "steps_per_s": round(1 / med, 3), "samples_per_s": round(args.batch / med, 3),
        "forward_s_median": round(statistics.median(r["time_forward_s"] for r in rows), 4),
        "loss_forward_s_median": round(statistics.median(r["time_loss_s"] for r in rows), 4),
        "backward_step_s_median": round(statistics.median(r["time_backward_step_s"] for r in rows), 4),
        "loss_fwd_bwd_s_median": round(statistics.median(loss_fb), 4),
        "loss_share": round(statistics.median(loss_fb) / med, 3),
        "peak_gpu_memory_gib": round(memory_gib, 2) if memory_gib is not None else None,
        "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
