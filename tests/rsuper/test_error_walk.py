"""Issue 25: every command, given a bad input, fails with ONE line `rsuper: error: ...` and a non-zero exit.

A table walks every command `rsuper --help` lists (and the commands of its groups) with bad arguments: a
missing input, a folder where a file belongs and a file where a folder belongs, an empty file, garbage content
(a text file as the DuckDB store, a YAML config that is not YAML, has an unknown key or a wrong type, a JSONL
file with a broken line), a missing --db, an output path that cannot be created (under a regular file, or in
/proc: we may run as root, where permissions stop nothing), a bad option value. Each case runs the real entry
point, `rsuper.cli.main`, in-process (imports cost seconds per process); a few go through `python -m rsuper`
to prove the console path, among them `rsuper extract` against a closed port. No model and no network: the
LLM URL is a closed local port, and every `demo` case fails before the embedded model would start.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from rsuper import cli

REPO = Path(__file__).resolve().parents[2]
DOWN = "http://127.0.0.1:9"  # the discard port: nothing listens there, a connection is refused at once
OPENAI = f"--backend openai --llm-url {DOWN} --model m --retries 0"

#: (command line, a fragment the error line must hold: the file, row, URL or option it is about).
CASES: list[tuple[str, str]] = [
    # query / export
    ('query "SELECT 1" --db missing.duckdb', "missing.duckdb: no such database"),
    ('query "SELECT 1" --db dir', "dir: is a folder"),
    ('query "SELECT 1" --db text.duckdb', "text.duckdb: exists but is not a DuckDB database"),
    ('query "SELECT 1" --db empty.duckdb', "empty.duckdb: exists but is not a DuckDB database"),
    ('query "SELECT 1" --db store.duckdb --format nope', "--format must be one of"),
    ('query "SELECT * FROM nope" --db store.duckdb', "Did you mean"),  # DuckDB's two-line message
    ("query", "Missing argument"),
    ("export out.csv --format rsuper-csv --db missing.duckdb", "missing.duckdb: no such database"),
    ("export out.csv --format rsuper-csv --db text.duckdb", "text.duckdb"),
    ("export file.txt/out.csv --format rsuper-csv --db store.duckdb", "file.txt/out.csv: cannot create its folder"),
    ("export dir --format rsuper-csv --db store.duckdb", "dir: is a folder"),
    ("export /proc/out.csv --format rsuper-csv --db store.duckdb", "/proc/out.csv"),
    ("export out.parquet --format parquet --table nope --db store.duckdb", "no table or view 'nope'"),
    ("export out.csv --format nope --db store.duckdb", "--format must be one of"),
    # reconvert
    ("reconvert --db missing.duckdb", "missing.duckdb: no such database"),
    ("reconvert --db text.duckdb", "text.duckdb: exists but is not a DuckDB database"),
    ("reconvert --db dir", "dir: is a folder"),
    ("reconvert --db store.duckdb --config-hash zz", "--config-hash zz: no stored run keys start with it"),
    ("reconvert --db store.duckdb --batch 0", "--batch"),
    # ingest
    ("ingest missing.csv --db new.duckdb", "missing.csv: no such file"),
    ("ingest empty.csv --db new.duckdb", "empty.csv: the file is empty"),
    ("ingest garbage.bin --db new.duckdb", "garbage.bin"),
    ("ingest broken.csv --db new.duckdb", "broken.csv"),
    ("ingest garbage.csv --db new.duckdb", "garbage.csv: line 2: binary data"),
    ("ingest dir --db new.duckdb", "dir: the folder has no .txt files"),
    ("ingest reports.csv --db text.duckdb", "text.duckdb: exists but is not a DuckDB database"),
    ("ingest reports.csv --db dir", "dir: is a folder"),
    ("ingest reports.csv --db file.txt/s.duckdb", "file.txt/s.duckdb"),
    ("ingest reports.csv --db /proc/s.duckdb", "/proc/s.duckdb"),
    ("ingest reports.csv --db new.duckdb --max-chars 0", "'--max-chars'"),
    ("ingest reports.csv --db new.duckdb --encoding nope", "reports.csv: cannot be read as nope"),
    # extract: nothing answers at DOWN
    (f"extract --db missing.duckdb {OPENAI}", "missing.duckdb: no such database; create it with `rsuper ingest"),
    (f"extract --db text.duckdb {OPENAI}", "text.duckdb: exists but is not a DuckDB database"),
    (f"extract --db dir {OPENAI}", "dir: is a folder"),
    (f"extract --db store.duckdb {OPENAI} --prompt missing.yaml", "missing.yaml: cannot read the prompt template"),
    (f"extract --db store.duckdb {OPENAI} --prompt dir", "dir: cannot read the prompt template"),
    (f"extract --db store.duckdb {OPENAI} --prompt bad.yaml", "bad.yaml: the prompt template is not valid YAML"),
    (f"extract --db store.duckdb {OPENAI} --prompt unknown.yaml", "unknown.yaml: missing key"),
    (f"extract --db store.duckdb {OPENAI}", f"{DOWN}/v1: gave up after 1 tries"),
    (f"extract --db store.duckdb --backend openai --llm-url {DOWN} --retries 0", "is the server running?"),
    ("extract --db store.duckdb --backend openai --llm-url not-a-url --model m", "'not-a-url' is not an http(s) URL"),
    ("extract --db store.duckdb --backend nope", "'--backend'"),
    ("extract --db store.duckdb --backend vllm", "--model is required with --backend vllm"),
    ("extract --db store.duckdb --backend local --model-path missing.gguf", "missing.gguf: no such GGUF file"),
    ("extract --db store.duckdb --backend local --model-path dir", "dir: no such GGUF file"),
    ("extract --db store.duckdb --backend local --model-path file.txt", "file.txt: not a GGUF model file"),
    ("extract --db store.duckdb --backend local --model nope", "unknown embedded model 'nope'"),
    ("extract --db store.duckdb --limit 0", "'--limit'"),
    # demo: each fails before the embedded model starts
    ("demo --db d.duckdb --model-path missing.gguf", "missing.gguf: no such GGUF file"),
    ("demo --db d.duckdb --model nope", "unknown embedded model 'nope'"),
    ("demo --db file.txt/d.duckdb", "file.txt/d.duckdb"),
    ("demo --db text.duckdb", "text.duckdb: exists but is not a DuckDB database"),
    ("demo --db d.duckdb --dump missing.csv", "missing.csv: no such file"),
    ("demo --db d.duckdb --dump empty.csv", "empty.csv: the file is empty"),
    # eval-extraction / convert-gold
    ("eval-extraction missing.jsonl --predictions gold.jsonl", "missing.jsonl: cannot read the gold file"),
    ("eval-extraction dir --predictions gold.jsonl", "dir: cannot read the gold file"),
    ("eval-extraction empty.jsonl --predictions gold.jsonl", "empty.jsonl: no gold lines"),
    ("eval-extraction broken.jsonl --predictions gold.jsonl", "broken.jsonl line 2: not valid JSON"),
    ("eval-extraction garbage.bin --predictions gold.jsonl", "garbage.bin: cannot read the gold file"),
    ("eval-extraction gold.jsonl --predictions broken.jsonl", "broken.jsonl line 2: not valid JSON"),
    ("eval-extraction gold.jsonl --predictions missing.jsonl", "missing.jsonl: cannot read the predictions"),
    ("eval-extraction gold.jsonl --db missing.duckdb", "missing.duckdb: no such database"),
    ("eval-extraction gold.jsonl --db text.duckdb", "text.duckdb: exists but is not a DuckDB database"),
    ("eval-extraction gold.jsonl --subset missing.txt", "missing.txt: cannot read the id list"),
    ("eval-extraction gold.jsonl --predictions gold.jsonl --out dir", "dir: is a folder"),
    ("eval-extraction gold.jsonl --predictions gold.jsonl --out file.txt/r.json", "file.txt: cannot create"),
    ("eval-extraction gold.jsonl --backend nope", "unknown backend 'nope'"),
    (f"eval-extraction gold.jsonl --db e.duckdb --backend openai --llm-url {DOWN} --model m", "is the server running?"),
    ("eval-extraction gold.jsonl --backend local --model-path file.txt", "file.txt: not a GGUF model file"),
    ("eval-extraction gold.jsonl --limit 0", "'--limit'"),
    ("convert-gold missing.jsonl out.jsonl", "missing.jsonl: cannot read the cases file"),
    ("convert-gold dir out.jsonl", "dir: cannot read the cases file"),
    ("convert-gold empty.jsonl out.jsonl", "empty.jsonl: no cases"),
    ("convert-gold broken.jsonl out.jsonl", "broken.jsonl line 1: cannot convert the case: no field 'expected'"),
    ("convert-gold garbage.bin out.jsonl", "garbage.bin: cannot read the cases file"),
    ("convert-gold badcase.jsonl out.jsonl", "badcase.jsonl line 1: cannot convert the case: tumors.0"),
    ("convert-gold case.jsonl file.txt/out.jsonl", "file.txt/out.jsonl: cannot write the gold file"),
    ("convert-gold case.jsonl dir", "dir: cannot write the gold file"),
    ("convert-gold", "Missing argument"),
    # phantoms / cases / organs
    ("phantoms file.txt/ph --n 1", "file.txt/ph: cannot create the output folder"),
    ("phantoms file.txt --n 1", "file.txt: cannot create the output folder"),
    ("phantoms /proc/ph --n 1", "/proc/ph: cannot create the output folder"),
    ("phantoms ph --n 0", "'--n'"),
    ("phantoms ph --shape 1 2", "'--shape' requires 3 arguments"),
    ("phantoms ph --n 1 --shape 0 8 8", "shape.0"),
    ("cases missing", "missing: no such folder"),
    ("cases file.txt", "file.txt: not a folder"),
    ("cases dir", "dir: no cases found"),
    ("organs missing", "missing: no such folder"),
    ("organs file.txt", "file.txt: not a folder"),
    ("organs dir", "dir: no case folders"),
    ("organs dir --config missing.yaml", "missing.yaml: cannot read config"),
    ("organs dir --config dir", "dir: cannot read config"),
    ("organs dir --config bad.yaml", "bad.yaml: not valid YAML (line 2"),
    ("organs dir --config list.yaml", "list.yaml: top level must be a mapping"),
    ("organs dir --config unknown.yaml", "unknown.yaml: no_such_key"),
    ("organs dir --config wrongtype.yaml", "fast: Input should be a valid boolean"),
    ("organs dir --source nope", "source: Input should be"),
    # train / predict / evaluate
    ("train missing.yaml", "missing.yaml: cannot read config"),
    ("train dir", "dir: cannot read config"),
    ("train bad.yaml", "bad.yaml: not valid YAML (line 2"),
    ("train list.yaml", "list.yaml: top level must be a mapping"),
    ("train unknown.yaml", "unknown.yaml: no_such_key"),
    ("train wrongtype.yaml", "wrongtype.yaml: seed"),
    ("train --set nokey", "override 'nokey'"),
    ("train --set optim.lr=abc", "optim.lr"),
    ("train --set data.source=cases --set data.root=missing", "missing: no such folder (data.root)"),
    ("predict missing.pt ct.nii.gz --out o", "missing.pt: no such checkpoint"),
    ("predict dir ct.nii.gz --out o", "dir: no such checkpoint"),
    ("predict file.txt ct.nii.gz --out o", "file.txt: cannot read checkpoint"),
    ("predict empty.csv ct.nii.gz --out o", "empty.csv: cannot read checkpoint"),
    ("predict file.txt missing --out o", "missing: no CT found"),
    ("predict file.txt ct.nii.gz --out file.txt/o", "file.txt/o: cannot create the output folder"),
    ("predict file.txt ct.nii.gz --out o --device nope", "--device"),
    ("predict file.txt ct.nii.gz", "Missing option '--out'"),
    ("evaluate missing --truth dir", "missing: no */summary.json"),
    ("evaluate file.txt --truth dir", "file.txt: no */summary.json"),
    ("evaluate pred --truth missing", "missing: no such folder"),
    ("evaluate pred --truth file.txt", "file.txt: not a folder"),
    ("evaluate pred --truth dir --records nope", "--records"),
    ("evaluate badpred --truth dir", "summary.json: not a summary of `rsuper predict`"),
    ("evaluate pred --truth dir --out file.txt/o", "file.txt/o: cannot create the output folder"),
    ("predict file.txt ct.nii.gz --out o --pages -1", "'--pages'"),
    # audit / al-round
    ("audit missing --cases gt --records truth", "missing: no */summary.json"),
    ("audit file.txt --cases gt --records truth", "file.txt: no */summary.json"),
    ("audit pred --cases missing", "missing: no such folder (--cases"),
    ("audit pred --cases file.txt", "file.txt: not a folder (--cases"),
    ("audit pred --records nope", "--records"),
    ("audit pred --config missing.yaml", "missing.yaml: cannot read config"),
    ("audit pred --config bad.yaml", "bad.yaml: not valid YAML (line 2"),
    ("audit pred --config unknown.yaml", "unknown.yaml: no_such_key"),
    ("audit pred --set size_tolerance=abc", "size_tolerance"),
    ("audit pred --set nokey", "override 'nokey'"),
    ("audit pred --cases dir", "no CT -> report mapping: dir has no case_reports.csv"),
    ("audit pred --cases badmap", "badmap/case_reports.csv: needs columns ct_id, report_id"),
    ("audit pred --cases casesroot --records truth", "casesroot/ground_truth.jsonl: no such file"),
    ("audit pred --cases badgt --records truth", "badgt/ground_truth.jsonl, line 1: not a ground-truth record"),
    ("audit pred --cases gt --db missing.duckdb", "missing.duckdb: no such database"),
    ("audit pred --cases gt --db text.duckdb", "text.duckdb: exists but is not a DuckDB database"),
    ("audit pred --cases gt --records truth --out file.txt/o", "file.txt/o: cannot create the output folder"),
    ("audit pred --cases gt --records truth --db store.duckdb",
     "pred/c1/labels.json: not an output of `rsuper predict`"),
    ("audit pred --cases gt --records truth --db text.duckdb --pages 0", "pred/c1/labels.json"),
    ("al-round --k 0", "'--k'"),
    ("al-round --k 1 --db missing.duckdb", "missing.duckdb: no such database (run `rsuper audit` first)"),
    ("al-round --k 1 --db text.duckdb", "text.duckdb: exists but is not a DuckDB database"),
    ("al-round --k 1 --db store.duckdb --strategy nope", "--strategy"),
    ("al-round --k 1 --db store.duckdb --exclude missing.txt", "missing.txt: cannot read the ct_id list"),
    ("al-round --k 1 --db store.duckdb", "store.duckdb: the `audit` table is empty (run `rsuper audit` first)"),
    # images import
    ("images import missing --out o", "missing: not a folder"),
    ("images import file.txt --out o", "file.txt: not a folder"),
    ("images import dir --out o --config missing.yaml", "missing.yaml: cannot read config"),
    ("images import dir --out o --config bad.yaml", "bad.yaml: not valid YAML (line 2"),
    ("images import dir --out o --config unknown.yaml", "unknown.yaml: no_such_key"),
    ("images import dir --out o --set nokey", "override 'nokey'"),
    ("images import dir --out file.txt/o", "file.txt/o: cannot create the output folder"),
    ("images import dir --out o --db text.duckdb", "text.duckdb: exists but is not a DuckDB database"),
    ("images nope", "No such command 'nope'"),
    ("nope", "No such command 'nope'"),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Bad inputs of every kind, and one good small store."""
    d = tmp_path_factory.mktemp("walk")
    (d / "file.txt").write_text("a regular file, never a folder\n")
    (d / "dir").mkdir()
    (d / "empty.csv").write_text("")
    (d / "empty.jsonl").write_text("")
    (d / "empty.duckdb").write_text("")
    (d / "text.duckdb").write_text("this is not a database\n")
    (d / "garbage.bin").write_bytes(b"\x00\x01\x02garbage\xff\xfe")
    (d / "garbage.csv").write_bytes(b"id,text\nA,\x00\x01\x02garbage\xff\xfe\n")
    (d / "reports.csv").write_text("id,text\nA,Liver: 2 cm hypodense lesion in segment 7.\nB,Normal abdomen.\n")
    (d / "broken.csv").write_text('id,text\nA,"an unterminated quote\n')
    (d / "bad.yaml").write_text("a: [unclosed\n  - : :\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "unknown.yaml").write_text("no_such_key: 1\n")
    (d / "wrongtype.yaml").write_text("seed: [1, 2]\nfast: {a: 1}\n")
    (d / "gold.jsonl").write_text('{"id": "A", "report": "Normal spleen.", "organs": {"spleen": '
                                  '{"state": "no_lesion"}}}\n')
    (d / "broken.jsonl").write_text('{"id": "A", "report": "x", "organs": {}}\n{"id": "B", broken\n')
    (d / "case.jsonl").write_text('{"id": "A", "report": "Normal abdomen.", "expected": {}}\n')
    (d / "badcase.jsonl").write_text('{"id": "A", "report": "Normal abdomen.", "expected": {"tumors": [{"id": 1, '
                                     '"organ": "kidney", "segments": ["liver_segment_1"]}]}}\n')
    (d / "ct.nii.gz").write_bytes(b"not read: every predict case fails before")
    for name, text in (("pred", '{"organs": {}}'), ("badpred", '{"organs": ')):
        (d / name / "c1").mkdir(parents=True)
        (d / name / "c1" / "summary.json").write_text(text)
    for name, files in (("casesroot", {"case_reports.csv": "ct_id,report_id\nc1,R1\n"}),
                        ("badmap", {"case_reports.csv": "a,b\n1,2\n"}),
                        ("badgt", {"case_reports.csv": "ct_id,report_id\nc1,R1\n", "ground_truth.jsonl": "{broken\n"}),
                        ("gt", {"case_reports.csv": "ct_id,report_id\nc1,R1\n", "ground_truth.jsonl":
                                '{"report_id": "R1", "tumors": [], "lesion_free_organs": ["liver"]}\n'})):
        (d / name).mkdir()
        for file, text in files.items():
            (d / name / file).write_text(text)
    old = Path.cwd()
    os.chdir(d)
    try:
        code, out = _run(["ingest", "reports.csv", "--db", "store.duckdb"])
    finally:
        os.chdir(old)
    assert code == 0, out
    return d


def _run(argv: list[str]) -> tuple[object, str]:
    """`rsuper ARGV` through `rsuper.cli.main` in this process: (exit code, everything it printed)."""
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)  # log lines count too (pytest's own handlers would swallow them)
    logging.getLogger().addHandler(handler)
    saved = sys.argv
    sys.argv = ["rsuper", *argv]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
                code: object = "returned"  # main always exits
            except SystemExit as exc:
                code = exc.code
    finally:
        sys.argv = saved
        logging.getLogger().removeHandler(handler)
    return code, out.getvalue() + err.getvalue()


