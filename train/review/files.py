"""Reading `rsuper predict` outputs (and the cases' own organ masks) for the audit and the case pages; writing the
audit CSV. The comparison itself is :mod:`train.review.audit`, on arrays.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import os
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from schemas.audit import CTAudit
from train.data.labels import canonical_lut
from train.data.subsegments import derive_subsegments
from train.data.records import CaseRecords
from train.review.audit import Finding, Pairs, audit_case
from train.review.config import AuditConfig
from train.review.lesions import PredictedLesion, organ_extents_mm, organ_map_from_channels, predicted_lesions


class PredictionError(ValueError):
    """A prediction folder that cannot be read; the message names the file and what to do."""


@dataclasses.dataclass
class Prediction:
    """One CT's `rsuper predict` outputs on its own grid.

    Attributes:
        ct_id: the folder name.
        folder: the prediction folder.
        lesion_names: value -> ``<organ>_lesion``.
        classes: every output channel's name (``channels.nii.gz`` order).
        affine: voxel -> world (mm).
        spacing_mm: voxel size (mm).
        ct_path: the CT that was predicted (from summary.json), None when not recorded.
        shape: the grid (X, Y, Z).
        lesion_map: uint8 (X, Y, Z), value v = channel ``lesion_names[v]``; read again after :meth:`release`.
    """

    ct_id: str
    folder: Path
    lesion_names: dict[int, str]
    classes: list[str]
    affine: np.ndarray
    spacing_mm: tuple[float, float, float]
    ct_path: Path | None
    shape: tuple[int, int, int]
    _lesion_map: np.ndarray | None = dataclasses.field(default=None, repr=False)

    @property
    def lesion_map(self) -> np.ndarray:
        if self._lesion_map is None:
            self._lesion_map = np.asarray(_read_nifti(self.folder / "lesions.nii.gz"), np.uint8)
        return self._lesion_map

    def release(self) -> None:
        """Drop the lesion map: an audit of a thousand CTs keeps their lesions, not their volumes."""
        self._lesion_map = None

    @property
    def organs(self) -> list[str]:
        """Organs with a lesion channel."""
        return [self.lesion_names[v].removesuffix("_lesion") for v in sorted(self.lesion_names)]

    def channels(self) -> np.ndarray:
        """bool (X, Y, Z, C) of every output channel (read on demand: the largest file)."""
        return _read_nifti(self.folder / "channels.nii.gz").astype(bool)

    def probabilities(self) -> np.ndarray | None:
        """float (X, Y, Z, C_lesion) lesion probabilities when `--probabilities` wrote them."""
        path = self.folder / "probabilities.nii.gz"
        return _read_nifti(path) if path.is_file() else None


@dataclasses.dataclass
class CaseResult:
    """The audit of one CT with what its case page shows."""

    audit: CTAudit | None  # None on pages `rsuper predict` writes (no report compared)
    findings: list[Finding]
    lesions: list[PredictedLesion]
    pairs: Pairs  # each reported lesion with its matched prediction (None: not found)
    records: CaseRecords | None
    prediction: Prediction
    case_dir: Path | None


def prediction_folders(root: Path) -> list[Path]:
    """The CT folders (with a summary.json) under a `rsuper predict` output folder, by name."""
    return sorted(p.parent for p in Path(root).glob("*/summary.json"))


def _read_nifti_gz(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(read-only data, affine) of an unscaled single-member ``.nii.gz`` decompressed in one zlib call, None for
    anything else (nibabel reads it then). nibabel's streaming gzip reader costs a third more for a 25 MB volume."""
    import nibabel as nib

    if not str(path).endswith(".nii.gz"):
        return None
    try:
        inflate = zlib.decompressobj(31)  # 31: gzip framing, its CRC checked
        raw = inflate.decompress(Path(path).read_bytes())
        if not inflate.eof or inflate.unused_data:  # cut, or several gzip members
            return None
        klass = {348: nib.Nifti1Image, 540: nib.Nifti2Image}.get(int.from_bytes(raw[:4], "little"))
        if klass is None:  # big-endian or not NIfTI
            return None
        header = klass.header_class.from_fileobj(io.BytesIO(raw))
        slope, inter = header.get_slope_inter()
        if slope is not None and (slope, inter) != (1.0, 0.0):
            return None
        shape = header.get_data_shape()
        data = np.frombuffer(raw, header.get_data_dtype(), count=int(np.prod(shape)),
                             offset=int(header.get_data_offset())).reshape(shape, order="F")
        return data, np.asarray(header.get_best_affine(), float)
    except Exception:  # noqa: BLE001 - whatever is wrong, nibabel reads the file again and names the problem
        return None


