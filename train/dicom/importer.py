"""``rsuper images import``: a PACS export in, one NIfTI CT per study out, joined to its report, `cases` rows built.

Output layout (the one-folder-per-case layout of ``rsuper cases``, so ``rsuper organs`` and ``rsuper cases`` work
on it as on any dataset)::

    OUT/cases/<ct_id>/ct.nii.gz      the chosen series, HU, RAS affine
    OUT/cases/<ct_id>/dicom.json     the study record: join values, series chosen and why, series skipped and why,
                                     the series content hash; written last, so its presence marks a finished study
    OUT/case_reports.csv             ct_id, report_id of the studies joined to a stored report (machine-made)
    OUT/dicom_import.json            the last import: every study's outcome, skipped files, unmatched studies/reports

``ct_id`` is ``ct_`` + 16 hex digits of the sha256 of the StudyInstanceUID: stable, and free of patient data.

Resume: a study whose record holds the same series content hash (SOP instance UIDs, file sizes and positions of
its slices, plus the conversion settings) and whose ``ct.nii.gz`` exists is not converted again; a killed import
redoes only the studies it had not finished. Nothing is half-written: the NIfTI goes through a temporary name and
a rename, the record after it, and the store's `cases` table is replaced in one transaction at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from train.data.cases import CASES_SCHEMA, CasesBuild, assign_split, build_cases, file_sha256
from train.data.phantoms import write_csv_atomic, write_json_atomic
from train.dicom.config import DicomImportConfig
from train.dicom.convert import ConversionError, read_volume, write_nifti
from train.dicom.headers import ScanResult, SliceHeader, scan
from train.dicom.series import SeriesVerdict, StudyChoice, choose_series, group

RECORD = "dicom.json"
IMAGE = "ct.nii.gz"
MAPPING = "case_reports.csv"
MANIFEST = "dicom_import.json"
_LABEL_FILES = ("labels.json", "labels.yaml", "labels.yml")
_RECORD_VERSION = 1


@dataclasses.dataclass(frozen=True)
class StudyOutcome:
    """What the import did with one study.

    Attributes:
        status: ``imported`` (converted now), ``resumed`` (already converted, unchanged), ``failed``, or
            ``no report`` (not converted because ``require_report`` is set and no report matched).
        accession: the study's first non-empty join value (its AccessionNumber with the default keys).
        report_id: the matched report, or None.
        reason: why it failed, or why its series was chosen.
        path: the file (or folder) the reason is about.
        series: every series of the study with its verdict (``chosen`` or the reason it was skipped).
    """

    study_uid: str
    ct_id: str
    accession: str
    status: str
    report_id: str | None
    reason: str
    path: str
    series: list[dict]


@dataclasses.dataclass
class ImportResult:
    """Result of :func:`import_dicom`; ``reports_without_ct``: stored reports that no imported CT is joined to."""

    studies: list[StudyOutcome]
    scan: ScanResult
    repeated_files: list[str]
    cases: CasesBuild | None
    reports_without_ct: list[str]

    @property
    def failed(self) -> list[StudyOutcome]:
        return [s for s in self.studies if s.status == "failed"]

    @property
    def unmatched_studies(self) -> list[StudyOutcome]:
        return [s for s in self.studies if s.status != "failed" and s.report_id is None]


def ct_id_for(study_uid: str) -> str:
    return "ct_" + hashlib.sha256(study_uid.encode()).hexdigest()[:16]


def join_values(header: SliceHeader, config: DicomImportConfig) -> dict[str, str]:
    """Each join key's value for one study ('' when one of its tags is empty)."""
    out = {}
    for key in config.join_keys:
        parts = [header.key(k) for k in key.split("+")]
        out[key] = config.join_separator.join(parts) if all(parts) else ""
    return out


def match_report(values: dict[str, str], report_ids: set[str]) -> str | None:
    """The first join value (in key order) that is a stored report id."""
    return next((v for v in values.values() if v and v in report_ids), None)


def series_sha256(verdict: SeriesVerdict, config: DicomImportConfig) -> str:
    """Content hash of a series for resume: its slices' UIDs, sizes and positions, plus the conversion settings."""
    assert verdict.geometry is not None
    slices = [(s.sop_uid, s.size, s.position) for s in verdict.geometry.slices]
    return hashlib.sha256(json.dumps([config.padding_hu, slices]).encode()).hexdigest()


def _series_list(choice: StudyChoice) -> list[dict]:
    rows = []
    for v in ([choice.chosen] if choice.chosen else []) + choice.skipped:
        rows.append({"series_uid": v.series_uid, "series_number": v.series_number, "description": v.description,
                     "files": v.n_files, "verdict": "chosen" if v is choice.chosen else "skipped",
                     "reason": choice.why if v is choice.chosen else v.reason})
    return rows


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("version") == _RECORD_VERSION else None


