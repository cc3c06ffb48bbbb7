"""Mask label names: our own vocabulary, and the one table that maps the names users' masks carry onto it.

Our names (derived from :mod:`schemas.vocab`): ``background``, the organ keys, the sub-segment keys,
``<organ>_left`` / ``<organ>_right`` for paired organs, ``<organ>_lesion`` and the generic ``lesion``.

Other names resolve through :func:`resolve_label_name`, in this order:

1. our own names, after :func:`normalise_label_name` (lower case, spaces and hyphens as ``_``);
2. :data:`ALIASES`: TotalSegmentator v2 class names (tasks ``total``, ``total_mr``, ``liver_segments``,
   ``liver_vessels``, ``liver_lesions``, ``lung_nodules``, ``kidney_cysts``, ``breasts`` and the v1 ``total``),
   AbdomenAtlas / PanTS file names and a few public-dataset spellings; bones map to ``bone``;
3. :data:`IGNORED`: structures with no organ key (vessels, muscles, airways, heart, brain, bowel, ducts...):
   resolved to ``label=None`` so callers can list them instead of failing;
4. word rules: an organ word of :data:`schemas.vocab.ORGAN_WORDS` alone (``rectum`` -> ``colon``), with a side
   first or last (``right kidney``, ``kidney_L``), or followed by a lesion word of
   :data:`schemas.vocab.LESION_WORDS` (``liver_tumor``, ``pancreatic_lesion``, ``kidney_cyst_left``,
   ``colon cancer primaries``); lesion words alone (``tumor``, ``cancer``) are the generic ``lesion``.

Anything else is unknown (None), and the caller names the file and the names.
"""

from __future__ import annotations

import dataclasses
import re

from schemas.vocab import LESION_WORDS, ORGAN_SUBSEGMENTS, ORGAN_WORDS, ORGANS, PAIRED_ORGANS, SUBSEGMENTS

BACKGROUND = "background"
GENERIC_LESION = "lesion"
SIDES = ("left", "right")

#: ``<organ>_<side>`` of the paired organs, organs in alphabetical order.
SIDED_LABELS: tuple[str, ...] = tuple(
    f"{organ.value}_{side}" for organ in sorted(PAIRED_ORGANS, key=lambda o: o.value) for side in SIDES)
#: Organ and part names a label map can carry; the order is the cache's label index (train/data/labels.py).
MASK_LABELS: tuple[str, ...] = (BACKGROUND, *ORGANS, *SUBSEGMENTS, *SIDED_LABELS)
LESION_LABELS: tuple[str, ...] = tuple(f"{organ}_lesion" for organ in ORGANS)
OWN_LABELS: frozenset[str] = frozenset(MASK_LABELS) | frozenset(LESION_LABELS) | {GENERIC_LESION}


@dataclasses.dataclass(frozen=True)
class LabelAlias:
    """What an outside label name means here.

    Attributes:
        label: our label name; None for a structure with no organ key (listed as ignored, never an error).
        host: for a lesion label, the organ or organ part it lies in (``kidney_left`` for ``kidney_cyst_left``),
            so a lesion can be folded into its organ's mask; None when not known.
    """

    label: str | None
    host: str | None = None


#: TotalSegmentator v2 task ``total``: class names in class-map order (id = position + 1), as
#: ``totalsegmentator/map_to_binary.py`` defines them; ``TotalSegmentator -o DIR`` writes ``DIR/<name>.nii.gz``.
TOTALSEGMENTATOR_TOTAL: tuple[str, ...] = (
    "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas", "adrenal_gland_right",
    "adrenal_gland_left", "lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
    "lung_middle_lobe_right", "lung_lower_lobe_right", "esophagus", "trachea", "thyroid_gland", "small_bowel",
    "duodenum", "colon", "urinary_bladder", "prostate", "kidney_cyst_left", "kidney_cyst_right", "sacrum",
    "vertebrae_S1", *(f"vertebrae_L{i}" for i in range(5, 0, -1)), *(f"vertebrae_T{i}" for i in range(12, 0, -1)),
    *(f"vertebrae_C{i}" for i in range(7, 0, -1)), "heart", "aorta", "pulmonary_vein", "brachiocephalic_trunk",
    "subclavian_artery_right", "subclavian_artery_left", "common_carotid_artery_right", "common_carotid_artery_left",
    "brachiocephalic_vein_left", "brachiocephalic_vein_right", "atrial_appendage_left", "superior_vena_cava",
    "inferior_vena_cava", "portal_vein_and_splenic_vein", "iliac_artery_left", "iliac_artery_right", "iliac_vena_left",
    "iliac_vena_right", "humerus_left", "humerus_right", "scapula_left", "scapula_right", "clavicula_left",
    "clavicula_right", "femur_left", "femur_right", "hip_left", "hip_right", "spinal_cord", "gluteus_maximus_left",
    "gluteus_maximus_right", "gluteus_medius_left", "gluteus_medius_right", "gluteus_minimus_left",
    "gluteus_minimus_right", "autochthon_left", "autochthon_right", "iliopsoas_left", "iliopsoas_right", "brain",
    "skull", *(f"rib_{side}_{i}" for side in ("left", "right") for i in range(1, 13)), "sternum", "costal_cartilages",
)
#: TotalSegmentator task ``liver_segments`` (Couinaud segments, ids 1-8).
TOTALSEGMENTATOR_LIVER_SEGMENTS: tuple[str, ...] = tuple(f"liver_segment_{i}" for i in range(1, 9))

