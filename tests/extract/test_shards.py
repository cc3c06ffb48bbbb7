"""Result shards: atomic writes, one load per shard, idempotent merges, clear errors for broken shards."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from llm_fakes import ANSWERS, KIDNEY_REPORT, LIVER_REPORT, NORMAL_REPORT, add_reports

from extract.engine import Job, Outcome, config_hash, extraction_key, parse_answer, result_tables
from extract.shards import (
    MANIFEST,
    default_shard_root,
    finished_shards,
    load_shards,
    remove_partial,
    shard_id,
    write_shard,
)
from extract.store import Store, StoreError
from schemas.vocab import ORGANS

CFG = config_hash({"test": "shards"})
TEXTS = {"r1": LIVER_REPORT, "r2": KIDNEY_REPORT, "r3": NORMAL_REPORT}


def _tables(store, report_ids, run_id="run-a"):
    rows = []
    for rid, version, sha, text in store.pending_reports(CFG):
        if rid in report_ids:
            payload, warnings = parse_answer(ANSWERS[text], text)
            rows.append((Job(rid, version, sha, text), Outcome("ok", 1, payload=payload, raw_output=ANSWERS[text],
                                                               warnings=warnings)))
    return result_tables(rows, run_id, CFG)


@pytest.fixture
def filled(store):
    add_reports(store, TEXTS)
    return store


def test_shard_id_is_the_content_not_the_order():
    assert shard_id(["b", "a"]) == shard_id(["a", "b"]) != shard_id(["a"])


def test_write_is_atomic_and_a_retried_block_is_success(filled, tmp_path):
    root = tmp_path / "shards"
    tables = _tables(filled, {"r1", "r2"})
    sid, written = write_shard(root, "run-a", *tables, provenance={"config_hash": CFG})
    assert written and (root / "run-a" / sid / MANIFEST).is_file()
    manifest = json.loads((root / "run-a" / sid / MANIFEST).read_text())
    assert manifest["n_extractions"] == 2 and manifest["n_tumors"] == 2 and manifest["config_hash"] == CFG
    assert write_shard(root, "run-a", *tables, provenance={}) == (sid, False)
    assert [p.name for p in finished_shards(root)] == [sid]
    # What a worker killed mid-write leaves: not a shard, removed by the next run.
    (root / "run-a" / f".tmp-{sid}-dead").mkdir()
    assert [p.name for p in finished_shards(root)] == [sid]
    assert remove_partial(root) == 1 and remove_partial(root) == 0


def test_load_merges_each_shard_once_and_twice_changes_nothing(filled, tmp_path):
    root = tmp_path / "shards"
    write_shard(root, "run-a", *_tables(filled, {"r1"}), provenance={})
    write_shard(root, "run-a", *_tables(filled, {"r2", "r3"}), provenance={})
    first = load_shards(filled, root, batch_reports=1)  # one transaction per shard
    assert (first.shards_found, first.shards_loaded, first.extractions_written) == (2, 2, 3)
    counts = filled.query("SELECT (SELECT count(*) FROM extractions) AS e, (SELECT count(*) FROM tumors) AS t, "
                          "(SELECT count(*) FROM organ_findings) AS o, (SELECT count(*) FROM extraction_shards) AS s")
    again = load_shards(filled, root)
    assert (again.shards_found, again.shards_loaded, again.extractions_read) == (2, 0, 0)
    assert filled.query("SELECT (SELECT count(*) FROM extractions) AS e, (SELECT count(*) FROM tumors) AS t, "
                        "(SELECT count(*) FROM organ_findings) AS o, (SELECT count(*) FROM extraction_shards) AS s"
                        ).to_pylist() == counts.to_pylist() == [{"e": 3, "t": 2, "o": 3 * len(ORGANS), "s": 2}]
    assert filled.pending_reports(CFG) == []
    liver = filled.query("SELECT largest_diameter_mm, segments FROM tumors WHERE report_id = 'r1'").to_pylist()
    assert liver == [{"largest_diameter_mm": 22.0, "segments": ["liver_segment_8"]}]


def test_a_shard_of_reports_stored_already_writes_nothing(filled, tmp_path):
    ext, tum, org = _tables(filled, {"r1"})
    filled.write_extractions(ext, tum, org)  # a direct run stored r1 first
    write_shard(tmp_path, "run-b", ext, tum, org, provenance={})
    stats = load_shards(filled, tmp_path)
    assert (stats.shards_loaded, stats.extractions_read, stats.extractions_written) == (1, 1, 0)
    key = extraction_key("r1", filled.query("SELECT sha256 FROM reports WHERE report_id = 'r1'")
                         .column("sha256")[0].as_py(), CFG)
    stored = filled.query(f"SELECT count(*) AS n FROM extractions WHERE extraction_key = '{key}'")
    assert stored.to_pylist() == [{"n": 1}]


def test_a_broken_shard_is_named_and_nothing_of_its_batch_is_stored(filled, tmp_path):
    good = write_shard(tmp_path, "run-a", *_tables(filled, {"r1"}), provenance={})[0]
    bad = write_shard(tmp_path, "run-a", *_tables(filled, {"r2"}), provenance={})[0]
    path = tmp_path / "run-a" / bad / "extractions.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(StoreError, match=f"{bad}.*unreadable result shard"):
        load_shards(filled, tmp_path)
    assert filled.loaded_shards() <= {good}
    # Rows that break the store's rules: the batch is refused whole, naming the shard.
    ext, tum, org = _tables(filled, {"r2"})
    pq.write_table(ext, path)
    pq.write_table(org.slice(0, 3), tmp_path / "run-a" / bad / "organ_findings.parquet")
    with pytest.raises(StoreError, match=f"result shards .*{bad}.*organ_findings rows"):
        load_shards(filled, tmp_path)
    assert bad not in filled.loaded_shards()
    assert filled.query("SELECT count(*) AS n FROM extractions WHERE report_id = 'r2'").to_pylist() == [{"n": 0}]


def test_default_root_sits_beside_the_store(tmp_path):
    assert default_shard_root(tmp_path / "x.duckdb") == tmp_path / "x.duckdb.shards"


def test_store_migrates_to_the_shards_table(tmp_path):
    with Store(tmp_path / "s.duckdb") as s:
        assert s.query("SELECT count(*) AS n FROM extraction_shards").to_pylist() == [{"n": 0}]
