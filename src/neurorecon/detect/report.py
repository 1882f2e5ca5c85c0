"""The check report with the detector's flags: rule findings, flagged nodes and image snippets.

Each snippet is a pair of small maximum projections (xy and xz, 96 px, 16 grey levels) around one
flagged node, oriented as the check report's projections (:mod:`neurorecon.qc.projection`: x to the
right, y or z up), with the trace drawn over it. Only the :data:`MAX_SNIPPETS` most likely flags get
one; every flag is listed in the findings table, so the page stays small (well under 1 MB for a
2,000-node trace).
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np

from ..qc.findings import describe_fix
from ..qc.projection import Marker, Panel, svg_panel

MAX_SNIPPETS = 24
SNIPPET_UM = 24.0
SNIPPET_PX = 96
GREY_LEVELS = 16
_GREYS = np.repeat(np.linspace(0, 255, GREY_LEVELS).round().astype(np.uint8)[:, None], 3, axis=1)


def snippet_panels(centre) -> list[Panel]:
    """The xy and xz panels of a :data:`SNIPPET_UM` box centred on ``centre`` (µm)."""
    c = np.asarray(centre, dtype=float)
    scale = (SNIPPET_PX - 1) / SNIPPET_UM
    return [Panel(a, b, (float(c[a] - SNIPPET_UM / 2), float(c[b] - SNIPPET_UM / 2)), scale, SNIPPET_PX, SNIPPET_PX)
            for a, b in ((0, 1), (0, 2))]


def mip_picture(img: np.ndarray, lo_voxel, voxel_size, panel: Panel) -> np.ndarray:
    """The maximum projection of ``img`` (a [z, y, x] box starting at voxel ``lo_voxel``) seen in
    ``panel``, sampled at the panel's pixels (nearest voxel; 0 outside the box), float."""
    vs = np.asarray(voxel_size, dtype=float)
    zyx_axis = {0: 2, 1: 1, 2: 0}                      # data axis (x, y, z) -> array axis
    gone = ({0, 1, 2} - {zyx_axis[panel.a], zyx_axis[panel.b]}).pop()
    mip = img.max(axis=gone)                           # the two kept array axes, in array order
    cols, rows = np.arange(panel.width), np.arange(panel.height)
    ua = panel.lo[0] + cols / panel.scale              # µm at each pixel column
    ub = panel.lo[1] + (panel.height - 1 - rows) / panel.scale   # row 0 is the top: the largest b
    ia = np.rint(ua / vs[panel.a]).astype(np.int64) - int(lo_voxel[zyx_axis[panel.a]])
    ib = np.rint(ub / vs[panel.b]).astype(np.int64) - int(lo_voxel[zyx_axis[panel.b]])
    # mip's axes are in array order (z before y before x): b's array axis comes first when it is lower.
    plane = mip if zyx_axis[panel.b] < zyx_axis[panel.a] else mip.T
    ok_a, ok_b = (ia >= 0) & (ia < plane.shape[1]), (ib >= 0) & (ib < plane.shape[0])
    out = np.zeros((panel.height, panel.width), np.float32)
    sub = plane[np.clip(ib, 0, plane.shape[0] - 1)][:, np.clip(ia, 0, plane.shape[1] - 1)]
    out[:] = np.where(ok_b[:, None] & ok_a[None, :], sub, 0)
    return out


def _grey_levels(pictures: list[np.ndarray]) -> list[np.ndarray]:
    """The pictures on one contrast scale (1st to 99.5th percentile), as :data:`GREY_LEVELS` levels."""
    allv = np.concatenate([p.ravel() for p in pictures])
    lo, hi = np.percentile(allv, [1.0, 99.5])
    span = max(float(hi - lo), 1e-6)
    return [np.clip((p - lo) / span * (GREY_LEVELS - 1), 0, GREY_LEVELS - 1).round().astype(np.uint8) for p in pictures]


def _overlay(neuron, panel: Panel, row: int, fix) -> str:
    """The trace near the node (cyan), the node (red ring) and where a move would put it (green)."""
    c = neuron.xyz[row]
    # The edges in the box the image projects (half a box deep along the hidden axis); along the
    # shown axes they may run on past the picture, which clips them.
    reach = np.full(3, SNIPPET_UM)
    reach[3 - panel.a - panel.b] = SNIPPET_UM / 2
    inside = np.all(np.abs(neuron.xyz - c) <= reach, axis=1)
    has = neuron.parent >= 0
    rows = np.flatnonzero(has & (inside | inside[np.where(has, neuron.parent, 0)]))
    a, b = panel.to_px(neuron.xyz[rows]), panel.to_px(neuron.xyz[neuron.parent[rows]])
    lines = "".join(f"M{x0:.1f} {y0:.1f}L{x1:.1f} {y1:.1f}" for (x0, y0), (x1, y1) in zip(a.tolist(), b.tolist()))
    out = f"<path d='{lines}' stroke='#00c8ff' stroke-width='1' fill='none' opacity='0.8'/>" if lines else ""
    d = fix.to_dict() if fix is not None else {}
    if d.get("action") == "move" and np.shape(d.get("xyz")) == (3,):
        (x0, y0), (x1, y1) = panel.to_px([c, d["xyz"]]).tolist()
        out += f"<path d='M{x0:.1f} {y0:.1f}L{x1:.1f} {y1:.1f}' stroke='#2ca02c' stroke-width='1.5'/>" \
               f"<circle cx='{x1:.1f}' cy='{y1:.1f}' r='2.5' fill='#2ca02c'/>"
    return out