_BONES = (
    "sacrum", "vertebrae", "skull", "sternum",
    *(f"vertebrae_{level}" for level in ("S1", *(f"L{i}" for i in range(1, 6)), *(f"T{i}" for i in range(1, 13)),
                                         *(f"C{i}" for i in range(1, 8)))),
    *(f"rib_{side}_{i}" for side in SIDES for i in range(1, 13)),
    *(f"{bone}_{side}" for bone in ("humerus", "scapula", "clavicula", "femur", "hip") for side in SIDES),
    "femoral_head_left", "femoral_head_right",
)

#: Outside names with an organ key here (normalised, see :func:`normalise_label_name`).
ALIASES: dict[str, LabelAlias] = {
    # TotalSegmentator: the bladder, lung lobes onto the lung side (our lobes carry no side, a voxel one label),
    # kidney cysts as kidney lesions inside their side, the lung-nodule and liver-lesion tasks, bones.
    "urinary_bladder": LabelAlias("bladder"),
    **{f"lung_{lobe}_lobe_{side}": LabelAlias(f"lung_{side}")
       for lobe, side in (("upper", "left"), ("lower", "left"), ("upper", "right"), ("middle", "right"),
                          ("lower", "right"))},
    "kidney_cyst_left": LabelAlias("kidney_lesion", "kidney_left"),
    "kidney_cyst_right": LabelAlias("kidney_lesion", "kidney_right"),
    "lung_nodules": LabelAlias("lung_lesion", "lung"),
    "liver_lesions": LabelAlias("liver_lesion", "liver"),
    **{bone.lower(): LabelAlias("bone") for bone in _BONES},
    # AbdomenAtlas 1.x / PanTS spellings.
    "gall_bladder": LabelAlias("gallbladder"),
    "pancreatic_lesion": LabelAlias("pancreas_lesion", "pancreas"),
    # Couinaud 4a / 4b are one segment in our vocabulary.
    "liver_segment_4a": LabelAlias("liver_segment_4"),
    "liver_segment_4b": LabelAlias("liver_segment_4"),
}

#: Structures we have no organ key for: listed as ignored, never an error (normalised names).
IGNORED: frozenset[str] = frozenset(name.lower() for name in (
    # TotalSegmentator v2 total / total_mr / v1 total
    "trachea", "thyroid_gland", "small_bowel", "heart", "aorta", "pulmonary_vein", "brachiocephalic_trunk",
    "subclavian_artery_right", "subclavian_artery_left", "common_carotid_artery_right", "common_carotid_artery_left",
    "brachiocephalic_vein_left", "brachiocephalic_vein_right", "atrial_appendage_left", "superior_vena_cava",
    "inferior_vena_cava", "portal_vein_and_splenic_vein", "iliac_artery_left", "iliac_artery_right",
    "iliac_vena_left", "iliac_vena_right", "spinal_cord", "gluteus_maximus_left", "gluteus_maximus_right",
    "gluteus_medius_left", "gluteus_medius_right", "gluteus_minimus_left", "gluteus_minimus_right",
    "autochthon_left", "autochthon_right", "iliopsoas_left", "iliopsoas_right", "brain", "costal_cartilages",
    "intervertebral_discs", "lung_vessels", "lung_trachea_bronchia", "lung_arteries", "lung_veins", "lung_airways",
    "lung_airways_wall", "heart_myocardium", "heart_atrium_left", "heart_ventricle_left", "heart_atrium_right",
    "heart_ventricle_right", "pulmonary_artery", "face", "liver_vessels",
    # AbdomenAtlas / PanTS / AMOS / BTCV
    "postcava", "celiac_trunk", "celiac_artery", "hepatic_vessel", "intestine", "veins", "common_bile_duct",
    "pancreatic_duct", "superior_mesenteric_artery", "ivc", "arota", "prostate_uterus",
))

