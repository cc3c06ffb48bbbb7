import json
from pathlib import Path

import pytest

from extract import evaluation as ev

ROOT = Path(__file__).resolve().parents[2]
DEV_GOLD = ROOT / "data" / "gold" / "dev_gold.jsonl"
CI_SUBSET = ROOT / "data" / "gold" / "ci_subset.txt"
SHARED_CASES = ROOT.parent / "shared" / "gold" / "dev_cases.jsonl"


def gold(organs, id="R1", report="Liver: 9 mm cyst in segment 7."):
    return ev.parse_gold_line({"id": id, "report": report, "organs": organs}, "test")


def pred(organs, status="ok"):
    return ev.Prediction(status, organs)


LIVER_LESION = {"state": "lesion", "lesion_count": 1, "largest_diameter_mm": 9, "largest_location": "segment_7",
                "largest_attenuation": "hypo"}


# --- field matching -----------------------------------------------------------------------------------------

def test_diameter_matches_within_one_mm_only():
    assert ev.field_matches("largest_diameter_mm", 9, 10.0)
    assert ev.field_matches("largest_diameter_mm", 9, 8.0)
    assert not ev.field_matches("largest_diameter_mm", 9, 10.5)
    assert not ev.field_matches("largest_diameter_mm", 9, None)
    assert ev.field_matches("largest_diameter_mm", None, None)


def test_any_of_accepts_each_value_and_resolves_to_the_matching_one():
    g = {"any_of": ["equivocal", "lesion"]}
    assert ev.field_matches("state", g, "lesion") and ev.field_matches("state", g, "equivocal")
    assert not ev.field_matches("state", g, "no_lesion")
    assert ev.resolve_gold("state", g, "lesion") == "lesion"
    assert ev.resolve_gold("state", g, "no_lesion") == "equivocal"  # first accepted value


def test_sides_compare_as_sets():
    assert ev.field_matches("sides", ["left", "right"], ["right", "left"])
    assert not ev.field_matches("sides", ["left", "right"], ["left"])


# --- one organ ----------------------------------------------------------------------------------------------

def test_perfect_organ_scores_every_named_field():
    out = ev.score_organ("R1", "liver", LIVER_LESION, {**LIVER_LESION, "largest_diameter_mm": 9.5})
    metrics = {f.metric: f.correct for f in out.fields}
    assert metrics == {"state": True, "count": True, "diameter_e2e": True, "diameter": True, "location": True,
                       "attenuation": True}


def test_missed_lesion_scores_mismatches_but_no_both_sized_diameter():
    out = ev.score_organ("R1", "liver", LIVER_LESION, {"state": "no_lesion"})
    metrics = {f.metric: f.correct for f in out.fields}
    assert metrics == {"state": False, "count": False, "diameter_e2e": False, "location": False,
                       "attenuation": False}


def test_explicit_null_diameter_penalises_a_leaked_prior_size_end_to_end_only():
    g = {"state": "lesion", "lesion_count": 1, "largest_diameter_mm": None}
    out = ev.score_organ("R1", "liver", g, {"state": "lesion", "lesion_count": 1, "largest_diameter_mm": 25.0})
    assert [(f.metric, f.correct) for f in out.fields] == [("state", True), ("count", True), ("diameter_e2e", False)]


def test_lesion_fields_are_not_scored_when_any_of_resolves_to_equivocal():
    g = {"state": {"any_of": ["equivocal", "lesion"]}, "lesion_count": 1, "largest_diameter_mm": 13}
    out = ev.score_organ("R1", "lung", g, {"state": "equivocal"})
    assert out.gold_state == "equivocal" and [f.metric for f in out.fields] == ["state"]


# --- aggregation --------------------------------------------------------------------------------------------