def _assert_one_error_line(code: object, output: str, fragment: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert "Traceback" not in output, output
    assert isinstance(code, int) and code != 0, f"exit {code!r}:\n{output}"
    assert len(lines) == 1, f"{len(lines)} lines:\n{output}"
    assert lines[0].startswith("rsuper: error: "), lines[0]
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("command, fragment", CASES, ids=[c for c, _ in CASES])
def test_a_bad_input_is_one_error_line(command, fragment, workdir, monkeypatch):
    monkeypatch.chdir(workdir)  # defaults (data/rsuper.duckdb, build/eval) land here, not in the repository
    monkeypatch.delenv("RSUPER_DB", raising=False)
    code, output = _run(shlex.split(command))
    _assert_one_error_line(code, output, fragment)


def _leaf_commands(group, prefix: str = "") -> set[str]:
    names = set()
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            names |= _leaf_commands(command, f"{prefix}{name} ")
        else:
            names.add(prefix + name)
    return names


def test_the_walk_covers_every_command():
    commands = _leaf_commands(typer.main.get_command(cli.app))
    walked = set()
    for command, _ in CASES:
        words = shlex.split(command)
        walked.add(" ".join(words[:2]) if " ".join(words[:2]) in commands else words[0])
    assert commands <= walked, f"commands without a bad-input case: {sorted(commands - walked)}"
    assert len(commands) >= 14


def test_the_user_error_types_exist():
    import importlib

    for module, names in cli.USER_ERRORS.items():
        for name in names:
            cls = getattr(importlib.import_module(module), name)
            assert isinstance(cls, type) and issubclass(cls, Exception), f"{module}.{name}"


def test_an_unexpected_error_keeps_its_traceback(monkeypatch):
    """Only the listed error types become one line: a bug must stay visible."""
    def boom(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "app", boom)
    with pytest.raises(ZeroDivisionError):
        cli.main()


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", interrupted)
    code, output = _run(["ingest", "x.csv"])
    assert code == 130 and output.strip() == "rsuper: error: interrupted"


# -- through the console script ------------------------------------------------------------------------------


def _console(args: str, cwd: Path) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "RSUPER_DB"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-m", "rsuper", *shlex.split(args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("command, fragment", [
    ('query "SELECT 1" --db text.duckdb', "text.duckdb: exists but is not a DuckDB database"),
    ("phantoms ph --n 0", "'--n'"),  # a usage error: one line, not typer's boxed panel
    ("organs dir --config bad.yaml", "bad.yaml: not valid YAML"),
    # A closed port: one line, whether --model is given or asked of the server (that once printed 341 lines,
    # four tracebacks and 'Unclosed client session').
    (f"extract --db store.duckdb --backend openai --llm-url {DOWN} --model m --retries 1 --no-progress",
     "is the server running?"),
    (f"extract --db store.duckdb --backend openai --llm-url {DOWN} --retries 1", "is the server running?"),
])
def test_the_console_script_prints_one_line(command, fragment, workdir):
    code, output = _console(command, workdir)
    _assert_one_error_line(code, output, fragment)
    assert "Unclosed" not in output
