"""Controlled vocabularies: organ keys, sub-segments, lesion types and the word tables (data) that
`extract.reading` matches report wording against. Everything downstream (LLM schema, validation, DuckDB
tables, trainer channels) uses these.
"""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from pathlib import Path

from schemas.organ_tables import OrganEntry, load_organ_tables, vocabulary_files

_FILES = vocabulary_files()
ORGAN_TABLE: dict[str, OrganEntry] = load_organ_tables(_FILES)
#: The extra organ tables in force (RSUPER_VOCABULARY); empty for the shipped vocabulary.
EXTENSION_FILES: tuple[Path, ...] = tuple(_FILES[1:])
#: sha256 of the resolved organ table; part of a run's key only when an extension is in force
#: (`extract.engine.run_config`), so the shipped vocabulary's keys stay as they were.
VOCABULARY_SHA256 = hashlib.sha256(
    json.dumps({k: v.model_dump(mode="json") for k, v in ORGAN_TABLE.items()}, sort_keys=True).encode()
).hexdigest()

#: The organ keys of the organ table, in its order, plus `other` for anything else.
Organ = Enum("Organ", [(key.upper(), key) for key in ORGAN_TABLE] + [("OTHER", "other")], type=str,
             module=__name__, qualname="Organ")
Organ.__doc__ = "The organ keys of schemas/organs.yaml (and RSUPER_VOCABULARY), plus `other` for anything else."


#: The summary's organ keys, in a fixed order (every extracted report gets one row per key).
ORGANS: tuple[str, ...] = tuple(ORGAN_TABLE)

#: Organs where left/right is meaningful.
PAIRED_ORGANS: frozenset[Organ] = frozenset(Organ(k) for k, e in ORGAN_TABLE.items() if e.paired)


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
ORGAN_MAX_DIAMETER_MM: dict[Organ, float] = {Organ(k): e.max_diameter_mm for k, e in ORGAN_TABLE.items()}


# --- word tables (lower-case, matched on word boundaries) -------------------------------------------

ORGAN_WORDS: dict[Organ, tuple[str, ...]] = {Organ(k): e.words for k, e in ORGAN_TABLE.items()}

#: Location words that name an organ without its name ("segment 6" is the liver, "lingula" the lung).
ORGAN_IMPLIED_WORDS: dict[Organ, tuple[str, ...]] = {Organ(k): e.implied_words for k, e in ORGAN_TABLE.items()
                                                      if e.implied_words}

#: Nouns that name a focal lesion in any organ.
LESION_WORDS: tuple[str, ...] = (
    "lesion", "lesions", "mass", "masses", "nodule", "nodules", "cyst", "cysts", "cystic", "tumor",
    "tumors", "tumour", "tumours", "metastasis", "metastases", "metastatic", "neoplasm", "neoplasms", "carcinoma",
    "carcinomas", "adenocarcinoma", "cancer", "malignancy", "sarcoma", "lymphoma", "hypodensity", "hypodensities",
    "hyperdensity", "hyperdensities", "focus", "foci", "hemangioma", "hemangiomas", "hamartoma", "hamartomas",
    "adenoma", "adenomas", "angiomyolipoma", "myelolipoma", "oncocytoma", "pheochromocytoma", "cystadenoma",
    "ipmn", "ipmns", "implant", "implants", "deposit", "deposits", "pseudocyst", "fibroid", "fibroids", "polyp",
    "polyps", "observation", "observations", "soft tissue", "ground-glass opacity", "ground glass opacity", "primary",
    "recurrence", "carcinomatosis",
)
#: Extra lesion words for some organs only: wall thickening of hollow organs, enlarged or suspicious nodes.
ORGAN_LESION_WORDS: dict[Organ, tuple[str, ...]] = {Organ(k): e.lesion_words for k, e in ORGAN_TABLE.items()
                                                     if e.lesion_words}