def test_binary_scores_exact_values():
    s = ev.binary_scores(tp=3, fp=1, fn=2, tn=10)
    assert s["precision"] == pytest.approx(0.75)
    assert s["recall"] == pytest.approx(0.6)
    assert s["f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert ev.binary_scores(0, 0, 0, 5)["f1"] is None
    assert ev.binary_scores(0, 0, 2, 5)["f1"] == 0.0


def test_evaluate_hand_made_predictions_exact_values():
    reports = [
        gold({"liver": LIVER_LESION, "pancreas": {"state": "no_lesion"}}, id="A"),
        gold({"kidney": {"state": "lesion", "lesion_count": 2, "count_is_lower_bound": True, "largest_diameter_mm": 32,
                         "largest_location": "right", "sides": ["left", "right"]}}, id="B"),
        gold({"pancreas": {"state": "equivocal"}}, id="C"),
        gold({"liver": {"state": "lesion", "lesion_count": 1, "largest_diameter_mm": 20}}, id="D"),
    ]
    predictions = {
        # A: liver right but 12 mm and segment 8; pancreas right; a spurious spleen lesion.
        "A": pred({"liver": {**LIVER_LESION, "largest_diameter_mm": 12.0, "largest_location": "segment_8"},
                   "pancreas": {"state": "no_lesion"}, "spleen": {"state": "lesion", "lesion_count": 1}}),
        # B: kidney found, count 1 (not the lower bound 2), size right, left instead of right.
        "B": pred({"kidney": {"state": "lesion", "lesion_count": 1, "count_is_lower_bound": False,
                              "largest_diameter_mm": 32.0, "largest_location": "left", "sides": ["left"]}}),
        # C: equivocal called a lesion.
        "C": pred({"pancreas": {"state": "lesion", "lesion_count": 1}}),
        # D: failed.
        "D": ev.Prediction("failed"),
    }
    r = ev.evaluate(reports, predictions)
    assert (r["reports"], r["failed"], r["missing"], r["failure_rate"]) == (4, 1, 0, 0.25)
    p = r["overall"]["presence"]
    assert (p["tp"], p["fp"], p["fn"], p["tn"]) == (2, 2, 1, 4 * 18 - 5)
    assert p["precision"] == pytest.approx(0.5) and p["recall"] == pytest.approx(2 / 3)
    assert p["f1"] == pytest.approx(4 / 7)
    eq = r["overall"]["equivocal"]
    assert (eq["tp"], eq["fn"], eq["fp"]) == (0, 1, 0)
    assert r["overall"]["diameter"] == {"correct": 1, "total": 2, "rate": 0.5}        # A 12 vs 9; B exact
    assert r["overall"]["diameter_e2e"] == {"correct": 1, "total": 3, "rate": pytest.approx(1 / 3)}  # + D missed
    assert r["overall"]["count"] == {"correct": 1, "total": 3, "rate": pytest.approx(1 / 3)}
    assert r["overall"]["lower_bound"] == {"correct": 0, "total": 1, "rate": 0.0}
    assert r["overall"]["location"] == {"correct": 0, "total": 2, "rate": 0.0}
    assert r["overall"]["sides"] == {"correct": 0, "total": 1, "rate": 0.0}
    assert r["overall"]["attenuation"] == {"correct": 1, "total": 1, "rate": 1.0}
    assert r["overall"]["state"]["correct"] == 4 * 18 - 3  # A spleen, C pancreas, D liver, nothing else wrong
    assert set(r["organs"]) == {"liver", "pancreas", "kidney", "spleen"}
    assert r["organs"]["spleen"]["presence"]["fp"] == 1
    assert r["core"]["presence"]["tp"] == 2
    assert {(m["id"], m["organ"], m["metric"]) for m in r["mismatches"]} >= {("A", "liver", "location"),
                                                                         ("D", "liver", "state")}
    checks = {c["metric"]: c["met"] for c in ev.check_targets(r)}
    assert checks == {"core.presence.f1": False, "overall.diameter.rate": False, "overall.location.rate": False,
                      "overall.attenuation.rate": True, "failure_rate": False}


def test_missing_prediction_counts_as_missing_and_misses_its_lesions():
    r = ev.evaluate([gold({"liver": LIVER_LESION})], {})
    assert (r["missing"], r["failed"], r["failure_rate"]) == (1, 0, 1.0)
    assert r["overall"]["presence"]["fn"] == 1


def test_format_table_names_organs_and_targets():
    reports = [gold({"liver": LIVER_LESION})]
    text = ev.format_table(ev.evaluate(reports, {"R1": pred({"liver": dict(LIVER_LESION)})}))
    assert "liver" in text and "overall" in text and "core" in text
    assert "target core.presence.f1 >= 0.90: 1.000 met" in text


# --- gold files ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("organs", "message"), [
    ({"livr": {"state": "lesion"}}, "organs.livr: not an organ key"),
    ({"liver": {"lesion_count": 1}}, "organs.liver: must be an object with at least 'state'"),
    ({"liver": {"state": "present"}}, "organs.liver.state"),
    ({"liver": {"state": "lesion", "largest_location": "left"}}, "'left' is not a location token of liver"),
    ({"spleen": {"state": "lesion", "sides": ["left"]}}, "organs.spleen.sides"),
    ({"liver": {"state": "lesion", "lesion_count": {"any_of": []}}}, "any_of must be a non-empty list"),
])
def test_bad_gold_lines_name_the_field(organs, message):
    with pytest.raises(ev.GoldError, match="test") as err:
        gold(organs)
    assert message in str(err.value)


