import csv
import re

import numpy as np
import pytest

from train.data.labels import CANONICAL_INDEX
from train.review.pages import ras_point, ras_spacing, to_ras, view_image


def test_index_lists_every_ct_highest_score_first_with_links_and_thumbnails(pages):
    out, results, (sized, free) = pages
    index = (out / "index.html").read_text()
    order = re.findall(r'<a href="([^"]+)\.html">', index)
    assert order == [r.audit.ct_id for r in results] and set(order[:2]) == {sized, free}
    for src in re.findall(r'<img src="([^"]+)"', index):
        assert (out / src).is_file()


def test_a_case_page_shows_findings_views_tables_and_links_but_no_report_text(pages, reviewed):
    out, results, (sized, _) = pages
    page = (out / f"{sized}.html").read_text()
    assert "likely_unit_error" in page and "reported " in page
    images = re.findall(r'<img src="([^"]+)"', page)
    result = next(r for r in results if r.audit.ct_id == sized)
    assert len(images) == len(result.lesions) + len(result.pairs) and all((out / i).is_file() for i in images)
    for href in re.findall(r'<a href="([^"]+\.nii\.gz)">', page):
        assert (out / href).resolve().is_file()
    cases, _ = reviewed
    with (cases / "reports.csv").open(newline="") as fh:
        text = {r["Accession Number"]: r["Report Text"] for r in csv.DictReader(fh)}[result.audit.report_id]
    sentences = [s.strip() for s in re.split(r"[.\n]", text) if len(s.strip()) > 15]
    assert sentences and not any(s in page for s in sentences)  # PHI: records only
    assert "Report text" not in page


def test_report_text_only_when_asked(pages, reviewed, tmp_path):
    from train.review.files import page_arrays
    from train.review.pages import write_pages

    _, results, _ = pages
    top = results[:1]
    write_pages(top, tmp_path, arrays_of=page_arrays, report_text_of={top[0].audit.report_id: "Liver: <b>x</b>."})
    page = (tmp_path / f"{top[0].audit.ct_id}.html").read_text()
    assert "<pre>Liver: &lt;b&gt;x&lt;/b&gt;.</pre>" in page


def test_views_are_in_radiological_orientation_whatever_the_file_order():
    shape = (20, 16, 10)
    organs = np.zeros(shape, np.uint8)
    organs[15:, :, :] = CANONICAL_INDEX["liver"]  # high x: patient right in RAS
    ras = np.diag([2.0, 2.0, 3.0, 1.0])
    lps = ras.copy()
    lps[:2, :2] *= -1  # the same voxels stored flipped in x and y
    lps_organs = organs[::-1, ::-1]
    assert (to_ras(lps_organs, lps) == organs).all()
    assert ras_point((0, 0, 4), shape, lps) == (19, 15, 4) and ras_spacing((2.0, 2.0, 3.0), lps) == (2.0, 2.0, 3.0)
    empty = np.zeros(shape, bool)
    rgb = view_image(None, organs, empty, empty, (10, 8, 5), (2.0, 2.0, 3.0), pixel_mm=2.0)
    axial = rgb[:, :20]  # 20 x-voxels of 2 mm at 2 mm per pixel
    tinted = np.abs(axial - 0.15).sum(-1) > 0.05
    assert tinted[:, :5].all() and not tinted[:, 5:].any()  # patient right is on the viewer's left


def test_a_reported_lesion_is_a_circle_of_its_diameter():
    shape = (40, 40, 40)
    organs = np.zeros(shape, np.uint8)
    empty = np.zeros(shape, bool)
    rgb = view_image(None, organs, empty, empty, (20, 20, 20), (1.0, 1.0, 1.0), reported_diameter_mm=20.0,
                     pixel_mm=1.0)
    yellow = (rgb[:, :40] == [1.0, 1.0, 0.0]).all(-1)
    rows, cols = np.nonzero(yellow)
    assert rows.max() - rows.min() == pytest.approx(20, abs=1) and cols.max() - cols.min() == pytest.approx(20, abs=1)
