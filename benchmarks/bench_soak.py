"""Soak test of `rsuper extract --backend openai` (issue 25): thousands of reports through a faulty server, one
SIGKILL, reruns until done; then every report must be stored exactly once with the right status.

A fake OpenAI-compatible server (`tests/extract/fake_server.py`, in a thread of this process, 127.0.0.1 only)
injects faults decided by hashes seeded with `--seed`, so a seed gives the same faults to the same reports:

* per request (hash of report text and the report's request number): `--p-500` HTTP 500, `--p-slow` answers
  held past the client's `--timeout` (transport faults: retried by the client, or left pending and sent again
  by a later run; they must end `ok`);
* per report (hash of its text, so the repair call gets it too): `--p-truncated` answers whose JSON content is
  cut in half (answer faults: they must end `failed` after the repair call, the error saying why);
* one outage: once `--outage-at` of the reports have been answered, every request (chat and `/models`) gets
  HTTP 503 for `--outage-s` seconds.

Every answer takes `--latency-s`. The client is a real `python -m rsuper extract` process. The first run is
SIGKILLed once `--kill-at` of the reports had been answered `--kill-settle-s` earlier (so those are stored,
and the answers of the last moments are not); the command is then rerun (at most `--max-runs` runs in all)
until it exits 0 or 3. With the default `--client-outage-s 120` (the CLI's default) the client rides out the
20 s outage, as designed: the run keeps going, calls that give up during it leave their reports pending (exit 4),
and the next run sends exactly those. A `--client-outage-s` below `--outage-s` makes the run stop at the outage
instead (exit 4, rerun).

Afterwards the store is checked: every report exactly once in `extractions`, 18 organ rows per ok extraction and
none per failed one, one tumor per ok extraction, reports with only transport faults `ok`, truncated-JSON ones
`failed` (both attempts' JSON errors kept), no stored report asked again by a later run. Prints one JSON line
per client run and one with the figures; exits 1 when an invariant fails.

    python benchmarks/bench_soak.py [--n 5000] [--seed 0] [--outage-s 20] [--kill-at 0.25] [--outage-at 0.5]
        [--concurrency 64] [--timeout 2] [--retries 4] [--client-outage-s 120] [--work-dir DIR --keep]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "tests" / "extract"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from fake_server import Action, FakeLLMServer, report_of  # noqa: E402

#: The answer to every report (one liver lesion in sentence 1), in the default prompt's (citing) format.
ANSWER = json.dumps({"lesions": [{"organ": "liver", "sentences": [1], "count": 1, "count_exact": True}],
                     "normal": [], "resected": []})
#: The answer fault: the same JSON cut in half (the HTTP body stays valid; the content does not parse).
TRUNCATED_ANSWER = ANSWER[: len(ANSWER) // 2]
TRANSPORT_FAULTS = ("http500", "slow", "outage503")
N_ORGANS = 18


@dataclass
class SoakConfig:
    """One soak: the data, the server's faults and the client's settings."""

    n: int = 5000
    seed: int = 0
    p_500: float = 0.05
    p_slow: float = 0.02
    p_truncated: float = 0.01
    outage_s: float = 20.0
    outage_at: float = 0.5  # the outage starts once this share of the reports has been answered
    kill_at: float = 0.25  # the first run is SIGKILLed once this share of the reports was answered ...
    kill_settle_s: float = 1.0  # ... this long ago (several writer flushes: those answers are stored by then)
    latency_s: float = 0.02  # every answer takes this long (a stand-in for the model)
    slow_extra_s: float = 1.0  # a slow answer arrives this long after the client's timeout
    concurrency: int = 64
    timeout_s: float = 2.0
    retries: int = 4
    client_outage_s: float = 120.0
    max_runs: int = 6
    run_timeout_s: float = 600.0  # a run longer than this counts as a hang


def _unit(seed: int, *parts: object) -> float:
    """A deterministic number in [0, 1) from the seed and `parts`."""
    digest = hashlib.blake2b("\x1f".join(map(str, (seed, *parts))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def report_texts(n: int, seed: int) -> dict[str, str]:
    """`n` distinct short reports, each with a liver lesion in its first sentence, by report id."""
    texts = {}
    for i in range(n):
        size = 3 + int(_unit(seed, "size", i) * 60)
        segment = 1 + int(_unit(seed, "segment", i) * 8)
        texts[f"soak{i:06d}"] = (f"Liver: {size} mm hypodense lesion in segment {segment}. "
                                 f"Spleen: normal. Exam {i} of soak seed {seed}.")
    return texts


def is_truncated_report(cfg: SoakConfig, text: str) -> bool:
    """Whether every answer for this report is cut JSON (the per-report answer fault)."""
    return _unit(cfg.seed, "report", text) < cfg.p_truncated


def request_fault(cfg: SoakConfig, text: str, k: int) -> str | None:
    """The transport fault of the `k`-th request for a report text: `http500`, `slow` or None."""
    u = _unit(cfg.seed, "request", text, k)
    return "http500" if u < cfg.p_500 else "slow" if u < cfg.p_500 + cfg.p_slow else None


class _CountOnly:
    """Stands in for `FakeLLMServer.requests`: counts requests without keeping thousands of bodies."""

    def __init__(self) -> None:
        self.n = 0

    def append(self, _body: Any) -> None:
        self.n += 1

    def __len__(self) -> int:
        return self.n


class SoakServer(FakeLLMServer):
    """The fake server with the soak's faults. `run` (set by the driver) tags each request with the client run
    it belongs to; `events[report_id]` lists (run, kind) per request, kind one of `answer`, `truncated`,
    `http500`, `slow`, `outage503`."""

    def __init__(self, cfg: SoakConfig, texts: dict[str, str]) -> None:
        super().__init__(respond=self._decide)
        self.requests = _CountOnly()
        self.cfg = cfg
        self.id_of = {t: rid for rid, t in texts.items()}
        self.run = 0
        self.events: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self.counts: Counter[str] = Counter()
        self.answered: set[str] = set()
        self.answered_at: list[float] = []  # when each report got its first answer, in order
        self.outage_start: float | None = None
        self.outage_end: float | None = None
        self._seen: Counter[str] = Counter()

    @property
    def in_outage(self) -> bool:
        return self.outage_start is not None and time.monotonic() < self.outage_start + self.cfg.outage_s

    def _note(self, text: str, kind: str) -> None:
        self.counts[kind] += 1
        rid = self.id_of.get(text)
        if rid is None:
            self.counts["unknown_report"] += 1
        else:
            self.events[rid].append((self.run, kind))

    async def _route(self, method: str, path: str, raw: bytes, writer: asyncio.StreamWriter) -> bool:
        if self.in_outage:
            if method == "POST":
                self._note(report_of(json.loads(raw)), "outage503")
            else:
                self.counts["outage503_other"] += 1
            await self._send(writer, 503, b'{"error": {"message": "soak outage"}}')
            return True
        if method == "GET":
            self.counts["get"] += 1
        return await super()._route(method, path, raw, writer)

    def _decide(self, index: int, body: dict) -> Action:
        text = report_of(body)
        k = self._seen[text]
        self._seen[text] += 1
        fault = request_fault(self.cfg, text, k)
        truncated = is_truncated_report(self.cfg, text)
        if fault is not None:
            self._note(text, fault)
            if fault == "http500":
                return Action("status", status=500)
            return Action(content=TRUNCATED_ANSWER if truncated else ANSWER,
                          delay_s=self.cfg.timeout_s + self.cfg.slow_extra_s)
        self._note(text, "truncated" if truncated else "answer")
        if text in self.id_of and text not in self.answered:
            self.answered.add(text)
            self.answered_at.append(time.monotonic())
        if (self.outage_start is None and len(self.answered) >= self.cfg.outage_at * len(self.id_of)
                and self.cfg.outage_s > 0):
            self.outage_start = time.monotonic()
        return Action(content=TRUNCATED_ANSWER if truncated else ANSWER, delay_s=self.cfg.latency_s)

    def answered_before(self, share: float, settle_s: float) -> bool:
        """Whether `share` of the reports had been answered `settle_s` seconds ago."""
        m = max(1, int(share * len(self.id_of)))
        return len(self.answered_at) >= m and self.answered_at[m - 1] <= time.monotonic() - settle_s


# -- the client ------------------------------------------------------------------------------------------------


def extract_command(cfg: SoakConfig, db: Path, url: str) -> list[str]:
    """The `rsuper extract` command line of every run."""
    return [sys.executable, "-m", "rsuper", "extract", "--db", str(db), "--backend", "openai", "--llm-url", url,
            "--model", "m", "--concurrency", str(cfg.concurrency), "--timeout", str(cfg.timeout_s),
            "--retries", str(cfg.retries), "--outage-s", str(cfg.client_outage_s), "--no-progress", "--json"]


@dataclass
class ClientRun:
    """One `rsuper extract` process."""

    run: int
    exit_code: int | None
    wall_s: float
    killed: bool = False
    hung: bool = False
    summary: dict[str, Any] | None = None
    stored_after: int | None = None
    stderr_tail: str = ""


def run_client(cmd: list[str], run: int, logs: Path, timeout_s: float, kill_when: Any = None) -> ClientRun:
    """Run the client once; SIGKILL it as soon as `kill_when()` is true, or after `timeout_s` (a hang)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    out_path, err_path = logs / f"run{run}.out", logs / f"run{run}.err"
    t0 = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err)
        killed = hung = False
        while proc.poll() is None:
            if kill_when is not None and kill_when():
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            if time.perf_counter() - t0 > timeout_s:
                proc.send_signal(signal.SIGKILL)
                hung = True
                break
            time.sleep(0.01)
        proc.wait()
    wall = time.perf_counter() - t0
    summary = None
    for line in reversed(out_path.read_text().splitlines()):
        try:
            summary = json.loads(line)
            break
        except json.JSONDecodeError:
            continue
    return ClientRun(run=run, exit_code=proc.returncode, wall_s=round(wall, 2), killed=killed, hung=hung,
                     summary=summary, stderr_tail=err_path.read_text()[-1500:])


