"""Read report dumps (CSV/TSV, JSONL/JSON, Parquet, Excel, folders of .txt) into the store's `reports` table.

Pipeline per dump: read the bytes (detect the encoding) -> an Arrow table of string columns -> find the id and
text columns -> normalise the text (vectorised with pyarrow.compute) -> check every row -> split sections ->
sha256 -> `Store.add_reports` (one transaction per dump). Any bad input raises `IngestError` naming the file,
row and column; nothing of that dump is stored then.

Row numbers: for delimited files, JSONL, JSON and Parquet `row N` is the 1-based data record (the header is not
counted; a quoted field spanning lines is one record). For Excel it is the spreadsheet row. Byte-level problems
(encodings, binary data) are located by `line N` of the file.

Report text is protected health information: messages name rows and columns, never quote the text.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from pydantic import BaseModel, ConfigDict, Field

from extract.backends.base import MAX_REPORT_CHARS
from extract.encoding_guess import read_candidates
from extract.store import IngestStats, SourceInfo, Store

#: Default upper bound on one report's length (characters, after normalisation). Real reports are < 50 k.
DEFAULT_MAX_CHARS = 4_000_000

DELIMITED_SUFFIXES = {".csv": None, ".tsv": "\t", ".tab": "\t", ".psv": "|"}
JSON_SUFFIXES = {".jsonl", ".ndjson", ".json"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
EXCEL_SUFFIXES = {".xlsx", ".xlsm"}

#: Id column names in order of preference, compared after `_column_key` (case and punctuation dropped).
ID_COLUMNS = (
    "anonacc", "encryptedaccessionnumber", "accessionnumber", "accessionno", "accession", "acc", "accno",
    "reportid", "id", "bdmapid", "studyid", "examid", "noteid",
)
#: Whole-report text column names in order of preference.
TEXT_COLUMNS = (
    "reporttext", "report", "text", "fulltext", "reportbody", "narrative", "reportnarrative", "body",
    "notetext", "note", "content", "findingsimpression",
)
#: Section columns that together make a report when no whole-report column exists (joined in this order).
SECTION_COLUMNS = (("findings", "FINDINGS"), ("impression", "IMPRESSION"), ("impressions", "IMPRESSION"))

#: Top-level report sections recognised by `split_sections` (a header is the name followed by a colon).
SECTION_NAMES = (
    "CLINICAL HISTORY", "CLINICAL INFORMATION", "CLINICAL INDICATION", "REASON FOR EXAM", "HISTORY", "INDICATION",
    "INDICATIONS", "EXAMINATION", "EXAM", "PROCEDURE", "TECHNIQUE", "COMPARISON", "COMPARISONS", "FINDINGS",
    "IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS", "RECOMMENDATION", "RECOMMENDATIONS", "ADDENDUM",
)
_SECTION_ALIASES = {"IMPRESSIONS": "IMPRESSION", "CONCLUSIONS": "CONCLUSION", "INDICATIONS": "INDICATION",
                    "COMPARISONS": "COMPARISON", "RECOMMENDATIONS": "RECOMMENDATION", "EXAM": "EXAMINATION"}
_NAMES_RE = "|".join(n.replace(" ", " +") for n in sorted(SECTION_NAMES, key=len, reverse=True))

log = logging.getLogger(__name__)


class IngestConfig(BaseModel):
    """How to read dumps. Column names are matched exactly; everything else is detected when left None."""

    model_config = ConfigDict(extra="forbid")

    id_column: str | None = Field(None, description="id column; default: detected from common names")
    text_column: str | None = Field(None, description="report text column; default: detected")
    sheet: str | None = Field(None, description="Excel sheet; default: the one sheet with report columns")
    delimiter: str | None = Field(None, description="field delimiter of delimited text; default: sniffed")
    encoding: str | None = Field(None, description="force a text encoding; default: UTF-8, else detected")
    fallback_encoding: str | None = Field(
        None, description="decode the non-UTF-8 lines of a mixed-encoding file with this encoding"
    )
    max_chars: int = Field(DEFAULT_MAX_CHARS, ge=1, description="longest accepted report, in characters")
    skip_bad_rows: bool = Field(False, description="skip (and report) bad rows instead of failing the dump")
    allow_changed_duplicates: bool = Field(
        False, description="an id with several different texts in one dump: keep them as versions in row order"
    )


class IngestError(ValueError):
    """Bad input. The message names the file and, where known, the row and column."""

    def __init__(self, path: Path | str, problem: str, row: str | None = None, column: str | None = None):
        where = str(path)
        if row is not None:
            where += f": {row}"
        if column is not None:
            where += f", column '{column}'"
        super().__init__(f"{where}: {problem}")
        self.path, self.row, self.column, self.problem = str(path), row, column, problem


@dataclass(frozen=True)
class BadRow:
    """A row left out with `skip_bad_rows` (location and reason only, never text)."""

    row: str
    column: str
    problem: str


@dataclass
class LoadedDump:
    """One dump, read and normalised, ready for `Store.add_reports`.

    Attributes:
        table: columns report_id, text, sha256, sections, n_chars, source_row, source_file.
        id_column / text_column: the columns used (text may be `Findings + Impression`).
        skipped: bad rows left out (only with `skip_bad_rows`).
        encodings: encoding -> files read with it; encoding_guessed: some file's encoding was guessed.
        n_over_extract_limit: reports longer than `rsuper extract` sends by default (`MAX_REPORT_CHARS`).
    """

    path: Path
    table: pa.Table
    id_column: str
    text_column: str
    rows_read: int
    skipped: list[BadRow] = field(default_factory=list)
    encodings: dict[str, int] = field(default_factory=lambda: {"utf-8": 1})
    encoding_guessed: bool = False
    n_over_extract_limit: int = 0

    def source_info(self) -> SourceInfo:
        return SourceInfo(self.encodings, self.encoding_guessed, self.rows_read, len(self.skipped))


@dataclass
class DumpResult:
    path: Path
    rows_read: int
    stats: IngestStats
    id_column: str
    text_column: str
    skipped: list[BadRow]
    encodings: dict[str, int] = field(default_factory=lambda: {"utf-8": 1})
    encoding_guessed: bool = False
    n_over_extract_limit: int = 0


# --------------------------------------------------------------------------------------------------
# Text normalisation (pure, vectorised)
# --------------------------------------------------------------------------------------------------

_ZERO_WIDTH = "[\u200b\u200c\u200d\u2060\ufeff\u00ad]"
_SPACES = "[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]"
# "..., IMPRESSION:" style dumps where the sections were joined by commas: put the header on its own line.
_COMMA_HEADER = r"([.;!?])[ ]*,[ ]*([A-Z][A-Z /&()-]{1,40}:)"
_CONTROL = "[\x00-\x08\x0e-\x1f\x7f]"
# UTF-8 read as cp1252/latin-1 and saved again: 'é' -> 'Ã©', 'ß' -> 'ÃŸ', '°' -> 'Â°', '’' -> 'â€™'.
_DOUBLE_ENCODED = ("Ã[\u0080-\u009f\u00a1-\u00bf€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ]|Â[\u00a1-\u00bf]"
                   "|â€[™œ˜“”¦¢¡\u0080-\u00bf]")


def _replace_where(a: pa.Array, hint: str, pattern: str, replacement: str) -> pa.Array:
    """Regex replace only in the rows containing the literal `hint` (a cheap prefilter; same result)."""
    mask = pc.match_substring(a, hint)
    if not pc.any(mask).as_py():
        return a
    return pc.replace_with_mask(a, mask, pc.replace_substring_regex(pc.filter(a, mask), pattern, replacement))


def normalize_texts(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Canonical report text, the form that is hashed and stored.

    NFC; CR/CRLF/other line breaks -> LF; zero-width characters dropped; Unicode and tab spaces -> one space;
    comma-joined section headers (`".,IMPRESSION:"`) on their own line; runs of spaces collapsed; spaces around
    line breaks dropped; at most one blank line; leading/trailing whitespace trimmed.
    """
    a = pc.utf8_normalize(texts, "NFC")
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    for old, new in (("\r\n", "\n"), ("\r", "\n"), ("\v", "\n"), ("\f", "\n"), ("\t", " ")):
        a = pc.replace_substring(a, old, new)
    non_ascii = pc.invert(pc.string_is_ascii(a))
    if pc.any(non_ascii).as_py():  # Unicode spaces, breaks and zero-width characters: only in non-ASCII rows
        sub = pc.filter(a, non_ascii)
        sub = pc.replace_substring_regex(sub, "[\u0085\u2028\u2029]", "\n")
        sub = pc.replace_substring_regex(sub, _ZERO_WIDTH, "")
        sub = pc.replace_substring_regex(sub, _SPACES, " ")
        a = pc.replace_with_mask(a, non_ascii, sub)
    a = _replace_where(a, ",", _COMMA_HEADER, "\\1\n\\2")
    a = _replace_where(a, "  ", " {2,}", " ")
    a = _replace_where(a, " \n", " \n", "\n")
    a = _replace_where(a, "\n ", "\n ", "\n")
    a = _replace_where(a, "\n\n\n", "\n{3,}", "\n\n")
    return pc.utf8_trim_whitespace(a)


