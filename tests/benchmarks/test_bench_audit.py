"""benchmarks/bench_audit.py through its command line at a tiny size, and its error injection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _bench(*args) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_audit.py"), *map(str, args)], env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return [json.loads(line) for line in res.stdout.splitlines()]


def test_speed_audits_every_replicated_ct_and_draws_the_pages(tmp_path):
    audit, pages = _bench("speed", "--cache", tmp_path, "--shape", 40, 40, 32, "--n", 7, "--distinct", 3,
                          "--pages", 2)
    assert audit["bench"] == "audit_speed" and audit["csv_rows"] == 7 and audit["seconds"] > 0
    assert "audited 7 CTs" in audit["summary"]
    assert pages["bench"] == "pages_speed" and pages["cts"] == 2 and pages["pngs"] >= 1


def test_injected_errors_are_counted_per_kind(tmp_path):
    (row,) = _bench("injected", "--cache", tmp_path, "--shape", 40, 40, 32, "--n-injected", 20, "--db",
                    tmp_path / "s.duckdb")
    assert row["k"] == 2 and sum(v["injected"] for v in row["per_kind"].values()) == 2
    assert 0.0 <= row["precision_at_k"] <= 1.0 and row["cts"] == 20
    from extract.store import Store

    with Store(tmp_path / "s.duckdb", read_only=True) as store:
        assert store.query("SELECT count(*) AS n FROM audit").to_pylist() == [{"n": 20}]


def test_inject_cycles_kinds_over_distinct_cts_and_spares_shared_reports():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from bench_audit import inject
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    from train.data.records import CaseRecords, ReportedTumor

    def rec(rid):
        return CaseRecords(rid, (ReportedTumor("liver", diameters_mm=(20.0,)),), frozenset({"pancreas", "kidney"}))

    records = {f"r{i}": rec(f"r{i}") for i in range(12)}
    mapping = {f"ct{i}": f"r{i}" for i in range(10)} | {"ct10": "r10", "ct11": "r10"}  # r10 has two CTs
    bad, kinds = inject(records, mapping, 0.5, 0, ("liver", "pancreas", "kidney"))
    assert sorted(kinds.values()) == sorted(["size_x10", "size_div10", "wrong_organ", "left_out",
                                             "normal_called_abnormal", "size_x10"])
    assert "ct10" not in kinds and "ct11" not in kinds and bad["r10"] == records["r10"]
    assert all(bad[mapping[ct]] != records[mapping[ct]] for ct in kinds)
    assert sum(bad[r] != records[r] for r in records) == len(kinds)