# -- checks ----------------------------------------------------------------------------------------------------


@dataclass
class Figures:
    """What a soak measured, and the invariants that failed (empty: all held)."""

    figures: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.failures.append(message)


def _count(store: Any, sql: str) -> int:
    return int(store.query(sql).column(0)[0].as_py() or 0)


def check_store(db: Path, cfg: SoakConfig, texts: dict[str, str], server: SoakServer,
                runs: list[ClientRun]) -> Figures:
    """The invariants of a finished soak, with the figures behind them."""
    from extract.store import Store

    res = Figures()
    with Store(db, read_only=True) as store:
        rows = store.query("SELECT report_id, run_id, status, attempts, error FROM extractions").to_pylist()
        run_rows = store.query("SELECT run_id, outcome FROM extraction_runs ORDER BY started_at").to_pylist()
        run_ids = [r["run_id"] for r in run_rows]
        organ_rows = store.query(
            """SELECT e.status, count(*) AS n, min(coalesce(o.n, 0)) AS lo, max(coalesce(o.n, 0)) AS hi
               FROM extractions e LEFT JOIN (SELECT extraction_key, count(*) AS n FROM organ_findings
                                             GROUP BY extraction_key) o USING (extraction_key)
               GROUP BY e.status""").to_pylist()
        orphan_organs = _count(store, "SELECT count(*) FROM organ_findings "
                                      "ANTI JOIN extractions USING (extraction_key)")
        tumors_usable = _count(store, """SELECT count(*) FROM tumors t JOIN extractions e USING (extraction_key)
                                         WHERE e.status IN ('ok', 'repaired')""")
        tumors_all = _count(store, "SELECT count(*) FROM tumors")
        not_current = _count(store, "SELECT count(*) FROM extractions WHERE status = 'ok' AND NOT is_current")
        n_reports = _count(store, "SELECT count(*) FROM reports")

    run_of = {rid: i + 1 for i, rid in enumerate(run_ids)}  # client runs start in order, one run row each
    res.check(len(run_ids) == len(runs), f"{len(run_ids)} extraction_runs rows for {len(runs)} client runs")
    res.check(all(r.summary["run_id"] == run_ids[r.run - 1] for r in runs if r.summary and r.run <= len(run_ids)),
              "the extraction_runs rows are not in the order of the client runs")
    per_report = Counter(r["report_id"] for r in rows)
    by_id = {r["report_id"]: r for r in rows}
    missing = sorted(set(texts) - set(per_report))
    duplicated = sorted(rid for rid, n in per_report.items() if n > 1)
    unknown = sorted(set(per_report) - set(texts))
    res.check(n_reports == len(texts), f"{n_reports} reports stored, {len(texts)} made")
    res.check(not missing, f"{len(missing)} reports without an extraction (lost), e.g. {missing[:5]}")
    res.check(not duplicated, f"{len(duplicated)} reports extracted more than once, e.g. {duplicated[:5]}")
    res.check(not unknown, f"extractions of unknown report ids: {unknown[:5]}")

    statuses = Counter(r["status"] for r in rows)
    organs = {r["status"]: r for r in organ_rows}
    for status, r in organs.items():
        want = N_ORGANS if status in ("ok", "repaired") else 0
        res.check(r["lo"] == r["hi"] == want,
                  f"{status} extractions have {r['lo']}..{r['hi']} organ_findings rows each, not {want}")
    res.check(orphan_organs == 0, f"{orphan_organs} organ_findings rows without an extraction")
    usable = statuses["ok"] + statuses["repaired"]
    res.check(tumors_usable == tumors_all == usable,
              f"{tumors_all} tumor rows ({tumors_usable} of usable extractions) for {usable} ok extractions")
    res.check(not_current == 0, f"{not_current} ok extractions are not current")

    # Per report: the faults the server injected, the status it ended with.
    truncated = {rid for rid, t in texts.items() if is_truncated_report(cfg, t)}
    transport = {rid for rid, ev in server.events.items() if any(k in TRANSPORT_FAULTS for _, k in ev)}
    only_transport = transport - truncated
    wrong_transport = sorted(rid for rid in only_transport if by_id.get(rid, {}).get("status") != "ok")
    res.check(not wrong_transport, f"{len(wrong_transport)} reports with only transport faults not ok, "
              f"e.g. {[(r, by_id.get(r, {}).get('status')) for r in wrong_transport[:5]]}")
    clean_not_ok = sorted(rid for rid in set(texts) - truncated - transport
                          if by_id.get(rid, {}).get("status") != "ok")
    res.check(not clean_not_ok, f"{len(clean_not_ok)} reports without any fault not ok, e.g. {clean_not_ok[:5]}")

    def why_failed(r: dict) -> bool:
        err = r.get("error") or ""
        return (r["status"] == "failed" and r["attempts"] == 2 and "attempt 1: " in err and "attempt 2: " in err
                and err.count("Invalid JSON") == 2)

    wrong_truncated = sorted(rid for rid in truncated if not why_failed(by_id.get(rid, {"status": None})))
    res.check(not wrong_truncated, f"{len(wrong_truncated)} truncated-JSON reports not failed with both JSON "
              f"errors, e.g. {[(r, by_id.get(r, {}).get('status')) for r in wrong_truncated[:5]]}")
    res.check(statuses["failed"] == len(truncated), f"{statuses['failed']} failed, {len(truncated)} truncated")

    # Pending, then ok: requested in a run before the one that stored them. Never asked after being stored.
    stored_run = {rid: run_of.get(r["run_id"]) for rid, r in by_id.items()}
    at_kill, gave_up, asked_again = set(), set(), set()
    for rid, ev in server.events.items():
        runs_asked = {run for run, _ in ev}
        sr = stored_run.get(rid)
        if sr is None:
            continue
        if any(run > sr for run in runs_asked):
            asked_again.add(rid)
        for run in runs_asked:
            if run < sr:
                (at_kill if runs[run - 1].killed else gave_up).add(rid)
    res.check(not asked_again, f"{len(asked_again)} stored reports asked again by a later run, "
              f"e.g. {sorted(asked_again)[:5]}")
    pending_then = Counter(by_id[rid]["status"] for rid in at_kill | gave_up)
    answered_in_killed = {rid for rid, ev in server.events.items()
                          if any(runs[run - 1].killed and k in ("answer", "truncated") for run, k in ev)}
    lost_answers = {rid for rid in answered_in_killed if stored_run.get(rid) and not runs[stored_run[rid] - 1].killed}

    # The runs: one kill, then reruns until 0 or 3, no hang, nothing but 4 in between.
    codes = [r.exit_code for r in runs]
    res.check(runs[0].killed and runs[0].exit_code == -signal.SIGKILL,
              f"the first run was not SIGKILLed (exit {runs[0].exit_code})")
    res.check(0 < (runs[0].stored_after or 0) < len(texts),
              f"{runs[0].stored_after} of {len(texts)} reports stored at the kill: not partway")
    res.check(not any(r.hung for r in runs), f"a run hung past {cfg.run_timeout_s} s: {codes}")
    outcomes = [r["outcome"] for r in run_rows]
    res.check(outcomes[0] == "killed" and None not in outcomes,
              f"run outcomes {outcomes}: the killed run was not closed as killed by the next one")
    res.check(codes[-1] in (0, 3), f"the last run exited {codes[-1]} (runs: {codes})")
    res.check(all(c == 4 for c in codes[1:-1]), f"a rerun before the last exited other than 4: {codes}")
    res.check(server.outage_start is not None and server.counts["outage503"] > 0, "the outage never happened")
    res.check(server.counts["unknown_report"] == 0, f"{server.counts['unknown_report']} requests for unknown reports")

    stopped = [r.run for r in runs if r.summary and r.summary.get("outage")]
    n_req = sum(server.counts[k] for k in ("answer", "truncated", *TRANSPORT_FAULTS))
    not_outage = n_req - server.counts["outage503"]
    res.figures = {
        "reports": len(texts), "extractions": len(rows), "missing": len(missing), "duplicated": len(duplicated),
        "ok": statuses["ok"], "repaired": statuses["repaired"], "failed": statuses["failed"],
        "truncated_reports": len(truncated), "transport_faulted_reports": len(only_transport),
        "pending_then_ok": pending_then["ok"], "pending_then_failed": pending_then["failed"],
        "pending_at_kill": len(at_kill), "pending_after_transport_give_up": len(gave_up),
        "answers_lost_at_kill": len(lost_answers), "stored_at_kill": runs[0].stored_after,
        "requests": n_req, "requests_per_report": round(n_req / max(len(texts), 1), 3),
        "http500": server.counts["http500"], "slow": server.counts["slow"],
        "outage503": server.counts["outage503"], "outage503_other": server.counts["outage503_other"],
        "truncated_answers": server.counts["truncated"], "answers": server.counts["answer"],
        "reports_per_fault": {kind: sum(any(k == kind for _, k in ev) for ev in server.events.values())
                              for kind in (*TRANSPORT_FAULTS, "truncated")},
        "http500_rate": round(server.counts["http500"] / max(not_outage, 1), 4),
        "slow_rate": round(server.counts["slow"] / max(not_outage, 1), 4),
        "organ_rows_per_status": {s: [r["lo"], r["hi"]] for s, r in organs.items()}, "tumors": tumors_all,
        "runs": len(runs), "reruns": len(runs) - 1, "exit_codes": codes, "run_outcomes": outcomes,
        "outage_handling": (f"stopped by the client's breaker (exit 4) in run(s) {stopped}, rerun" if stopped
                            else "ridden out: no run stopped; reports whose calls gave up stayed pending, rerun"),
    }
    return res


