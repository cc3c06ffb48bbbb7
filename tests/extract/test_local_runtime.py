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


@pytest.mark.model
def test_prompt_lookup_decoding_answers_a_prompt_longer_than_one_batch():
    pytest.importorskip("llama_cpp")  # a missing runtime already fails the decode test above
    import json

    from extract.backends.base import SamplingConfig

    # Past n_batch (512 tokens): there 0.3.36 failed every call unless logits_all was set with the draft model.
    report = " ".join(f"Segment {i % 8 + 1}: a {i % 9 + 3} mm hypodense lesion, unchanged." for i in range(60))
    messages = [{"role": "user", "content": f"{report}\nCopy the first sentence of the report as `quote`."}]
    schema = {"type": "object", "properties": {"quote": {"type": "string", "maxLength": 40}}, "required": ["quote"]}

    async def answer():
        backend = LocalBackend(LocalConfig(n_ctx=2048, prompt_lookup_tokens=8))
        info = await backend.start()
        try:
            return info, await backend.complete(messages, schema, SamplingConfig(max_tokens=48))
        finally:
            await backend.aclose()

    info, out = asyncio.run(answer())
    assert out.prompt_tokens > 512 and out.finish_reason == "stop"
    assert json.loads(out.text)["quote"].strip()
    assert info.decoding == {"prompt_lookup_tokens": 8}  # it changes answers, so it is part of the run key
