"""Extraction accuracy on the development gold sets: one JSON line per gold set (and backend).

Runs the extraction engine on the gold reports (working stores under build/eval/, so a rerun resumes), then
scores them with `extract.evaluation`. Gold sets: data/gold/dev_gold.jsonl (optionally a subset) and, when
../shared/gold/dev_cases.jsonl exists, those 40 cases converted to the organ-summary shape at run time.

    python benchmarks/bench_accuracy.py --subset data/gold/ci_subset.txt      # CI subset, embedded model
    python benchmarks/bench_accuracy.py --backend openai --llm-url http://host:8000/v1 --model NAME
    python benchmarks/bench_accuracy.py --subset data/gold/ci_subset.txt --prompt prompts/extract_v2.yaml
    python benchmarks/bench_accuracy.py --rescore-from build/eval/bench-dev_gold-local.duckdb   # no LLM calls
    python benchmarks/bench_accuracy.py --rule-ceiling          # no LLM: gold organs the rules cannot reach
    python benchmarks/bench_accuracy.py --rules-only            # no LLM: what the conversion finds from an empty answer

`--rescore-from DB` re-runs only the deterministic conversion (`extract.reading.convert.to_payload` + organ
summary) on the raw LLM answers stored in DB (one run key: the latest run's, or `--config-hash PREFIX`) and
scores them again, so conversion rules can be changed and measured in seconds. Gold reports without a stored answer are skipped
(not counted as failures); an answer the conversion rejects counts as failed.

Wall times depend on the machine and its load; say which machine gave them.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from extract import evaluation as ev  # noqa: E402

DEV_GOLD = ROOT / "data" / "gold" / "dev_gold.jsonl"
SHARED_CASES = ROOT.parent / "shared" / "gold" / "dev_cases.jsonl"
WORK = ROOT / "build" / "eval"
EMPTY_ANSWER = '{"organs": [], "lesions": []}'


def _metrics(result: dict) -> dict:
    o, c = result["overall"], result["core"]
    return {
        "core_presence_f1": c["presence"]["f1"], "core_presence_precision": c["presence"]["precision"],
        "core_presence_recall": c["presence"]["recall"], "overall_presence_f1": o["presence"]["f1"],
        "state_rate": o["state"]["rate"], "count_rate": o["count"]["rate"], "diameter_rate": o["diameter"]["rate"],
        "diameter_pairs": o["diameter"]["total"], "diameter_e2e_rate": o["diameter_e2e"]["rate"],
        "location_rate": o["location"]["rate"], "attenuation_rate": o["attenuation"]["rate"],
        "equivocal_recall": o["equivocal"]["recall"], "failure_rate": result["failure_rate"],
        # the same fields over the core organs, which issue 20's targets name (the rates above are over all organs)
        **{f"core_{name}_rate": c[name]["rate"] for name in ("count", "diameter", "diameter_e2e", "location",
                                                              "attenuation")},
        "targets_met": all(t["met"] is not False for t in ev.check_targets(result)),
    }


def stored_answers(db: Path, config_hash: str | None = None) -> tuple[str, dict[str, dict]]:
    """Raw answers of one run key from a store: (config_hash, {report_id: {"raw", "text", "status",
    "output_tokens"}}).

    Args:
        config_hash: a prefix of the run key to read; default the key of the most recently started run.
    """
    from extract.store import Store

    with Store(db, read_only=True) as store:
        runs = store.query("SELECT config_hash, prompt_id, prompt_sha256, model_id, started_at FROM extraction_runs "
                           "ORDER BY started_at DESC").to_pylist()
        keys = [r["config_hash"] for r in runs if config_hash is None or r["config_hash"].startswith(config_hash)]
        if not keys:
            raise SystemExit(f"{db}: no extraction run with config_hash {config_hash or '(any)'}")
        key = keys[0]
        rows = store.query(
            "SELECT e.report_id, e.status, e.raw_output, e.output_tokens, r.text FROM extractions e JOIN reports r "
            "ON r.report_id = e.report_id AND r.version = e.report_version "
            f"WHERE e.config_hash = '{key}' ORDER BY e.created_at").to_pylist()
    return key, {r["report_id"]: {"raw": r["raw_output"], "text": r["text"], "status": r["status"],
                                  "output_tokens": r["output_tokens"]} for r in rows}


def answer_stats(answers: dict[str, dict]) -> dict:
    """Output tokens per answer (median, mean) and, for citing answers, the share of cited sentence numbers that
    name a sentence of their report (a model copying the prompt examples' numbers cites outside short reports)."""
    import statistics

    from extract.reading.sentences import sentence_spans
    from schemas.llm import CitedAnswer

    tokens = [a["output_tokens"] for a in answers.values() if a["output_tokens"] is not None]
    examples = _example_entries()
    cited = inside = citing = copying = 0
    for a in answers.values():
        if a["raw"] and '"sentences"' in a["raw"]:
            n = len(sentence_spans(a["text"]))
            lesions = CitedAnswer.model_validate_json(a["raw"]).lesions
            numbers = [x for lesion in lesions for x in lesion.sentences]
            cited, inside = cited + len(numbers), inside + sum(1 <= x <= n for x in numbers)
            citing += 1
            copying += any(lesion.model_dump_json() in examples for lesion in lesions)
    return {"output_tokens_median": statistics.median(tokens) if tokens else None,
            "output_tokens_mean": round(statistics.mean(tokens), 1) if tokens else None,
            "cited_numbers": cited, "cited_inside_report": round(inside / cited, 3) if cited else None,
            # a small model that copies an example's lesion entry word for word has not read the report there
            "answers_copying_an_example": round(copying / citing, 3) if citing else None}


def _example_entries() -> set[str]:
    """The lesion entries of the default prompt's example answers that cite two or more sentences (a one-sentence
    entry may match by chance), as JSON."""
    from extract.prompting import load_prompt
    from schemas.llm import CitedAnswer

    return {lesion.model_dump_json() for m in load_prompt().prefix if m["role"] == "assistant"
            for lesion in CitedAnswer.model_validate_json(m["content"]).lesions if len(lesion.sentences) > 1}


def _answer_within_older_bounds(raw: str):
    """The stored answer as a `CitedAnswer` (citing format) or an `LLMAnswer`. Quoting answers stored under an earlier schema may hold strings or arrays
    longer than today's bounds (the bounds limit generation, not meaning): those are accepted as they are;
    any other schema error is raised."""
    from pydantic import ValidationError

    from schemas.llm import CitedAnswer, LLMAnswer, LLMLesion, LLMOrgan, parse_llm_answer

    if "sentences" in raw or '"normal"' in raw:  # the citing format's answers have one set of bounds so far
        return parse_llm_answer(raw, CitedAnswer)
    try:
        return parse_llm_answer(raw)
    except ValidationError as exc:
        if any(e["type"] not in ("string_too_long", "too_long") for e in exc.errors()):
            raise
    data = json.loads(raw, strict=False)

    def checked(model, item: dict):
        # every other constraint (enums, counts) is still checked, on a copy cut to today's bounds
        cut = {k: v[: model.model_fields[k].metadata[0].max_length]
               if isinstance(v, str) and k in model.model_fields and model.model_fields[k].metadata else v
               for k, v in item.items()}
        model.model_validate(cut)
        return model.model_construct(**item)

    return LLMAnswer.model_construct(organs=[checked(LLMOrgan, o) for o in data["organs"]],
                                     lesions=[checked(LLMLesion, x) for x in data["lesions"]])


def rescore_prediction(raw: str | None, text: str) -> "ev.Prediction":
    """The organ-summary prediction the current conversion rules give for one stored raw answer."""
    from pydantic import ValidationError

    from extract.reading.convert import to_payload
    from schemas.summary import organ_summary

    if not raw:
        return ev.Prediction("failed")
    try:
        payload, _ = to_payload(_answer_within_older_bounds(raw), text)
    except (ValidationError, ValueError):
        return ev.Prediction("failed")
    return ev.Prediction("ok", {row["organ"]: row for row in organ_summary(payload)})


def rescore(name: str, reports: list, db: Path, config_hash: str | None, out: Path | None) -> tuple[dict, dict]:
    """Score the stored raw answers of `db` again with the current conversion: (JSON line, full result)."""
    start = time.perf_counter()
    key, answers = stored_answers(db, config_hash)
    scored = [r for r in reports if r.id in answers]
    preds = {r.id: rescore_prediction(answers[r.id]["raw"], r.report) for r in scored}
    result = ev.evaluate(scored, preds)
    if out is not None:
        out.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    line = {"bench": "accuracy_rescore", "gold": name, "store": str(db), "config_hash": key[:12],
            "reports": len(scored), "not_in_store": len(reports) - len(scored),
            "rescore_s": round(time.perf_counter() - start, 2), **_metrics(result), **answer_stats(answers),
            "result_file": str(out) if out else None}
    return line, result


_RANK = {"none": 0, "possible": 1, "definite": 2}


def rule_ceiling(reports: list) -> dict:
    """What the conversion rules alone allow, with no LLM: per gold organ, the strongest lesion assertion any
    of its report's sentences makes for it (`extract.reading.negation.lesion_assertion`), where the drop rules
    keep a lesion quoted from that sentence (`extract.reading.lesions.drop_reason`). `unreachable` lists gold
    lesion (equivocal) organs with no definite (possible) sentence: whatever the LLM answers, the rules would
    drop it. `exposed` lists gold-negative organs with a lesion-asserting sentence: there only the LLM's organ
    choice prevents a false positive. Ids and organs only, never report text."""
    from extract.reading.lesions import drop_reason, sentence_organs
    from extract.reading.negation import lesion_assertion
    from extract.reading.sentences import report_sentences
    from schemas.vocab import Organ

    unreachable, exposed = [], []
    for gold in reports:
        best: dict[str, str] = {}
        unnamed: dict[str, str] = {}  # sentences naming no organ: the rules accept them for any organ
        for header, sentence in report_sentences(gold.report):
            organs = sentence_organs(header, sentence)
            for organ in organs or (Organ(o) for o in gold.organs):
                found = "none" if drop_reason(organ, header, sentence) else lesion_assertion(organ, sentence)
                target = best if organs else unnamed
                if _RANK[found] > _RANK[target.get(organ.value, "none")]:
                    target[organ.value] = found
        for organ in {*gold.organs, *best}:
            states = ev.accepted_values(gold.organs.get(organ, {}).get("state", "not_mentioned"))
            got = max(best.get(organ, "none"), unnamed.get(organ, "none"), key=_RANK.get)
            negative_ok = bool({"no_lesion", "not_mentioned"} & set(states))
            if negative_ok and got == "none":
                continue
            if "lesion" in states and got != "definite" and not ("equivocal" in states and got == "possible"):
                unreachable.append(f"{gold.id}:{organ}")
            elif "equivocal" in states and "lesion" not in states and got != "possible":
                unreachable.append(f"{gold.id}:{organ}")
            elif best.get(organ, "none") != "none" and not {"lesion", "equivocal"} & set(states):
                exposed.append(f"{gold.id}:{organ}")
    return {"bench": "accuracy_rule_ceiling", "reports": len(reports), "unreachable": sorted(unreachable),
            "exposed": sorted(exposed)}


def run_one(name: str, reports: list, args: argparse.Namespace) -> dict:
    from extract.backends.base import SamplingConfig
    from extract.backends import build_backend

    backend = build_backend(args.backend, urls=args.llm_url, model=args.model, model_path=None, model_revision="",
                            quantization="", concurrency=args.concurrency, timeout_s=300.0, retries=2,
                            threads=args.threads)
    db = args.store or WORK / f"bench-{name}-{args.backend}.duckdb"
    start = time.perf_counter()
    summary = ev.extract_gold(reports, db, backend, sampling=SamplingConfig(max_tokens=args.max_tokens),
                              prompt_path=args.prompt)
    wall_s = time.perf_counter() - start
    result = ev.evaluate(reports, ev.predictions_from_store(db, [r.id for r in reports]))
    out = db.with_suffix(".json")
    out.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    extracted = summary.get("ok", 0) + summary.get("repaired", 0) + summary.get("failed", 0)
    return {"bench": "accuracy", "gold": name, "reports": len(reports), "backend": args.backend,
            "model": args.model,
            "prompt": str(args.prompt) if args.prompt else "default", "extracted_now": extracted, "wall_s": round(wall_s, 1),
            "s_per_extracted_report": round(wall_s / extracted, 2) if extracted else None,
            "machine": platform.node(), **_metrics(result), "result_file": str(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gold", type=Path, default=DEV_GOLD)
    parser.add_argument("--subset", type=Path, help="id list, e.g. data/gold/ci_subset.txt")
    parser.add_argument("--limit", type=int, help="first N gold reports only")
    parser.add_argument("--no-cases", action="store_true", help="skip the converted ../shared/gold cases")
    parser.add_argument("--backend", default="local", choices=["local", "openai", "vllm"])
    parser.add_argument("--model")
    parser.add_argument("--llm-url", action="append", default=[])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=2048, help="output tokens per call (schemas.llm.ANSWER_TOKEN_BUDGET)")
    parser.add_argument("--prompt", type=Path, help="prompt template (default: the engine's default prompt)")
    parser.add_argument("--store", type=Path, help="working store (default build/eval/bench-<gold>-<backend>.duckdb)")
    parser.add_argument("--rescore-from", type=Path, metavar="DB",
                        help="no LLM calls: convert and score the raw answers stored in DB again")
    parser.add_argument("--config-hash", help="with --rescore-from: run key prefix to read (default latest run)")
    parser.add_argument("--out", type=Path, help="with --rescore-from: write the full result JSON here")
    parser.add_argument("--rules-only", action="store_true",
                        help="no LLM: score the conversion of an empty answer (what the rules find on their own)")
    parser.add_argument("--rule-ceiling", action="store_true",
                        help="no LLM: which gold organs the conversion rules alone cannot get right")
    parser.add_argument("--table", action="store_true", help="also print the per-organ table (stderr)")
    parser.add_argument("--mismatches", type=int, default=0, help="print N mismatches (ids, organs, values; stderr)")
    args = parser.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    ids = ev.load_id_list(args.subset) if args.subset else None
    reports = ev.load_gold(args.gold, ids)[: args.limit]
    name = args.gold.stem + (f"-{args.subset.stem}" if args.subset else "") + (f"-first{args.limit}" if args.limit else "")
    if args.rule_ceiling:
        print(json.dumps(rule_ceiling(reports)), flush=True)
        return
    if args.rules_only:
        result = ev.evaluate(reports, {r.id: rescore_prediction(EMPTY_ANSWER, r.report) for r in reports})
        print(json.dumps({"bench": "accuracy_rules_only", "gold": name, "reports": len(reports), **_metrics(result)}))
        if args.table:
            print(ev.format_table(result), file=sys.stderr)
        for m in result["mismatches"][: args.mismatches]:
            print(json.dumps(m, default=str), file=sys.stderr)
        return
    if args.rescore_from:
        line, result = rescore(name, reports, args.rescore_from, args.config_hash, args.out)
        print(json.dumps(line), flush=True)
        if args.table:
            print(ev.format_table(result), file=sys.stderr)
        for m in result["mismatches"][: args.mismatches]:
            print(json.dumps(m, default=str), file=sys.stderr)
        return
    print(json.dumps(run_one(name, reports, args)), flush=True)
    if not args.no_cases and args.subset is None and SHARED_CASES.exists():
        converted = WORK / "dev_cases_gold.jsonl"  # holds report text: generated, never committed
        ev.convert_cases(SHARED_CASES, converted)
        cases = ev.load_gold(converted)[: args.limit]
        print(json.dumps(run_one("dev_cases" + (f"-first{args.limit}" if args.limit else ""), cases, args)),
              flush=True)


if __name__ == "__main__":
    main()
