import numpy as np
import pytest

from train.data.labels import CANONICAL_INDEX
from train.review.lesions import (
    component_in_box, largest_diameter_mm, organ_extents_mm, organ_map_from_channels, predicted_lesions, region_key,
)


def _ball(shape, center, radius_vox):
    g = np.indices(shape).transpose(1, 2, 3, 0)
    return ((g - np.asarray(center)) ** 2).sum(-1) <= radius_vox**2


def test_a_voxelised_ball_measures_its_diameter_through_the_spacing():
    ball = _ball((30, 30, 30), (15, 15, 15), 5)  # 11 voxels across
    assert largest_diameter_mm(np.argwhere(ball), (2.0, 2.0, 2.0)) == pytest.approx(22.0)
    assert largest_diameter_mm(np.argwhere(ball), (1.0, 1.0, 3.0)) == pytest.approx(33.0)  # the longest axis: z
    assert largest_diameter_mm(np.array([[3, 4, 5]]), (0.8, 0.8, 2.5)) == 2.5


def test_an_oblique_rod_measures_its_length_not_its_box():
    rod = np.array([[i, i, 0] for i in range(20)])  # 20 voxels on the diagonal, 1 mm voxels
    assert largest_diameter_mm(rod, (1, 1, 1)) == pytest.approx(19 * np.sqrt(2) + np.sqrt(2), rel=1e-6)


def test_components_per_channel_with_volume_segment_side_probability_and_contrast():
    shape = (40, 40, 20)
    lesions = np.zeros(shape, np.uint8)
    lesions[_ball(shape, (10, 10, 10), 3)] = 1  # liver lesion
    lesions[_ball(shape, (30, 30, 10), 2)] = 2  # kidney lesion
    lesions[0, 0, 0] = 1  # a one-voxel speck: 8 mm3 < 65 mm3, dropped
    organs = np.zeros(shape, np.uint8)
    organs[:20] = CANONICAL_INDEX["liver_segment_7"]
    organs[5:8] = CANONICAL_INDEX["liver_segment_8"]  # a minority of the liver lesion's voxels
    organs[20:] = CANONICAL_INDEX["kidney_left"]
    ct = np.full(shape, 100.0)
    ct[lesions == 1] = 40.0
    prob = np.zeros((*shape, 2), np.float32)
    prob[..., 0][lesions == 1] = 0.9
    prob[..., 1][lesions == 2] = 0.7
    found = predicted_lesions(lesions, {1: "liver_lesion", 2: "kidney_lesion"}, (2.0, 2.0, 2.0), organ_map=organs,
                              probabilities=prob, ct_hu=ct)
    assert [(p.organ, p.segment, p.side) for p in found] == [("liver", "liver_segment_7", None),
                                                             ("kidney", None, "left")]
    liver, kidney = found
    assert liver.voxels == int(_ball(shape, (10, 10, 10), 3).sum()) and liver.volume_mm3 == liver.voxels * 8.0
    assert liver.diameter_mm == pytest.approx(14.0) and kidney.diameter_mm == pytest.approx(10.0)
    assert liver.center_voxel == pytest.approx((10, 10, 10))
    assert liver.max_probability == pytest.approx(0.9) and kidney.max_probability == pytest.approx(0.7)
    assert liver.hu_contrast == pytest.approx(-60.0) and kidney.hu_contrast == pytest.approx(0.0)
    assert component_in_box(lesions, liver).sum() == liver.voxels
    assert liver.organ_share == 1.0 and kidney.organ_share == 1.0


def test_organ_share_is_the_part_of_a_component_on_its_own_organ():
    shape = (40, 20, 20)
    lesions = np.zeros(shape, np.uint8)
    lesions[_ball(shape, (10, 10, 10), 3)] = 1  # half in the liver, half in the kidney next to it
    lesions[_ball(shape, (32, 10, 10), 3)] = 1  # a liver-channel blob in air
    organs = np.zeros(shape, np.uint8)
    organs[:10] = CANONICAL_INDEX["liver_segment_6"]
    organs[10:25] = CANONICAL_INDEX["kidney_right"]
    found = predicted_lesions(lesions, {1: "liver_lesion"}, (2.0, 2.0, 2.0), organ_map=organs)
    by_x = sorted(found, key=lambda p: p.center_voxel[0])
    inside = _ball(shape, (10, 10, 10), 3)[:10].sum() / _ball(shape, (10, 10, 10), 3).sum()
    assert by_x[0].organ_share == pytest.approx(inside) and 0.3 < inside < 0.5
    assert by_x[1].organ_share == 0.0


