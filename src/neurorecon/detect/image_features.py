"""What the image says around each node of a trace.

For every node, fixed sets of points are sampled from a lightly smoothed working grid of about
1 µm voxels (so the features mean the same thing at 0.3 µm and at 1 µm voxels):

* a disk of 1 µm steps in the plane across the fibre (axes ``u``, horizontal, and ``w``, the
  depth-most direction across the fibre): where is the intensity ridge relative to the node?
* two spherical shells (4 and 7 µm) of 40 directions: is there signal the trace does not explain?
* 5 points along the edge to the parent: does the traced edge lie on signal?
* a cone ahead of the node (along the incoming direction): does the fibre go on where the trace
  turns or stops?

A second, trace-coverage grid (the trace itself rasterised and dilated by 2 µm) says which sampled
points are explained by traced fibre. The output is a set of raw per-node arrays; turning them into
contrast-normalised features is :mod:`.features`' job, so that brightness, offset and noise level
of the microscope drop out.

How the image is visited (only what the samples need):

* The working grid is global: working voxel ``m`` (per axis) is the mean of raw voxels
  ``[m*bin, (m+1)*bin)``, so a value never depends on how the work is cut up, and an image stored
  as TIFF or as zarr gives identical numbers. Smoothing runs over the volume as one (``mode
  'nearest'`` at its faces); outside it, and in bins it holds only part of, samples are NaN.
* The grid is cut into *bricks* of a power-of-two number of working voxels: thin along the
  *sweep* axis (the trace's longest), just wider than the reach of a node's samples, and 64
  voxels across it. Only bricks within reach of some node's samples are read ("held").
* The nodes are measured in waves, sweeping brick layer by brick layer. Each held brick is read
  (in a worker thread, a few groups of bricks ahead of need; one read per group of bricks across
  the sweep, or per run of held bricks where the group's box holds bricks no sample needs, and
  bricks read once: with 32- or 64-voxel chunks, each chunk is decoded once, and only if needed),
  binned, smoothed with a halo taken from its neighbours' binned data (so the result is exact
  across brick faces), given its coverage mask, and kept in a slot of a page pool until the last
  wave that samples it: about three brick layers are held at a time, whatever the trace's length.
* Sample points come from a per-node basis (node, u, w, ahead, ...) times fixed coefficients; a
  few integer operations turn them into pool addresses, and one gather reads them all.
"""

from __future__ import annotations

import ctypes
import itertools
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..morphology.spatial import points_along

WORK_UM = 0.9          # target working voxel size
SMOOTH_UM = 0.6        # smoothing sigma on the working grid
# Kernel radius in sigmas. At ~1 µm working voxels this gives a 3-tap kernel: the taps at 2 voxels
# would weigh 0.4% and cost as much again as the whole kernel.
SMOOTH_TRUNCATE = 2.0
DISK_R = 7             # cross-section disk radius, µm (1 µm steps)
SHELL_R = (4.0, 7.0)
EDGE_T = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
AHEAD_D = np.array([2.0, 4.0, 6.0, 9.0])
CONE_D = (4.0, 7.0)
COVER_UM = 2.0
REACH_UM = float(max(DISK_R, *SHELL_R, *AHEAD_D, *CONE_D))   # farthest fixed sample from its node
BRICK_ACROSS = 64      # brick edge across the sweep, working voxels (~60 µm): fewer, larger bricks
GROUP_RAW = 256        # read group edge across the sweep, in raw voxels: a few MB per read
WAVE_ROWS = 2048       # nodes measured per step, at most
WAVE_BRICKS = 96       # bricks a step's nodes sample, at most (unless one brick's nodes need more)
CHUNK_ROWS = 256       # nodes per gather: their sample coordinates stay in the L2 cache
PREFETCH = 12          # read groups queued ahead of need (a few MB each)


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
# Nearest first, so that "the disk within r" is a leading run of columns.
DISK_AB = DISK_AB[np.argsort((DISK_AB ** 2).sum(1), kind="stable")]
DISK_R2 = (DISK_AB ** 2).sum(1)
_CENTRE = 0                                              # the node itself, nearest of all
_WITHIN = {r: int(np.searchsorted(DISK_R2, r * r, side="right")) for r in (1.5, 3.5, 7.0)}
# Per disk point, the disk points one step away along +u, -u, +w, -w (-1 off the disk).
_LOOKUP = {(int(a), int(b)): i for i, (a, b) in enumerate(DISK_AB)}
_NEIGH = np.array([[_LOOKUP.get((int(a) + sa, int(b) + sb), -1) for sa, sb in ((1, 0), (-1, 0), (0, 1), (0, -1))]
                   for a, b in DISK_AB])
_CONE_ANG = np.arange(6) * (np.pi / 3)
_CONE_COS, _CONE_SIN = np.cos(np.deg2rad(25)), np.sin(np.deg2rad(25))


@dataclass
class RawImage:
    """Per-node raw image measurements (intensities in the image's own units)."""

    centre: np.ndarray       # (N,) intensity at the node
    disk_max: np.ndarray     # (N, 3) max across the fibre within 1.5, 3.5, 7 µm
    offset3: np.ndarray      # (N, 3) xyz vector from node to the max within 3.5 µm
    offset7: np.ndarray      # (N, 3) ... within 7 µm
    snap: np.ndarray         # (N, 3) offset to the distance-weighted disk maximum (a feature)
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


