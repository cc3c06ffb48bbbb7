"""The single source of truth: vocabularies, validated records, the LLM-facing schema and table layouts."""

from schemas.records import SCHEMA_VERSION, ExtractionPayload, OrganStatus, Size, TumorRecord
from schemas.vocab import ORGANS, SUBSEGMENTS, LesionType, Organ, SubSegment

__all__ = [
    "ORGANS", "SCHEMA_VERSION", "SUBSEGMENTS", "ExtractionPayload", "LesionType", "Organ", "OrganStatus",
    "Size", "SubSegment", "TumorRecord",
]