def test_without_an_organ_map_lesions_have_no_place():
    lesions = np.zeros((20, 20, 20), np.uint8)
    lesions[_ball(lesions.shape, (10, 10, 10), 3)] = 1
    (p,) = predicted_lesions(lesions, {1: "liver_lesion"}, (1.0, 1.0, 1.0))
    assert (p.segment, p.side, p.max_probability, p.hu_contrast, p.organ_share) == (None, None, None, None, None)
    assert predicted_lesions(lesions, {1: "liver_lesion"}, (1.0, 1.0, 1.0), min_volume_mm3=1e6) == []


def test_organ_map_from_channels_derives_kidney_sides_and_extents():
    shape = (40, 20, 20)
    channels = np.zeros((*shape, 2), bool)
    channels[2:8, 5:15, 5:15, 1] = True  # kidney at low x: patient left in RAS (x grows to the right)
    channels[30:36, 5:15, 5:15, 1] = True
    channels[10:28, 2:18, 2:18, 0] = True  # liver
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    organs = organ_map_from_channels(channels, ["liver", "kidney"], affine)
    assert organs[4, 10, 10] == CANONICAL_INDEX["kidney_left"] and organs[33, 10, 10] == CANONICAL_INDEX["kidney_right"]
    assert organs[20, 10, 10] == CANONICAL_INDEX["liver"]
    assert organ_extents_mm(organs, (1.0, 1.0, 2.0)) == {"liver": 32.0, "kidney": 34.0}


def test_extents_of_the_sub_segments_a_lesion_is_reported_in():
    organs = np.zeros((60, 20, 20), np.uint8)
    organs[0:10, 0:10, 0:10] = CANONICAL_INDEX["pancreas_head"]
    organs[10:30, 0:10, 0:10] = CANONICAL_INDEX["pancreas_body"]
    organs[30:45, 0:5, 0:5] = CANONICAL_INDEX["pancreas_tail"]
    extents = organ_extents_mm(organs, (2.0, 1.0, 1.0), regions=[("pancreas_tail",), ("pancreas_body", "pancreas_tail"),
                                                                 ("pancreas_neck",)])
    assert extents == {"pancreas": 90.0, "pancreas_tail": 30.0, region_key(("pancreas_tail", "pancreas_body")): 70.0}
    assert region_key(("pancreas_tail", "pancreas_body")) == "pancreas_body+pancreas_tail"  # the neck is not mapped


def test_boxes_and_centres_are_on_the_whole_grid_though_only_the_lesions_box_is_labelled():
    from scipy import ndimage

    shape = (50, 44, 36)
    lesions = np.zeros(shape, np.uint8)
    lesions[_ball(shape, (31, 12, 20), 3)] = 1
    lesions[_ball(shape, (40, 30, 9), 2)] = 1
    lesions[_ball(shape, (22, 35, 27), 2)] = 2
    found = predicted_lesions(lesions, {1: "liver_lesion", 2: "kidney_lesion"}, (1.0, 1.0, 1.0), min_volume_mm3=0)
    want = []
    for value in (1, 2):  # the plain way: label the whole volume
        labels, n = ndimage.label(lesions == value, structure=np.ones((3, 3, 3)))
        for i, box in enumerate(ndimage.find_objects(labels), start=1):
            want.append(((tuple(s.start for s in box), tuple(s.stop for s in box)),
                         tuple(np.argwhere(labels == i).mean(0)), int((labels == i).sum())))
    got = [(p.box, tuple(round(x, 6) for x in p.center_voxel), p.voxels) for p in found]
    assert sorted(got) == sorted((b, tuple(round(x, 6) for x in c), n) for b, c, n in want) and len(got) == 3
    assert all(component_in_box(lesions, p).sum() == p.voxels for p in found)
