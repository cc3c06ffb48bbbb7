"""A citing answer (`schemas.llm.CitedAnswer`) read against the report's numbered sentences.

Each cited lesion becomes the quote of its sentences, and every field the model no longer writes (size, side,
place, attenuation, kind, doubt) is left for the conversion rules to read from those words, exactly as they
read a quoting answer. Organs called normal or resected are tied to a sentence that names them.
"""

from __future__ import annotations

import re

from extract.reading.lesion_words import kind_in_text, lesion_word_in_text, stated_count
from extract.reading.measurements import is_bare_member, is_largest_follow_up, is_size_follow_up
from extract.reading.negation import lesion_assertion, negated_blanked
from extract.reading.organ_states import clears_organ
from extract.reading.organs import named_organs
from extract.reading.quotes import in_impression
from extract.reading.sentences import HEADER, Sentence, sentence_spans
from schemas.llm import CitedAnswer, LLMAnswer, LLMLesion, LLMOrgan
from schemas.vocab import LesionType, Organ

_SIZE_WORDS = (("tiny", re.compile(r"\btiny\b|\btoo small to (?:characteri[sz]e|measure)\b", re.IGNORECASE)),
               ("massive", re.compile(r"\b(?:massive|bulky)\b", re.IGNORECASE)),
               ("large", re.compile(r"\blarge\b", re.IGNORECASE)),
               ("small", re.compile(r"\bsmall\b", re.IGNORECASE)))


def _size_bound(text: str) -> str:
    """The size word a phrase uses instead of a measurement ("too small to characterize" is tiny)."""
    for bound, pattern in _SIZE_WORDS:
        if pattern.search(text):
            return bound
    return "none"




def _sentence(report: str, spans: tuple[Sentence, ...], n: int) -> str:
    return report[spans[n - 1].start:spans[n - 1].end]


def _adds_to_group(organ: Organ, report: str, spans: tuple[Sentence, ...], n: int) -> bool:
    """Whether sentence `n` goes on about the lesions before it, in the same section: it sizes "the largest" of
    them or what was just described ("It now measures 21 mm"), or sizes a member of a list without a lesion word
    of its own ("Right upper lobe, 5 mm (series 3, image 41).")."""
    if n < 2 or spans[n - 1].header != spans[n - 2].header:
        return False
    words = _sentence(report, spans, n)
    if is_largest_follow_up(words) or is_size_follow_up(words):
        return True
    # a list member: short, a size and a place of the organ, and no word of its own saying what it is
    return is_bare_member(organ, words, lesion_word_in_text(organ, negated_blanked(words)))


def _group_start(organ: Organ, report: str, spans: tuple[Sentence, ...], n: int) -> int:
    """The sentence that opens the group a sentence adds to: back over the list members before it to the one
    that asserts a lesion of `organ`; `n` itself when there is none."""
    k = n
    while _adds_to_group(organ, report, spans, k):
        k -= 1
        if lesion_assertion(organ, _sentence(report, spans, k)) != "none":
            return k
    return n


def _cited_units(organ: Organ, numbers: list[int], spans: tuple[Sentence, ...], report: str, where: str,
                 warnings: list[str]) -> list[tuple[int, int]]:
    """Report offsets of each lesion description among the cited sentences: every cited sentence is one,
    except that a sentence going on about the group before it (its largest member, a member of a list) joins
    the group's sentence and members (cited or not), and the clauses after a semicolon join the clause before
    them (unless they name an organ other than `organ`). A lesion written twice (findings and impression)
    gives two descriptions; the conversion drops the repeat."""
    valid = sorted({n for n in numbers if 1 <= n <= len(spans)})
    if len(valid) < len(set(numbers)):
        warnings.append(f"{where}: sentence number(s) {sorted(set(numbers) - set(valid))} not in the report; ignored")
    units: list[list[int]] = []  # [first, last] sentence numbers
    for n in valid:
        first = _group_start(organ, report, spans, n)
        if units and first <= units[-1][1] + (1 if _adds_to_group(organ, report, spans, n) else 0):
            units[-1][1] = max(units[-1][1], n)  # the same group, or the next member of its list
        else:
            units.append([first, n])
    for unit in units:  # the clauses after a semicolon go on about the finding unless they name another organ,
        # and so does a sentence that sizes it or its largest ("The largest, in segment 6, measures 8 mm.")
        while (unit[1] < len(spans) and spans[unit[1]].header == spans[unit[1] - 1].header
               and named_organs(following := _sentence(report, spans, unit[1] + 1)) <= {organ}
               and (report[spans[unit[1] - 1].end:spans[unit[1] - 1].end + 1] == ";"
                    or is_largest_follow_up(following) or is_size_follow_up(following))):
            unit[1] += 1
    # Units that overlap now (a semicolon clause reaching the next cited sentence) merge in `cited_as_quoted`,
    # with every other description of the organ.
    return [(_after_header(report, spans[a - 1]), spans[b - 1].end) for a, b in units]


def _after_header(report: str, sentence: Sentence) -> int:
    """Where a sentence's words start after a section header opening it ("IMPRESSION: ...", "Liver: ..."):
    the header is read as the quote's section, not as its words."""
    text = report[sentence.start:sentence.end]
    found = HEADER.match(text)
    if found is None or not text[found.end():].strip():
        return sentence.start
    return sentence.start + len(text) - len(text[found.end():].lstrip())


