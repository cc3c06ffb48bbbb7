"""`rsuper organs`: organ masks as users have them -> the label map and label-name file `rsuper cases` reads.

Each case is a folder ``ROOT/<case>/`` (or ``ROOT/cases/<case>/``) holding ``ct.nii.gz``. Its masks come from
(``source``):

* ``segmentations``: one mask file per class in ``<case>/segmentations/`` (AbdomenAtlas, PanTS, the
  TotalSegmentator data set), class names from the file names;
* ``label_map``: one label map in the case folder with a label-name file;
* ``totalsegmentator``: TotalSegmentator run on the CT (task ``total``, plus ``liver_segments`` when asked) into
  ``<case>/totalsegmentator/`` and ``<case>/totalsegmentator_liver_segments/``, one file per class;
* ``auto``: ``segmentations`` when the folder exists, else ``label_map`` when set, else ``totalsegmentator``.

Class names resolve through :mod:`schemas.label_aliases`. Painting rules: whole organs first (a voxel already
taken keeps its organ), then organ parts (sub-segments, sides) over their own organ or background, then lesions,
which join their host organ's mask where it is background (an organ mask covers its lesions). Kidney sides and
pancreas head / body / tail missing from the masks are derived geometrically (train/data/subsegments.py).

Written per case: ``organs.json`` (what was mapped, ignored, derived), optional ``lesions.nii.gz``, then
``organs.nii.gz`` last, each through a temporary file; per root: ``labels.json`` (and ``lesion_labels.json``),
values = canonical label indices. Every case of a root must provide the same labels, since one label file
serves them all (a case that provides others is a problem, not written). A rerun skips finished cases.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from schemas.label_aliases import LESION_LABELS, LabelAlias, organ_of_own_label, resolve_label_name
from train.data import labels as L
from train.data import totalsegmentator as TS
from train.data.phantoms import save_nifti, write_json_atomic
from train.data.subsegments import derive_subsegments

_AFFINE_TOLERANCE_MM = 1e-3
GENERIC_LESION_VALUE = 255
LABELS_FILE = "labels.json"
#: The parts train/data/subsegments.py derives for an organ mask that has none.
_DERIVED_PARTS = {"kidney": ("kidney_left", "kidney_right"),
                  "pancreas": ("pancreas_head", "pancreas_body", "pancreas_tail")}
LESION_LABELS_FILE = "lesion_labels.json"


class OrgansConfig(BaseModel):
    """Settings of `rsuper organs` (a YAML file with these keys, each also a command-line option).

    Attributes:
        source: where each case's masks come from: ``auto``, ``segmentations``, ``label_map`` or
            ``totalsegmentator`` (module docstring).
        segmentations_dir: folder inside each case with one mask file per class.
        label_map: file name of the label map inside each case (source ``label_map``).
        label_names: label-name file of ``label_map`` (JSON / YAML either way round, or a dataset.json).
        liver_segments: TotalSegmentator: also run task ``liver_segments`` (Couinaud segments 1-8).
        fast: TotalSegmentator ``--fast`` (3 mm model) for task ``total``.
        device: TotalSegmentator ``--device`` (``gpu``, ``cpu``, ``mps``, ``gpu:N``).
        executable: the TotalSegmentator program (found on PATH; its own environment is fine).
        derive_subsegments: write kidney sides and pancreas head / body / tail derived from geometry when the
            masks have only the whole organ.
        lesion_mask: write lesion classes (``liver_tumor``, ``kidney_cyst_left``...) to ``lesions.nii.gz``: the
            case then trains as a voxel-annotated lesion case for those organs, so only for reviewed annotations
            (AbdomenAtlas, PanTS), never for TotalSegmentator's kidney cysts. Off: lesion voxels only join their
            organ's mask.
        overwrite: redo cases that already have ``organs.nii.gz``.
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt key in --config is an error, not silently ignored

    source: Literal["auto", "segmentations", "label_map", "totalsegmentator"] = "auto"
    segmentations_dir: str = "segmentations"
    label_map: str | None = None
    label_names: Path | None = None
    liver_segments: bool = False
    fast: bool = False
    device: str = "gpu"
    executable: str = "TotalSegmentator"
    derive_subsegments: bool = True
    lesion_mask: bool = False
    overwrite: bool = False

    @model_validator(mode="after")
    def _label_map_needs_names(self) -> "OrgansConfig":
        if (self.label_map is None) != (self.label_names is None):
            raise ValueError("label_map and label_names: give both (one label map per case and its label-name file)")
        if self.source == "label_map" and self.label_map is None:
            raise ValueError("source label_map: set label_map and label_names")
        return self