def test_load_gold_names_file_and_line(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text('{"id": "a", "report": "x", "organs": {}}\n{"id": "a", "report": "y", "organs": {}}\n')
    with pytest.raises(ev.GoldError, match=r"g.jsonl line 2: duplicate id 'a'"):
        ev.load_gold(path)
    path.write_text('{"id": "a", "report": "x", "organs": {}}\nnot json\n')
    with pytest.raises(ev.GoldError, match=r"g.jsonl line 2: not valid JSON"):
        ev.load_gold(path)


def test_development_gold_set_is_valid_and_large_enough():
    reports = ev.load_gold(DEV_GOLD)
    assert len(reports) >= 80
    no_lesion = [r for r in reports if not any(
        set(ev.accepted_values(o["state"])) & {"lesion", "equivocal"} for o in r.organs.values())]
    assert 0.2 <= len(no_lesion) / len(reports) <= 0.4
    assert sum("chest_ct" in r.phenomena for r in reports) >= 10
    subset = ev.load_id_list(CI_SUBSET)
    assert 5 <= len(subset) <= 15
    assert [r.id for r in ev.load_gold(DEV_GOLD, subset)] == subset


def test_development_gold_covers_every_phenomenon_of_the_shared_cases():
    if not SHARED_CASES.exists():
        pytest.skip(f"{SHARED_CASES} not found")
    wanted = {p for line in SHARED_CASES.read_text().splitlines() if line.strip()
              for p in json.loads(line)["phenomena"]}
    covered = {p for r in ev.load_gold(DEV_GOLD) for p in r.phenomena}
    assert wanted - covered == set()


def test_gold_scored_against_itself_is_perfect():
    reports = ev.load_gold(DEV_GOLD)
    # A prediction equal to the first accepted value of every gold field.
    preds = {r.id: pred({o: {k: ev.accepted_values(v)[0] for k, v in f.items()} for o, f in r.organs.items()})
             for r in reports}
    r = ev.evaluate(reports, preds)
    assert r["mismatches"] == []
    assert r["overall"]["presence"]["f1"] == 1.0 and r["failure_rate"] == 0.0


# --- conversion of payload-shaped cases ---------------------------------------------------------------------

CASE = {
    "id": "C1",
    "report": "Multiple bilateral renal cysts, the largest in the right lower pole measuring 3.2 cm. Spleen: normal.",
    "phenomena": ["bilateral"],
    "expected": {
        "tumors": [
            {"id": 1, "organ": "kidney", "laterality": "right", "segments": ["kidney_lower_pole"],
             "lesion_type": "cyst", "size": {"status": "measured", "diameters_mm": [32], "reported_text": "3.2 cm"}},
            {"id": 2, "organ": "kidney", "laterality": "bilateral", "lesion_type": "cyst", "count": 1,
             "count_exact": False, "size": {"status": "bounded", "upper_bound_mm": 32}},
        ],
        "organs": [{"organ": "kidney", "state": "lesion_present"}, {"organ": "spleen", "state": "no_lesion"}],
    },
}


def test_case_to_gold_goes_through_the_organ_summary():
    g = ev.case_to_gold(CASE)
    assert g["organs"] == {
        "kidney": {"state": "lesion", "lesion_count": 2, "count_is_lower_bound": True, "largest_diameter_mm": 32.0,
                   "size_bound_mm": None, "largest_location": "right", "sides": ["left", "right"],
                   "largest_attenuation": "cystic"},
        "spleen": {"state": "no_lesion"},
    }
    assert g["phenomena"] == ["bilateral"]


def test_convert_cases_writes_valid_gold_and_names_bad_lines(tmp_path):
    src, dst = tmp_path / "cases.jsonl", tmp_path / "out" / "gold.jsonl"
    src.write_text(json.dumps(CASE) + "\n")
    assert ev.convert_cases(src, dst) == 1
    assert ev.load_gold(dst)[0].organs["spleen"] == {"state": "no_lesion"}
    bad = {**CASE, "expected": {"tumors": [{"id": 1, "organ": "kidney", "segments": ["liver_segment_1"]}]}}
    src.write_text(json.dumps(CASE) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ev.GoldError, match=r"cases.jsonl line 2: cannot convert"):
        ev.convert_cases(src, dst)


# --- prediction files ---------------------------------------------------------------------------------------

def test_predictions_from_jsonl_reads_report_lines_flat_rows_and_failures(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in [
        {"id": "A", "organs": {"liver": {"state": "lesion", "lesion_count": 1}}},
        {"report_id": "B", "organ": "kidney", "state": "no_lesion"},
        {"report_id": "B", "organ": "liver", "state": "lesion", "lesion_count": 2},
        {"id": "C", "status": "failed"},
        {"id": "D", "organs": [{"organ": "lung", "state": "equivocal"}]},
    ]) + "\n")
    p = ev.predictions_from_jsonl(path)
    assert p["A"].organs["liver"]["lesion_count"] == 1
    assert set(p["B"].organs) == {"kidney", "liver"}
    assert p["C"].failed and p["C"].status == "failed"
    assert p["D"].organs["lung"]["state"] == "equivocal"
    path.write_text(json.dumps({"id": "A", "organs": {"liver": {"state": "big"}}}) + "\n")
    with pytest.raises(ev.GoldError, match=r"p.jsonl line 1: organs.liver"):
        ev.predictions_from_jsonl(path)


