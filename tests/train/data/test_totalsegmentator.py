"""The real TotalSegmentator on a phantom CT: opt-in, runs only where the program and its weights are installed."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from train.data import totalsegmentator as TS

FAST = not TS.missing_weights("total", fast=True)
pytestmark = [
    pytest.mark.totalsegmentator,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("TotalSegmentator") is None, reason="TotalSegmentator is not installed"),
    pytest.mark.skipif(bool(TS.missing_weights("total", fast=FAST)), reason="TotalSegmentator weights not on disk"),
]


def test_real_totalsegmentator_output_maps_onto_our_labels(tmp_path):
    from train.data.organs import OrgansConfig, run_organs
    from train.data.phantoms import PhantomConfig, write_phantom_set

    write_phantom_set(tmp_path / "set", PhantomConfig(n=1, seed=3, shape=(96, 96, 64)))
    case = next((tmp_path / "set" / "cases").iterdir())
    root = tmp_path / "root"
    (root / case.name).mkdir(parents=True)
    shutil.copy(case / "ct.nii.gz", root / case.name / "ct.nii.gz")
    run = run_organs(root, OrgansConfig(source="totalsegmentator", device="cpu", fast=FAST))
    assert run.written == [case.name], run.problems
    written = {p.name for p in (root / case.name / "totalsegmentator").iterdir()}
    assert written == {f"{name}.nii.gz" for name in TS.TASK_CLASSES["total"]}
    names = json.loads((root / "labels.json").read_text())
    values = np.unique(np.asarray(nib.load(root / case.name / "organs.nii.gz").dataobj))
    assert set(str(v) for v in values) <= set(names)
