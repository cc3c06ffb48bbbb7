"""Extraction benchmarks; prints one JSON line per measurement.

Parts (`--parts`, comma-separated):
- `overhead`: client + validation + DuckDB throughput against local fake servers that answer instantly with a
  valid answer (`--n-overhead` reports, `--concurrency` in flight over `--endpoints` servers, validation in the
  event loop or in `--answer-processes`). Also checks one LLM call per report on the happy path, and splits the
  CPU per report between the event loop (HTTP), the answer processes (validation), the writer/DuckDB threads and
  the fake servers, with the 1-minute load average before and after (the machine is shared).
- `reconvert`: `rsuper reconvert` throughput: every report of the project's gold files (distinct texts, so no
  cache of the reading rules is warm) stored with a rules-only answer, marked as converted by other rules, and
  converted again (conversion, tumor and organ rows, DuckDB transactions); `--reconvert-batch` per transaction.
- `tokens`: prompt tokens per dev case, the share of them in the fixed prefix (tokenizer of the embedded model).
- `local`: the embedded llama.cpp backend on the first `--n-dev` dev cases (or reports of `--gold FILE`), per
  model, thread count (`--threads 1,2`) and prompt-lookup draft length (`--prompt-lookup 0,10`): reports/min
  (steady state, after the prefix is cached), seconds and CPU seconds per report, resident memory, output tokens per
  report, a hash of the raw answers (equal hashes: the settings changed speed only), and for the dev cases the
  agreement with the gold organ summary (organ state; largest diameter within 1 mm).

Usage: python benchmarks/bench_extract.py [--parts overhead,tokens,local] [--n-dev 10] [--models a,b]
       python benchmarks/bench_extract.py --parts overhead --n-overhead 20000 --answer-processes 0,1
       python benchmarks/bench_extract.py --parts reconvert
       python benchmarks/bench_extract.py --parts local --models qwen2.5-coder-0.5b --gold data/gold/longform_gold.jsonl \\
           --n-dev 6 --threads 1,2 --prompt-lookup 0,10
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEV_CASES = REPO.parent / "shared" / "gold" / "dev_cases.jsonl"

from extract.backends.base import SamplingConfig  # noqa: E402
from extract.prompting import load_prompt  # noqa: E402

SENTENCE = "Liver: 2.2 cm hypodense lesion in segment 8, likely a hemangioma."
#: The fake server's answer for every report, in the default prompt's (citing) format.
ANSWER = {"lesions": [{"organ": "liver", "sentences": [1], "count": 1, "count_exact": True}], "normal": [],
          "resected": []}


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def dev_cases(n: int | None = None) -> list[dict]:
    cases = [json.loads(line) for line in DEV_CASES.read_text().splitlines() if line.strip()]
    return cases[:n] if n else cases


# -- overhead ------------------------------------------------------------------------------------------


def _load_1min() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of another process (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def bench_overhead(n: int, concurrency: int, endpoints: int, answer_processes: int | None) -> None:
    import pyarrow as pa

    from extract.backends.openai import OpenAIBackend, OpenAIConfig
    from extract.engine import EngineConfig, run_extraction
    from extract.store import Store

    servers = [subprocess.Popen([sys.executable, str(REPO / "tests" / "extract" / "fake_server.py"), "--port", "0",
                                 "--answer", json.dumps(ANSWER)], stdout=subprocess.PIPE, text=True)
               for _ in range(endpoints)]
    try:
        ports = [int(server.stdout.readline().split()[1]) for server in servers]
        with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.duckdb") as store:
            texts = [f"{SENTENCE} Exam {i}." for i in range(n)]
            store.add_reports(pa.table({"report_id": [f"r{i:06d}" for i in range(n)], "text": texts}), "bench")
            backend = OpenAIBackend(OpenAIConfig(urls=[f"http://127.0.0.1:{port}/v1" for port in ports],
                                                 concurrency=concurrency))
            load0 = _load_1min()
            server0 = [_process_cpu_s(server.pid) for server in servers]
            t0, c0, m0, k0 = time.perf_counter(), time.process_time(), time.thread_time(), os.times()
            stats = asyncio.run(run_extraction(store, backend, load_prompt(), SamplingConfig(),
                                               EngineConfig(progress=False, answer_processes=answer_processes)))
            wall, cpu, main = time.perf_counter() - t0, time.process_time() - c0, time.thread_time() - m0
            k1 = os.times()  # the answer processes were joined at the end of the run: their CPU is in children_*
            pool_cpu = (k1.children_user - k0.children_user) + (k1.children_system - k0.children_system)
            server1, load1 = [_process_cpu_s(server.pid) for server in servers], _load_1min()
            server_cpu = (sum(b - a for a, b in zip(server0, server1))
                          if None not in server0 and None not in server1 else None)
            tumors = store.query("SELECT count(*) AS n FROM tumors").column("n")[0].as_py()
    finally:
        for server in servers:
            server.kill()

    def per_report(seconds: float | None) -> float | None:
        return round(1000 * seconds / n, 3) if seconds is not None else None

    emit(bench="extract_client_overhead", reports=n, ok=stats.ok, failed=stats.failed, tumors_stored=tumors,
         calls_per_report=round(stats.calls / max(stats.done, 1), 3), wall_s=round(wall, 2),
         reports_per_s=round(stats.done / wall, 1), concurrency=concurrency, endpoints=endpoints,
         answer_processes=stats.answer_processes,
         answers_per_task=round(stats.calls / stats.answer_tasks, 1) if stats.answer_tasks else None,
         client_cpu_ms_per_report=per_report(cpu + pool_cpu),
         reports_per_client_cpu_s=round(n / (cpu + pool_cpu), 1),
         # where the CPU goes: the event-loop thread (HTTP, and validation without answer processes), the
         # writer and DuckDB threads, the answer processes, and the fake servers, which share the machine's cores
         event_loop_cpu_ms_per_report=per_report(main), writer_threads_cpu_ms_per_report=per_report(cpu - main),
         answer_processes_cpu_ms_per_report=per_report(pool_cpu),
         fake_server_cpu_ms_per_report=per_report(server_cpu), cpus=os.cpu_count(), load_1min_before=load0,
         load_1min_after=load1,
         note="fake servers in subprocesses on the same cores as the client: reports/s is bounded by the sum of "
              "all CPU per report over the cores; the event loop's CPU per report bounds it on a bigger machine")


# -- reconvert -----------------------------------------------------------------------------------------


def _clear_reading_caches() -> None:
    for name, module in list(sys.modules.items()):
        if name.startswith(("extract.reading", "schemas")):
            for value in vars(module).values():
                if hasattr(value, "cache_clear"):
                    value.cache_clear()


def bench_reconvert(batch: int) -> None:
    import pyarrow as pa

    from extract.answers import parse_answer
    from extract.engine import Job, Outcome, result_tables
    from extract.reconvert import reconvert_store
    from extract.store import Store

    texts = sorted({json.loads(line)["report"] for path in sorted((REPO / "data" / "gold").glob("*.jsonl"))
                    for line in path.read_text(encoding="utf-8").splitlines() if line.strip()})
    answer = json.dumps({"lesions": [], "normal": [], "resected": []})
    ids = [f"r{i:05d}" for i in range(len(texts))]
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.duckdb") as store:
        store.add_reports(pa.table({"report_id": ids, "text": texts}), "bench")
        rows = [(Job(rid, 1, sha, text), Outcome("ok", 1, payload=parse_answer(answer, text)[0], raw_output=answer))
                for rid, _, sha, text in store.pending_reports("bench")]
        store.write_extractions(*result_tables(rows, "bench", "bench"))
        store.con.execute("UPDATE extractions SET conversion_sha256 = NULL")
        _clear_reading_caches()  # as in a new process: converting them above warmed the caches
        chars = sum(map(len, texts))
        t0, c0 = time.perf_counter(), time.process_time()
        stats = reconvert_store(store, batch=batch, progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        tumors = store.query("SELECT count(*) FROM tumors").column(0)[0].as_py()
    emit(bench="extract_reconvert", reports=stats.checked, changed=stats.changed, failed=stats.failed,
         tumors_stored=tumors, mean_report_chars=round(chars / len(texts)), batch=batch, wall_s=round(wall, 2),
         ms_per_report=round(1000 * wall / stats.checked, 2), cpu_ms_per_report=round(1000 * cpu / stats.checked, 2),
         reports_per_s=round(stats.checked / wall, 1), load_1min=_load_1min(),
         note="one process; the answers are rules-only (empty), so the conversion reads every sentence itself")


# -- tokens --------------------------------------------------------------------------------------------


class Tokens:
    """Token counts of chat conversations with the embedded model's tokenizer and chat template."""

    def __init__(self, model_key: str) -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        from extract.model import ensure_model

        path, _ = ensure_model(model_key)
        self.llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        template = self.llm.metadata["tokenizer.chat_template"]
        eos = self.llm.detokenize([self.llm.token_eos()]).decode()
        self.fmt = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token="")

    def count(self, messages: list[dict]) -> int:
        prompt = self.fmt(messages=messages).prompt
        return len(self.llm.tokenize(prompt.encode(), add_bos=False, special=True))

    def text(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode(), add_bos=False, special=False))


