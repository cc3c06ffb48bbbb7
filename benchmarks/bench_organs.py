"""`rsuper organs` speed: one TotalSegmentator-style folder (117 class files of task ``total``) -> our label map.

Writes a synthetic folder laid out as ``TotalSegmentator -o DIR`` leaves it (one uint8 ``.nii.gz`` per class of
its class map; each class a ball in its own cell of a 5 x 5 x 5 grid, so files compress like real sparse masks),
then times, one JSON line each:

* ``read``: decompressing the files the mapping needs (the 83 classes with an organ key; ignored ones are never
  read), the floor any mapping pays;
* ``map``: :func:`train.data.organs.map_class_files` (read, paint, derive pancreas parts);
* ``case``: :func:`train.data.organs.run_organs` on one case (map + write ``organs.nii.gz``, ``organs.json``).

Each figure is the median of ``--repeat`` runs, with CPU seconds and the 1-minute load average, since wall-clock
time on a shared machine follows the load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def write_folder(out: Path, shape: tuple[int, int, int], spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """A TotalSegmentator-style output folder and its CT; returns (affine, CT shape)."""
    import nibabel as nib

    from schemas.label_aliases import TOTALSEGMENTATOR_TOTAL

    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    (out / "case" / "totalsegmentator").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), affine), out / "case" / "ct.nii.gz")
    cell = np.asarray(shape) // 5
    radius = cell.min() * 0.4
    grid = np.indices(tuple(cell)).reshape(3, -1).T - (cell - 1) / 2.0
    ball = (np.linalg.norm(grid, axis=1) <= radius).reshape(tuple(cell))
    for n, name in enumerate(TOTALSEGMENTATOR_TOTAL):
        mask = np.zeros(shape, np.uint8)
        i, j, k = np.unravel_index(n, (5, 5, 5))
        lo = np.array([i, j, k]) * cell
        mask[lo[0]:lo[0] + cell[0], lo[1]:lo[1] + cell[1], lo[2]:lo[2] + cell[2]][ball] = 1
        nib.save(nib.Nifti1Image(mask, affine), out / "case" / "totalsegmentator" / f"{name}.nii.gz")
    return affine, np.asarray(shape)


def _timed(fn, repeat: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return round(statistics.median(walls), 3), round(statistics.median(cpus), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 256), help="voxels per axis")
    parser.add_argument("--spacing-mm", type=float, default=1.5, help="isotropic voxel size (mm)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the median is printed)")
    args = parser.parse_args()

    import nibabel as nib

    from schemas.label_aliases import resolve_label_name
    from train.data.organs import OrgansConfig, class_files, map_class_files, run_organs

    shape = tuple(args.shape)
    tmp = Path(tempfile.mkdtemp(prefix="bench_organs_"))
    try:
        affine, _ = write_folder(tmp, shape, args.spacing_mm)
        folder = tmp / "case" / "totalsegmentator"
        files = class_files(folder)
        used = [p for n, p in files.items() if resolve_label_name(n).label is not None]
        base = {"shape": list(shape), "class_files": len(files), "files_read": len(used)}

        def read() -> None:
            for path in used:
                np.asarray(nib.load(path).dataobj)

        def case() -> None:
            run_organs(tmp, OrgansConfig(source="segmentations", segmentations_dir="totalsegmentator", overwrite=True))

        steps = {
            "read": read,
            "map": lambda: map_class_files(files, shape, affine, source=str(folder)),
            "case": case,
        }
        for name, fn in steps.items():
            load0 = _load()
            wall, cpu = _timed(fn, args.repeat)
            print(json.dumps({"bench": f"organs_{name}", **base, "seconds": wall, "cpu_seconds": cpu,
                              "repeat": args.repeat, "load_before": load0, "load_after": _load()}), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
