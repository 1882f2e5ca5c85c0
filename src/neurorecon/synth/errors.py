"""Annotation errors injected into a gold trace, each with a precise per-node label.

A :class:`Trace` is a small mutable working copy of a crop's trace (row-indexed parents). Every
injector picks a place where its error can happen, edits the trace and sets, on the nodes that are
wrong, ``label = 1`` and ``etype`` = the error's code. Label definitions (also in docs/detection.md):

``off_signal_z``   a run of 3-8 nodes moved 3-8 µm in z (ends tapered to 60%); labelled where the
                   node is >= 1.5 µm from its gold position.
``off_signal_xy``  a run of 4-10 nodes drifting sideways (in the xy plane, across the fibre) by up to
                   3-7 µm with a smooth profile; labelled where >= 1.5 µm from gold.
``jump``           at a node on a terminal stretch the trace leaves its fibre for a crossing neighbour
                   fibre (rendered into the image) and follows it for 10-25 µm; the true continuation
                   is left untraced. Labelled: the nodes on the neighbour more than 2 µm from the gold
                   skeleton.
``gap``            5-15 µm of a fibre left out; the far part becomes a separate fragment. Labelled: the
                   node before the gap and the first node after it.
``loop``           a cross-link of new nodes from one branch to a node of another branch 2-12 µm away
                   (the last new node sits on the other branch's node). Labelled: the new nodes.
``wrong_type``     a run of 3-10 nodes or a whole subtree given another neurite type. Labelled: those nodes.
``spur``           a branch of 3-8 nodes (4-15 µm) into background from a node mid-fibre. Labelled: the branch.
``early_stop``     the last 6-20 µm of a terminal fibre left untraced (the fibre continues in the image).
                   Labelled: the new tip only.
``overextension``  a tip continued 5-15 µm past the end of its fibre into background. Labelled: the new nodes.

Tip errors (``jump``, ``early_stop``, ``overextension``) are placed on neurites only: a chain of soma
nodes (a soma traced as a stack of contour points) ends where the soma ends, not where a fibre does.

Everything draws from the given ``numpy.random.Generator``, so a seed fixes the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..morphology.graph import subtree_mask, within_hops
from ..morphology.types import SOMA
from .render import Fibres

ERROR_TYPES = ("off_signal_z", "off_signal_xy", "jump", "gap", "loop", "wrong_type", "spur", "early_stop",
               "overextension")
#: Code of each error type in ``Trace.etype`` (0 = no error).
ERROR_CODE = {name: i + 1 for i, name in enumerate(ERROR_TYPES)}
SHIFT_LABEL_UM = 1.5


@dataclass
class Trace:
    """A trace under construction: node positions, parent rows (-1 root), types, labels.

    ``gold`` is where each node belongs on the gold skeleton (NaN for nodes with no counterpart,
    such as a spur); ``alive`` marks nodes not deleted.
    """

    xyz: np.ndarray
    parent: np.ndarray
    types: np.ndarray
    radius: np.ndarray
    gold: np.ndarray
    label: np.ndarray = None  # type: ignore[assignment]
    etype: np.ndarray = None  # type: ignore[assignment]
    alive: np.ndarray = None  # type: ignore[assignment]
    extra_fibres: list = field(default_factory=list)
    protected: set = field(default_factory=set)   # nodes another error depends on (a loop's far end)
    gold_types: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self):
        n = len(self.xyz)
        if self.label is None:
            self.label = np.zeros(n, np.int8)
        if self.etype is None:
            self.etype = np.zeros(n, np.int8)
        if self.alive is None:
            self.alive = np.ones(n, bool)
        if self.gold_types is None:
            self.gold_types = self.types.copy()

    def __len__(self):
        return len(self.xyz)

    # ---------------------------------------------------------------- structure helpers
    def children(self, r: int) -> np.ndarray:
        return np.flatnonzero((self.parent == r) & self.alive)

    def n_children(self) -> np.ndarray:
        p = self.parent[self.alive & (self.parent >= 0)]
        return np.bincount(p, minlength=len(self))

    def section_down(self, r: int) -> list[int]:
        """Rows below ``r`` while the fibre does not branch (ends at a tip or before a branch point)."""
        out = []
        cur = r
        while True:
            ch = self.children(cur)
            if len(ch) != 1:
                return out
            cur = int(ch[0])
            out.append(cur)

    def tangent(self, r: int) -> np.ndarray:
        p = self.parent[r]
        ch = self.children(r)
        a = self.xyz[p] if p >= 0 else self.xyz[r]
        b = self.xyz[ch[0]] if len(ch) else self.xyz[r]
        d = b - a
        n = np.linalg.norm(d)
        return d / n if n > 0 else np.array([1.0, 0.0, 0.0])

    def add_chain(self, start: int, pts: np.ndarray, code: int, labels: np.ndarray | None = None,
                  gold: np.ndarray | None = None) -> np.ndarray:
        """Append nodes ``pts`` as a chain hanging from row ``start``; returns their rows."""
        k = len(pts)
        rows = np.arange(len(self), len(self) + k)
        parent = np.concatenate([[start], rows[:-1]])
        lab = np.ones(k, np.int8) if labels is None else labels.astype(np.int8)
        self.xyz = np.vstack([self.xyz, pts])
        self.parent = np.concatenate([self.parent, parent])
        self.types = np.concatenate([self.types, np.full(k, self.types[start])])
        self.gold_types = np.concatenate([self.gold_types, np.full(k, self.gold_types[start])])
        self.radius = np.concatenate([self.radius, np.full(k, self.radius[start])])
        self.gold = np.vstack([self.gold, np.full((k, 3), np.nan) if gold is None else gold])
        self.label = np.concatenate([self.label, lab])
        self.etype = np.concatenate([self.etype, np.where(lab > 0, code, 0).astype(np.int8)])
        self.alive = np.concatenate([self.alive, np.ones(k, bool)])
        return rows

    def mark(self, rows, code: int) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        self.label[rows] = 1
        self.etype[rows] = code

    def clean(self, rows) -> bool:
        """True if none of ``rows`` is already part of an injected error (errors do not stack)."""
        rows = np.asarray(rows, dtype=np.int64)
        return (bool(len(rows)) and not self.label[rows].any() and self.alive[rows].all()
                and not self.protected.intersection(rows.tolist()))


# ---------------------------------------------------------------------------- small geometry
def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def _perpendicular(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    v -= v.dot(t) * t
    return _unit(v)


def _rotation_to(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotation matrix taking unit vector u onto unit vector v."""
    w = np.cross(u, v)
    c = float(np.dot(u, v))
    if np.linalg.norm(w) < 1e-9:
        return np.eye(3) if c > 0 else -np.eye(3)
    k = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])
    return np.eye(3) + k + k @ k * (1.0 / (1.0 + c))


