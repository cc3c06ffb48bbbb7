"""The science benchmark's results: mean ± std over seeds, paired differences, results.md."""

from __future__ import annotations

import math

import pytest

from train.science.protocol import METRIC_KEYS
from train.science.report import paired_differences, results_markdown, summarise


def test_summarise_mean_and_std():
    rows = [{"arm": "masks_only", "seed": s, **{k: v for k in METRIC_KEYS}, "train_seconds": 1.0,
             "eval_seconds": 2.0} for s, v in ((0, 0.2), (1, 0.4))]
    rows[1]["dice_small"] = math.nan
    s = summarise(rows)["masks_only"]
    assert s["f1"][0] == pytest.approx(0.3) and s["f1"][1] == pytest.approx(0.1414, abs=1e-3)
    assert s["dice_small"] == (0.2, 0.0, 1)


def test_paired_differences_subtract_masks_only_of_the_same_seed():
    def row(arm, seed, value):
        return {"arm": arm, "seed": seed, **{k: value for k in METRIC_KEYS}, "report_cases": 0,
                "train_seconds": 1.0, "eval_seconds": 1.0}

    rows = [row("masks_only", 0, 0.5), row("masks_only", 1, 0.7), row("masks_only", 2, 0.1),
            row("masks_reports_truth", 0, 0.6), row("masks_reports_truth", 1, 0.6), row("masks_all", 0, 0.9)]
    d = paired_differences(rows)
    assert d["masks_reports_truth"]["f1"][0] == pytest.approx(0.0)  # +0.1 on seed 0, -0.1 on seed 1; seed 2 unpaired
    assert d["masks_reports_truth"]["f1"][1] == pytest.approx(0.1414, abs=1e-3)
    assert d["masks_reports_truth"]["f1"][2:] == (2, 1)
    assert d["masks_all"]["dice"] == (pytest.approx(0.4), 0.0, 1, 1)
    assert "masks_reports_extracted" not in d
    md = results_markdown(rows, {}, "results.png")
    assert "| masks_reports_truth | +0.000 ± 0.141 (1/2) |" in md and "| masks_all | +0.400 (1/1) |" in md
