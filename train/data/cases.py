"""Build the `cases` table: find CT / mask files, check each case, join with the CT -> report mapping.

Layouts (docs/data.md):

* nnU-Net v2 raw dataset: ``ROOT/imagesTr/<id>_<XXXX><file_ending>`` and ``ROOT/labelsTr/<id><file_ending>``, as
  ``ROOT/dataset.json`` defines them: ``file_ending`` (default ``.nii.gz``; NIfTI only), the CT channel ``XXXX``
  from ``channel_names`` (the channel named CT, or the only one), an explicit ``dataset`` file list when given,
  label names from ``labels`` (or ``ROOT/labels.json``). Lesion labels may be in the same label map.
* One folder per case: ``ROOT/<id>/ct.nii.gz``, ``organs.nii.gz``, optional ``lesions.nii.gz`` (also under
  ``ROOT/cases/``); label names in ``ROOT/labels.json`` (or .yaml), lesion names in ``ROOT/lesion_labels.json``.

Every case is checked on the way in; a bad case becomes a :class:`CaseProblem` and the build goes on.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from train.data import labels as L
from train.data.cache import CaseFiles
from train.data.records import CaseRecords

CASES_SCHEMA = pa.schema([
    ("ct_id", pa.string()),
    ("report_id", pa.string()),
    ("image_path", pa.string()),
    ("organ_mask_path", pa.string()),
    ("lesion_mask_path", pa.string()),
    ("spacing", pa.list_(pa.float64(), 3)),
    ("split", pa.string()),
    ("shape", pa.list_(pa.int32(), 3)),
    ("content_sha256", pa.string()),
])
_AFFINE_TOLERANCE_MM = 1e-3


@dataclasses.dataclass(frozen=True)
class TrainingCase:
    """One CT with its files and (optional) report records."""

    files: CaseFiles
    records: CaseRecords | None = None

    @property
    def has_mask(self) -> bool:
        return self.files.lesion_mask_path is not None


@dataclasses.dataclass(frozen=True)
class CaseProblem:
    """Why one case (or mapping row) was left out or needs attention."""

    ct_id: str
    field: str
    message: str


@dataclasses.dataclass(frozen=True)
class FoundCase:
    ct_id: str
    image_path: Path
    organ_mask_path: Path | None
    lesion_mask_path: Path | None


@dataclasses.dataclass(frozen=True)
class DatasetLayout:
    """Files found under a root plus its label-name tables."""

    cases: list[FoundCase]
    organ_label_names: dict[int, str]
    lesion_label_names: dict[int, str] | None
    label_file: Path
    ignored_labels: list[str] = dataclasses.field(default_factory=list)
    label_errors: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class CasesBuild:
    """Result of :func:`build_cases`."""

    table: pa.Table
    problems: list[CaseProblem]
    cts_without_report: list[str]
    reports_without_ct: list[str]
    ignored_labels: list[str] = dataclasses.field(default_factory=list)


def _first(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def _nifti_ending(path: Path, endings: tuple[str, ...]) -> str | None:
    return next((e for e in endings if path.name.endswith(e)), None)


def _ct_channel(meta: dict, source: Path) -> str:
    """The 4-digit channel id of the CT among an nnU-Net ``channel_names`` (v1: ``modality``)."""
    channels = meta.get("channel_names", meta.get("modality")) or {"0": "CT"}
    if not isinstance(channels, dict) or not all(_is_digits(k) for k in channels):
        raise ValueError(f"{source}: channel_names: expected {{\"0\": \"CT\", ...}}, got {channels!r}")
    ct = [k for k, v in channels.items() if str(v).strip().lower() == "ct"]
    if len(ct) != 1 and len(channels) != 1:
        raise ValueError(f"{source}: channel_names {channels}: expected one channel named CT")
    return f"{int(ct[0] if ct else next(iter(channels))):04d}"


def _is_digits(x: object) -> bool:
    return isinstance(x, str) and x.isdigit()


def _nnunet_cases(root: Path) -> list[FoundCase]:
    """Cases of an nnU-Net (v2) raw dataset: ``imagesTr/`` + ``labelsTr/`` with dataset.json conventions."""
    meta_path = root / "dataset.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{meta_path}: cannot read: {exc}") from exc
    ending = meta.get("file_ending")
    if ending is not None and ending not in (".nii.gz", ".nii"):
        raise ValueError(f"{meta_path}: file_ending {ending!r}: only NIfTI (.nii.gz, .nii) is read here; convert "
                         f"the images and labels to NIfTI")
    endings = (ending,) if ending else (".nii.gz", ".nii")
    channel = _ct_channel(meta, meta_path)
    cases: list[FoundCase] = []
    if isinstance(meta.get("dataset"), dict):  # nnU-Net v2: explicit per-case files, relative to the root
        for ct_id, entry in sorted(meta["dataset"].items()):
            images = entry.get("images") or []
            if int(channel) >= len(images):
                raise ValueError(f"{meta_path}: dataset.{ct_id}.images has no channel {channel}")
            label = entry.get("label")
            mask = root / label if label else None
            cases.append(FoundCase(ct_id, root / images[int(channel)], mask if mask and mask.is_file() else None,
                                   None))
        return cases
    for img in sorted((root / "imagesTr").iterdir()):
        ending_found = _nifti_ending(img, endings)
        # Skip macOS AppleDouble companions (._name.nii.gz), which archives made on a Mac carry.
        if ending_found is None or img.name.startswith("._"):
            continue
        stem = img.name[: -len(ending_found)]
        if not stem.endswith(f"_{channel}"):
            continue
        ct_id = stem[: -len(channel) - 1]
        mask = _first(*(root / "labelsTr" / f"{ct_id}{e}" for e in endings))
        cases.append(FoundCase(ct_id, img, mask, None))
    return cases


def discover(root: str | Path, label_file: str | Path | None = None) -> DatasetLayout:
    """Find the cases and label-name files under ``root`` (layouts in the module docstring).

    Label names are resolved through the alias table (:func:`train.data.labels.read_label_file`); names that stay
    unknown are in ``label_errors`` (one line per file), structures with no organ key in ``ignored_labels``.

    Raises:
        FileNotFoundError: no case layout or no label-name file found.
        ValueError: an unusable dataset.json (naming the file and field).
    """
    root = Path(root).resolve()  # the cases table holds paths that work from any folder
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: {'not a folder' if root.exists() else 'no such folder'} (the dataset root)")
    cases: list[FoundCase] = []
    if (root / "imagesTr").is_dir():
        cases = _nnunet_cases(root)
        default_labels = _first(root / "labels.json", root / "labels.yaml", root / "dataset.json")
    else:
        base = root / "cases" if (root / "cases").is_dir() else root
        for d in sorted(p for p in base.iterdir() if p.is_dir()):
            img = _first(d / "ct.nii.gz", d / "ct.nii")
            if img is None:
                continue
            cases.append(FoundCase(d.name, img, _first(d / "organs.nii.gz", d / "organs.nii"),
                                   _first(d / "lesions.nii.gz", d / "lesions.nii")))
        default_labels = _first(root / "labels.json", root / "labels.yaml", root / "labels.yml")
    if not cases:
        raise FileNotFoundError(f"{root}: no cases found (expected imagesTr/ + labelsTr/ or <case>/ct.nii.gz)")
    label_path = Path(label_file) if label_file else default_labels
    if label_path is None:
        raise FileNotFoundError(f"{root}: no label-name file (labels.json, labels.yaml or dataset.json)")
    organ_labels = L.read_label_file(label_path)
    lesion_file = _first(root / "lesion_labels.json", root / "lesion_labels.yaml")
    lesion_labels = L.read_label_file(lesion_file) if lesion_file else None
    organ_names = organ_labels.names
    lesion_names = lesion_labels.names if lesion_labels else None
    if lesion_names is None and any(n in L.LESION_LABELS or n == L.GENERIC_LESION for n in organ_names.values()):
        # nnU-Net style: lesions are labels of the same map, so the lesion "mask" is the label map itself.
        cases = [dataclasses.replace(c, lesion_mask_path=c.organ_mask_path) for c in cases]
    tables = [t for t in (organ_labels, lesion_labels) if t is not None]
    return DatasetLayout(
        cases, organ_names, lesion_names, label_path,
        ignored_labels=sorted({n for t in tables for n in t.ignored.values()}),
        label_errors=[e for t in tables if (e := t.error())],
    )


def file_sha256(paths: list[Path]) -> str:
    """sha256 over the bytes of the given files, in order (the cache key of a case)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def check_case(case: FoundCase, organ_names: dict[int, str], lesion_names: dict[int, str] | None,
               check_values: bool = True) -> tuple[dict | None, list[CaseProblem]]:
    """Check one case: readable NIfTI, 3D, shapes and affines agree, mask values named in the label file.

    Returns:
        (row fields without report_id / split, or None when the case is unusable; problems found).
    """
    import nibabel as nib

    problems: list[CaseProblem] = []

    def problem(field: str, message: str) -> tuple[None, list[CaseProblem]]:
        problems.append(CaseProblem(case.ct_id, field, message))
        return None, problems

    try:
        img = nib.load(case.image_path)
    except Exception as exc:  # nibabel raises many types for broken files
        return problem("image_path", f"{case.image_path}: unreadable NIfTI ({exc})")
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        return problem("image_path", f"{case.image_path}: expected a 3D image, got shape {shape}")
    affine = np.asarray(img.affine, float)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        return problem("image_path", f"{case.image_path}: degenerate affine")
    files = [case.image_path]
    for field, path, names in (("organ_mask_path", case.organ_mask_path, organ_names),
                               ("lesion_mask_path", case.lesion_mask_path, lesion_names or organ_names)):
        if path is None or path in files:
            continue
        try:
            mask = nib.load(path)
        except Exception as exc:
            return problem(field, f"{path}: unreadable NIfTI ({exc})")
        if tuple(mask.shape[:3]) != shape:
            return problem(field, f"{path}: shape {tuple(mask.shape)} differs from the image {shape}")
        if not np.allclose(mask.affine, affine, atol=_AFFINE_TOLERANCE_MM):
            return problem(field, f"{path}: affine differs from the image's")
        if check_values:
            values = np.unique(np.asarray(mask.dataobj))
            unnamed = sorted(set(values.astype(np.int64).tolist()) - set(names))
            if unnamed:
                return problem(field, f"{path}: label values {unnamed[:5]} have no name in the label file")
        files.append(path)
    if case.organ_mask_path is None:
        hint = ""
        if (Path(case.image_path).parent / "segmentations").is_dir():
            hint = f" (per-class masks in {Path(case.image_path).parent / 'segmentations'}: run `rsuper organs` first)"
        problems.append(CaseProblem(case.ct_id, "organ_mask_path", f"no organ mask: organ channels unknown{hint}"))
    spacing = [float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(0))]
    row = {
        "ct_id": case.ct_id,
        "image_path": str(case.image_path),
        "organ_mask_path": str(case.organ_mask_path) if case.organ_mask_path else None,
        "lesion_mask_path": str(case.lesion_mask_path) if case.lesion_mask_path else None,
        "spacing": spacing,
        "shape": list(shape),
        "content_sha256": file_sha256(files),
    }
    return row, problems