def _read_nifti(path: Path, with_affine: bool = False):
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    fast = _read_nifti_gz(path)
    if fast is not None:
        return fast if with_affine else fast[0]
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except (OSError, ValueError, EOFError, ImageFileError) as exc:  # missing, cut or foreign files
        raise PredictionError(f"{path}: cannot read the NIfTI file ({exc}); predict that CT again") from exc
    return (data, np.asarray(img.affine, float)) if with_affine else data


def read_prediction(folder: Path) -> Prediction:
    """Read one CT's prediction folder (``summary.json``, ``labels.json``, ``lesions.nii.gz``).

    Raises:
        PredictionError: a missing or unreadable file, naming it.
    """
    folder = Path(folder)
    texts = {}
    for name in ("summary.json", "labels.json"):
        try:
            texts[name] = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise PredictionError(f"{folder / name}: not an output of `rsuper predict` ({reason}); predict that CT "
                                  "again") from exc
    labels = texts["labels.json"]
    try:
        lesion_names = {int(v): str(n) for v, n in labels["lesions"].items()}
        classes = [str(c) for c in labels["channels"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PredictionError(f"{folder / 'labels.json'}: no `lesions` / `channels` entries ({exc!r}); predict "
                              "that CT again") from exc
    lesion_map, affine = _read_nifti(folder / "lesions.nii.gz", with_affine=True)
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    ct_path = texts["summary.json"].get("ct_path") if isinstance(texts["summary.json"], dict) else None
    return Prediction(folder.name, folder, lesion_names, classes, affine, spacing, Path(ct_path) if ct_path else None,
                      tuple(int(n) for n in lesion_map.shape[:3]), np.asarray(lesion_map, np.uint8))


def case_folder(cases_root: Path | None, ct_id: str) -> Path | None:
    """The case folder of a CT under a case root (``ROOT/cases/<id>`` or ``ROOT/<id>``), None when absent."""
    if cases_root is None:
        return None
    for d in (Path(cases_root) / "cases" / ct_id, Path(cases_root) / ct_id):
        if d.is_dir():
            return d
    return None


def organ_map_for(pred: Prediction, case_dir: Path | None, organ_names: Mapping[int, str] | None) -> np.ndarray:
    """The canonical organ label map of a CT on the prediction grid: the case's own ``organs.nii.gz`` (sub-segments
    and sides as drawn, missing parts derived) when it exists on that grid, else the predicted organ channels."""
    path = case_dir / "organs.nii.gz" if case_dir is not None else None
    if path is not None and path.is_file() and organ_names:
        organs, affine = _read_nifti(path, with_affine=True)
        if organs.shape == pred.shape and np.allclose(affine, pred.affine, atol=1e-3):
            lut = canonical_lut(dict(organ_names))
            if organs.dtype.kind == "u" and organs.max(initial=0) < len(lut):
                canonical = lut[organs]  # no int64 copy of the volume
            else:
                canonical = lut[np.clip(organs.astype(np.int64), 0, len(lut) - 1)]
            return derive_subsegments(canonical, affine)[0]
    return organ_map_from_channels(pred.channels(), pred.classes, pred.affine)


def ct_path_for(pred: Prediction, case_dir: Path | None) -> Path | None:
    """The CT of a prediction: the path `rsuper predict` recorded, else the case folder's ``ct.nii.gz``."""
    for p in (pred.ct_path, case_dir / "ct.nii.gz" if case_dir is not None else None):
        if p is not None and Path(p).is_file():
            return Path(p)
    return None


def read_ct_hu(path: Path | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """The CT in HU when it lies on the prediction grid (``shape``), else None."""
    if path is None:
        return None
    ct = _read_nifti(path)
    return ct if ct.shape == tuple(shape) else None


def audit_folder(
    folder: Path, records: CaseRecords | None, config: AuditConfig, *, cases_root: Path | None = None,
    organ_names: Mapping[int, str] | None = None, use_ct: bool = True, predictions: str = "",
) -> CaseResult:
    """Audit one prediction folder against its CT's records; with ``records`` None only its lesions are read (the
    pages of `rsuper predict`)."""
    from scipy import ndimage

    pred = read_prediction(folder)
    case_dir = case_folder(cases_root, pred.ct_id)
    lesions, extents = [], {}
    has_lesions = bool(pred.lesion_map.any())
    reports_sizes = records is not None and any(t.diameters_mm and t.organ in pred.organs for t in records.tumors)
    if has_lesions or reports_sizes:  # else nothing to place, measure or size-check: the other volumes are not read
        organ_map = organ_map_for(pred, case_dir, organ_names)
        boxes = ndimage.find_objects(organ_map)
        regions = {t.segments for t in records.tumors if t.segments} if records is not None else set()
        extents = organ_extents_mm(organ_map, pred.spacing_mm, boxes=boxes, regions=sorted(regions))
    if has_lesions:
        ct = read_ct_hu(ct_path_for(pred, case_dir), pred.shape) if use_ct else None
        lesions = predicted_lesions(pred.lesion_map, pred.lesion_names, pred.spacing_mm, organ_map=organ_map,
                                    probabilities=pred.probabilities(), ct_hu=ct,
                                    min_volume_mm3=config.min_lesion_volume_mm3, organ_boxes=boxes)
    pred.release()  # a page reads it again
    row, findings, pairs = None, [], []
    if records is not None:
        row, findings, pairs = audit_case(pred.ct_id, records, lesions, pred.organs, config, extents,
                                          predictions=predictions, voxel_mm=min(pred.spacing_mm))
    return CaseResult(row, findings, lesions, pairs, records, pred, case_dir)


def page_arrays(result: CaseResult, organ_names: Mapping[int, str] | None = None
                ) -> tuple[np.ndarray | None, np.ndarray]:
    """(CT in HU or None, canonical organ map) of a result, read again for its case page: a run over a thousand
    CTs keeps no volume in memory."""
    pred = result.prediction
    return (read_ct_hu(ct_path_for(pred, result.case_dir), pred.shape),
            organ_map_for(pred, result.case_dir, organ_names))


def _audit_one(job: tuple[Path, CaseRecords], **kwargs) -> CaseResult:
    return audit_folder(job[0], job[1], **kwargs)


def audit_predictions(
    root: Path, records_of: Callable[[str], object | None], config: AuditConfig, *, cases_root: Path | None = None,
    organ_names: Mapping[int, str] | None = None, use_ct: bool = True, progress: bool = False, workers: int = 1,
) -> tuple[list[CaseResult], list[str]]:
    """Audit every CT under a `rsuper predict` output folder.

    Args:
        root: the predictions folder (``<ct_id>/summary.json`` ...).
        records_of: ct_id -> its report's records, or None when it has none.
        config, cases_root, organ_names, use_ct: see :func:`audit_folder`.
        progress: a tqdm bar on stderr.
        workers: processes auditing CTs side by side (1: in this process). Each CT is independent, and reading
            and decompressing its files is most of the time.

    Returns:
        The results, highest score first (ties by ct_id), and the CTs skipped for want of a record.
    """
    jobs, skipped = [], []
    for folder in prediction_folders(root):
        records = records_of(folder.name)
        if records is None:
            skipped.append(folder.name)
        else:
            jobs.append((folder, records))
    audit_one = functools.partial(_audit_one, config=config, cases_root=cases_root, organ_names=organ_names,
                                  use_ct=use_ct, predictions=str(root))

    def bar(it):
        if not progress:
            return it
        from tqdm import tqdm

        return tqdm(it, total=len(jobs), desc="audit", unit="CT", disable=None)  # None: only on a terminal

    if workers > 1 and len(jobs) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, len(jobs))) as pool:
            # lesion maps are released before a result travels back: small pickles
            results = list(bar(pool.map(audit_one, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers))))))
    else:
        results = [audit_one(job) for job in bar(jobs)]
    results.sort(key=lambda r: (-r.audit.score, r.audit.ct_id))
    return results, skipped


def write_audit_csv(audits: Iterable[CTAudit], path: Path) -> Path:
    """The audit rows as CSV (list columns joined by ``; ``), through a temporary file and a rename."""
    from schemas.tables import AUDIT_SCHEMA

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(AUDIT_SCHEMA.names)
        for a in audits:
            row = a.model_dump(mode="json")
            writer.writerow(["; ".join(v) if isinstance(v, list) else ("" if v is None else v)
                             for v in (row[n] for n in AUDIT_SCHEMA.names)])
    os.replace(tmp, path)
    return path
