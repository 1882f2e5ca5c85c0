"""What the image says around each node of a trace.

The volume is visited block by block (only boxes around nodes are read, never the whole volume).
Each block is binned to a working grid of about 1 µm (so the features mean the same thing at
0.3 µm and at 1 µm voxels) and smoothed lightly; then, for every node in the block, fixed sets of
points are sampled by one gather each:

* a disk of 1 µm steps in the plane across the fibre (axes ``u``, horizontal, and ``w``, the
  depth-most direction across the fibre): where is the intensity ridge relative to the node?
* two spherical shells (4 and 7 µm) of 40 directions: is there signal the trace does not explain?
* 5 points along the edge to the parent: does the traced edge lie on signal?
* a cone ahead of the node (along the incoming direction): does the fibre go on where the trace
  turns or stops?

A second, trace-coverage grid (the trace itself rasterised and dilated by 2 µm) says which sampled
points are explained by traced fibre. The output is a set of raw per-node arrays; turning them into
contrast-normalised features is :func:`normalise`'s job, so that brightness, offset and noise level
of the microscope drop out.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..morphology.spatial import points_along

WORK_UM = 0.9          # target working voxel size
SMOOTH_UM = 0.6        # smoothing sigma on the working grid
DISK_R = 7             # cross-section disk radius, µm (1 µm steps)
SHELL_R = (4.0, 7.0)
EDGE_T = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
AHEAD_D = np.array([2.0, 4.0, 6.0, 9.0])
CONE_D = (4.0, 7.0)
COVER_UM = 2.0
HALO_UM = 12.0


def _fibonacci_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5 ** 0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)


SHELL_DIRS = _fibonacci_sphere(40)
_g = np.arange(-DISK_R, DISK_R + 1, dtype=float)
_A, _B = np.meshgrid(_g, _g, indexing="ij")
_in = _A ** 2 + _B ** 2 <= DISK_R ** 2 + 1e-9
DISK_AB = np.stack([_A[_in], _B[_in]], axis=1)          # (D, 2) offsets along (u, w)
DISK_R2 = (DISK_AB ** 2).sum(1)


@dataclass
class RawImage:
    """Per-node raw image measurements (intensities in the image's own units)."""

    centre: np.ndarray       # (N,) intensity at the node
    disk_max: np.ndarray     # (N, 3) max across the fibre within 1.5, 3.5, 7 µm
    offset3: np.ndarray      # (N, 3) xyz vector from node to the max within 3.5 µm
    offset7: np.ndarray      # (N, 3) ... within 7 µm
    snap: np.ndarray         # (N, 3) offset to the distance-weighted disk maximum (a feature)
    ridge: np.ndarray        # (N, 3) offset to that fibre's ridge, sub-µm (for moving the node)
    background: np.ndarray   # (N,) local background (30th percentile of the 7 µm shell)
    noise: np.ndarray        # (N,) local noise estimate
    shell: np.ndarray        # (N, 2, 40) shell intensities
    shell_cov: np.ndarray    # (N, 2, 40) bool: shell point on traced fibre
    edge: np.ndarray         # (N, 5) along the edge to the parent (NaN for roots)
    ahead: np.ndarray        # (N, 4) straight ahead
    cone: np.ndarray         # (N, 2, 6) cone around the ahead direction
    cone_cov: np.ndarray     # (N, 2, 6)
    block: np.ndarray        # (N,) block number (for block-level normalisation)


def frames(xyz: np.ndarray, parent: np.ndarray, first_child: np.ndarray):
    """Per node: tangent t, across-fibre axes u (horizontal) and w, and the 'ahead' direction."""
    has_p = parent >= 0
    has_c = first_child >= 0
    prev = np.where(has_p[:, None], xyz[np.maximum(parent, 0)], xyz)
    nxt = np.where(has_c[:, None], xyz[np.maximum(first_child, 0)], xyz)
    t = _unit(nxt - prev, fallback=np.array([1.0, 0.0, 0.0]))
    u = np.cross(t, [0.0, 0.0, 1.0])
    flat = np.linalg.norm(u, axis=1) < 0.2     # fibre along z: any horizontal axis will do
    u[flat] = np.cross(t[flat], [1.0, 0.0, 0.0])
    u = _unit(u)
    w = np.cross(t, u)
    w *= np.where(w[:, 2:3] < 0, -1.0, 1.0)    # w points up in z, so its sign means the same everywhere
    # Ahead: along the edge arriving at the node (from the first child for a root).
    ahead = _unit(np.where(has_p[:, None], xyz - prev, xyz - nxt), fallback=t)
    return t, u, w, ahead


def _unit(v, fallback=None):
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    out = v / np.where(n > 0, n, 1.0)
    if fallback is not None:
        out = np.where(n > 0, out, fallback)
    return out


def _cone_dirs(ahead: np.ndarray) -> np.ndarray:
    """(N, 6, 3) directions 25 degrees around ``ahead``."""
    a = ahead
    p = _unit(np.cross(a, np.where(np.abs(a[:, 2:3]) < 0.9, [0.0, 0.0, 1.0], [1.0, 0.0, 0.0])))
    q = np.cross(a, p)
    ang = np.arange(6) * (np.pi / 3)
    c, s = np.cos(np.deg2rad(25)), np.sin(np.deg2rad(25))
    return c * a[:, None, :] + s * (np.cos(ang)[None, :, None] * p[:, None, :] + np.sin(ang)[None, :, None] * q[:, None, :])


class _Block:
    """A box of the volume on the working grid, with a trace-coverage mask."""

    def __init__(self, volume, lo_vox: np.ndarray, hi_vox: np.ndarray, vs: np.ndarray, trace_pts: np.ndarray):
        from scipy.ndimage import gaussian_filter, maximum_filter

        self.bin = np.maximum(1, np.rint(WORK_UM / vs[::-1]).astype(int))   # (z, y, x)
        span = hi_vox - lo_vox
        span = np.maximum(self.bin, (span // self.bin) * self.bin)
        hi_vox = lo_vox + span
        raw = volume.read(tuple(lo_vox), tuple(hi_vox))
        shape = tuple(span // self.bin)
        if (self.bin == 1).all():
            binned = raw.astype(np.float32)
        else:
            binned = raw.reshape(shape[0], self.bin[0], shape[1], self.bin[1], shape[2], self.bin[2]).mean(
                axis=(1, 3, 5), dtype=np.float32)
        self.vox = vs[::-1] * self.bin                                        # working voxel (z, y, x) µm
        self.lo = lo_vox
        img = gaussian_filter(binned, SMOOTH_UM / self.vox, truncate=2.5, mode="nearest")
        inside = _inside_mask(lo_vox, hi_vox, volume.shape, self.bin, shape)
        img[~inside] = np.nan
        self.img = np.pad(img, 1, constant_values=np.nan)
        cov = np.zeros(shape, dtype=bool)
        idx = self.index(trace_pts)
        ok = np.all((idx >= 1) & (idx <= np.array(shape)), axis=1)
        cov[tuple((idx[ok] - 1).T)] = True
        size = 2 * np.ceil(COVER_UM / self.vox).astype(int) + 1
        self.cov = np.pad(maximum_filter(cov, size=tuple(size)), 1)

    def index(self, xyz: np.ndarray) -> np.ndarray:
        """Working-grid index (padded array) of physical points (…, 3) xyz µm, clipped to the pad."""
        k = xyz[..., ::-1] / (self.vox / self.bin) - self.lo          # raw voxel index (z, y, x)
        wi = np.rint((k - (self.bin - 1) / 2) / self.bin).astype(np.int64) + 1
        return np.clip(wi, 0, np.array(self.img.shape) - 1)

    def sample(self, xyz: np.ndarray) -> np.ndarray:
        i = self.index(xyz)
        return self.img[i[..., 0], i[..., 1], i[..., 2]]

    def covered(self, xyz: np.ndarray) -> np.ndarray:
        i = self.index(xyz)
        return self.cov[i[..., 0], i[..., 1], i[..., 2]]


def _inside_mask(lo, hi, vol_shape, bin_, shape):
    """True for working voxels whose raw voxels lie inside the volume (reads outside are filled)."""
    axes = []
    for d in range(3):
        start = lo[d] + np.arange(shape[d]) * bin_[d]
        axes.append((start >= 0) & (start + bin_[d] <= vol_shape[d]))
    return axes[0][:, None, None] & axes[1][None, :, None] & axes[2][None, None, :]


def _block_numbers(xyz: np.ndarray, block_um: float) -> np.ndarray:
    """Which ``block_um`` cube each node falls in, numbered 0, 1, ..."""
    _, inverse = np.unique(np.floor(xyz / block_um).astype(np.int64), axis=0, return_inverse=True)
    return inverse.reshape(-1)


def edge_points(xyz: np.ndarray, parent: np.ndarray, step: float = 0.5) -> np.ndarray:
    """Points at most ``step`` µm apart along all trace edges, and the nodes themselves."""
    child = np.flatnonzero(parent >= 0)
    return np.vstack([xyz, points_along(xyz[child], xyz[parent[child]], step)[0]])


class _PointsByX:
    """Points sorted by x once, so that each block finds its points without scanning them all."""

    def __init__(self, pts: np.ndarray):
        self.order = np.argsort(pts[:, 0], kind="stable")
        self.pts = pts[self.order]

    def in_box(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        x = self.pts[:, 0]
        cand = self.pts[np.searchsorted(x, lo[0], "left"):np.searchsorted(x, hi[0], "right")]
        return cand[np.all((cand >= lo) & (cand <= hi), axis=1)]


def measure(xyz: np.ndarray, parent: np.ndarray, first_child: np.ndarray, volume, *, block_um: float = 96.0,
            progress=None) -> RawImage:
    """Raw image measurements for every node; ``volume`` has ``shape``, ``voxel_size`` and ``read(lo, hi)``."""
    vs = np.asarray(volume.voxel_size, float)
    n = len(xyz)
    t, u, w, ahead = frames(xyz, parent, first_child)
    block = _block_numbers(xyz, block_um)
    out = _empty(n, block)
    traced = _PointsByX(edge_points(xyz, parent))
    order = np.argsort(block, kind="stable")
    bounds = np.flatnonzero(np.diff(np.concatenate([[-1], block[order], [block.max() + 1 if n else 0]])))
    for bi in range(len(bounds) - 1):
        rows = order[bounds[bi]:bounds[bi + 1]]
        lo_um = xyz[rows].min(0) - HALO_UM
        hi_um = xyz[rows].max(0) + HALO_UM
        lo_vox, hi_vox = volume.box_around(lo_um, hi_um)
        blk = _Block(volume, lo_vox, hi_vox, vs, traced.in_box(lo_um - 3, hi_um + 3))
        _measure_rows(blk, rows, xyz, parent, t, u, w, ahead, out)
        if progress is not None:
            progress(len(rows))
    return out


def _empty(n: int, block: np.ndarray) -> RawImage:
    f = np.float32
    return RawImage(np.full(n, np.nan, f), np.full((n, 3), np.nan, f), np.zeros((n, 3), f), np.zeros((n, 3), f),
                    np.zeros((n, 3), f), np.zeros((n, 3), f), np.full(n, np.nan, f), np.full(n, np.nan, f),
                    np.full((n, 2, 40), np.nan, f), np.zeros((n, 2, 40), bool), np.full((n, 5), np.nan, f),
                    np.full((n, 4), np.nan, f), np.full((n, 2, 6), np.nan, f), np.zeros((n, 2, 6), bool), block)


def _measure_rows(blk: _Block, rows, xyz, parent, t, u, w, ahead, out: RawImage) -> None:
    p = xyz[rows]
    # Cross-section disk.
    disk = p[:, None, :] + DISK_AB[None, :, 0:1] * u[rows, None, :] + DISK_AB[None, :, 1:2] * w[rows, None, :]
    dv = blk.sample(disk)                                               # (n, D)
    dv0 = np.where(np.isnan(dv), -np.inf, dv)
    centre = dv[:, np.flatnonzero(DISK_R2 == 0)[0]]
    out.centre[rows] = centre
    for j, r in enumerate((1.5, 3.5, 7.0)):
        m = np.where(DISK_R2[None, :] <= r * r, dv0, -np.inf)
        k = m.argmax(1)
        out.disk_max[rows, j] = np.where(np.isfinite(m.max(1)), m.max(1), np.nan)
        if j >= 1:
            off = DISK_AB[k, 0:1] * u[rows] + DISK_AB[k, 1:2] * w[rows]
            (out.offset3 if j == 1 else out.offset7)[rows] = off
    out.snap[rows], out.ridge[rows] = _snap(dv0, u[rows], w[rows])
    # Shells.
    shell_pts = p[:, None, None, :] + np.array(SHELL_R)[None, :, None, None] * SHELL_DIRS[None, None, :, :]
    sv = blk.sample(shell_pts)
    out.shell[rows] = sv
    out.shell_cov[rows] = blk.covered(shell_pts)
    bg = _row_percentile(sv[:, 1, :], 30.0)
    lowhalf = np.where(sv[:, 1, :] <= bg[:, None], sv[:, 1, :], np.nan)
    with warnings.catch_warnings():   # nodes outside the image have no samples: NaN is the answer
        warnings.simplefilter("ignore", RuntimeWarning)
        out.noise[rows] = np.nanstd(lowhalf, axis=1) if len(rows) else np.zeros(0)
    out.background[rows] = bg
    # Edge to parent.
    par = parent[rows]
    has = par >= 0
    q = xyz[np.maximum(par, 0)]
    ept = p[:, None, :] + EDGE_T[None, :, None] * (q - p)[:, None, :]
    ev = blk.sample(ept)
    out.edge[rows] = np.where(has[:, None], ev, np.nan)
    # Ahead and cone.
    a = ahead[rows]
    out.ahead[rows] = blk.sample(p[:, None, :] + AHEAD_D[None, :, None] * a[:, None, :])
    cone_pts = p[:, None, None, :] + np.array(CONE_D)[None, :, None, None] * _cone_dirs(a)[:, None, :, :]
    out.cone[rows] = blk.sample(cone_pts)
    out.cone_cov[rows] = blk.covered(cone_pts)


def _row_percentile(v: np.ndarray, q: float) -> np.ndarray:
    """Per-row percentile ignoring NaN, linear interpolation (numpy's default), NaN for empty rows.

    np.nanpercentile along an axis runs Python code per row; sorting once (NaN sorts last) does not."""
    srt = np.sort(v, axis=1)
    k = np.isfinite(v).sum(axis=1)
    pos = (q / 100.0) * np.maximum(k - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(k - 1, 0))
    r = np.arange(len(v))
    frac = pos - lo
    val = srt[r, lo] * (1 - frac) + np.where(frac > 0, srt[r, hi] * frac, 0)
    return np.where(k > 0, val, np.nan)


def _snap(dv0: np.ndarray, u: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (xyz µm) across the fibre: to the disk maximum mildly preferring points near the node
    (a neighbour fibre a few µm away should not win over the node's own), and from there uphill to
    that fibre's ridge, refined to sub-µm by a parabola through the maximum and its neighbours."""
    if len(dv0) == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)
    finite = np.isfinite(dv0)
    lo = np.where(finite, dv0, np.inf).min(1, keepdims=True)
    score = np.where(finite, (dv0 - lo) * np.exp(-DISK_R2[None, :] / (2 * 4.0 ** 2)), -np.inf)
    k = score.argmax(1)
    a0, b0 = DISK_AB[k, 0], DISK_AB[k, 1]
    weighted = (_refined(dv0, a0, b0, u, w))
    a, b = _climb(dv0, a0, b0)
    return weighted, _refined(dv0, a, b, u, w)


def _refined(dv0, a, b, u, w) -> np.ndarray:
    da = _parabola(dv0, a, b, 1, 0)
    db = _parabola(dv0, a, b, 0, 1)
    return ((a + da)[:, None] * u + (b + db)[:, None] * w).astype(np.float32)


def _climb(dv0: np.ndarray, a: np.ndarray, b: np.ndarray, steps: int = 4):
    """From the chosen disk point, step to the brightest 4-neighbour while it is brighter: the
    distance preference picks *which* fibre, the unweighted intensity says *where* its ridge is."""
    r = np.arange(len(a))
    for _ in range(steps):
        best_a, best_b = a.copy(), b.copy()
        best = dv0[r, _disk_index(a, b)]
        for sa, sb in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            i = _disk_index(a + sa, b + sb)
            v = np.where(i >= 0, dv0[r, np.maximum(i, 0)], -np.inf)
            better = v > best
            best = np.where(better, v, best)
            best_a = np.where(better, a + sa, best_a)
            best_b = np.where(better, b + sb, best_b)
        if np.array_equal(best_a, a) and np.array_equal(best_b, b):
            break
        a, b = best_a, best_b
    return a, b


_LOOKUP = {(int(a), int(b)): i for i, (a, b) in enumerate(DISK_AB)}


_TABLE = np.full((2 * DISK_R + 1) ** 2, -1)
for (_x, _y), _i in _LOOKUP.items():
    _TABLE[(_x + DISK_R) * (2 * DISK_R + 1) + (_y + DISK_R)] = _i


def _disk_index(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Column of disk point (a, b) in the sampled disk, -1 outside it."""
    key = (a + DISK_R) * (2 * DISK_R + 1) + (b + DISK_R)
    table = _TABLE
    ok = (np.abs(a) <= DISK_R) & (np.abs(b) <= DISK_R)
    return np.where(ok, table[np.where(ok, key, 0).astype(int)], -1)


def _parabola(dv0, a, b, sa, sb) -> np.ndarray:
    n = len(a)
    im = _disk_index(a - sa, b - sb)
    ip = _disk_index(a + sa, b + sb)
    i0 = _disk_index(a, b)
    r = np.arange(n)
    ok = (im >= 0) & (ip >= 0)
    ym = np.where(ok, dv0[r, np.maximum(im, 0)], 0)
    yp = np.where(ok, dv0[r, np.maximum(ip, 0)], 0)
    y0 = dv0[r, i0]
    den = ym - 2 * y0 + yp
    good = ok & np.isfinite(ym) & np.isfinite(yp) & (den < 0)
    return np.where(good, np.clip(0.5 * (ym - yp) / np.where(good, den, 1), -0.5, 0.5), 0.0)
