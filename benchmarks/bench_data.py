"""Training-data benchmarks, one JSON line each: phantom generation, `cases` build, patch loading from the cache.

Targets (issue 6): 100 phantoms of 128^3 in <= 120 s; `cases` for 1,000 synthetic cases in <= 60 s; >= 20 patches/s
of 96^3 from the cache with 2 worker processes. Use --quick for a smaller run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def bench_phantoms(out: Path, n: int, shape: tuple[int, int, int]) -> dict:
    from train.data.phantoms import PhantomConfig, write_phantom_set

    t0 = time.perf_counter()
    write_phantom_set(out, PhantomConfig(n=n, seed=7, shape=shape))
    dt = time.perf_counter() - t0
    return {"bench": "phantoms", "cases": n, "shape": list(shape), "seconds": round(dt, 2),
            "target_seconds_per_100": 120, "seconds_per_100": round(dt * 100 / n, 2)}


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


def bench_loading(root: Path, n_cases: int, patches: int, workers: int) -> dict:
    import torch

    from train.data.cases import build_cases, training_cases
    from train.data.dataset import CaseDataset, DataConfig, MixedBatchSampler, collate
    from train.data.labels import load_label_names
    from train.data.phantoms import PhantomConfig, write_phantom_set
    from train.data.records import records_from_ground_truth

    src = root / "load"
    write_phantom_set(src, PhantomConfig(n=n_cases, seed=11, shape=(128, 128, 128)))
    table = build_cases(src, src / "case_reports.csv").table
    cases = training_cases(table, records_from_ground_truth(src / "ground_truth.jsonl"),
                           load_label_names(src / "labels.json"), load_label_names(src / "lesion_labels.json"),
                           split=None, report_only_fraction=0.5)
    config = DataConfig(patch_size=(96, 96, 96))
    dataset = CaseDataset(cases, src / "cache", config)
    dataset.prepare()
    batch_size = 2
    sampler = MixedBatchSampler(cases, batch_size, patches // batch_size, config.mask_fraction)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                                         persistent_workers=False)
    it = iter(loader)
    next(it)  # worker start-up and imports are not part of the steady-state rate
    t0 = time.perf_counter()
    n = batch_size
    for batch in it:
        n += batch["image"].shape[0]
    dt = time.perf_counter() - t0
    rate = (n - batch_size) / dt
    return {"bench": "patch_loading", "patch": [96, 96, 96], "workers": workers, "patches": n - batch_size,
            "seconds": round(dt, 2), "patches_per_s": round(rate, 2), "target_patches_per_s": 20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    parser.add_argument("--workers", type=int, default=2)
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
            print(json.dumps(bench_loading(root, 4 if args.quick else 8, 20 if args.quick else 80, args.workers)), flush=True)


if __name__ == "__main__":
    main()