class OrganMaskError(ValueError):
    """A case whose masks cannot be mapped; the message names the file and the names."""


@dataclasses.dataclass
class MappedMasks:
    """One case's masks in our vocabulary.

    Attributes:
        labels: uint8 canonical label map (X, Y, Z), values index :data:`train.data.labels.CANONICAL_LABELS`.
        lesions: uint8 lesion codes (1 + organ index, 255 generic) or None without ``lesion_mask``.
        affine: the CT's voxel -> world (mm) affine, which the maps are written with.
        provided: our label names the masks provide (derived parts included), sorted. Decided by the classes,
            not by the voxels, so that cases with the same classes declare the same labels.
        provided_lesions: lesion names the lesion map annotates, sorted.
        mapped: class name as written -> our name.
        ignored: class names with no organ key.
        folded: lesion class names written to no lesion map (no ``lesion_mask``): their voxels joined their organ's
            mask, or were dropped for a generic lesion name whose organ is unknown.
        derived: labels derived from geometry.
        overlap_voxels: voxels two classes claimed (the first kept); 0 for TotalSegmentator's own output.
    """

    labels: np.ndarray
    lesions: np.ndarray | None
    affine: np.ndarray
    provided: list[str]
    provided_lesions: list[str]
    mapped: dict[str, str]
    ignored: list[str]
    folded: list[str]
    derived: list[str]
    overlap_voxels: int

    def summary(self) -> dict:
        fields = ("provided", "provided_lesions", "mapped", "ignored", "folded", "derived", "overlap_voxels")
        return {name: getattr(self, name) for name in fields}


def _level(alias: LabelAlias) -> int:
    """Painting order: whole organs, then organ parts, then lesions."""
    if alias.label in LESION_LABELS or alias.label == L.GENERIC_LESION:
        return 2
    return 0 if alias.label == organ_of_own_label(alias.label) else 1


def class_files(folder: Path) -> dict[str, Path]:
    """Class name -> mask file of a one-file-per-class folder (``.nii.gz`` / ``.nii``; AppleDouble ``._`` skipped)."""
    out: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        for ending in (".nii.gz", ".nii"):
            if path.name.endswith(ending):
                out[path.name[: -len(ending)]] = path
                break
    return out


def resolve_classes(names: list[str], source: str) -> tuple[dict[str, LabelAlias], list[str]]:
    """Aliases of class names; ignored ones map to ``LabelAlias(None)``.

    Raises:
        OrganMaskError: names that resolve to nothing, listed with the source.
    """
    resolved = {name: resolve_label_name(name) for name in names}
    unknown = sorted(n for n, a in resolved.items() if a is None)
    if unknown:
        raise OrganMaskError(f"{source}: unknown class names {unknown}: not an organ, sub-segment, side or lesion "
                             f"name and not in the alias table (schemas/label_aliases.py)")
    return resolved, sorted(n for n, a in resolved.items() if a.label is None)


def flat_index(mask: np.ndarray) -> np.ndarray:
    """Fortran-order flat indices of a mask's voxels (NIfTI arrays are Fortran-ordered: no copy, unlike C order)."""
    return np.flatnonzero(np.ravel(mask, order="F"))


class _Painter:
    """Paints classes into a canonical label map (and lesion map) by the module's rules, on Fortran-order flat
    views (:func:`flat_index`)."""

    def __init__(self, shape: tuple[int, ...], lesion_mask: bool):
        self.labels = np.zeros(shape, np.uint8, order="F")
        self.flat = self.labels.reshape(-1, order="F")
        self.lesions = np.zeros(shape, np.uint8, order="F") if lesion_mask else None
        self.lesion_flat = self.lesions.reshape(-1, order="F") if lesion_mask else None
        self.overlap = 0

    def paint(self, alias: LabelAlias, index: np.ndarray) -> None:
        """Paint the voxels at flat ``index`` as ``alias`` (classes must come in :func:`_level` order)."""
        current = self.flat[index]
        if _level(alias) == 2:
            if self.lesion_flat is not None:
                generic = alias.label == L.GENERIC_LESION
                self.lesion_flat[index] = GENERIC_LESION_VALUE if generic else L.lesion_code(
                    organ_of_own_label(alias.label))
            if alias.host is not None:
                host = L.CANONICAL_INDEX[alias.host]
                whole = L.CANONICAL_INDEX[organ_of_own_label(alias.host)]
                free = (current == 0) | (current == whole)
                self.flat[index[free]] = host
            return
        code = L.CANONICAL_INDEX[alias.label]
        if _level(alias) == 0:
            free = current == 0
        else:
            free = (current == 0) | (current == L.CANONICAL_INDEX[organ_of_own_label(alias.label)])
        self.overlap += int(np.count_nonzero(~free & (current != code)))
        self.flat[index[free]] = code


