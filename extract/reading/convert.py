"""The deterministic conversion of an LLM answer into a validated `ExtractionPayload` for its report."""

from __future__ import annotations

import re

from extract.reading.cite import cited_as_quoted
from extract.reading.lesion_words import group_word_in_text
from extract.reading.lesions import lesion_record
from extract.reading.locations import side_in_text
from extract.reading.measurements import current_measurements, is_largest_follow_up, split_by_measurement
from extract.reading.negation import lesion_assertion, negated_blanked
from extract.reading.organ_states import organ_statuses
from extract.reading.organs import named_organs
from extract.reading.quotes import QuoteContext, in_impression
from extract.reading.sentences import is_not_findings_header, report_sentences
from schemas.llm import CitedAnswer, LLMAnswer, LLMLesion, parse_llm_answer
from schemas.records import ExtractionPayload, match_key
from schemas.vocab import PAIRED_ORGANS, Organ


def _repeats_findings(record: dict, earlier: list[dict]) -> bool:
    same = [t for t in earlier if t["organ"] == record["organ"]
            and (t["laterality"] == record["laterality"] or None in (t["laterality"], record["laterality"]))]
    if not same:
        return False
    size = record["size"].get("diameters_mm")
    return size is None or any(t["size"].get("diameters_mm") == size for t in same)


def _lesion_sentences(report_text: str, report_key: str):
    """(header, text, organ) for every findings sentence, or clause, about exactly one organ: a sentence naming
    several organs is read clause by clause ("1.3 cm splenic lesion and 9 mm left adrenal nodule"); one naming
    none takes the organ of the sentence it continues after a semicolon, else its section header's."""
    previous: set[Organ] = set()
    previous_text = ""
    sentences: list[tuple[str, str]] = []
    for header, sentence in report_sentences(report_text):
        if sentences and is_largest_follow_up(sentence):
            sentences[-1] = (sentences[-1][0], f"{sentences[-1][1]}. {sentence}")
        else:
            sentences.append((header, sentence))
    for header, sentence in sentences:
        if is_not_findings_header(header):
            previous, previous_text = set(), sentence
            continue
        organs = named_organs(negated_blanked(sentence))
        if not organs and previous and match_key(f"{previous_text}; {sentence}") in report_key:
            organs = previous
        organs = organs or named_organs(header)
        previous, previous_text = organs, sentence
        if len(organs) == 1:
            yield header, sentence, next(iter(organs))
            continue
        for clause in re.split(r",|\band\b", sentence):
            named = named_organs(negated_blanked(clause))
            if len(named) == 1 and len(clause.strip()) >= 3:
                yield header, clause.strip(), next(iter(named))


def _missed_lesions(report_text: str, report_key: str, tumors: list[dict]) -> list[dict]:
    """Records for findings sentences that assert a lesion of exactly one organ (side) no record covers.

    A small model often skips a lesion it was shown; the sentence passes the same checks as a quoted lesion
    (not history, not negated, organ named), so it stands for one lesion, or a group when it says so.
    """
    added: list[dict] = []
    for header, sentence, organ in _lesion_sentences(report_text, report_key):
        if lesion_assertion(organ, sentence) == "none":
            continue
        side = (side_in_text(sentence) or side_in_text(header)) if organ in PAIRED_ORGANS else None
        known = [t for t in [*tumors, *added] if t["organ"] == organ.value]
        sizes = [m.diameters_mm for m in current_measurements(sentence)]
        covered = any(side is None or t["laterality"] in (side, "bilateral", None) or side == "bilateral"
                      for t in known)
        if covered and (not sizes or any(tuple(t["size"].get("diameters_mm", ())) in sizes for t in known)):
            continue  # nothing new: the organ (side) holds a record, and no new current size is written
        key = match_key(sentence)
        if any(e and match_key(e) in key for t in known for e in t["evidence"]):
            continue  # the answer quoted this sentence: its reading (sizes included) stands
        group = group_word_in_text(sentence)
        stand_in = LLMLesion.model_construct(
            organ=organ.value, quote=sentence, side="none" if side in (None, "bilateral") else side, location="",
            size="", size_bound="none", count=2 if group else 1, count_exact=not group, attenuation="unknown",
            kind="lesion_unspecified", certainty="definite")
        kept = lesion_record(stand_in, len(tumors) + len(added) + 1, report_text, report_key, [])
        if kept is None:
            continue
        record, ctx = kept
        if in_impression(report_text, ctx.span[0]) and known:
            continue
        for part in split_by_measurement(record, ctx.text):
            part["id"] = len(tumors) + len(added) + 1
            added.append(part)
    return added


