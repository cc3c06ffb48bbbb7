import os
import subprocess
import sys
from pathlib import Path

from train.data.records import CaseRecords, ReportedTumor
from train.datasource import canonical, organ_box

REPO = Path(__file__).resolve().parents[2]


def test_organ_box_grows_by_margin_in_mm():
    boxes = {"liver": [[10, 20, 5], [19, 29, 9]], "kidney_left": [[30, 22, 6], [35, 25, 8]]}
    # union [10..35] x [20..29] x [5..9], grown by 4 mm at 2 x 2 x 4 mm voxels = 2, 2, 1 voxels
    box = organ_box(boxes, (64, 64, 32), (2.0, 2.0, 4.0), 4.0, (8, 8, 8))
    assert box == (slice(8, 38), slice(18, 32), slice(4, 11 + 1))


def test_organ_box_reaches_min_size_and_stays_inside():
    boxes = {"spleen": [[0, 60, 2], [3, 62, 3]]}
    box = organ_box(boxes, (64, 64, 16), (1.0, 1.0, 1.0), 0.0, (16, 16, 16))
    assert [s.stop - s.start for s in box] == [16, 16, 16]
    assert box == (slice(0, 16), slice(48, 64), slice(0, 16))


def test_organ_box_without_labels_is_the_whole_volume():
    assert organ_box({}, (5, 6, 7), (1.0, 1.0, 1.0), 10.0, (4, 4, 4)) == (slice(0, 5), slice(0, 6), slice(0, 7))


def test_canonical_records_sort_sets():
    # Set iteration order changes with each process's string hash seed; the fingerprint text must not.
    a = CaseRecords("r1", (ReportedTumor("liver", diameters_mm=(30.0,)),),
                    frozenset({"kidney", "spleen", "pancreas", "kidney_left"}))
    text = canonical(a)
    assert '"lesion_free": ["kidney", "kidney_left", "pancreas", "spleen"]' in text
    assert '"diameters_mm": [30.0]' in text and '"organ": "liver"' in text
    assert canonical(CaseRecords("r1", a.tumors, frozenset({"kidney", "spleen"}))) != text


_FINGERPRINT_SCRIPT = """
import dataclasses
from train.data.cache import CaseFiles
from train.data.dataset import TrainingCase
from train.data.records import CaseRecords, ReportedTumor
from train.datasource import cases_fingerprint

free = frozenset(f"organ_{i}" for i in range(12))
records = CaseRecords("R1", (ReportedTumor("liver", diameters_mm=(30.0,)),), free, frozenset({"pancreas", "spleen"}))
files = CaseFiles("CT1", "ct.nii.gz", "organs.nii.gz", None, "sha1", {}, None)
changed = dataclasses.replace(records, lesion_free=free - {"organ_3"})
print(cases_fingerprint([TrainingCase(files, None), TrainingCase(files, records)]),
      cases_fingerprint([TrainingCase(files, None), TrainingCase(files, changed)]), repr(records.lesion_free))
"""


def test_cases_fingerprint_is_the_same_in_every_process_and_follows_the_data():
    runs = []
    for hash_seed in (1, 2):
        env = {**os.environ, "PYTHONHASHSEED": str(hash_seed), "PYTHONPATH": str(REPO)}
        out = subprocess.run([sys.executable, "-c", _FINGERPRINT_SCRIPT], env=env, check=True, capture_output=True,
                             text=True).stdout
        runs.append(out.split(" ", 2))
    assert runs[0][2] != runs[1][2]  # the hash seeds do reorder the set, so its repr differs
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    assert runs[0][0] != runs[0][1]


