import math

import pytest
import torch

from train.data.records import CaseRecords, ReportedTumor
from train.evaluate import (confusion_at, dice_per_channel, evaluate_detection, nsd_per_channel, per_ct_metrics,
                            report_truth, roc_auc)


def test_roc_auc_known_values():
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert roc_auc([0.5, 0.5], [0, 1]) == 0.5
    # pairs (pos, neg): (0.7,0.4) (0.7,0.8) (0.3,0.4) (0.3,0.8) -> 1 of 4 ordered correctly
    assert roc_auc([0.7, 0.3, 0.4, 0.8], [1, 1, 0, 0]) == pytest.approx(0.25)
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1]))


def test_confusion_at_threshold():
    r = confusion_at([0, 50, 150, 500], [False, True, True, False], 100)
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (1, 1, 1, 1)
    assert r["sensitivity"] == 0.5 and r["specificity"] == 0.5 and r["f1"] == 0.5


def test_dice_and_nsd_on_hand_made_masks():
    truth = torch.zeros(2, 8, 8, 8, dtype=torch.bool)
    truth[0, 2:6, 2:6, 2:6] = True  # 64 voxels; channel 1 empty
    pred = torch.zeros_like(truth)
    pred[0, 2:6, 2:6, 2:4] = True  # 32 voxels, all inside
    dice = dice_per_channel(pred, truth)
    assert dice[0] == pytest.approx(2 * 32 / (32 + 64)) and math.isnan(dice[1])
    nsd = nsd_per_channel(truth.clone(), truth, (1.0, 1.0, 1.0), 1.0)
    assert nsd[0] == pytest.approx(1.0) and math.isnan(nsd[1])
    shifted = torch.zeros_like(truth)
    shifted[0, 2:6, 2:6, 4:8] = True  # 2 voxels off: within 2 mm, partly outside 0.5 mm
    assert nsd_per_channel(shifted, truth, (1.0, 1.0, 1.0), 2.5)[0] == pytest.approx(1.0)
    assert nsd_per_channel(shifted, truth, (1.0, 1.0, 1.0), 0.5)[0] < 0.8


def test_detection_from_records_with_small_stratum():
    records = {
        "r1": CaseRecords("r1", (ReportedTumor("liver", diameters_mm=(30.0,)),)),
        "r2": CaseRecords("r2", (ReportedTumor("liver", diameters_mm=(12.0, 8.0)),)),
        "r3": CaseRecords("r3", (), frozenset({"liver"})),
        "r4": CaseRecords("r4", ()),  # liver not mentioned: not scored
    }
    mapping = {"a": "r1", "b": "r2", "c": "r3", "d": "r4"}
    truth = report_truth(records, mapping, ["liver"])
    assert truth["b"]["liver"] == {"positive": True, "largest_mm": 12.0} and truth["d"] == {}
    summaries = {
        ct: {"organs": {"liver": {"lesion_volume_mm3": v, "max_probability": p}}}
        for ct, v, p in [("a", 900.0, 0.95), ("b", 40.0, 0.6), ("c", 0.0, 0.3), ("d", 500.0, 0.9)]
    }
    res = evaluate_detection(summaries, truth, threshold_mm3=100.0)
    assert res["liver/all"]["n_positive"] == 2 and res["liver/all"]["n_negative"] == 1
    assert res["liver/all"]["sensitivity"] == 0.5 and res["liver/all"]["specificity"] == 1.0
    assert res["liver/all"]["auroc"] == 1.0
    assert res["liver/small"]["n_positive"] == 1 and res["liver/small"]["sensitivity"] == 0.0


def test_per_ct_metrics_pools_organs_and_splits_small():
    def summary(vol_liver, vol_kidney, p):
        return {"organs": {"liver": {"lesion_volume_mm3": vol_liver, "max_probability": p},
                           "kidney": {"lesion_volume_mm3": vol_kidney, "max_probability": p / 2}}}

    def truth(*sizes):
        return {"tumors": [{"true_diameters_mm": [s, s * 0.8, s * 0.7]} for s in sizes]}

    summaries = {"a": summary(60, 60, 0.9), "b": summary(0, 0, 0.4), "c": summary(500, 0, 0.8),
                 "d": summary(0, 0, 0.1), "e": summary(150, 0, 0.7)}
    gt = {"a": truth(10.0), "b": truth(12.0, 30.0), "c": truth(25.0), "d": truth(), "e": truth()}
    dice = {"a": 0.5, "b": 0.0, "c": 0.9}
    m = per_ct_metrics(summaries, gt, dice, threshold_mm3=100.0, small_mm=20.0)
    # all: positives a (120 mm3: hit), b (miss), c (hit); negatives d (ok), e (150 mm3: false positive)
    assert (m["n_positive"], m["n_negative"]) == (3, 2)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert m["auroc"] == pytest.approx(5 / 6)  # scores a .9, b .4, c .8 vs d .1, e .7
    assert m["dice"] == pytest.approx((0.5 + 0.0 + 0.9) / 3)
    # small: only a among the positives (b's largest is 30 mm)
    assert (m["n_positive_small"], m["n_negative_small"]) == (1, 2)
    assert m["sensitivity_small"] == 1.0
    assert m["f1_small"] == pytest.approx(2 / 3)
    assert m["dice_small"] == pytest.approx(0.5)
