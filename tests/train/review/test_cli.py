import csv

import numpy as np
from typer.testing import CliRunner

from extract.store import Store
from rsuper import cli
from train.data.records import records_from_ground_truth
from train.evaluate import read_mapping


def _run(*args):
    result = CliRunner().invoke(cli.app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_audit_fills_the_table_csv_and_pages_and_is_idempotent(reviewed, tmp_path):
    cases, pred = reviewed
    db = tmp_path / "s.duckdb"
    args = ("audit", pred, "--cases", cases, "--records", "truth", "--db", db, "--out", tmp_path / "out",
            "--pages", 2)
    out = _run(*args)
    assert "audited 6 CTs (0 disagree), 0 without a report record" in out
    assert _run(*args, "--workers", 2) == out  # again, in two processes: the same rows, not twice as many
    with Store(db, read_only=True) as store:
        rows = store.query("SELECT ct_id, score, predictions FROM audit ORDER BY ct_id").to_pylist()
    assert len(rows) == 6 and {r["score"] for r in rows} == {0.0} and {r["predictions"] for r in rows} == {str(pred)}
    with (tmp_path / "out" / "audit.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 6
    index = (tmp_path / "out" / "pages" / "index.html").read_text()
    assert index.count(".html\">") == 2 and index.count("<tr>") == 7  # two pages drawn, six CTs listed


def test_al_round_takes_the_top_k_or_a_seeded_random_k(reviewed, tmp_path):
    cases, pred = reviewed
    records = records_from_ground_truth(cases / "ground_truth.jsonl")
    mapping = read_mapping(cases / "case_reports.csv")
    # a store whose records are the truth with one tumour each reported ten times too large
    from train.data.labels import load_label_names
    from train.review.config import AuditConfig
    from train.review.files import audit_predictions
    from train.review.synthetic import inject_error
    from schemas.tables import audit_table

    rng = np.random.default_rng(1)
    bad = {rid: inject_error(r, "size_x10", rng) or r for rid, r in records.items()}
    results, _ = audit_predictions(pred, lambda ct: bad.get(mapping.get(ct)), AuditConfig(), cases_root=cases,
                                   organ_names=load_label_names(cases / "labels.json"))
    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        store.write_audit(audit_table([r.audit for r in results]))
    wrong = sorted(r.audit.ct_id for r in results if r.audit.score > 0)
    assert len(wrong) >= 2
    (tmp_path / "done.txt").write_text(wrong[0] + "\n")
    _run("al-round", "--k", 2, "--db", db, "--exclude", tmp_path / "done.txt", "--out", tmp_path / "top.csv")
    with (tmp_path / "top.csv").open() as fh:
        top = list(csv.DictReader(fh))
    assert [t["rank"] for t in top] == ["1", "2"] and wrong[0] not in {t["ct_id"] for t in top}
    assert top[0]["reasons"] == "likely_unit_error" and float(top[0]["score"]) >= float(top[1]["score"])
    picks = []
    for _ in range(2):
        _run("al-round", "--k", 3, "--strategy", "random", "--seed", 5, "--db", db, "--out", tmp_path / "r.csv")
        with (tmp_path / "r.csv").open() as fh:
            picks.append([r["ct_id"] for r in csv.DictReader(fh)])
    assert picks[0] == picks[1] and len(set(picks[0])) == 3


def test_predict_on_a_folder_writes_pages_for_every_ct(reviewed, tmp_path):
    import json

    import torch

    from train.checkpoint import save_checkpoint
    from train.config import load_config
    from train.model import build_network

    cases, _ = reviewed
    cfg = load_config(None, ["data.classes=[liver, kidney, liver_lesion, kidney_lesion]", "data.patch_size=[16,16,16]",
                             "model.filters=[4, 8, 16]", "data.normalization=window"])
    torch.manual_seed(0)
    net = build_network(cfg.model, 1, len(cfg.data.classes))
    save_checkpoint(tmp_path / "net.pt", {"config": cfg.model_dump(mode="json"), "model": net.state_dict()})
    some = tmp_path / "cts"
    for case in sorted((cases / "cases").iterdir())[:2]:
        (some / case.name).mkdir(parents=True)
        (some / case.name / "ct.nii.gz").symlink_to(case / "ct.nii.gz")
    out = _run("predict", tmp_path / "net.pt", some, "--out", tmp_path / "pred", "--overlap", 0, "--pages", 1)
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"predicted": 2, "out": str(tmp_path / "pred"), "pages": str(tmp_path / "pred/pages/index.html")}
    index = (tmp_path / "pred" / "pages" / "index.html").read_text()
    assert index.count("<tr>") == 3 and index.count('.html">') == 1  # both listed, one page drawn
    summary = json.loads((tmp_path / "pred" / sorted(p.name for p in some.iterdir())[0] / "summary.json").read_text())
    assert summary["ct_path"].endswith("/ct.nii.gz")
