"""Organ tables: the file format of schemas/organs.yaml and of the tables RSUPER_VOCABULARY adds, and their loader.

Kept apart from :mod:`schemas.vocab` (which loads the tables in force at import) so a caller can catch
:class:`VocabularyError` of a bad table without importing the vocabulary first.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: The shipped organ table; RSUPER_VOCABULARY names more files of the same format (colon-separated).
ORGANS_FILE = Path(__file__).with_name("organs.yaml")
VOCABULARY_ENV = "RSUPER_VOCABULARY"
DEFAULT_MAX_DIAMETER_MM = 350.0


class VocabularyError(ValueError):
    """An organ table that cannot be used; the message names the file, the organ and the field."""


class OrganEntry(BaseModel):
    """One organ of an organ table (schemas/organs.yaml describes the fields)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    words: tuple[str, ...] = Field(min_length=1)
    implied_words: tuple[str, ...] = ()
    lesion_words: tuple[str, ...] = ()
    paired: bool = False
    max_diameter_mm: float = Field(DEFAULT_MAX_DIAMETER_MM, gt=0)


def _organ_key_problem(key: object) -> str | None:
    if not isinstance(key, str) or not key.isidentifier() or key != key.lower() or key.startswith("_"):
        return "an organ key is lower-case letters, digits and underscores, starting with a letter"
    if key == "other" or key.endswith(("_lesion", "_left", "_right")):
        return "'other' and keys ending in _lesion, _left or _right are reserved"
    return None


def load_organ_tables(paths: list[Path]) -> dict[str, OrganEntry]:
    """The organ tables of ``paths`` in order, merged; a later file may add organs, never redefine one.

    Raises:
        VocabularyError: a file that is missing or not YAML, an invalid key or field, a key defined twice, or a
            word that already names another organ.
    """
    organs: dict[str, OrganEntry] = {}
    owner: dict[str, str] = {}
    for path in paths:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise VocabularyError(f"{path}: cannot read the organ table: {exc}") from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("organs"), dict) or set(raw) != {"organs"}:
            raise VocabularyError(f"{path}: an organ table is a mapping with one key, `organs`")
        for key, fields in raw["organs"].items():
            problem = _organ_key_problem(key)
            if problem:
                raise VocabularyError(f"{path}: organ {key!r}: {problem}")
            if key in organs:
                raise VocabularyError(f"{path}: organ {key!r} is already defined")
            try:
                entry = OrganEntry.model_validate(fields or {})
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(x) for x in first["loc"]) or "(entry)"
                raise VocabularyError(f"{path}: organ {key!r}, field {field}: {first['msg']}") from exc
            for word in (*entry.words, *entry.implied_words):
                if word != word.lower() or not word.strip():
                    raise VocabularyError(f"{path}: organ {key!r}: word {word!r} must be lower case, not empty")
                if owner.get(word, key) != key:
                    raise VocabularyError(f"{path}: organ {key!r}: {word!r} already names {owner[word]!r}")
                owner[word] = key
            organs[key] = entry
    return organs


def vocabulary_files() -> list[Path]:
    """The shipped table, then the files of RSUPER_VOCABULARY (colon-separated, empty parts skipped)."""
    extra = [Path(p) for p in os.environ.get(VOCABULARY_ENV, "").split(os.pathsep) if p.strip()]
    return [ORGANS_FILE, *extra]