def convert_study(choice: StudyChoice, case_dir: Path, values: dict[str, str], config: DicomImportConfig) -> dict:
    """Convert the chosen series into ``case_dir/ct.nii.gz`` and write the study record; returns the record.

    Raises:
        ConversionError: a slice that cannot be read (nothing of this study is left behind).
    """
    chosen = choice.chosen
    assert chosen is not None and chosen.geometry is not None
    volume = read_volume(chosen.geometry, config.padding_hu)
    case_dir.mkdir(parents=True, exist_ok=True)
    image = case_dir / IMAGE
    write_nifti(volume, image)
    record = {
        "version": _RECORD_VERSION,
        "ct_id": case_dir.name,
        "study_uid": choice.study_uid,
        "join_values": values,
        "series_sha256": series_sha256(chosen, config),
        "chosen_series": {"series_uid": chosen.series_uid, "series_number": chosen.series_number,
                          "description": chosen.description, "files": chosen.n_files, "why": choice.why},
        "series": _series_list(choice),
        "image": {"path": IMAGE, "shape": list(volume.hu.shape), "spacing_mm": list(volume.spacing_mm),
                  "dtype": str(volume.hu.dtype), "content_sha256": file_sha256([image])},
        "converted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(case_dir / RECORD, record)
    return record


def _problem_path(choice: StudyChoice) -> str:
    """The file where the study's largest series shows its problem (the series a reader looks for first)."""
    return max(choice.skipped, key=lambda v: v.n_files).path


def _owners(identity: dict[str, str], records: list[dict]) -> dict[str, list[str]]:
    """First join value -> the studies that have it, in this scan and among the studies imported before."""
    owners: dict[str, list[str]] = {}
    for uid, ident in identity.items():
        if ident:
            owners.setdefault(ident, []).append(uid)
    for record in records:
        ident = next((v for v in record["join_values"].values() if v), "")
        if ident in owners and record["study_uid"] not in owners[ident]:
            owners[ident].append(record["study_uid"])
    return owners


def import_dicom(
    root: str | Path,
    out: str | Path,
    config: DicomImportConfig,
    report_ids: set[str],
    *,
    dry_run: bool = False,
    progress: bool = False,
) -> ImportResult:
    """Scan ``root``, choose and convert one CT series per study into ``out``, join to ``report_ids``.

    A study that fails (no usable series, a duplicate join value, a slice that cannot be read) gets one outcome
    with its reason and leaves nothing in ``out``. With ``dry_run`` nothing is written and nothing converted.

    Returns:
        The outcomes, the scan, the `cases` rows of every finished study under ``out`` (None with ``dry_run``)
        and the stored report ids no imported CT is joined to (the reports of failed studies included).
    """
    out = Path(out).resolve()  # the cases table holds paths that work from any folder
    if not dry_run:
        out.mkdir(parents=True, exist_ok=True)
    scanned = scan(root, config.join_tags, workers=config.scan_workers, progress=progress)
    grouped = group(scanned.headers)
    choices = {uid: choose_series(uid, series, config.series) for uid, series in sorted(grouped.studies.items())}
    firsts = {uid: (c.chosen.geometry.slices[0] if c.chosen else next(iter(grouped.studies[uid].values()))[0])
              for uid, c in choices.items()}
    values = {uid: join_values(h, config) for uid, h in firsts.items()}
    identity = {uid: next((v for v in vals.values() if v), "") for uid, vals in values.items()}
    owners = _owners(identity, _records(out))

    outcomes: list[StudyOutcome] = []
    studies = list(choices.items())
    if progress:
        from tqdm import tqdm

        studies = tqdm(studies, desc="studies", unit="study")
    for uid, choice in studies:
        ct_id = ct_id_for(uid)
        report_id = match_report(values[uid], report_ids)

        def outcome(status: str, reason: str, path: str) -> StudyOutcome:
            return StudyOutcome(uid, ct_id, identity[uid], status, report_id, reason, path, _series_list(choice))

        if choice.chosen is None:
            outcomes.append(outcome("failed", choice.why, _problem_path(choice)))
            continue
        others = [o for o in owners.get(identity[uid], []) if o != uid]
        if others:
            key = next(k for k, v in values[uid].items() if v)
            outcomes.append(outcome("failed", f"duplicate {key} {identity[uid]!r}: also study {others[0]}",
                                    choice.chosen.path))
            continue
        if config.require_report and report_id is None:
            outcomes.append(outcome("no report", "require_report: no stored report matches " +
                                    ", ".join(f"{k} {v!r}" for k, v in values[uid].items()), choice.chosen.path))
            continue
        case_dir = out / "cases" / ct_id
        record = _read_record(case_dir / RECORD)
        if (record is not None and record.get("series_sha256") == series_sha256(choice.chosen, config)
                and (case_dir / IMAGE).is_file()):
            fresh = {"join_values": values[uid], "series": _series_list(choice)}
            if not dry_run and any(record.get(k) != v for k, v in fresh.items()):  # new join keys or rule
                write_json_atomic(case_dir / RECORD, {**record, **fresh,
                                                       "chosen_series": {**record["chosen_series"], "why": choice.why}})
            outcomes.append(outcome("resumed", choice.why, choice.chosen.path))
            continue
        if dry_run:
            outcomes.append(outcome("to import", choice.why, choice.chosen.path))
            continue
        try:
            convert_study(choice, case_dir, values[uid], config)
        except ConversionError as exc:
            outcomes.append(outcome("failed", f"{exc.field}: {exc.message}", exc.path))
            continue
        outcomes.append(outcome("imported", choice.why, choice.chosen.path))

    matched = {o.report_id for o in outcomes if o.report_id is not None and o.status != "failed"}
    cases = None if dry_run else cases_from_records(out, report_ids, config)
    if cases is not None:
        matched |= {r for r in cases.table.column("report_id").to_pylist() if r is not None}
    result = ImportResult(outcomes, scanned, grouped.repeated_files, cases, sorted(report_ids - matched))
    if not dry_run:
        write_json_atomic(out / MANIFEST, manifest(result, root, config))
    return result


def _records(out: Path) -> list[dict]:
    """Records of every finished study under ``out`` (earlier imports included), by ct_id."""
    records = []
    for path in sorted((out / "cases").glob(f"*/{RECORD}")):
        record = _read_record(path)
        if record is not None and (path.parent / IMAGE).is_file():
            records.append(record)
    return records


def cases_from_records(out: str | Path, report_ids: set[str], config: DicomImportConfig) -> CasesBuild:
    """The `cases` rows of every finished study under ``out``, joined to the stored reports.

    Writes ``out/case_reports.csv`` (ct_id, report_id). When ``out`` has a label-name file (organ masks made,
    e.g. by ``rsuper organs``), the rows come from :func:`train.data.cases.build_cases` over ``out``, masks
    included; before that each CT is a case with ``organ_mask_path`` null, built from the records without reading
    the images again.
    """
    out = Path(out).resolve()
    records = _records(out)
    joined = {r["ct_id"]: match_report(r["join_values"], report_ids) for r in records}
    write_csv_atomic(out / MAPPING, ["ct_id", "report_id"], [(c, r) for c, r in joined.items() if r is not None])
    if any((out / name).is_file() for name in _LABEL_FILES):
        return build_cases(out, out / MAPPING, val_fraction=config.val_fraction, test_fraction=config.test_fraction)
    rows = [{
        "ct_id": r["ct_id"],
        "report_id": joined[r["ct_id"]],
        "image_path": str(out / "cases" / r["ct_id"] / IMAGE),
        "organ_mask_path": None,
        "lesion_mask_path": None,
        "spacing": r["image"]["spacing_mm"],
        "split": assign_split(r["ct_id"], config.val_fraction, config.test_fraction),
        "shape": r["image"]["shape"],
        "content_sha256": r["image"]["content_sha256"],
    } for r in records]
    table = pa.Table.from_pylist(rows, schema=CASES_SCHEMA)
    return CasesBuild(table, [], sorted(c for c, r in joined.items() if r is None), [])


def manifest(result: ImportResult, root: str | Path, config: DicomImportConfig) -> dict:
    """The import's summary as written to ``OUT/dicom_import.json``."""
    skipped = {reason: {"files": len(paths), "examples": paths[:5]} for reason, paths in result.scan.skipped.items()}
    if result.repeated_files:
        skipped["repeated SOPInstanceUID (the same slice twice in the export)"] = {
            "files": len(result.repeated_files), "examples": result.repeated_files[:5]}
    return {
        "root": str(root),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config.model_dump(mode="json"),
        "files": result.scan.n_files,
        "skipped_files": skipped,
        "studies": [dataclasses.asdict(s) for s in result.studies],
        "cases": result.cases.table.num_rows if result.cases is not None else None,
        "unmatched_studies": [{"study_uid": s.study_uid, "ct_id": s.ct_id, "accession": s.accession}
                              for s in result.unmatched_studies],
        "reports_without_ct": result.reports_without_ct,
    }


def stored_report_ids(db: str | Path | None) -> set[str] | None:
    """Report ids of the store (None when the store file does not exist yet)."""
    from extract.store import Store, default_db_path

    path = Path(db) if db is not None else default_db_path()
    if not path.is_file():
        return None
    with Store(path, read_only=True) as store:
        return {r for r in store.query("SELECT DISTINCT report_id FROM reports").column(0).to_pylist()}
