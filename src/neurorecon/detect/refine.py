"""Where to move an off-signal node: onto its fibre, found on the raw voxels, or nowhere.

The first version moved nodes onto a coarse ridge found by :mod:`neurorecon.detect.image_features`
(a disk of 1 µm steps across the fibre on a ~0.9 µm binned, smoothed grid, a distance-weighted pick,
a hill-climb of at most four steps and a parabola), which put only about half of the depth-shifted
nodes of the held-out benchmark within 1 µm of their fibre. Measured on held-out crops: the failures are not a sub-µm quantisation problem. The
disk is oriented by the node's own tangent (parent to child), which a shifted run bends (a lateral
shift is a bump), so the disk is tilted away from the direction the node was shifted in; the distance weighting picks the near flank of the axially
blurred fibre (sigma 0.9-1.8 µm in z) and the climb stops on it or on a noise bump (61 % of the failed
depth moves went the right way but less than 80 % of it, 31 % went the wrong way in z); the disk (7 µm)
is smaller than the largest shifts (8 µm); and the model's reason is the wrong one of the two for a
third of the lateral errors. Separately, most moves proposed for *correct* nodes (about 2,300 per 120
crops) are nodes on dim or densely packed fibres that the model flags: they sit on their fibre, and
any move takes them off it. This module looks again, on the raw voxels and only for the nodes
flagged off-signal:

* **Where to search.** A node put off its fibre in depth (a wrong focal plane) has its fibre straight
  above or below it; one put off sideways has it beside it, horizontally across the fibre. Both lines
  are searched, 11 µm each way, each through a thin strip (±1.5 µm across the line, averaged over
  ±0.8 µm along the fibre) of the lightly smoothed raw image, whatever the model's reason said. The
  depth line needs no fibre direction at all; the lateral one takes it from the *anchors*, the
  unflagged nodes that bracket the flagged run (they are on the fibre; the run's own tangent is not).
* **Which fibre.** Peaks of the background-subtracted, contrast-normalised profile are candidates,
  placed to a fraction of a step by a parabola. Each is scored by its height, mildly by its distance
  and by the model's reason, and by how close it lies to the path of the anchors: a shifted run
  belongs where its unflagged neighbours say the fibre runs, so a distractor fibre crossing the line,
  or another branch, scores low.
* **When not to move.** Not when the node already lies on its anchors' path (nothing says it is off
  its fibre: the dim-fibre false alarms), when the move would not bring it back towards that path,
  when no anchor is within reach, when the best candidate is weak, when a second fibre elsewhere scores
  nearly as well (ambiguous), or when the target is already traced by another part of the trace.

Everything is in µm and (x, y, z) order; volumes are read through :class:`neurorecon.io.volume.Volume`
(``read`` of a z, y, x voxel box, zero outside the image; samples outside are treated as missing).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..morphology import graph
from ..morphology.spatial import cross_pairs

# Sampling.
SEARCH_UM = 11.0        # how far along each search line (the errors shift nodes by up to 8 µm)
STEP_UM = 0.25          # sampling step along the line: well below the finest voxel and fibre width
STRIP_UM = 1.5          # half-width of the strip across the line (trace jitter, tangent error)
STRIP_STEP_UM = 0.5     # spacing of the rows across the strip (finer rows changed nothing measurable)
ALONG_UM = (-0.8, 0.0, 0.8)   # averaged along the fibre: noise down, crossing fibres diluted
SMOOTH_UM = 0.4         # light smoothing of the raw voxels before sampling
MAX_PEAKS = 6           # candidates kept per line and node
MIN_SHIFT_UM = 1.5      # peaks closer than this are the node's own ridge, not a target
STRIP_SIGMA_UM = 1.0    # preference for the middle row of the strip (the line itself)
# The anchors: the unflagged nodes around a flagged run.
ANCHOR_HOPS = 8         # how far to walk for them along the tree
OUTER_HOPS = 4          # how far beyond a lone anchor the fibre direction is read
# Choosing and refusing (measured on held-out crops of another seed than the benchmark's).
HEIGHT_MIN = 0.3        # a candidate must rise this far above background (in fibre contrasts)
DIST_SIGMA_UM = 8.0     # mild preference for nearer candidates (the errors shift by 3-8 µm)
REASON_BONUS = 1.3      # the line matching the model's reason is favoured, not trusted
PATH_SIGMA_UM = 3.0     # how far from the anchors' path the fibre plausibly runs ...
PATH_SIGMA_FRAC = 0.1   # ... plus this fraction of the anchors' distance (a longer path may curve more)
OFF_PATH_MIN_UM = 1.5   # a node closer than this to its anchors' path is not off its fibre ...
BACK_RATIO = 1.0        # ... and a move must not take it further from that path
ONE_SIDED_MIN_UM = 2.5  # the same two with only one anchor (a run at a tip or root, weaker evidence):
ONE_SIDED_RATIO = 0.7   # the node must be further off, and the move bring it clearly closer
AMBIG_UM = 2.0          # candidates further apart than this are different fibres ...
AMBIG_RATIO = 0.7       # ... and a second one scoring this close to the best makes the choice ambiguous
COVER_UM = 1.0          # a target this close to another part of the trace is already traced ...
COVER_HOPS = 16         # ... "another part" being more than this many hops away along the tree
MOVE_REASONS = ("off_signal_z", "off_signal_xy")

_S = np.arange(-SEARCH_UM, SEARCH_UM + 1e-9, STEP_UM)
_Q = np.arange(-STRIP_UM, STRIP_UM + 1e-9, STRIP_STEP_UM)
_A = np.asarray(ALONG_UM)


@dataclass
class Candidates:
    """Fibre candidates along the two search lines of each node to move.

    Attributes
    ----------
    rows : (n,) int
        The trace rows the candidates belong to.
    disp : (n, K, 3) float
        Displacement from the node to each candidate (µm, xyz); NaN where there is none.
    height : (n, K) float
        Candidate height above local background in units of the fibre contrast; NaN where none.
    line : (n, K) int
        0 for the depth line (z), 1 for the lateral line (horizontal, across the fibre); -1 none.
    """

    rows: np.ndarray
    disp: np.ndarray
    height: np.ndarray
    line: np.ndarray


def run_anchors(parent: np.ndarray, rows: np.ndarray, flagged: np.ndarray, hops: int = ANCHOR_HOPS):
    """The unflagged nodes that bracket the flagged run through each of ``rows``.

    Walks up (parents) and down (first children) from each row while on flagged nodes, at most
    ``hops`` hops each way. When a run was shifted off its fibre, the nodes reached are on it.

    Parameters
    ----------
    parent : (N,) int
        Parent row of each node (-1 for roots).
    rows : (n,) int
        Rows to bracket.
    flagged : (N,) bool
        Nodes the detector flagged.
    hops : int
        Largest number of hops to walk each way.

    Returns
    -------
    up, down : (n,) int
        Where the walks stopped: the anchors, or a flagged node where the tree or ``hops`` ended.
    n_up, n_down : (n,) int
        Hops walked each way.
    """
    first_child = graph.first_child(parent)
    up = np.asarray(rows, dtype=np.int64).copy()
    down = up.copy()
    n_up = np.zeros(len(up), np.int64)
    n_down = np.zeros(len(up), np.int64)
    for _ in range(hops):
        p = parent[up]
        go = flagged[up] & (p >= 0)
        up = np.where(go, p, up)
        n_up += go
        ch = first_child[down]
        go = flagged[down] & (ch >= 0)
        down = np.where(go, ch, down)
        n_down += go
    return up, down, n_up, n_down


def fibre_directions(xyz: np.ndarray, parent: np.ndarray, rows: np.ndarray, flagged: np.ndarray,
                     hops: int = ANCHOR_HOPS) -> np.ndarray:
    """Unit fibre direction at each of ``rows``, from the nodes that bracket its run.

    A shifted run distorts its own tangent (a lateral shift bends it into a bump: with the node's
    parent and child as the tangent, the line across the fibre passes within 1 µm of where a
    laterally shifted node belongs for under a tenth of them, with the anchors for two thirds), so
    the direction runs from anchor to anchor (:func:`run_anchors`); where the walks could not leave
    the node (a lone flagged tip or root) its parent or first child stands in.

    Parameters
    ----------
    xyz : (N, 3) float
        Node positions (µm).
    parent : (N,) int
        Parent row of each node (-1 for roots).
    rows : (n,) int
        Rows to compute the direction for.
    flagged : (N,) bool
        Nodes the detector flagged.
    hops : int
        Largest number of hops to walk each way.

    Returns
    -------
    (n, 3) float
        Unit vectors; (1, 0, 0) where the nodes around give no direction.
    """
    up, down, _, _ = run_anchors(parent, rows, flagged, hops)
    first_child = graph.first_child(parent)
    same = up == down
    up = np.where(same & (parent[up] >= 0), parent[np.maximum(up, 0)], up)
    down = np.where(same & (first_child[down] >= 0), first_child[np.maximum(down, 0)], down)
    t = xyz[down] - xyz[up]
    norm = np.linalg.norm(t, axis=1, keepdims=True)
    return np.where(norm > 1e-9, t / np.maximum(norm, 1e-9), np.array([1.0, 0.0, 0.0]))


@dataclass
class AnchorPath:
    """Where the fibre of each node's run runs, according to the anchors around the run.

    Attributes
    ----------
    sides : (n,) int
        2: anchors on both sides, the fibre runs near the straight segment ``start``-``end``;
        1: one anchor only (the run reaches a tip or a root), the fibre leaves ``start`` along
        ``direction``; 0: no anchor within reach, the path says nothing.
    start, end : (n, 3) float
        The anchor above (or the lone anchor) and the one below (two sides; else ``start``).
    direction : (n, 3) float
        One side: unit direction in which the fibre leaves the anchor towards the run, from the
        anchor's own neighbours outside the run; zeros otherwise.
    span : (n,) float
        Distance between the two anchors, else 0: a longer path may curve further from the segment.
    """

    sides: np.ndarray
    start: np.ndarray
    end: np.ndarray
    direction: np.ndarray
    span: np.ndarray

    def deviation(self, pts: np.ndarray) -> np.ndarray:
        """Distance (µm) of points ``pts`` (n, ..., 3) from each node's path: the segment (two
        anchors) or the ray (one); NaN without anchors."""
        extra = (1,) * (pts.ndim - 2)

        def per_node(a):
            return a.reshape((-1,) + extra + a.shape[1:])

        v = pts - per_node(self.start)
        d = per_node(self.direction)
        ray = np.linalg.norm(v - np.maximum((v * d).sum(-1, keepdims=True), 0.0) * d, axis=-1)
        seg = per_node(self.end - self.start)
        t = np.clip((v * seg).sum(-1, keepdims=True) / np.maximum((seg * seg).sum(-1, keepdims=True), 1e-12), 0, 1)
        segment = np.linalg.norm(v - t * seg, axis=-1)
        sides = per_node(self.sides)
        return np.where(sides == 2, segment, np.where(sides == 1, ray, np.nan))


def anchor_path(xyz: np.ndarray, parent: np.ndarray, rows: np.ndarray, flagged: np.ndarray,
                hops: int = ANCHOR_HOPS) -> AnchorPath:
    """The path the run through each of ``rows`` would follow if it were on its fibre.

    Parameters
    ----------
    xyz : (N, 3) float
        Node positions (µm).
    parent : (N,) int
        Parent row of each node (-1 for roots).
    rows : (n,) int
        Rows to place.
    flagged : (N,) bool
        Nodes the detector flagged.
    hops : int
        Largest number of hops to walk each way to an anchor.

    Returns
    -------
    AnchorPath
    """
    rows = np.asarray(rows, dtype=np.int64)
    up, down, n_up, n_down = run_anchors(parent, rows, flagged, hops)
    ok_up = ~flagged[up] & (n_up > 0)
    ok_down = ~flagged[down] & (n_down > 0)
    both = ok_up & ok_down
    start = np.where(ok_up[:, None], xyz[up], xyz[down])
    end = np.where(both[:, None], xyz[down], start)
    # A lone anchor: the fibre leaves it in the direction it arrives in from outside the run.
    first_child = graph.first_child(parent)
    outer_up = up.copy()
    outer_down = down.copy()
    for _ in range(OUTER_HOPS):
        p = parent[outer_up]
        outer_up = np.where(p >= 0, p, outer_up)
        ch = first_child[outer_down]
        outer_down = np.where(ch >= 0, ch, outer_down)
    d = np.where(ok_up[:, None], xyz[up] - xyz[outer_up], xyz[down] - xyz[outer_down])
    norm = np.linalg.norm(d, axis=1, keepdims=True)
    one = (ok_up ^ ok_down) & (norm[:, 0] > 1e-9)
    direction = np.where(one[:, None], d / np.maximum(norm, 1e-9), 0.0)
    sides = np.where(both, 2, np.where(one, 1, 0))
    span = np.linalg.norm(end - start, axis=1)
    return AnchorPath(sides, start, end, direction, span)


def search_axes(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The depth line, the lateral line and the strip axes across each.

    Returns ``(z, u, w)``: z = (0, 0, 1) for every node; u horizontal and across the fibre (the
    direction a lateral shift moves a node); w across the fibre and as close to depth as possible
    (the width of the lateral strip, which also absorbs an error in ``t``). For a fibre running
    along z any horizontal u will do.
    """
    n = len(t)
    z = np.tile([0.0, 0.0, 1.0], (n, 1))
    u = np.cross(t, [0.0, 0.0, 1.0])
    norm = np.linalg.norm(u, axis=1, keepdims=True)
    u = np.where(norm > 0.2, u / np.maximum(norm, 1e-9), np.array([1.0, 0.0, 0.0]))
    w = np.cross(t, u)
    w /= np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-9)
    return z, u, w


