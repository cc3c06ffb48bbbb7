"""Training-data benchmarks, one JSON line each: phantom generation, `cases` build, patch loading from the cache.

Targets (issue 6): 100 phantoms of 128^3 in <= 120 s; `cases` for 1,000 synthetic cases in <= 60 s; >= 20 patches/s
of 96^3 from the cache with 2 worker processes. Use --quick for a smaller run.

Wall-clock rates depend on what else runs on the machine, so every line also gives CPU time (``time.process_time``
of this process plus that of finished worker processes) and the 1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_phantoms(out: Path, n: int, shape: tuple[int, int, int]) -> dict:
    from train.data.phantoms import PhantomConfig, write_phantom_set

    load0, c0, t0 = _load(), time.process_time(), time.perf_counter()
    write_phantom_set(out, PhantomConfig(n=n, seed=7, shape=shape))
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"bench": "phantoms", "cases": n, "shape": list(shape), "seconds": round(dt, 2),
            "target_seconds_per_100": 120, "seconds_per_100": round(dt * 100 / n, 2),
            "cpu_seconds_per_case": round(cpu / n, 3), "load_before": load0, "load_after": _load()}


def bench_cases(root: Path, n_cases: int) -> dict:
    """Build `cases` over ``n_cases`` folders (small phantoms copied under new ids: file I/O and checks dominate)."""
    from train.data.cases import build_cases
    from train.data.phantoms import PhantomConfig, write_phantom_set

    src = root / "src"
    write_phantom_set(src, PhantomConfig(n=20, seed=3, shape=(64, 64, 48)))
    big = root / "big"
    (big / "cases").mkdir(parents=True)
    shutil.copy(src / "labels.json", big / "labels.json")
    shutil.copy(src / "lesion_labels.json", big / "lesion_labels.json")
    originals = sorted((src / "cases").iterdir())
    rows = ["ct_id,report_id"]
    for i in range(n_cases):
        d = big / "cases" / f"CT{i:05d}"
        shutil.copytree(originals[i % len(originals)], d)
        rows.append(f"CT{i:05d},R{i:05d}")
    (big / "map.csv").write_text("\n".join(rows) + "\n")
    t0 = time.perf_counter()
    result = build_cases(big, big / "map.csv")
    dt = time.perf_counter() - t0
    return {"bench": "cases", "cases": result.table.num_rows, "problems": len(result.problems),
            "seconds": round(dt, 2), "target_seconds_per_1000": 60, "seconds_per_1000": round(dt * 1000 / n_cases, 2)}


def loading_cases(root: Path, n_cases: int):
    """A 128^3 phantom set, its training cases (half of them report-only) and a prepared dataset."""
    from train.data.cases import build_cases, training_cases
    from train.data.config import PatchDatasetConfig
    from train.data.dataset import CaseDataset
    from train.data.labels import load_label_names
    from train.data.phantoms import PhantomConfig, write_phantom_set
    from train.data.records import records_from_ground_truth

    src = root / "load"
    write_phantom_set(src, PhantomConfig(n=n_cases, seed=11, shape=(128, 128, 128)))
    table = build_cases(src, src / "case_reports.csv").table
    cases = training_cases(table, records_from_ground_truth(src / "ground_truth.jsonl"),
                           load_label_names(src / "labels.json"), load_label_names(src / "lesion_labels.json"),
                           split=None, report_only_fraction=0.5)
    config = PatchDatasetConfig(patch_size=(96, 96, 96))
    dataset = CaseDataset(cases, src / "cache", config)
    dataset.prepare()
    return cases, dataset


def bench_loading(cases, dataset, patches: int, workers: int) -> dict:
    """Patches/s through a DataLoader (batch 2); CPU per patch counts this process and the worker processes."""
    import torch

    from train.data.batching import MixedBatchSampler, collate

    batch_size = 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker; in-process numbers then count one core
    sampler = MixedBatchSampler(cases, batch_size, patches // batch_size + 1, dataset.config.mask_fraction)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                                         persistent_workers=False)
    load0 = _load()
    it = iter(loader)
    next(it)  # worker start-up and imports are not part of the steady-state rate
    pids = [w.pid for w in getattr(it, "_workers", [])]
    w0 = sum(_process_cpu_s(p) for p in pids)
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    for _ in range(len(sampler) - 1):  # not to the end: the workers must still be alive when their CPU is read
        batch = next(it)
        n += batch["image"].shape[0]
        # Touch every tensor as a training step would, so the cost of mapping shared memory is counted.
        for t in (batch["labels"], batch["unknown_mask"], batch["targets"].group_masks, batch["image"]):
            t.numpy().any()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    workers_cpu = sum(_process_cpu_s(p) for p in pids) - w0  # may include prefetching beyond the last batch
    del it
    torch.set_num_threads(threads)
    return {"bench": "patch_loading", "patch": [96, 96, 96], "workers": workers, "patches": n,
            "seconds": round(dt, 2), "patches_per_s": round(n / dt, 2), "target_patches_per_s": 20,
            "main_cpu_ms_per_patch": round(1000 * cpu / n, 1),
            "workers_cpu_ms_per_patch": round(1000 * workers_cpu / n, 1) if workers else None,
            "load_before": load0, "load_after": _load()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers (0 = in-process)")
    parser.add_argument("--only", choices=["phantoms", "cases", "loading"], action="append")
    args = parser.parse_args()
    which = set(args.only or ["phantoms", "cases", "loading"])
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        root = Path(tmp)
        if "phantoms" in which:
            n = 10 if args.quick else 100
            print(json.dumps(bench_phantoms(root / "ph", n, (128, 128, 128))), flush=True)
        if "cases" in which:
            print(json.dumps(bench_cases(root / "cases", 100 if args.quick else 1000)), flush=True)
        if "loading" in which:
            cases, dataset = loading_cases(root, 4 if args.quick else 8)
            for workers in args.workers:
                print(json.dumps(bench_loading(cases, dataset, 20 if args.quick else 80, workers)), flush=True)


if __name__ == "__main__":
    main()