def read_mapping(path: str | Path) -> tuple[dict[str, str], dict[str, str], list[CaseProblem]]:
    """Read the CT -> report CSV (columns ``ct_id``, ``report_id``, optional ``split``).

    Returns:
        (ct_id -> report_id, ct_id -> split, problems such as duplicate or empty ids, by row).

    Raises:
        ValueError: the file lacks a required column (naming the file).
    """
    path = Path(path)
    mapping: dict[str, str] = {}
    splits: dict[str, str] = {}
    problems: list[CaseProblem] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        missing = [c for c in ("ct_id", "report_id") if c not in columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; found {reader.fieldnames}")
        for n, row in enumerate(reader, 2):
            ct_id = (row[columns["ct_id"]] or "").strip()
            report_id = (row[columns["report_id"]] or "").strip()
            if not ct_id or not report_id:
                problems.append(CaseProblem(ct_id or f"<row {n}>", "mapping", f"{path}, row {n}: empty ct_id or report_id"))
                continue
            if ct_id in mapping and mapping[ct_id] != report_id:
                problems.append(CaseProblem(ct_id, "mapping", f"{path}, row {n}: ct_id mapped twice; first kept"))
                continue
            mapping[ct_id] = report_id
            if "split" in columns and row[columns["split"]]:
                splits[ct_id] = row[columns["split"]].strip()
    return mapping, splits, problems


def assign_split(ct_id: str, val_fraction: float, test_fraction: float) -> str:
    """Deterministic split from a hash of the id, stable when cases are added."""
    u = int(hashlib.sha256(ct_id.encode()).hexdigest()[:12], 16) / 16**12
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def build_cases(
    root: str | Path,
    mapping_csv: str | Path | None,
    *,
    label_file: str | Path | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.0,
    check_values: bool = True,
) -> CasesBuild:
    """Find, check and join cases into a pyarrow table with :data:`CASES_SCHEMA`.

    A CT without a report row keeps ``report_id`` null and is listed in ``cts_without_report``; a mapping row
    whose CT is not found is listed in ``reports_without_ct``; a case that fails a check is left out and listed
    in ``problems``.
    """
    layout = discover(root, label_file)
    problems: list[CaseProblem] = []
    if layout.label_errors:
        problems += [CaseProblem("*", "labels", error) for error in layout.label_errors]
        return CasesBuild(pa.Table.from_pylist([], schema=CASES_SCHEMA), problems, [], [], layout.ignored_labels)
    mapping, splits, map_problems = read_mapping(mapping_csv) if mapping_csv else ({}, {}, [])
    problems += map_problems
    rows = []
    for case in layout.cases:
        row, case_problems = check_case(case, layout.organ_label_names, layout.lesion_label_names, check_values)
        problems += case_problems
        if row is None:
            continue
        row["report_id"] = mapping.get(case.ct_id)
        row["split"] = splits.get(case.ct_id) or assign_split(case.ct_id, val_fraction, test_fraction)
        rows.append(row)
    found = {c.ct_id for c in layout.cases}
    table = pa.Table.from_pylist(rows, schema=CASES_SCHEMA)
    return CasesBuild(
        table=table,
        problems=problems,
        cts_without_report=sorted(r["ct_id"] for r in rows if r["report_id"] is None),
        reports_without_ct=sorted(rid for cid, rid in mapping.items() if cid not in found),
        ignored_labels=layout.ignored_labels,
    )


def read_cases(store) -> pa.Table:
    """The store's `cases` table (written by `rsuper cases`) with :data:`CASES_SCHEMA`, ordered by ct_id.

    Args:
        store: an open :class:`extract.store.Store`.
    """
    table = store.query(f"SELECT {', '.join(CASES_SCHEMA.names)} FROM cases ORDER BY ct_id")
    return table.cast(CASES_SCHEMA)


@dataclasses.dataclass(frozen=True)
class RecordJoin:
    """Cases matched with report records, and what could not be matched."""

    matched: dict[str, str]  # ct_id -> report_id with records
    cts_without_records: list[str]  # no report, or the report has no (current) extraction
    records_without_ct: list[str]  # report ids with records but no CT


def join_records(table: pa.Table, record_ids: set[str] | frozenset[str]) -> RecordJoin:
    """Match the ``cases`` table with the report ids that have records; nothing is dropped silently."""
    ct_ids = table.column("ct_id").to_pylist()
    report_ids = table.column("report_id").to_pylist()
    matched = {c: r for c, r in zip(ct_ids, report_ids) if r is not None and r in record_ids}
    return RecordJoin(
        matched=matched,
        cts_without_records=sorted(c for c in ct_ids if c not in matched),
        records_without_ct=sorted(set(record_ids) - set(r for r in report_ids if r is not None)),
    )


def training_cases(
    table: pa.Table,
    records: dict,
    organ_label_names: dict[int, str],
    lesion_label_names: dict[int, str] | None = None,
    *,
    split: str | None = "train",
    report_only_fraction: float = 0.0,
    seed: int = 0,
) -> list[TrainingCase]:
    """Turn `cases` rows plus records into :class:`TrainingCase` objects.

    Args:
        table: rows with :data:`CASES_SCHEMA` columns.
        records: report_id -> :class:`train.data.records.CaseRecords`.
        organ_label_names / lesion_label_names: the dataset's label-name tables.
        split: keep only this split (None: all).
        report_only_fraction: share of cases that have both a lesion mask and records which train from the report
            only (their lesion mask is hidden; chosen by a hash of ct_id and seed), e.g. on the phantom set.
        seed: changes which cases are report-only.
    """
    out = []
    for row in table.to_pylist():
        if split is not None and row["split"] != split:
            continue
        rec = records.get(row["report_id"]) if row["report_id"] is not None else None
        lesion_path = row["lesion_mask_path"]
        if rec is not None and lesion_path is not None:
            u = int(hashlib.sha256(f"{seed}:{row['ct_id']}".encode()).hexdigest()[:12], 16) / 16**12
            if u < report_only_fraction:
                lesion_path = None
        files = CaseFiles(
            ct_id=row["ct_id"],
            image_path=row["image_path"],
            organ_mask_path=row["organ_mask_path"],
            lesion_mask_path=lesion_path,
            content_sha256=row["content_sha256"],
            organ_label_names=organ_label_names,
            lesion_label_names=lesion_label_names,
        )
        out.append(TrainingCase(files, rec))
    return out
