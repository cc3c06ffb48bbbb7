import pytest

from schemas.vocab import ORGAN_SUBSEGMENTS, ORGANS, Organ, SubSegment, summary_location


def test_eighteen_organ_keys_in_contract_order():
    assert ORGANS == (
        "liver", "pancreas", "kidney", "spleen", "adrenal_gland", "gallbladder", "lung", "bladder", "colon",
        "stomach", "esophagus", "uterus", "prostate", "bone", "duodenum", "breast", "ovary_adnexa", "lymph_node",
    )


def test_every_subsegment_belongs_to_exactly_one_organ():
    owners = [organ for seg in SubSegment for organ, segs in ORGAN_SUBSEGMENTS.items() if seg in segs]
    assert len(owners) == len(SubSegment)


def test_summary_location():
    assert summary_location(Organ.LIVER, [SubSegment.LIVER_SEGMENT_7], None) == "segment_7"
    assert summary_location(Organ.LIVER, [SubSegment.LIVER_SEGMENT_5, SubSegment.LIVER_SEGMENT_6], None) == "right_lobe"
    assert summary_location(Organ.LIVER, [SubSegment.LIVER_SEGMENT_4, SubSegment.LIVER_SEGMENT_5], None) is None
    assert summary_location(Organ.PANCREAS, [SubSegment.PANCREAS_NECK], None) == "neck"
    assert summary_location(Organ.KIDNEY, [SubSegment.KIDNEY_UPPER_POLE], "left") == "left"
    assert summary_location(Organ.LUNG, [SubSegment.LUNG_LOWER_LOBE], "right") == "right_lower_lobe"


# --- organ tables (schemas/organs.yaml and RSUPER_VOCABULARY) ---------------------------------------------------


def _table(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_an_extension_table_adds_organs_after_the_shipped_ones(tmp_path):
    from schemas.organ_tables import ORGANS_FILE, load_organ_tables

    extra = _table(tmp_path, "extra.yaml", "organs:\n  thyroid:\n    words: [thyroid, thyroid gland]\n"
                   "    paired: true\n    max_diameter_mm: 90\n")
    organs = load_organ_tables([ORGANS_FILE, extra])
    assert tuple(organs)[:-1] == ORGANS and tuple(organs)[-1] == "thyroid"
    assert organs["thyroid"].words == ("thyroid", "thyroid gland") and organs["thyroid"].paired
    assert organs["thyroid"].max_diameter_mm == 90 and organs["thyroid"].lesion_words == ()
    assert organs["liver"].max_diameter_mm == 300 and organs["bladder"].max_diameter_mm == 350


@pytest.mark.parametrize("text, message", [
    ("organs:\n  liver:\n    words: [liverish]\n", "organ 'liver' is already defined"),
    ("organs:\n  appendix:\n    words: [appendix, hepatic]\n", "'hepatic' already names 'liver'"),
    ("organs:\n  Appendix:\n    words: [appendix]\n", "organ 'Appendix': an organ key is lower-case"),
    ("organs:\n  appendix_lesion:\n    words: [appendix]\n", "reserved"),
    ("organs:\n  appendix:\n    words: [appendix]\n    pairs: true\n", "organ 'appendix', field pairs: Extra"),
    ("organs:\n  appendix:\n    words: []\n", "organ 'appendix', field words"),
    ("organs:\n  appendix:\n    words: [appendix]\n    max_diameter_mm: -4\n", "field max_diameter_mm"),
    ("organs:\n  appendix:\n    words: [Appendix]\n", "word 'Appendix' must be lower case"),
    ("appendix:\n  words: [appendix]\n", "one key, `organs`"),
    ("organs: [appendix\n", "cannot read the organ table"),
])
def test_a_bad_organ_table_is_refused_naming_file_organ_and_field(tmp_path, text, message):
    from schemas.organ_tables import ORGANS_FILE, VocabularyError, load_organ_tables

    path = _table(tmp_path, "bad.yaml", text)
    with pytest.raises(VocabularyError) as info:
        load_organ_tables([ORGANS_FILE, path])
    assert str(path) in str(info.value) and message in str(info.value)


def test_the_vocabulary_variable_names_the_tables_in_force(tmp_path, monkeypatch):
    import os

    from schemas.organ_tables import ORGANS_FILE, VOCABULARY_ENV, vocabulary_files

    monkeypatch.setenv(VOCABULARY_ENV, f"{tmp_path / 'a.yaml'}{os.pathsep}{os.pathsep}{tmp_path / 'b.yaml'}")
    assert vocabulary_files() == [ORGANS_FILE, tmp_path / "a.yaml", tmp_path / "b.yaml"]
    monkeypatch.delenv(VOCABULARY_ENV)
    assert vocabulary_files() == [ORGANS_FILE]


def test_the_shipped_vocabulary_has_no_extension_and_a_stable_digest():
    from schemas.vocab import EXTENSION_FILES, ORGAN_TABLE, VOCABULARY_SHA256

    assert EXTENSION_FILES == () and len(VOCABULARY_SHA256) == 64
    assert [o.value for o in Organ] == [*ORGAN_TABLE, "other"]


def test_an_added_organ_reaches_every_table_derived_from_the_vocabulary(tmp_path):
    """One process with RSUPER_VOCABULARY: the LLM answer schema, records, mask label names and a structure the
    alias table ignores until an organ table gives it a key."""
    import json
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    table = _table(tmp_path, "heart.yaml", "organs:\n  heart:\n    words: [heart, cardiac, heart myocardium]\n"
                   "    max_diameter_mm: 120\n")
    script = textwrap.dedent("""
        import json
        from schemas.label_aliases import LESION_LABELS, MASK_LABELS, resolve_label_name
        from schemas.llm import CitedAnswer
        from schemas.records import TumorRecord
        from schemas.vocab import ORGANS, Organ
        record = dict(id=1, organ="heart", size={"status": "measured", "diameters_mm": [150.0],
                                                  "reported_text": "15 cm"})
        try:
            TumorRecord.model_validate(record)
            too_big = None
        except ValueError as exc:
            too_big = "120" in str(exc)
        print(json.dumps({
            "last": ORGANS[-1], "member": Organ.HEART.value,
            "answer_schema": "heart" in json.dumps(CitedAnswer.model_json_schema()),
            "labels": ["heart" in MASK_LABELS, "heart_lesion" in LESION_LABELS],
            "resolved": [getattr(resolve_label_name(n), "label", None)
                         for n in ("Heart", "heart_myocardium", "cardiac_mass", "heart_atrium_left")],
            "too_big_refused": too_big}))
    """)
    env = {**os.environ, "RSUPER_VOCABULARY": str(table), "PYTHONPATH": str(repo)}
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=repo)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout) == {
        "last": "heart", "member": "heart", "answer_schema": True, "labels": [True, True],
        "resolved": ["heart", "heart", "heart_lesion", None], "too_big_refused": True}
    bad = _table(tmp_path, "bad.yaml", "organs:\n  heart:\n    words: [liver]\n")
    res = subprocess.run([sys.executable, "-c", "import schemas"], env={**env, "RSUPER_VOCABULARY": str(bad)},
                         capture_output=True, text=True, cwd=repo)
    assert res.returncode != 0 and f"{bad}: organ 'heart': 'liver' already names 'liver'" in res.stderr
    res = subprocess.run([sys.executable, "-m", "rsuper", "--help"], env={**env, "RSUPER_VOCABULARY": str(bad)},
                         capture_output=True, text=True, cwd=repo)
    assert (res.returncode, res.stderr) == (1, f"rsuper: error: {bad}: organ 'heart': 'liver' already names 'liver'\n")
