"""Ingest: formats, column detection, normalisation, sections, idempotency, and every bad input of issue 2."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from extract.ingest import (
    IngestConfig,
    IngestError,
    ingest_dump,
    load_dump,
    normalize_text,
    split_sections,
)
from extract.store import Store, StoreReadOnlyError
from rsuper.cli import app

runner = CliRunner()


def _csv(tmp_path, body: str, name: str = "dump.csv", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(body.encode(encoding))
    return path


def _rows(dump) -> list[tuple[str, str]]:
    return list(zip(dump.table["report_id"].to_pylist(), dump.table["text"].to_pylist()))


def _reports(db) -> list[tuple]:
    with Store(db, read_only=True) as s:
        return s.con.sql("SELECT report_id, version, text FROM reports ORDER BY ALL").fetchall()


# -- text -----------------------------------------------------------------------------------------


def test_normalize_text_unicode_whitespace_and_comma_joined_sections():
    assert normalize_text("  Cafe\u0301\r\nliver\t\u00a0 ok\u200b.  \n\n\n\nEnd ") == "Café\nliver ok.\n\nEnd"
    assert normalize_text("Liver normal.,IMPRESSION: no lesion.") == "Liver normal.\nIMPRESSION: no lesion."
    assert normalize_text("1,2,3 cm") == "1,2,3 cm"


def test_split_sections_finds_headers_at_line_start_and_inline_upper_case():
    text = "Exam: CT\nFindings: liver ok. the impression: kept\nIMPRESSIONS:\nnone. COMPARISON: none"
    assert split_sections(text) == [("EXAMINATION", "CT"), ("FINDINGS", "liver ok. the impression: kept"),
                                    ("IMPRESSION", "none."), ("COMPARISON", "none")]
    assert split_sections("Header line\nFINDINGS: x") == [("PREAMBLE", "Header line"), ("FINDINGS", "x")]
    assert split_sections("Liver: 2 cm cyst.") == []


def test_parallel_slices_give_the_serial_result():
    from extract.ingest import _in_parallel, normalize_texts, sections_array

    texts = pa.array([f"FINDINGS: lesion  {i}.\r\nIMPRESSION: ok {i}" if i % 3 else "" for i in range(100)])
    normal = normalize_texts(texts)
    assert _in_parallel(normalize_texts, texts, min_rows=10).to_pylist() == normal.to_pylist()
    assert _in_parallel(sections_array, normal, min_rows=10).to_pylist() == sections_array(normal).to_pylist()


# -- formats and columns --------------------------------------------------------------------------


def test_csv_with_multiline_quotes_is_normalised_hashed_and_split(tmp_path):
    path = _csv(tmp_path, 'Accession Number,Report Text,Other\n'
                          'A1,"FINDINGS: Liver  normal.\r\nIMPRESSION: No lesion.",x\n'
                          'A2,"He said ""fine"".",y\n')
    dump = load_dump(path)
    assert (dump.id_column, dump.text_column, dump.rows_read) == ("Accession Number", "Report Text", 2)
    assert _rows(dump) == [("A1", "FINDINGS: Liver normal.\nIMPRESSION: No lesion."), ("A2", 'He said "fine".')]
    assert dump.table["sha256"][0].as_py() == hashlib.sha256(_rows(dump)[0][1].encode()).hexdigest()
    assert dump.table["sections"][0].as_py() == [{"name": "FINDINGS", "text": "Liver normal."},
                                                 {"name": "IMPRESSION", "text": "No lesion."}]
    assert dump.table["source_row"].to_pylist() == [1, 2]


def test_delimiter_and_legacy_encoding_are_detected(tmp_path):
    body = "AccessionNumber;Report\n7;Lésion hépatique de 12 mm, segment IV, hypodense, probablement kyste.\n"
    dump = load_dump(_csv(tmp_path, body, encoding="cp1252"))
    assert _rows(dump) == [("7", "Lésion hépatique de 12 mm, segment IV, hypodense, probablement kyste.")]
    tsv = load_dump(_csv(tmp_path, "id\tText\nx\tone\n", name="d.tsv", encoding="utf-16"))
    assert _rows(tsv) == [("x", "one")]


def test_findings_and_impression_columns_are_joined(tmp_path):
    body = "Encrypted Accession Number,Findings,Impression\nE1,Liver ok.,Normal.\nE2,,Cyst.\n"
    dump = load_dump(_csv(tmp_path, body))
    assert dump.text_column == "Findings + Impression"
    assert _rows(dump) == [("E1", "FINDINGS:\nLiver ok.\n\nIMPRESSION:\nNormal."), ("E2", "IMPRESSION:\nCyst.")]


def test_named_columns_override_detection(tmp_path):
    path = _csv(tmp_path, "Accession Number,acc2,body2\nA,B,text one\n")
    dump = load_dump(path, IngestConfig(id_column="acc2", text_column="body2"))
    assert _rows(dump) == [("B", "text one")]
    with pytest.raises(IngestError, match="no column named 'nope'.*'Accession Number', 'acc2', 'body2'"):
        load_dump(path, IngestConfig(text_column="nope"))


def test_jsonl_parquet_json_and_text_folder(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"id": 12345, "report": "one"}\n\n{"id": 7, "report": "two"}\n')
    assert _rows(load_dump(tmp_path / "d.jsonl")) == [("12345", "one"), ("7", "two")]
    pq.write_table(pa.table({"Accession Number": [1.0, 2.0], "Report Text": ["a", "b"]}), tmp_path / "d.parquet")
    assert _rows(load_dump(tmp_path / "d.parquet")) == [("1", "a"), ("2", "b")]
    (tmp_path / "d.json").write_text(json.dumps([{"id": "j", "text": "x"}]))
    assert _rows(load_dump(tmp_path / "d.json")) == [("j", "x")]
    folder = tmp_path / "txt"
    (folder / "sub").mkdir(parents=True)
    (folder / "ACC1.txt").write_text("first report")
    (folder / "sub" / "ACC2.txt").write_bytes("zweiter Befund, Läsion".encode("cp1252"))
    dump = load_dump(folder)
    assert _rows(dump) == [("ACC1", "first report"), ("ACC2", "zweiter Befund, Läsion")]
    assert dump.table["source_file"].to_pylist() == [str(folder / "ACC1.txt"), str(folder / "sub" / "ACC2.txt")]


def _xlsx(path, sheets: dict[str, list[list]]):
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
    wb.save(path)
    return path


def test_excel_picks_the_one_sheet_with_reports_or_asks(tmp_path):
    one = _xlsx(tmp_path / "one.xlsx", {"Notes": [["a", "b"], [1, 2]],
                                        "Reports": [["Accession Number", "Report"], [101, "text a"], [None, None],
                                                    [102, "text b"]]})
    dump = load_dump(one)
    assert _rows(dump) == [("101", "text a"), ("102", "text b")]
    assert dump.table["source_row"].to_pylist() == [2, 4]  # spreadsheet rows
    many = _xlsx(tmp_path / "many.xlsx", {"2024": [["id", "report"], ["x", "a"]],
                                          "2025": [["id", "report"], ["y", "b"]]})
    with pytest.raises(IngestError, match=r"many.xlsx: several sheets .*'2024', '2025'.*--sheet"):
        load_dump(many)
    assert _rows(load_dump(many, IngestConfig(sheet="2025"))) == [("y", "b")]
    with pytest.raises(IngestError, match="no sheet named 'x'; the sheets are '2024', '2025'"):
        load_dump(many, IngestConfig(sheet="x"))


# -- bad input: each one clear error naming file, row and column ----------------------------------


def test_empty_file(tmp_path):
    with pytest.raises(IngestError, match=r"dump.csv: the file is empty"):
        load_dump(_csv(tmp_path, ""))
    with pytest.raises(IngestError, match=r"dump.csv: the file has a header but no data rows"):
        load_dump(_csv(tmp_path, "id,text\n"))


def test_no_recognisable_columns(tmp_path):
    with pytest.raises(IngestError, match=r"no recognisable id column.*'foo', 'bar'.*--id-column"):
        load_dump(_csv(tmp_path, "foo,bar\n1,2\n"))
    with pytest.raises(IngestError, match=r"no recognisable report text column.*--text-column"):
        load_dump(_csv(tmp_path, "id,bar\n1,2\n"))


def test_a_duplicate_id_that_is_report_text_is_not_printed(tmp_path):
    findings = "Liver: a 2.2 cm hypodense lesion in segment 8. Spleen and pancreas unremarkable, no adenopathy."
    path = _csv(tmp_path, f'findings,impression\n"{findings}",one\n"{findings}",two\n')
    with pytest.raises(IngestError) as info:
        load_dump(path, IngestConfig(id_column="findings", text_column="impression"))
    message = str(info.value)
    assert f"id of {len(findings)} characters (sha256 " in message and "is --id-column the report text?" in message
    assert "hypodense" not in message and "appears in row 1 and row 2" in message


def test_duplicate_ids_with_different_text(tmp_path):
    path = _csv(tmp_path, "id,text\nA,one\nB,two\nA,one\nA,changed\n")
    with pytest.raises(IngestError, match=r"dump.csv: row 4, column 'text': id 'A' appears in row 1 and row 4"):
        load_dump(path)
    dump = load_dump(path, IngestConfig(allow_changed_duplicates=True))
    assert dump.table.num_rows == 4
    with Store(tmp_path / "s.duckdb") as store:
        stats = ingest_dump(store, path, IngestConfig(allow_changed_duplicates=True)).stats
    assert (stats.new, stats.new_versions, stats.duplicates_in_dump) == (2, 1, 1)
    assert _reports(tmp_path / "s.duckdb") == [("A", 1, "one"), ("A", 2, "changed"), ("B", 1, "two")]


def test_empty_report_text(tmp_path):
    path = _csv(tmp_path, 'id,Report Text\nA,fine\nB,"  \n "\nC,\n')
    with pytest.raises(IngestError, match=r"row 2, column 'Report Text': empty report text \(1 more bad rows"):
        load_dump(path)
    dump = load_dump(path, IngestConfig(skip_bad_rows=True))
    assert _rows(dump) == [("A", "fine")]
    assert [(b.row, b.problem) for b in dump.skipped] == [
        ("row 2", "empty report text"), ("row 3", "empty report text")]


def test_binary_garbage(tmp_path):
    png = tmp_path / "scan.csv"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(IngestError, match=r"scan.csv: line 3: binary data \(NUL byte"):
        load_dump(png)
    ctrl = _csv(tmp_path, "id,text\nA,good\nB,bad\x01\x02bytes\n")
    with pytest.raises(IngestError, match=r"row 2, column 'text': binary or control characters"):
        load_dump(ctrl)


def test_two_megabyte_report_is_accepted_up_to_max_chars(tmp_path):
    big = ("Large report sentence. " * 91_000)[:2_000_000 - 1] + "x"
    path = _csv(tmp_path, f'id,text\nsmall,short\nbig,"{big}"\n')
    dump = load_dump(path)
    assert dump.table["n_chars"].to_pylist() == [5, 2_000_000]
    with pytest.raises(IngestError, match=r"row 2, column 'text': report of 2,000,000 characters is above "
                                          r"--max-chars 1,000,000"):
        load_dump(path, IngestConfig(max_chars=1_000_000))


def test_mixed_encodings(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_bytes("id,text\nA,naïve UTF-8\n".encode() + "B,caf\u00e9 cp1252\n".encode("cp1252"))
    with pytest.raises(IngestError, match=r"mixed.csv: line 3: mixed text encodings.*--fallback-encoding"):
        load_dump(path)
    assert _rows(load_dump(path, IngestConfig(fallback_encoding="cp1252"))) == [
        ("A", "naïve UTF-8"), ("B", "café cp1252")]


def test_truncated_csv_line(tmp_path):
    with pytest.raises(IngestError, match=r"dump.csv: row 2: expected 3 fields, found 2"):
        load_dump(_csv(tmp_path, "id,text,x\nA,one,1\nB,tw\nC,three,3\n"))
    with pytest.raises(IngestError, match=r"dump.csv: row 2, column 'text': malformed CSV.*unbalanced quote"):
        load_dump(_csv(tmp_path, 'id,x,text\nA,1,"one"\nB,2,"tw'))


def test_non_existent_path(tmp_path):
    with pytest.raises(IngestError, match=r"missing.csv: no such file or folder"):
        load_dump(tmp_path / "missing.csv")
    result = runner.invoke(app, ["ingest", str(tmp_path / "missing.csv"), "--db", str(tmp_path / "s.duckdb")])
    assert result.exit_code == 2 and "missing.csv: no such file or folder" in result.output


def test_failed_ingest_leaves_the_store_unchanged(tmp_path):
    db = tmp_path / "s.duckdb"
    good = _csv(tmp_path, "id,text\nA,one\n", name="good.csv")
    bad = _csv(tmp_path, "id,text\nB,two\nC,\n", name="bad.csv")
    result = runner.invoke(app, ["ingest", str(good), str(bad), "--db", str(db)])
    assert result.exit_code == 2
    assert "bad.csv: row 2, column 'text': empty report text" in result.output
    assert _reports(db) == [("A", 1, "one")]  # the good dump before it stays, nothing of the bad one


def test_read_only_or_locked_database(tmp_path):
    db = tmp_path / "s.duckdb"
    dump = _csv(tmp_path, "id,text\nA,one\n")
    with Store(db):
        pass
    with Store(db, read_only=True) as store:
        with pytest.raises(StoreReadOnlyError, match="s.duckdb: the store is open read-only"):
            ingest_dump(store, dump)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from extract.store import Store
        with Store({str(db)!r}):
            print("locked", flush=True)
            sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = runner.invoke(app, ["ingest", str(dump), "--db", str(db), "--wait-s", "0.2"])
    finally:
        holder.communicate("", timeout=60)
    assert result.exit_code == 2
    assert "s.duckdb: the database is locked: another process has it open" in result.output
    assert "(waited 0.2 s)" in result.output
    assert _reports(db) == []


# -- the command ----------------------------------------------------------------------------------


def test_cli_ingest_is_idempotent_and_versions_changed_text(tmp_path):
    db = tmp_path / "s.duckdb"
    first = _csv(tmp_path, "Accession Number,Report Text\nA,one\nB,two\n", name="d1.csv")
    second = _csv(tmp_path, "Accession Number,Report Text\nA,one amended\nB,two\n", name="d2.csv")
    outs = []
    for path in (first, first, second):
        result = runner.invoke(app, ["ingest", str(path), "--db", str(db), "--json"])
        assert result.exit_code == 0, result.output
        outs.append(json.loads(result.output))
    assert [(o["new"], o["unchanged"], o["new_versions"]) for o in outs] == [(2, 0, 0), (0, 2, 0), (0, 1, 1)]
    assert _reports(db) == [("A", 1, "one"), ("A", 2, "one amended"), ("B", 1, "two")]
    text = runner.invoke(app, ["ingest", str(first), "--db", str(db)]).output
    assert "2 unchanged" in text and "one" not in text.replace("unchanged", "")  # no report text printed


def test_cli_query_is_read_only_and_formats(tmp_path):
    db = tmp_path / "s.duckdb"
    runner.invoke(app, ["ingest", str(_csv(tmp_path, "id,text\nA,one\nB,two\n")), "--db", str(db)])
    result = runner.invoke(app, ["query", "SELECT report_id, n_chars FROM reports ORDER BY 1", "--db", str(db),
                                 "--format", "csv"])
    assert result.exit_code == 0 and result.output == "report_id,n_chars\nA,3\nB,3\n"
    result = runner.invoke(app, ["query", "DELETE FROM reports", "--db", str(db)])
    assert result.exit_code == 2 and "read-only" in result.output
    assert len(_reports(db)) == 2


def test_cli_query_cannot_write_a_file_with_explain_analyze_copy(tmp_path):
    db, leak = tmp_path / "s.duckdb", tmp_path / "leak.csv"
    runner.invoke(app, ["ingest", str(_csv(tmp_path, "id,text\nA,secret text\n")), "--db", str(db)])
    result = runner.invoke(app, ["query", f"EXPLAIN ANALYZE COPY (SELECT text FROM reports) TO '{leak}'",
                                 "--db", str(db)])
    assert result.exit_code == 2 and "reads only this store" in result.output
    assert "secret" not in result.output and not leak.exists()


def test_a_pipe_is_refused_before_anything_reads_it(tmp_path):
    import os

    fifo = tmp_path / "dump.csv"
    os.mkfifo(fifo)  # nobody writes to it: reading would block for ever
    with pytest.raises(IngestError, match=r"dump.csv: not a regular file \(a pipe, socket or device\)"):
        load_dump(fifo)
    result = runner.invoke(app, ["ingest", str(fifo), "--db", str(tmp_path / "s.duckdb")])
    assert result.exit_code != 0 and "not a regular file" in result.output and "Traceback" not in result.output


def test_an_unreadable_txt_in_a_folder_is_one_error_naming_it(tmp_path, monkeypatch):
    from pathlib import Path

    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "A.txt").write_text("Liver normal.")
    (folder / "B.txt").write_text("Spleen normal.")
    real_read = Path.read_bytes

    def read_bytes(self):
        if self.name == "B.txt":  # root reads any file whatever its mode, so the refusal is simulated
            raise PermissionError(13, "Permission denied")
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(IngestError, match=r"B.txt: cannot read the file: Permission denied"):
        load_dump(folder)


def test_a_latin1_dump_of_short_western_reports_is_read_as_written_and_the_guess_is_said(tmp_path, caplog):
    # Mostly-ASCII reports leave the detector near-ties; hp_roman8 or cp1250 would turn "très à" into "trÒs Á"/"trčs ŕ".
    body = ("id,text\nR1,\"Foie: lésion très hypodense à droite, à côté du hile; pas d'adénopathie.\"\n"
            "R2,\"Niere: Läsion 12 mm, Größe stabil.\"\n")
    with caplog.at_level("WARNING", logger="extract.ingest"):
        dump = load_dump(_csv(tmp_path, body, encoding="latin-1"))
    assert _rows(dump) == [("R1", "Foie: lésion très hypodense à droite, à côté du hile; pas d'adénopathie."),
                           ("R2", "Niere: Läsion 12 mm, Größe stabil.")]
    assert any("not UTF-8; read as cp1252" in r.getMessage() for r in caplog.records)


# The detector alone read German cp1252 as hp_roman8 ("Lðsion", "Gr—Ôe") and Polish cp1250 as cp1252 ("w¹troby").
LEGACY_DUMPS = [
    ("cp1252", "Leber: Läsion 14 mm in Segment VII, Größe unverändert; Nebennieren unauffällig."),
    ("cp1250", "Wątroba: zmiana ogniskowa 12 mm, łagodna; śledziona bez zmian, pęcherzyk żółciowy prawidłowy."),
    ("cp1251", "Печень: очаговое образование 12 мм в VII сегменте, без изменений."),
    ("cp1253", "Ήπαρ: εστιακή βλάβη 12 mm στο τμήμα VII, χωρίς μεταβολή."),
    ("cp1254", "Karaciğerde 14 mm lezyon, böbrekler olağan; dalak büyüklüğü normal."),
]


@pytest.mark.parametrize("encoding,text", LEGACY_DUMPS, ids=[e for e, _ in LEGACY_DUMPS])
def test_a_legacy_code_page_dump_is_read_as_written_and_the_encoding_is_kept(tmp_path, encoding, text):
    path = _csv(tmp_path, f"id,text\nR1,\"{text}\"\nR2,\"Zweiter Befund: {text[:30]}\"\n", encoding=encoding)
    with Store(tmp_path / "s.duckdb") as store:
        result = ingest_dump(store, path)
        stored = store.query("SELECT text FROM reports ORDER BY report_id").column("text").to_pylist()
        ingests = store.query("SELECT source_file, encodings, encoding_guessed, rows_read, n_new FROM ingests"
                              ).to_pylist()
    assert stored[0] == text
    assert result.encodings == {encoding: 1} and result.encoding_guessed
    assert ingests == [{"source_file": str(path), "encodings": json.dumps({encoding: 1}), "encoding_guessed": True,
                        "rows_read": 2, "n_new": 2}]


def test_a_utf8_dump_and_a_folder_record_their_encodings_per_ingest(tmp_path):
    folder = tmp_path / "txt"
    folder.mkdir()
    (folder / "A.txt").write_text("Läsion der Leber.", encoding="utf-8")
    (folder / "B.txt").write_bytes("Läsion der Niere, Größe 2 cm.".encode("cp1252"))
    (folder / "C.txt").write_text("No lesion.", encoding="utf-8")
    csv_path = _csv(tmp_path, "id,text\nX,plain\n")
    with Store(tmp_path / "s.duckdb") as store:
        ingest_dump(store, folder)
        ingest_dump(store, csv_path)
        ingest_dump(store, csv_path)  # a re-ingest is recorded too: nothing new
        rows = store.query("SELECT encodings, encoding_guessed, n_new, n_unchanged FROM ingests ORDER BY ingested_at, "
                           "source_file").to_pylist()
    assert [(json.loads(r["encodings"]), r["encoding_guessed"], r["n_new"], r["n_unchanged"]) for r in rows] == [
        ({"cp1252": 1, "utf-8": 2}, True, 3, 0), ({"utf-8": 1}, False, 1, 0), ({"utf-8": 1}, False, 0, 1)]


def test_double_encoded_utf8_text_is_refused_with_its_row(tmp_path):
    mangled = "Läsion, Größe 12 mm".encode("utf-8").decode("cp1252")  # 'LÃ¤sion, GrÃ¶ÃŸe'
    path = _csv(tmp_path, f"id,text\nR1,fine text\nR2,\"{mangled}\"\n")
    with pytest.raises(IngestError, match=r"dump.csv: row 2, column 'text': the text looks double-encoded") as exc:
        load_dump(path)
    assert mangled not in str(exc.value)
    assert _rows(load_dump(path, IngestConfig(skip_bad_rows=True))) == [("R1", "fine text")]
    assert _rows(load_dump(_csv(tmp_path, "id,text\nR1,SÃO PAULO: Lesão 5 °C\n", name="pt.csv"))) == [
        ("R1", "SÃO PAULO: Lesão 5 °C")]


def test_bytes_that_read_as_garbage_in_every_code_page_are_refused_naming_the_line(tmp_path):
    path = tmp_path / "dump.csv"
    path.write_bytes(b"id,text\nR1,normal report\nR2,Lesion se\x81g\x8dment 4, norm\x9dal\n")
    with pytest.raises(IngestError, match=r"dump.csv: line 3: not UTF-8, and it reads as garbled text in every "
                                          r"encoding tried \(best \w+\); re-save it as UTF-8, or pass --encoding"):
        load_dump(path)
    # A DOS code page is not guessed (it reads nearly any byte as a letter), so it is refused, not garbled.
    dos = _csv(tmp_path, "id,text\nR1,\"Leber: Läsion 14 mm, Größe unverändert.\"\n", name="dos.csv",
               encoding="cp850")
    with pytest.raises(IngestError, match="garbled text in every encoding tried"):
        load_dump(dos)
    assert _rows(load_dump(dos, IngestConfig(encoding="cp850"))) == [("R1", "Leber: Läsion 14 mm, Größe unverändert.")]


def test_reports_longer_than_extract_sends_are_counted(tmp_path):
    from extract.backends.base import MAX_REPORT_CHARS

    path = _csv(tmp_path, f"id,text\nR1,short\nR2,{'word ' * (MAX_REPORT_CHARS // 5 + 10)}\n")
    assert load_dump(path).n_over_extract_limit == 1
