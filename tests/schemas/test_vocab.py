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
