"""Controlled vocabularies: organ keys, sub-segments, lesion types and the word tables that map report
wording onto them. Everything downstream (LLM schema, validation, DuckDB tables, trainer channels) uses these.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import Enum
from typing import Any


class Organ(str, Enum):
    """The 18 organ keys of the per-organ summary, plus `other` for anything else."""

    LIVER = "liver"
    PANCREAS = "pancreas"
    KIDNEY = "kidney"
    SPLEEN = "spleen"
    ADRENAL_GLAND = "adrenal_gland"
    GALLBLADDER = "gallbladder"
    LUNG = "lung"
    BLADDER = "bladder"
    COLON = "colon"
    STOMACH = "stomach"
    ESOPHAGUS = "esophagus"
    UTERUS = "uterus"
    PROSTATE = "prostate"
    BONE = "bone"
    DUODENUM = "duodenum"
    BREAST = "breast"
    OVARY_ADNEXA = "ovary_adnexa"
    LYMPH_NODE = "lymph_node"
    OTHER = "other"


#: The summary's organ keys, in a fixed order (every extracted report gets one row per key).
ORGANS: tuple[str, ...] = tuple(o.value for o in Organ if o is not Organ.OTHER)

#: Organs where left/right is meaningful.
PAIRED_ORGANS: frozenset[Organ] = frozenset(
    {Organ.KIDNEY, Organ.ADRENAL_GLAND, Organ.LUNG, Organ.BREAST, Organ.OVARY_ADNEXA}
)


class SubSegment(str, Enum):
    """Intra-organ regions, prefixed by their organ so every value is unambiguous."""

    LIVER_SEGMENT_1 = "liver_segment_1"  # caudate lobe
    LIVER_SEGMENT_2 = "liver_segment_2"
    LIVER_SEGMENT_3 = "liver_segment_3"
    LIVER_SEGMENT_4 = "liver_segment_4"  # 4a and 4b both map here
    LIVER_SEGMENT_5 = "liver_segment_5"
    LIVER_SEGMENT_6 = "liver_segment_6"
    LIVER_SEGMENT_7 = "liver_segment_7"
    LIVER_SEGMENT_8 = "liver_segment_8"
    PANCREAS_HEAD = "pancreas_head"
    PANCREAS_UNCINATE = "pancreas_uncinate"
    PANCREAS_NECK = "pancreas_neck"
    PANCREAS_BODY = "pancreas_body"
    PANCREAS_TAIL = "pancreas_tail"
    KIDNEY_UPPER_POLE = "kidney_upper_pole"
    KIDNEY_INTERPOLAR = "kidney_interpolar"
    KIDNEY_LOWER_POLE = "kidney_lower_pole"
    KIDNEY_RENAL_SINUS = "kidney_renal_sinus"
    LUNG_UPPER_LOBE = "lung_upper_lobe"
    LUNG_MIDDLE_LOBE = "lung_middle_lobe"  # right middle lobe (lingula counts as left upper)
    LUNG_LOWER_LOBE = "lung_lower_lobe"


SUBSEGMENTS: tuple[str, ...] = tuple(s.value for s in SubSegment)

ORGAN_SUBSEGMENTS: dict[Organ, frozenset[SubSegment]] = {
    organ: frozenset(s for s in SubSegment if s.value.startswith(organ.value + "_"))
    for organ in (Organ.LIVER, Organ.PANCREAS, Organ.KIDNEY, Organ.LUNG)
}

LIVER_RIGHT_LOBE = (5, 6, 7, 8)
LIVER_LEFT_LOBE = (2, 3, 4)


class LesionType(str, Enum):
    LESION_UNSPECIFIED = "lesion_unspecified"
    CYST = "cyst"
    MALIGNANCY_UNSPECIFIED = "malignancy_unspecified"
    BENIGN_UNSPECIFIED = "benign_unspecified"
    METASTASIS = "metastasis"
    LYMPHOMA = "lymphoma"
    HEMANGIOMA = "hemangioma"
    FOCAL_NODULAR_HYPERPLASIA = "focal_nodular_hyperplasia"
    HEPATIC_ADENOMA = "hepatic_adenoma"
    HEPATOCELLULAR_CARCINOMA = "hepatocellular_carcinoma"
    CHOLANGIOCARCINOMA = "cholangiocarcinoma"
    PANCREATIC_DUCTAL_ADENOCARCINOMA = "pancreatic_ductal_adenocarcinoma"
    PANCREATIC_NEUROENDOCRINE_TUMOR = "pancreatic_neuroendocrine_tumor"
    IPMN = "ipmn"
    SEROUS_CYSTADENOMA = "serous_cystadenoma"
    MUCINOUS_CYSTIC_NEOPLASM = "mucinous_cystic_neoplasm"
    PSEUDOCYST = "pseudocyst"
    RENAL_CELL_CARCINOMA = "renal_cell_carcinoma"
    ANGIOMYOLIPOMA = "angiomyolipoma"
    ONCOCYTOMA = "oncocytoma"
    UROTHELIAL_CARCINOMA = "urothelial_carcinoma"
    ADRENAL_ADENOMA = "adrenal_adenoma"
    MYELOLIPOMA = "myelolipoma"
    PHEOCHROMOCYTOMA = "pheochromocytoma"
    GIST = "gist"
    NODULE = "nodule"
    OTHER = "other"


_T = LesionType
MALIGNANT_TYPES = frozenset({
    _T.MALIGNANCY_UNSPECIFIED, _T.METASTASIS, _T.LYMPHOMA, _T.HEPATOCELLULAR_CARCINOMA,
    _T.CHOLANGIOCARCINOMA, _T.PANCREATIC_DUCTAL_ADENOCARCINOMA, _T.RENAL_CELL_CARCINOMA,
    _T.UROTHELIAL_CARCINOMA,
})
BENIGN_TYPES = frozenset({
    _T.BENIGN_UNSPECIFIED, _T.CYST, _T.HEMANGIOMA, _T.FOCAL_NODULAR_HYPERPLASIA, _T.SEROUS_CYSTADENOMA,
    _T.PSEUDOCYST, _T.ANGIOMYOLIPOMA, _T.ADRENAL_ADENOMA, _T.MYELOLIPOMA,
})
#: Types that belong to one organ only; a record elsewhere is a contradiction.
TYPE_ORGANS: dict[LesionType, frozenset[Organ]] = {
    _T.HEPATOCELLULAR_CARCINOMA: frozenset({Organ.LIVER}),
    _T.FOCAL_NODULAR_HYPERPLASIA: frozenset({Organ.LIVER}),
    _T.HEPATIC_ADENOMA: frozenset({Organ.LIVER}),
    _T.CHOLANGIOCARCINOMA: frozenset({Organ.LIVER, Organ.GALLBLADDER, Organ.OTHER}),
    _T.PANCREATIC_DUCTAL_ADENOCARCINOMA: frozenset({Organ.PANCREAS}),
    _T.PANCREATIC_NEUROENDOCRINE_TUMOR: frozenset({Organ.PANCREAS}),
    _T.IPMN: frozenset({Organ.PANCREAS}),
    _T.SEROUS_CYSTADENOMA: frozenset({Organ.PANCREAS}),
    _T.PSEUDOCYST: frozenset({Organ.PANCREAS}),
    _T.RENAL_CELL_CARCINOMA: frozenset({Organ.KIDNEY}),
    _T.ONCOCYTOMA: frozenset({Organ.KIDNEY}),
    _T.ANGIOMYOLIPOMA: frozenset({Organ.KIDNEY, Organ.LIVER}),
    _T.ADRENAL_ADENOMA: frozenset({Organ.ADRENAL_GLAND}),
    _T.MYELOLIPOMA: frozenset({Organ.ADRENAL_GLAND}),
    _T.PHEOCHROMOCYTOMA: frozenset({Organ.ADRENAL_GLAND}),
}

#: Hard caps (mm) on one diameter: above these a number is a unit slip, an HU value or a series number.
ORGAN_MAX_DIAMETER_MM: dict[Organ, float] = {
    Organ.LIVER: 300.0, Organ.KIDNEY: 250.0, Organ.PANCREAS: 200.0, Organ.ADRENAL_GLAND: 200.0,
    Organ.SPLEEN: 250.0, Organ.GALLBLADDER: 150.0, Organ.LYMPH_NODE: 150.0, Organ.LUNG: 200.0,
}
DEFAULT_MAX_DIAMETER_MM = 350.0


# --- word tables (lower-case, matched on word boundaries) -------------------------------------------

_ROMAN_NUMERALS = ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii")

ORGAN_WORDS: dict[Organ, tuple[str, ...]] = {
    Organ.LIVER: ("liver", "hepatic", "hepato"),
    Organ.PANCREAS: ("pancreas", "pancreatic", "uncinate"),
    Organ.KIDNEY: ("kidney", "kidneys", "renal"),
    Organ.SPLEEN: ("spleen", "splenic"),
    Organ.ADRENAL_GLAND: ("adrenal", "adrenals", "adrenal gland", "adrenal glands"),
    Organ.GALLBLADDER: ("gallbladder", "gall bladder"),
    Organ.LUNG: ("lung", "lungs", "pulmonary", "lung bases"),
    Organ.BLADDER: ("bladder", "urinary bladder"),
    Organ.COLON: ("colon", "colonic", "rectum", "rectal", "sigmoid", "cecum", "cecal"),
    Organ.STOMACH: ("stomach", "gastric"),
    Organ.ESOPHAGUS: ("esophagus", "esophageal", "gastroesophageal junction"),
    Organ.UTERUS: ("uterus", "uterine", "endometrial", "myometrial"),
    Organ.PROSTATE: ("prostate", "prostatic"),
    Organ.BONE: ("bone", "bones", "osseous", "skeletal", "vertebral", "vertebra", "spine"),
    Organ.DUODENUM: ("duodenum", "duodenal"),
    Organ.BREAST: ("breast", "breasts"),
    Organ.OVARY_ADNEXA: ("ovary", "ovaries", "ovarian", "adnexa", "adnexal"),
    Organ.LYMPH_NODE: ("lymph node", "lymph nodes", "node", "nodes", "lymphadenopathy", "adenopathy"),
}

#: Location words that name an organ without its name ("segment 6" is the liver, "lingula" the lung).
ORGAN_IMPLIED_WORDS: dict[Organ, tuple[str, ...]] = {
    Organ.LIVER: tuple(f"segment {n}" for n in (*"12345678", "4a", "4b", *_ROMAN_NUMERALS)) + (
        "segments", "caudate", "hepatic dome", "couinaud", "li-rads", "lr-5", "lr-4"),
    Organ.PANCREAS: ("uncinate process",),
    Organ.KIDNEY: ("upper pole", "lower pole", "interpolar", "bosniak", "nephrectomy"),
    Organ.LUNG: ("upper lobe", "lower lobe", "middle lobe", "lingula", "lingular", "lobectomy", "ground-glass",
                 "ground glass"),
    Organ.GALLBLADDER: ("cholecystectomy",),
    Organ.ADRENAL_GLAND: ("adrenalectomy",),
    Organ.SPLEEN: ("splenectomy",),
}

#: Nouns that name a focal lesion in any organ.
LESION_WORDS: tuple[str, ...] = (
    "lesion", "lesions", "mass", "masses", "nodule", "nodules", "cyst", "cysts", "cystic", "tumor",
    "tumors", "tumour", "tumours", "metastasis", "metastases", "metastatic", "neoplasm", "neoplasms", "carcinoma",
    "carcinomas", "adenocarcinoma", "cancer", "malignancy", "sarcoma", "lymphoma", "hypodensity", "hypodensities",
    "hyperdensity", "hyperdensities", "focus", "foci", "hemangioma", "hemangiomas", "hamartoma", "hamartomas",
    "adenoma", "adenomas", "angiomyolipoma", "myelolipoma", "oncocytoma", "pheochromocytoma", "cystadenoma",
    "ipmn", "ipmns", "implant", "implants", "deposit", "deposits", "pseudocyst", "fibroid", "fibroids", "polyp",
    "polyps", "observation", "soft tissue", "ground-glass opacity", "ground glass opacity", "primary",
    "recurrence", "carcinomatosis",
)
#: Extra lesion words for some organs only: wall thickening of hollow organs, enlarged or suspicious nodes.
ORGAN_LESION_WORDS: dict[Organ, tuple[str, ...]] = {
    **{o: ("thickening", "wall thickening") for o in (Organ.COLON, Organ.STOMACH, Organ.ESOPHAGUS, Organ.BLADDER,
                                                      Organ.DUODENUM, Organ.GALLBLADDER)},
    Organ.LYMPH_NODE: ("enlarged", "lymphadenopathy", "adenopathy", "necrotic", "bulky", "pathologic",
                       "pathological", "suspicious", "metastatic"),
}
#: Cues that negate what follows them up to the end of the clause ("no focal lesion", "without a mass").
NEGATION_CUES: tuple[str, ...] = ("no", "not", "without", "negative for", "free of", "absence of", "absent",
                                  "no evidence of", "nor", "neither")
#: Cues after which a lesion word is history, not a current finding ("history of", "known colon cancer").
NOT_CURRENT_CUES: tuple[str, ...] = ("history of", "resolution of", "evaluate for", "evaluation for", "rule out",
                                     "to exclude", "known", "from")
#: Section headers whose sentences are history or technique, never current findings.
NOT_FINDINGS_HEADERS: tuple[str, ...] = ("history", "clinical history", "indication", "indications", "reason",
                                         "exam", "examination", "technique", "comparison", "procedure", "clinical")
#: Cues that negate the clause they end ("... has resolved", "... is no longer seen").
POST_NEGATION_CUES: tuple[str, ...] = (
    "resolved", "has resolved", "have resolved", "no longer seen", "no longer visualized", "no longer identified",
    "no longer evident", "no longer present", "not seen", "not identified", "not visualized", "not present",
    "has been resected", "have been resected", "removed", "is absent", "are absent", "screening",
)
#: Wording that doubts whether a lesion exists at all (certainty `possible`, organ `equivocal`).
PRESENCE_HEDGES: tuple[str, ...] = (
    "cannot be excluded", "can not be excluded", "cannot be ruled out", "not excluded", "cannot exclude",
    "can't exclude", "not be excluded", "questionable", "equivocal", "possible", "possibly", "may represent",
    "could represent", "might represent", "versus artifact", "vs artifact", "vs. artifact", "pseudolesion",
    "perfusional", "perfusion anomaly", "perfusion artifact", "not well seen", "suggestion of",
)
#: Wording that makes an entry stand for more than one lesion.
GROUP_WORDS: tuple[str, ...] = (
    "multiple", "several", "numerous", "innumerable", "countless", "scattered", "few", "various", "bilateral",
    "bilaterally", "both", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "too numerous",
    "lesions", "masses", "nodules", "cysts", "metastases", "hypodensities", "hyperdensities", "foci",
    "hemangiomas", "hamartomas", "adenomas", "implants", "deposits", "fibroids", "polyps", "ipmns", "tumors",
    "lymphadenopathy", "nodes",
)
#: Composition wording (`schemas.records.Composition`) when no attenuation word is given.
COMPOSITION_WORDS: dict[str, tuple[str, ...]] = {
    "fat_containing": ("macroscopic fat", "fat-containing", "fat containing", "containing fat", "contains fat",
                       "intralesional fat"),
    "calcified": ("calcified", "densely calcified"),
    "cystic": ("cyst", "cysts", "cystic"),
}

ATTENUATION_WORDS: dict[str, tuple[str, ...]] = {
    "heterogeneous": ("heterogeneous", "heterogeneously"),
    "hypo": ("hypodense", "hypoattenuating", "hypoattenuation", "low density", "low-density",
             "hypoenhancing", "hypoenhancement", "hypodensity", "hypodensities", "low attenuation",
             "hypovascular"),
    "hyper": ("hyperdense", "hyperattenuating", "hyperenhancing", "hyperenhancement", "arterially enhancing",
              "enhancing", "hypervascular", "high density", "too dense to be a simple cyst",
              "too dense to represent a simple cyst", "too dense for a simple cyst"),
    "iso": ("isodense", "isoattenuating", "isoenhancing"),
}

_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7, "viii": 8}


def _trie(words: dict[str, str]) -> str:
    """Regex matching any of `words` (keys; lower-case ASCII), written as a trie, each word followed by its value
    (a regex: a word-end check, a named group, ...).

    At every node the longer continuations come before the word that ends there, and no two branches of a node
    can match the same character (distinct lower-case letters under IGNORECASE), so the trie finds at each
    position the same word as the alternation of the words sorted longest first, while trying a few characters
    instead of every word.
    """
    root: dict[str, dict] = {}
    for word, tail in words.items():
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = tail

    def emit(node: dict[str, Any]) -> str:
        branches = [re.escape(ch) + emit(child) for ch, child in node.items() if ch]
        if "" in node:
            branches.append(node[""])
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    return emit(root)


def _trie_safe(words: Iterable[str]) -> bool:
    return all(w.isascii() and w == w.lower() for w in words)


def words_alternation(words: Iterable[str]) -> str:
    """`(?:w1|w2|...)\\b`: any of `words` followed by a word boundary, longest first (as a trie when all words
    are lower-case ASCII, which is the same match, faster). Compile with IGNORECASE after a leading `\\b`."""
    words = list(words)
    if _trie_safe(words):
        return _trie({w: r"\b" for w in words})
    return "(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b"


def _words_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    """Any of `words` as a whole word, case-insensitive (`\\b(?:longest|...|short)\\b`)."""
    return re.compile(r"\b" + words_alternation(words), re.IGNORECASE)


_ORGAN_PATTERNS = {organ: _words_pattern(words) for organ, words in ORGAN_WORDS.items()}
_ATTENUATION_PATTERNS = {value: _words_pattern(words) for value, words in ATTENUATION_WORDS.items()}
_IMPLIED_PATTERNS = {organ: _words_pattern(words) for organ, words in ORGAN_IMPLIED_WORDS.items()}
_LESION_PATTERN = _words_pattern(LESION_WORDS)
_ORGAN_LESION_PATTERNS = {organ: _words_pattern(LESION_WORDS + words) for organ, words in ORGAN_LESION_WORDS.items()}
_COMPOSITION_PATTERNS = {value: _words_pattern(words) for value, words in COMPOSITION_WORDS.items()}
_GROUP_PATTERN = _words_pattern(GROUP_WORDS)


def _organ_scan(words: dict[Organ, tuple[str, ...]]) -> tuple[re.Pattern[str], dict[str, Organ], frozenset[Organ]]:
    """One pattern that finds, in a single pass, every organ with a word of `words` in a text.

    A zero-width lookahead at each word start holds all words as one trie (so a position costs a few character
    tests, not one test per word), each word ending in its own empty named group: every start position is
    tried, so overlapping words ("gall bladder" and "bladder") are all found, exactly as one `_words_pattern`
    search per organ would. Returns the pattern, the organ of each group name and the organs that need their
    own search: those with a word that another organ also has, or that is a whole-word prefix of another organ's
    word ("lymph" / "lymph node"), which the other could hide at a shared start (none in the current tables).
    """
    group_organ: dict[str, Organ] = {}
    tails: dict[str, str] = {}
    for organ, alternatives in words.items():
        for word in alternatives:
            if word.lower() not in tails:
                name = f"g{len(group_organ)}"
                group_organ[name] = organ
                tails[word.lower()] = f"(?P<{name}>)\\b"
    if not _trie_safe(tails):
        raise ValueError("organ words must be ASCII")

    hidden = frozenset(
        a_organ for a_organ, a_words in words.items() for b_organ, b_words in words.items() if a_organ is not b_organ
        for a in a_words for b in b_words
        if b.lower().startswith(a.lower()) and (len(b) == len(a) or not re.match(r"\w", b[len(a)])))
    return re.compile(r"\b(?=" + _trie(tails) + ")", re.IGNORECASE), group_organ, hidden


_ORGAN_OR_IMPLIED_WORDS = {organ: words + ORGAN_IMPLIED_WORDS.get(organ, ()) for organ, words in ORGAN_WORDS.items()}
_NAMED_SCAN, _NAMED_GROUPS, _NAMED_HIDDEN = _organ_scan(_ORGAN_OR_IMPLIED_WORDS)
_NAME_SCAN, _NAME_GROUPS, _NAME_HIDDEN = _organ_scan(ORGAN_WORDS)
_NAMED_SEPARATE = {organ: _words_pattern(_ORGAN_OR_IMPLIED_WORDS[organ]) for organ in _NAMED_HIDDEN}
_NAME_SEPARATE = {organ: _ORGAN_PATTERNS[organ] for organ in _NAME_HIDDEN}


# The same scans without IGNORECASE, for lower-cased ASCII text (the usual report): a case-sensitive pattern
# rejects a branch on its first character, about twice as fast, and for ASCII text matching lower-cased text
# case-sensitively is exactly matching the text case-insensitively.
_CASED_SCANS = {scan: re.compile(scan.pattern) for scan in (_NAMED_SCAN, _NAME_SCAN)}


def _cased(scan: re.Pattern[str]) -> re.Pattern[str]:
    cased = _CASED_SCANS.get(scan)
    if cased is None:
        cased = _CASED_SCANS[scan] = re.compile(scan.pattern)
    return cased


def _scan_organs(text: str, scan: re.Pattern[str], groups: dict[str, Organ],
                 separate: dict[Organ, re.Pattern[str]]) -> set[Organ]:
    if text.isascii():
        found = {groups[m.lastgroup] for m in _cased(scan).finditer(text.lower())}
    else:
        found = {groups[m.lastgroup] for m in scan.finditer(text)}
    found.update(organ for organ, pattern in separate.items() if pattern.search(text))
    if not found:
        return set()
    # Built in vocabulary order, as the per-organ loop it replaces built it (set iteration order included).
    return {organ for organ in _ORGAN_PATTERNS if organ in found}


def organ_named_in_text(organ: Organ, text: str) -> bool:
    """Whether `text` names `organ`, by name ("renal") or by a location only it has ("lower pole")."""
    implied = _IMPLIED_PATTERNS.get(organ)
    return bool(_ORGAN_PATTERNS[organ].search(text) or (implied is not None and implied.search(text)))


def named_organs(text: str) -> set[Organ]:
    """Every organ `text` names, by name or implied location."""
    return _scan_organs(text, _NAMED_SCAN, _NAMED_GROUPS, _NAMED_SEPARATE)


def organs_named_by_word(text: str) -> set[Organ]:
    """Every organ `text` names by one of its `ORGAN_WORDS` (implied locations do not count)."""
    return _scan_organs(text, _NAME_SCAN, _NAME_GROUPS, _NAME_SEPARATE)


def lesion_word_in_text(organ: Organ, text: str) -> bool:
    """Whether `text` holds a word naming a focal lesion of `organ` ("mass", "cyst"; "thickening" for hollow
    organs; "enlarged" for lymph nodes)."""
    return bool(_ORGAN_LESION_PATTERNS.get(organ, _LESION_PATTERN).search(text))


def group_word_in_text(text: str) -> bool:
    """Whether `text` speaks of more than one lesion ("multiple", "two", plural lesion nouns)."""
    return bool(_GROUP_PATTERN.search(text))


def composition_in_text(text: str) -> str | None:
    """`fat_containing`, `calcified` or `cystic` as a phrase states it, else None (fat and calcium win over
    "cystic", which they may qualify)."""
    for value in ("fat_containing", "calcified", "cystic"):
        if _COMPOSITION_PATTERNS[value].search(text):
            return value
    return None


def organs_in_text(text: str) -> list[Organ]:
    """Organs named in `text`, in order of first mention."""
    hits = []
    for organ, pattern in _ORGAN_PATTERNS.items():
        m = pattern.search(text)
        if m:
            hits.append((m.start(), organ))
    return [organ for _, organ in sorted(hits, key=lambda h: h[0])]


_NOT_ENHANCING = re.compile(r"\b(?:non|not|without)[\s-]*(?:\w+\s+)?enhanc\w*", re.IGNORECASE)


def attenuation_in_text(text: str) -> str | None:
    """The attenuation a phrase states (`hypo`, `hyper`, `iso`, `heterogeneous`), or None.

    Heterogeneous wins over enhancement words ("heterogeneously enhancing" is heterogeneous); hypo-/iso- words
    win over the bare word "enhancing" that they contain.
    """
    text = _NOT_ENHANCING.sub(" ", text)  # "non-enhancing" says nothing about hyperenhancement
    for value in ("heterogeneous", "hypo", "iso", "hyper"):
        if _ATTENUATION_PATTERNS[value].search(text):
            return value
    return None


_SEGMENT = re.compile(
    r"\bsegments?\s+((?:(?:[1-8]|viii|vii|vi|iv|v|iii|ii|i)[ab]?\b(?:\s*(?:,|/|-|and|or|to|&)\s*)?)+)",
    re.IGNORECASE,
)
_SEGMENT_TOKEN = re.compile(r"viii|vii|vi|iv|v|iii|ii|i|[1-8]", re.IGNORECASE)


def liver_segments_in_text(text: str) -> list[int]:
    """Couinaud segments named in a location phrase: 'segment 4A', 'segments VI and VII', 'segment 5/8',
    'segments 2-3', 'caudate lobe', 'right lobe' (→ 5-8), 'left lobe' (→ 2-4), 'hepatic dome' (→ 7, 8)."""
    t = text.lower()
    found: set[int] = set()
    for m in _SEGMENT.finditer(t):
        tokens = [_ROMAN.get(tok, None) or int(tok) for tok in _SEGMENT_TOKEN.findall(m.group(1).replace("a", " ").replace("b", " "))]
        span = m.group(1)
        if re.search(r"\d\s*(?:-|to)\s*\d", span) and len(tokens) == 2 and tokens[0] < tokens[1]:
            tokens = list(range(tokens[0], tokens[1] + 1))
        found.update(tokens)
    if "caudate" in t:
        found.add(1)
    if not found:
        if re.search(r"\bright (?:hepatic )?lobe\b", t):
            found.update(LIVER_RIGHT_LOBE)
        if re.search(r"\bleft (?:hepatic )?lobe\b", t):
            found.update(LIVER_LEFT_LOBE)
        if "left lateral" in t:
            found.update((2, 3))
        if "right posterior" in t:
            found.update((6, 7))
        if "right anterior" in t:
            found.update((5, 8))
        if "dome" in t:
            found.update((7, 8))
    return sorted(found)


_PANCREAS_PARTS = (
    ("uncinate", SubSegment.PANCREAS_UNCINATE),
    ("head", SubSegment.PANCREAS_HEAD),
    ("neck", SubSegment.PANCREAS_NECK),
    ("body", SubSegment.PANCREAS_BODY),
    ("tail", SubSegment.PANCREAS_TAIL),
)
_KIDNEY_PARTS = (
    (r"upper pole|superior pole", SubSegment.KIDNEY_UPPER_POLE),
    (r"interpolar|mid(?:dle)? ?(?:pole|portion|kidney)", SubSegment.KIDNEY_INTERPOLAR),
    (r"lower pole|inferior pole", SubSegment.KIDNEY_LOWER_POLE),
    (r"renal sinus|renal pelvis|hilum|hilar", SubSegment.KIDNEY_RENAL_SINUS),
)
_LUNG_PARTS = (
    (r"upper lobe|lingula", SubSegment.LUNG_UPPER_LOBE),
    (r"middle lobe", SubSegment.LUNG_MIDDLE_LOBE),
    (r"lower lobe|lung base", SubSegment.LUNG_LOWER_LOBE),
)


_SUBSEGMENT_ORDER = {s: i for i, s in enumerate(SubSegment)}


def subsegments_in_text(organ: Organ, text: str) -> list[SubSegment]:
    """Sub-segments of `organ` named in a location phrase, in vocabulary order (a union: the lesion lies
    somewhere inside them). Empty when the phrase names none."""
    t = text.lower()
    found: set[SubSegment] = set()
    if organ is Organ.LIVER:
        found = {SubSegment(f"liver_segment_{n}") for n in liver_segments_in_text(t)}
    elif organ is Organ.PANCREAS:
        found = {seg for word, seg in _PANCREAS_PARTS if re.search(rf"\b{word}\b", t)}
        if "head" in t and "uncinate" in t and re.search(r"head.{0,12}uncinate|uncinate.{0,12}head", t):
            found.add(SubSegment.PANCREAS_HEAD)
    elif organ is Organ.KIDNEY:
        found = {seg for pattern, seg in _KIDNEY_PARTS if re.search(pattern, t)}
    elif organ is Organ.LUNG:
        found = {seg for pattern, seg in _LUNG_PARTS if re.search(pattern, t)}
    return sorted(found, key=_SUBSEGMENT_ORDER.__getitem__)


def side_in_text(text: str) -> str | None:
    """`left`, `right` or `bilateral` as a phrase states it, else None. The lingula is part of the left lung."""
    t = text.lower()
    if re.search(r"\bbilateral(?:ly)?\b|\bboth\b", t):
        return "bilateral"
    left = re.search(r"\bleft\b|\blingula(?:r)?\b", t) is not None
    right = re.search(r"\bright\b", t) is not None
    if left and right:
        return "bilateral"
    return "left" if left else "right" if right else None


def summary_location(organ: Organ, segments: list[SubSegment], laterality: str | None) -> str | None:
    """The `largest_location` token of the organ summary for one lesion.

    Liver: `segment_N` when exactly one segment, `right_lobe`/`left_lobe` when the segments lie within one lobe;
    pancreas: the part (`head`, `uncinate`, `neck`, `body`, `tail`) when exactly one; paired organs: the side,
    lung may add the lobe (`right_lower_lobe`). Otherwise None.
    """
    values = [s.value for s in segments]
    if organ is Organ.LIVER and values:
        numbers = sorted(int(v.rsplit("_", 1)[1]) for v in values)
        if len(numbers) == 1:
            return f"segment_{numbers[0]}"
        if set(numbers) <= set(LIVER_RIGHT_LOBE):
            return "right_lobe"
        if set(numbers) <= set(LIVER_LEFT_LOBE):
            return "left_lobe"
        return None
    if organ is Organ.PANCREAS and len(values) == 1:
        return values[0].removeprefix("pancreas_")
    if organ in PAIRED_ORGANS and laterality in ("left", "right"):
        if organ is Organ.LUNG and len(values) == 1:
            return f"{laterality}_{values[0].removeprefix('lung_')}"
        return laterality
    return None
