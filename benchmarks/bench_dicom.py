"""DICOM import benchmarks, one JSON line each: header scan rate and the conversion of a 512 x 512 x 300 series.

Targets (issue 21): header scan >= 2,000 files/s; a 512 x 512 x 300 series converted in <= 15 s, on the 2-core
machine. Files are written first (not timed) and then read from the page cache, as on a second pass over an export.

* ``scan``: ``train.dicom.headers.scan`` over N files of two kinds: slices written by ``train.dicom.synthetic``
  (a lean header, ~40 attributes) and copies of pydicom's ``CT_small.dcm`` (a real scanner's header with its
  private attributes, ~250), each with 1 process and with 2.
* ``convert``: one study with a 512 x 512 x 300 int16 series (a phantom upsampled 4x with full-resolution noise):
  ``read_volume`` (decode + rescale), ``write_nifti`` (gzip level 1), and the whole ``import_dicom`` (scan, choice,
  conversion, content hash, record).

Every line gives the 1-minute load average before and after, since wall-clock rates follow what else runs; the scan
lines also give files per CPU second (this process and its worker processes), which depends less on the load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _cpu_s() -> float:
    """CPU seconds of this process plus its finished children (the scan's worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def write_lean_files(root: Path, n: int) -> None:
    from train.data.phantoms import PhantomConfig, generate_case
    from train.dicom.synthetic import StudyTags, uid, write_series

    case = generate_case(PhantomConfig(shape=(64, 64, 100)), 0)
    for s in range(-(-n // 100)):
        k = min(100, n - s * 100)
        write_series(root / f"s{s}", case.ct[:, :, :k], case.affine, StudyTags(uid("bench", s), f"A{s}"),
                     series_number=s + 1, description="Portal venous")


def write_scanner_files(root: Path, n: int) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    from train.dicom.synthetic import uid

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    root.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        ds.SOPInstanceUID = uid("scanner", k)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = uid("scanner-series", k // 100)
        ds.ImagePositionPatient = [-158.135803, -179.035797, -75.699997 + 5.0 * (k % 100)]
        ds.save_as(root / f"IM{k:06d}")


def bench_scan(root: Path, n: int, repeats: int) -> list[dict]:
    from train.dicom.headers import scan

    lines = []
    for kind, writer in (("synthetic", write_lean_files), ("CT_small copies", write_scanner_files)):
        folder = root / kind.split()[0]
        writer(folder, n)
        scan(folder, ("AccessionNumber",))  # warm the page cache
        for workers in (1, 2):
            load0 = _load()
            times, cpus = [], []
            for _ in range(repeats):
                c0, t0 = _cpu_s(), time.perf_counter()
                result = scan(folder, ("AccessionNumber",), workers=workers)
                times.append(time.perf_counter() - t0)
                cpus.append(_cpu_s() - c0)
            assert len(result.headers) == n, result.skipped
            best, median = min(times), float(np.median(times))
            lines.append({"bench": "header_scan", "files": kind, "n": n, "workers": workers,
                          "files_per_s_median": round(n / median), "files_per_s_best": round(n / best),
                          "files_per_cpu_s": round(n / float(np.median(cpus))), "target_files_per_s": 2000,
                          "load_before": load0, "load_after": _load()})
    return lines


def bench_convert(root: Path, shape: tuple[int, int, int]) -> dict:
    from train.data.phantoms import PhantomConfig, generate_case
    from train.dicom.config import DicomImportConfig, SeriesRule
    from train.dicom.convert import read_volume, write_nifti
    from train.dicom.headers import scan
    from train.dicom.importer import import_dicom
    from train.dicom.series import choose_series, group
    from train.dicom.synthetic import StudyTags, uid, write_series

    small = tuple(s // 4 for s in shape)
    case = generate_case(PhantomConfig(shape=small, field_of_view_z_mm=shape[2] * 1.0), 0)
    hu = case.ct.repeat(4, 0).repeat(4, 1).repeat(4, 2)
    hu = (hu + np.random.default_rng(0).normal(0, 12, hu.shape)).clip(-1024, 3000).astype(np.int16)
    affine = case.affine.copy()
    affine[:3, :3] /= 4
    write_series(root / "dcm", hu, affine, StudyTags(uid("convert"), "A1"), series_number=3,
                 description="Portal venous")
    config = DicomImportConfig(series=SeriesRule(), scan_workers=2)
    load0 = _load()
    (study_uid, series), = group(scan(root / "dcm").headers).studies.items()
    geometry = choose_series(study_uid, series, config.series).chosen.geometry
    t0 = time.perf_counter()
    volume = read_volume(geometry)
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_nifti(volume, root / "ct.nii.gz")
    t_write = time.perf_counter() - t0
    assert np.array_equal(volume.hu, hu)
    t0, c0 = time.perf_counter(), time.process_time()
    result = import_dicom(root / "dcm", root / "out", config, set())
    t_all, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert [s.status for s in result.studies] == ["imported"]
    return {"bench": "convert", "shape": list(shape), "read_volume_s": round(t_read, 2),
            "write_nifti_s": round(t_write, 2), "import_dicom_s": round(t_all, 2),
            "import_cpu_s_main_process": round(cpu, 2), "target_s": 15,
            "nifti_mb": round((root / "ct.nii.gz").stat().st_size / 1e6, 1),
            "load_before": load0, "load_after": _load()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["scan", "convert"], choices=["scan", "convert"])
    parser.add_argument("--files", type=int, default=6000, help="files per header-scan run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_dicom_") as tmp:
        if "scan" in args.parts:
            for line in bench_scan(Path(tmp) / "scan", args.files, args.repeats):
                print(json.dumps(line), flush=True)
        if "convert" in args.parts:
            print(json.dumps(bench_convert(Path(tmp) / "convert", tuple(args.shape))), flush=True)


if __name__ == "__main__":
    main()