def normalize_text(text: str) -> str:
    """`normalize_texts` for one string."""
    return normalize_texts(pa.array([text], pa.string()))[0].as_py()


def text_sha256(text: str) -> str:
    """sha256 hex digest of the UTF-8 bytes of an (already normalised) text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_sections(text: str) -> list[tuple[str, str]]:
    """Split one normalised report at its top-level headers; see `sections_array`."""
    return [(d["name"], d["text"]) for d in sections_array(pa.array([text], pa.string()))[0].as_py()]


def sections_array(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Split normalised reports at their top-level section headers (FINDINGS:, IMPRESSION:, ...), vectorised.

    A header is a known name followed by a colon, either at the start of a line (any case) or in upper case
    after a sentence (". IMPRESSION:"). Texts must not contain control characters (the ingest checks reject them).

    Returns:
        list<struct<name, text>> per report, in report order; names upper-cased with aliases folded
        (IMPRESSIONS -> IMPRESSION); text before the first header is `PREAMBLE`; empty list without headers.
    """
    texts = pc.fill_null(texts, "")
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    # \x1e marks a section start, \x1f ends its header name.
    # One pass; the groups of the alternative that did not match are empty in the replacement.
    marked = pc.replace_substring_regex(
        texts, rf"(?m)^[ \t]*((?i:{_NAMES_RE}))[ \t]*:|([.;!?] )({_NAMES_RE})[ \t]*:", "\\2\x1e\\1\\3\x1f")
    parts = pc.split_pattern(marked, "\x1e")
    flat = pc.list_flatten(parts)
    parent = np.asarray(pc.list_parent_indices(parts))
    pieces = pc.extract_regex(flat, "(?s)^(?:(?P<name>[^\x1f]*)\x1f)?(?P<body>.*)$")
    raw_names = pc.struct_field(pieces, "name")
    has_name = pc.greater(pc.utf8_length(raw_names), 0)
    names = pc.if_else(has_name, pc.replace_substring_regex(pc.utf8_upper(raw_names), r"\s+", " "), "PREAMBLE")
    for alias, name in _SECTION_ALIASES.items():
        names = pc.replace_substring_regex(names, f"^{alias}$", name)
    bodies = pc.utf8_trim_whitespace(pc.struct_field(pieces, "body"))
    # Keep named sections, and a preamble only when non-empty and the report has at least one header.
    n_parts = np.asarray(pc.list_value_length(parts))
    multi = pa.array(n_parts[parent] > 1)
    keep = pc.and_(multi, pc.or_(has_name, pc.greater(pc.utf8_length(bodies), 0)))
    keep_np = np.asarray(keep)
    counts = np.bincount(parent[keep_np], minlength=len(texts))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    values = pa.StructArray.from_arrays([pc.filter(names, keep), pc.filter(bodies, keep)], names=["name", "text"])
    return pa.ListArray.from_arrays(pa.array(offsets), values)


