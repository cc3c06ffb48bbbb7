"""Static HTML case pages and their index: what a radiologist reads to judge a disagreement, no server needed.

Per CT, ``OUT/<ct_id>.html`` with, for each predicted lesion and each reported one, a PNG of axial, coronal and
sagittal slices through it (``OUT/<ct_id>/view_<n>.png``, drawn with matplotlib's ``imsave``): the CT in a
soft-tissue window, organ masks tinted, predicted lesions in red (the viewed one) or orange, a reported lesion as a
yellow circle of its reported diameter. A reported lesion is shown where its matched prediction lies, else at the
centre of its reported sub-segment, else of its organ. Beside them: the lesion table (organ, sub-segment, side,
diameter mm, volume mm³, probability) next to the report's records, the audit findings, and links to the NIfTI
files. ``OUT/index.html`` lists every CT, highest disagreement first.

Reports are PHI: pages show records only; the report text appears only when the caller passes it
(`rsuper audit --show-report-text`). Slices are shown in radiological convention (patient right on the left,
anterior and superior up), whatever the file's orientation, with square millimetres per pixel.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from train.data.labels import CANONICAL_LABELS, organ_of_label
from train.review.audit import ReportedLesion
from train.review.lesions import component_in_box

WINDOW_HU = (-160.0, 240.0)  # the abdominal soft-tissue window of the training recipe
PIXEL_MM = 1.5  # display resolution of every panel
MAX_VIEWS = 8  # views per page: the largest predicted lesions and the reported ones, in that order
_ORGAN_RGB = {"liver": (0.55, 0.35, 0.85), "pancreas": (0.2, 0.75, 0.75), "kidney": (0.25, 0.5, 1.0),
              "spleen": (0.3, 0.85, 0.3)}
_OTHER_RGB = (0.7, 0.7, 0.7)
_VIEWED_RGB, _OTHER_LESION_RGB, _REPORTED_RGB = (1.0, 0.1, 0.1), (1.0, 0.6, 0.0), (1.0, 1.0, 0.0)

_CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #bbb;padding:3px 7px;font-size:13px;text-align:left}th{background:#eee}
.score{font-weight:bold}.reason{color:#a00}figure{display:inline-block;margin:.5em}img{border:1px solid #444}
figcaption{font-size:13px}.cols{display:flex;gap:2em;flex-wrap:wrap}"""


# --------------------------------------------------------------------------------------------- images (arrays)