def _check_geometry(path: Path, img, shape: tuple[int, ...], affine: np.ndarray) -> None:
    if tuple(img.shape[:3]) != shape:
        raise OrganMaskError(f"{path}: shape {tuple(img.shape)} differs from the CT's {shape}")
    if not np.allclose(img.affine, affine, atol=_AFFINE_TOLERANCE_MM):
        raise OrganMaskError(f"{path}: affine differs from the CT's (more than {_AFFINE_TOLERANCE_MM} mm)")


def _read_voxels(path: Path, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """Fortran-order flat indices of one mask file's voxels (non-zero; fractional values above 0.5)."""
    import nibabel as nib

    img = nib.load(path)
    _check_geometry(path, img, shape, affine)
    data = np.asarray(img.dataobj)
    if data.ndim == 4:
        data = data[..., 0]
    return flat_index(data > 0.5 if data.dtype.kind == "f" else data != 0)  # bool: numpy's fast nonzero path


def map_class_files(files: dict[str, Path], shape: tuple[int, ...], affine: np.ndarray, *, source: str,
                    lesion_mask: bool = False, derive: bool = True, workers: int | None = None) -> MappedMasks:
    """Map one-file-per-class masks (class name -> path) onto our label map.

    Args:
        files: class name -> NIfTI mask (non-zero = inside; fractional values above 0.5 count as inside).
        shape, affine: the CT's grid; every mask must match it.
        source: named in messages (the folder).
        lesion_mask: also build the lesion map.
        derive: derive kidney sides / pancreas parts missing from the masks.
        workers: threads decompressing files ahead of the painting (zlib runs without the GIL); default: up to
            4, one per CPU. At most ``workers + 1`` files are held in memory.

    Raises:
        OrganMaskError: unknown class names, or a mask on another grid (naming the file).
    """
    aliases, ignored = resolve_classes(sorted(files), source)
    painter = _Painter(shape, lesion_mask)
    # Ignored classes are never read: nearly all of the time goes to decompressing the files.
    used = sorted((n for n, a in aliases.items() if a.label is not None), key=lambda n: (_level(aliases[n]), n))
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        pending = deque(pool.submit(_read_voxels, files[n], shape, affine) for n in used[:workers + 1])
        for i, name in enumerate(used):
            index = pending.popleft().result()
            if i + workers + 1 < len(used):
                pending.append(pool.submit(_read_voxels, files[used[i + workers + 1]], shape, affine))
            painter.paint(aliases[name], index)
    return _finish(painter, {n: aliases[n] for n in used}, ignored, affine, lesion_mask, derive)


def map_label_map(path: Path, label_names: L.LabelNames, affine: np.ndarray, shape: tuple[int, ...], *,
                  lesion_mask: bool = False, derive: bool = True) -> MappedMasks:
    """Map one label map with its label-name table (names as written, resolved by the alias table).

    Raises:
        OrganMaskError: unknown names, values without a name, or a map on another grid (naming the file).
    """
    import nibabel as nib

    if label_names.unknown:
        raise OrganMaskError(label_names.error())
    img = nib.load(path)
    _check_geometry(path, img, shape, affine)
    raw = np.asarray(img.dataobj)
    if raw.ndim == 4:
        raw = raw[..., 0]
    raw = np.rint(raw).astype(np.int64) if raw.dtype.kind == "f" else raw.astype(np.int64)
    values, inverse = np.unique(np.ravel(raw, order="F"), return_inverse=True)
    unnamed = sorted(set(values.tolist()) - set(label_names.raw))
    if unnamed:
        raise OrganMaskError(f"{path}: label values {unnamed[:5]} have no name in {label_names.source}")
    aliases = {}
    for value, name in label_names.raw.items():
        alias, ours = resolve_label_name(name), label_names.names[value]
        if alias is not None and alias.label == L.GENERIC_LESION and ours != L.GENERIC_LESION:
            alias = LabelAlias(ours, organ_of_own_label(ours))  # the file's only organ (read_label_file)
        aliases[name] = alias
    ignored = sorted(label_names.ignored.values())
    painter = _Painter(shape, lesion_mask)
    flat_inverse = inverse.reshape(-1)
    order = sorted(((v, n) for v, n in label_names.raw.items() if v != 0 and aliases[n].label is not None),
                   key=lambda vn: (_level(aliases[vn[1]]), vn[1]))
    position = {int(v): i for i, v in enumerate(values)}
    for value, name in order:
        if value in position:
            painter.paint(aliases[name], np.flatnonzero(flat_inverse == position[value]))
    used = {n: aliases[n] for _, n in order}
    return _finish(painter, used, ignored, affine, lesion_mask, derive)


def _finish(painter: _Painter, used: dict[str, LabelAlias], ignored: list[str], affine: np.ndarray,
            lesion_mask: bool, derive: bool) -> MappedMasks:
    provided = {a.label for a in used.values() if _level(a) < 2}
    provided |= {a.host for a in used.values() if _level(a) == 2 and a.host is not None}
    lesion_names = sorted({a.label for a in used.values() if _level(a) == 2}) if lesion_mask else []
    labels, derived = painter.labels, []
    if derive:
        labels, derived = derive_subsegments(labels, affine)
        for organ in ("kidney", "pancreas"):
            if organ in provided and not provided & set(L.ORGAN_PARTS[organ]):
                # The split replaces the whole organ, also where this CT shows none of it.
                provided = (provided - {organ}) | set(_DERIVED_PARTS[organ])
    return MappedMasks(
        labels=labels, lesions=painter.lesions if lesion_mask else None, affine=affine, provided=sorted(provided),
        provided_lesions=lesion_names, mapped={n: a.label for n, a in sorted(used.items())}, ignored=ignored,
        folded=[] if lesion_mask else sorted(n for n, a in used.items() if _level(a) == 2), derived=derived,
        overlap_voxels=painter.overlap,
    )


def label_table(names: list[str]) -> dict[str, str]:
    """The root's organ label-name file: canonical index -> name, background included."""
    return {str(L.CANONICAL_INDEX[n]): n for n in [L.BACKGROUND, *names]}


def lesion_table(names: list[str]) -> dict[str, str]:
    """The root's lesion label-name file: lesion code -> name (255 = generic lesion), background included."""
    table = {"0": L.BACKGROUND}
    for name in names:
        value = GENERIC_LESION_VALUE if name == L.GENERIC_LESION else L.lesion_code(organ_of_own_label(name))
        table[str(value)] = name
    return table


@dataclasses.dataclass
class OrgansRun:
    """Result of :func:`run_organs`."""

    written: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)  # finished by an earlier run
    problems: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (case, message)
    ignored: set[str] = dataclasses.field(default_factory=set)
    folded: set[str] = dataclasses.field(default_factory=set)