# --------------------------------------------------------------------------------------------------
# Bytes -> text
# --------------------------------------------------------------------------------------------------

_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
         (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
# A well-formed multi-byte UTF-8 sequence: its presence in a file that is not valid UTF-8 means mixed encodings.
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


class Decoded(NamedTuple):
    """A text file as UTF-8 bytes, with the encoding it was read in and whether that was guessed."""

    data: bytes
    encoding: str
    guessed: bool = False


def decode_bytes(data: bytes, path: Path, config: IngestConfig) -> Decoded:
    """UTF-8 bytes of a text file in any common encoding, the encoding it was read with, and whether it was guessed.

    UTF-8 (with or without BOM) and UTF-16/32 with a BOM are read directly. For other files every likely code page
    is tried and scored on how its text reads (`extract.encoding_guess`); the best wins, and is named in a warning.
    A file that is mostly UTF-8 with some lines in another encoding is an error unless `config.fallback_encoding`
    says how to read those lines.

    Raises:
        IngestError: binary data (NUL bytes), undecodable bytes, mixed encodings, or text that reads as a wrong code
            page in every encoding tried.
    """
    if config.encoding:
        try:
            return Decoded(data.decode(config.encoding).encode("utf-8"), config.encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            line = _line_of(data, exc.start) if isinstance(exc, UnicodeDecodeError) else None
            raise IngestError(path, f"cannot be read as {config.encoding}: {exc.reason if line else exc}",
                              row=f"line {line}" if line else None) from exc
    for bom, enc in _BOMS:
        if data.startswith(bom):
            try:
                return Decoded(data[len(bom):].decode(enc).encode("utf-8"), enc)
            except UnicodeDecodeError as exc:
                raise IngestError(path, f"invalid {enc} data (file starts with a {enc} byte-order mark)") from exc
    nul = data.find(b"\x00")
    if nul >= 0:
        raise IngestError(path, f"binary data (NUL byte at offset {nul}); not a text file",
                          row=f"line {_line_of(data, nul)}")
    try:
        data.decode("utf-8")
        return Decoded(data, "utf-8")
    except UnicodeDecodeError as exc:
        first_bad = exc.start
    if _UTF8_MULTIBYTE.search(data):
        if not config.fallback_encoding:
            raise IngestError(
                path,
                "mixed text encodings: this line is not UTF-8 while other lines are; re-save the file in one "
                "encoding, or pass --fallback-encoding (e.g. cp1252) to read the non-UTF-8 lines with it",
                row=f"line {_line_of(data, first_bad)}",
            )
        return Decoded(_decode_mixed(data, path, config.fallback_encoding), f"utf-8+{config.fallback_encoding}")
    from charset_normalizer import from_bytes

    detected = next(iter(from_bytes(data)), None)
    readings = read_candidates(data, detected.encoding if detected else None)
    if not readings:
        raise IngestError(path, "undecodable bytes: not text in any known encoding (binary file?)",
                          row=f"line {_line_of(data, first_bad)}")
    best = readings[0]
    if best.bad_offset >= 0 and best.score <= 0:  # even the best reading garbles more words than it reads well
        raise IngestError(
            path, f"not UTF-8, and it reads as garbled text in every encoding tried (best {best.encoding}); re-save "
                  "it as UTF-8, or pass --encoding if you know it", row=f"line {_line_of(data, best.bad_offset)}")
    log.warning("%s: not UTF-8; read as %s (guessed from the bytes; --encoding chooses)", path.name, best.encoding)
    return Decoded(data.decode(best.encoding).encode("utf-8"), best.encoding, guessed=True)


def _decode_mixed(data: bytes, path: Path, fallback: str) -> bytes:
    lines = data.split(b"\n")
    out = []
    for i, line in enumerate(lines, 1):
        try:
            out.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            try:
                out.append(line.decode(fallback))
            except (UnicodeDecodeError, LookupError) as exc:
                raise IngestError(path, f"cannot be read as UTF-8 or {fallback}", row=f"line {i}") from exc
    return "\n".join(out).encode("utf-8")


# --------------------------------------------------------------------------------------------------
# Readers: each returns (string table, source_row array) and a label for row numbers
# --------------------------------------------------------------------------------------------------


@dataclass
class _Raw:
    table: pa.Table  # the needed columns (and possibly others), all strings
    source_row: pa.Array  # int64 row number per table row
    row_label: Callable[[int], str]  # row number -> "row N" / "sheet 'S' row N"
    source_file: pa.Array | None = None  # per-row file, for folders
    # Encoding -> files read with it; Parquet and .xlsx store Unicode, so they read as UTF-8.
    encodings: dict[str, int] = field(default_factory=lambda: {"utf-8": 1})
    guessed: bool = False  # some file's encoding was guessed from its bytes


def _column_key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.casefold())


@dataclass(frozen=True)
class _Columns:
    id: str
    text: tuple[str, ...]  # one whole-report column, or section columns
    text_labels: tuple[str, ...] = ()  # section header per text column when joining

    @property
    def text_name(self) -> str:
        return " + ".join(self.text)

    @property
    def needed(self) -> list[str]:
        return [self.id, *self.text]


def find_columns(names: Sequence[str], config: IngestConfig, path: Path, where: str = "") -> _Columns:
    """The id column and the text column(s) among `names` (header of a dump).

    Raises:
        IngestError: a named column is missing, or no column name is recognised; lists the columns.
    """
    listing = ", ".join(repr(n) for n in names) or "none"
    by_key: dict[str, str] = {}
    for n in names:
        by_key.setdefault(_column_key(n), n)

    def pick(given: str | None, candidates: Sequence[str], flag: str) -> str | None:
        if given is not None:
            if given not in names:
                raise IngestError(path, f"{where}no column named {given!r} ({flag}); the columns are {listing}")
            return given
        return next((by_key[c] for c in candidates if c in by_key), None)

    id_col = pick(config.id_column, ID_COLUMNS, "--id-column")
    if id_col is None:
        raise IngestError(path, f"{where}no recognisable id column (e.g. 'Accession Number', 'id'); the columns "
                                f"are {listing}; name one with --id-column")
    text_col = pick(config.text_column, [c for c in TEXT_COLUMNS if by_key.get(c) != id_col], "--text-column")
    if text_col is not None:
        return _Columns(id_col, (text_col,))
    parts = [(by_key[k], label) for k, label in SECTION_COLUMNS if k in by_key]
    seen: set[str] = set()
    parts = [(c, lab) for c, lab in parts if not (lab in seen or seen.add(lab))]
    if parts:
        return _Columns(id_col, tuple(c for c, _ in parts), tuple(lab for _, lab in parts))
    raise IngestError(path, f"{where}no recognisable report text column (e.g. 'Report Text', 'Findings' + "
                            f"'Impression'); the columns are {listing}; name one with --text-column")


def _sniff_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (",", "\t", ";", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _read_delimited(path: Path, config: IngestConfig) -> tuple[_Raw, _Columns]:
    raw = path.read_bytes()
    if not raw.strip():
        raise IngestError(path, "the file is empty")
    decoded = decode_bytes(raw, path, config)
    data = decoded.data
    head = data[: 1 << 16].decode("utf-8", errors="ignore")
    first_line = head.split("\n", 1)[0]
    delimiter = config.delimiter or DELIMITED_SUFFIXES.get(path.suffix.lower()) or _sniff_delimiter(first_line)
    try:
        header = next(csv.reader(io.StringIO(head), delimiter=delimiter))
    except (StopIteration, csv.Error) as exc:
        raise IngestError(path, "cannot read the header line", row="line 1") from exc
    header = [h.strip() for h in header]
    columns = find_columns(header, config, path)
    if data.count(b'"') % 2:
        _raise_csv_problem(data, path, delimiter, header, columns)
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(block_size=max(1 << 24, 4 * config.max_chars + (1 << 20)),
                                           column_names=header, skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in columns.needed}, include_columns=columns.needed,
                strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except pa.ArrowInvalid as exc:
        _raise_csv_problem(data, path, delimiter, header, columns)
        # pyarrow quotes the offending row; keep only its first clause so no report text is shown.
        reason = str(exc).split(":", 2)[:2]
        raise IngestError(path, f"cannot parse the file ({': '.join(reason).strip()})") from None
    if table.num_rows == 0:
        raise IngestError(path, "the file has a header but no data rows")
    rows = pa.array(range(1, table.num_rows + 1), pa.int64())
    return _Raw(table, rows, lambda r: f"row {r}", encodings={decoded.encoding: 1}, guessed=decoded.guessed), columns


def _raise_csv_problem(data: bytes, path: Path, delimiter: str, header: list[str], columns: _Columns) -> None:
    """Find the first malformed record with the csv module (slow path, only after a parse failure)."""
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""), delimiter=delimiter, strict=True)
    record = 0
    try:
        next(reader)
        for record, fields in enumerate(reader, 1):
            if fields and len(fields) != len(header):
                raise IngestError(path, f"expected {len(header)} fields, found {len(fields)} (truncated line "
                                        f"or unbalanced quote at line {reader.line_num})", row=f"row {record}")
    except csv.Error as exc:
        raise IngestError(path, f"malformed CSV ({exc}) near line {reader.line_num}; the record looks "
                                "truncated (unbalanced quote)", row=f"row {record + 1}",
                          column=columns.text[-1]) from exc


