"""A PACS-like export written from phantoms (real DICOM files), its report dump, and helpers to break studies."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from train.data.phantoms import PhantomConfig, generate_case
from train.dicom.synthetic import StudyTags, uid, write_phantom_study, write_series

#: 3 mm slices, 24 of them: the portal-venous series passes the default rule, the 6 mm arterial one does not.
PHANTOMS = PhantomConfig(n=20, seed=5, shape=(32, 32, 24), field_of_view_z_mm=72.0)
N_STUDIES = 20
CORRUPT, TILTED = 3, 11  # the two broken studies of the export


def study_tags(i: int, accession: str | None = None, **kw) -> StudyTags:
    case_report = f"ACC{(PHANTOMS.seed * 100_000 + i) % 10**9:09d}"
    return StudyTags(uid("study", i), accession if accession is not None else case_report, **kw)


def study_dir(root: Path, i: int) -> Path:
    # Layouts vary as in real exports: patient/study folders, or many studies flat in one folder.
    return root / f"patient{i % 7}" / f"study{i}" if i % 2 == 0 else root / "flat"


def tilted(affine: np.ndarray, degrees: float) -> np.ndarray:
    """The same slices, each shifted posteriorly by tan(tilt) x the slice step (a tilted gantry)."""
    out = np.asarray(affine, float).copy()
    out[1, 2] += math.tan(math.radians(degrees)) * np.linalg.norm(affine[:3, 2])
    return out


def write_export(root: Path) -> dict[int, object]:
    """The 20-study export: 3 series each (scout, arterial, portal venous), 2 studies broken, some clutter."""
    cases = {}
    for i in range(N_STUDIES):
        case = generate_case(PHANTOMS, i)
        cases[i] = case
        affine = tilted(case.affine, 12.0) if i == TILTED else case.affine
        series = write_phantom_study(study_dir(root, i), case.ct, affine, study_tags(i))
        if i == CORRUPT:  # header intact, pixel data cut short
            victim = series["Portal venous"][10]
            victim.write_bytes(victim.read_bytes()[:-700])
    (root / "README.txt").write_text("export of 2026-01-01\n")
    (root / "flat" / "Thumbs.db").write_bytes(b"\0" * 300)
    return cases


@pytest.fixture(scope="session")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("pacs")
    return root, write_export(root)


def write_reports(path: Path, cases: dict, extra: tuple[str, ...] = ("ACC_NO_STUDY_1", "ACC_NO_STUDY_2")) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["Accession Number", "Report Text"])
        for case in cases.values():
            w.writerow([case.report_id, case.report])
        for rid in extra:
            w.writerow([rid, "CT abdomen. No focal liver lesion."])


@pytest.fixture()
def store_with_reports(tmp_path, export):
    from extract.ingest import ingest_dump
    from extract.store import Store

    _, cases = export
    write_reports(tmp_path / "reports.csv", cases)
    db = tmp_path / "rsuper.duckdb"
    with Store(db) as store:
        ingest_dump(store, tmp_path / "reports.csv")
    return db


def one_series(root: Path, n: int = 24, *, affine: np.ndarray | None = None, study: StudyTags | None = None,
               **kw) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """A single axial series of phantom 0 (or ``n`` of its slices) under ``root``; returns (HU, affine, files)."""
    case = generate_case(PHANTOMS, 0)
    hu = case.ct[:, :, :n]
    affine = case.affine if affine is None else affine
    files = write_series(root, hu, affine, study or study_tags(0), series_number=kw.pop("series_number", 3),
                         description=kw.pop("description", "Portal venous"), **kw)
    return hu, affine, files
