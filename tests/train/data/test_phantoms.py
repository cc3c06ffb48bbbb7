import csv
import json

import numpy as np

from train.data.phantoms import SET_CONFIG_FILE, PhantomConfig, generate_case, write_phantom_set


def test_flipped_anisotropic_affine_keeps_physical_tumor_volumes():
    cfg = PhantomConfig(n=1, seed=5, shape=(96, 96, 64), tumor_count_probabilities=(0, 1, 0, 0),
                        small_lesion_probability=0.0)
    a = generate_case(cfg, 0, spacing_mm=(2.0, 2.0, 2.0), flip_xy=False)
    b = generate_case(cfg, 0, spacing_mm=(2.2, 1.8, 3.1), flip_xy=True)
    assert a.ground_truth["tumors"] == b.ground_truth["tumors"]  # truth does not depend on the grid
    assert np.allclose(np.diag(b.affine)[:3], [-2.2, -1.8, 3.1])
    true_volume = a.ground_truth["tumors"][0]["true_volume_mm3"]
    va = np.count_nonzero(a.lesions) * 2.0 * 2.0 * 2.0
    vb = np.count_nonzero(b.lesions) * 2.2 * 1.8 * 3.1
    assert abs(va - vb) / true_volume < 0.15
    assert abs(va - true_volume) / true_volume < 0.15


def test_ct_range_and_labels():
    case = generate_case(PhantomConfig(n=1, seed=1, shape=(48, 48, 32)), 0)
    assert case.ct.dtype == np.int16 and case.ct.min() < -900 and 50 < np.median(case.ct[case.organs > 0]) < 200
    assert set(np.unique(case.organs)) <= set(range(15)) and {1, 9, 12, 13, 14} <= set(np.unique(case.organs))


def test_written_set_matches_report_and_truth(phantom_set):
    with open(phantom_set / "reports.csv", newline="") as fh:
        reports = list(csv.DictReader(fh))
    assert list(reports[0]) == ["Accession Number", "Report Text"]
    truth = [json.loads(line) for line in (phantom_set / "ground_truth.jsonl").read_text().splitlines()]
    by_id = {r["Accession Number"]: r["Report Text"] for r in reports}
    for gt in truth:
        text = by_id[gt["report_id"]]
        assert "FINDINGS:" in text and "IMPRESSION:" in text
        for t in gt["tumors"]:
            if t["diameters_mm"]:
                d = t["diameters_mm"][0]
                assert f"{d:g}" in text or f"{d / 10:.1f}" in text  # stated in mm or cm
            assert len(t["true_diameters_mm"]) == 3
        for organ in gt["lesion_free_organs"]:
            assert organ in {"liver", "pancreas", "kidney", "spleen"}
    with open(phantom_set / "case_reports.csv", newline="") as fh:
        assert [r["report_id"] for r in csv.DictReader(fh)] == [g["report_id"] for g in truth]


def test_grid_rendering_matches_point_evaluation():
    from train.data.phantoms import (case_affine, organ_labels_at, organ_labels_grid, render_case, sample_anatomy,
                                     sample_tumors, voxel_world_points)

    rng = np.random.default_rng(3)
    anatomy = sample_anatomy(rng)
    tumors = sample_tumors(rng, anatomy, 3, 0.0)
    shape = (40, 36, 30)
    for affine in (case_affine(shape, np.array([8.5, 9.0, 8.0]), False),
                   case_affine(shape, np.array([9.0, 8.0, 8.2]), True)):
        points = voxel_world_points(affine, shape)
        expected = organ_labels_at(points, anatomy).reshape(shape)
        assert np.array_equal(organ_labels_grid(anatomy, affine, shape), expected)
        ct, organs, lesions = render_case(anatomy, tumors, affine, shape, np.random.default_rng(0), 0.0)
        inside = np.zeros(len(points), bool)
        for t in tumors:
            inside |= t.contains(points)
        assert inside.any() and np.array_equal(lesions.reshape(-1) > 0, inside)
        assert np.array_equal(organs, expected) and ct[organs == 14].min() >= 100  # spleen HU (no noise)
    # An oblique grid: coordinates are summed differently from the matrix product, so allow rare boundary flips.
    theta = 0.3
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    oblique = case_affine(shape, np.array([9.0, 9.0, 8.0]), False)
    oblique[:3, :3] = rot @ oblique[:3, :3]
    expected = organ_labels_at(voxel_world_points(oblique, shape), anatomy).reshape(shape)
    got = organ_labels_grid(anatomy, oblique, shape)
    assert (expected > 0).sum() > 1000 and np.count_nonzero(got != expected) <= 0.001 * got.size


def test_a_subset_holds_the_chosen_phantoms_and_no_set_config(tmp_path):
    config = PhantomConfig(n=4, seed=3, shape=(24, 24, 16))
    summary = write_phantom_set(tmp_path, config, indices=[3, 1])
    truth = [json.loads(line) for line in (tmp_path / "ground_truth.jsonl").read_text().splitlines()]
    assert [row["ct_id"] for row in truth] == [generate_case(config, i).ct_id for i in (3, 1)]
    assert sorted(p.name for p in (tmp_path / "cases").iterdir()) == sorted(row["ct_id"] for row in truth)
    assert summary["cases"] == 2 and not (tmp_path / SET_CONFIG_FILE).exists()
