"""Field-level accuracy of the extraction against an organ-summary gold file (`rsuper eval-extraction`).

Gold file: JSON lines `{"id", "report", "organs": {organ_key: {field: value, ...}}, "phenomena": [...]}`.
An organ absent from `organs` is expected `not_mentioned`; a field absent from an organ's object is not scored;
a field present with `null` expects null; any value may be `{"any_of": [a, b, ...]}` (each accepted).

Scoring, per report x organ (all 18 organ keys):
- presence: positive only for state `lesion`. `equivocal` is negative for presence and scored on its own as
  `equivocal` precision/recall, and within the 4-way `state` accuracy.
- the lesion fields (`lesion_count`, `count_is_lower_bound`, `largest_location`, `sides`,
  `largest_attenuation`, `size_bound_mm`) are scored where the gold state is `lesion` and the gold names the
  field; a prediction that missed the lesion scores a mismatch there.
- `largest_diameter_mm` is scored within +-1 mm where both gold and prediction hold a diameter
  (`diameter`), and end to end where the gold names the field (`diameter_e2e`: a missing or spurious size,
  e.g. a prior size leaking into an unmeasured lesion, is a mismatch).
- a failed (or never extracted) report predicts `not_mentioned` everywhere, so its lesions count as misses,
  and it counts in `failure_rate`.
Metrics are reported per organ, `overall` (all organs) and `core` (the six organs the targets name).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from schemas.vocab import ORGANS, PAIRED_ORGANS, Organ

STATES = ("lesion", "equivocal", "no_lesion", "not_mentioned")
ATTENUATIONS = ("hypo", "hyper", "iso", "heterogeneous", "cystic", "fat", "calcified")
SIDES = ("left", "right")
#: Organs the accuracy targets name (presence F1 >= 0.90 over these).
CORE_ORGANS = ("liver", "pancreas", "kidney", "spleen", "adrenal_gland", "lung")
DIAMETER_TOLERANCE_MM = 1.0

#: Scored lesion fields, in table order; `diameter` and `diameter_e2e` both read `largest_diameter_mm`.
LESION_FIELDS = ("lesion_count", "count_is_lower_bound", "largest_diameter_mm", "size_bound_mm",
                 "largest_location", "sides", "largest_attenuation")
GOLD_FIELDS = ("state",) + LESION_FIELDS
FIELD_METRICS = ("state", "count", "lower_bound", "diameter", "diameter_e2e", "size_bound", "location", "sides",
                 "attenuation")

#: Accuracy targets of issue 4 (metric path in the result, threshold).
TARGETS = (
    ("core.presence.f1", 0.90),
    ("overall.diameter.rate", 0.90),
    ("overall.location.rate", 0.85),
    ("overall.attenuation.rate", 0.85),
)
MAX_FAILURE_RATE = 0.0


class GoldError(ValueError):
    """A gold file is malformed; the message names the file, line and field."""


# --------------------------------------------------------------------------------------------------
# gold file
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoldReport:
    """One gold line. `organs` maps organ key -> {field: value or {"any_of": [...]}} (absent = not_mentioned)."""

    id: str
    report: str
    organs: Mapping[str, Mapping[str, Any]]
    phenomena: tuple[str, ...] = ()


def _liver_locations() -> set[str]:
    return {f"segment_{n}" for n in range(1, 9)} | {"right_lobe", "left_lobe"}


def valid_locations(organ: str) -> set[str]:
    """`largest_location` tokens of `organ` (ARCHITECTURE.md organ summary)."""
    if organ == "liver":
        return _liver_locations()
    if organ == "pancreas":
        return {"head", "uncinate", "neck", "body", "tail"}
    if organ == "lung":
        return {f"{side}_{lobe}_lobe" for side in SIDES for lobe in ("upper", "middle", "lower")} | set(SIDES)
    if Organ(organ) in PAIRED_ORGANS:
        return set(SIDES)
    return set()


def _check_value(organ: str, name: str, value: Any) -> Optional[str]:
    """Why `value` is not a valid gold value of `name`, or None."""
    if value is None:
        return None if name != "state" else "state cannot be null"
    if name == "state":
        return None if value in STATES else f"must be one of {STATES}"
    if name == "lesion_count":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        return None if ok else "must be an integer >= 1"
    if name == "count_is_lower_bound":
        return None if isinstance(value, bool) else "must be true or false"
    if name in ("largest_diameter_mm", "size_bound_mm"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 400
        return None if ok else "must be a diameter in mm in (0, 400]"
    if name == "largest_location":
        return None if value in valid_locations(organ) else f"{value!r} is not a location token of {organ}"
    if name == "sides":
        ok = isinstance(value, list) and value and all(v in SIDES for v in value) and Organ(organ) in PAIRED_ORGANS
        return None if ok else "must be a non-empty list of 'left'/'right' on a paired organ"
    if name == "largest_attenuation":
        return None if value in ATTENUATIONS else f"must be one of {ATTENUATIONS}"
    return f"unknown field (expected one of {GOLD_FIELDS})"


def parse_gold_line(obj: Any, where: str) -> GoldReport:
    """Validate one decoded gold line.

    Args:
        obj: the decoded JSON object.
        where: "FILE line N", used in error messages.

    Raises:
        GoldError: naming `where` and the offending field.
    """
    if not isinstance(obj, dict):
        raise GoldError(f"{where}: a gold line must be a JSON object")
    for key in ("id", "report"):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            raise GoldError(f"{where}: field {key!r} must be a non-empty string")
    organs = obj.get("organs")
    if not isinstance(organs, dict):
        raise GoldError(f"{where}: field 'organs' must be an object keyed by organ")
    for organ, fields in organs.items():
        if organ not in ORGANS:
            raise GoldError(f"{where}: organs.{organ}: not an organ key (expected one of {', '.join(ORGANS)})")
        if not isinstance(fields, dict) or "state" not in fields:
            raise GoldError(f"{where}: organs.{organ}: must be an object with at least 'state'")
        for name, value in fields.items():
            choices = value["any_of"] if isinstance(value, dict) and set(value) == {"any_of"} else [value]
            if not isinstance(choices, list) or not choices:
                raise GoldError(f"{where}: organs.{organ}.{name}: any_of must be a non-empty list")
            for choice in choices:
                problem = _check_value(organ, name, choice)
                if problem:
                    raise GoldError(f"{where}: organs.{organ}.{name}: {problem}")
    phenomena = obj.get("phenomena", [])
    if not isinstance(phenomena, list) or not all(isinstance(p, str) for p in phenomena):
        raise GoldError(f"{where}: field 'phenomena' must be a list of strings")
    return GoldReport(id=obj["id"], report=obj["report"], organs=organs, phenomena=tuple(phenomena))


def _jsonl_objects(path: Path, what: str) -> Iterable[tuple[str, Any]]:
    """(`"<file> line N"`, parsed object) for each non-blank line of a JSONL file.

    Raises:
        GoldError: the file cannot be read, or a line is not valid JSON (naming file and line).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise GoldError(f"{path}: cannot read {what} ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise GoldError(f"{path}: cannot read {what}: not UTF-8 text (byte {exc.start}); give a JSONL file") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GoldError(f"{where}: not valid JSON ({exc.msg})") from exc
        yield where, obj


def load_gold(path: str | Path, ids: Optional[Sequence[str]] = None) -> list[GoldReport]:
    """Read and validate a gold JSONL file; with `ids`, keep only those (in file order).

    Raises:
        GoldError: unreadable file, bad JSON, invalid line, duplicate id, or an id of `ids` not in the file.
    """
    path = Path(path)
    reports: list[GoldReport] = []
    seen: set[str] = set()
    for where, obj in _jsonl_objects(path, "the gold file"):
        report = parse_gold_line(obj, where)
        if report.id in seen:
            raise GoldError(f"{where}: duplicate id {report.id!r}")
        seen.add(report.id)
        reports.append(report)
    if not reports:
        raise GoldError(f"{path}: no gold lines")
    if ids is not None:
        missing = [i for i in ids if i not in seen]
        if missing:
            raise GoldError(f"{path}: ids not in the gold file: {missing[:10]}")
        wanted = set(ids)
        reports = [r for r in reports if r.id in wanted]
    return reports


def load_id_list(path: str | Path) -> list[str]:
    """Ids from a text file, one per line; blank lines and `#` comments are skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GoldError(f"{path}: cannot read the id list ({exc.strerror or exc})") from exc
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


# --------------------------------------------------------------------------------------------------
# converting payload-shaped cases (schemas.records.ExtractionPayload) into organ-summary gold
# --------------------------------------------------------------------------------------------------


def summary_to_gold_organs(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Organ-summary rows (as `schemas.summary.organ_summary` gives them) -> the gold `organs` object.

    `not_mentioned` organs are left out; `lesion` organs carry every lesion field, null ones included (so a
    missing size is scored as "expect none"), except `sides` on unpaired organs and null locations/attenuations
    (not scored: there is nothing to match).
    """
    organs: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["state"] == "not_mentioned":
            continue
        entry: dict[str, Any] = {"state": row["state"]}
        if row["state"] == "lesion":
            for name in LESION_FIELDS:
                value = row.get(name)
                if name in ("largest_location", "largest_attenuation", "sides") and value is None:
                    continue
                entry[name] = value
        organs[row["organ"]] = entry
    return organs


def case_to_gold(case: Mapping[str, Any]) -> dict[str, Any]:
    """A payload-shaped case `{"id", "report", "expected": ExtractionPayload-JSON, "phenomena"}` -> a gold line.

    The expected payload is validated against its report (evidence quotes must occur in it) and summarised
    with `schemas.summary.organ_summary`, so the gold follows the summary conventions by construction.
    """
    from schemas.records import ExtractionPayload
    from schemas.summary import organ_summary

    payload = ExtractionPayload.model_validate(case["expected"], context={"report_text": case["report"]})
    return {"id": case["id"], "report": case["report"], "organs": summary_to_gold_organs(organ_summary(payload)),
            "phenomena": list(case.get("phenomena", []))}


def convert_cases(src: str | Path, dst: str | Path) -> int:
    """Convert a payload-shaped cases JSONL file into an organ-summary gold file; returns the line count.

    Raises:
        GoldError: naming the file and line of a case that does not validate.
    """
    from pydantic import ValidationError

    src, dst = Path(src), Path(dst)
    out: list[str] = []
    for where, case in _jsonl_objects(src, "the cases file"):
        try:
            gold = case_to_gold(case)
        except KeyError as exc:
            raise GoldError(f"{where}: cannot convert the case: no field {exc}") from exc
        except TypeError as exc:  # a line that is not a JSON object
            raise GoldError(f"{where}: cannot convert the case: {exc}") from exc
        except ValidationError as exc:  # field paths and reasons; not pydantic's dump of the input (report text)
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
            raise GoldError(f"{where}: cannot convert the case: {problems}") from exc
        parse_gold_line(gold, f"{where} (converted)")
        out.append(json.dumps(gold, ensure_ascii=False))
    if not out:
        raise GoldError(f"{src}: no cases (one JSON object per line: id, report, expected)")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text("\n".join(out) + "\n", encoding="utf-8")
    except OSError as exc:
        raise GoldError(f"{dst}: cannot write the gold file ({exc.strerror or exc}); choose another path") from exc
    return len(out)


# --------------------------------------------------------------------------------------------------
# pure scoring
# --------------------------------------------------------------------------------------------------


def accepted_values(gold: Any) -> list[Any]:
    """The values a gold field accepts: the `any_of` list, or the single value."""
    if isinstance(gold, dict) and set(gold) == {"any_of"}:
        return list(gold["any_of"])
    return [gold]


def _same(name: str, gold: Any, pred: Any) -> bool:
    if name in ("largest_diameter_mm", "size_bound_mm"):
        if gold is None or pred is None:
            return gold is None and pred is None
        return abs(float(gold) - float(pred)) <= DIAMETER_TOLERANCE_MM + 1e-9
    if name == "sides":
        return set(gold or []) == set(pred or [])
    return gold == pred


def field_matches(name: str, gold: Any, pred: Any) -> bool:
    """Whether a predicted value matches a gold value (any accepted one). Diameters and bounds within +-1 mm;
    sides as sets (null = no side)."""
    return any(_same(name, g, pred) for g in accepted_values(gold))


def resolve_gold(name: str, gold: Any, pred: Any) -> Any:
    """The gold value to score `pred` against: the accepted value it matches, else the first accepted one."""
    for g in accepted_values(gold):
        if _same(name, g, pred):
            return g
    return accepted_values(gold)[0]


@dataclass(frozen=True)
class FieldOutcome:
    """One scored field of one report x organ."""

    metric: str
    correct: bool
    gold: Any
    pred: Any


@dataclass(frozen=True)
class OrganOutcome:
    """Scores of one report x organ. `gold_state`/`pred_state` are resolved states (any_of applied)."""

    report_id: str
    organ: str
    gold_state: str
    pred_state: str
    fields: tuple[FieldOutcome, ...] = ()


_FIELD_METRIC = {"lesion_count": "count", "count_is_lower_bound": "lower_bound", "size_bound_mm": "size_bound",
                 "largest_location": "location", "sides": "sides", "largest_attenuation": "attenuation"}


def score_organ(report_id: str, organ: str, gold: Mapping[str, Any], pred: Optional[Mapping[str, Any]]
                ) -> OrganOutcome:
    """Score one organ row.

    Args:
        gold: the gold organ object (`{}` = not_mentioned).
        pred: the predicted organ-summary row, or None (not predicted: `not_mentioned`).
    """
    pred = pred or {}
    pred_state = pred.get("state") or "not_mentioned"
    gold_state = resolve_gold("state", gold.get("state", "not_mentioned"), pred_state)
    fields = [FieldOutcome("state", gold_state == pred_state, gold_state, pred_state)]
    if gold_state == "lesion":
        lesion_pred = pred if pred_state == "lesion" else {}
        for name in LESION_FIELDS:
            if name not in gold:
                continue
            value = lesion_pred.get(name)
            if name == "count_is_lower_bound" and pred_state == "lesion":
                value = bool(value)
            expected = resolve_gold(name, gold[name], value)
            ok = field_matches(name, gold[name], value)
            if name == "largest_diameter_mm":
                fields.append(FieldOutcome("diameter_e2e", ok, expected, value))
                sized = [g for g in accepted_values(gold[name]) if g is not None]
                if value is not None and sized:  # both hold a size
                    expected = resolve_gold(name, {"any_of": sized}, value)
                    fields.append(FieldOutcome("diameter", _same(name, expected, value), expected, value))
                continue
            fields.append(FieldOutcome(_FIELD_METRIC[name], ok, expected, value))
    return OrganOutcome(report_id, organ, gold_state, pred_state, tuple(fields))


@dataclass(frozen=True)
class Prediction:
    """What a source predicted for one report: `status` ok | repaired | failed | missing, and its organ rows
    (organ key -> organ-summary row; None when the report has no usable extraction)."""

    status: str
    organs: Optional[Mapping[str, Mapping[str, Any]]] = None

    @property
    def failed(self) -> bool:
        return self.organs is None


def score_report(gold: GoldReport, pred: Optional[Prediction]) -> list[OrganOutcome]:
    """Outcomes for all 18 organ keys of one report (a missing/failed prediction predicts nothing)."""
    rows = pred.organs if pred is not None and pred.organs is not None else {}
    return [score_organ(gold.id, organ, gold.organs.get(organ, {}), rows.get(organ)) for organ in ORGANS]


def _ratio(num: float, den: float) -> Optional[float]:
    return num / den if den else None


def binary_scores(tp: int, fp: int, fn: int, tn: int) -> dict[str, Any]:
    """Precision, recall, F1 (None where undefined: no predicted / no gold positives)."""
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    if precision is None or recall is None:
        f1 = None if tp + fp + fn == 0 else 0.0
    else:
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": precision, "recall": recall, "f1": f1}


def aggregate(outcomes: Iterable[OrganOutcome]) -> dict[str, Any]:
    """Presence/equivocal confusion scores and per-field match rates over a set of organ outcomes."""
    outcomes = list(outcomes)
    out: dict[str, Any] = {"rows": len(outcomes)}
    for key, target in (("presence", "lesion"), ("equivocal", "equivocal")):
        tp = sum(o.gold_state == target and o.pred_state == target for o in outcomes)
        fp = sum(o.gold_state != target and o.pred_state == target for o in outcomes)
        fn = sum(o.gold_state == target and o.pred_state != target for o in outcomes)
        out[key] = binary_scores(tp, fp, fn, len(outcomes) - tp - fp - fn)
    for metric in FIELD_METRICS:
        scored = [f for o in outcomes for f in o.fields if f.metric == metric]
        correct = sum(f.correct for f in scored)
        out[metric] = {"correct": correct, "total": len(scored), "rate": _ratio(correct, len(scored))}
    return out


def evaluate(gold: Sequence[GoldReport], predictions: Mapping[str, Prediction]) -> dict[str, Any]:
    """Score predictions against gold reports.

    Returns:
        JSON-ready dict: `reports`, `failed`, `missing`, `failure_rate`, `overall`, `core`, `organs`
        (organ key -> aggregate; only organs with a gold or predicted lesion/equivocal/no_lesion row), and
        `mismatches` (report id, organ, metric, gold, pred: no report text).
    """
    outcomes: list[OrganOutcome] = []
    failed = missing = 0
    for report in gold:
        pred = predictions.get(report.id)
        if pred is None or pred.status == "missing":
            missing += 1
        elif pred.failed:
            failed += 1
        outcomes.extend(score_report(report, pred))
    by_organ: dict[str, Any] = {}
    for organ in ORGANS:
        mine = [o for o in outcomes if o.organ == organ]
        if any(o.gold_state != "not_mentioned" or o.pred_state != "not_mentioned" for o in mine):
            by_organ[organ] = aggregate(mine)
    mismatches = [
        {"id": o.report_id, "organ": o.organ, "metric": f.metric, "gold": f.gold, "pred": f.pred}
        for o in outcomes for f in o.fields
        if not f.correct and not (f.metric == "state" and o.gold_state == o.pred_state)
    ]
    return {
        "reports": len(gold),
        "failed": failed,
        "missing": missing,
        "failure_rate": _ratio(failed + missing, len(gold)),
        "overall": aggregate(outcomes),
        "core": aggregate(o for o in outcomes if o.organ in CORE_ORGANS),
        "organs": by_organ,
        "mismatches": mismatches,
    }


def _lookup(result: Mapping[str, Any], path: str) -> Optional[float]:
    node: Any = result
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def check_targets(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's accuracy targets against a result: metric, value, threshold, met (None when unmeasured)."""
    checks = []
    for path, threshold in TARGETS:
        value = _lookup(result, path)
        checks.append({"metric": path, "value": value, "threshold": threshold,
                       "met": None if value is None else value >= threshold})
    rate = result.get("failure_rate")
    checks.append({"metric": "failure_rate", "value": rate, "threshold": MAX_FAILURE_RATE,
                   "met": None if rate is None else rate <= MAX_FAILURE_RATE})
    return checks


# --------------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------------


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _rate_cell(entry: Mapping[str, Any]) -> str:
    if not entry["total"]:
        return "-"
    return f"{entry['rate']:.2f} ({entry['correct']}/{entry['total']})"


def format_table(result: Mapping[str, Any]) -> str:
    """Plain-text table: one line per organ plus `core` and `overall`, then failures and targets."""
    headers = ["organ", "P", "R", "F1", "state", "count", "diam+-1", "diam e2e", "location", "attenuation"]
    rows = []
    for name, agg in [*result["organs"].items(), ("core", result["core"]), ("overall", result["overall"])]:
        p = agg["presence"]
        rows.append([name, _fmt(p["precision"]), _fmt(p["recall"]), _fmt(p["f1"]), _rate_cell(agg["state"]),
                     _rate_cell(agg["count"]), _rate_cell(agg["diameter"]), _rate_cell(agg["diameter_e2e"]),
                     _rate_cell(agg["location"]), _rate_cell(agg["attenuation"])])
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [headers, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 2, "")
    eq = result["overall"]["equivocal"]
    lines.append("")
    lines.append(f"equivocal: P {_fmt(eq['precision'])}  R {_fmt(eq['recall'])}  "
                 f"(gold {eq['tp'] + eq['fn']}, predicted {eq['tp'] + eq['fp']})")
    lines.append(f"reports {result['reports']}  failed {result['failed']}  missing {result['missing']}  "
                 f"failure rate {_fmt(result['failure_rate'])}")
    for check in check_targets(result):
        mark = "n/a" if check["met"] is None else "met" if check["met"] else "NOT met"
        op = "<=" if check["metric"] == "failure_rate" else ">="
        lines.append(f"target {check['metric']} {op} {check['threshold']:.2f}: {_fmt(check['value'])} {mark}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# prediction sources: a DuckDB store, an organ-summary JSONL file, or the extraction engine
# --------------------------------------------------------------------------------------------------


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _rows_by_report(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(str(row["report_id"]), {})[row["organ"]] = dict(row)
    return out


def predictions_from_store(db: str | Path, ids: Sequence[str]) -> dict[str, Prediction]:
    """Stored results for `ids` from the store's `organ_summary` view (current usable extraction per report).

    A report without a usable extraction is `failed` when a failed extraction is stored for it, else `missing`.
    """
    from extract.store import Store

    wanted = _sql_list(ids)
    with Store(db, read_only=True) as store:
        rows = store.query(f"SELECT * FROM organ_summary WHERE report_id IN ({wanted})").to_pylist()
        statuses = {r["report_id"]: r["status"] for r in store.query(
            f"SELECT report_id, status FROM current_extractions WHERE report_id IN ({wanted})").to_pylist()}
        failed = {r["report_id"] for r in store.query(
            f"SELECT DISTINCT report_id FROM extractions WHERE status = 'failed' AND report_id IN ({wanted})"
        ).to_pylist()}
    by_report = _rows_by_report(rows)
    out: dict[str, Prediction] = {}
    for report_id in ids:
        if report_id in by_report:
            out[report_id] = Prediction(statuses.get(report_id, "ok"), by_report[report_id])
        else:
            out[report_id] = Prediction("failed" if report_id in failed else "missing")
    return out


def predictions_from_jsonl(path: str | Path) -> dict[str, Prediction]:
    """Predictions from a JSONL file in organ-summary shape.

    Each line is either one report, `{"id" or "report_id", "organs": {organ: row} or [row, ...],
    "status"?}` (`"status": "failed"` with no organs marks a failed report), or one flat organ row
    `{"report_id", "organ", "state", ...}` as `rsuper export --format organ-summary-jsonl` writes.

    Raises:
        GoldError: naming the file and line of a malformed prediction.
    """
    path = Path(path)
    out: dict[str, Prediction] = {}
    flat: list[dict[str, Any]] = []
    for where, obj in _jsonl_objects(path, "the predictions"):
        report_id = obj.get("id", obj.get("report_id")) if isinstance(obj, dict) else None
        if report_id is None:
            raise GoldError(f"{where}: field 'id' (or 'report_id') is missing")
        if "organ" in obj and "organs" not in obj:
            flat.append({**obj, "report_id": str(report_id)})
            continue
        organs = obj.get("organs")
        if isinstance(organs, list):
            organs = {row["organ"]: row for row in organs if isinstance(row, dict) and "organ" in row}
        if organs is None and obj.get("status") in ("failed", "missing"):
            out[str(report_id)] = Prediction(obj["status"])
            continue
        if not isinstance(organs, dict):
            raise GoldError(f"{where}: field 'organs' must be an object or a list of organ rows")
        for organ, row in organs.items():
            if organ not in ORGANS or not isinstance(row, dict) or row.get("state") not in STATES:
                raise GoldError(f"{where}: organs.{organ}: not an organ-summary row with a valid state")
        out[str(report_id)] = Prediction(obj.get("status", "ok"), organs)
    for report_id, organs in _rows_by_report(flat).items():
        out[report_id] = Prediction("ok", organs)
    return out


class EngineUnavailable(RuntimeError):
    """The extraction engine cannot run (missing module, backend or model)."""


def write_report_dump(reports: Sequence[GoldReport], path: str | Path) -> Path:
    """A JSONL dump of the gold reports (`id`, `report` only) that `rsuper ingest` reads."""
    path = Path(path)
    lines = [json.dumps({"id": r.id, "report": r.report}, ensure_ascii=False) for r in reports]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def extract_gold(reports: Sequence[GoldReport], db: str | Path, backend: Any, *, sampling: Any = None,
                 prompt_path: Optional[Path] = None, progress: bool = False) -> dict[str, Any]:
    """Ingest the gold reports into the store `db` and run the extraction engine over them.

    The engine skips reports already extracted under the same run key, so a rerun on the same store resumes.

    Args:
        backend: an `extract.backends.base.Backend` (not started; the engine closes it).
        sampling: `SamplingConfig` (default: the engine's defaults, temperature 0).

    Returns:
        The engine's run summary (counts, tokens, run id).
    """
    import tempfile

    try:
        from extract.backends.base import SamplingConfig
        from extract.engine import run_extract
        from extract.ingest import ingest_dump
        from extract.store import Store
    except ImportError as exc:
        raise EngineUnavailable(f"the extraction engine cannot be imported ({exc}); use --db or --predictions") from exc

    Path(db).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        dump = write_report_dump(reports, Path(tmp) / "gold_reports.jsonl")
        with Store(db) as store:
            ingest_dump(store, dump)
    return run_extract(Path(db), backend, prompt_path=prompt_path, sampling=sampling or SamplingConfig(),
                       limit=None, retry_failed=False, log_text=False, progress=progress)


# --- agreement of extracted records with a generator's truth (science benchmark) -----------------------------

def extraction_agreement(extracted: Mapping[str, Any], truth: Mapping[str, Any]) -> dict[str, float | int]:
    """How far the extracted records agree with the phantom generator's truth, per report.

    Both sides map report_id -> records with ``tumors`` of ``organ`` / ``count`` / ``diameters_mm`` (the
    training side's ``CaseRecords``, not imported here so that extraction stays free of torch).

    Returns counts and rates: reports extracted, reports whose set of tumour organs matches, reports whose
    number of tumour entries matches, and the mean absolute error (mm) of the largest diameter per organ where
    both sides give one.
    """
    organ_ok = count_ok = n = 0
    errors = []
    for rid, t in truth.items():
        e = extracted.get(rid)
        if e is None:
            continue
        n += 1
        organ_ok += {x.organ for x in e.tumors} == {x.organ for x in t.tumors}
        count_ok += sum(x.count for x in e.tumors) == len(t.tumors)
        for organ in {x.organ for x in t.tumors}:
            a = [max(x.diameters_mm) for x in e.tumors if x.organ == organ and x.diameters_mm]
            b = [max(x.diameters_mm) for x in t.tumors if x.organ == organ and x.diameters_mm]
            if a and b:
                errors.append(abs(max(a) - max(b)))
    return {"reports": len(truth), "extracted": n, "organs_match": organ_ok / n if n else math.nan,
            "count_match": count_ok / n if n else math.nan,
            "largest_diameter_mae_mm": math.fsum(errors) / len(errors) if errors else math.nan}