# --- the engine path: ingest -> extract -> store -> score (scripted in-process backend) ---------------------

class ScriptedBackend:
    """Answers by report content: a liver lesion for the 'cyst' report, junk (-> failed) for the others."""

    max_concurrency = 1

    def __init__(self):
        self.calls = 0

    async def start(self):
        from extract.backends.base import BackendInfo

        return BackendInfo(backend="scripted", backend_version="0", model_id="scripted-model")

    async def complete(self, messages, schema, sampling):
        from extract.backends.base import Completion

        self.calls += 1
        if any("cyst in segment 7" in m["content"] for m in messages):
            answer = {"lesions": [{"organ": "liver", "sentences": [1], "count": 1, "count_exact": True}],
                      "normal": [], "resected": []}
            return Completion(text=json.dumps(answer), finish_reason="stop")
        return Completion(text="not json", finish_reason="stop")

    async def aclose(self):
        pass


def test_extract_gold_then_store_predictions_score_end_to_end(tmp_path):
    reports = [gold({"liver": LIVER_LESION}, id="R1"),
               gold({"kidney": {"state": "no_lesion"}}, id="R2", report="Kidneys: normal.")]
    db = tmp_path / "eval.duckdb"
    backend = ScriptedBackend()
    summary = ev.extract_gold(reports, db, backend)
    assert (summary["ok"], summary["failed"]) == (1, 1)
    preds = ev.predictions_from_store(db, ["R1", "R2", "R3"])
    assert preds["R1"].status == "ok" and preds["R1"].organs["liver"]["largest_location"] == "segment_7"
    assert len(preds["R1"].organs) == 18
    assert preds["R2"].status == "failed" and preds["R3"].status == "missing"
    r = ev.evaluate(reports, preds)
    assert r["overall"]["presence"]["tp"] == 1 and r["overall"]["diameter"]["rate"] == 1.0
    assert (r["failed"], r["failure_rate"]) == (1, 0.5)
    assert backend.calls == 3  # R1 once, R2 once plus one repair
    again = ScriptedBackend()
    ev.extract_gold(reports[:1], db, again)  # a rerun resumes: nothing new to extract
    assert again.calls == 0
    assert ev.predictions_from_store(db, ["R1"])["R1"].organs["liver"]["lesion_count"] == 1