def _strip_points(p: np.ndarray, e1: np.ndarray, e2: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(n, S, Q, A, 3) sample points of strips: along e1, across by e2, along the fibre t."""
    return (p[:, None, None, None, :] + _S[None, :, None, None, None] * e1[:, None, None, None, :]
            + _Q[None, None, :, None, None] * e2[:, None, None, None, :]
            + _A[None, None, None, :, None] * t[:, None, None, None, :])


def sample_strips(volume, p: np.ndarray, lines: list[tuple[np.ndarray, np.ndarray]], t: np.ndarray) -> np.ndarray:
    """Smoothed raw intensity on each node's strips, averaged along the fibre.

    One box of voxels is read per node and line (the strip's bounding box, a few thousand voxels),
    smoothed by a ``SMOOTH_UM`` Gaussian and interpolated trilinearly. Near the image border the
    smoothing is a normalised convolution over the voxels inside only (the volume reads zeros
    outside, which is not background), and samples whose footprint lies mostly outside are NaN.

    Parameters
    ----------
    volume : Volume
        With ``voxel_size``, ``shape`` and ``read(lo, hi)``.
    p : (n, 3) float
        Node positions (µm).
    lines : list of (e1, e2)
        For each line, (n, 3) unit vectors along the line and across the strip.
    t : (n, 3) float
        Fibre directions (the averaging direction).

    Returns
    -------
    (n, L, S, Q) float32
        Intensity for each node, line, step along the line and row across it.
    """
    vs = np.asarray(volume.voxel_size, float)
    shape = np.asarray(volume.shape)
    sigma = SMOOTH_UM / vs[::-1]
    margin = 3.0 * SMOOTH_UM + vs.max()
    out = np.full((len(p), len(lines), len(_S), len(_Q)), np.nan, np.float32)
    chunk = 128
    for li, (e1, e2) in enumerate(lines):
        # Each strip's bounding box, from its axes (no need to look at its points).
        reach = (SEARCH_UM * np.abs(e1) + STRIP_UM * np.abs(e2) + np.abs(_A).max() * np.abs(t)) + margin
        lo_all = np.floor((p - reach) / vs).astype(np.int64)[:, ::-1]
        hi_all = np.ceil((p + reach) / vs).astype(np.int64)[:, ::-1] + 1
        for c0 in range(0, len(p), chunk):
            sl = slice(c0, c0 + chunk)
            pts = _strip_points(p[sl], e1[sl], e2[sl], t[sl])                  # (c, S, Q, A, 3)
            vox = pts[..., ::-1] / vs[::-1]                                      # fractional (z, y, x)
            for j in range(len(pts)):   # one small patch per node to move: a handful per trace
                k = c0 + j
                lo, hi = lo_all[k], hi_all[k]
                raw = volume.read(tuple(lo), tuple(hi)).astype(np.float32)
                coords = (vox[j] - lo).reshape(-1, 3).T
                if (lo >= 0).all() and (hi <= shape).all():
                    v = _smoothed_at(raw, sigma, coords, "nearest")
                else:
                    inside = np.zeros(raw.shape, np.float32)
                    inside[tuple(slice(a, b) for a, b in zip(np.clip(-lo, 0, raw.shape), np.clip(shape - lo, 0, raw.shape)))] = 1
                    m = _smoothed_at(inside, sigma, coords, "constant")
                    v = np.where(m > 0.5, _smoothed_at(raw * inside, sigma, coords, "constant") / np.maximum(m, 1e-6),
                                 np.nan)
                # Mean along the fibre; a NaN (outside the image) makes the whole average NaN, which
                # is what we want: a half-seen cross-section is not evidence.
                out[k, li] = v.reshape(pts.shape[1:4]).mean(axis=-1)
    return out


def _smoothed_at(img: np.ndarray, sigma: np.ndarray, coords: np.ndarray, mode: str) -> np.ndarray:
    """``img`` smoothed by a Gaussian of ``sigma`` voxels, interpolated trilinearly at ``coords`` (3, M)."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    if sigma.max() > 0:
        img = gaussian_filter(img, sigma, mode=mode, truncate=3.0)
    return map_coordinates(img, coords, order=1, mode="nearest")


def find_candidates(volume, xyz: np.ndarray, parent: np.ndarray, rows: np.ndarray, flagged: np.ndarray,
                    background: np.ndarray, contrast: np.ndarray) -> Candidates:
    """Fibre candidates on the depth and lateral lines through each of ``rows``.

    Parameters
    ----------
    volume : Volume
        The image.
    xyz, parent : arrays
        The trace (µm; parent rows, -1 for roots).
    rows : (n,) int
        Nodes proposed to move.
    flagged : (N,) bool
        Nodes the detector flagged (they do not fix the fibre direction).
    background, contrast : (N,) float
        Local background and fibre contrast per node, in image units (from the feature table).

    Returns
    -------
    Candidates
    """
    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows)
    K = 2 * MAX_PEAKS
    if n == 0:
        return Candidates(rows, np.zeros((0, K, 3)), np.zeros((0, K)), np.zeros((0, K), int))
    p = xyz[rows]
    t = fibre_directions(xyz, parent, rows, flagged)
    z, u, w = search_axes(t)
    lines = [(z, u), (u, w)]
    vals = sample_strips(volume, p, lines, t)                                 # (n, 2, S, Q)
    bg = np.asarray(background, float)[rows]
    if not np.isfinite(bg).all():       # no background measured at the node: the strips' median
        with warnings.catch_warnings():  # strips wholly outside the image stay NaN: no candidates
            warnings.simplefilter("ignore", RuntimeWarning)
            bg = np.where(np.isfinite(bg), bg, np.nanmedian(vals, axis=(1, 2, 3)))
    c = np.maximum(np.asarray(contrast, float)[rows], 1e-6)
    h = (vals - bg[:, None, None, None]) / c[:, None, None, None]
    h = np.where(np.isfinite(h), h, -np.inf)
    # Best row of the strip at each step, mildly preferring the line itself.
    score = h * np.exp(-_Q ** 2 / (2 * STRIP_SIGMA_UM ** 2))
    jq = score.argmax(-1)                                                      # (n, 2, S)
    prof = np.take_along_axis(score, jq[..., None], -1)[..., 0]
    # Local maxima along the line (a plateau counts once, at its last step).
    mid = prof[..., 1:-1]
    is_peak = (mid >= prof[..., :-2]) & (mid > prof[..., 2:]) & np.isfinite(mid)
    is_peak = np.concatenate([np.zeros_like(is_peak[..., :1]), is_peak, np.zeros_like(is_peak[..., :1])], -1)
    cand_val = np.where(is_peak & (np.abs(_S) >= MIN_SHIFT_UM), prof, -np.inf)
    top = np.argsort(-cand_val, axis=-1)[..., :MAX_PEAKS]                     # (n, 2, P) step index
    top_val = np.take_along_axis(cand_val, top, -1)
    # Sub-step position of each peak: a parabola through the peak and its two neighbours.
    ym = np.take_along_axis(prof, np.maximum(top - 1, 0), -1)
    yp = np.take_along_axis(prof, np.minimum(top + 1, len(_S) - 1), -1)
    with np.errstate(invalid="ignore"):            # -inf (no sample / no peak) gives NaN, masked below
        den = ym - 2 * top_val + yp
        good = np.isfinite(den) & (den < 0)
        frac = np.where(good, np.clip(0.5 * (ym - yp) / np.where(good, den, -1.0), -0.5, 0.5), 0.0)
    s = _S[top] + frac * STEP_UM
    q = _Q[np.take_along_axis(jq, top, -1)]
    e1 = np.stack([z, u], 1)                                                   # (n, 2, 3)
    e2 = np.stack([u, w], 1)
    disp = s[..., None] * e1[:, :, None, :] + q[..., None] * e2[:, :, None, :]  # (n, 2, P, 3)
    ok = np.isfinite(top_val)
    disp = np.where(ok[..., None], disp, np.nan).reshape(n, K, 3)
    height = np.where(ok, top_val, np.nan).reshape(n, K)
    line = np.where(ok, np.arange(2)[None, :, None], -1).reshape(n, K)
    return Candidates(rows, disp, height, line)


@dataclass
class Moves:
    """The refined move of each node proposed to move.

    Attributes
    ----------
    rows : (n,) int
        Trace rows.
    target : (n, 3) float
        Where to move the node (µm); NaN where no candidate was found.
    ok : (n,) bool
        Whether to propose the move.
    why : (n,) object
        Why not ("" where ``ok``): ``no_ridge`` (no fibre candidate), ``weak``, ``ambiguous``,
        ``on_path`` (the node is where its run's anchors say it belongs), ``not_back`` (the move
        would not bring it back towards them), ``no_anchor``, ``traced`` (the target is another
        part of the trace).
    """

    rows: np.ndarray
    target: np.ndarray
    ok: np.ndarray
    why: np.ndarray


def choose_moves(cands: Candidates, xyz: np.ndarray, parent: np.ndarray, flagged: np.ndarray,
                 reason: np.ndarray) -> Moves:
    """Pick each node's fibre among its candidates, and decide whether to propose the move.

    Parameters
    ----------
    cands : Candidates
        From :func:`find_candidates`.
    xyz, parent : arrays
        The trace (µm; parent rows).
    flagged : (N,) bool
        Nodes the detector flagged.
    reason : (N,) object
        The detector's reason per node (``off_signal_z`` favours the depth line).

    Returns
    -------
    Moves
    """
    rows = cands.rows
    n, K = cands.height.shape
    if n == 0:
        return Moves(rows, np.zeros((0, 3)), np.zeros(0, bool), np.zeros(0, object))
    h = np.nan_to_num(cands.height, nan=-np.inf)
    disp = np.nan_to_num(cands.disp, nan=0.0)
    p = xyz[rows]
    tgt = p[:, None, :] + disp                                               # (n, K, 3)
    path = anchor_path(xyz, parent, rows, flagged)
    dev_node = path.deviation(p[:, None, :])[:, 0]
    dev = path.deviation(tgt)
    sigma = PATH_SIGMA_UM + PATH_SIGMA_FRAC * path.span
    along_path = np.where(np.isfinite(dev), np.exp(-np.nan_to_num(dev) ** 2 / (2 * sigma[:, None] ** 2)), 1.0)
    r2 = (disp ** 2).sum(-1)
    reason_line = np.where(np.asarray(reason, dtype=object)[rows] == "off_signal_z", 0, 1)
    bonus = np.where(cands.line == reason_line[:, None], REASON_BONUS, 1.0)
    with np.errstate(invalid="ignore"):
        score = np.where(h >= HEIGHT_MIN, h * np.exp(-r2 / (2 * DIST_SIGMA_UM ** 2)) * bonus * along_path, -np.inf)
    k = score.argmax(1)
    ar = np.arange(n)
    best = score[ar, k]
    target = np.where(np.isfinite(best)[:, None], tgt[ar, k], np.nan)
    why = np.full(n, "", dtype=object)

    def veto(mask, name):
        why[mask & (why == "")] = name

    veto(~np.isfinite(np.nan_to_num(cands.height, nan=-np.inf).max(1)), "no_ridge")
    veto(~np.isfinite(best), "weak")
    # Two fibres in reach: a second candidate elsewhere that scores nearly as well.
    apart = np.linalg.norm(tgt - tgt[ar, k][:, None, :], axis=-1) > AMBIG_UM
    second = np.where(apart, score, -np.inf).max(1)
    veto(second >= AMBIG_RATIO * best, "ambiguous")
    veto(path.sides == 0, "no_anchor")
    veto(~_may_move(path, p), "on_path")
    has_path = path.sides > 0
    ratio = np.where(path.sides == 1, ONE_SIDED_RATIO, BACK_RATIO)
    veto(has_path & ~(dev[ar, k] <= ratio * dev_node), "not_back")
    if COVER_UM > 0:
        veto(_traced_elsewhere(xyz, parent, rows, target, COVER_UM, COVER_HOPS), "traced")
    return Moves(rows, target, why == "", why)


def _may_move(path: AnchorPath, p: np.ndarray) -> np.ndarray:
    """False where the anchors rule a move out before any image is read: no anchor in reach, or
    the node lies on the path they give (nothing says it is off its fibre)."""
    with np.errstate(invalid="ignore"):                 # NaN deviation (no anchor) compares False
        return path.deviation(p[:, None, :])[:, 0] >= np.where(path.sides == 1, ONE_SIDED_MIN_UM, OFF_PATH_MIN_UM)


def _traced_elsewhere(xyz, parent, rows, target, radius, hops) -> np.ndarray:
    """True where a trace node more than ``hops`` hops from the row lies within ``radius`` of its target."""
    out = np.zeros(len(rows), bool)
    ok = np.isfinite(target).all(1)
    if not ok.any():
        return out
    idx = np.flatnonzero(ok)
    # The grid search, not scipy's KD-tree: importing scipy.spatial takes longer (0.2 s) than this.
    i, other, _ = cross_pairs(target[ok], xyz, radius)
    if len(i) == 0:
        return out
    owner = idx[i]
    far = ~graph.within_hops(parent, rows[owner], other, hops)
    np.logical_or.at(out, owner[far], True)
    return out


def refine_moves(volume, xyz: np.ndarray, parent: np.ndarray, flagged: np.ndarray, reason: np.ndarray,
                 background: np.ndarray, contrast: np.ndarray) -> np.ndarray:
    """Where to move each flagged off-signal node: on its fibre, found on the raw voxels.

    Parameters
    ----------
    volume : Volume
        The image (see :mod:`neurorecon.io.volume`).
    xyz : (N, 3) float
        Node positions (µm).
    parent : (N,) int
        Parent rows (-1 for roots; cycles cut).
    flagged : (N,) bool
        Nodes the detector flagged.
    reason : (N,) object
        The detector's reason per node; nodes flagged with a reason in ``MOVE_REASONS`` are refined.
    background, contrast : (N,) float
        Local background and fibre contrast per node (image units), e.g. ``FeatureTable.raw.background``
        and ``FeatureTable.contrast``.

    Returns
    -------
    (N, 3) float
        The target of each node to move; NaN where no move is proposed (not a candidate, or
        refused: see :class:`Moves` for the reasons).

    Examples
    --------
    >>> import numpy as np
    >>> from neurorecon.io.volume import open_volume
    >>> vol = open_volume(np.zeros((8, 8, 8), np.uint8), voxel_size=(1, 1, 1))
    >>> xyz = np.array([[2.0, 4, 4], [4, 4, 4], [6, 4, 4]])
    >>> out = refine_moves(vol, xyz, np.array([-1, 0, 1]), np.array([False, True, False]),
    ...                    np.array(["", "off_signal_z", ""], dtype=object), np.zeros(3), np.ones(3))
    >>> bool(np.isnan(out).all())       # a blank image holds no fibre to move onto
    True
    """
    reason = np.asarray(reason, dtype=object)
    rows = np.flatnonzero(flagged & np.isin(reason, MOVE_REASONS))
    out = np.full((len(xyz), 3), np.nan)
    if len(rows) == 0:
        return out
    # The anchors alone already refuse many nodes (no anchor in reach, or the node lies where they
    # say its fibre runs); only the others are worth reading the image for.
    path = anchor_path(xyz, parent, rows, flagged)
    rows = rows[_may_move(path, xyz[rows])]
    cands = find_candidates(volume, xyz, parent, rows, flagged, background, contrast)
    moves = choose_moves(cands, xyz, parent, flagged, reason)
    out[moves.rows[moves.ok]] = moves.target[moves.ok]
    return out
