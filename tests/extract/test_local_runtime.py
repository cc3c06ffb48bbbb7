"""The embedded runtime's start-up check: it must decode here, and a crash in it becomes one clear error.

`test_embedded_runtime_decodes_on_this_machine` fails (never skips) when llama-cpp-python or the model is missing
or the build cannot decode on this CPU: `make test` installs both, so a broken build is a red CI.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from extract.backends import local
from extract.backends.local import LocalBackend, LocalConfig, RuntimeProbeError, probe_runtime


@pytest.fixture(autouse=True)
def fresh_probe_cache(monkeypatch):
    monkeypatch.setattr(local, "_probed", {})


@pytest.mark.model
def test_embedded_runtime_decodes_on_this_machine():
    import llama_cpp  # no importorskip: `make test` installs it, and a missing runtime is a failure

    from extract.model import ensure_model

    features = probe_runtime(ensure_model()[0])
    assert "CPU" in features and "AVX2 = 1" in features, features  # the portable build's baseline
    assert llama_cpp.__version__ == "0.3.36"


def _fake_child(monkeypatch, code: str) -> None:
    monkeypatch.setattr(local, "_probe_command", lambda path: [sys.executable, "-c", code])


def test_a_crash_in_decode_becomes_one_message_naming_the_rebuild(monkeypatch, tmp_path):
    pytest.importorskip("llama_cpp")
    _fake_child(monkeypatch, "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(RuntimeProbeError) as info:
        probe_runtime(tmp_path / "model.gguf")
    message = str(info.value)
    assert "crashed with SIGSEGV" in message and "model.gguf" in message
    assert "make rebuild-llama" in message and "LLAMA_CMAKE_ARGS" in message


def test_an_illegal_instruction_is_named_too(monkeypatch, tmp_path):
    pytest.importorskip("llama_cpp")
    _fake_child(monkeypatch, "import os, signal; os.kill(os.getpid(), signal.SIGILL)")
    with pytest.raises(RuntimeProbeError, match="crashed with SIGILL"):
        probe_runtime(tmp_path / "model.gguf")


def test_a_failing_child_reports_its_last_error_line(monkeypatch, tmp_path):
    pytest.importorskip("llama_cpp")
    _fake_child(monkeypatch, "raise SystemExit('the model generated no token')")
    with pytest.raises(RuntimeProbeError, match=r"exit 1\): the model generated no token"):
        probe_runtime(tmp_path / "model.gguf")


def test_a_hanging_child_times_out(monkeypatch, tmp_path):
    pytest.importorskip("llama_cpp")
    _fake_child(monkeypatch, "import time; time.sleep(30)")
    with pytest.raises(RuntimeProbeError, match="did not decode one token .* in 1 s"):
        probe_runtime(tmp_path / "model.gguf", timeout_s=1)


def test_a_passing_probe_is_run_once_per_process(monkeypatch, tmp_path):
    pytest.importorskip("llama_cpp")
    marker = tmp_path / "runs"
    _fake_child(monkeypatch, f"open({str(marker)!r}, 'a').write('x'); print('CPU : AVX2 = 1')")
    assert probe_runtime(tmp_path / "model.gguf") == "CPU : AVX2 = 1"
    assert probe_runtime(tmp_path / "model.gguf") == "CPU : AVX2 = 1"
    assert marker.read_text() == "x"


def test_the_backend_refuses_to_start_before_loading_a_crashing_runtime(monkeypatch, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    gguf = tmp_path / "other.gguf"
    gguf.write_bytes(b"GGUF")
    _fake_child(monkeypatch, "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")

    def no_in_process_load(*args, **kwargs):
        raise AssertionError("the model was loaded in-process after a failed probe")

    monkeypatch.setattr(llama_cpp, "Llama", no_in_process_load)
    with pytest.raises(RuntimeProbeError, match="SIGSEGV"):
        asyncio.run(LocalBackend(LocalConfig(model_path=gguf)).start())


def test_the_cli_prints_the_message_instead_of_a_traceback(monkeypatch, tmp_path, capsys):
    pytest.importorskip("llama_cpp")
    from rsuper import cli

    gguf = tmp_path / "other.gguf"
    gguf.write_bytes(b"GGUF")
    _fake_child(monkeypatch, "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    monkeypatch.setattr(sys, "argv", ["rsuper", "demo", "--db", str(tmp_path / "s.duckdb"), "--model-path", str(gguf)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("rsuper: error:") == 1 and "SIGSEGV" in err and "make rebuild-llama" in err
    assert "Traceback" not in err
