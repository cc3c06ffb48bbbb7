import json

from typer.testing import CliRunner

from extract.store import Store
from rsuper.cli import app

from .conftest import CORRUPT, TILTED, study_tags

runner = CliRunner()
SETS = ["--set", "series.min_slices=10", "--set", "scan_workers=1"]


def test_images_import_fills_the_cases_table_and_lists_what_failed(tmp_path, export, store_with_reports):
    root, cases = export
    out = tmp_path / "out"
    result = runner.invoke(app, ["images", "import", str(root), "--out", str(out), "--db", str(store_with_reports),
                                 *SETS])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["cases"] == summary["joined"] == 18 and summary["failed"] == 2 and summary["imported"] == 18
    assert summary["cases_table_written"] and summary["reports_without_ct"] == 4 and summary["skipped_files"] == 2
    problems = [line for line in result.stderr.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 2
    assert any(f"study {study_tags(CORRUPT).study_uid} (accession {cases[CORRUPT].report_id}): PixelData" in p
               for p in problems)
    assert any(f"study {study_tags(TILTED).study_uid}" in p and "gantry tilt" in p for p in problems)
    assert "no CT for report: ACC_NO_STUDY_1" in result.stderr
    assert "skipped 2 file(s): not DICOM" in result.stderr
    with Store(store_with_reports, read_only=True) as store:
        rows = store.query("SELECT ct_id, report_id FROM cases").to_pylist()
    assert len(rows) == 18 and {r["report_id"] for r in rows} == {
        c.report_id for i, c in cases.items() if i not in (CORRUPT, TILTED)}
    again = runner.invoke(app, ["images", "import", str(root), "--out", str(out), "--db", str(store_with_reports),
                                *SETS])
    assert json.loads(again.stdout.strip().splitlines()[-1])["resumed"] == 18


def test_bad_config_is_one_line(tmp_path, export):
    root, _ = export
    result = runner.invoke(app, ["images", "import", str(root), "--out", str(tmp_path / "o"),
                                 "--set", "join_keys=[AccessionNumbr]"])
    assert result.exit_code == 2 and "join_keys: Value error, 'AccessionNumbr': not DICOM keywords" in result.stderr
    config = tmp_path / "c.yaml"
    config.write_text("series: {min_slices: 0}\n")
    result = runner.invoke(app, ["images", "import", str(root), "--out", str(tmp_path / "o"), "--config", str(config)])
    assert result.exit_code == 2 and f"{config}: series.min_slices" in result.stderr