def _read_json(path: Path, config: IngestConfig) -> tuple[_Raw, _Columns]:
    raw = path.read_bytes()
    if not raw.strip():
        raise IngestError(path, "the file is empty")
    decoded = decode_bytes(raw, path, config)
    text = decoded.data.decode("utf-8")
    records: list[dict] = []
    stripped = text.lstrip()
    if stripped.startswith("["):  # one JSON array of objects
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IngestError(path, f"invalid JSON: {exc.msg}", row=f"line {exc.lineno}") from exc
        bad = next((i for i, r in enumerate(records, 1) if not isinstance(r, dict)), None)
        if bad:
            raise IngestError(path, "each array item must be a JSON object", row=f"row {bad}")
    else:
        for lineno, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise IngestError(path, f"invalid JSON ({exc.msg}) at line {lineno}; truncated line?",
                                  row=f"row {len(records) + 1}") from exc
            if not isinstance(rec, dict):
                raise IngestError(path, f"line {lineno} is not a JSON object", row=f"row {len(records) + 1}")
            records.append(rec)
    if not records:
        raise IngestError(path, "no records in the file")
    names = list(dict.fromkeys(k for r in records for k in r))
    columns = find_columns(names, config, path)
    cols = {}
    for c in columns.needed:
        cols[c] = pa.array([_as_str(r.get(c)) for r in records], pa.string())
    table = pa.table(cols)
    return _Raw(table, pa.array(range(1, len(records) + 1), pa.int64()), lambda r: f"row {r}",
                encodings={decoded.encoding: 1}, guessed=decoded.guessed), columns