def test_ensure_phantoms_regenerates_a_set_written_with_other_settings(tmp_path):
    import json

    from train.config import DataConfig
    from train.data.phantoms import read_set_config
    from train.datasource import ensure_phantoms

    config = DataConfig(source="phantoms", root=tmp_path / "ph", phantom_count=3, phantom_shape=(40, 40, 24))
    root = ensure_phantoms(config)
    assert read_set_config(root).n == 3 and sorted(p.name for p in (root / "cases").iterdir())[-1] == "PH000_00002"
    first = (root / "cases" / "PH000_00000" / "ct.nii.gz").stat().st_mtime_ns
    ensure_phantoms(config)  # same settings: kept as is
    assert (root / "cases" / "PH000_00000" / "ct.nii.gz").stat().st_mtime_ns == first

    smaller = config.model_copy(update={"phantom_count": 2})
    ensure_phantoms(smaller)
    assert read_set_config(root).n == 2
    assert sorted(p.name for p in (root / "cases").iterdir()) == ["PH000_00000", "PH000_00001"]
    assert len((root / "ground_truth.jsonl").read_text().splitlines()) == 2
    assert json.loads((root / "phantoms.json").read_text())["shape"] == [40, 40, 24]

    every_case_has_a_tumour = smaller.model_copy(update={"phantom_tumor_count_probabilities": (0.0, 1.0)})
    ensure_phantoms(every_case_has_a_tumour)
    assert read_set_config(root).tumor_count_probabilities == (0.0, 1.0)
    truth = [json.loads(line) for line in (root / "ground_truth.jsonl").read_text().splitlines()]
    assert [len(t["tumors"]) for t in truth] == [1, 1]


def test_ensure_phantoms_keeps_a_set_without_recorded_settings(tmp_path, caplog):
    from train.config import DataConfig
    from train.datasource import ensure_phantoms

    config = DataConfig(source="phantoms", root=tmp_path / "ph", phantom_count=2, phantom_shape=(40, 40, 24))
    root = ensure_phantoms(config)
    (root / "phantoms.json").unlink()  # a set written by an older version, or a hand-made subset
    with caplog.at_level("WARNING", logger="rsuper.train"):
        ensure_phantoms(config.model_copy(update={"phantom_count": 5}))
    assert len((root / "ground_truth.jsonl").read_text().splitlines()) == 2
    assert "holds 2 phantoms without recorded settings and the config asks for 5" in caplog.text


def test_case_source_trains_on_the_stored_cases_table(tmp_path, caplog):
    """`source: cases` takes CT <-> report pairs and splits from the store's `cases` table, not from the folder."""
    import json

    import pyarrow as pa

    from extract.store import Store
    from train.config import DataConfig
    from train.data.cases import CASES_SCHEMA, build_cases
    from train.data.phantoms import PhantomConfig, write_phantom_set
    from train.datasource import CaseData

    root = tmp_path / "ds"
    write_phantom_set(root, PhantomConfig(n=4, seed=3, shape=(40, 40, 24)))
    rows = build_cases(root, root / "case_reports.csv").table.to_pylist()
    ids = [r["ct_id"] for r in rows]
    for i, r in enumerate(rows):
        r["split"] = "val" if i == 0 else "train"
    rows[1]["report_id"] = None  # the stored mapping gives this CT no report; case_reports.csv does
    with Store(tmp_path / "rsuper.duckdb") as store:
        store.replace_cases(pa.Table.from_pylist(rows, schema=CASES_SCHEMA))
    config = DataConfig(source="cases", root=root, db=tmp_path / "rsuper.duckdb", records="truth",
                        report_only_fraction=0.0, val_fraction=0.5)
    data = CaseData.from_config(config)
    assert [c.files.ct_id for c in data.train_cases] == ids[1:] and json.loads(data.describe())["val_cases"] == 1
    assert data.train_cases[0].records is None and all(c.records is not None for c in data.train_cases[1:])

    with caplog.at_level("WARNING", logger="rsuper.train"):
        rebuilt = CaseData.from_config(config.model_copy(update={"db": tmp_path / "none.duckdb"}))
    assert "no `cases` table" in caplog.text and all(c.records is not None for c in rebuilt.train_cases)
