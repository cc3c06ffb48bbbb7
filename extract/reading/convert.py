"""The deterministic conversion of an LLM answer into a validated `ExtractionPayload` for its report."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

from extract.reading.cite import cited_as_quoted
from extract.reading.lesion_words import (
    attenuation_in_text,
    composition_in_text,
    group_word_in_text,
    kind_in_text,
    lesion_word_in_text,
    stated_count,
    stated_total,
)
from extract.reading.lesions import SPAN_KEY, lesion_record
from extract.reading.locations import side_in_text, subsegments_in_text
from extract.reading.measurements import (
    EACH_WORD,
    current_measurements,
    is_bare_member,
    is_largest_follow_up,
    is_size_follow_up,
    names_place,
    split_by_measurement,
)
from extract.reading.negation import TARGET_LABEL, item_assertion, negated_blanked
from extract.reading.organ_states import organ_statuses
from extract.reading.organs import named_organs
from extract.reading.quotes import QuoteContext, in_impression
from extract.reading.sentences import Sentence, is_not_findings_header, list_title, sentence_spans
from schemas.llm import CitedAnswer, LLMAnswer, LLMLesion, parse_llm_answer
from schemas.measure import find_measurements
from schemas.records import ExtractionPayload, match_key
from schemas.vocab import PAIRED_ORGANS, LesionType, Organ


def _repeats_findings(record: dict, earlier: list[dict]) -> bool:
    """Whether an impression record repeats findings records: same organ and side ("bilateral" when the findings
    hold both sides), and no size, or the largest size of one of them ("6.4 cm renal mass" for "6.4 x 5.8 x 5.5
    cm")."""
    organ_records = [t for t in earlier if t["organ"] == record["organ"]]
    if record["laterality"] == "bilateral":
        sides = {t["laterality"] for t in organ_records}
        same = organ_records if {"left", "right"} <= sides or "bilateral" in sides else []
    else:
        same = [t for t in organ_records
                if t["laterality"] == record["laterality"] or None in (t["laterality"], record["laterality"])]
    if not same:
        return False
    size = record["size"].get("diameters_mm")
    return not size or any(t["size"].get("diameters_mm") and max(t["size"]["diameters_mm"]) == max(size)
                           for t in same)


_REST_OF_GROUP = re.compile(r"\b(?:the|all)\s+(?:remaining|other|rest of the)\b|\bthe others\b", re.IGNORECASE)
_ADDITIVE = re.compile(r"\b(?:in addition|additional(?:ly)?|further|besides)\b", re.IGNORECASE)
#: "Another nodule ...", "a second, 4 mm nodule ...": one more lesion than those already described.
_ANOTHER = re.compile(r"\b(?:another|an?\s+(?:second|third|fourth|additional|further|separate|distinct)|one more)\b",
                      re.IGNORECASE)
_LARGEST_WORD = re.compile(r"\b(?:largest|dominant|biggest)\b", re.IGNORECASE)
_NEW = re.compile(r"\bnew(?:ly)?\b", re.IGNORECASE)
_DEFINITE = re.compile(r"^(?:the|this|that)\b", re.IGNORECASE)
#: Where nodes lie, named after the organ beside them ("splenic hilum", "porta hepatis", "renal hilar").
_NODE_PLACE = re.compile(r"\b(?:(?:splenic|renal|hepatic|pulmonary|left|right)\s+)?hil(?:um|a|ar)\b|\bporta hepatis\b|"
                         r"\b(?:gastrohepatic|hepatoduodenal|portocaval|peripancreatic|perigastric|splenic)\s+"
                         r"(?:ligament|region|station)?", re.IGNORECASE)
#: "Immediately posterior to it lie two satellite nodules": words about what the sentence before described.
_REFERS_BACK = re.compile(r"\b(?:it|its|them|these|those|their|satellites?|the same)\b", re.IGNORECASE)
#: "... lies in the same lobe": the place of the sentence before.
_SAME_PLACE = re.compile(r"\b(?:the same|that)\s+(?:lobe|segment|kidney|gland|organ|side|region)\b", re.IGNORECASE)
_QUANTIFIER = re.compile(r"\b(?:several|multiple|numerous|innumerable|too numerous|a few|additional|scattered|"
                         r"many|various|countless)\b", re.IGNORECASE)
_HEADER_LEAD = re.compile(r"^[A-Za-z][A-Za-z /&,()'-]{0,40}:\s+")  # "Liver: ", "Right upper lobe, apical segment: "
_INCLUDING = re.compile(r"\b(?:including|such as|for example|e\.g\.|among (?:them|which))\b", re.IGNORECASE)
# "The three largest are ...", "The largest measure:" (not "The largest measures ...")
_LARGEST_MEMBERS = re.compile(r"^(?:the\s+)?(?:(?:two|three|four|five|\d)\s+(?:largest|dominant|biggest)\b|"
                              r"(?:largest|dominant|biggest)(?:\s+ones)?\s+(?:measure|are|include)\s*:?\s*$)",
                              re.IGNORECASE)
_EXAMPLES = re.compile(r"^(?:the\s+)?(?:index|target|representative|reference|measurable|dominant)\s+"
                       r"(?:lesions?|nodules?|metastases|masses|observations)\b", re.IGNORECASE)
_LIST_ITEM = re.compile(r"\s*(?:[-*\u2022]|\d{1,2}[.)])\s")


def _as_one_lesion(record: dict) -> dict:
    """A sized group record as the one lesion its size belongs to (a single lesion is never bilateral)."""
    return {**record, "count": 1, "count_exact": True, "innumerable": False,
            "laterality": None if record["laterality"] == "bilateral" else record["laterality"],
            "size": {**record["size"], "refers_to": "lesion"}}


def _list_member(intro: dict, line: str, span: tuple[int, int]) -> dict:
    """A record for one line of the list `intro` opens ("- Segment 8: 1.6 cm (series 5, image 18), ..."): the
    intro's kind and reading, this line's current size, side and sub-segments."""
    organ = Organ(intro["organ"])
    m = current_measurements(line)[0]
    side = side_in_text(line) if organ in PAIRED_ORGANS else None
    return {**intro, "count": 1, "count_exact": True, "innumerable": False,
            "laterality": side if side in ("left", "right") else None,
            "segments": [x.value for x in subsegments_in_text(organ, line)],
            "size": {"status": "measured", "diameters_mm": list(m.diameters_mm), "reported_text": m.text,
                     "refers_to": "lesion"},
            "evidence": [line[:400]], SPAN_KEY: span}


_GENERIC_KINDS = (LesionType.LESION_UNSPECIFIED, LesionType.NODULE)
_LESION_NOUN = re.compile(r"\blesions?\b", re.IGNORECASE)
_MASS_NOUN = re.compile(r"\bmass(?:es)?\b", re.IGNORECASE)
#: "The liver metastases are hypodense", "The mass is exophytic", "This is consistent with a cyst": a sentence about
#: lesions already recorded, not a new one.
_BACK_REFERENCE = re.compile(r"^(?:(?:the|these|those|both|all|all of the)\s+(?:[a-z-]+\s+){0,2}?"
                             r"(?:lesions?|metastas[ie]s|nodules?|mass(?:es)?|cysts?|tumou?rs?|foci|focus|deposits?|"
                             r"observations?)|this|it|they)\b", re.IGNORECASE)


#: A sentence that only says what a lesion is ("Likely hemangioma.", "Consistent with a simple cyst.").
_DIAGNOSIS_ONLY = re.compile(r"^(?:(?:most\s+)?likely|probabl[ey]|possibly|presumabl[ey]|presumed|consistent with|"
                             r"compatible with|in keeping with|suggestive of|(?:which\s+)?may represent|"
                             r"favou?red to represent|representing)\b[^.;]{0,60}$", re.IGNORECASE)


def _kind_in_words(record: dict) -> LesionType:
    """The kind a record's words name (backstop records carry no kind of their own)."""
    return kind_in_text(Organ(record["organ"]), negated_blanked(" ".join(record["evidence"])))


def _sentence_at(spans: tuple[Sentence, ...], record: dict) -> Sentence | None:
    """The sentence of `spans` where a record's words start, or None for a record without a place in the text."""
    where = record.get(SPAN_KEY)
    return next((s for s in spans if s.start <= where[0] < s.end), None) if where else None


def _same_section(header: str, later: str) -> bool:
    """Whether a sentence under `later` is still in the section `header` opened: the same header, or a label
    naming no organ inside it ("Lungs: Three nodules are followed. Nodule measurements, current (prior): ...")."""
    return later == header or not (named_organs(later) or is_not_findings_header(later))


def _bare_member_line(organ: Organ, line: str) -> bool:
    """`is_bare_member` for a line of `organ`'s section, with its own lesion words outside negations, that names no
    other organ ("An enlarged right hilar node measures 14 mm" is no lung member)."""
    blanked = negated_blanked(line)
    return is_bare_member(organ, line, lesion_word_in_text(organ, blanked)) and named_organs(blanked) <= {organ}


def _described_as_lesion(member: dict, intro: dict) -> bool:
    """Whether a record of no kind of its own ("Target lesion 1, segment 8: 32 mm") may be one of the lesions of a
    kind a number counted ("Seven hepatic metastases"): its words say "lesion", not "mass", nor "new" where the
    number counts known ones."""
    words = " ".join(member["evidence"])
    return (_kind_in_words(member) is LesionType.LESION_UNSPECIFIED and bool(_LESION_NOUN.search(words))
            and not _MASS_NOUN.search(words)
            and not (_NEW.search(words) and not _NEW.search(" ".join(intro["evidence"]))))


def _absorb_described_members(intro: dict, i: int, spans: tuple, text: str, report_text: str, kept: list[dict],
                               warnings: list[str]) -> None:
    """An exact number followed by its lesions described one by one, in prose ("There are now seven pulmonary
    nodules. The three new nodules are in the right middle lobe (6 mm), ... Of the four known nodules, ..."): the
    later records of the same kind and side in the same section, and the lines there that size a member without a
    word of their own, are its members, when they do not outnumber it; the number keeps only what they leave.
    "At least four" keeps its bound; a bare plural is resolved by its members. Other kinds ("Two cysts in the left
    kidney. A 3 cm solid mass ...") are other lesions."""
    # "Three lesions, the largest 2.1 cm in segment 7. A second lesion in segment 4a measures 9 mm.": the number
    # holds its largest and the members described after it
    sized_group = (intro["size"]["status"] == "measured" and intro["size"].get("refers_to") == "largest_of_group"
                   and bool(_LARGEST_WORD.search(" ".join(intro["evidence"]))))
    if intro["size"]["status"] == "measured" and not sized_group:
        return
    # A bare plural ("Both adrenal glands contain nodules.") is resolved by the lesions described after it; "several"
    # or "multiple" say there are more than those described; "at least four" holds those described, and stays a
    # lower bound.
    stated = stated_count(negated_blanked(" ".join(intro["evidence"])))
    bare_plural = not intro["count_exact"] and not _QUANTIFIER.search(" ".join(intro["evidence"])) and stated is None
    at_least = not intro["count_exact"] and stated is not None and not stated[1]
    if not intro["count_exact"] and not bare_plural and not at_least:
        return
    if sized_group and not intro["count_exact"] and not at_least:
        return
    end = i + 1
    organ = Organ(intro["organ"])
    while end < len(spans) and (_same_section(spans[i].header, spans[end].header)
                                or named_organs(spans[end].header) == {organ}) and not in_impression(
            report_text, spans[end].start):
        end += 1
    if end == i + 1:
        return
    block = (spans[i].end, spans[end - 1].end)
    intro_kind = _kind_in_words(intro)
    members = [t for t in kept if t is not intro and t["organ"] == intro["organ"] and t.get(SPAN_KEY)
               and block[0] <= t[SPAN_KEY][0] < block[1]
               # "two nodules" may be described as an adenoma and a nodule; "two cysts" are not a mass, but "seven
               # metastases" are the "Target lesion 1, segment 8: 32 mm" and others described as lesions
               and (intro_kind in _GENERIC_KINDS or _kind_in_words(t) == intro_kind or _described_as_lesion(t, intro))
               and (intro["laterality"] in (None, "bilateral") or t["laterality"] in (None, intro["laterality"]))]
    # members sized without a word of their own ("...; LLL 4 mm (prior 4 mm); lingula 3 mm") and no record
    bare_lines = [(line, (s.start, s.end)) for s in spans[i + 1:end]
                  if not any(t.get(SPAN_KEY) and s.start <= t[SPAN_KEY][0] < s.end
                             for t in kept if t["organ"] == organ.value)
                  and _bare_member_line(organ, line := text[s.start:s.end])
                  and current_measurements(negated_blanked(line))  # "One of them, a 4 mm ..., is no longer seen"
                  and subsegments_in_text(organ, line)]  # "The right measures 3.2 cm" places no lung member
    bare = []
    for line, line_span in bare_lines:  # "Two of them ..., measuring 9 mm and 5 mm": a member per size
        sizes = current_measurements(line)
        member = _list_member(intro, line, line_span)
        bare += split_by_measurement({**member, "count": len(sizes)}, line) if len(sizes) > 1 else [member]
    members += bare
    if at_least:  # "Others include a 5 mm nodule ...": examples, which `_examples_in_groups` takes in
        members = [t for t in members if not ((w := _sentence_at(spans, t)) is not None and _EXAMPLES_OF_GROUP.match(
            _HEADER_LEAD.sub("", text[w.start:w.end], count=1)))]
    described = sum(t["count"] for t in members)
    room = intro["count"] - (1 if sized_group else 0)
    # "At least one further lesion in segment 2" may close the members of "at least four"
    exact_members = all(t["count_exact"] for t in (members[:-1] if at_least else members))
    if not members or not exact_members or (
            described > room if intro["count_exact"] else (bare_plural and described < intro["count"])):
        return
    rest = intro["count"] - described if intro["count_exact"] else (max(0, room - described) if at_least else 0)
    if intro["laterality"] in ("left", "right"):  # "The left adrenal gland contains two nodules. The medial limb ..."
        for t in members:
            if t["laterality"] is None:
                kept[kept.index(t)] = {**t, "laterality": intro["laterality"]}
    at = kept.index(intro) + 1
    kept[at:at] = bare
    if at_least:  # the group's largest and its described members; a rest to the stated bound, at least
        largest = [_as_one_lesion(intro)] if sized_group else []
        rest_records = [{**intro, "count": rest, "size": {"status": "not_reported"}}] if rest else []
        kept[kept.index(intro):kept.index(intro) + 1] = largest + rest_records
        if not rest_records:
            last = members[-1]
            kept[kept.index(last)] = {**last, "count_exact": False}
    elif sized_group and rest == 1:
        kept[kept.index(intro)] = _as_one_lesion(intro)
    elif rest > 0:
        kept[kept.index(intro)] = {**intro, "count": rest}
    else:
        kept.remove(intro)
    warnings.append(f"lesion {intro['id']} ({intro['organ']}): {described} of its {intro['count']} described after it")


def _absorb_list_intros(tumors: list[dict], report_text: str, warnings: list[str]) -> list[dict]:
    """A sentence that introduces a list ("Five nodules are tracked:", "Several small nodules are present: right
    upper lobe, 3 mm; ...", "Three observations are seen:") gives the list's count, not more lesions.

    The lines right after it that size a lesion each are its members: the records already made from them, and a
    record for each line that names a place of the organ (or is a list item) with no record, such as "- Segment 8:
    1.6 cm (series 5, image 18)". The intro's group record gives way to them: a measured intro sized the first
    member; an exact number beyond the members stays as an unsized rest; a list resolves "several" (unless the
    intro says "including" or "such as"), so the members are the count.
    """
    text = unicodedata.normalize("NFKC", report_text)
    spans = sentence_spans(text)
    kept = list(tumors)
    for intro in tumors:
        where = intro.get(SPAN_KEY)
        if intro not in kept or where is None or (intro["count"] < 2 and intro["count_exact"]):
            continue
        i = next((k for k, s in enumerate(spans) if s.start <= where[0] < s.end), None)
        if i is None or in_impression(report_text, where[0]):
            continue
        if where[1] > spans[i].end:
            # a group sized by the follow-up after it ("At least four lesions. The largest ... 2.1 cm."): its
            # members come after the follow-up
            last = next((k for k in range(i, len(spans)) if spans[k].start < where[1] <= spans[k].end), None)
            if last is None or not intro["size"]["status"] == "measured":
                continue
            _absorb_described_members(intro, last, spans, text, report_text, kept, warnings)
            continue
        intro_text = text[spans[i].start:spans[i].end]
        if _INCLUDING.search(intro_text):
            continue
        organ = Organ(intro["organ"])
        following = text[spans[i + 1].start:spans[i + 1].end] if i + 1 < len(spans) else ""
        # A list, not just the next sentences: a colon or semicolon opens it, its lines are items, or the next
        # sentence goes on about "the three largest" or names examples ("Index lesions: segment 7, 3.0 cm; ..."),
        # after which the group stays a lower bound.
        examples = bool(_EXAMPLES.match(following))
        opens_list = (intro_text.rstrip().endswith(":") or text[spans[i].end:spans[i].end + 1] in (":", ";")
                      or bool(_LIST_ITEM.match(following)) or bool(_LARGEST_MEMBERS.match(following)) or examples)
        # "Multiple nodules are present. Right upper lobe, 5 mm (image 41). Lingula, 3 mm.": bare members follow
        # (a stated number takes in its members, bare or not, in `_absorb_described_members`)
        bare = (not opens_list and not intro["count_exact"] and i + 1 < len(spans)
                and (_same_section(spans[i].header, spans[i + 1].header)
                     or named_organs(spans[i + 1].header) == {organ})
                and _bare_member_line(organ, following))
        opens_list = opens_list or bare
        if not opens_list:
            _absorb_described_members(intro, i, spans, text, report_text, kept, warnings)
            continue
        members, new = [], []
        largest_in_list = False  # "...; the largest, in segment 6, measures 7 mm": the list names only its largest
        j = i + 1
        if (_LARGEST_MEMBERS.match(following) or following.rstrip().endswith(":")) and not current_measurements(
                following):
            j += 1  # "The three largest are as follows.", "each is listed with its prior size:" lead into the list
        # The list runs while lines size something ("Right lower lobe: 1.1 cm ..." is its own labelled line); an
        # item's further sentences on its line ("... 2.8 cm, arterial enhancement. LI-RADS 5.") go with it.
        while j < len(spans) and (current_measurements(line := text[spans[j].start:spans[j].end]) or (
                j > i + 1 and "\n" not in text[spans[j - 1].end:spans[j].start])):
            if not current_measurements(line):
                j += 1
                continue
            if _ADDITIVE.search(line):
                break  # "In addition, a few tiny nodules ..." is a group of its own
            if bare and not _bare_member_line(organ, line):
                break  # a list of bare members ends with the first sentence that is none
            if bare and _LARGEST_WORD.search(line) and {m.diameters_mm for m in current_measurements(line)} <= {
                    tuple(t["size"]["diameters_mm"]) for t in [*members, *new] if t["size"]["status"] == "measured"}:
                j += 1
                continue  # "The largest, in the left lower lobe, measures 8 mm": a member already listed
            line_span = (spans[j].start, spans[j].end)
            largest_in_list = largest_in_list or bool(_LARGEST_WORD.search(line))
            own = [t for t in kept if t is not intro and t["organ"] == organ.value and t.get(SPAN_KEY)
                   and line_span[0] <= t[SPAN_KEY][0] < line_span[1]]
            if own:
                for t in own:  # a sized group on the line ("Index lesions: segment 7, 3.0 cm") is its first member
                    if t["size"]["status"] != "measured":
                        continue
                    if (t["count"] > 1 or not t["count_exact"]) and not (
                            t["count_exact"] and EACH_WORD.search(line)):  # "the two ..., each 10 mm": two members
                        single = _as_one_lesion(t)
                        kept[kept.index(t)] = single
                        t = single
                    members.append(t)
            elif (named_organs(negated_blanked(line)) <= {organ} and not lesion_word_in_text(organ, line)
                  and (names_place(organ, line) or _LIST_ITEM.match(line))):
                # a bare member ("- Segment 8: 1.6 cm"); a line with a lesion word of its own and no record was
                # left out for a reason (resolved, negated, not a lesion)
                sizes = current_measurements(line)
                if len(sizes) > 1:  # "the right measures 11 mm and the left 17 mm": a member per size
                    new += split_by_measurement({**_list_member(intro, line, line_span), "count": len(sizes)}, line)
                else:
                    new.append(_list_member(intro, line, line_span))
            j += 1
        sized_intro = intro["size"]["status"] == "measured"
        n = sum(t["count"] for t in members) + len(new) + (1 if sized_intro else 0)
        if not members and not new:
            continue
        stated = stated_count(negated_blanked(intro_text))
        # An exact number beyond the members is an unsized rest; "at least five" beyond them stays a lower bound.
        rest = intro["count"] - n if intro["count_exact"] else (stated[0] - n if stated else 0)
        position = kept.index(intro)
        replacement: list[dict] = []
        if sized_intro:
            replacement.append(_as_one_lesion(intro))
        if rest <= 0 and largest_in_list and not intro["count_exact"] and not examples:
            rest = 1  # "several ..., the largest 7 mm": at least one more than those sized
        if rest > 0:
            replacement.append({**intro, "count": rest, "count_exact": intro["count_exact"],
                                "size": {"status": "not_reported"}})
        if examples and not intro["count_exact"] and rest <= 0:
            new = [*new[:-1], {**new[-1], "count_exact": False}] if new else new
            if not new and members:  # the group stays "at least": its last named member says so
                last = members[-1]
                kept[kept.index(last)] = {**last, "count_exact": False}
        kept[position:position + 1] = replacement + new
        warnings.append(f"lesion {intro['id']} ({organ.value}): introduces a list of {n}"
                        + (f" and {rest} more" if rest > 0 else "") + f" ({len(new)} members without a record)")
    return kept


def _lesion_sentences(report_text: str, report_key: str):
    """(header, text, organ, list title) for every findings sentence, or clause, about exactly one organ: a
    sentence naming several organs is read clause by clause ("1.3 cm splenic lesion and 9 mm left adrenal nodule");
    one naming none takes the organ of the sentence it continues after a semicolon, else its section header's, else
    its list title's ("Hepatic lesions:"), else, when it refers back, that of the sentence before it in the same
    paragraph ("Interspersed among them are two new solid lesions")."""
    previous: set[Organ] = set()
    previous_text = ""
    spans = sentence_spans(report_text)
    # header, start, words, whether it goes on with the line before, list title
    sentences: list[tuple[str, int, str, bool, str]] = []
    for k, span in enumerate(spans):
        sentence = report_text[span.start:span.end]
        if sentences and span.header == sentences[-1][0] and (is_largest_follow_up(sentence)
                                                             or is_size_follow_up(sentence)):
            header, start, _, *rest = sentences[-1]  # the report's own words from the first sentence on
            sentences[-1] = (header, start, report_text[start:span.end], *rest)
        else:
            sentences.append((span.header, span.start, sentence,
                              k > 0 and "\n" not in report_text[spans[k - 1].end:span.start],
                              list_title(report_text, span.start)))
    previous_start = 0
    for header, start, sentence, same_paragraph, title in sentences:
        if is_not_findings_header(header):
            previous, previous_text, previous_start = set(), sentence, start
            continue
        organs = named_organs(negated_blanked(sentence))
        if not organs and previous and match_key(f"{previous_text}; {sentence}") in report_key:
            organs = previous
            if len(previous) == 1 and item_assertion(next(iter(previous)), previous_text, title) == "none":
                # "Ill-defined hypoenhancing area in the pancreatic tail; a small mass cannot be excluded": one
                # finding, its place and attenuation before the semicolon
                sentence = report_text[previous_start:start + len(sentence)]
        previous_start = start
        if not organs and len(previous) == 1 and (_ANOTHER.search(sentence) or _SAME_PLACE.search(sentence)
                                                  or _ADDITIVE.search(sentence)):
            # "An additional new nodule of 4 mm lies in the same lobe", "At least two further tiny cysts are present
            # in the tail": the organ just named
            organs = previous
        organs = organs or named_organs(header) or named_organs(title)
        if not organs and sentence.rstrip().endswith(":"):
            organs = previous  # "Liver: Cirrhotic. Three observations are seen:" opens a list of the organ before
        if not organs and len(previous) == 1 and same_paragraph and _REFERS_BACK.search(sentence):
            organs = previous
        if Organ.LYMPH_NODE in organs and len(organs) > 1 and named_organs(
                _NODE_PLACE.sub(" ", negated_blanked(sentence))) == {Organ.LYMPH_NODE}:
            organs = {Organ.LYMPH_NODE}  # "Enlarged nodes at the splenic hilum (1.3 cm) and ...": nodes only
        previous, previous_text = organs, sentence
        if len(organs) == 1:
            yield header, sentence, next(iter(organs)), title
            continue
        for clause in re.split(r",|\band\b", sentence):
            named = named_organs(negated_blanked(clause))
            if len(named) == 1 and len(clause.strip()) >= 3:
                yield header, clause.strip(), next(iter(named)), title


def _missed_lesions(report_text: str, report_key: str, tumors: list[dict]) -> list[dict]:
    """Records for findings sentences that assert a lesion of exactly one organ (side) no record covers.

    A small model often skips a lesion it was shown; the sentence passes the same checks as a quoted lesion
    (not history, not negated, organ named), so it stands for one lesion, or a group when it says so.
    """
    added: list[dict] = []
    for header, sentence, organ, title in _lesion_sentences(report_text, report_key):
        if item_assertion(organ, sentence, title) == "none":
            continue
        side = (side_in_text(sentence) or side_in_text(header)) if organ in PAIRED_ORGANS else None
        known = [t for t in [*tumors, *added] if t["organ"] == organ.value]
        sizes = [m.diameters_mm for m in current_measurements(sentence)]
        blanked = negated_blanked(sentence)
        same_side = [t for t in known
                     if side is None or t["laterality"] in (side, "bilateral", None) or side == "bilateral"]
        places = {s.value for s in subsegments_in_text(organ, blanked)}
        # One more lesion: "another nodule", or a lesion in a sub-segment none of the side's placed records lies
        # in ("a nodule in the right middle lobe" after one in the right lower lobe; "the mass ..." is known).
        unlabelled = _HEADER_LEAD.sub("", sentence, count=1)
        elsewhere = (bool(places) and bool(same_side) and not _DEFINITE.match(unlabelled)
                     and all(t["segments"] and not places & set(t["segments"]) for t in same_side))
        # "There is one new 4 mm nodule" beside known ones of that size: a new lesion, unless one of them is new too
        fresh = bool(sizes) and bool(_NEW.search(blanked)) and not any(
            _NEW.search(" ".join(t["evidence"])) for t in same_side)
        covered = bool(same_side) and not _ANOTHER.search(blanked) and not elsewhere and not fresh
        group = group_word_in_text(blanked)
        known_group = any(t["count"] > 1 or not t["count_exact"] for t in known)
        if known_group and _REST_OF_GROUP.search(sentence):
            continue  # "the remaining nodules are 3 mm or smaller": members of the group already counted
        # A group the records lack ("at least five additional nodules" beside a sized mass) is news too; "the
        # adnexal masses" speaks of lesions already recorded, so it takes a number or a quantifier.
        # "two new solid lesions" beside known cysts: a stated number of new lesions is news as well
        added_to = bool(_ADDITIVE.search(sentence)) or (stated_count(blanked) is not None
                                                        and bool(_NEW.search(blanked)))
        new_group = group and (not known_group or added_to) and (
            stated_count(blanked) is not None or bool(_QUANTIFIER.search(sentence))
            or sentence.rstrip().endswith(":"))  # "Nodules elsewhere:" opens a list
        if covered and not new_group and (
                not sizes or any(tuple(t["size"].get("diameters_mm", ())) in sizes for t in known)):
            continue  # nothing new: the organ (side) holds a record, and no new current size is written
        key = match_key(unlabelled)
        if any(e and (match_key(e) in key or (key in match_key(e) and (t["size"]["status"] == "measured" or not sizes)))
               for t in known for e in t["evidence"]):
            continue  # the answer quoted this sentence (or a sized stretch holding it): its reading stands
        stand_in = LLMLesion.model_construct(
            organ=organ.value, quote=sentence, side="none" if side in (None, "bilateral") else side, location="",
            size="", size_bound="none", count=2 if group else 1, count_exact=not group, attenuation="unknown",
            kind=kind_in_text(organ, blanked).value, certainty="definite")
        kept = lesion_record(stand_in, len(tumors) + len(added) + 1, report_text, report_key, [])
        if kept is None:
            continue
        record, ctx = kept
        # the impression repeats the findings, unless it sizes a lesion in a place no record of the organ holds
        # ("IMPRESSION: ... 1.5 cm liver metastasis in segment 6" after a segment 3 cyst)
        if in_impression(report_text, ctx.span[0]) and known and not (
                sizes and places and all(t["size"]["status"] == "measured" and t["count_exact"] and t["count"] == 1
                                         and tuple(t["size"]["diameters_mm"]) not in sizes
                                         and not places & set(t["segments"]) for t in known)):
            continue
        for part in split_by_measurement(record, ctx.text):
            part["id"] = len(tumors) + len(added) + 1
            added.append(part)
    return added


def _without_back_references(tumors: list[dict], warnings: list[str]) -> list[dict]:
    """Unsized records whose words speak of lesions recorded from other words ("The liver metastases are
    hypodense", "This is consistent with a hyperdense cyst") are dropped when the organ holds a record made from
    other words."""
    def back_reference(t: dict) -> bool:
        if t["size"]["status"] == "measured" or not t["evidence"]:
            return False
        words = _HEADER_LEAD.sub("", t["evidence"][0], count=1)
        # "Likely hemangioma.": what the lesion before is, when it names no place and no number of its own
        return bool(_BACK_REFERENCE.match(words)) or (
            bool(_DIAGNOSIS_ONLY.match(words)) and not t["segments"] and t["count"] == 1 and t["count_exact"])

    described = {t["organ"] for t in tumors if not back_reference(t)}
    kept = []
    for t in tumors:
        if back_reference(t) and t["organ"] in described:
            warnings.append(f"lesion {t['id']} ({t['organ']}): speaks of lesions already recorded; dropped")
        else:
            kept.append(t)
    return kept


def _without_subsets(tumors: list[dict], report_text: str, warnings: list[str]) -> list[dict]:
    """A group with no size, place or number of its own after a group of the same organ, kind and side in the same
    findings section is some of those lesions, not more ("... innumerable cysts. Several cysts show mural
    calcification.")."""
    spans = sentence_spans(unicodedata.normalize("NFKC", report_text))
    kept: list[dict] = []
    for t in tumors:
        bare = (not t["count_exact"] and t["size"]["status"] != "measured" and not t["segments"]
                and t["laterality"] in (None, "bilateral") and t.get(SPAN_KEY) and t["evidence"]
                and not in_impression(report_text, t[SPAN_KEY][0]))
        if bare:
            header, kind = _sentence_at(spans, t).header, _kind_in_words(t)
        groups = [e for e in kept if bare and e["organ"] == t["organ"] and not e["count_exact"] and e.get(SPAN_KEY)
                  and e[SPAN_KEY][0] < t[SPAN_KEY][0] and _sentence_at(spans, e).header == header
                  and _kind_in_words(e) == kind]
        if groups:
            warnings.append(f"lesion {t['id']} ({t['organ']}): some of the group of lesion {groups[0]['id']}; dropped")
            continue
        kept.append(t)
    return kept


#: "Other representative nodules measure 5 mm ... and 4 mm ...": examples of a group already counted.
_EXAMPLES_OF_GROUP = re.compile(r"^(?:the\s+)?(?:other\s+)?(?:representative|example)\b|^(?:examples?|others?)\s+"
                                r"include\b", re.IGNORECASE)


def _examples_in_groups(tumors: list[dict], report_text: str, warnings: list[str]) -> list[dict]:
    """Sized records from a sentence that gives examples ("Other representative nodules measure ...") after an
    unsized group that is a lower bound ("More than ten nodules ...") of the same organ in the same findings
    section are members of that group: its rest shrinks by them, down to one."""
    text = unicodedata.normalize("NFKC", report_text)
    spans = sentence_spans(text)
    kept = list(tumors)
    for t in tumors:
        where = _sentence_at(spans, t)
        if where is None or t["size"]["status"] != "measured" or not t["count_exact"] or in_impression(
                report_text, where.start):
            continue
        if not _EXAMPLES_OF_GROUP.match(_HEADER_LEAD.sub("", text[where.start:where.end], count=1)):
            continue
        group = next((g for g in kept if g["organ"] == t["organ"] and not g["count_exact"]
                      and g["size"]["status"] == "not_reported" and g.get(SPAN_KEY) and g[SPAN_KEY][0] < where.start
                      and (s := _sentence_at(spans, g)) is not None and s.header == where.header), None)
        if group is not None:
            kept[kept.index(group)] = {**group, "count": max(1, group["count"] - t["count"])}
            warnings.append(f"lesion {t['id']} ({t['organ']}): an example of the group of lesion {group['id']}")
    return kept


def _examples_of_innumerable(tumors: list[dict], report_text: str, warnings: list[str]) -> list[dict]:
    """Lesions sized one by one after an innumerable group of the same organ in its section ("Innumerable
    nodules ... The largest measures 18 mm ... A right upper lobe nodule measures 11 mm") are examples of it:
    the group stays "at least two", its largest example kept as its largest member."""
    text = unicodedata.normalize("NFKC", report_text)
    spans = sentence_spans(text)
    kept = list(tumors)
    for group in tumors:
        where = _sentence_at(spans, group)
        # "Innumerable nodules, at least twelve" keeps its number
        if (not group.get("innumerable") or where is None or in_impression(report_text, where.start)
                or group["count_exact"] or group["count"] > 2):
            continue
        examples = [t for t in kept if t is not group and t["organ"] == group["organ"]
                    and t["count"] == 1 and t["count_exact"]
                    and (s := _sentence_at(spans, t)) is not None and s.start >= where.start
                    and _same_section(where.header, s.header) and not in_impression(report_text, s.start)]
        if not examples:
            continue
        sized = [t for t in examples if t["size"]["status"] == "measured"]
        largest = max(sized, key=lambda t: max(t["size"]["diameters_mm"])) if sized else None
        if group["size"]["status"] == "measured" and (
                largest is None or max(group["size"]["diameters_mm"]) >= max(largest["size"]["diameters_mm"])):
            largest = None  # the group's own words size its largest
        kept = [t for t in kept if t not in examples or t is largest]
        kept[kept.index(group)] = {**group, "count": 1 if largest else 2}
        warnings.append(f"lesion {group['id']} ({group['organ']}): {len(examples)} examples of the innumerable "
                        "group; its largest kept")
    return kept


def _impression_sentences(report_text: str) -> Iterator[tuple[str, Organ]]:
    """(words, organ) for every impression sentence that names exactly one organ."""
    text = unicodedata.normalize("NFKC", report_text)
    for sentence in sentence_spans(text):
        if in_impression(report_text, sentence.start):
            words = text[sentence.start:sentence.end]
            organs = named_organs(negated_blanked(words))
            if len(organs) == 1:
                yield words, next(iter(organs))


def _count_from_impression(tumors: list[dict], report_text: str, warnings: list[str]) -> list[dict]:
    """When the findings give an organ only one unsized group without a number ("Scattered solid nodules are now
    present in both lungs"), an impression sentence that states the number ("Four new solid pulmonary nodules, the
    dominant one measuring 9 mm in the right lower lobe") gives the count, and its largest member."""
    out = list(tumors)
    for words, named in _impression_sentences(report_text):
        stated = stated_count(negated_blanked(words))
        if stated is None or not stated[1]:
            continue
        organ = named.value
        records = [t for t in out if t["organ"] == organ]
        if len(records) != 1 or records[0]["count_exact"] or records[0]["size"]["status"] == "measured" or (
                not records[0].get(SPAN_KEY) or in_impression(report_text, records[0][SPAN_KEY][0])):
            continue
        group = records[0]
        if stated[0] < group["count"]:
            continue
        counted = {**group, "count": stated[0], "count_exact": True}
        parts = [p for p in split_by_measurement(counted, words) if p["size"]["status"] == "measured"]
        if len(parts) == 1 and parts[0]["count"] == 1:  # the largest member written beside the number
            rest = {**counted, "count": stated[0] - 1, "count_exact": True, "size": {"status": "not_reported"}}
            replacement = [parts[0], rest]  # a stated number is at least two
        else:
            replacement = [counted]
        out[out.index(group):out.index(group) + 1] = replacement
        warnings.append(f"lesion {group['id']} ({organ}): counted by the impression ({stated[0]})")
    return out


def _without_target_repeats(tumors: list[dict], report_text: str, warnings: list[str]) -> list[dict]:
    """A RECIST target line ("Target 3: right lower lobe nodule, 9 mm -> 7 mm") sizes a lesion the findings
    describe again ("the right lower lobe target nodule (7 mm)"): the target's record gives way to a findings
    record of the same organ, side, place and size."""
    text = unicodedata.normalize("NFKC", report_text)
    spans = sentence_spans(text)

    def same(a: dict, b: dict) -> bool:
        return (a["organ"], a["laterality"], a["segments"], a["size"].get("diameters_mm")) == (
            b["organ"], b["laterality"], b["segments"], b["size"].get("diameters_mm"))

    targets = [t for t in tumors if t["size"]["status"] == "measured" and (s := _sentence_at(spans, t)) is not None
               and TARGET_LABEL.match(text[s.start:s.end])]
    kept = []
    for t in tumors:
        if t in targets and any(o is not t and o not in targets and same(o, t) for o in tumors):
            warnings.append(f"lesion {t['id']} ({t['organ']}): a target the findings describe again; dropped")
            continue
        kept.append(t)
    return kept


def _stated_totals(tumors: list[dict], report_text: str, warnings: list[str]) -> list[dict]:
    """A sentence about one organ that states its total ("Bilateral Bosniak I and II renal cysts, three in total";
    "The total is therefore eight nodules") gives the organ's count: its unsized records make way for one unsized
    rest of what the sized ones leave. A total below the sized records is left alone (they say more)."""
    text = unicodedata.normalize("NFKC", report_text)
    out = list(tumors)
    spans = sentence_spans(text)
    for k, span in enumerate(spans):
        words = negated_blanked(text[span.start:span.end])
        total = stated_total(words) if _TOTAL_HINT.search(words) else None
        if total is None or is_not_findings_header(span.header):
            continue
        organs = named_organs(words) or (set() if in_impression(report_text, span.start) else named_organs(span.header))
        if not organs and k and "\n\n" not in text[spans[k - 1].end:span.start]:
            # "... one new 5 mm nodule in the right lower lobe. The total is therefore eight nodules."
            organs = named_organs(negated_blanked(text[spans[k - 1].start:spans[k - 1].end]))
        if len(organs) != 1:
            continue
        organ = next(iter(organs)).value
        records = [t for t in out if t["organ"] == organ]
        sized = [t for t in records if t["size"]["status"] == "measured"]
        left = total - sum(t["count"] for t in sized)
        if not records or left < 0 or (sum(t["count"] for t in records) == total
                                       and all(t["count_exact"] for t in records)):
            continue
        unsized = [t for t in records if t["size"]["status"] != "measured"]
        template = unsized[0] if unsized else sized[-1]
        rest = [{**template, "count": left, "count_exact": True, "innumerable": False,
                 "size": {"status": "not_reported"},
                 "laterality": None if left == 1 and template["laterality"] == "bilateral" else template["laterality"]}
                ] if left else []
        out = [t for t in out if t not in unsized] + rest
        warnings.append(f"organ {organ}: {total} in total, as a sentence states")
    return out


_TOTAL_HINT = re.compile(r"\btotal|\bin all\b|\baltogether\b", re.IGNORECASE)


def _sizes_from_impression(tumors: list[dict], report_text: str, warnings: list[str]) -> None:
    """An impression sentence about one organ that sizes lesions the findings left unsized ("Two new nodules in
    the right lung, 8 mm in the right lower lobe and 5 mm in the right middle lobe") gives them their sizes: each
    size goes to the unsized findings record of the same side and sub-segment, or, when the sentence writes one
    size and the organ (side) holds one unsized record, to that record."""
    for words, organ in _impression_sentences(report_text):
        found = current_measurements(words)
        if not found:
            continue
        unsized = [t for t in tumors if t["organ"] == organ.value and t["size"]["status"] != "measured"
                   and t.get(SPAN_KEY) and not in_impression(report_text, t[SPAN_KEY][0])
                   and (t["count"] == 1 and t["count_exact"] or bool(_LARGEST_WORD.search(words)))]
        if not unsized:
            continue
        side = side_in_text(words) if organ in PAIRED_ORGANS else None
        probe = {"organ": organ.value, "laterality": side, "segments": [], "count": 2, "count_exact": False,
                 "size": {"status": "not_reported"}, "attenuation": "unknown", "composition": "unknown"}
        members = split_by_measurement(probe, words) if len(found) >= 2 else [
            {**probe, "segments": [x.value for x in subsegments_in_text(organ, words)],
             "size": {"status": "measured", "diameters_mm": list(found[0].diameters_mm),
                      "reported_text": found[0].text}}]
        sizes_known = {max(t["size"]["diameters_mm"]) for t in tumors
                       if t["organ"] == organ.value and t["size"].get("diameters_mm")}
        for member in members:
            if member["size"]["status"] != "measured" or max(member["size"]["diameters_mm"]) in sizes_known:
                continue  # a size the findings already give is that lesion's, not the unsized one's
            same_side = [t for t in unsized if member["laterality"] in (None, "bilateral")
                         or t["laterality"] in (None, member["laterality"])]
            placed = [t for t in same_side if member["segments"] and set(member["segments"]) & set(t["segments"])]
            target = placed[0] if len(placed) == 1 else (
                same_side[0] if len(found) == 1 and len(same_side) == 1 and not placed else None)
            if target is None:
                continue
            group = target["count"] > 1 or not target["count_exact"]
            target["size"] = {**member["size"], "refers_to": "largest_of_group" if group else "lesion"}
            unsized.remove(target)
            warnings.append(f"lesion {target['id']} ({organ.value}): sized by the impression")


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


_NO_ANSWER = LLMAnswer(organs=[], lesions=[])


def _rules_first(from_answer: list[dict], from_words: list[dict], warnings: list[str]) -> list[dict]:
    """The records of the report's words alone (`from_words`, the conversion of an empty answer) for every organ
    they find a lesion in, and the answer's records for the organs only the answer finds.

    Measured on the blind gold sets (docs/accuracy.md, issue 20, fifth round): converting an empty answer counts
    lesions better than converting the embedded model's (long-form, held-out and the eighth counts set), because a
    small model's citations group sentences wrongly or copy the prompt's example; the model still adds organs the
    rules miss, and its organ statements."""
    by_words = {t["organ"] for t in from_words}
    kept = [t for t in from_answer if t["organ"] not in by_words]
    # the answer's records read wider citations: where a word record's attenuation is unknown, the one of the
    # answer's record of that size (or of all the organ's records, when they agree) stands
    for t in from_words:
        if t.get("attenuation", "unknown") != "unknown":
            continue
        mine = [a for a in from_answer if a["organ"] == t["organ"] and a.get("attenuation", "unknown") != "unknown"]
        same_size = [a for a in mine if a["size"].get("diameters_mm") == t["size"].get("diameters_mm")]
        values = {a["attenuation"] for a in (same_size or mine)}
        if len(values) == 1 and (same_size or len(mine) == len([a for a in from_answer if a["organ"] == t["organ"]])):
            t["attenuation"] = values.pop()

    def reading(records: list[dict], organ: str) -> list:
        return sorted((t["count"], t["count_exact"], t["laterality"] or "", t["segments"],
                       t["size"].get("diameters_mm") or []) for t in records if t["organ"] == organ)

    if replaced := sorted(o for o in {t["organ"] for t in from_answer} & by_words
                          if reading(from_answer, o) != reading(from_words, o)):
        warnings.append(f"organs {replaced}: lesions as the report's words give them, not as the answer cites them")
    return kept + from_words


#: A table of lesions, one per line, cells parted by pipes ("Nodule | Lobe | Image | Current (mm) | Baseline (mm)").
_TABLE_LINE = re.compile(r"^[^|\n]*(?:\|[^|\n]*){2,}$", re.MULTILINE)
_CURRENT_COLUMN = re.compile(r"\b(?:current|today|now|this study)\b", re.IGNORECASE)
_COLUMN_UNIT = re.compile(r"\b(mm|cm)\b", re.IGNORECASE)
#: Key of a table row's record holding the row's label ("A", "3") while the conversion runs.
_ROW_LABEL = "_row_label"
#: "Nodule F is new", "nodule B in the right middle lobe": a sentence about a labelled row of the table.
_ROW_REFERENCE = re.compile(r"\b(?:nodule|lesion|observation|target)\s+(?:#\s*)?([A-Z]|\d{1,2})\b")


def _table_rows(report_text: str, first_id: int) -> list[dict]:
    """Records for the rows of a findings table of lesions: a header naming a current size column ("Current (mm)"),
    then one row per lesion. A row whose current cell holds no number ("not seen") is no current lesion; the organ
    comes from the title line above the table, or the row's words ("RUL"); the unit from the column header."""
    text = unicodedata.normalize("NFKC", report_text)
    lines = list(_TABLE_LINE.finditer(text))
    out: list[dict] = []
    k = 0
    while k < len(lines):
        header = [c.strip() for c in lines[k].group(0).split("|")]
        column = next((i for i, c in enumerate(header) if _CURRENT_COLUMN.search(c)), None)
        if column is None or in_impression(report_text, lines[k].start()):
            k += 1
            continue
        unit = (_COLUMN_UNIT.search(header[column]) or _COLUMN_UNIT.search(" ".join(header)))
        above = text[:lines[k].start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        title = above if above.endswith(":") else ""
        if is_not_findings_header(title):
            k += 1
            continue
        j = k + 1
        while j < len(lines) and text[lines[j - 1].end():lines[j].start()].strip() == "":
            row = lines[j]
            cells = [c.strip() for c in row.group(0).split("|")]
            j += 1
            if len(cells) != len(header) or not re.search(r"\d", cells[column]):
                continue
            written = cells[column] if _COLUMN_UNIT.search(cells[column]) or unit is None else (
                f"{cells[column]} {unit.group(1)}")
            found = find_measurements(written)
            words = " ".join(c for i, c in enumerate(cells) if i != column)
            organs = named_organs(f"{title} {words}") or named_organs(" ".join(header))
            if len(found) != 1 or len(organs) != 1:
                continue
            organ = next(iter(organs))
            side = side_in_text(words) if organ in PAIRED_ORGANS else None
            kind = kind_in_text(organ, f"{title} {words}")
            out.append({
                "id": first_id + len(out) + 1, "organ": organ.value,
                "laterality": side if side in ("left", "right") else None,
                "segments": [x.value for x in subsegments_in_text(organ, words)], "location_text": None,
                "lesion_type": kind.value, "type_certainty": "not_stated", "presence": "definite",
                "attenuation": attenuation_in_text(words) or "unknown",
                "composition": composition_in_text(words) or "unknown",
                "size": {"status": "measured", "diameters_mm": list(found[0].diameters_mm),
                         "reported_text": cells[column], "refers_to": "lesion"},
                "count": 1, "count_exact": True, "innumerable": False,
                "evidence": [row.group(0).strip()[:400]], SPAN_KEY: (row.start(), row.end()), _ROW_LABEL: cells[0]})
        k = j
    return out


def _without_table_repeats(tumors: list[dict], rows: list[dict], warnings: list[str]) -> list[dict]:
    """Sentences about a table's lesions ("Five nodules are present on today's study", "Nodule F is new, at 3 mm")
    repeat its rows: an unsized record counting no more than the organ's rows, and a record about a labelled row."""
    labels = {(t["organ"], t[_ROW_LABEL]) for t in rows}
    per_organ = {o: sum(1 for t in rows if t["organ"] == o) for o, _ in labels}
    kept = []
    for t in tumors:
        if t in rows:
            kept.append(t)
            continue
        words = " ".join(t["evidence"])
        named = _ROW_REFERENCE.search(words)
        if (named and (t["organ"], named.group(1)) in labels) or (
                t["organ"] in per_organ and t["size"]["status"] != "measured" and t["count"] <= per_organ[t["organ"]]
                and (t["count"] > 1 or not t["count_exact"])):
            warnings.append(f"lesion {t['id']} ({t['organ']}): repeats the table; dropped")
            continue
        kept.append(t)
    return kept


def _lesion_records(answer: LLMAnswer, report_text: str, report_key: str, warnings: list[str]) -> list[dict]:
    """The lesion records of a (quoting) answer: its lesions kept by the drop rules and read from their words, the
    lesions its organ statements and the report's sentences add, and the passes over the whole report."""
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
    rows = _table_rows(report_text, len(tumors))
    tumors += rows
    for record in _missed_lesions(report_text, report_key, tumors):
        warnings.append(f"lesion {record['id']} ({record['organ']}): made from a report sentence the answer left out")
        tumors.append(record)
    if rows:
        tumors = _without_table_repeats(tumors, rows, warnings)
    tumors = _without_back_references(tumors, warnings)
    tumors = _without_subsets(tumors, report_text, warnings)
    tumors = _absorb_list_intros(tumors, report_text, warnings)
    tumors = _examples_in_groups(tumors, report_text, warnings)
    tumors = _examples_of_innumerable(tumors, report_text, warnings)
    _sizes_from_impression(tumors, report_text, warnings)
    tumors = _count_from_impression(tumors, report_text, warnings)
    tumors = _without_target_repeats(tumors, report_text, warnings)
    tumors = _stated_totals(tumors, report_text, warnings)
    return tumors


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
    tumors = _lesion_records(answer, report_text, report_key, warnings)
    if answer.lesions or answer.organs:
        tumors = _rules_first(tumors, _lesion_records(_NO_ANSWER, report_text, report_key, []), warnings)
    for number, record in enumerate(tumors, 1):
        record["id"] = number
        record.pop(SPAN_KEY, None)
        record.pop(_ROW_LABEL, None)
    organs = organ_statuses(answer, tumors, report_text, report_key, warnings)
    payload = ExtractionPayload.model_validate({"tumors": tumors, "organs": organs},
                                               context={"report_text": report_text})
    return payload, warnings
