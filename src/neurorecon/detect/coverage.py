"""Does the image hold the trace? Measured before any node is scored.

Two questions, both cheap (one read of the image around a few hundred nodes, or one small read
per node where that box is large; 0.15 s on a 512 x 512 x 60 DIADEM stack):

1. **Coverage**: which nodes lie inside the image. A node counts as covered when it lies inside
   the image's extent or at most :data:`MARGIN_UM` outside it: the detector's samples reach up
   to 9 µm from a node (``image_features.REACH_UM``), so a node that close still has most of its
   context in the image, and hand traces often end a little past the first or last slice. Nodes
   farther out are not scored. Fewer than :data:`MIN_COVERED` covered is an error.
2. **Fit**: does the trace lie on the image's fibres at the given voxel size? A voxel size off by
   a few times (or the image of another trace) puts the nodes on voxels that have nothing to do
   with the fibres: they are then no brighter than the image just beside them. For a sample of
   the nodes inside the image, the brightest voxel (lightly smoothed) within 0.5 µm (1 µm in z)
   of each node is compared with the mean of pairs of control points on opposite sides of it, across its
   fibre, 2.5-10 µm out, each averaged along the node's edge (:func:`node_fit`): by chance a
   node wins half the time; on an aligned trace mostly. The voxel size is taken not to fit when
   the mean over places (:func:`fit_statistics`) is below :data:`FIT_MIN` *and* its t against
   chance below :data:`FIT_T_MIN`, or when the nodes crowd into fewer than :data:`MIN_PLACES`
   places; judged where at least :data:`MIN_FIT_NODES` nodes lie inside the image (fewer: not
   judged, said in :meth:`Coverage.summary`).

Measured (benchmarks/bench_coverage.py; tests/test_coverage.py keeps a few of the cases) on 180
``neurorecon synth`` crops (train and held-out imaging, five seeds) and the five DIADEM stacks:
the right voxel size passes on all 185 (the hardest, a held-out ``uneven_0.7um`` crop whose
fibres barely stand out, at t = 1.8); of the 176 with 24 or more nodes inside the image, voxel
sizes 4x too large on all axes are caught on 172, 10x on 173, 4x in x-y only on 161, 4x in z only
on 171 (the misses keep part of the fit: x-y right, or a small trace); 4x too small puts most
nodes outside (184 of 185 caught). Traces with fewer than 24 nodes inside are not judged.
On another draw, the 180 crops of ``make detection-report`` (seed 12345), the right voxel size
is refused on 5, all ``uneven_0.7um`` (the dimmest held-out imaging): their fibres stand out of
the background no more than a wrong voxel size's would (fit 0.52-0.57, t 0.5-1.7), so the test
cannot tell; ``--force`` scores them. The report counts these false refusals.

Usage::

    from neurorecon.detect.coverage import measure_coverage
    cov = measure_coverage(neuron.xyz, volume, neuron.parent)
    if cov.problem:
        raise SystemExit(cov.problem)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["Coverage", "FIT_MIN", "FIT_T_MIN", "MARGIN_UM", "MIN_COVERED", "MIN_FIT_NODES", "covered_nodes",
           "fit_statistics", "image_extent", "measure_coverage", "node_fit"]

#: How far outside the image a node may lie and still be scored (µm).
MARGIN_UM = 2.0
#: Below this fraction of covered nodes the image does not hold the trace (an error unless forced).
MIN_COVERED = 0.5
#: The fit: a mean below FIT_MIN and a t below FIT_T_MIN is a voxel size that does not fit.
FIT_MIN = 0.65
FIT_T_MIN = 1.75
#: Fewer nodes inside the image than this: the fit is not judged (too little to go on).
MIN_FIT_NODES = 24
#: Nodes within one block of this many voxels (z, y, x) count as one place. A trace of
#: MIN_FIT_NODES nodes or more squeezed into fewer than MIN_PLACES places is a voxel size too
#: large (at the right one the fewest measured were 12).
PLACE_VOXELS = (4, 8, 8)
MIN_PLACES = 6
#: Nodes sampled for the fit, spread evenly over the trace's rows.
N_SAMPLES = 256
#: Half-size (µm; x, y, z) of the box whose brightest voxel stands for a point: hand traces sit
#: 1-2 voxels off the fibre centre.
PEAK_HALF_UM = (0.5, 0.5, 1.0)
#: Where along the node's edge (µm towards its parent) the fibre is sampled: averaging along the
#: fibre lifts a dim one out of the noise.
ALONG_UM = (0.0, 0.5, 1.0, 1.5)
#: Smoothing sigma (µm; x, y, z) before the peaks are taken: pixel noise averaged over about a
#: fibre's cross-section, so that a dim fibre stands out of a noisy background.
SMOOTH_UM = (0.5, 0.5, 1.0)
#: Distance of the control points from their node (µm): beyond a fibre's width (wider in z: the
#: microscope's blur), within its local background.
BESIDE_UM = (2.5, 5.0)
ABOVE_UM = (6.0, 10.0)
#: The largest box (voxels) read whole for the fit; beyond it each node and its controls are read apart.
REGION_VOXELS = 1 << 24


@dataclass(frozen=True)
class Coverage:
    """What :func:`measure_coverage` found.

    Attributes
    ----------
    covered : numpy.ndarray of bool
        Per node: inside the image or within :data:`MARGIN_UM` of it.
    image_extent : numpy.ndarray
        (2, 3) µm, x, y, z: the outer edges of the first and last voxels.
    trace_extent : numpy.ndarray
        (2, 3) µm: the trace's lowest and highest coordinates (NaN for an empty trace).
    fit : float
        Mean over places of how often a node is brighter than the image beside it (0.5 by
        chance; NaN: not measured).
    fit_t : float
        Its t against chance.
    n_places : int
        Places the sampled nodes spread over.
    n_fit : int
        Nodes measured for the fit.
    """

    covered: np.ndarray
    image_extent: np.ndarray
    trace_extent: np.ndarray
    fit: float = float("nan")
    fit_t: float = float("nan")
    n_places: int = 0
    n_fit: int = 0

    @property
    def n_nodes(self) -> int:
        return len(self.covered)

    @property
    def n_covered(self) -> int:
        return int(self.covered.sum())

    @property
    def n_outside(self) -> int:
        return self.n_nodes - self.n_covered

    @property
    def fraction(self) -> float:
        return self.n_covered / self.n_nodes if self.n_nodes else 1.0

    @property
    def fit_judged(self) -> bool:
        return self.n_fit >= MIN_FIT_NODES and np.isfinite(self.fit)

    @property
    def fits(self) -> bool:
        """False only where the fit was judged and failed."""
        if not self.fit_judged:
            return True
        return self.n_places >= MIN_PLACES and (self.fit >= FIT_MIN or self.fit_t >= FIT_T_MIN)

    @property
    def problem(self) -> str | None:
        """One line saying why the image cannot be trusted to score this trace, or None."""
        where = f"the image spans {_extent(self.image_extent)}; the trace spans {_extent(self.trace_extent)}"
        if self.n_nodes and self.fraction < MIN_COVERED:
            return (f"{self.n_covered:,} of {self.n_nodes:,} nodes ({100 * self.fraction:.1f}%) lie inside the image; "
                    f"{where}; check the voxel size or the image")
        if self.fits:
            return None
        if self.n_places < MIN_PLACES:
            return (f"the trace does not fit the image: {self.n_fit} of its nodes fall within {self.n_places} "
                    f"block(s) of {'x'.join(map(str, PLACE_VOXELS[::-1]))} voxels (a voxel size too large squeezes "
                    f"it); {where}; check the voxel size or the image")
        return (f"the trace does not lie on the image's fibres: its nodes are brighter than the image 2.5-10 µm "
                f"beside them {100 * self.fit:.0f}% of the time (by chance 50%, aligned traces mostly; t = "
                f"{self.fit_t:.1f} over {self.n_places} places); {where}; check the voxel size or the image")

    def summary(self) -> str:
        """One line for the reader: what is covered and how well the trace fits."""
        text = f"{self.n_covered:,} of {self.n_nodes:,} nodes inside the image"
        if self.n_outside:
            text += f", {self.n_outside:,} outside (not scored)"
        if self.fit_judged:
            text += f"; on the image's fibres: {100 * self.fit:.0f}% (chance 50%)"
        elif self.n_covered:
            text += f"; too few of them (under {MIN_FIT_NODES}) to check the voxel size against the image"
        return text


def _extent(ext: np.ndarray) -> str:
    return ", ".join(f"{a} {_um(lo)}-{_um(hi)} µm" for a, lo, hi in zip("xyz", ext[0], ext[1]))


def _um(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}"


def image_extent(shape, voxel_size) -> np.ndarray:
    """(2, 3) µm, x, y, z: the outer edges of the first and last voxels (voxel [0,0,0]'s centre is
    at the origin)."""
    vs = np.asarray(voxel_size, float)
    n = np.asarray(shape, float)[::-1]
    return np.stack([-0.5 * vs, (n - 0.5) * vs])


def covered_nodes(xyz: np.ndarray, shape, voxel_size, margin_um: float = MARGIN_UM) -> np.ndarray:
    """Nodes (rows of ``xyz``, µm) inside the image of ``shape`` (z, y, x) or within ``margin_um`` of it.

    Examples
    --------
    >>> covered_nodes(np.array([[0, 0, 0], [9.9, 0, 0], [12.6, 0, 0]]), (1, 1, 10), (1, 1, 1)).tolist()
    [True, True, False]
    """
    ext = image_extent(shape, voxel_size)
    xyz = np.asarray(xyz, float).reshape(-1, 3)
    return np.all((xyz >= ext[0] - margin_um) & (xyz <= ext[1] + margin_um), axis=1)


def node_fit(xyz: np.ndarray, parent: np.ndarray | None, volume, rows: np.ndarray, seed: int = 0) -> np.ndarray:
    """Per node of ``rows``: how often it is brighter than the mean of a pair of control points on
    opposite sides of it, across its fibre (ties count half; NaN where no pair lies in the image).

    The pairs lie in the node's cross-section (perpendicular to its edge): two along ``u``
    (horizontal, 4-8 µm out) and two along ``w`` (mostly vertical, 6-10 µm: the microscope blurs
    more in z). Across the fibre, so that its own signal never stands as a control; in pairs, so
    that a linear background gradient (uneven illumination, depth attenuation) cancels. A voxel
    size wrong in z alone leaves every node on its fibre's x-y column: the ``w`` pairs see it.

    Parameters
    ----------
    xyz : numpy.ndarray
        (N, 3) µm, every node of the trace.
    parent : numpy.ndarray or None
        Parent row per node (-1 at roots), for the fibre direction; None: random directions.
    volume : Volume
    rows : numpy.ndarray
        The nodes to measure (inside the image).
    seed : int
        For the distances and the fallback directions: the same call gives the same numbers.

    Returns
    -------
    numpy.ndarray
        (len(rows),) in [0, 1]; 0.5 by chance.
    """
    rng = np.random.default_rng(seed)
    t = _tangents(xyz, parent)[rows]
    u, w = _cross_section(t, rng)
    m = len(rows)
    # The node's stretch of fibre: points from it towards its parent (as far as the edge goes).
    length = np.linalg.norm(t, axis=1, keepdims=True)
    along = -t / np.maximum(length, 1e-12)
    base = xyz[rows][:, None] + along[:, None] * np.minimum(np.asarray(ALONG_UM)[None, :, None], length[:, None])
    du = rng.uniform(*BESIDE_UM, size=(m, 2, 1))
    dw = rng.uniform(*ABOVE_UM, size=(m, 2, 1))
    step = np.concatenate([u[:, None] * du, w[:, None] * dw], axis=1)                  # (m, 4, 3)
    pts = np.concatenate([base[:, None], base[:, None] + step[:, :, None], base[:, None] - step[:, :, None]], axis=1)
    line = _peaks(volume, pts.reshape(m, -1, 3)).reshape(pts.shape[:3]).mean(axis=2)   # (m, 9)
    node, side = line[:, :1], (line[:, 1:5] + line[:, 5:]) / 2
    ext = image_extent(volume.shape, volume.voxel_size)
    ends = pts[:, 1:].reshape(m, 8, -1, 3)
    ok = np.all((ends >= ext[0]) & (ends <= ext[1]), axis=(2, 3))
    ok = ok[:, :4] & ok[:, 4:]                                                         # both sides inside
    won = np.where(ok, (node > side) + 0.5 * (node == side), np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # nodes with no pair inside: NaN
        return np.nanmean(won, axis=1)


def _tangents(xyz: np.ndarray, parent: np.ndarray | None) -> np.ndarray:
    """Edge direction per node (to its parent; a root: to a child; zero where neither)."""
    if parent is None:
        return np.zeros_like(xyz)
    parent = np.asarray(parent)
    other = parent.copy()
    kids = np.flatnonzero(parent >= 0)
    roots = parent < 0
    child = np.full(len(xyz), -1)
    child[parent[kids]] = kids
    other[roots] = child[roots]
    return np.where((other >= 0)[:, None], xyz - xyz[np.maximum(other, 0)], 0.0)


def _cross_section(t: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors ``u`` (horizontal) and ``w`` across each direction ``t``; a random horizontal
    ``u`` and a vertical ``w`` where ``t`` is (nearly) zero or vertical."""
    ez = np.array([0.0, 0.0, 1.0])
    u = np.cross(t, ez)
    norm = np.linalg.norm(u, axis=1, keepdims=True)
    weak = norm[:, 0] <= 0.05 * np.maximum(np.linalg.norm(t, axis=1), 1e-12)
    a = rng.uniform(0, 2 * np.pi, len(t))
    u = np.where(weak[:, None], np.stack([np.cos(a), np.sin(a), 0 * a], axis=1), u / np.maximum(norm, 1e-12))
    w = np.cross(t, u)
    wn = np.linalg.norm(w, axis=1, keepdims=True)
    w = np.where((wn[:, 0] > 1e-12)[:, None], w / np.maximum(wn, 1e-12), ez)
    return u, w