def to_ras(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``array`` (X, Y, Z, ...) with its first three axes flipped / permuted to RAS (no resampling)."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    return nib.orientations.apply_orientation(array, ornt)


def ras_point(ijk: Sequence[float], shape: Sequence[int], affine: np.ndarray) -> tuple[int, int, int]:
    """A voxel index of the file's grid as the index of the same voxel in :func:`to_ras` order."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    out = [0, 0, 0]
    for axis, (target, flip) in enumerate(ornt):
        v = float(ijk[axis])
        out[int(target)] = int(round(shape[axis] - 1 - v if flip < 0 else v))
    return tuple(out)


def ras_spacing(spacing_mm: Sequence[float], affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (mm) along the axes of :func:`to_ras` order."""
    import nibabel as nib

    out = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(nib.orientations.io_orientation(affine)):
        out[int(target)] = float(spacing_mm[axis])
    return tuple(out)


def _resize(img: np.ndarray, pixel_mm: Sequence[float], target_mm: float) -> np.ndarray:
    """Nearest-neighbour resampling of a (rows, cols, ...) image to ``target_mm`` per pixel."""
    rows = np.minimum((np.arange(max(1, round(img.shape[0] * pixel_mm[0] / target_mm))) * target_mm
                       / pixel_mm[0]).astype(int), img.shape[0] - 1)
    cols = np.minimum((np.arange(max(1, round(img.shape[1] * pixel_mm[1] / target_mm))) * target_mm
                       / pixel_mm[1]).astype(int), img.shape[1] - 1)
    return img[rows][:, cols]


def _organ_colors() -> np.ndarray:
    table = np.zeros((len(CANONICAL_LABELS), 3))
    for i, name in enumerate(CANONICAL_LABELS):
        organ = organ_of_label(name)
        if organ is not None:
            table[i] = _ORGAN_RGB.get(organ, _OTHER_RGB)
    return table


_ORGAN_COLORS = _organ_colors()


def _edge(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a 2-D mask (4-neighbourhood)."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def _panel(ct: np.ndarray | None, organs: np.ndarray, lesions: np.ndarray, viewed: np.ndarray,
           circle: tuple[float, float, float] | None) -> np.ndarray:
    """One RGB panel (rows, cols, 3) in [0, 1] from 2-D display-oriented slices: organs tinted, predicted
    lesions outlined and filled, the viewed lesion in red, a reported lesion's circle (row, col, radius px)."""
    if ct is None:
        gray = np.full(organs.shape, 0.15)
    else:
        lo, hi = WINDOW_HU
        gray = np.clip((ct.astype(float) - lo) / (hi - lo), 0, 1)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    tint = organs > 0
    rgb[tint] = 0.75 * rgb[tint] + 0.25 * _ORGAN_COLORS[organs[tint]]
    for mask, color in ((lesions & ~viewed, _OTHER_LESION_RGB), (viewed, _VIEWED_RGB)):
        rgb[mask] = 0.5 * rgb[mask] + 0.5 * np.asarray(color)
        rgb[_edge(mask)] = color
    if circle is not None:
        r0, c0, radius = circle
        rr, cc = np.indices(organs.shape)
        ring = np.abs(np.hypot(rr - r0, cc - c0) - radius) < 0.8
        rgb[ring] = _REPORTED_RGB
    return rgb


def view_image(ct: np.ndarray | None, organs: np.ndarray, lesion_map: np.ndarray, viewed: np.ndarray,
               point: Sequence[int], spacing_mm: Sequence[float], reported_diameter_mm: float | None = None,
               pixel_mm: float = PIXEL_MM) -> np.ndarray:
    """Axial, coronal and sagittal panels through ``point``, side by side (RGB float, rows x cols x 3).

    Args:
        ct: HU volume in RAS order (X, Y, Z), or None (a grey background).
        organs: canonical organ label map, RAS order.
        lesion_map: bool, every predicted lesion voxel, RAS order.
        viewed: bool, the viewed predicted lesion (may be empty), RAS order.
        point: (x, y, z) voxel index in RAS order the three planes go through.
        spacing_mm: voxel size (mm) along the RAS axes.
        reported_diameter_mm: draw a circle of this diameter at ``point``.
        pixel_mm: display resolution.
    """
    x, y, z = (int(np.clip(p, 0, n - 1)) for p, n in zip(point, organs.shape))
    sx, sy, sz = spacing_mm
    # Rows top to bottom, columns left to right: axial (anterior..posterior, patient right..left), coronal and
    # sagittal (superior..inferior; right..left, anterior..posterior).
    planes = [
        (lambda a: a[::-1, ::-1, z].T, (sy, sx), (y, x), (organs.shape[1], organs.shape[0])),
        (lambda a: a[::-1, y, ::-1].T, (sz, sx), (z, x), (organs.shape[2], organs.shape[0])),
        (lambda a: a[x, ::-1, ::-1].T, (sz, sy), (z, y), (organs.shape[2], organs.shape[1])),
    ]
    panels = []
    for cut, px, (r, c), (nr, nc) in planes:
        circle = None
        if reported_diameter_mm:
            circle = ((nr - 1 - r) * px[0] / pixel_mm, (nc - 1 - c) * px[1] / pixel_mm,
                      reported_diameter_mm / 2 / pixel_mm)
        stack = [_resize(cut(a), px, pixel_mm) for a in
                 ([ct] if ct is not None else []) + [organs, lesion_map, viewed]]
        ct2 = stack.pop(0) if ct is not None else None
        panels.append(_panel(ct2, *stack, circle))
    height = max(p.shape[0] for p in panels)
    gap = np.ones((height, 4, 3))
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0))) for p in panels]
    return np.concatenate([padded[0], gap, padded[1], gap, padded[2]], axis=1)


# --------------------------------------------------------------------------------------------- page content


