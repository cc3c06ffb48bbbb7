"""Export SQL: the R-Super per-tumor CSV layout over the store's tables and views."""

from __future__ import annotations

from extract.store.tables import sql_str
from schemas.vocab import ORGANS, PAIRED_ORGANS, Organ

#: Our organ keys -> R-Super `Standardized Organ` names (others keep their key).
_RSUPER_ORGAN = {"adrenal_gland": "adrenal gland", "lymph_node": "lymph node", "ovary_adnexa": "ovary", "other": "u"}


def rsuper_csv_sql() -> str:
    """`SELECT` giving the R-Super per-tumor CSV layout (EXTRACTION.md (e)) from `tumors`.

    One row per lesion of the current extraction (presence definite/probable), or one `no lesion` row for a
    report without any. `BDMAP ID` is the CT id from `cases` (one block per CT of the report), else the
    report id. Group records expand as the reference does: an exactly counted group measured `each_of_group`
    gives one sized row per lesion; any other group gives its sized row (if measured) plus one `multiple` row.
    `Tumor Size (mm)` is "a x b x c" in mm (one decimal), `multiple`, or `u`; `Unknow Tumor Size` is `yes` when
    the CT has a `multiple`/`u` row in the same standardized organ.
    """
    organ_map = " ".join(f"WHEN {sql_str(k)} THEN {sql_str(v)}" for k, v in _RSUPER_ORGAN.items())
    # In ORGANS order, as the SQL has always listed them (PAIRED_ORGANS is a set).
    paired = ", ".join(sql_str(o) for o in ORGANS if Organ(o) in PAIRED_ORGANS)
    return f"""
WITH cur AS (
  SELECT c.extraction_key, c.report_id, coalesce(k.ct_id, c.report_id) AS bdmap_id
  FROM current_extractions c LEFT JOIN cases k ON k.report_id = c.report_id
),
t AS (
  SELECT cur.bdmap_id, cur.report_id, tm.*,
         len(coalesce(tm.size_diameters_mm, [])) > 0 AS measured,
         (tm.count > 1 OR NOT tm.count_exact OR tm.innumerable) AS is_group
  FROM tumors tm JOIN cur USING (extraction_key)
  WHERE tm.presence IN ('definite', 'probable')
),
rows AS (
  SELECT t.*, r.range AS part,
         CASE WHEN measured THEN array_to_string(list_transform(size_diameters_mm, lambda x: printf('%.1f', x)), ' x ')
              ELSE 'u' END AS size_mm
  FROM t, range(CASE WHEN is_group AND measured AND count_exact AND size_refers_to = 'each_of_group'
                     THEN count ELSE 1 END) r
  WHERE measured OR NOT is_group
  UNION ALL
  SELECT t.*, 1000000 AS part, 'multiple' AS size_mm FROM t
  WHERE is_group AND NOT (measured AND count_exact AND size_refers_to = 'each_of_group')
),
std AS (
  SELECT *,
    CASE organ {organ_map} ELSE organ END AS std_organ,
    CASE WHEN organ = 'liver' THEN array_to_string(
           list_transform(segments, lambda s: replace(s, 'liver_segment_', 'segment ')), ' / ')
         WHEN organ = 'pancreas' THEN array_to_string(list_sort(list_distinct(list_transform(segments,
           lambda s: CASE WHEN s IN ('pancreas_head', 'pancreas_uncinate', 'pancreas_neck') THEN 'head'
                     ELSE replace(s, 'pancreas_', '') END))), ' / ')
         WHEN organ IN ({paired}) THEN CASE laterality WHEN 'bilateral' THEN 'left / right'
                                                       ELSE coalesce(laterality, '') END
         ELSE '' END AS std_location
  FROM rows
)
SELECT bdmap_id AS "BDMAP ID", report_id AS "Accession Number",
  'tumor ' || row_number() OVER (PARTITION BY bdmap_id ORDER BY tumor_id, part) AS "Tumor ID",
  organ AS "Organ", lesion_type AS "Tumor Type", coalesce(location_text, '') AS "Tumor Location",
  size_mm AS "Tumor Size (mm)", attenuation AS "Tumor Attenuation",
  std_organ AS "Standardized Organ", coalesce(std_location, '') AS "Standardized Location",
  CASE attenuation WHEN 'hypo' THEN 'low' WHEN 'hyper' THEN 'high' WHEN 'iso' THEN 'iso'
                   WHEN 'heterogeneous' THEN 'heterogeneous' ELSE 'u' END AS "Standardized Attenuation",
  CASE WHEN bool_or(size_mm IN ('multiple', 'u')) OVER (PARTITION BY bdmap_id, std_organ) THEN 'yes' ELSE 'no' END
    AS "Unknow Tumor Size",
  false AS "no lesion",
  CASE malignancy WHEN 'malignant' THEN 'yes' WHEN 'benign' THEN 'no' ELSE 'u' END AS "malignancy"
FROM std
UNION ALL
SELECT bdmap_id, report_id, 'no lesion', '', '', '', '', '', '', '', '', 'no', true, ''
FROM cur WHERE bdmap_id NOT IN (SELECT bdmap_id FROM t)
ORDER BY "BDMAP ID", "no lesion" DESC, length("Tumor ID"), "Tumor ID"
"""


EXPORT_FORMATS = ("organ-summary-jsonl", "rsuper-csv", "parquet")