def bench_tokens(model_key: str) -> None:
    prompt = load_prompt()
    tok = Tokens(model_key)
    fixed = tok.count(prompt.messages("")) - 2  # minus the turn-closing tokens that follow the report
    totals = [tok.count(prompt.messages(c["report"])) for c in dev_cases()]
    emit(bench="extract_prompt_tokens", model=model_key, prompt=prompt.label, dev_cases=len(totals),
         prefix_tokens=fixed, prompt_tokens_median=statistics.median(totals),
         prompt_tokens_mean=round(statistics.mean(totals), 1),
         prefix_share_min=round(min(fixed / t for t in totals), 3),
         prefix_share_mean=round(statistics.mean(fixed / t for t in totals), 3))


# -- local backend ---------------------------------------------------------------------------------------


def _agreement(pairs: list[tuple[dict, object]]) -> dict:
    from schemas.records import ExtractionPayload
    from schemas.summary import organ_summary

    states = diam = diam_total = 0
    n_state = 0
    for case, payload in pairs:
        gold = {r["organ"]: r for r in organ_summary(ExtractionPayload.model_validate(case["expected"]))}
        pred = {r["organ"]: r for r in organ_summary(payload)} if payload is not None else {}
        for organ, g in gold.items():
            p = pred.get(organ, {"state": "not_mentioned", "largest_diameter_mm": None})
            if g["state"] == "not_mentioned" and p["state"] == "not_mentioned":
                continue
            n_state += 1
            states += g["state"] == p["state"]
            if g["largest_diameter_mm"] is not None:
                diam_total += 1
                diam += p["largest_diameter_mm"] is not None and abs(p["largest_diameter_mm"] - g["largest_diameter_mm"]) <= 1
    return {"organ_state_agreement": round(states / max(n_state, 1), 3), "organs_scored": n_state,
            "largest_diameter_within_1mm": round(diam / max(diam_total, 1), 3), "diameters_scored": diam_total}