_SIDE_TOKENS = {"left": "left", "l": "left", "right": "right", "r": "right"}


def normalise_label_name(name: str) -> str:
    """Lower case, spaces / hyphens / slashes / dots as single underscores (``"Right Kidney"`` -> ``right_kidney``)."""
    return re.sub(r"[\s\-/.]+", "_", name.strip().lower()).strip("_")


def _organ_word_table() -> dict[str, str]:
    table = {organ: organ for organ in ORGANS}
    for organ, words in ORGAN_WORDS.items():
        for word in words:
            table.setdefault(normalise_label_name(word), organ.value)
    return table


#: Normalised organ words (``hepatic``, ``renal``, ``adrenal_gland``, ``rectum``...) -> organ key.
ORGAN_WORD_KEYS: dict[str, str] = _organ_word_table()
#: Single normalised lesion words (``tumor``, ``cyst``, ``metastases``...).
LESION_WORD_SET: frozenset[str] = frozenset(
    normalise_label_name(w) for w in (*LESION_WORDS, "tumour", "tumours", "primaries") if " " not in w)
_PAIRED = frozenset(o.value for o in PAIRED_ORGANS)
_SUBSEGMENT_ORGANS = {s.value: organ.value for organ, subs in ORGAN_SUBSEGMENTS.items() for s in subs}


def _organ_prefix(tokens: list[str]) -> tuple[str | None, int]:
    """The organ named by the longest leading run of tokens, and how many tokens it used."""
    for n in range(len(tokens), 0, -1):
        organ = ORGAN_WORD_KEYS.get("_".join(tokens[:n]))
        if organ is not None:
            return organ, n
    return None, 0


def _sided(organ: str, side: str | None) -> str:
    return f"{organ}_{side}" if side and organ in _PAIRED else organ


def resolve_label_name(name: str) -> LabelAlias | None:
    """What ``name`` means here (module docstring); None when unknown."""
    key = normalise_label_name(name)
    if key in OWN_LABELS:
        if key in LESION_LABELS:
            return LabelAlias(key, key.removesuffix("_lesion"))
        return LabelAlias(key)
    if key in ALIASES:
        return ALIASES[key]
    if key in IGNORED and key not in ORGAN_WORD_KEYS:  # an organ table may give an ignored structure a key
        return LabelAlias(None)
    tokens = key.split("_")
    if all(t in LESION_WORD_SET for t in tokens):
        return LabelAlias(GENERIC_LESION)
    side = None
    if tokens[0] in ("left", "right"):
        side, tokens = tokens[0], tokens[1:]
    elif len(tokens) > 1 and tokens[-1] in _SIDE_TOKENS:
        side, tokens = _SIDE_TOKENS[tokens[-1]], tokens[:-1]
    organ, used = _organ_prefix(tokens)
    if organ is None or (side and organ not in _PAIRED):
        return None
    rest = tokens[used:]
    if not rest:
        return LabelAlias(_sided(organ, side))
    if any(t in LESION_WORD_SET for t in rest):
        return LabelAlias(f"{organ}_lesion", _sided(organ, side))
    return None


def organ_of_own_label(name: str) -> str | None:
    """Organ key of one of our label names (``liver_segment_7`` -> ``liver``); None for background / ``lesion``."""
    if name in (BACKGROUND, GENERIC_LESION):
        return None
    if name in LESION_LABELS:
        return name.removesuffix("_lesion")
    if name in ORGANS:
        return name
    if name in _SUBSEGMENT_ORGANS:
        return _SUBSEGMENT_ORGANS[name]
    organ, side = name.rsplit("_", 1) if "_" in name else (name, "")
    return organ if side in SIDES and organ in _PAIRED else None


assert all(organ_of_own_label(n) for n in MASK_LABELS[1:]), "every mask label belongs to an organ"