def case_folders(root: Path) -> list[Path]:
    """Case folders under ``root`` (or ``root/cases``) holding ``ct.nii.gz`` / ``ct.nii``."""
    base = root / "cases" if (root / "cases").is_dir() else root
    return [d for d in sorted(p for p in base.iterdir() if p.is_dir())
            if (d / "ct.nii.gz").is_file() or (d / "ct.nii").is_file()]


def _tasks(config: OrgansConfig) -> list[str]:
    return ["total", *(["liver_segments"] if config.liver_segments else [])]


def _task_dir(case: Path, task: str) -> Path:
    return case / ("totalsegmentator" if task == "total" else f"totalsegmentator_{task}")


def _source_of(case: Path, config: OrgansConfig) -> str:
    if config.source != "auto":
        return config.source
    if (case / config.segmentations_dir).is_dir():
        return "segmentations"
    return "label_map" if config.label_map else "totalsegmentator"


def map_case(case: Path, config: OrgansConfig, label_names: L.LabelNames | None = None,
             program: str | None = None) -> MappedMasks:
    """Map (after running TotalSegmentator when that is the source) one case folder's masks.

    Raises:
        OrganMaskError, TotalSegmentatorError: naming the file and what is wrong.
    """
    import nibabel as nib

    ct_path = next(p for p in (case / "ct.nii.gz", case / "ct.nii") if p.is_file())
    try:
        ct = nib.load(ct_path)
    except Exception as exc:  # nibabel raises many types for broken files
        raise OrganMaskError(f"{ct_path}: unreadable NIfTI ({exc})") from exc
    shape, affine = tuple(int(s) for s in ct.shape[:3]), np.asarray(ct.affine, float)
    kw = dict(lesion_mask=config.lesion_mask, derive=config.derive_subsegments)
    source = _source_of(case, config)
    if source == "label_map":
        path = case / config.label_map
        if not path.is_file():
            raise OrganMaskError(f"{path}: no label map (label_map: {config.label_map})")
        return map_label_map(path, label_names, affine, shape, **kw)
    if source == "segmentations":
        folder = case / config.segmentations_dir
        if not folder.is_dir():
            raise OrganMaskError(f"{folder}: no such folder (segmentations_dir: {config.segmentations_dir})")
        return map_class_files(class_files(folder), shape, affine, source=str(folder), **kw)
    tasks = _tasks(config)
    if program is None and not all(TS.finished(_task_dir(case, t), t) for t in tasks):
        program = TS.check_ready(tasks, config.executable, config.fast)
    files: dict[str, Path] = {}
    for task in tasks:
        out = _task_dir(case, task)
        TS.run_task(program, ct_path, out, task, device=config.device, fast=config.fast)
        files.update({n: p for n, p in class_files(out).items() if n in TS.TASK_CLASSES[task]})
    return map_class_files(files, shape, affine, source=str(case / "totalsegmentator"), **kw)