def _rss_mib() -> int | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20)


def gold_cases(path: Path, n: int | None = None) -> list[dict]:
    """Reports of a project gold file (`data/gold/*.jsonl`) as `{"id", "report"}`; no agreement is scored."""
    from extract.evaluation import load_gold

    return [{"id": g.id, "report": g.report} for g in load_gold(path)][:n or None]


def bench_local(model_key: str, cases: list[dict], max_tokens: int, threads: int = 1,
                prompt_lookup_tokens: int = 0) -> None:
    from extract.backends.local import LocalBackend, LocalConfig
    from extract.engine import extract_one

    prompt = load_prompt()
    schema = prompt.answer_schema()

    async def go():
        backend = LocalBackend(LocalConfig(model=model_key, n_threads=threads,
                                           prompt_lookup_tokens=prompt_lookup_tokens))
        await backend.start()
        outs, times = [], []
        try:
            for case in cases:
                t0 = time.perf_counter()
                outs.append(await extract_one(backend, prompt, schema, SamplingConfig(max_tokens=max_tokens),
                                              case["report"]))
                times.append(time.perf_counter() - t0)
            rss_mib = _rss_mib()  # with the model and its buffers loaded
        finally:
            await backend.aclose()
        return outs, times, rss_mib

    cpu0 = time.process_time()
    outs, times, rss_mib = asyncio.run(go())
    cpu_s = time.process_time() - cpu0
    steady = times[1:] or times
    first_call_tokens = [o.output_tokens // max(o.calls, 1) for o in outs]
    scored = _agreement([(c, o.payload) for c, o in zip(cases, outs)]) if "organs" in cases[0] else {}
    answers = hashlib.sha256("\x00".join(o.raw_output for o in outs).encode()).hexdigest()[:16]
    emit(bench="extract_local", model=model_key, reports=len(cases), threads=threads,
         prompt_lookup_tokens=prompt_lookup_tokens, max_tokens=max_tokens,
         first_report_s=round(times[0], 1), reports_per_min=round(60 * len(steady) / sum(steady), 2),
         seconds_per_report_median=round(statistics.median(times), 1),
         cpu_s_per_report=round(cpu_s / len(cases), 1),
         rss_mib=rss_mib,
         calls_per_report=round(sum(o.calls for o in outs) / len(outs), 2),
         ok=sum(o.status == "ok" for o in outs), repaired=sum(o.status == "repaired" for o in outs),
         failed=sum(o.status == "failed" for o in outs),
         output_tokens_per_call_median=statistics.median(first_call_tokens),
         prompt_tokens_per_report_median=statistics.median(o.prompt_tokens // max(o.calls, 1) for o in outs),
         answers_sha256=answers, **scored, load_1min=_load_1min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="overhead,tokens,local")
    parser.add_argument("--n-overhead", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=256, help="overhead: calls in flight")
    parser.add_argument("--endpoints", type=int, default=2, help="overhead: fake server processes")
    parser.add_argument("--answer-processes", default="auto",
                        help="overhead: comma-separated answer process counts (auto: the engine's default)")
    parser.add_argument("--reconvert-batch", type=int, default=2000, help="reconvert: extractions per transaction")
    parser.add_argument("--n-dev", type=int, default=10, help="dev cases for the local backend (per model)")
    parser.add_argument("--models", default="qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--gold", type=Path, help="local: reports of this project gold file instead of the dev cases")
    parser.add_argument("--threads", default="1", help="local: comma-separated thread counts")
    parser.add_argument("--prompt-lookup", default="0",
                        help="local: comma-separated prompt-lookup draft lengths (0: plain decoding)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if "overhead" in parts:
        for processes in args.answer_processes.split(","):
            bench_overhead(args.n_overhead, args.concurrency, args.endpoints,
                           None if processes == "auto" else int(processes))
    if "reconvert" in parts:
        bench_reconvert(args.reconvert_batch)
    if "tokens" in parts:
        bench_tokens(args.models.split(",")[0])
    if "local" in parts:
        from extract.model import ModelError

        cases = gold_cases(args.gold, args.n_dev) if args.gold else dev_cases(args.n_dev)
        for key in args.models.split(","):
            for threads in map(int, args.threads.split(",")):
                for lookup in map(int, args.prompt_lookup.split(",")):
                    try:
                        bench_local(key, cases, args.max_tokens, threads, lookup)
                    except ModelError as exc:
                        emit(bench="extract_local", model=key, skipped=str(exc))

if __name__ == "__main__":
    main()