def _about_organ(organ: Organ, unit: tuple[int, int], spans: tuple[Sentence, ...], report: str) -> bool:
    """Whether a cited description can be about `organ`: its words, its section header or a place only the
    organ has name it."""
    header = next((s.header for s in spans if s.start <= unit[0] < s.end), "")
    return organ in named_organs(f"{header} {negated_blanked(report[unit[0]:unit[1]])}")


def _stand_in(organ: Organ, quote: str, count: int, count_exact: bool, cited_text: str) -> LLMLesion:
    """The quoting lesion for `quote`. A number the words state ("three hypodense lesions") is the count (an
    exact count of several the words do not state is a lower bound of 2; lists sized one by one are counted
    by their sizes later); the kind may come from another cited sentence of the organ ("... consistent with
    metastases" in the impression)."""
    stated = stated_count(quote)
    if stated is not None:
        count, count_exact = stated
    elif count > 1 and count_exact:
        count, count_exact = 2, False  # a number the words do not state: "several", at least two
    return LLMLesion.model_construct(
        organ=organ.value, quote=quote, side="none", location="", size="", size_bound=_size_bound(quote),
        count=count, count_exact=count_exact, attenuation="unknown",
        kind=_kind(organ, quote, cited_text).value, certainty="definite")


def _kind(organ: Organ, quote: str, cited_text: str) -> LesionType:
    """The kind the quote's words name, else the one the organ's other cited sentences name."""
    kind = kind_in_text(organ, negated_blanked(quote))
    return kind if kind is not LesionType.LESION_UNSPECIFIED else kind_in_text(organ, negated_blanked(cited_text))


#: Wording that says an organ was taken out ("Status post right nephrectomy", "Gallbladder: Surgically absent").
_REMOVED = re.compile(r"\b(?:resect\w*|\w+ectom(?:y|ies)|removed|removal|(?:surgically\s+)?absent|excised|excision|"
                      r"status post|s/p|post-?surgical|post-?operative|explant\w*)\b", re.IGNORECASE)


def _organ_sentence(organ: Organ, spans: tuple[Sentence, ...], report: str, normal: bool) -> str | None:
    """The first sentence that names `organ` (with its header) and says what the answer states: for `normal`, a
    findings sentence that clears it (normal wording first, else one that asserts no lesion of it); else one
    that says it was removed (an answer copied from an example names organs the report never calls resected)."""
    if not normal:
        # history included: a nephrectomy is often told there
        return next((report[s.start:s.end] for s in spans if _REMOVED.search(words := f"{s.header} "
                     f"{report[s.start:s.end]}") and organ in named_organs(words)), None)
    naming = [report[s.start:s.end] for s in spans
              if not in_impression(report, s.start) and organ in named_organs(f"{s.header} {report[s.start:s.end]}")]
    for sentence in naming:
        if clears_organ(organ, sentence):
            return sentence
    return next((s for s in naming if lesion_assertion(organ, s) == "none"), None)


def cited_as_quoted(answer: CitedAnswer, report: str, warnings: list[str]) -> LLMAnswer:
    """The quoting answer a citing answer stands for in `report`: lesions quoted by their cited sentences,
    organ statements quoted by a sentence naming the organ. What cannot be tied to the report goes to
    `warnings` and is left out."""
    spans = sentence_spans(report)
    described: list[tuple[Organ, list[int], int, bool]] = []  # organ, [start, end], count, count_exact
    cited_words: dict[Organ, list[str]] = {}
    for i, lesion in enumerate(answer.lesions, start=1):
        where = f"lesion {i} ({lesion.organ})"
        organ = Organ(lesion.organ)
        units = _cited_units(organ, lesion.sentences, spans, report, where, warnings)
        if not units:
            warnings.append(f"{where}: cites no sentence of the report; dropped")
            continue
        about = [u for u in units if _about_organ(organ, u, spans, report)]
        if len(about) < len(units):
            warnings.append(f"{where}: {len(units) - len(about)} cited sentence(s) do not speak of the organ; left out")
        cited_words.setdefault(organ, []).extend(report[a:b] for a, b in about)
        # The answer's count is for the lesion it names first; a further description counts from its words.
        for k, (a, b) in enumerate(about):
            count, exact = (lesion.count, lesion.count_exact) if k == 0 else (2, False)
            same = next((d for d in described if d[0] is organ and a < d[1][1] and d[1][0] < b), None)
            if same is not None:  # entries citing members of one list describe that list once
                same[1][:] = [min(a, same[1][0]), max(b, same[1][1])]
            else:
                described.append((organ, [a, b], count, exact))
    lesions = [_stand_in(organ, report[a:b], count, exact, " ".join(cited_words[organ]))
               for organ, (a, b), count, exact in described]
    organs: list[LLMOrgan] = []
    for state, keys in (("resected", answer.resected), ("no_lesion", answer.normal)):
        for key in dict.fromkeys(keys):
            organ = Organ(key)
            sentence = _organ_sentence(organ, spans, report, normal=state == "no_lesion")
            if sentence is None:
                warnings.append(f"organ {organ.value}: no sentence of the report says it is {state}; ignored")
                continue
            organs.append(LLMOrgan.model_construct(organ=organ.value, quote=sentence, side="both", state=state))
    return LLMAnswer.model_construct(organs=organs, lesions=lesions)