def _keep_lesion(record: dict, ctx: QuoteContext, report_text: str, tumors: list[dict], seen: set[tuple],
                 spans: dict[tuple[str, tuple[int, int]], bool], warnings: list[str], first_part: bool = True) -> None:
    """Append `record` to `tumors` unless it repeats one already there. `first_part`: the record is the first
    (or only) of the lesions its quote was split into; the others share its words by construction."""
    # The same lesion repeated (findings + impression) collapses into one record.
    identity = (record["organ"], record["laterality"], tuple(record["size"].get("diameters_mm", ())),
                tuple(record["segments"]))
    if identity in seen and record["size"]["status"] == "measured":
        warnings.append(f"lesion {record['id']}: duplicate of an earlier record; dropped")
        return
    # A second entry on the very same words is a copy unless the words speak of several lesions.
    span_key = (record["organ"], ctx.span)
    if first_part and span_key in spans and not spans[span_key]:
        warnings.append(f"lesion {record['id']}: same quote as an earlier single lesion; dropped")
        return
    # The impression repeats findings: an entry there on an organ (side) the findings already hold is the
    # same lesion unless it carries a size no earlier record has.
    if in_impression(report_text, ctx.span[0]) and _repeats_findings(record, tumors):
        warnings.append(f"lesion {record['id']}: impression repeats an earlier record; dropped")
        return
    spans[span_key] = group_word_in_text(ctx.text)
    seen.add(identity)
    tumors.append(record)


def to_payload(answer: LLMAnswer | CitedAnswer | dict | str, report_text: str,
               answer_model: type[LLMAnswer] | type[CitedAnswer] = LLMAnswer) -> tuple[ExtractionPayload, list[str]]:
    """Convert an LLM answer into a validated payload for `report_text`, with conversion warnings. A text or
    dict is read as an `answer_model`; a citing answer is first tied to the report's sentences.

    Raises:
        pydantic.ValidationError: the answer does not match its model, or the converted payload is invalid.
    """
    if isinstance(answer, str):
        answer = parse_llm_answer(answer, answer_model)
    elif isinstance(answer, dict):
        answer = answer_model.model_validate(answer)
    warnings: list[str] = []
    if isinstance(answer, CitedAnswer):
        answer = cited_as_quoted(answer, report_text, warnings)
    report_key = match_key(report_text)
    tumors: list[dict] = []
    seen: set[tuple] = set()
    spans: dict[tuple[str, tuple[int, int]], bool] = {}
    for lesion in answer.lesions:
        kept = lesion_record(lesion, len(tumors) + 1, report_text, report_key, warnings)
        if kept is None:
            continue
        record, ctx = kept
        for k, part in enumerate(split_by_measurement(record, ctx.text)):
            part["id"] = len(tumors) + 1
            _keep_lesion(part, ctx, report_text, tumors, seen, spans, warnings, first_part=k == 0)
    for stated in answer.organs:
        # The model called the organ abnormal but listed no lesion: the organ quote stands for one, when its
        # words pass the same checks as a lesion quote.
        if stated.state not in ("lesion", "equivocal"):
            continue
        side = stated.side if Organ(stated.organ) in PAIRED_ORGANS and stated.side != "both" else None
        if any(t["organ"] == stated.organ and (side is None or t["laterality"] in (side, "bilateral")) for t in tumors):
            continue
        group = group_word_in_text(stated.quote)
        stand_in = LLMLesion.model_construct(organ=stated.organ, quote=stated.quote,
                             side="none" if side is None else side,
                             location="", size="", size_bound="none", count=2 if group else 1,
                             count_exact=not group, attenuation="unknown", kind="lesion_unspecified",
                             certainty="possible" if stated.state == "equivocal" else "definite")
        kept = lesion_record(stand_in, len(tumors) + 1, report_text, report_key, [])
        if kept is not None:
            warnings.append(f"organ {stated.organ}: lesion record made from the organ statement")
            tumors.append(kept[0])
    for record in _missed_lesions(report_text, report_key, tumors):
        warnings.append(f"lesion {record['id']} ({record['organ']}): made from a report sentence the answer left out")
        tumors.append(record)
    organs = organ_statuses(answer, tumors, report_text, report_key, warnings)
    payload = ExtractionPayload.model_validate({"tumors": tumors, "organs": organs},
                                               context={"report_text": report_text})
    return payload, warnings