def fit_statistics(score: np.ndarray, place: np.ndarray) -> tuple[float, float, int]:
    """Mean node fit over places, its t against chance (0.5), the number of places and of nodes.

    Nodes close together sample the same few voxels (a trace squeezed into a corner by a voxel
    size too large samples one spot many times), so they count as one place: the mean of each
    place's nodes, the spread between places.

    Parameters
    ----------
    score : numpy.ndarray
        :func:`node_fit` per node (NaN: not measured).
    place : numpy.ndarray
        (N, 3) int, the block of :data:`PLACE_VOXELS` voxels each node lies in.

    Returns
    -------
    (float, float, int, int)
        Mean, t (0 for a single place), places, nodes measured; NaN, NaN, 0, 0
        where nothing was measured.
    """
    ok = np.isfinite(score)
    if not ok.any():
        return float("nan"), float("nan"), 0, 0
    _, which = np.unique(place[ok], axis=0, return_inverse=True)
    which = which.ravel()
    per = np.bincount(which, score[ok]) / np.bincount(which)
    mean = float(per.mean())
    if len(per) < 2:
        return mean, 0.0, len(per), int(ok.sum())
    se = max(float(per.std(ddof=1)) / np.sqrt(len(per)), 1e-3)
    return mean, (mean - 0.5) / se, len(per), int(ok.sum())


