"""Time forward + backward of the report losses on random logits; one JSON line per (loss, scenario).

Inputs: random logits 1 x 42 x S^3 (1 mm voxels), an ellipsoidal organ (radii 36 x 28 x 28 mm) on lesion
channel 39, and 1-3 reported spherical tumours (10; 20 + 10; 40 + 25 + 10 mm). The step loss adds a second,
half-resolution head, labels for 20 organ channels, an unknown-voxel mask on the lesion channel and HU.

Times: "median_s" is wall clock, "median_cpu_s" the process CPU time (all threads) of the same runs, and
"load_avg_1min" the machine's load when the line was written: on a shared machine compare CPU times, and wall
times only at similar load. With several threads on a busy machine, OpenMP's spinning waits burn the CPU a
descheduled partner thread needs: ``OMP_WAIT_POLICY=PASSIVE`` (set before the process starts; recorded in each
line) keeps wall times near the one-thread CPU time there.

Memory: "peak_extra" is the peak memory of the measured call above what was allocated before it (logits,
targets), divided by the bytes of the full-resolution logits. On CUDA it comes from
``torch.cuda.max_memory_allocated``; on CPU from the process peak resident set (VmHWM in /proc/self/status,
reset before each call by writing 5 to /proc/self/clear_refs), which counts every allocation the call makes
(``malloc_trim`` first returns freed heap memory to the OS, and glibc maps large blocks separately, so freed
tensors do not hide later ones).

Usage: python benchmarks/bench_losses.py [--device cpu|cuda] [--size S] [--threads 2] [--repeats 3]
       [--scenarios 10mm ...] [--losses ball volume attenuation seg_one_head step_two_heads]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import statistics
import time

import torch

from train.losses import Attenuation, AttenuationLoss, BallLoss, LossConfig, ReportSupervisionLoss, VolumeLoss
from train.losses.segmentation import coverage_codes, known_from_unknown, label_occupancy, masked_bce_dice
from train.losses.targets import GroupEntry, TargetTumor, build_report_targets

CHANNELS = 42
LESION = 39
SCENARIOS = {"10mm": [10.0], "20+10mm": [20.0, 10.0], "40+25+10mm": [40.0, 25.0, 10.0]}


def _ellipsoid(size: int, center, radii, device) -> torch.Tensor:
    axes = [torch.arange(size, device=device, dtype=torch.float32)] * 3
    grids = torch.meshgrid(*axes, indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center, radii)) <= 1.0


def _inputs(size: int, diameters: list[float], device: str, seed: int = 0):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    c = size / 2
    organ = _ellipsoid(size, (c, c, c), (36.0, 28.0, 28.0), device)
    tumors = tuple(TargetTumor((d, d, d), Attenuation.HYPO) for d in diameters)
    targets = build_report_targets([[GroupEntry(organ, LESION, tumors=tumors)]], (size,) * 3, [(1.0, 1.0, 1.0)],
                                   device=device)
    logits = torch.randn((1, CHANNELS, size, size, size), generator=gen).to(device)
    aux = torch.randn((1, CHANNELS, size // 2, size // 2, size // 2), generator=gen).to(device)
    labels = torch.zeros_like(logits)
    for ch in range(20):
        labels[0, ch] = _ellipsoid(size, (c + ch % 5, c - ch % 3, c), (20.0 + ch, 15.0, 18.0), device)
    unknown = torch.zeros_like(logits, dtype=torch.bool)
    unknown[0, LESION] = organ
    unknown[0, 30:35] = True  # organ classes without masks in this dataset
    hu = torch.full((1, 1, size, size, size), 100.0, device=device)
    return logits, aux, labels, unknown, targets, hu


_LIBC = ctypes.CDLL("libc.so.6")


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        return int(re.search(field + r":\s+(\d+)", fh.read()).group(1))


def _measure(fn, device: str, repeats: int, logits_bytes: int) -> dict:
    times, cpu_times, peaks = [], [], []
    for r in range(repeats + 1):  # first run warms up caches and kernels
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            _LIBC.malloc_trim(0)  # hand freed heap memory back so the baseline is what is really in use
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            base = _rss_kb("VmRSS") * 1024
        start, cpu_start = time.perf_counter(), time.process_time()
        info = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        peak = (torch.cuda.max_memory_allocated() if device == "cuda" else _rss_kb("VmHWM") * 1024) - base
        if r > 0:
            times.append(elapsed)
            cpu_times.append(cpu)
            peaks.append(peak)
    return {
        "median_s": round(statistics.median(times), 4),
        "runs_s": [round(t, 4) for t in times],
        "median_cpu_s": round(statistics.median(cpu_times), 4),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "peak_extra_mb": round(max(peaks) / 2**20, 1),
        "peak_extra_x_logits": round(max(peaks) / logits_bytes, 2),
        **(info or {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=None, help="crop edge S (default 96 on CPU, 128 on CUDA)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 3 on CPU, 20 on CUDA)")
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS))
    parser.add_argument("--losses", nargs="*", default=None, help="subset of the measured losses (default all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device
    size = args.size or (128 if device == "cuda" else 96)
    repeats = args.repeats or (20 if device == "cuda" else 3)
    cfg = LossConfig(lesion_channels=[LESION])

    for name in args.scenarios:
        logits, aux, labels, unknown, targets, hu = _inputs(size, SCENARIOS[name], device)
        logits_bytes = logits.numel() * logits.element_size()
        z = logits.requires_grad_(True)
        a = aux.requires_grad_(True)

        def run(loss_fn):
            def call():
                z.grad = None
                a.grad = None
                out = loss_fn()
                out[0].backward()
                return out[1]
            return call

        def ball():
            o = BallLoss(cfg)(z, targets)
            return o.bce + o.dice, {"status": o.status.tolist()}

        def volume():
            return VolumeLoss(cfg)(z, targets)[0], None

        def attenuation():
            return AttenuationLoss(cfg)(z, targets, hu), None

        def seg():  # as the step computes it: channel coverage and label occupancy, partial channels dilated, fused
            coverage = coverage_codes(unknown).tolist()
            occupied = label_occupancy(labels).tolist()
            known = known_from_unknown(unknown, coverage, cfg.unknown_dilation_mm, [(1.0, 1.0, 1.0)])
            bce, dice, _ = masked_bce_dice(z, labels, known, nonempty=occupied)
            return bce + dice, None

        step_loss = ReportSupervisionLoss(cfg)

        def step():
            total, parts = step_loss([z, a], labels, unknown, torch.tensor([False], device=device), targets, hu)
            return total, {"status": parts["tumor_status"].tolist()}

        cases = {
            "ball": ball, "volume": volume, "attenuation": attenuation, "seg_one_head": seg, "step_two_heads": step
        }
        for loss_name, fn in cases.items():
            if args.losses and loss_name not in args.losses:
                continue
            result = _measure(run(fn), device, repeats, logits_bytes)
            line = {"bench": "losses", "loss": loss_name, "scenario": name, "S": size, "channels": CHANNELS,
                    "device": device, "threads": args.threads,
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"), **result}
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