# -- the soak --------------------------------------------------------------------------------------------------


def _stored(db: Path) -> int:
    from extract.store import Store

    with Store(db, read_only=True) as store:
        return _count(store, "SELECT count(*) FROM extractions")


def run_soak(cfg: SoakConfig, work: Path, emit: Any = None) -> Figures:
    """Make the store, serve, run the client (kill, reruns), check. `emit(dict)` gets one row per client run."""
    import pyarrow as pa

    from extract.store import Store

    work.mkdir(parents=True, exist_ok=True)
    db, logs = work / "soak.duckdb", work / "logs"
    logs.mkdir(exist_ok=True)
    for p in (db, db.with_suffix(".duckdb.wal")):
        p.unlink(missing_ok=True)
    texts = report_texts(cfg.n, cfg.seed)
    with Store(db) as store:
        store.add_reports(pa.table({"report_id": list(texts), "text": list(texts.values())}), source="soak")

    load0 = os.getloadavg()[0]
    cpu0, child0 = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    runs: list[ClientRun] = []
    with SoakServer(cfg, texts) as server:
        cmd = extract_command(cfg, db, server.url)
        for k in range(1, cfg.max_runs + 1):
            server.run = k
            kill_when = (lambda: server.answered_before(cfg.kill_at, cfg.kill_settle_s)) if k == 1 else None
            run = run_client(cmd, k, logs, cfg.run_timeout_s, kill_when)
            run.stored_after = _stored(db)
            runs.append(run)
            if emit is not None:
                s = run.summary or {}
                emit({"bench": "soak_run", "run": k, "exit_code": run.exit_code, "killed": run.killed,
                      "wall_s": run.wall_s, "stored_after": run.stored_after,
                      **{key: s.get(key) for key in ("pending", "ok", "repaired", "failed", "left_pending",
                                                     "outage", "llm_calls", "reports_per_s")}})
            if run.hung or (k > 1 and run.exit_code != 4):
                break
        wall = time.perf_counter() - t0
        outage = (server.outage_start - t0) if server.outage_start is not None else None
        res = check_store(db, cfg, texts, server, runs)
    child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res.figures.update({
        "wall_s": round(wall, 2), "reports_per_s": round(cfg.n / wall, 1),
        "client_wall_s": round(sum(r.wall_s for r in runs), 2),
        "client_cpu_s": round(child1.ru_utime + child1.ru_stime - child0.ru_utime - child0.ru_stime, 2),
        "server_and_driver_cpu_s": round(time.process_time() - cpu0, 2),
        "outage_started_at_s": round(outage, 2) if outage is not None else None,
        "load_1min_before": round(load0, 2), "load_1min_after": round(os.getloadavg()[0], 2),
    })
    if res.failures:
        for run in runs:
            res.figures.setdefault("stderr_tails", {})[run.run] = run.stderr_tail
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = SoakConfig()
    ap.add_argument("--n", type=int, default=d.n, help="reports")
    ap.add_argument("--seed", type=int, default=d.seed, help="seeds the reports and the faults")
    ap.add_argument("--p-500", type=float, default=d.p_500, help="share of requests answered HTTP 500")
    ap.add_argument("--p-slow", type=float, default=d.p_slow, help="share of requests answered after --timeout")
    ap.add_argument("--p-truncated", type=float, default=d.p_truncated, help="share of reports answered cut JSON")
    ap.add_argument("--outage-s", type=float, default=d.outage_s, help="length of the outage (0: none)")
    ap.add_argument("--outage-at", type=float, default=d.outage_at, help="share of reports answered before it")
    ap.add_argument("--kill-at", type=float, default=d.kill_at, help="SIGKILL the first run once this share of "
                    "the reports was answered --kill-settle-s ago")
    ap.add_argument("--kill-settle-s", type=float, default=d.kill_settle_s)
    ap.add_argument("--latency-s", type=float, default=d.latency_s, help="time the server takes for every answer")
    ap.add_argument("--concurrency", type=int, default=d.concurrency, help="client: --concurrency")
    ap.add_argument("--timeout", type=float, default=d.timeout_s, help="client: --timeout (s)")
    ap.add_argument("--retries", type=int, default=d.retries, help="client: --retries")
    ap.add_argument("--client-outage-s", type=float, default=d.client_outage_s, help="client: --outage-s")
    ap.add_argument("--max-runs", type=int, default=d.max_runs, help="client runs at most, the killed one included")
    ap.add_argument("--run-timeout-s", type=float, default=d.run_timeout_s, help="a run longer than this hangs")
    ap.add_argument("--work-dir", type=Path, help="store and client logs (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep --work-dir afterwards")
    args = ap.parse_args()
    cfg = SoakConfig(n=args.n, seed=args.seed, p_500=args.p_500, p_slow=args.p_slow, p_truncated=args.p_truncated,
                     outage_s=args.outage_s, outage_at=args.outage_at, kill_at=args.kill_at,
                     kill_settle_s=args.kill_settle_s, latency_s=args.latency_s,
                     concurrency=args.concurrency, timeout_s=args.timeout, retries=args.retries,
                     client_outage_s=args.client_outage_s, max_runs=args.max_runs, run_timeout_s=args.run_timeout_s)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_soak_"))

    def emit(row: dict) -> None:
        print(json.dumps(row), flush=True)

    try:
        res = run_soak(cfg, work, emit)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    emit({"bench": "soak", **asdict(cfg), "command": " ".join(extract_command(cfg, Path("DB"), "URL")[1:]),
          **res.figures, "invariants_ok": not res.failures, "failures": res.failures})
    sys.exit(1 if res.failures else 0)


if __name__ == "__main__":
    main()