def _place(r: ReportedLesion, organ_map: np.ndarray) -> tuple[float, float, float] | None:
    """Centre (voxel, file order) of a reported lesion's sub-segment or side, else of its organ (the larger side of
    a paired organ: the midline between two kidneys shows neither); None when the organ map lacks the organ."""
    named = set(r.segments) | ({f"{r.organ}_{r.side}"} if r.side else set())
    sides = [{f"{r.organ}_{s}"} for s in ("left", "right")]
    whole = {n for n in CANONICAL_LABELS if organ_of_label(n) == r.organ}
    for group in ([named], sides, [whole]):
        found = []
        for names in group:
            values = [i for i, n in enumerate(CANONICAL_LABELS) if n in names]
            where = np.argwhere(np.isin(organ_map, values)) if values else np.empty((0, 3))
            if len(where):
                found.append(where)
        if found:
            return tuple(float(v) for v in max(found, key=len).mean(0))
    return None


def _views(result, organ_map: np.ndarray) -> list[dict]:
    """What each PNG of a page shows: a point (file voxel order), the predicted lesion viewed, a reported size."""
    views = []
    for i, p in enumerate(result.lesions[:MAX_VIEWS]):
        views.append({"point": p.center_voxel, "lesion": i, "reported_mm": None,
                      "caption": f"predicted P{i + 1}: {p.organ}{_where(p.segment, p.side)}, {p.diameter_mm:.1f} mm"})
    index = {id(p): i for i, p in enumerate(result.lesions)}
    for n, (r, p) in enumerate(result.pairs):
        if len(views) >= MAX_VIEWS:
            break
        point = p.center_voxel if p is not None else _place(r, organ_map)
        if point is None:
            continue
        size = f"{r.diameter_mm:.1f} mm" if r.diameter_mm else "unsized"
        seen = f"matched P{index[id(p)] + 1}" if p is not None else "not found"
        views.append({"point": point, "lesion": index.get(id(p)) if p is not None else None,
                      "reported_mm": r.diameter_mm,
                      "caption": f"reported R{n + 1}: {r.organ}{_where(', '.join(r.segments) or None, r.side)}, "
                                 f"{size} ({seen})"})
    return views


def _where(segment: str | None, side: str | None) -> str:
    parts = [x for x in (segment, side) if x]
    return f" ({', '.join(parts)})" if parts else ""


