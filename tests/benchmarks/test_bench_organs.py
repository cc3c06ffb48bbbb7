"""benchmarks/bench_organs.py through its command line, at a tiny size: one JSON line per step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_tiny_run_prints_the_three_steps():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_organs.py"), "--shape", "20", "20", "20",
                          "--repeat", "1"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [line["bench"] for line in lines] == ["organs_read", "organs_map", "organs_case"]
    assert all(line["class_files"] == 117 and line["files_read"] == 83 and line["seconds"] > 0 for line in lines)
