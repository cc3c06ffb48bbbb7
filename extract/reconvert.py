"""Stored answers converted again under the conversion rules in force, with no LLM call.

An extraction keeps the model's raw answer beside the rows the conversion (`extract.reading`, the schemas)
derived from it, and that conversion's digest (`extract.answers.CONVERSION_SHA256`). An upgrade that changes the
rules leaves earlier rows stale, and the run key (which names what decides the *answer*) does not change, so the
LLM is rightly not called again. `rsuper extract` therefore converts its run key's stale rows before it calls the
LLM, and `rsuper reconvert` converts any key's.

Each batch is one transaction, so an interrupted pass leaves every extraction either as it was or converted, and
the next pass goes on with the rest. An answer the current rules reject becomes `failed` (its raw answer stays;
`rsuper extract --retry-failed` asks the LLM again). A failed extraction whose answer earlier rules rejected is
converted again too, and becomes usable when the rules in force accept it (`ok`, or `repaired` when it is the
answer to the repair call); one the server failed or cut at max_tokens is left to `--retry-failed`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from extract.answers import CONVERSION_SHA256, NOT_CONVERSION_ERRORS, AnswerError, parse_stored_answer
from extract.progress import progress_bar
from extract.store.store import StoredAnswer
from schemas.tables import PayloadRows, extraction_tables, payload_rows

UPDATES_SCHEMA = pa.schema([
    pa.field("extraction_key", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("payload", pa.string()),
    pa.field("conversion_sha256", pa.string(), nullable=False),
])


@dataclass
class ReconvertStats:
    """What one pass did.

    Attributes:
        checked: stored extractions converted again.
        changed: those whose payload differs from the stored one (their tumor and organ rows changed), or that
            became failed or usable.
        failed: usable ones whose answer the current rules reject (now `failed`).
        recovered: failed ones whose answer the current rules accept (now `ok` or `repaired`).
        wall_s: seconds the pass took.
    """

    checked: int = 0
    changed: int = 0
    failed: int = 0
    recovered: int = 0
    wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"reconverted": self.checked, "reconvert_changed": self.changed, "reconvert_failed": self.failed,
                "reconvert_recovered": self.recovered, "reconvert_s": round(self.wall_s, 2)}


def _same_payload(stored: str | None, new: str) -> bool:
    return stored is not None and json.loads(stored) == json.loads(new)


def converted_tables(answers: list[StoredAnswer],
                     stats: ReconvertStats) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(updates, tumors, organ_findings) for `Store.replace_conversions`: each answer converted again."""
    updates: list[dict[str, Any]] = []
    items: list[tuple[str, str, PayloadRows]] = []
    for a in answers:
        raw = a.raw_output or ""
        try:
            payload, _ = parse_stored_answer(raw, a.text)
        except AnswerError as exc:
            if a.status != "failed":
                stats.failed += 1
                stats.changed += 1
            updates.append({"extraction_key": a.extraction_key, "status": "failed",
                            "error": f"conversion {CONVERSION_SHA256[:12]}: {exc}", "payload": None,
                            "conversion_sha256": CONVERSION_SHA256})
            continue
        rows = payload_rows(payload)
        status, error = a.status, a.error
        if status == "failed":  # the stored answer is the last call's: the repair call's when there were two
            status, error = ("repaired" if a.attempts == 2 else "ok"), None
            stats.recovered += 1
        stats.changed += not _same_payload(a.payload, rows.payload_json)
        updates.append({"extraction_key": a.extraction_key, "status": status, "error": error,
                        "payload": rows.payload_json, "conversion_sha256": CONVERSION_SHA256})
        items.append((a.extraction_key, a.report_id, rows))
    stats.checked += len(answers)
    tumors, findings = extraction_tables(items)
    return pa.Table.from_pylist(updates, schema=UPDATES_SCHEMA), tumors, findings


def reconvert_store(store: Any, config_hash: str | None = None, batch: int = 2000, progress: bool = True,
                    interval_s: float = 30.0) -> ReconvertStats:
    """Convert again every usable extraction of `store` (of `config_hash` only, when given) that another
    conversion made, and every failed one whose answer another conversion rejected; see the module docstring.
    Releases the file between batches, as an extraction does."""
    start = time.perf_counter()
    stats = ReconvertStats()
    total = store.count_stale_conversions(CONVERSION_SHA256, config_hash,
                                          failed_unless=NOT_CONVERSION_ERRORS)
    if total:
        bar = progress_bar(total, progress, interval_s, label="reconvert")
        try:
            while answers := store.stale_conversions(CONVERSION_SHA256, config_hash, limit=batch,
                                                     failed_unless=NOT_CONVERSION_ERRORS):
                store.replace_conversions(*converted_tables(answers, stats))
                store.release()
                bar.update(len(answers))
        finally:
            bar.close()
    stats.wall_s = time.perf_counter() - start
    return stats
