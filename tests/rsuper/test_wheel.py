"""A non-editable wheel carries what the code reads at run time: `rsuper demo` and the default prompt work from
an installed wheel, in a fresh venv with only the core dependencies (no torch), outside the repository.

Builds with pip (build isolation: setuptools comes from the configured package indexes) and installs the core
dependencies the same way (about 30 s with a warm pip cache). It fails, never skips, when it cannot run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _run(cmd: list[str], *, cwd: Path, timeout: float = 600, hint: str = "") -> str:
    # Without PYTHONPATH and VIRTUAL_ENV, so the installed wheel is imported and not the checkout.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    try:
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"{' '.join(cmd)}: {exc}")
    if done.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {done.returncode}{hint}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def _copy_checkout(dest: Path) -> None:
    """The files a clean clone has (tracked plus untracked-not-ignored), so local builds and databases stay out."""
    if shutil.which("git") is None:
        pytest.fail("git is needed to list the project's files for the wheel build")
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO)
    for name in filter(None, listed.split("\0")):
        src, dst = REPO / name, dest / name
        if not src.is_symlink() and not src.exists():  # deleted in the work tree, not yet in the index
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():  # rsuper/prompts and rsuper/data/* link into the top-level folders
            dst.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, dst)


def test_installed_wheel_runs_the_demo_help_and_loads_the_default_prompt(tmp_path):
    src, dist, venv, outside = tmp_path / "src", tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    outside.mkdir()
    _copy_checkout(src)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)], cwd=outside,
         hint=" (the build needs setuptools from the package indexes of the pip config)")
    wheels = list(dist.glob("rsuper-*.whl"))
    assert len(wheels) == 1, wheels
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    assert {"rsuper/cli.py", "rsuper/__main__.py", "rsuper/prompts/extract_v1.yaml", "rsuper/prompts/extract_v2.yaml",
            "rsuper/prompts/extract_v3.yaml", "rsuper/data/demo_reports.csv", "extract/store/tables.py"} <= names
    assert not [n for n in names if "gold" in n]  # evaluation data stays in the repository

    _run([sys.executable, "-m", "venv", str(venv)], cwd=outside)
    py = venv / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "-q", str(wheels[0])], cwd=outside,
         hint=" (the core dependencies come from the package indexes of the pip config)")

    probe = """
import importlib.util, json
from importlib.resources import files
import extract
from extract.prompting import DEFAULT_PROMPT, load_prompt
p = load_prompt()
print(json.dumps({"torch": importlib.util.find_spec("torch") is not None, "extract": extract.__file__,
                  "prompt_file": str(DEFAULT_PROMPT), "id": p.prompt_id, "version": p.version, "sha256": p.sha256,
                  "demo": (files("rsuper") / "data" / "demo_reports.csv").read_bytes().hex()}))
"""
    got = json.loads(_run([str(py), "-c", probe], cwd=outside))
    assert got["torch"] is False  # the core install pulls no training stack
    assert Path(got["extract"]).is_relative_to(venv) and Path(got["prompt_file"]).is_relative_to(venv)
    assert (got["id"], got["version"]) == ("ct-tumor-extract", 3)
    assert got["sha256"] == hashlib.sha256((REPO / "prompts" / "extract_v3.yaml").read_bytes()).hexdigest()
    assert bytes.fromhex(got["demo"]) == (REPO / "data" / "demo_reports.csv").read_bytes()

    help_text = _run([str(venv / "bin" / "rsuper"), "demo", "--help"], cwd=outside)
    assert "Ingest the demo dump" in help_text
    for option in ("--db", "--dump", "--model", "--model-path", "--limit", "--show"):
        assert option in help_text
    assert "Usage: python -m rsuper demo" in _run([str(py), "-m", "rsuper", "demo", "--help"], cwd=outside)