#: Cues that negate what follows them up to the end of the clause ("no focal lesion", "without a mass").
NEGATION_CUES: tuple[str, ...] = ("no", "not", "without", "negative for", "free of", "absence of", "absent",
                                  "no evidence of", "nor", "neither", "none")
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
    "has been replaced by", "have been replaced by", "no longer visible", "no longer demonstrated",
    "no longer apparent", "no longer appreciated", "has disappeared", "have disappeared", "has cleared",
    "have cleared", "cleared completely", "described at baseline", "present at baseline", "seen at baseline",
    "at baseline",
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
    "observations", "lymphadenopathy", "nodes",
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
             "hypoenhancing", "hypoenhancement", "hypodensity", "hypodensities", "low attenuation", "low-attenuation", "low attenuating",
             "low-attenuating",
             "hypovascular"),
    "hyper": ("hyperdense", "hyperattenuating", "hyperenhancing", "hyperenhancement", "arterially enhancing",
              "enhancing", "hypervascular", "high density", "high attenuation", "high-attenuation", "hyperattenuation", "too dense to be a simple cyst",
              "too dense to represent a simple cyst", "too dense for a simple cyst"),
    "iso": ("isodense", "isoattenuating", "isoenhancing"),
}

#: Words that name a lesion's kind, most specific first (the first kind whose words a phrase holds wins, and
#: only where `TYPE_ORGANS` allows it for the organ). A phrase naming none is `lesion_unspecified`.
LESION_TYPE_WORDS: tuple[tuple[LesionType, tuple[str, ...]], ...] = (
    (_T.ANGIOMYOLIPOMA, ("angiomyolipoma", "angiomyolipomas", "aml")),
    (_T.MYELOLIPOMA, ("myelolipoma", "myelolipomas")),
    (_T.PHEOCHROMOCYTOMA, ("pheochromocytoma",)),
    (_T.HEPATOCELLULAR_CARCINOMA, ("hepatocellular carcinoma", "hcc", "li-rads 5", "lr-5")),
    (_T.CHOLANGIOCARCINOMA, ("cholangiocarcinoma",)),
    (_T.PANCREATIC_NEUROENDOCRINE_TUMOR, ("neuroendocrine tumor", "neuroendocrine tumour", "pnet", "insulinoma")),
    (_T.PANCREATIC_DUCTAL_ADENOCARCINOMA, ("pancreatic adenocarcinoma", "ductal adenocarcinoma",
                                           "pancreatic cancer", "pancreatic carcinoma")),
    (_T.IPMN, ("ipmn", "ipmns", "intraductal papillary mucinous neoplasm", "side-branch ipmn", "side branch ipmn")),
    (_T.SEROUS_CYSTADENOMA, ("serous cystadenoma", "microcystic")),
    (_T.MUCINOUS_CYSTIC_NEOPLASM, ("mucinous cystic neoplasm",)),
    (_T.PSEUDOCYST, ("pseudocyst", "pseudocysts")),
    (_T.RENAL_CELL_CARCINOMA, ("renal cell carcinoma", "rcc")),
    (_T.ONCOCYTOMA, ("oncocytoma",)),
    (_T.UROTHELIAL_CARCINOMA, ("urothelial carcinoma", "transitional cell carcinoma")),
    (_T.FOCAL_NODULAR_HYPERPLASIA, ("focal nodular hyperplasia", "fnh")),
    (_T.HEPATIC_ADENOMA, ("hepatic adenoma", "hepatocellular adenoma")),
    (_T.ADRENAL_ADENOMA, ("adenoma", "adenomas", "lipid-rich", "lipid rich")),
    (_T.HEMANGIOMA, ("hemangioma", "hemangiomas", "haemangioma", "haemangiomas")),
    (_T.LYMPHOMA, ("lymphoma",)),
    (_T.GIST, ("gist", "gastrointestinal stromal tumor")),
    (_T.METASTASIS, ("metastasis", "metastases", "metastatic", "metastatic disease")),
    (_T.CYST, ("cyst", "cysts", "simple cyst", "cystic lesion")),
    (_T.MALIGNANCY_UNSPECIFIED, ("malignancy", "malignant", "carcinoma", "neoplasm", "cancer")),
    (_T.NODULE, ("nodule", "nodules")),
)

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