def _cone_axes(ahead: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors across ``ahead``; the cone directions are 25 degrees around it in their plane."""
    a = ahead
    p = _unit(np.cross(a, np.where(np.abs(a[:, 2:3]) < 0.9, [0.0, 0.0, 1.0], [1.0, 0.0, 0.0])))
    return p, np.cross(a, p)


def _cone_dirs(ahead: np.ndarray) -> np.ndarray:
    """(N, 6, 3) directions 25 degrees around ``ahead``."""
    p, q = _cone_axes(ahead)
    ang = _CONE_ANG
    return _CONE_COS * ahead[:, None, :] + _CONE_SIN * (np.cos(ang)[None, :, None] * p[:, None, :]
                                                        + np.sin(ang)[None, :, None] * q[:, None, :])


# ------------------------------------------------------------------------------ sample layout
# Every sample point is ``basis @ coefficients``: a per-node basis of 10 vectors (the node itself,
# u, w, ahead, the two cone axes, the x, y, z unit vectors, the edge to the parent) times a fixed
# column per sample; _gather evaluates only the non-zero terms. Columns: disk, edge, ahead, then
# the samples whose coverage is asked for (shells, cone), contiguous.
_NB = 10
_P, _U, _W, _AH, _CP, _CQ, _EX, _EY, _EZ, _ED = range(_NB)


def _coefficients():
    cols, sets, start = [], {}, 0

    def add(name, block):
        nonlocal start
        cols.append(block)
        sets[name] = slice(start, start + block.shape[1])
        start += block.shape[1]

    d = np.zeros((_NB, len(DISK_AB)))
    d[_U], d[_W] = DISK_AB[:, 0], DISK_AB[:, 1]
    add("disk", d)
    e = np.zeros((_NB, len(EDGE_T)))
    e[_ED] = EDGE_T
    add("edge", e)
    a = np.zeros((_NB, len(AHEAD_D)))
    a[_AH] = AHEAD_D
    add("ahead", a)
    s = np.zeros((_NB, len(SHELL_R) * len(SHELL_DIRS)))
    off = (np.array(SHELL_R)[:, None, None] * SHELL_DIRS[None]).reshape(-1, 3)     # (shell, dir) order
    s[_EX], s[_EY], s[_EZ] = off.T
    add("shell", s)
    c = np.zeros((_NB, len(CONE_D) * len(_CONE_ANG)))
    dist = np.repeat(CONE_D, len(_CONE_ANG))
    ang = np.tile(_CONE_ANG, len(CONE_D))
    c[_AH] = dist * _CONE_COS
    c[_CP] = dist * _CONE_SIN * np.cos(ang)
    c[_CQ] = dist * _CONE_SIN * np.sin(ang)
    add("cone", c)
    g = np.concatenate(cols, axis=1)
    g[_P] = 1.0
    return g.astype(np.float32), sets


_COEF, _SETS = _coefficients()
_COVERED = slice(_SETS["shell"].start, _SETS["cone"].stop)   # the samples whose trace coverage is asked for
# The per-node terms of each sample set (the x, y, z unit vectors are the same for every node:
# their part is a constant offset, _Pool.const).
_TERMS = [(c, sl) for sl in _SETS.values() for c in (_U, _W, _AH, _CP, _CQ, _ED) if np.any(_COEF[c, sl])]


# -------------------------------------------------------------------------------- the grid
class _Grid:
    """The working grid of a volume (z, y, x), its smoothing kernel and its bricks."""

    def __init__(self, volume, sweep: int):
        vs = np.asarray(volume.voxel_size, float)[::-1]
        self.bin = np.maximum(1, np.rint(WORK_UM / vs).astype(np.int64))
        self.vox = vs * self.bin                                           # working voxel, µm
        self.shape = np.asarray(volume.shape, np.int64) // self.bin        # working voxels wholly inside
        sigma = SMOOTH_UM / self.vox
        self.radius = (SMOOTH_TRUNCATE * sigma + 0.5).astype(np.int64)
        # Per axis, the kernel as multiples of its centre weight (the smoothing adds neighbour pairs,
        # scales them and adds the centre); the centre weights and the mean's 1/bin-volume (bricks
        # hold sums of raw voxels) make one final factor.
        self.ratios, scale = [], 1.0 / float(np.prod(self.bin))
        for s, r in zip(sigma, self.radius):
            k = np.exp(-0.5 * (np.arange(r + 1) / s) ** 2)
            self.ratios.append((k[1:] / k[0]).astype(np.float32))
            scale *= k[0] / (k[0] + 2 * k[1:].sum())
        self.scale = np.float32(scale)
        self.cover = np.ceil(COVER_UM / self.vox).astype(np.int64)
        # Working voxels a node's samples can reach, plus rounding slack and the smoothing halo
        # (a voxel's smoothed value depends on its neighbours' raw data).
        self.reach = REACH_UM / self.vox + 1.0 + self.radius
        # Bricks are as thin along the sweep as they can be (about two layers are held at a time)
        # and wider across it; either way wider than a node's reach box, so that its samples touch
        # at most two bricks per axis.
        need = np.ceil(np.log2(np.maximum(2 * self.reach + 1, 2 * self.cover + 1))).astype(np.int64)
        self.shift = np.maximum(need, int(np.log2(BRICK_ACROSS)))
        self.shift[sweep] = need[sweep]
        self.sweep = sweep
        self.bw = np.int64(1) << self.shift                                # brick edge, working voxels
        self.nbricks = -(-self.shape // self.bw)

    def working(self, xyz: np.ndarray) -> np.ndarray:
        """Fractional working-grid index (z, y, x) of points (…, 3) xyz µm: voxel m has its centre at m."""
        return xyz[..., ::-1] / self.vox - (self.bin - 1) / (2.0 * self.bin)


def _unique(a: np.ndarray) -> np.ndarray:
    """Sorted unique values of an int array (a sort is faster here than numpy's hash-based unique)."""
    a = np.sort(a)
    return a[np.concatenate([[True], a[1:] != a[:-1]])] if len(a) else a


_CORNERS = np.array(list(itertools.product((0, 1), repeat=3)), np.int64)      # (8, 3) z, y, x
_OFFSETS = np.array(list(itertools.product((-1, 0, 1), repeat=3)), np.int64)  # a brick's 27 neighbours
_SELF = 13                                                                     # offset (0, 0, 0)


def _corner_keys(qlo: np.ndarray, qhi: np.ndarray, q0: np.ndarray, tdim: np.ndarray):
    """Table keys of the bricks a box touches, given its corner bricks (at most two per axis):
    (row, key) pairs, each brick once per box; bricks outside the table are left out."""
    lo = [qlo[:, a] - q0[a] for a in range(3)]
    two = [qhi[:, a] > qlo[:, a] for a in range(3)]
    rows, keys = [], []
    for c in _CORNERS.tolist():
        sel = None                                   # the hi side only where it differs
        for a in range(3):
            if c[a]:
                sel = two[a] if sel is None else sel & two[a]
        r = np.arange(len(qlo)) if sel is None else np.flatnonzero(sel)
        q = [lo[a][r] + c[a] if sel is not None else lo[a] for a in range(3)]
        inside = (q[0] >= 0) & (q[0] < tdim[0]) & (q[1] >= 0) & (q[1] < tdim[1]) & (q[2] >= 0) & (q[2] < tdim[2])
        if not inside.all():
            r, q = r[inside], [v[inside] for v in q]
        rows.append(r)
        keys.append((q[0] * tdim[1] + q[1]) * tdim[2] + q[2])
    return np.concatenate(rows), np.concatenate(keys)


@dataclass
class _Plan:
    """The bricks some sample needs ("held": in the volume and in reach of a node; numbered 0..H-1)
    and the order in which they are read, prepared, used and released."""

    q0: np.ndarray                 # brick coordinates (z, y, x) of table key 0
    tdim: np.ndarray               # extent of the brick table (the trace's reach) in bricks
    keys: np.ndarray               # (H,) table keys of the held bricks, ascending
    coords: np.ndarray             # (H, 3) their brick coordinates
    src: np.ndarray                # (H, 27) held brick each part of the halo box comes from, -1: itself
    eff: np.ndarray                # (H, 27) that brick's offset (index into _OFFSETS)
    users: np.ndarray              # (H,) bricks whose preparation takes data of this one (itself too)
    waves: list                    # per wave: its rows (nodes)
    prepare: list                  # per wave: held bricks to prepare before it
    release: list                  # per wave: held bricks whose last use it is
    groups: list                   # per read group: its held bricks
    group_of: np.ndarray           # (H,) read group of each held brick
    reads: list                    # read groups in order of first need
    slots: int                     # pool slots held at most at once, plus the empty slot 0
    index: np.ndarray = None       # (table size,) held index of each table key, -1 where none
    box: np.ndarray = None         # (H, 2, 3) where in each brick samples can land: [lo, hi) working voxels

    def held(self, q: np.ndarray) -> np.ndarray:
        """Held index of bricks at coordinates q (n, 3), -1 where none."""
        rel = q - self.q0
        ok = np.all((rel >= 0) & (rel < self.tdim), axis=1)
        key = np.ravel_multi_index(tuple(np.where(ok[:, None], rel, 0).T), tuple(self.tdim))
        return np.where(ok, self.index[key], -1)


def _sample_boxes(grid: _Grid, plan: _Plan, x: np.ndarray, xe: np.ndarray) -> np.ndarray:
    """(H, 2, 3): per held brick, the planes across z (brick-relative [lo, hi), whole in y and x)
    holding every voxel a sample of a node at ``x`` or an edge sample at ``xe`` (working-grid
    positions + 0.5) can fall in. Smoothing and coverage are computed there only (3/4 of the bricks'
    volume in a dense arbor); a tighter box would save voxels but cost more than it saves, as numpy
    runs whole contiguous planes faster."""
    reach = grid.reach - grid.radius
    lo = np.floor(np.concatenate([x - reach, xe - 1.0])).astype(np.int64)
    hi = np.floor(np.concatenate([x + reach, xe + 1.0])).astype(np.int64)
    r, k = _corner_keys(lo >> grid.shift, hi >> grid.shift, plan.q0, plan.tdim)
    h = plan.index[k]
    ok = h >= 0
    r, h = r[ok], h[ok]
    z0 = plan.coords[h, 0] * grid.bw[0]
    zlo = np.full(len(plan.keys), grid.bw[0])
    zhi = np.zeros(len(plan.keys), np.int64)
    np.minimum.at(zlo, h, np.maximum(lo[r, 0] - z0, 0))
    np.maximum.at(zhi, h, np.minimum(hi[r, 0] + 1 - z0, grid.bw[0]))
    box = np.zeros((len(plan.keys), 2, 3), np.int64)
    box[:, 0, 0], box[:, 1, 0], box[:, 1, 1:] = zlo, zhi, grid.bw[1:]
    return box


def _plan(grid: _Grid, xyz: np.ndarray, parent: np.ndarray) -> _Plan | None:
    """Schedule of the bricks (None if no node is near the volume). The nodes are measured in
    waves, sweeping the trace's longest axis (slowest) in brick layers, so that about three layers
    of bricks are held at a time."""
    x = grid.working(xyz) + 0.5
    # Nodes further outside the volume than their samples reach have nothing to measure.
    rows = np.flatnonzero(np.all((x > -grid.reach) & (x < grid.shape + grid.reach), axis=1))
    if not len(rows):
        return None
    x = x[rows]
    node_q = np.floor(x).astype(np.int64) >> grid.shift
    lo = [np.floor(x - grid.reach).astype(np.int64)]
    hi = [np.floor(x + grid.reach).astype(np.int64)]
    owner = [np.arange(len(rows))]
    # Edge samples further out than the reach (long edges only) add their own bricks, where they
    # are near the volume (outside it they are NaN).
    par = parent[rows]
    far = np.linalg.norm(xyz[rows] - xyz[np.maximum(par, 0)], axis=1) * EDGE_T.max() > REACH_UM
    long = np.flatnonzero((par >= 0) & far)
    xe = np.zeros((0, 3))
    if len(long):
        a = xyz[rows[long]]
        pts = a[:, None, :] + EDGE_T[None, :, None] * (xyz[par[long]] - a)[:, None, :]
        xe = grid.working(pts.reshape(-1, 3)) + 0.5
        slack = 1.0 + grid.radius
        keep = np.all((xe > -slack) & (xe < grid.shape + slack), axis=1)
        xe = xe[keep]
        lo.append(np.floor(xe - slack).astype(np.int64))
        hi.append(np.floor(xe + slack).astype(np.int64))
        owner.append(np.repeat(long, len(EDGE_T))[keep])
    qlo = np.concatenate(lo) >> grid.shift
    qhi = np.concatenate(hi) >> grid.shift
    owner = np.concatenate(owner)
    q0 = np.minimum(qlo.min(0), node_q.min(0))
    tdim = np.maximum(qhi.max(0), node_q.max(0)) - q0 + 1
    ntab = int(np.prod(tdim))
    nkey = np.ravel_multi_index(tuple((node_q - q0).T), tuple(tdim))
    # Boxes of one node brick with the same corner bricks touch the same bricks: expand each once.
    span = ((qhi - qlo) * np.array([4, 2, 1])).sum(1)
    lkey = np.ravel_multi_index(tuple((qlo - q0).T), tuple(tdim))
    combo = _unique((nkey[owner] * ntab + lkey) * 8 + span)
    cn, rest = np.divmod(combo, ntab * 8)
    cl, cs = np.divmod(rest, 8)
    cqlo = np.array(np.unravel_index(cl, tuple(tdim))).T + q0
    cqhi = cqlo + (cs[:, None] >> np.array([2, 1, 0])) % 2
    r, tk = _corner_keys(cqlo, cqhi, q0, tdim)
    touched = _unique(tk)
    tq = np.array(np.unravel_index(touched, tuple(tdim))).T + q0
    inside = np.all((tq >= 0) & (tq < grid.nbricks), axis=1)
    keys, coords = touched[inside], tq[inside]
    plan = _Plan(q0, tdim, keys, coords, None, None, None, [], [], [], [], None, [], 0, np.full(ntab, -1, np.int64))
    plan.index[keys] = np.arange(len(keys))
    plan.box = _sample_boxes(grid, plan, x, xe)
    hk = plan.held(np.array(np.unravel_index(tk, tuple(tdim))).T + q0)
    ok = hk >= 0
    pair = _unique(cn[r[ok]] * len(keys) + hk[ok])
    pn, pt = np.divmod(pair, len(keys))                       # node brick key -> held bricks it needs

    # Halo sources: the neighbour at each offset; at the volume's faces the nearest brick inside.
    eff = np.where((coords[:, None, :] + _OFFSETS[None] >= 0) & (coords[:, None, :] + _OFFSETS[None] < grid.nbricks),
                   _OFFSETS[None], 0)
    src = plan.held((coords[:, None, :] + eff).reshape(-1, 3)).reshape(len(keys), 27)
    own = (src < 0) | ~np.any(eff, axis=2)
    plan.src = np.where(own, -1, src).astype(np.int64)
    plan.eff = np.where(own, _SELF, ((eff + 1) * np.array([9, 3, 1])).sum(2))
    pairs = _unique((np.arange(len(keys))[:, None] * len(keys) + plan.src)[plan.src >= 0])
    plan.users = 1 + np.bincount(pairs % len(keys), minlength=len(keys))

    # Sweep order: the sweep axis slowest, then the others in z, y, x order.
    sweep = grid.sweep
    perm = [sweep] + [a for a in range(3) if a != sweep]
    rank_h = np.empty(len(keys), np.int64)
    rank_h[np.lexsort(tuple(coords[:, a] for a in reversed(perm)))] = np.arange(len(keys))
    bricks = _unique(nkey)
    bq = np.array(np.unravel_index(bricks, tuple(tdim))).T + q0
    order = bricks[np.lexsort(tuple(bq[:, a] for a in reversed(perm)))]
    rows_sorted = np.argsort(nkey, kind="stable")
    ends = np.concatenate([bricks, [ntab]])
    rb = np.searchsorted(nkey[rows_sorted], ends)
    nb = np.searchsorted(pn, ends)
    idx = {int(b): i for i, b in enumerate(bricks)}
    # Waves of consecutive node bricks, up to WAVE_ROWS nodes and WAVE_BRICKS bricks needed (a
    # sparse trace's nodes spread over many bricks: memory stays bounded by the bricks in flight).
    cur, cur_needs, count = [], set(), 0
    wave_needs = []
    for b in order.tolist():
        i = idx[b]
        needs = pt[nb[i]:nb[i + 1]].tolist()
        if cur and (count >= WAVE_ROWS or len(cur_needs.union(needs)) > WAVE_BRICKS):
            plan.waves.append(rows[np.concatenate(cur)])
            wave_needs.append(np.array(sorted(cur_needs), np.int64))
            cur, cur_needs, count = [], set(), 0
        cur.append(rows_sorted[rb[i]:rb[i + 1]])
        cur_needs.update(needs)
        count += rb[i + 1] - rb[i]
    plan.waves.append(rows[np.concatenate(cur)])
    wave_needs.append(np.array(sorted(cur_needs), np.int64))

    # Preparation order, releases and the peak of slots held.
    last_wave = np.full(len(keys), -1)
    for wi, nd in enumerate(wave_needs):
        last_wave[nd] = wi
    done = np.zeros(len(keys), bool)
    live = peak = 0
    for wi, nd in enumerate(wave_needs):
        new = nd[~done[nd]]
        new = new[np.argsort(rank_h[new])]
        done[new] = True
        plan.prepare.append(new.tolist())
        live += len(new)
        peak = max(peak, live)
        plan.release.append(nd[last_wave[nd] == wi].tolist())
        live -= len(plan.release[-1])
    plan.slots = peak + 1
    # Read groups: one brick deep along the sweep (so that reading runs just one layer ahead) and
    # as wide across it as GROUP_RAW allows (fewer, larger reads: each read has a fixed cost).
    gsize = np.maximum(1, GROUP_RAW // (grid.bw * grid.bin))
    gsize[sweep] = 1
    gkey = np.ravel_multi_index(tuple((coords // gsize - (coords // gsize).min(0)).T),
                                tuple((coords // gsize).max(0) - (coords // gsize).min(0) + 1))
    ug, plan.group_of = np.unique(gkey, return_inverse=True)
    srt = np.argsort(plan.group_of, kind="stable")
    plan.groups = np.split(srt, np.searchsorted(plan.group_of[srt], np.arange(1, len(ug))))
    # Groups in order of first need: a brick's own group and its halo sources', brick by brick.
    seq = np.concatenate([np.arange(len(keys))[:, None], plan.src], axis=1)
    prep = np.concatenate([np.asarray(p, np.int64) for p in plan.prepare]) if plan.prepare else np.zeros(0, np.int64)
    need = seq[prep].reshape(-1)
    need = plan.group_of[need[need >= 0]]
    _, first = np.unique(need, return_index=True)
    plan.reads = need[np.sort(first)].tolist()
    return plan


# ------------------------------------------------------------------------- reading, smoothing
def _bin_sum(raw: np.ndarray, bin_: np.ndarray) -> np.ndarray:
    """Sums over ``bin_`` raw voxels, exact: uint16 for 8-bit images (half the memory and work of
    float32), float32 otherwise (exact for 16-bit integers); the raw array itself where nothing is
    binned. Strided adds: a reshape-and-reduce over six axes is an order of magnitude slower."""
    if np.all(bin_ == 1):
        return raw
    small = raw.dtype == np.uint8 and int(np.prod(bin_)) * 255 < 2 ** 16
    acc_t = np.uint16 if small else np.float32
    a = raw
    for ax in (2, 1, 0):
        b = int(bin_[ax])
        if b == 1:
            continue
        if ax == 2 and b == 2 and small and a.flags.c_contiguous and a.shape[2] % 2 == 0:
            # Each x pair is the two bytes of one 16-bit word (their sum does not depend on the byte
            # order): two operations on contiguous data, 4x faster than the strided add below.
            word = a.view(np.uint16)
            a = word & 0xFF
            a += word >> 8
            continue
        parts = []
        for j in range(b):
            sl = [slice(None)] * 3
            sl[ax] = slice(j, None, b)
            parts.append(a[tuple(sl)])
        acc = np.add(parts[0], parts[1], dtype=acc_t)
        for p in parts[2:]:
            acc += p
        a = acc
    return a


def _read_group(volume, grid: _Grid, plan: _Plan, g: int) -> dict:
    """Binned sums of the held bricks of one read group, split into bricks (views): one read of
    their bounding box or, where that box holds bricks no sample needs, one read per run of held
    bricks (_runs; the chunks of the others are then not decoded: ~10% of the decoding in a dense
    arbor). Beyond the volume's last whole bin the last plane is repeated, so that the smoothing
    treats the volume's faces like ``mode='nearest'``."""
    members = plan.groups[g]
    out = {}
    for run in _runs(plan.coords[members]):
        qs = plan.coords[members[run]]
        qlo, qhi = qs.min(0), qs.max(0) + 1
        lo = qlo * grid.bw
        raw = volume.read(tuple(int(v) for v in lo * grid.bin), tuple(int(v) for v in qhi * grid.bw * grid.bin))
        s = _bin_sum(raw, grid.bin)
        for ax in range(3):
            n_in = int(grid.shape[ax] - lo[ax])
            if n_in < s.shape[ax]:
                sl, last = [slice(None)] * 3, [slice(None)] * 3
                sl[ax], last[ax] = slice(n_in, None), slice(n_in - 1, n_in)
                s[tuple(sl)] = s[tuple(last)]
        for h, q in zip(members[run].tolist(), qs):
            a = (q - qlo) * grid.bw
            out[h] = s[tuple(slice(int(a[ax]), int(a[ax] + grid.bw[ax])) for ax in range(3))]
    return out


def _runs(qs: np.ndarray) -> list:
    """Rows of brick coordinates ``qs`` (n, 3) in boxes that hold no other brick: all of them if
    their bounding box holds nothing else, otherwise runs of consecutive bricks along its longest axis."""
    ext = qs.max(0) + 1 - qs.min(0)
    if np.prod(ext) == len(qs):
        return [np.arange(len(qs))]
    ax = int(np.argmax(ext))
    a, b = (k for k in range(3) if k != ax)
    order = np.lexsort((qs[:, ax], qs[:, b], qs[:, a]))
    s = qs[order]
    cut = (s[1:, a] != s[:-1, a]) | (s[1:, b] != s[:-1, b]) | (s[1:, ax] != s[:-1, ax] + 1)
    return np.split(order, np.flatnonzero(cut) + 1)


class _Binned:
    """Binned sums of the held bricks, read in a worker thread a few groups ahead of need, and kept
    while a brick whose halo takes from them is still to be prepared: whole until the brick itself
    is prepared, then only its six faces (kernel-radius thick)."""

    def __init__(self, executor, volume, grid: _Grid, plan: _Plan, scratch: "_Scratch"):
        self.ex, self.volume, self.grid, self.plan, self.scratch = executor, volume, grid, plan, scratch
        self.futures: dict = {}
        self.next = 0
        self.full: dict = {}
        self.faces: dict = {}
        self.users = plan.users.copy()
        self._ahead()

    def _submit(self, g: int) -> None:
        self.futures[g] = self.ex.submit(_read_group, self.volume, self.grid, self.plan, g)

    def _ahead(self) -> None:
        reads = self.plan.reads
        while self.next < len(reads) and len(self.futures) < PREFETCH:
            self._submit(reads[self.next])
            self.next += 1

    def whole(self, h: int) -> np.ndarray:
        if h not in self.full:
            g = int(self.plan.group_of[h])
            self._ahead()
            if g not in self.futures:            # only if the run left the plan's order
                self._submit(g)
            # Groups are read in order: take the ones queued before g too (some bricks are read
            # for halos that, in the end, their neighbours' planes did not reach).
            while True:
                k, f = next(iter(self.futures.items()))
                del self.futures[k]
                self.full.update((m, a) for m, a in f.result().items() if self.users[m])
                if k == g:
                    break
            self._ahead()
        return self.full[h]

    def part(self, h: int, j: int, e: int) -> np.ndarray:
        """The part of brick ``h`` that lies in the halo box of the brick at offset ``-e`` from it,
        at that brick's offset ``j`` (see _Scratch.full_part)."""
        faces = self.faces.get(h)
        if faces is None:
            return self.whole(h)[self.scratch.full_part[j, e]]
        ax, side, sl = self.scratch.face_part[j, e]
        return faces[ax, side][sl]

    def prepared(self, h: int) -> None:
        """Brick ``h`` is prepared: data no brick still to prepare needs is dropped."""
        for m in set(self.plan.src[h][self.plan.src[h] >= 0].tolist()) | {h}:
            self.users[m] -= 1
            if self.users[m] == 0:
                self.full.pop(m, None)
                self.faces.pop(m, None)
        if self.users[h] and h in self.full:
            a, r = self.full.pop(h), self.grid.radius
            faces = {}
            for ax in range(3):
                lo, hi = [slice(None)] * 3, [slice(None)] * 3
                lo[ax], hi[ax] = slice(0, int(r[ax])), slice(a.shape[ax] - int(r[ax]), None)
                faces[ax, 1], faces[ax, -1] = a[tuple(lo)].copy(), a[tuple(hi)].copy()
            self.faces[h] = faces

    def cancel(self) -> None:
        for f in self.futures.values():
            f.cancel()


class _Scratch:
    """Work arrays reused from brick to brick and chunk to chunk (fresh arrays of these sizes cost
    page faults at every allocation), and the slices that assemble a brick's halo box."""

    def __init__(self, grid: _Grid, chunk: int, itype):
        bw, r, d = grid.bw, grid.radius, grid.cover
        self.buf = np.empty(tuple(bw + 2 * r), np.float32)
        wx = -(-(int(bw[2]) + 2 * int(d[2])) // 8) * 8
        self.grid = np.zeros((int(bw[0] + 2 * d[0]), int(bw[1] + 2 * d[1]), wx), np.uint8)
        self.cz = np.empty((int(bw[0]), int(bw[1] + 2 * d[1]), wx // 8), np.uint64)
        self.cy = np.empty((int(bw[0]), int(bw[1]), wx // 8), np.uint64)
        # Zeros: the edges that no pass writes are read (into values never kept) and must be finite.
        self.lines = [np.zeros(self.buf.size, np.float32) for _ in range(2 + bool(np.any(r > 1)))]
        k = _COEF.shape[1]
        self.pts = np.empty((chunk, 3, k), np.float32)
        self.tmp = np.empty((chunk, 3, max(sl.stop - sl.start for sl in _SETS.values())), np.float32)
        self.m = np.empty((chunk, 3, k), np.int32)
        self.q = np.empty((chunk, k), np.int32)
        self.t = np.empty((chunk, k), np.int32)
        self.loc = np.empty((chunk, k), np.int32)
        self.flat = np.empty((chunk, k), itype)
        self.vals = np.empty((WAVE_ROWS, k), np.float32)
        self.cov = np.empty((WAVE_ROWS, _COVERED.stop - _COVERED.start), bool)
        self.edge_out = np.empty((WAVE_ROWS, len(EDGE_T)), bool)
        # Halo box of a brick: part j (offset d_j) lies at dst[j] in buf and comes from the brick at
        # offset e (d_j where that brick is in the volume, 0 along axes where it is not: there the
        # nearest plane is repeated). full_part[j, e] slices it from that brick's whole array,
        # face_part[j, e] from one of its faces; own[j] is part j repeated from the brick itself.
        n = [int(v) for v in bw]
        rr = [int(v) for v in r]
        self.skip = [any(dd and not rr[a] for a, dd in enumerate(dj)) for dj in _OFFSETS.tolist()]
        self.dst = [tuple((slice(0, rr[a]), slice(rr[a], rr[a] + n[a]), slice(rr[a] + n[a], n[a] + 2 * rr[a]))[dd + 1]
                          for a, dd in enumerate(dj)) for dj in _OFFSETS.tolist()]
        self.own = [tuple(slice(None) if dd == 0 else slice(0, 1) if dd < 0 else slice(n[a] - 1, n[a])
                          for a, dd in enumerate(dj)) for dj in _OFFSETS.tolist()]
        self.full_part, self.face_part = {}, {}
        for j, dj in enumerate(_OFFSETS.tolist()):
            for e, de in enumerate(_OFFSETS.tolist()):
                if not any(de) or any(de[a] and de[a] != dj[a] for a in range(3)):
                    continue
                sl = [slice(n[a] - rr[a], n[a]) if de[a] < 0 else slice(0, rr[a]) if de[a] > 0 else
                      slice(None) if dj[a] == 0 else slice(0, 1) if dj[a] < 0 else slice(n[a] - 1, n[a])
                      for a in range(3)]
                self.full_part[j, e] = tuple(sl)
                ax = next(a for a in range(3) if de[a])
                sl[ax] = slice(None)
                self.face_part[j, e] = (ax, de[ax], tuple(sl))


def _smooth_valid(a: np.ndarray, grid: _Grid, out: np.ndarray, scratch: _Scratch) -> None:
    """``out`` := ``a`` (C-contiguous, longer by the kernel radius on both sides of each axis)
    filtered along x, y and z by the symmetric kernels.

    Each pass runs over ``a`` flattened, a neighbour along an axis being a fixed stride away: one
    long contiguous loop per operation, faster than the many short rows of a 3-D slice. The
    outermost kernel radius of each axis gets meaningless values there (its neighbours wrap to
    the next row); only the interior is kept, and no interior value is computed from them."""
    n = a.size
    strides = (a.shape[1] * a.shape[2], a.shape[2], 1)
    src, bufs, k = a.reshape(-1), (scratch.lines[0][:n], scratch.lines[1][:n]), 0
    for ax in (2, 1, 0):
        ratios, st = grid.ratios[ax], strides[ax]
        r = len(ratios)
        if not r:
            continue
        dst = bufs[k]
        k ^= 1
        inner = dst[r * st:n - r * st]
        np.add(src[(r - 1) * st:n - (r + 1) * st], src[(r + 1) * st:n - (r - 1) * st], out=inner)
        inner *= ratios[0]
        for j in range(2, r + 1):
            tmp = scratch.lines[2][:len(inner)]
            np.add(src[(r - j) * st:n - (r + j) * st], src[(r + j) * st:n - (r - j) * st], out=tmp)
            tmp *= ratios[j - 1]
            inner += tmp
        inner += src[r * st:n - r * st]
        src = dst
    r = grid.radius
    np.multiply(src.reshape(a.shape)[tuple(slice(int(v), int(e - v)) for v, e in zip(r, a.shape))], grid.scale,
                out=out)


class _Pool:
    """Smoothed bricks and their coverage masks in slots of two flat arrays, so that every sample
    is one gather; slot 0 stays empty (NaN, not covered) for samples outside the volume."""

    def __init__(self, grid: _Grid, plan: _Plan):
        self.shape = tuple(int(v) for v in grid.bw)
        self.vol = int(np.prod(grid.bw))
        self.img = np.empty(plan.slots * self.vol, np.float32)
        self.cov = np.empty(plan.slots * self.vol, bool)
        self.img[:self.vol] = np.nan
        self.cov[:self.vol] = False
        itype = np.int32 if plan.slots * self.vol < 2 ** 31 else np.int64
        self.base = np.zeros(int(np.prod(plan.tdim)), itype)    # table key -> offset of its slot
        self.free = list(range(plan.slots - 1, 0, -1))
        self.keys = plan.keys
        self.tdim = tuple(int(v) for v in plan.tdim)
        self.shift = grid.shift
        # Working voxels inside the volume, relative to the table's origin: [inside[0], inside[1]).
        self.inside = (-(plan.q0 * grid.bw)[None, :, None], (grid.shape - plan.q0 * grid.bw)[None, :, None])
        # Sample offsets along the x, y, z unit vectors, in working voxels (z, y, x).
        self.const = (_COEF[[_EZ, _EY, _EX]] / grid.vox[:, None]).astype(np.float32)

    def take(self, h: int) -> tuple[np.ndarray, np.ndarray]:
        """A free slot for held brick ``h``: its image and coverage arrays, shaped like a brick."""
        slot = self.free.pop()
        self.base[self.keys[h]] = slot * self.vol
        view = slice(slot * self.vol, (slot + 1) * self.vol)
        return self.img[view].reshape(self.shape), self.cov[view].reshape(self.shape)

    def give(self, h: int) -> None:
        self.free.append(int(self.base[self.keys[h]]) // self.vol)
        self.base[self.keys[h]] = 0


class _Block:
    """One brick made ready for sampling, in a pool slot: the smoothed image and the trace coverage
    over the planes where samples can land (NaN and not covered elsewhere, and outside the volume)."""

    def __init__(self, grid: _Grid, plan: _Plan, pool: _Pool, h: int, binned: _Binned, trace_vox: np.ndarray,
                 scratch: _Scratch):
        q = plan.coords[h]
        img, cov = pool.take(h)
        lo, hi = plan.box[h]
        if np.any(hi <= lo):                   # only its data is needed, for a neighbour's halo
            img[...] = np.nan
            cov[...] = False
            return
        own = binned.whole(h)
        buf = scratch.buf
        # The halo box, only across the planes the smoothing of [lo, hi) reads: buf[z0:z1].
        z0, z1 = int(lo[0]), int(hi[0] + 2 * grid.radius[0])
        for j, (s, e) in enumerate(zip(plan.src[h].tolist(), plan.eff[h].tolist())):
            if scratch.skip[j]:
                continue
            dst = scratch.dst[j]
            a, b = max(dst[0].start, z0), min(dst[0].stop, z1)
            if a >= b:
                continue
            part = own[scratch.own[j]] if s < 0 else binned.part(s, j, e)
            if part.shape[0] > 1:              # not a repeated edge plane: the planes in [a, b)
                part = part[a - dst[0].start:b - dst[0].start]
            buf[(slice(a, b),) + dst[1:]] = part
        for z in (slice(0, int(lo[0])), slice(int(hi[0]), None)):
            img[z] = np.nan
            cov[z] = False
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        _smooth_valid(buf[z0:z1], grid, img[box], scratch)
        for ax in range(3):                    # working voxels not wholly inside the volume
            n_in = int(grid.shape[ax] - q[ax] * grid.bw[ax])
            if n_in < grid.bw[ax]:
                sl = [slice(None)] * 3
                sl[ax] = slice(max(n_in, 0), None)
                img[tuple(sl)] = np.nan
        _coverage(cov, trace_vox - q * grid.bw, grid.cover, scratch, lo, hi)


def _coverage(dst: np.ndarray, vox: np.ndarray, d: np.ndarray, scratch: _Scratch, lo, hi) -> None:
    """``dst[lo:hi]`` (part of a brick, bool) := within ``d`` voxels (a box) of one of the trace
    voxels ``vox`` (brick-relative, up to ``d`` outside it). The dilation along x is drawn with
    the voxels (a run of 2 dx + 1 per voxel: a few thousand writes, where dilating the brick's bytes
    would take 2 dx passes over all of them); along z and y it runs on 8-voxel words."""
    (z0, y0, x0), (nz, ny, nx) = (int(v) for v in lo), (int(v) for v in hi - lo)
    if not len(vox):
        dst[z0:z0 + nz, y0:y0 + ny, x0:x0 + nx] = False
        return
    dz, dy, dx = (int(v) for v in d)
    g = scratch.grid
    gy, gx = g.shape[1], g.shape[2]
    # Column c of the grid holds x = c - dx; a run's columns beyond the grid hold no x of the
    # brick, and are clipped onto its first or last column (x outside the brick either way).
    flat = (((vox[:, 0] + dz) * gy + (vox[:, 1] + dy)) * gx)[:, None] + \
        np.clip(vox[:, 2, None] + np.arange(2 * dx + 1), 0, gx - 1)
    flat = flat.reshape(-1)
    g.reshape(-1)[flat] = 1
    w = g.view(np.uint64)[z0:z0 + nz + 2 * dz, y0:y0 + ny + 2 * dy]
    a, b = scratch.cz[:nz, :ny + 2 * dy], scratch.cy[:nz, :ny]
    np.copyto(a, w[0:nz])
    for o in range(1, 2 * dz + 1):
        a |= w[o:o + nz]
    np.copyto(b, a[:, 0:ny])
    for o in range(1, 2 * dy + 1):
        b |= a[:, o:o + ny]
    np.copyto(dst[z0:z0 + nz, y0:y0 + ny, x0:x0 + nx].view(np.uint8), b.view(np.uint8)[:, :, x0 + dx:x0 + dx + nx])
    g.reshape(-1)[flat] = 0                    # clean for the next brick


# ------------------------------------------------------------------------------ measurement
def _block_numbers(xyz: np.ndarray, block_um: float) -> np.ndarray:
    """Which ``block_um`` cube each node falls in, numbered 0, 1, ... in (x, y, z) order."""
    c = np.floor(xyz / block_um).astype(np.int64)
    c -= c.min(0)
    key = np.ravel_multi_index(tuple(c.T), tuple(c.max(0) + 1))
    _, inverse = np.unique(key, return_inverse=True)
    return inverse.reshape(-1)


def edge_points(xyz: np.ndarray, parent: np.ndarray, step: float = 0.5) -> np.ndarray:
    """Points at most ``step`` µm apart along all trace edges, and the nodes themselves."""
    child = np.flatnonzero(parent >= 0)
    return np.vstack([xyz, points_along(xyz[child], xyz[parent[child]], step)[0]])


def _trace_by_brick(grid: _Grid, plan: _Plan, pts: np.ndarray):
    """Working-grid voxels of the trace points, grouped by the held bricks whose coverage they
    reach (a point within the dilation of a brick face belongs to both): (voxels, bounds per brick)."""
    m = np.floor(grid.working(pts) + 0.5).astype(np.int64)
    rows, keys = _corner_keys((m - grid.cover) >> grid.shift, (m + grid.cover) >> grid.shift, plan.q0, plan.tdim)
    h = plan.index[keys]
    ok = h >= 0
    rows, h = rows[ok], h[ok]
    order = np.argsort(h, kind="stable")
    return m[rows[order]], np.searchsorted(h[order], np.arange(len(plan.keys) + 1))


def measure(xyz: np.ndarray, parent: np.ndarray, first_child: np.ndarray, volume, *, block_um: float = 96.0,
            progress=None) -> RawImage:
    """Raw image measurements for every node; ``volume`` has ``shape``, ``voxel_size`` and ``read(lo, hi)``.

    Memory is bounded by the bricks in flight (those that a node not yet measured still samples,
    and a few read groups ahead), not by the volume or the trace's extent. ``progress(k)`` is
    called as nodes are done, k at a time."""
    n = len(xyz)
    block = _block_numbers(xyz, block_um) if n else np.zeros(0, np.int64)
    out = _empty(n, block)
    if n == 0:
        return out
    xyz = np.asarray(xyz, float)
    _, u, w, ahead = frames(xyz, parent, first_child)
    grid = _Grid(volume, sweep=int(np.argmax(np.ptp(xyz[:, ::-1], axis=0))))     # the trace's longest axis
    plan = _plan(grid, xyz, parent)
    measured = sum(len(rows) for rows in plan.waves) if plan is not None else 0
    if progress is not None and measured < n:
        progress(n - measured)                 # far outside the volume: nothing to measure
    if plan is None:
        return out
    trace_vox, trace_bounds = _trace_by_brick(grid, plan, edge_points(xyz, parent))
    # Reads run in a worker thread, a few groups ahead of need, from here on: tensorstore and
    # numpy release the GIL, so decoding the next bricks overlaps smoothing and sampling these.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="neurorecon-read") as ex:
        pool = _Pool(grid, plan)
        scratch = _Scratch(grid, CHUNK_ROWS, pool.base.dtype)
        binned = _Binned(ex, volume, grid, plan, scratch)
        try:
            basis = _basis(grid, plan, xyz, parent, u, w, ahead)
            for wi, rows in enumerate(plan.waves):
                for h in plan.prepare[wi]:
                    _Block(grid, plan, pool, h, binned, trace_vox[trace_bounds[h]:trace_bounds[h + 1]], scratch)
                    binned.prepared(h)
                for c0 in range(0, len(rows), WAVE_ROWS):
                    _measure_rows(pool, rows[c0:c0 + WAVE_ROWS], basis, parent, u, w, out, scratch)
                for h in plan.release[wi]:
                    pool.give(h)
                if progress is not None:
                    progress(len(rows))
        finally:
            binned.cancel()
    _trim_heap()
    return out


def _trim_heap() -> None:
    """Give freed heap memory back to the OS. glibc keeps what the read thread allocated (binned
    bricks) in that thread's own arena once freed, where later allocations of the main thread do
    not reuse it: without this, ~50-100 MB more stay resident for the rest of the process."""
    global _LIBC
    if _LIBC is None:
        _LIBC = False
        if sys.platform.startswith("linux"):
            try:
                _LIBC = ctypes.CDLL("libc.so.6").malloc_trim
            except (OSError, AttributeError):     # not glibc (musl has no malloc_trim)
                pass
    if _LIBC:
        _LIBC(0)


_LIBC = None


def _basis(grid: _Grid, plan: _Plan, xyz, parent, u, w, ahead) -> np.ndarray:
    """(N, 3, 10) per-node basis in working voxels (z, y, x) relative to the table's first brick;
    the node column carries +0.5 so that truncation to int rounds to the nearest voxel. (The x, y, z
    unit vector columns stay zero: _Pool.const stands for them.)"""
    n = len(xyz)
    s = 1.0 / grid.vox
    b = np.zeros((n, 3, _NB), np.float64)
    b[:, :, _P] = grid.working(xyz) - plan.q0 * grid.bw + 0.5
    b[:, :, _U] = u[:, ::-1] * s
    b[:, :, _W] = w[:, ::-1] * s
    b[:, :, _AH] = ahead[:, ::-1] * s
    cp, cq = _cone_axes(ahead)
    b[:, :, _CP] = cp[:, ::-1] * s
    b[:, :, _CQ] = cq[:, ::-1] * s
    has = parent >= 0
    b[:, :, _ED] = np.where(has[:, None], xyz[np.maximum(parent, 0)] - xyz, 0.0)[:, ::-1] * s
    return b.astype(np.float32)


def _empty(n: int, block: np.ndarray) -> RawImage:
    f = np.float32
    return RawImage(np.full(n, np.nan, f), np.full((n, 3), np.nan, f), np.zeros((n, 3), f), np.zeros((n, 3), f),
                    np.zeros((n, 3), f), np.full(n, np.nan, f), np.full(n, np.nan, f),
                    np.full((n, 2, 40), np.nan, f), np.zeros((n, 2, 40), bool), np.full((n, 5), np.nan, f),
                    np.full((n, 4), np.nan, f), np.full((n, 2, 6), np.nan, f), np.zeros((n, 2, 6), bool), block)


def _gather(pool: _Pool, basis: np.ndarray, sc: _Scratch, vals: np.ndarray, cov: np.ndarray,
            edge_out: np.ndarray) -> None:
    """``vals`` (n, K) := the samples' values, ``cov`` := the coverage of the shell and cone samples,
    ``edge_out`` := edge samples outside the volume, for nodes with a basis (n, 3, 10): a few
    multiply-adds give the points, integer operations their pool addresses, one take the values."""
    n = len(basis)
    # Each sample set is the node plus a few basis vectors times its coefficients (a dense matrix
    # product would spend most of its work on zeros, and OpenBLAS may spread so small a product
    # over threads that, on a busy machine, it waits milliseconds for).
    pts, tmp = sc.pts[:n], sc.tmp[:n]
    np.add(basis[:, :, _P, None], pool.const, out=pts)
    for c, sl in _TERMS:
        term = tmp[:, :, :sl.stop - sl.start]
        np.multiply(basis[:, :, c, None], _COEF[c, sl], out=term)
        pts[:, :, sl] += term
    m = sc.m[:n]
    np.copyto(m, pts, casting="unsafe")            # every sample is >= 0 (the table's origin): floor
    # Edge samples of a long edge may lie outside the table: outside the volume, NaN.
    e = m[:, :, _SETS["edge"]]
    np.any((e < pool.inside[0]) | (e >= pool.inside[1]), axis=1, out=edge_out)
    sz, sy, sx = (int(v) for v in pool.shift)
    q, t, loc = sc.q[:n], sc.t[:n], sc.loc[:n]
    np.right_shift(m[:, 0], sz, out=q)
    q *= pool.tdim[1] * pool.tdim[2]
    np.right_shift(m[:, 1], sy, out=t)
    t *= pool.tdim[2]
    q += t
    np.right_shift(m[:, 2], sx, out=t)
    q += t
    np.bitwise_and(m[:, 0], (1 << sz) - 1, out=loc)
    loc <<= sy + sx
    np.bitwise_and(m[:, 1], (1 << sy) - 1, out=t)
    t <<= sx
    loc |= t
    np.bitwise_and(m[:, 2], (1 << sx) - 1, out=t)
    loc |= t
    flat = sc.flat[:n]
    pool.base.take(q, out=flat, mode="clip")
    flat += loc
    pool.img.take(flat, out=vals, mode="clip")
    pool.cov.take(flat[:, _COVERED], out=cov, mode="clip")


def _measure_rows(pool: _Pool, rows, basis, parent, u, w, out: RawImage, scratch: _Scratch) -> None:
    n = len(rows)
    vals, cov, edge_out = scratch.vals[:n], scratch.cov[:n], scratch.edge_out[:n]
    for c0 in range(0, n, CHUNK_ROWS):
        c = slice(c0, c0 + CHUNK_ROWS)
        _gather(pool, basis[rows[c]], scratch, vals[c], cov[c], edge_out[c])
    ns = len(SHELL_R) * len(SHELL_DIRS)
    r_ = np.arange(n)
    # Cross-section disk.
    dv = vals[:, _SETS["disk"]]
    dv0 = np.where(np.isnan(dv), -np.inf, dv)
    out.centre[rows] = dv[:, _CENTRE]
    u_r, w_r = u[rows], w[rows]
    for j, r in enumerate((1.5, 3.5, 7.0)):
        m = dv0[:, :_WITHIN[r]]
        k = m.argmax(1)
        mx = m[r_, k]
        out.disk_max[rows, j] = np.where(np.isfinite(mx), mx, np.nan)
        if j >= 1:
            off = DISK_AB[k, 0:1] * u_r + DISK_AB[k, 1:2] * w_r
            (out.offset3 if j == 1 else out.offset7)[rows] = off
    out.snap[rows] = _snap(dv0, u_r, w_r)
    # Shells.
    sv = vals[:, _SETS["shell"]].reshape(n, len(SHELL_R), len(SHELL_DIRS))
    out.shell[rows] = sv
    out.shell_cov[rows] = cov[:, :ns].reshape(n, len(SHELL_R), len(SHELL_DIRS))
    outer = sv[:, 1, :]
    bg = _row_percentile(outer, 30.0)
    # Noise: the spread of the outer shell's samples at or below the background (np.nanstd of
    # them, in two passes over sums rather than nanstd's many).
    low = outer <= bg[:, None]
    cnt = low.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):    # no samples (outside the image): NaN
        mean = np.where(low, outer, 0).sum(1, dtype=np.float64) / cnt
        dev = np.where(low, outer - mean[:, None], 0)
        out.noise[rows] = np.sqrt((dev * dev).sum(1) / cnt)
    out.background[rows] = bg
    # Edge to parent, ahead and cone.
    out.edge[rows] = np.where((parent[rows] >= 0)[:, None] & ~edge_out, vals[:, _SETS["edge"]], np.nan)
    out.ahead[rows] = vals[:, _SETS["ahead"]]
    out.cone[rows] = vals[:, _SETS["cone"]].reshape(n, len(CONE_D), len(_CONE_ANG))
    out.cone_cov[rows] = cov[:, ns:].reshape(n, len(CONE_D), len(_CONE_ANG))


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


def _snap(dv0: np.ndarray, u: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Offset (xyz µm) across the fibre to the disk maximum, mildly preferring points near the node
    (a neighbour fibre a few µm away should not win over the node's own), refined to sub-µm by a
    parabola through the maximum and its neighbours. (Where to *move* a node is refine.py's job,
    on the raw voxels.)"""
    if len(dv0) == 0:
        return np.zeros((0, 3), np.float32)
    finite = np.isfinite(dv0)
    lo = np.where(finite, dv0, np.inf).min(1, keepdims=True)
    score = np.where(finite, (dv0 - lo) * _SNAP_WEIGHT[None, :], -np.inf)
    return _refined(dv0, score.argmax(1), u, w)


_SNAP_WEIGHT = np.exp(-DISK_R2 / (2 * 4.0 ** 2)).astype(np.float32)


def _refined(dv0, k, u, w) -> np.ndarray:
    """Offset (xyz µm) of disk point ``k``, refined along u and along w."""
    da = _parabola(dv0, k, 1, 0)
    db = _parabola(dv0, k, 3, 2)
    return ((DISK_AB[k, 0] + da)[:, None] * u + (DISK_AB[k, 1] + db)[:, None] * w).astype(np.float32)


def _parabola(dv0, k, minus, plus) -> np.ndarray:
    """Sub-step offset of the maximum of the parabola through disk point ``k`` and its neighbours
    in directions ``minus`` and ``plus`` (columns of _NEIGH); 0 where there is none."""
    n = len(k)
    im = _NEIGH[k, minus]
    ip = _NEIGH[k, plus]
    r = np.arange(n)
    ok = (im >= 0) & (ip >= 0)
    ym = np.where(ok, dv0[r, np.maximum(im, 0)], 0)
    yp = np.where(ok, dv0[r, np.maximum(ip, 0)], 0)
    y0 = dv0[r, k]
    with np.errstate(invalid="ignore"):        # -inf on both sides: not a parabola, and not used
        den = ym - 2 * y0 + yp
        good = ok & np.isfinite(ym) & np.isfinite(yp) & (den < 0)
        return np.where(good, np.clip(0.5 * (ym - yp) / np.where(good, den, 1), -0.5, 0.5), 0.0)
