"""For tests and benchmarks of the audit: `rsuper predict` output folders written from a case's true masks (a
perfect model), and report records with one injected error."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from train.data.labels import organ_of_label
from train.data.records import CaseRecords, ReportedTumor
from train.predict import write_outputs


def truth_probabilities(organs: np.ndarray, lesions: np.ndarray, classes: Sequence[str],
                        organ_names: Mapping[int, str], lesion_names: Mapping[int, str]) -> np.ndarray:
    """0 / 1 float (C, X, Y, Z) "probabilities" of ``classes`` from a case's organ and lesion label maps.

    An organ channel is every value whose label belongs to that organ (its sub-segments too); a lesion channel is
    the value named ``<organ>_lesion``.
    """
    out = np.zeros((len(classes), *organs.shape), np.float32)
    for c, name in enumerate(classes):
        if name.endswith("_lesion"):
            values = [v for v, n in lesion_names.items() if n == name]
            out[c] = np.isin(lesions, values)
        else:
            values = [v for v, n in organ_names.items() if v and organ_of_label(n) == name]
            out[c] = np.isin(organs, values)
    return out


def write_truth_prediction(case_dir: Path, out_dir: Path, classes: Sequence[str], organ_names: Mapping[int, str],
                           lesion_names: Mapping[int, str], lesions: np.ndarray | None = None) -> dict:
    """Write ``out_dir`` as `rsuper predict` would for a model that finds the case's true masks.

    Args:
        case_dir: a case folder with ``ct.nii.gz``, ``organs.nii.gz`` and ``lesions.nii.gz``.
        out_dir: the prediction folder to write.
        classes: output channel names (organs, then ``<organ>_lesion``).
        organ_names, lesion_names: value -> label name of the two label maps.
        lesions: a lesion label map to use instead of the case's own (a model's mistakes).
    """
    import nibabel as nib

    organ_img = nib.load(str(case_dir / "organs.nii.gz"))
    organs = np.asarray(organ_img.dataobj)
    if lesions is None:
        lesions = np.asarray(nib.load(str(case_dir / "lesions.nii.gz")).dataobj)
    prob = truth_probabilities(organs, lesions, classes, organ_names, lesion_names)
    return write_outputs(out_dir, prob, classes, np.asarray(organ_img.affine, float), case_dir / "ct.nii.gz",
                         save_probabilities=True)


#: Report errors :func:`inject_error` makes (the kinds of issue 22's benchmark).
ERROR_KINDS = ("size_x10", "size_div10", "wrong_organ", "left_out", "normal_called_abnormal")


def inject_error(records: CaseRecords, kind: str, rng: np.random.Generator,
                 organs: Sequence[str] = ("liver", "pancreas", "kidney")) -> CaseRecords | None:
    """The records of a report with one error of ``kind``; None when the report cannot carry it (no sized tumour
    to scale, no tumour to leave out or move, no normal organ to call abnormal).

    * ``size_x10`` / ``size_div10``: one sized tumour's diameters times or divided by ten (mm read as cm, ...);
    * ``wrong_organ``: one tumour moved to another of ``organs`` that is reported normal, keeping its size; the
      organ it left is then reported normal when nothing else is there;
    * ``left_out``: one tumour dropped; its organ is then reported normal when nothing else is there;
    * ``normal_called_abnormal``: a 20 mm tumour added to an organ the report calls normal.
    """
    tumors = list(records.tumors)
    free = set(records.lesion_free)
    in_channels = [i for i, t in enumerate(tumors) if t.organ in organs]

    def emptied(organ: str) -> set[str]:
        return {organ} if not any(t.organ == organ for t in tumors) else set()

    if kind in ("size_x10", "size_div10"):
        sized = [i for i in in_channels if tumors[i].diameters_mm]
        if not sized:
            return None
        i = sized[int(rng.integers(len(sized)))]
        factor = 10.0 if kind == "size_x10" else 0.1
        tumors[i] = dataclasses.replace(tumors[i], diameters_mm=tuple(d * factor for d in tumors[i].diameters_mm))
    elif kind == "left_out":
        if not in_channels:
            return None
        t = tumors.pop(in_channels[int(rng.integers(len(in_channels)))])
        free |= emptied(t.organ)
    elif kind == "wrong_organ":
        targets = [o for o in organs if o in free]
        if not in_channels or not targets:
            return None
        i = in_channels[int(rng.integers(len(in_channels)))]
        target = targets[int(rng.integers(len(targets)))]
        old = tumors[i]
        tumors[i] = dataclasses.replace(old, organ=target, segments=(), side=None)
        free = (free - {target}) | emptied(old.organ)
    elif kind == "normal_called_abnormal":
        targets = [o for o in organs if o in free]
        if not targets:
            return None
        target = targets[int(rng.integers(len(targets)))]
        tumors.append(ReportedTumor(target, diameters_mm=(20.0,), attenuation="hypo"))
        free.discard(target)
    else:
        raise ValueError(f"error kind {kind!r}: expected one of {ERROR_KINDS}")
    return dataclasses.replace(records, tumors=tuple(tumors), lesion_free=frozenset(free))