def _fmt(v, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _link(target: Path | None, page_dir: Path, label: str) -> str:
    if target is None or not Path(target).is_file():
        return ""
    rel = os.path.relpath(Path(target).resolve(), page_dir.resolve())
    return f'<a href="{html.escape(rel)}">{html.escape(label)}</a>'


def _lesion_rows(result) -> str:
    rows = []
    for i, p in enumerate(result.lesions):
        rows.append(f"<tr><td>P{i + 1}</td><td>{p.organ}</td><td>{p.segment or '-'}</td><td>{p.side or '-'}</td>"
                    f"<td>{p.diameter_mm:.1f}</td><td>{p.volume_mm3:.0f}</td><td>{_fmt(p.max_probability, '.2f')}</td>"
                    f"<td>{_fmt(p.hu_contrast, '+.0f')}</td></tr>")
    head = ("<tr><th></th><th>organ</th><th>sub-segment</th><th>side</th><th>diameter mm</th><th>volume mm³</th>"
            "<th>max prob.</th><th>HU vs organ</th></tr>")
    return f"<table>{head}{''.join(rows) or '<tr><td colspan=8>no predicted lesion</td></tr>'}</table>"


def _record_rows(result) -> str:
    if result.records is None:
        return "<p>No report compared (pages of <code>rsuper predict</code>; run <code>rsuper audit</code>).</p>"
    index = {id(p): i for i, p in enumerate(result.lesions)}
    rows = []
    for n, (r, p) in enumerate(result.pairs):
        rows.append(f"<tr><td>R{n + 1}</td><td>{r.organ}</td><td>{', '.join(r.segments) or '-'}</td>"
                    f"<td>{r.side or '-'}</td><td>{_fmt(r.diameter_mm)}</td><td>{r.attenuation}</td>"
                    f"<td>{'P' + str(index[id(p)] + 1) if p is not None else 'not found'}</td></tr>")
    free = ", ".join(sorted(result.records.lesion_free)) or "-"
    unsure = ", ".join(sorted(result.records.equivocal)) or "-"
    head = ("<tr><th></th><th>organ</th><th>sub-segments</th><th>side</th><th>largest mm</th><th>attenuation</th>"
            "<th>prediction</th></tr>")
    body = "".join(rows) or "<tr><td colspan=7>no reported lesion in the audited organs</td></tr>"
    return (f"<table>{head}{body}</table><p>Reported without lesion: {html.escape(free)}. "
            f"Equivocal: {html.escape(unsure)}.</p>")


def _records_of_unaudited_organs(result) -> str:
    """Reported tumours in organs the model has no lesion channel for (listed, not compared)."""
    if result.records is None:
        return ""
    organs = set(result.prediction.organs)
    other = sorted({t.organ for t in result.records.tumors if t.organ not in organs})
    return f"<p>Also reported, not audited (no lesion channel): {html.escape(', '.join(other))}.</p>" if other else ""


def case_page(result, page_dir: Path, images: Sequence[tuple[str, str]], report_text: str | None = None) -> str:
    """The HTML of one CT's page; ``images`` are (relative PNG path, caption)."""
    a = result.audit
    pred = result.prediction
    title = html.escape(pred.ct_id)
    if a is not None:
        reasons = "".join(f"<li class=reason>{html.escape(f)}</li>" for f in a.findings) or "<li>none</li>"
        why = html.escape(", ".join(r.value for r in a.reasons)) or "model and report agree"
        head = (f"<p class=score>disagreement score {a.score:.2f} — {why}</p>"
                f"<h2>Audit findings</h2><ul>{reasons}</ul>")
    else:
        head = ""
    figures = "".join(f'<figure><img src="{html.escape(src)}" alt="{html.escape(cap)}"><figcaption>'
                      f"{html.escape(cap)}</figcaption></figure>" for src, cap in images) or "<p>nothing to show</p>"
    targets = [(pred.folder / n, n) for n in ("lesions.nii.gz", "channels.nii.gz", "probabilities.nii.gz")]
    targets.append((pred.ct_path, "CT"))
    if result.case_dir is not None:
        targets += [(result.case_dir / n, f"case {n}") for n in ("ct.nii.gz", "organs.nii.gz")]
    seen, files = set(), []
    for target, label in targets:
        if target is not None and Path(target).resolve() not in seen:
            seen.add(Path(target).resolve())
            files.append(_link(target, page_dir, label))
    text = (f"<h2>Report text</h2><pre>{html.escape(report_text)}</pre>" if report_text is not None else "")
    report_id = html.escape(a.report_id or "-") if a is not None else "-"
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{title}</title><style>{_CSS}</style></head>"
            f"<body><p><a href=index.html>&larr; all CTs</a></p><h1>{title}</h1><p>report {report_id}</p>{head}"
            f"<p>Red: the predicted lesion viewed; orange: other predicted lesions; yellow circle: a reported lesion "
            f"at its reported diameter; tints: organ masks. Axial, coronal, sagittal; patient right on the left.</p>"
            f"{figures}<div class=cols><div><h2>Predicted lesions</h2>{_lesion_rows(result)}</div>"
            f"<div><h2>Report records</h2>{_record_rows(result)}{_records_of_unaudited_organs(result)}</div></div>"
            f"<h2>Files</h2><p>{' · '.join(f for f in files if f)}</p>{text}</body></html>")


def index_page(entries: Sequence[dict]) -> str:
    """The HTML of the index: one row per CT (``ct_id``, ``page``, ``thumb``, audit row or None), in order."""
    rows = []
    for e in entries:
        a = e["audit"]
        name = html.escape(e["ct_id"])
        link = f'<a href="{html.escape(e["page"])}">{name}</a>' if e["page"] else name
        thumb = f'<img src="{html.escape(e["thumb"])}" height=60 alt="">' if e["thumb"] else ""
        if a is None:
            rows.append(f"<tr><td>{link}</td><td>{thumb}</td><td>{e['n_predicted']}</td></tr>")
        else:
            rows.append(f"<tr><td>{link}</td><td>{thumb}</td><td class=score>{a.score:.2f}</td>"
                        f"<td>{html.escape(', '.join(r.value for r in a.reasons)) or '-'}</td><td>{a.n_reported}</td>"
                        f"<td>{a.n_predicted}</td><td>{_fmt(a.reported_largest_mm)}</td>"
                        f"<td>{_fmt(a.predicted_largest_mm)}</td></tr>")
    audited = any(e["audit"] is not None for e in entries)
    head = ("<tr><th>CT</th><th>view</th><th>score</th><th>reasons</th><th>reported</th><th>predicted</th>"
            "<th>reported largest mm</th><th>predicted largest mm</th></tr>" if audited else
            "<tr><th>CT</th><th>view</th><th>predicted lesions</th></tr>")
    what = "highest disagreement first" if audited else "predictions"
    return (f"<!doctype html><html><head><meta charset=utf-8><title>rsuper review</title><style>{_CSS}</style>"
            f"</head><body><h1>Report-guided review: {len(entries)} CTs, {what}</h1><table>{head}{''.join(rows)}"
            f"</table></body></html>")


