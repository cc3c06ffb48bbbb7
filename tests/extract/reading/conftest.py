import pytest

_TRICKY_TEXTS = [
    "Gall bladder wall thickening; the urinary bladder is normal.",
    "LOWER POLE renal cyst and a lower lobe nodule", "lymph nodes: none", "lymphadenopathy", "node-negative",
    "hepatic dome (segment 4A/segment VIII)", "LI-RADS 5 observation", "ground-glass opacity", "gallbladders",
    "adrenals and adrenal glands", "segment 9", "segmental", "renal/adrenal", "Kidney\tand  spleen", "",
]


@pytest.fixture
def tricky_texts() -> list[str]:
    """Texts where organ words overlap, nest or change case (shared by the organ-scan and word-pattern tests)."""
    return _TRICKY_TEXTS