def test_cli_scores_a_prediction_file_and_writes_json(tmp_path):
    import typer
    from typer.testing import CliRunner

    from extract import eval_cli

    app = typer.Typer()
    eval_cli.register(app)
    gold_path = tmp_path / "gold.jsonl"
    gold_path.write_text(json.dumps({"id": "A", "report": "Liver: 9 mm cyst in segment 7.",
                                     "organs": {"liver": LIVER_LESION}}) + "\n")
    preds_path = tmp_path / "preds.jsonl"
    preds_path.write_text(json.dumps({"id": "A", "organs": {"liver": {**LIVER_LESION, "largest_location": "segment_6"}}})
                          + "\n")
    out = tmp_path / "r.json"
    runner = CliRunner()
    res = runner.invoke(app, ["eval-extraction", str(gold_path), "--predictions", str(preds_path), "--out", str(out),
                              "--mismatches", "5", "--check-targets"])
    assert res.exit_code == 1, res.output  # location 0/1 misses its target
    assert "A liver location: gold 'segment_7' pred 'segment_6'" in res.output
    result = json.loads(out.read_text())
    assert result["overall"]["location"] == {"correct": 0, "total": 1, "rate": 0.0}
    assert result["source"] == f"file:{preds_path}"
    res = runner.invoke(app, ["eval-extraction", str(tmp_path / "nope.jsonl"), "--predictions", str(preds_path)])
    assert res.exit_code == 2 and "cannot read the gold file" in res.output


# --- agreement with a generator's truth ---------------------------------------------------------------------

def test_extraction_agreement_counts_organs_entries_and_largest_diameter_error():
    import math

    from train.data.records import CaseRecords, ReportedTumor

    truth = {
        "R1": CaseRecords("R1", (ReportedTumor("liver", diameters_mm=(30.0,)), ReportedTumor("liver", diameters_mm=(20.0,)),
                                 ReportedTumor("kidney", diameters_mm=(12.0,)))),
        "R2": CaseRecords("R2"),
        "R3": CaseRecords("R3", (ReportedTumor("liver", diameters_mm=(10.0,)),)),
    }
    extracted = {  # R1: a group of two liver lesions (28 mm largest) and the kidney; R2: a false liver lesion
        "R1": CaseRecords("R1", (ReportedTumor("liver", diameters_mm=(28.0,), count=2),
                                 ReportedTumor("kidney", diameters_mm=(12.0,)))),
        "R2": CaseRecords("R2", (ReportedTumor("liver", diameters_mm=(5.0,)),)),
    }
    assert ev.extraction_agreement(extracted, truth) == {
        "reports": 3, "extracted": 2, "organs_match": 0.5, "count_match": 0.5, "largest_diameter_mae_mm": 1.0}
    none = ev.extraction_agreement({}, truth)
    assert (none["reports"], none["extracted"]) == (3, 0)
    assert all(math.isnan(none[k]) for k in ("organs_match", "count_match", "largest_diameter_mae_mm"))
