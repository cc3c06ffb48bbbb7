"""Deterministic parsing of measurements as written in reports ("1.2 x 0.8 cm", "3.4 cm x 28 mm", "9 mm").

The LLM only quotes; numbers and units are read here, so a cm/mm slip, an HU value or a series number can never
become a diameter.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from dataclasses import dataclass

_NUMBER = r"\d+(?:\.\d+)?|\.\d+"
_UNIT = r"cm|mm|centimeters?|millimeters?"
_AXIS = rf"({_NUMBER})\s*({_UNIT})?"
_SEPARATOR = r"\s*(?:x|by)\s*"
#: 1-3 axes; the unit may follow each axis or only the last one.
MEASUREMENT = re.compile(
    rf"(?<![\w.]){_AXIS}(?:{_SEPARATOR}{_AXIS})?(?:{_SEPARATOR}{_AXIS})?(?![\w])",
    re.IGNORECASE,
)
_MM_PER_UNIT = {"mm": 1.0, "millimeter": 1.0, "millimeters": 1.0, "cm": 10.0, "centimeter": 10.0,
                "centimeters": 10.0}


def _canonical(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).replace("\u00d7", "x").replace("*", "x")
    return text.lower()


@dataclass(frozen=True)
class Measurement:
    """One measurement found in text: diameters in mm (report order) and where it was found."""

    diameters_mm: tuple[float, ...]
    text: str
    start: int
    end: int


def _to_mm(groups: tuple[str | None, ...]) -> tuple[float, ...] | None:
    values = [(float(groups[i]), groups[i + 1]) for i in range(0, len(groups), 2) if groups[i] is not None]
    if not values or values[-1][1] is None:
        return None  # no unit: ambiguous, never guessed
    out: list[float] = []
    unit = values[-1][1]
    for value, own_unit in reversed(values):
        unit = own_unit or unit
        out.append(round(value * _MM_PER_UNIT[unit.lower()], 1))
    return tuple(reversed(out))


def find_measurements(text: str) -> list[Measurement]:
    """All unit-bearing 1-3 axis measurements in `text` (mm), skipping HU values and series/image numbers."""
    return list(_measurements(text))


#: Numbers joined into a list that one unit closes ("measuring 2.2, 1.5 and 1.1 cm", "nodules of 5 and 7 mm").
_LIST_JOIN = re.compile(r"\s*(?:,|and|or|&)\s*(?:(?:and|or)\s+)?")
#: A number after these is no size ("image 40 and 5 mm", "segments 2 and 3", "between 5 and 7 mm").
_NOT_A_SIZE_BEFORE = re.compile(r"\b(?:series|images?|segments?|levels?|stations?|between|grade|bosniak|rads|hu|"
                                r"[tlsc])\s*$", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)  # the conversion reads a quote and its sentence several times
def _measurements(text: str) -> tuple[Measurement, ...]:
    canonical = _canonical(text)
    found = []
    pending: list[tuple[float, int, int]] = []  # bare single numbers listed so far, waiting for their unit
    for m in MEASUREMENT.finditer(canonical):
        groups = m.groups()
        single = groups[2] is None
        joined = bool(pending) and bool(_LIST_JOIN.fullmatch(canonical[pending[-1][2]:m.start()]))
        diameters = _to_mm(groups)
        if diameters is None:
            if single and joined:
                pending.append((float(groups[0]), m.start(), m.end()))
            elif single and not _NOT_A_SIZE_BEFORE.search(canonical[max(0, m.start() - 12):m.start()]):
                pending = [(float(groups[0]), m.start(), m.end())]
            else:
                pending = []
            continue
        closing = float(groups[0])
        # sizes listed under one unit are of a size ("in March 2021, 5 mm" lists no 2021 mm)
        if single and joined and all(v < 100 and v <= 10 * closing for v, _, _ in pending):
            per_mm = _MM_PER_UNIT[groups[1].lower()]
            found += [Measurement((round(v * per_mm, 1),), text[a:b], a, b) for v, a, b in pending]
        pending = []
        found.append(Measurement(diameters, text[m.start():m.end()], m.start(), m.end()))
    return tuple(found)


def parse_size_text(text: str) -> list[float] | None:
    """Diameters (mm, rounded to 0.1) of a quoted measurement, or None when `text` holds no unit-bearing
    measurement. Range/bound words around the number are allowed ("up to 1.5 cm" → [15.0]); when the text holds
    several measurements ("2.2 x 1.7 cm, previously 3.0 x 2.4 cm") the first one is the current size."""
    found = find_measurements(text)
    return list(found[0].diameters_mm) if found else None


def same_diameters(a: list[float], b: list[float], tolerance_mm: float = 0.051) -> bool:
    """Equal as multisets of diameters, within `tolerance_mm`."""
    return len(a) == len(b) and all(abs(x - y) <= tolerance_mm for x, y in zip(sorted(a), sorted(b)))


def three_axes_mm(diameters_mm: list[float]) -> tuple[float, float, float] | None:
    """Ellipsoid axes (mm) from 1-3 reported diameters: one → sphere, two → third axis is their mean."""
    d = list(diameters_mm)
    if not d:
        return None
    if len(d) == 1:
        return (d[0], d[0], d[0])
    if len(d) == 2:
        return (d[0], d[1], round((d[0] + d[1]) / 2, 2))
    return (d[0], d[1], d[2])


def ellipsoid_volume_mm3(diameters_mm: list[float]) -> float | None:
    """Volume (mm³) of the ellipsoid with the given 1-3 diameters (π·d1·d2·d3/6)."""
    axes = three_axes_mm(diameters_mm)
    if axes is None:
        return None
    return math.pi * axes[0] * axes[1] * axes[2] / 6.0