def write_case_page(result, out: Path, ct_hu: np.ndarray | None, organ_map: np.ndarray,
                    report_text: str | None = None) -> tuple[str, str | None]:
    """Write ``out/<ct_id>.html`` and its PNGs; returns (page name, first PNG or None), relative to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = result.prediction
    img_dir = out / pred.ct_id
    img_dir.mkdir(parents=True, exist_ok=True)
    affine, shape = pred.affine, pred.shape
    organs_ras = to_ras(organ_map, affine)
    lesion_ras = to_ras(pred.lesion_map > 0, affine)
    ct_ras = to_ras(ct_hu, affine) if ct_hu is not None else None
    spacing_ras = ras_spacing(pred.spacing_mm, affine)
    images = []
    for n, v in enumerate(_views(result, organ_map)):
        viewed = np.zeros(shape, bool)
        if v["lesion"] is not None:
            p = result.lesions[v["lesion"]]
            box = tuple(slice(a, b) for a, b in zip(*p.box))
            viewed[box] = component_in_box(pred.lesion_map, p)
        rgb = view_image(ct_ras, organs_ras, lesion_ras, to_ras(viewed, affine),
                         ras_point(v["point"], shape, affine), spacing_ras, v["reported_mm"])
        name = f"view_{n + 1}.png"
        plt.imsave(img_dir / name, np.clip(rgb, 0, 1))
        images.append((f"{pred.ct_id}/{name}", v["caption"]))
    page = f"{pred.ct_id}.html"
    (out / page).write_text(case_page(result, out, images, report_text), encoding="utf-8")
    pred.release()
    return page, images[0][0] if images else None


def write_pages(results: Sequence, out: Path, *, arrays_of: Callable, max_pages: int | None = None,
                report_text_of: Mapping[str, str] | None = None, progress: bool = False) -> Path:
    """Case pages for the first ``max_pages`` results (all when None) and an index of every result.

    Args:
        results: :class:`train.review.files.CaseResult` rows, in the order the index lists them.
        out: the pages folder (``index.html``, ``<ct_id>.html``, ``<ct_id>/view_<n>.png``).
        arrays_of: result -> (CT in HU or None, canonical organ map), read per page
            (:func:`train.review.files.page_arrays`).
        max_pages: how many case pages to draw.
        report_text_of: report_id -> text to show on the pages (PHI: only when asked for).
        progress: a tqdm bar on stderr.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = list(results)[: max_pages if max_pages is not None else None]
    if progress:
        from tqdm import tqdm

        todo = tqdm(todo, desc="pages", unit="CT", disable=None)  # None: only on a terminal
    drawn = {}
    for r in todo:
        ct, organs = arrays_of(r)
        report_id = r.audit.report_id if r.audit is not None else None
        text = report_text_of.get(report_id) if report_text_of and report_id else None
        drawn[r.prediction.ct_id] = write_case_page(r, out, ct, organs, text)
    entries = [{"ct_id": r.prediction.ct_id, "audit": r.audit, "n_predicted": len(r.lesions),
                "page": drawn.get(r.prediction.ct_id, (None, None))[0],
                "thumb": drawn.get(r.prediction.ct_id, (None, None))[1]} for r in results]
    tmp = out / "index.html.tmp"
    tmp.write_text(index_page(entries), encoding="utf-8")
    os.replace(tmp, out / "index.html")
    return out / "index.html"
