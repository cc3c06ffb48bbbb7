"""A citing answer (`schemas.llm.CitedAnswer`) read against the report's numbered sentences.

Each cited lesion becomes the quote of its sentences, and every field the model no longer writes (size, side,
place, attenuation, kind, doubt) is left for the conversion rules to read from those words, exactly as they
read a quoting answer. Organs called normal or resected are tied to a sentence that names them.
"""

from __future__ import annotations

import re

from extract.reading.lesion_words import count_in_text, kind_in_text, lesion_word_in_text
from extract.reading.measurements import current_measurements, is_largest_follow_up
from extract.reading.negation import lesion_assertion, negated_blanked
from extract.reading.organ_states import clears_organ
from extract.reading.organs import named_organs, organs_named_by_word
from extract.reading.quotes import in_impression
from extract.reading.sentences import HEADER, Sentence, sentence_spans
from schemas.llm import CitedAnswer, LLMAnswer, LLMLesion, LLMOrgan
from schemas.vocab import Organ

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


def _cited_units(organ: Organ, numbers: list[int], spans: tuple[Sentence, ...], report: str, where: str,
                 warnings: list[str]) -> list[tuple[int, int]]:
    """Report offsets of each lesion description among the cited sentences: every cited sentence is one,
    except that the clauses after a semicolon join the clause before them (unless they name an organ other
    than `organ`), and a sentence sizing "the largest" of the group before it joins that sentence (cited or
    not). A lesion written twice (findings and impression) gives two descriptions; the conversion drops the
    repeat."""
    valid = sorted({n for n in numbers if 1 <= n <= len(spans)})
    if len(valid) < len(set(numbers)):
        warnings.append(f"{where}: sentence number(s) {sorted(set(numbers) - set(valid))} not in the report; ignored")
    units: list[list[int]] = []
    for n in valid:
        follows = n > 1 and spans[n - 1].header == spans[n - 2].header and is_largest_follow_up(
            report[spans[n - 1].start:spans[n - 1].end])
        if follows and units and units[-1][-1] == n - 1:
            units[-1].append(n)
        else:
            units.append([n - 1, n] if follows else [n])
    for unit in units:  # the clauses after a semicolon go on about the finding unless they name another organ
        while (unit[-1] < len(spans) and report[spans[unit[-1] - 1].end:spans[unit[-1] - 1].end + 1] == ";"
               and spans[unit[-1]].header == spans[unit[-1] - 1].header
               and named_organs(report[spans[unit[-1]].start:spans[unit[-1]].end]) <= {organ}):
            unit.append(unit[-1] + 1)
    units = [u for i, u in enumerate(units) if not any(u[0] in earlier for earlier in units[:i])]
    return [(_after_header(report, spans[u[0] - 1]), spans[u[-1] - 1].end) for u in units]


def _after_header(report: str, sentence: Sentence) -> int:
    """Where a sentence's words start after a section header opening it ("IMPRESSION: ...", "Liver: ..."):
    the header is read as the quote's section, not as its words."""
    text = report[sentence.start:sentence.end]
    found = HEADER.match(text)
    if found is None or not text[found.end():].strip():
        return sentence.start
    return sentence.start + len(text) - len(text[found.end():].lstrip())


def _about_organ(organ: Organ, unit: tuple[int, int], spans: tuple[Sentence, ...], report: str, where: str,
                 warnings: list[str]) -> tuple[int, int] | None:
    """A cited description as the words about `organ`: itself when its words name the organ; joined to the
    sentence before it when its words name no organ but size or name a lesion, and that sentence, in the same
    section, asserts a lesion of the organ ("Liver: Multiple enhancing metastases. Index lesions measure 3.0 cm in
    segment 7"); itself when only its header or a place names the organ; else None."""
    k = next(i for i, s in enumerate(spans) if s.start <= unit[0] < s.end or unit[0] <= s.start)
    words = negated_blanked(report[unit[0]:unit[1]])
    if organ in organs_named_by_word(words):
        return unit
    named = named_organs(f"{spans[k].header} {words}")  # by its header, or by a place only one organ has
    continues = bool(current_measurements(words)) or lesion_word_in_text(organ, words)
    if named <= {organ} and continues and k > 0 and spans[k - 1].header == spans[k].header:
        before, before_words = spans[k - 1], report[spans[k - 1].start:spans[k - 1].end]
        if (organ in named_organs(f"{before.header} {negated_blanked(before_words)}")
                and lesion_assertion(organ, before_words) != "none"):
            return _after_header(report, before), unit[1]
    if organ in named:
        return unit
    warnings.append(f"{where}: a cited sentence does not speak of the organ; left out")
    return None


def _stand_in(organ: Organ, quote: str, count: int, count_exact: bool, cited_text: str) -> LLMLesion:
    """The quoting lesion for `quote`. A number the words state ("three hypodense lesions") is the count; the
    kind may come from any cited sentence ("... consistent with metastases" in the impression)."""
    stated = count_in_text(quote)
    if stated is not None:
        count, count_exact = stated, True
    return LLMLesion.model_construct(
        organ=organ.value, quote=quote, side="none", location="", size="", size_bound=_size_bound(quote),
        count=count, count_exact=count_exact, attenuation="unknown",
        kind=kind_in_text(organ, negated_blanked(cited_text)).value, certainty="definite")


def _organ_sentence(organ: Organ, spans: tuple[Sentence, ...], report: str, normal: bool) -> str | None:
    """The first findings sentence that names `organ` (with its header) and, for `normal`, clears it: normal
    wording first, else one that asserts no lesion of it."""
    naming = [report[s.start:s.end] for s in spans
              if not in_impression(report, s.start) and organ in named_organs(f"{s.header} {report[s.start:s.end]}")]
    if not normal:
        return naming[0] if naming else None
    for sentence in naming:
        if clears_organ(organ, sentence):
            return sentence
    return next((s for s in naming if lesion_assertion(organ, s) == "none"), None)


def cited_as_quoted(answer: CitedAnswer, report: str, warnings: list[str]) -> LLMAnswer:
    """The quoting answer a citing answer stands for in `report`: lesions quoted by their cited sentences,
    organ statements quoted by a sentence naming the organ. What cannot be tied to the report goes to
    `warnings` and is left out."""
    spans = sentence_spans(report)
    lesions: list[LLMLesion] = []
    for i, lesion in enumerate(answer.lesions, start=1):
        where = f"lesion {i} ({lesion.organ})"
        organ = Organ(lesion.organ)
        units = _cited_units(organ, lesion.sentences, spans, report, where, warnings)
        if not units:
            warnings.append(f"{where}: cites no sentence of the report; dropped")
            continue
        units = [u for u in (_about_organ(organ, u, spans, report, where, warnings) for u in units) if u]
        if not units:
            continue
        cited = " ".join(report[a:b] for a, b in units)
        # The answer's count is for the lesion it names first; a further description counts from its words.
        for k, (a, b) in enumerate(units):
            count, exact = (lesion.count, lesion.count_exact) if k == 0 else (2, False)
            lesions.append(_stand_in(organ, report[a:b], count, exact, cited))
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
