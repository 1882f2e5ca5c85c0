"""Projections for the HTML reports: the tree drawn into a small PNG, findings as SVG markers.

One orientation everywhere: the horizontal axis is x, the vertical axis (y in the xy view, z in
the xz view) points **up**, as in the viewer and in a plot of the coordinates. The check report
(:mod:`neurorecon.qc.html`) and the detector's image snippets (:mod:`neurorecon.detect.report`)
both place points with :meth:`Panel.to_px`.

Findings close together on the page are drawn as one marker with a count (:func:`cluster_points`),
so hundreds of flags stay readable instead of merging into one blob.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np

from ..io.png import encode_png, png_data_uri
from ..morphology.spatial import points_along

AXES = "xyz"
#: Palette of the tree pictures: background, then the SWC types (lightened so markers stand out).
PALETTE = np.array([[255, 255, 255], [140, 140, 140], [40, 40, 40], [110, 160, 215], [225, 120, 120],
                    [175, 140, 210], [214, 39, 40], [255, 127, 14], [31, 119, 180]], np.uint8)
_TYPE_INDEX = {1: 2, 2: 3, 3: 4, 4: 5}     # other types: index 1 (grey)
#: Palette index of a tint for each severity (findings about many nodes colour them).
TINT_INDEX = {"error": 6, "warning": 7, "info": 8}


@dataclass(frozen=True)
class Panel:
    """One projection of µm coordinates onto a picture.

    Attributes
    ----------
    a, b : int
        Data axes shown horizontally (left to right) and vertically (bottom to top).
    lo : tuple of float
        Coordinates (µm) at the left and bottom edges.
    scale : float
        Pixels per µm (the same on both axes).
    width, height : int
        Picture size, pixels.
    """

    a: int
    b: int
    lo: tuple[float, float]
    scale: float
    width: int
    height: int

    @property
    def name(self) -> str:
        return AXES[self.a] + AXES[self.b]

    def to_px(self, xyz) -> np.ndarray:
        """Pixel positions (column, row; row 0 is the top) of points, shape (n, 2), float.

        The vertical axis points up: a larger y (xy view) or z (xz view) is a smaller row.

        Examples
        --------
        >>> p = Panel(0, 1, (0.0, 0.0), 1.0, 11, 11)
        >>> p.to_px([[0, 0, 0], [0, 10, 0]])[:, 1].tolist()
        [10.0, 0.0]
        """
        p = np.asarray(xyz, dtype=float).reshape(-1, 3)
        col = (p[:, self.a] - self.lo[0]) * self.scale
        row = (self.height - 1) - (p[:, self.b] - self.lo[1]) * self.scale
        return np.stack([col, row], axis=1)


def fit_panels(xyz: np.ndarray, views=((0, 1), (0, 2)), max_px: int = 560, pad_px: int = 8) -> list[Panel]:
    """Panels showing every point, one scale for all (so the views line up along x)."""
    p = np.asarray(xyz, dtype=float).reshape(-1, 3)
    lo, hi = (p.min(0), p.max(0)) if len(p) else (np.zeros(3), np.ones(3))
    span = np.maximum(hi - lo, 1e-3)
    used = sorted({ax for v in views for ax in v})
    scale = float(min((max_px - 2 * pad_px) / span[used]))
    out = []
    for a, b in views:
        w, h = (int(np.ceil(span[k] * scale)) + 2 * pad_px + 1 for k in (a, b))
        extra = max(48 - h, 0)                # a flat view gets room for its markers, the tree centred
        out.append(Panel(a, b, (float(lo[a] - pad_px / scale), float(lo[b] - (pad_px + extra / 2) / scale)), scale, w, h + extra))
    return out


def _stamp(img: np.ndarray, px: np.ndarray, value, radius: int = 0) -> None:
    """Set the pixels at ``px`` (and ``radius`` around them) to ``value`` (scalar or per point)."""
    rc = np.rint(px[:, ::-1]).astype(np.int64)
    value = np.broadcast_to(np.asarray(value, dtype=img.dtype), (len(rc),))
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            r, c = rc[:, 0] + dr, rc[:, 1] + dc
            ok = (r >= 0) & (r < img.shape[0]) & (c >= 0) & (c < img.shape[1])
            img[r[ok], c[ok]] = value[ok]


def tree_picture(neuron, panel: Panel, tint: dict | None = None) -> np.ndarray:
    """The tree's edges in ``panel``: palette indices (see :data:`PALETTE`), shape (height, width).

    ``tint`` maps a palette index to node rows drawn over the tree in that colour."""
    img = np.zeros((panel.height, panel.width), np.uint8)
    colour = np.ones(len(neuron), np.uint8)
    for t, k in _TYPE_INDEX.items():
        colour[neuron.types == t] = k
    child = np.flatnonzero(neuron.parent >= 0)
    if len(child):
        # Points half a pixel apart along every edge: a line with no gaps at any zoom.
        pts, seg, _ = points_along(neuron.xyz[neuron.parent[child]], neuron.xyz[child], 0.5 / panel.scale)
        _stamp(img, panel.to_px(pts), colour[child][seg])
    _stamp(img, panel.to_px(neuron.xyz), colour)
    soma = np.flatnonzero(neuron.types == 1)
    if len(soma):
        _stamp(img, panel.to_px(neuron.xyz[soma]), 2, radius=2)
    for k, rows in (tint or {}).items():
        _stamp(img, panel.to_px(neuron.xyz[np.asarray(rows, dtype=np.int64)]), k, radius=1)
    return img


def marker_radius(count) -> np.ndarray:
    """Radius (px) of a marker for ``count`` findings: a ring of 5 px for one, a disc growing with
    the logarithm of the count for a group, up to 16 px (16 findings and more: the count says it)."""
    count = np.asarray(count, dtype=float)
    return np.where(count > 1, np.minimum(6.0 + 2.5 * np.log2(np.maximum(count, 1)), 16.0), 5.0)


def cluster_points(px: np.ndarray, cell: float) -> np.ndarray:
    """Group points so that no two markers overlap; returns a group number (0..k-1) per point.

    A grid of ``cell`` pixels groups the points first. Then the groups, largest first, each join
    the nearest kept group whose marker (of :func:`marker_radius`, at the mean of its points)
    theirs would overlap, or are kept; one pass does not chain joins, so a crowd does not swallow
    its neighbours one by one. Passes repeat until one joins nothing: then no markers overlap.

    Examples
    --------
    >>> cluster_points(np.array([[0.0, 0], [3, 2], [100, 100]]), 16).tolist()
    [0, 0, 1]
    """
    px = np.asarray(px, dtype=float).reshape(-1, 2)
    if not len(px):
        return np.zeros(0, np.int64)
    group = np.unique(np.floor(px / cell), axis=0, return_inverse=True)[1].ravel()
    n = int(group.max()) + 1
    count = np.bincount(group, minlength=n).astype(float)
    centre = np.stack([np.bincount(group, px[:, k], n) for k in (0, 1)], 1) / count[:, None]
    for _ in range(32):
        into, count, centre = _join_overlapping(count, centre)
        group = into[group]
        if len(into) == len(count):
            break
    return np.unique(group, return_inverse=True)[1].ravel()


def _join_overlapping(count: np.ndarray, centre: np.ndarray):
    """One pass: each group (largest first) joins the nearest kept group it would overlap, or is
    kept. Returns the kept group of each input group, and the kept groups' counts and centres
    (the means of their points)."""
    order = np.argsort(-count, kind="stable")
    into = np.empty(len(count), np.int64)
    kept_c, kept_n = np.empty((len(count), 2)), np.empty(len(count))
    k = 0
    for g in order.tolist():
        if k:
            d = np.sqrt(((kept_c[:k] - centre[g]) ** 2).sum(1))
            hit = d < marker_radius(kept_n[:k]) + marker_radius(count[g])
            if hit.any():
                j = int(np.flatnonzero(hit)[np.argmin(d[hit])])
                into[g] = j
                kept_n[j] += count[g]
                continue
        into[g], kept_c[k], kept_n[k] = k, centre[g], count[g]
        k += 1
    n = np.bincount(into, count, k)
    means = np.stack([np.bincount(into, count * centre[:, j], k) for j in (0, 1)], 1) / n[:, None]
    return into, n, means


@dataclass(frozen=True)
class Marker:
    """One marker on a panel: a finding, or a group of nearby findings."""

    col: float
    row: float
    count: int
    colour: str
    label: str
    title: str
    href: str = ""


def svg_panel(panel: Panel, picture: np.ndarray, markers: list[Marker], *, palette=PALETTE, bits: int = 4,
              title: str = "", margin: tuple[int, int] = (46, 34), overlay: str = "") -> str:
    """An inline SVG: the picture (as a PNG), ``overlay`` (SVG drawn in the panel's pixels, clipped
    to it), the markers, and labelled axes (µm; the vertical axis up)."""
    left, bottom = margin
    w, h = panel.width, panel.height
    png = png_data_uri(encode_png(picture, palette, bits=bits))
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{w + left + 8}' height='{h + bottom + 18}' "
             f"font-family='sans-serif' font-size='11'>",
             f"<text x='{left}' y='12' font-weight='bold'>{html.escape(title or panel.name + ' projection')}</text>",
             f"<g transform='translate({left},18)'><svg width='{w}' height='{h}'><image width='{w}' height='{h}' "
             f"href='{png}' style='image-rendering:pixelated'/>{overlay}</svg>",
             f"<rect width='{w}' height='{h}' fill='none' stroke='#999'/>"]
    parts += [_marker_svg(m) for m in markers]
    parts.append(_axes_svg(panel, left))
    parts.append("</g></svg>")
    return "".join(parts)


def _marker_svg(m: Marker) -> str:
    """A group: a filled disc (area growing with the count) with the count in white; a single
    finding: a ring with its number beside it."""
    if m.count > 1:
        r = float(marker_radius(m.count))
        body = (f"<circle cx='{m.col:.1f}' cy='{m.row:.1f}' r='{r:.1f}' fill='{m.colour}' fill-opacity='0.85' stroke='white'/>"
                f"<text x='{m.col:.1f}' y='{m.row + 3.5:.1f}' text-anchor='middle' font-size='10' font-weight='bold' "
                f"fill='white'>{html.escape(m.label)}</text>")
    else:
        body = (f"<circle cx='{m.col:.1f}' cy='{m.row:.1f}' r='5' fill='none' stroke='{m.colour}' stroke-width='2'/>"
                + (f"<text x='{m.col + 6:.1f}' y='{m.row - 5:.1f}' font-size='10' fill='{m.colour}'>{html.escape(m.label)}</text>"
                   if m.label else ""))
    body = f"<g><title>{html.escape(m.title)}</title>{body}</g>"
    return f"<a href='{m.href}'>{body}</a>" if m.href else body


def _axes_svg(panel: Panel, left: int) -> str:
    """Tick values at the ends of both axes and the axis names, the vertical one pointing up."""
    w, h = panel.width, panel.height
    a_lo, b_lo = panel.lo
    a_hi, b_hi = a_lo + (w - 1) / panel.scale, b_lo + (h - 1) / panel.scale
    na, nb = AXES[panel.a], AXES[panel.b]
    return (f"<text x='0' y='{h + 13}' font-size='10'>{a_lo:.0f}</text>"
            f"<text x='{w}' y='{h + 13}' font-size='10' text-anchor='end'>{a_hi:.0f}</text>"
            f"<text x='{w / 2:.0f}' y='{h + 26}' text-anchor='middle'>{na} (µm) →</text>"
            f"<text x='-4' y='{h}' font-size='10' text-anchor='end'>{b_lo:.0f}</text>"
            f"<text x='-4' y='9' font-size='10' text-anchor='end'>{b_hi:.0f}</text>"
            f"<text transform='translate({12 - left},{h / 2:.0f}) rotate(-90)' text-anchor='middle'>{nb} (µm) →</text>")