def run_organs(root: str | Path, config: OrgansConfig, progress=None) -> OrgansRun:
    """Write ``organs.nii.gz`` (and ``lesions.nii.gz``) per case and the root's label-name files.

    A bad case becomes a problem and the run goes on. Raises TotalSegmentatorError when TotalSegmentator is the
    source of some case but is missing or has no weights (one line saying what to do), before any case is done.
    """
    root = Path(root)
    run = OrgansRun()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: {'not a folder' if root.exists() else 'no such folder'} "
                                "(case folders ROOT/<case>/ct.nii.gz)")
    cases = case_folders(root)
    if not cases:
        raise FileNotFoundError(f"{root}: no case folders with ct.nii.gz")
    label_names = L.read_label_file(config.label_names) if config.label_names else None
    program = None
    tasks = _tasks(config)
    if any(_source_of(c, config) == "totalsegmentator" and not all(TS.finished(_task_dir(c, t), t) for t in tasks)
           for c in cases if config.overwrite or not (c / "organs.nii.gz").is_file()):
        program = TS.check_ready(tasks, config.executable, config.fast)
    tables: dict[str, dict] = {}
    for name in (LABELS_FILE, LESION_LABELS_FILE):
        if (root / name).is_file() and not config.overwrite:
            tables[name] = json.loads((root / name).read_text(encoding="utf-8"))
    tables_written = set(tables)
    for case in cases:
        final = case / "organs.nii.gz"
        if final.is_file() and not config.overwrite:
            run.skipped.append(case.name)
            continue
        try:
            masks = map_case(case, config, label_names, program)
        except (OrganMaskError, TS.TotalSegmentatorError, L.LabelFileError) as exc:
            run.problems.append((case.name, str(exc)))
            final.unlink(missing_ok=True)  # with overwrite, an older map would no longer match the root's labels
            continue
        wanted = {LABELS_FILE: label_table(masks.provided)}
        if config.lesion_mask:
            wanted[LESION_LABELS_FILE] = lesion_table(masks.provided_lesions)
        clash = [n for n, t in wanted.items() if tables.setdefault(n, t) != t]
        if clash:
            have = sorted(set(tables[clash[0]].values()) - {L.BACKGROUND})
            run.problems.append((case.name, f"{case}: its masks provide {masks.provided} (lesions "
                                 f"{masks.provided_lesions}) but {root / clash[0]} declares {have} for the root; "
                                 f"every case of a root needs the same classes"))
            continue
        for name, table in wanted.items():
            if name not in tables_written:
                write_json_atomic(root / name, table)
                tables_written.add(name)
        write_json_atomic(case / "organs.json", masks.summary())
        if masks.lesions is not None:
            save_nifti(masks.lesions, masks.affine, case / "lesions.nii.gz")
        save_nifti(masks.labels, masks.affine, final)  # last: its presence marks a finished case
        run.written.append(case.name)
        run.ignored |= set(masks.ignored)
        run.folded |= set(masks.folded)
        if progress is not None:
            progress(case.name, masks)
    return run