def _polyline_at(points: np.ndarray, spacing: float, length: float) -> np.ndarray:
    """Points every ``spacing`` along a polyline, up to ``length`` (first point excluded)."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    want = np.arange(spacing, min(length, s[-1]) + 1e-9, spacing)
    return np.stack([np.interp(want, s, points[:, k]) for k in range(3)], axis=1)


@dataclass
class Scene:
    """What injectors may consult: the trace, the drawn fibres (as dense points), the crop box,
    the trace spacing and donor fibres (pieces of other neurons) for jumps."""

    trace: Trace
    fibre_points: np.ndarray
    gold_points: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    spacing: float
    donors: list
    rng: np.random.Generator

    def inside(self, pts: np.ndarray, margin: float = 2.0) -> bool:
        return bool(np.all((pts >= self.lo + margin) & (pts <= self.hi - margin)))

    def candidates(self, mask: np.ndarray) -> np.ndarray:
        rows = np.flatnonzero(mask & self.trace.alive & (self.trace.label == 0))
        return self.rng.permutation(rows)

    @cached_property
    def _fibre_tree(self):
        from scipy.spatial import cKDTree

        return cKDTree(self.fibre_points)

    @cached_property
    def _gold_tree(self):
        from scipy.spatial import cKDTree

        return cKDTree(self.gold_points)

    def clear_of_fibres(self, points: np.ndarray, r: float) -> bool:
        """True if no point is within ``r`` µm of any drawn fibre."""
        if len(self.fibre_points) == 0:
            return True
        d, _ = self._fibre_tree.query(points, k=1, distance_upper_bound=r)
        return bool(np.all(~np.isfinite(d)))

    def gold_distance(self, points: np.ndarray) -> np.ndarray:
        if len(self.gold_points) == 0:
            return np.full(len(points), np.inf)
        return self._gold_tree.query(points, k=1)[0]


# --------------------------------------------------------------------------------- injectors
def _run(scene: Scene, n_min: int, n_max: int) -> np.ndarray | None:
    """A run of consecutive unbranched, error-free nodes (top to bottom), or None."""
    t = scene.trace
    nc = t.n_children()
    for r in scene.candidates((t.parent >= 0) & (nc == 1))[:30]:
        run = [int(r)] + t.section_down(int(r))
        n = int(scene.rng.integers(n_min, n_max + 1))
        run = run[:n]
        if len(run) >= n_min and t.clean(run):
            return np.array(run)
    return None


def off_signal_z(scene: Scene) -> bool:
    run = _run(scene, 3, 8)
    if run is None:
        return False
    dz = scene.rng.uniform(3.0, 8.0) * scene.rng.choice([-1, 1])
    profile = np.ones(len(run))
    profile[[0, -1]] = 0.6
    shift = np.zeros((len(run), 3))
    shift[:, 2] = dz * profile
    return _shift_run(scene, run, shift, "off_signal_z")


def off_signal_xy(scene: Scene) -> bool:
    run = _run(scene, 4, 10)
    if run is None:
        return False
    t = scene.trace
    tan = _unit(t.xyz[run[-1]] - t.xyz[run[0]])
    side = np.cross(tan, [0.0, 0.0, 1.0])
    if np.linalg.norm(side) < 0.3:  # fibre runs along z: no lateral direction in the xy plane
        return False
    side = _unit(side) * scene.rng.choice([-1, 1])
    amp = scene.rng.uniform(3.0, 7.0)
    profile = np.sin(np.linspace(0.15, 0.85, len(run)) * np.pi)
    shift = amp * profile[:, None] * side
    return _shift_run(scene, run, shift, "off_signal_xy")


def _shift_run(scene: Scene, run: np.ndarray, shift: np.ndarray, name: str) -> bool:
    """Move a run off its fibre, if it stays in the box and clear of every drawn fibre."""
    t = scene.trace
    moved = t.xyz[run] + shift
    if not scene.inside(moved, 1.0) or not scene.clear_of_fibres(moved, 2.0):
        return False
    t.xyz[run] = moved
    _label_displaced(t, run, ERROR_CODE[name])
    return True


def _label_displaced(t: Trace, run: np.ndarray, code: int) -> None:
    d = np.linalg.norm(t.xyz[run] - t.gold[run], axis=1)
    t.mark(run[d >= SHIFT_LABEL_UM], code)


def _terminal_anchor(scene: Scene, min_after: int) -> tuple[int, list[int]] | None:
    """A node followed by an unbranched stretch of >= min_after nodes that ends in a tip."""
    t = scene.trace
    nc = t.n_children()
    for r in scene.candidates((t.parent >= 0) & (nc == 1) & (t.types != SOMA))[:60]:
        down = t.section_down(int(r))
        if len(down) >= min_after and nc[down[-1]] == 0 and t.clean([int(r)] + down) \
                and not np.any(t.types[down] == SOMA):
            return int(r), down
    return None


def jump(scene: Scene) -> bool:
    """Leave the fibre for a neighbour that crosses it (the neighbour is added to the image)."""
    t, rng = scene.trace, scene.rng
    found = _terminal_anchor(scene, 3)
    if found is None or not scene.donors:
        return False
    a, down = found
    tan = t.tangent(a)
    donor = scene.donors[int(rng.integers(len(scene.donors)))]
    seg = np.linalg.norm(np.diff(donor, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] < 45:
        return False
    c = int(np.searchsorted(s, 15.0))
    u = _unit(donor[min(c + 3, len(donor) - 1)] - donor[max(c - 3, 0)])
    theta = np.deg2rad(rng.uniform(25, 60))
    d = np.cos(theta) * tan + np.sin(theta) * _perpendicular(tan, rng)
    rot = _rotation_to(u, d)
    anchor_gold = t.gold[a] if np.isfinite(t.gold[a]).all() else t.xyz[a]
    cross = anchor_gold + rng.uniform(0.3, 1.2) * _perpendicular(tan, rng)
    piece = (donor - donor[c]) @ rot.T + cross
    path = _polyline_at(piece[c:], scene.spacing, rng.uniform(10.0, 25.0))
    if len(path) < 3 or not scene.inside(path):
        return False
    path = path + rng.normal(0, [0.25, 0.25, 0.4], path.shape)
    if not scene.clear_of_fibres(path[-2:], 2.5):
        return False
    t.alive[down] = False
    rows = t.add_chain(a, path, ERROR_CODE["jump"], labels=np.zeros(len(path)))
    off = scene.gold_distance(path) > 2.0
    t.mark(rows[off], ERROR_CODE["jump"])
    t.extra_fibres.append(Fibres.from_tree(piece, np.arange(-1, len(piece) - 1), np.full(len(piece), 0.5)))
    return bool(off.any())


def gap(scene: Scene) -> bool:
    t, rng = scene.trace, scene.rng
    length = rng.uniform(5.0, 15.0)
    n_gap = max(1, int(round(length / scene.spacing)))
    run = _run(scene, n_gap + 2, n_gap + 2)
    if run is None:
        return False
    before, removed, after = run[0], run[1:-1], run[-1]
    if t.parent[before] < 0:
        return False
    t.alive[removed] = False
    t.parent[after] = -1
    t.mark([before, after], ERROR_CODE["gap"])
    return True


def loop(scene: Scene) -> bool:
    from scipy.spatial import cKDTree

    t, rng = scene.trace, scene.rng
    alive = np.flatnonzero(t.alive & (t.label == 0))
    alive = alive[~np.isin(alive, list(t.protected))]
    if len(alive) < 10:
        return False
    tree = cKDTree(t.xyz[alive])
    for u in rng.permutation(alive)[:40]:
        near = alive[tree.query_ball_point(t.xyz[u], 12.0)]
        d = np.linalg.norm(t.xyz[near] - t.xyz[u], axis=1)
        near, d = near[d >= 2.0], d[d >= 2.0]
        if len(near) == 0:
            continue
        ok = ~within_hops(t.parent, np.full(len(near), u), near, 15)
        if not ok.any():
            continue
        k = int(rng.choice(np.flatnonzero(ok)))
        v, dist = int(near[k]), float(d[k])
        n = max(1, int(np.ceil(dist / scene.spacing)))
        frac = np.arange(1, n + 1) / n
        pts = t.xyz[u] + frac[:, None] * (t.xyz[v] - t.xyz[u])
        pts[:-1] += rng.normal(0, 0.2, pts[:-1].shape)
        t.add_chain(int(u), pts, ERROR_CODE["loop"])
        t.protected.update((int(u), v))
        return True
    return False


def wrong_type(scene: Scene) -> bool:
    t, rng = scene.trace, scene.rng
    neurite = np.array([2, 3, 4])
    if rng.random() < 0.5:
        rows = _run(scene, 3, 10)
    else:
        rows = None
        for r in scene.candidates(t.parent >= 0)[:30]:
            sub = _subtree(t, int(r))
            if 3 <= len(sub) <= 25 and t.clean(sub):
                rows = sub
                break
    if rows is None:
        return False
    old = int(t.types[rows[0]])
    choices = neurite[neurite != old]
    t.types[rows] = rng.choice(choices)
    t.mark(rows, ERROR_CODE["wrong_type"])
    return True


def _subtree(t: Trace, r: int) -> np.ndarray:
    """Row ``r`` and the live rows below it (``r`` first)."""
    below = np.flatnonzero(subtree_mask(np.where(t.alive, t.parent, -1), r) & t.alive)
    return np.concatenate([[r], below[below != r]])


def spur(scene: Scene) -> bool:
    t, rng = scene.trace, scene.rng
    nc = t.n_children()
    for r in scene.candidates((t.parent >= 0) & (nc == 1))[:30]:
        tan = t.tangent(int(r))
        length = rng.uniform(4.0, 15.0)
        d = _unit(0.5 * tan + _perpendicular(tan, rng))
        bend = _perpendicular(d, rng) * rng.uniform(0, 0.3)
        n = max(3, int(round(length / scene.spacing)))
        s = np.arange(1, n + 1) * (length / n)
        pts = t.xyz[r] + s[:, None] * d + (s ** 2 / length)[:, None] * bend
        if scene.inside(pts) and scene.clear_of_fibres(pts[1:], 2.5) and t.clean([int(r)]):
            t.add_chain(int(r), pts + rng.normal(0, 0.2, pts.shape), ERROR_CODE["spur"])
            return True
    return False


def early_stop(scene: Scene) -> bool:
    t, rng = scene.trace, scene.rng
    length = rng.uniform(6.0, 20.0)
    n_cut = max(2, int(round(length / scene.spacing)))
    found = _terminal_anchor(scene, n_cut + 1)
    if found is None:
        return False
    _, down = found
    cut, keep_tip = down[-n_cut:], down[-n_cut - 1]
    if not scene.inside(t.xyz[cut], margin=1.0):
        return False
    t.alive[cut] = False
    t.mark([keep_tip], ERROR_CODE["early_stop"])
    return True


def overextension(scene: Scene) -> bool:
    t, rng = scene.trace, scene.rng
    nc = t.n_children()
    for r in scene.candidates((nc == 0) & (t.parent >= 0) & (t.types != SOMA))[:30]:
        r = int(r)
        p = t.parent[r]
        d = _unit(t.xyz[r] - t.xyz[p])
        if not scene.inside(t.xyz[r][None], margin=12.0):
            continue  # tips at the box edge are where the crop cut the fibre, not its end
        length = rng.uniform(5.0, 15.0)
        n = max(2, int(round(length / scene.spacing)))
        s = np.arange(1, n + 1) * (length / n)
        d2 = _unit(d + 0.3 * _perpendicular(d, rng))
        pts = t.xyz[r] + s[:, None] * d2
        if scene.clear_of_fibres(pts[1:], 2.0) and scene.inside(pts, 1.0):
            t.add_chain(r, pts + rng.normal(0, 0.2, pts.shape), ERROR_CODE["overextension"])
            return True
    return False


INJECTORS = {"off_signal_z": off_signal_z, "off_signal_xy": off_signal_xy, "jump": jump, "gap": gap, "loop": loop,
             "wrong_type": wrong_type, "spur": spur, "early_stop": early_stop, "overextension": overextension}