def _as_str(value: object) -> str | None:
    """A cell as text: None stays None, integral floats lose their `.0` (ids like 12345.0)."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _read_parquet(path: Path, config: IngestConfig) -> tuple[_Raw, _Columns]:
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise IngestError(path, "the file is empty")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise IngestError(path, f"not a readable Parquet file ({exc})") from exc
    columns = find_columns(pf.schema_arrow.names, config, path)
    table = pf.read(columns=columns.needed)
    if table.num_rows == 0:
        raise IngestError(path, "no rows in the file")
    cast = {}
    for c in columns.needed:
        col = table[c]
        if pa.types.is_floating(col.type):  # integral ids stored as float: no trailing .0
            col = pa.chunked_array([pa.array([_as_str(v) for v in col.to_pylist()], pa.string())])
        cast[c] = pc.cast(col, pa.string())
    return _Raw(pa.table(cast), pa.array(range(1, table.num_rows + 1), pa.int64()), lambda r: f"row {r}"), columns


def _read_excel(path: Path, config: IngestConfig) -> tuple[_Raw, _Columns]:
    import openpyxl

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a broken or non-xlsx file
        raise IngestError(path, f"not a readable .xlsx workbook ({type(exc).__name__})") from exc
    try:
        sheets = wb.sheetnames
        if config.sheet is not None and config.sheet not in sheets:
            raise IngestError(path, f"no sheet named {config.sheet!r}; the sheets are "
                                    f"{', '.join(repr(s) for s in sheets)}")
        candidates = [config.sheet] if config.sheet is not None else sheets
        found: list[tuple[str, int, list[str], _Columns]] = []
        errors: list[str] = []
        for name in candidates:
            rows = wb[name].iter_rows(values_only=True)
            header_row, header = 0, None
            for header_row, values in enumerate(rows, 1):
                if any(v is not None and str(v).strip() for v in values):
                    header = [str(v).strip() if v is not None else "" for v in values]
                    break
            if header is None:
                errors.append(f"sheet {name!r} is empty")
                continue
            try:
                found.append((name, header_row, header, find_columns(header, config, path, f"sheet {name!r}: ")))
            except IngestError as exc:
                errors.append(exc.problem)
        if not found:
            if config.sheet is not None:
                raise IngestError(path, errors[0])
            raise IngestError(path, "no sheet has an id and a report text column: " + "; ".join(errors))
        if len(found) > 1:
            raise IngestError(path, "several sheets have report columns ("
                                    + ", ".join(repr(f[0]) for f in found) + "); choose one with --sheet")
        name, header_row, header, columns = found[0]
        idx = [header.index(c) for c in columns.needed]
        values: dict[str, list] = {c: [] for c in columns.needed}
        numbers: list[int] = []
        for rownum, row in enumerate(wb[name].iter_rows(min_row=header_row + 1, values_only=True), header_row + 1):
            cells = [row[i] if i < len(row) else None for i in idx]
            if all(v is None or (isinstance(v, str) and not v.strip()) for v in cells):
                continue
            for c, v in zip(columns.needed, cells):
                values[c].append(_as_str(v))
            numbers.append(rownum)
    finally:
        wb.close()
    if not numbers:
        raise IngestError(path, f"sheet {name!r} has a header but no data rows")
    table = pa.table({c: pa.array(v, pa.string()) for c, v in values.items()})
    return _Raw(table, pa.array(numbers, pa.int64()), lambda r: f"sheet {name!r} row {r}"), columns


def _read_text_files(path: Path, config: IngestConfig) -> tuple[_Raw, _Columns]:
    """One report per .txt file (the folder's, recursively, or the one file); the id is the file name stem."""
    files = sorted(p for p in path.rglob("*.txt") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise IngestError(path, "the folder has no .txt files")
    ids, texts = [], []
    encodings: dict[str, int] = {}
    guessed = False
    for f in files:
        try:
            raw = f.read_bytes()
        except OSError as exc:
            raise IngestError(f, f"cannot read the file: {exc.strerror or exc}") from exc
        decoded = decode_bytes(raw, f, config)
        encodings[decoded.encoding] = encodings.get(decoded.encoding, 0) + 1
        guessed |= decoded.guessed
        ids.append(f.stem)
        texts.append(decoded.data.decode("utf-8"))
    table = pa.table({"id": pa.array(ids, pa.string()), "text": pa.array(texts, pa.string())})
    names = pa.array([str(f) for f in files], pa.string())
    labels = {i: str(f) for i, f in enumerate(files, 1)}
    return (_Raw(table, pa.array(range(1, len(files) + 1), pa.int64()), lambda r: f"file {labels[r]}", names,
                 encodings, guessed),
            _Columns("id", ("text",)))


def read_dump(path: Path, config: IngestConfig) -> tuple[_Raw, _Columns]:
    """Dispatch on the path: folder of .txt, or a file by its suffix."""
    if not path.exists():
        raise IngestError(path, "no such file or folder")
    if not path.is_dir() and not path.is_file():
        # A FIFO, socket or device may never end, and the store would wait on it holding its write lock.
        raise IngestError(path, "not a regular file (a pipe, socket or device); write the dump to a file first")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".txt":
        return _read_text_files(path, config)
    if suffix in DELIMITED_SUFFIXES:
        return _read_delimited(path, config)
    if suffix in JSON_SUFFIXES:
        return _read_json(path, config)
    if suffix in PARQUET_SUFFIXES:
        return _read_parquet(path, config)
    if suffix in EXCEL_SUFFIXES:
        return _read_excel(path, config)
    if suffix == ".xls":
        raise IngestError(path, "legacy .xls workbooks are not supported; save it as .xlsx or CSV")
    raise IngestError(path, f"unknown dump type {suffix!r}; use CSV/TSV, JSONL, Parquet, .xlsx or a folder of .txt")


# --------------------------------------------------------------------------------------------------
# Checks and assembly
# --------------------------------------------------------------------------------------------------


def _report_texts(table: pa.Table, columns: _Columns) -> pa.ChunkedArray:
    if len(columns.text) == 1:
        return pc.fill_null(table[columns.text[0]], "")
    # Findings + Impression columns: "FINDINGS:\n...\n\nIMPRESSION:\n...", leaving out empty parts.
    parts = []
    for col, label in zip(columns.text, columns.text_labels):
        body = pc.utf8_trim_whitespace(pc.fill_null(table[col], ""))
        part = pc.binary_join_element_wise(f"{label}:\n", body, "")
        parts.append(pc.if_else(pc.equal(pc.utf8_length(body), 0), "", part))
    joined = pc.binary_join_element_wise(*parts, "\n\n")
    return joined


def _in_parallel(fn: Callable[[pa.Array], pa.Array], values: pa.Array | pa.ChunkedArray,
                 min_rows: int = 20_000) -> pa.Array:
    """`fn` over slices of `values` on all cores (pyarrow compute releases the GIL), results concatenated."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    workers = min(os.cpu_count() or 1, 8, max(1, len(values) // min_rows))
    if workers == 1:
        return fn(values)
    step = -(-len(values) // workers)
    with ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(fn, [values.slice(i, step) for i in range(0, len(values), step)]))
    return pa.concat_arrays([p.combine_chunks() if isinstance(p, pa.ChunkedArray) else p for p in parts])


def load_dump(path: Path | str, config: IngestConfig | None = None) -> LoadedDump:
    """Read, check and normalise one dump (no store access).

    Raises:
        IngestError: unreadable input, missing columns, a bad row (unless `skip_bad_rows`), or an id with
            several different texts (unless `allow_changed_duplicates`).
    """
    config = config or IngestConfig()
    path = Path(path)
    raw, columns = read_dump(path, config)
    n = raw.table.num_rows
    ids = pc.utf8_trim_whitespace(pc.fill_null(raw.table[columns.id], ""))
    texts = _in_parallel(normalize_texts, _report_texts(raw.table, columns))
    lengths = pc.utf8_length(texts)

    encoding = "/".join(raw.encodings)
    checks = [
        (pc.equal(pc.utf8_length(ids), 0), columns.id, lambda i: "empty id"),
        (pc.equal(lengths, 0), columns.text_name, lambda i: "empty report text"),
        (pc.match_substring_regex(texts, _CONTROL), columns.text_name,
         lambda i: "binary or control characters in the report text (garbage bytes?)"),
        (pc.match_substring_regex(texts, _DOUBLE_ENCODED), columns.text_name,
         lambda i: f"the text looks double-encoded: UTF-8 that was read as cp1252 or latin-1 before this {encoding} "
                   "file was written (letters such as 'é' stored as 'Ã©'); fix the export, or --skip-bad-rows"),
        (pc.greater(lengths, config.max_chars), columns.text_name,
         lambda i: f"report of {lengths[i].as_py():,} characters is above --max-chars {config.max_chars:,}"),
    ]
    rows = raw.source_row
    bad_mask = pa.array([False] * n) if n else pa.array([], pa.bool_())
    skipped: list[BadRow] = []
    first_error: IngestError | None = None
    n_bad = 0
    for mask, column, describe in checks:
        mask = pc.fill_null(mask, False)
        hits = pc.indices_nonzero(pc.and_not(mask, bad_mask)).to_pylist()
        if not hits:
            continue
        bad_mask = pc.or_(bad_mask, mask)
        n_bad += len(hits)
        for i in hits:
            bad = BadRow(raw.row_label(rows[i].as_py()), column, describe(i))
            if config.skip_bad_rows:
                skipped.append(bad)
            elif first_error is None:
                first_error = IngestError(path, bad.problem, row=bad.row, column=bad.column)
            else:
                break
    if first_error is not None:
        more = f" ({n_bad - 1} more bad rows; --skip-bad-rows leaves them out)" if n_bad > 1 else ""
        raise IngestError(path, first_error.problem + more, row=first_error.row, column=first_error.column)

    keep = pc.invert(bad_mask)
    ids, texts, rows = pc.filter(ids, keep), pc.filter(texts, keep), pc.filter(rows, keep)
    files = pc.filter(raw.source_file, keep) if raw.source_file is not None else None
    text_list = texts.to_pylist()
    sha = pa.array([text_sha256(t) for t in text_list], pa.string())
    table = pa.table({
        "report_id": ids,
        "text": texts,
        "sha256": sha,
        "sections": _in_parallel(sections_array, texts),
        "n_chars": pc.cast(pc.filter(lengths, keep), pa.int32()),
        "source_row": rows,
        "source_file": files if files is not None else pa.array([str(path)] * len(text_list), pa.string()),
    })
    if not config.allow_changed_duplicates:
        _check_changed_duplicates(table, path, columns, raw.row_label)
    over_limit = pc.sum(pc.greater(table["n_chars"], MAX_REPORT_CHARS)).as_py() or 0
    return LoadedDump(path, table, columns.id, columns.text_name, n, skipped, raw.encodings, raw.guessed,
                      int(over_limit))


#: Longer ids are not printed: they are likely report text (an --id-column pointing at the wrong column).
MAX_SHOWN_ID_CHARS = 64


def shown_id(report_id: str) -> str:
    """`report_id` as an error message may show it: quoted when short, else only its length and a hash prefix."""
    if len(report_id) <= MAX_SHOWN_ID_CHARS and "\n" not in report_id:
        return repr(report_id)
    digest = text_sha256(report_id)[:12]
    return f"of {len(report_id)} characters (sha256 {digest}; is --id-column the report text?)"


def _check_changed_duplicates(table: pa.Table, path: Path, columns: _Columns, label: Callable[[int], str]) -> None:
    counts = table.group_by("report_id").aggregate([("sha256", "count_distinct")])
    conflicted = pc.filter(counts["report_id"], pc.greater(counts["sha256_count_distinct"], 1))
    if len(conflicted) == 0:
        return
    rid = conflicted[0].as_py()
    sub = table.filter(pc.equal(table["report_id"], rid))
    first_sha = sub["sha256"][0].as_py()
    other = pc.indices_nonzero(pc.not_equal(sub["sha256"], first_sha))[0].as_py()
    r1, r2 = label(sub["source_row"][0].as_py()), label(sub["source_row"][other].as_py())
    more = f"; {len(conflicted) - 1} more ids conflict" if len(conflicted) > 1 else ""
    raise IngestError(path, f"id {shown_id(rid)} appears in {r1} and {r2} with different report text{more}; pass "
                            "--allow-changed-duplicates to keep each text as a new version in row order",
                      row=r2, column=columns.text_name)


def ingest_dump(store: Store, path: Path | str, config: IngestConfig | None = None) -> DumpResult:
    """Load one dump and store it in one transaction (nothing is stored when anything fails)."""
    dump = load_dump(path, config)
    return store_dump(store, dump)


def store_dump(store: Store, dump: LoadedDump) -> DumpResult:
    """Store a loaded dump in one transaction, with its `ingests` row (how it was read, what was new)."""
    stats = store.add_reports(dump.table, source=str(dump.path), info=dump.source_info())
    return DumpResult(dump.path, dump.rows_read, stats, dump.id_column, dump.text_column, dump.skipped,
                      dump.encodings, dump.encoding_guessed, dump.n_over_extract_limit)
