"""benchmarks/bench_soak.py at a small size (issue 25): 400 reports through the faulty fake server, a 2.5 s outage,
one SIGKILL of a real `rsuper extract`, reruns; every report stored once, transport faults ok, cut JSON failed."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import bench_soak  # noqa: E402

N = 400


@pytest.mark.slow
def test_small_soak_keeps_every_invariant(tmp_path):
    # 8 calls in flight at 50 ms per answer: about 160 reports/s, so the kill (20 % answered 0.75 s earlier, about
    # half stored) comes before the outage (70 % answered). Two tries of a call give up within 1.5 s, inside the
    # 2.5 s outage, so the outage leaves reports pending for the last run.
    cfg = bench_soak.SoakConfig(n=N, seed=0, outage_s=2.5, outage_at=0.7, kill_at=0.2, kill_settle_s=0.75,
                                latency_s=0.05, concurrency=8, timeout_s=1.0, retries=2, run_timeout_s=60)
    runs = []
    res = bench_soak.run_soak(cfg, tmp_path / "soak", emit=runs.append)
    f = res.figures
    assert res.failures == [], (res.failures, f)

    # Every report exactly once; the organ rows of each status as they must be.
    assert (f["reports"], f["extractions"], f["missing"], f["duplicated"]) == (N, N, 0, 0)
    assert f["organ_rows_per_status"] == {"ok": [18, 18], "failed": [0, 0]}
    assert f["tumors"] == f["ok"] == N - f["failed"] and f["repaired"] == 0
    # Answer faults failed, transport faults ok, and each kind of fault really happened.
    truncated = sum(bench_soak.is_truncated_report(cfg, t) for t in bench_soak.report_texts(N, 0).values())
    assert f["failed"] == f["truncated_reports"] == truncated == 3
    assert f["transport_faulted_reports"] > 20 and f["http500"] > 0 and f["slow"] > 0 and f["outage503"] > 0
    assert f["truncated_answers"] >= 2 * truncated  # the first call and the repair call
    # One kill partway, pending reports picked up by later runs, the last run done.
    assert f["exit_codes"][0] == -signal.SIGKILL and f["exit_codes"][-1] in (0, 3)
    assert set(f["exit_codes"][1:-1]) <= {4} and 2 <= f["runs"] <= cfg.max_runs
    assert 0 < f["stored_at_kill"] < N and f["pending_at_kill"] > 0
    assert f["pending_after_transport_give_up"] > 0 and f["pending_then_ok"] > 0
    assert f["outage_handling"].startswith("ridden out")
    assert [r["run"] for r in runs] == list(range(1, f["runs"] + 1)) and runs[-1]["stored_after"] == N
    assert f["requests"] > N and f["wall_s"] > cfg.outage_s