def _peaks(volume, pts: np.ndarray) -> np.ndarray:
    """The brightest voxel of the lightly smoothed image (Gaussian, :data:`SMOOTH_UM`) within
    :data:`PEAK_HALF_UM` (at least the nearest voxel) of each point of ``pts`` (groups, points, 3),
    points clipped into the image; (groups, points)."""
    vs = np.asarray(volume.voxel_size, float)
    shape = np.asarray(volume.shape)
    centre = np.clip(np.rint(pts / vs)[..., ::-1].astype(np.int64), 0, shape - 1)        # z, y, x
    half = np.floor(np.asarray(PEAK_HALF_UM) / vs + 1e-9).astype(np.int64)[::-1]
    kernels = [_kernel(s) for s in (np.asarray(SMOOTH_UM) / vs)[::-1]]
    pad = half + [len(k) // 2 for k in kernels]               # the smoothing's reach
    flat = centre.reshape(-1, 3)
    lo, hi = np.maximum(flat.min(0) - pad, 0), np.minimum(flat.max(0) + pad + 1, shape)
    if np.prod(hi - lo) <= REGION_VOXELS:
        return _gather(volume, flat, lo, hi, half, kernels).reshape(centre.shape[:2])
    # A large image around a long trace: one read per group (a node and its controls).
    out = np.empty(centre.shape[:2])
    for k, group in enumerate(centre):
        glo, ghi = np.maximum(group.min(0) - pad, 0), np.minimum(group.max(0) + pad + 1, shape)
        out[k] = _gather(volume, group, glo, ghi, half, kernels)
    return out


def _kernel(sigma: float) -> np.ndarray:
    """Normalised Gaussian weights out to 2 sigma (scipy.ndimage's with truncate=2)."""
    r = int(2.0 * sigma + 0.5)
    w = np.exp(-0.5 * (np.arange(-r, r + 1) / max(sigma, 1e-6)) ** 2)
    return (w / w.sum()).astype(np.float32)


def _valid_correlate(v: np.ndarray, k: np.ndarray, axis: int) -> np.ndarray:
    """``v`` correlated with ``k`` along ``axis``, the valid part only (shorter by len(k) - 1)."""
    m = v.shape[axis] - len(k) + 1
    out = np.zeros(v.shape[:axis] + (m,) + v.shape[axis + 1:], np.float32)
    lead = (slice(None),) * axis
    for j, w in enumerate(k.tolist()):
        out += w * v[lead + (slice(j, j + m),)]
    return out


def _gather(volume, centre: np.ndarray, lo: np.ndarray, hi: np.ndarray, half: np.ndarray, kernels: list) -> np.ndarray:
    """Peaks of the points ``centre`` (voxels) in the box ``[lo, hi)``: the box smoothed whole, or,
    where the points are few for its size, only the patches around them (same numbers, less work:
    the DIADEM stacks' 15 M voxels take 0.2 s whole)."""
    img = volume.read(tuple(lo.tolist()), tuple(hi.tolist()))
    reach = half + [len(k) // 2 for k in kernels]
    if len(centre) * np.prod(2 * reach + 1) < img.size:
        # Each axis's clipped indices apart, combined into flat ones: one take for all patches.
        z, y, x = (np.clip(centre[:, a, None] - lo[a] + np.arange(-reach[a], reach[a] + 1), 0, hi[a] - lo[a] - 1)
                   for a in range(3))
        n = hi - lo
        flat = (z[:, :, None, None] * n[1] + y[:, None, :, None]) * n[2] + x[:, None, None, :]
        v = img.ravel().take(flat).astype(np.float32)                              # (P, Z, Y, X)
        for axis, k in zip((1, 2, 3), kernels):
            v = _valid_correlate(v, k, axis)
        # Peak positions past the box's (the image's) edge are left out, as the clipped indices below do.
        inside = [(centre[:, a, None] + np.arange(-half[a], half[a] + 1) >= lo[a])
                  & (centre[:, a, None] + np.arange(-half[a], half[a] + 1) < hi[a]) for a in range(3)]
        v[~(inside[0][:, :, None, None] & inside[1][:, None, :, None] & inside[2][:, None, None, :])] = -np.inf
        return v.reshape(len(centre), -1).max(axis=1).astype(np.float64)
    from scipy.ndimage import correlate1d

    img = img.astype(np.float32)
    for axis, k in enumerate(kernels):
        img = correlate1d(img, k, axis=axis, mode="nearest")
    offsets = np.stack(np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij"), axis=-1).reshape(-1, 3)
    idx = np.clip(centre[:, None, :] + offsets[None] - lo, 0, hi - lo - 1)
    return img[idx[..., 0], idx[..., 1], idx[..., 2]].max(axis=1).astype(np.float64)


def measure_coverage(xyz: np.ndarray, volume, parent: np.ndarray | None = None, *, fit: bool = True) -> Coverage:
    """Which nodes the image covers and whether the trace fits the image at its voxel size.

    Parameters
    ----------
    xyz : numpy.ndarray
        (N, 3) node positions, µm (SWC convention: voxel [k, j, i]'s centre at (i·vx, j·vy, k·vz)).
    volume : Volume
        The image (:func:`neurorecon.io.volume.open_volume`).
    parent : numpy.ndarray, optional
        Parent row per node (-1 at roots): the fibre directions for the fit's controls.
    fit : bool
        Also measure the fit (reads the image around a few hundred nodes).

    Returns
    -------
    Coverage
        ``problem`` says, in one line, what is wrong (None: fine).
    """
    xyz = np.asarray(xyz, float).reshape(-1, 3)
    covered = covered_nodes(xyz, volume.shape, volume.voxel_size)
    ext = image_extent(volume.shape, volume.voxel_size)
    trace_ext = np.stack([xyz.min(0), xyz.max(0)]) if len(xyz) else np.full((2, 3), np.nan)
    inside = np.flatnonzero(covered_nodes(xyz, volume.shape, volume.voxel_size, margin_um=0.0))
    if not fit or not len(inside):
        return Coverage(covered, ext, trace_ext)
    rows = inside[np.unique(np.linspace(0, len(inside) - 1, min(N_SAMPLES, len(inside))).round().astype(np.int64))]
    score = node_fit(xyz, parent, volume, rows)
    place = np.floor(volume.to_voxel(xyz[rows]) / np.asarray(PLACE_VOXELS)).astype(np.int64)
    return Coverage(covered, ext, trace_ext, *fit_statistics(score, place))