def snippet_html(volume, neuron, row: int, p: float, reason: str, fix) -> str:
    """One flagged node's figure: xy and xz projections of the image around it, and a caption."""
    from .api import REASON_TEXT

    c = neuron.xyz[row]
    lo, hi = volume.box_around(c - SNIPPET_UM / 2, c + SNIPPET_UM / 2)
    img = volume.read(tuple(lo), tuple(hi)).astype(np.float32)
    panels = snippet_panels(c)
    pics = _grey_levels([mip_picture(img, lo, volume.voxel_size, pn) for pn in panels])
    ring = [Marker(*pn.to_px(c)[0].tolist(), 1, "#ff3030", "", f"node {neuron.ids[row]}") for pn in panels]
    svgs = "".join(svg_panel(pn, pic, [m], palette=_GREYS, bits=4, title=pn.name, margin=(30, 28),
                             overlay=_overlay(neuron, pn, row, fix)) for pn, pic, m in zip(panels, pics, ring))
    caption = (f"node {neuron.ids[row]}: p = {p:.2f}, {REASON_TEXT.get(reason, reason or 'possible error')}<br>"
               f"proposed: {describe_fix(fix, neuron)}")
    return (f"<figure style='display:inline-block;margin:4px;width:{2 * SNIPPET_PX + 90}px;vertical-align:top'>{svgs}"
            f"<figcaption style='font-size:12px'>{html.escape(caption).replace('&lt;br&gt;', '<br>')}</figcaption></figure>")


def snippet_rows(result, max_snippets: int = MAX_SNIPPETS) -> np.ndarray:
    """Rows of the flags that get a snippet: the most likely first, one per site (a flag proposing
    the same fix as a shown one, or within :data:`SNIPPET_UM` / 4 of one, adds nothing to look at)."""
    flagged = np.flatnonzero(result.flagged)
    order = flagged[np.argsort(-result.p_error[flagged], kind="stable")]
    xyz = result.neuron.xyz
    shown, fixes = [], set()
    for r in order.tolist():
        if len(shown) >= max_snippets:
            break
        fix = result.fixes[r]
        key = repr(fix.to_dict()) if fix is not None else None
        if key in fixes or (shown and np.min(np.abs(xyz[shown] - xyz[r]).max(1)) < SNIPPET_UM / 4):
            continue
        shown.append(r)
        if key is not None:
            fixes.add(key)
    return np.asarray(shown, dtype=np.int64)


def snippets_html(result, volume, max_snippets: int = MAX_SNIPPETS) -> str:
    """Image snippets of up to ``max_snippets`` flagged sites (p descending); every flag is listed."""
    flagged = np.flatnonzero(result.flagged)
    order = flagged[np.argsort(-result.p_error[flagged], kind="stable")]
    shown = snippet_rows(result, max_snippets)
    head = (f"<h2>Flagged nodes: {len(flagged)}; {len(shown)} sites shown, the most likely first</h2>"
            "<p class='note'>Maximum projections of the image around each node (x right, y or z up, as above), "
            "the trace in cyan, the node ringed in red, a proposed move in green.</p>")
    parts = [head] + [snippet_html(volume, result.neuron, r, float(result.p_error[r]), str(result.reason[r]), result.fixes[r])
                      for r in shown.tolist()]
    rest = order[~np.isin(order, shown)]
    if len(rest):
        ids = ", ".join(str(int(i)) for i in result.neuron.ids[rest])
        parts.append(f"<p>Also flagged (no snippet of their own; each has a row in the findings table): nodes {ids}</p>")
    return "".join(parts)


def write_detection_html(result, trace: str | os.PathLike, volume, out_dir: str | os.PathLike) -> Path:
    """The foundation's check report for ``trace`` plus the detector's flags and image snippets."""
    from ..qc.html import write_html
    from ..qc.run import FileReport, check_neuron

    findings = check_neuron(result.neuron) + result.findings()
    rep = FileReport(str(trace), True, None, len(result.neuron), findings)
    return write_html([rep], out_dir, extras={str(trace): snippets_html(result, volume)},
                      neurons={str(trace): result.neuron})
