"""Skeleton-based metrics of a neuron segmentation: splits, merges, omitted edges, expected run
length (ERL), as AllenNeuralDynamics' segmentation-skeleton-metrics (5.9) computes them.

Each ground-truth skeleton's nodes take the segment label of the voxel they lie in; then each
skeleton edge is correct (both ends in one segment), split (two different segments), omitted
(both ends unlabelled) or merged (in a segment that also holds another neuron). Everything is
done on the skeletons' node arrays (parent-index trees, :mod:`neurorecon.morphology.graph`).

Definitions, per ground-truth skeleton (lengths are physical: voxel coordinates times
``voxel_size``):

* Gap filling first: a stretch of unlabelled nodes (label 0) touching exactly one segment takes
  that segment's label (the skeleton ran just outside its segment's mask); a stretch between two
  different segments, or touching none, stays unlabelled.
* ``run_length``: the skeleton's cable length, sum of its edge lengths.
* ``n_splits``: distinct segments on the skeleton minus one (0 if none).
* ``split_edges``, ``omit_edges``, ``merged_edges``: percentages of the skeleton's edges. Split:
  the two ends have different labels, one of them possibly 0 (the reference means to count only
  edges between two segments, but its test for "both labelled" is on label strings, where "0" is
  true, so an edge into a gap that stayed unlabelled counts as split too; kept, since its
  results are defined by it). Omitted: both ends unlabelled. Merged: for each merged segment on
  the skeleton, its node count minus one.
* A segment is merged on a skeleton if more than 50 of the skeleton's nodes and more than 50 of
  another ground-truth skeleton's nodes lie in it, or if a merge site was found with
  ``fragments`` (below).
* ``erl``: the expected run length, sum(l_k^2) / sum(l_k) over the skeleton's segments, with
  l_k the cable length of the segment's piece of skeleton and merged segments counting 0 in the
  numerator. A segment's piece is the connected stretch holding its first node (in file order),
  as in the reference; ``normalized_erl`` = erl / run_length.
* ``edge_accuracy`` = 100 - split - omit - merged edge percentages.
* ``split_rate`` (``merge_rate``): the segmented cable, run_length * (1 - (omit + split edge
  percentages) / 100), per split (per merge); NaN without splits (merges).

Merges with ``fragments`` (skeletons of the predicted segments, named by segment label, as
``<label>.swc`` or ``<label>.<anything>.swc``): for each fragment whose segment is on a
skeleton, each fragment tip more than 50 from the skeleton is followed back along the fragment
to the nearest node within 6 of the skeleton; that is a merge site if the skeleton node nearest
to it is in the fragment's segment, in a piece of at least 50 nodes. The site moves to a branch
point of the fragment within 40 along it and 16 of the skeleton, if there is one. Sites within
30 of an earlier site (any skeleton) are dropped. Without fragments ``n_merges`` is None and
``merge_rate`` NaN, as in the reference.

Where this differs from the reference: coordinates are rounded to the nearest voxel (the
reference truncates; the same for integer coordinates), lengths and run lengths are all
physical (the reference's "SWC Run Length" stays in voxels when its anisotropy is not 1),
nodes outside the volume are unlabelled, a gap at the root node is filled by the same rule as
any other (the reference's search from the root can miss some of its neighbours), and a tip's
merge site is the nearest near node along the fragment (the reference takes the first one its
depth-first search meets, and skips tips that search already passed).
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..morphology import graph
from ..morphology.neuron import Neuron

__all__ = ["COLUMNS", "SkeletonError", "SkeletonScores", "expected_run_length", "fill_gaps", "read_skeletons",
           "scores_csv", "skeleton_metrics", "summarize"]

# The reference's thresholds (physical units, like the coordinates times voxel_size).
SHARED_NODES = 50      # a segment with more nodes than this on two skeletons is a merge
FAR = 50.0             # a fragment tip this far from the skeleton starts a merge search
NEAR = 6.0             # ... which ends at a fragment node this close to it
PIECE_NODES = 50       # a merge site needs a skeleton piece of the segment with at least this many nodes
BRANCH_RADIUS = 40.0   # a merge site moves to a fragment branch point this far along the fragment ...
BRANCH_NEAR = 16.0     # ... that is this close to the skeleton
SITE_RADIUS = 30.0     # merge sites closer than this to an earlier one are the same merge

#: Attribute of :class:`SkeletonScores` -> the reference's results.csv column.
COLUMNS = {
    "run_length": "SWC Run Length", "n_splits": "# Splits", "n_merges": "# Merges",
    "split_edges": "% Split Edges", "omit_edges": "% Omit Edges", "merged_edges": "% Merged Edges",
    "erl": "ERL", "normalized_erl": "Normalized ERL", "edge_accuracy": "Edge Accuracy",
    "split_rate": "Split Rate", "merge_rate": "Merge Rate",
}  # fmt: skip


class SkeletonError(ValueError):
    """A skeleton file or folder that cannot be used; the one-line message names it."""


@dataclass(frozen=True)
class SkeletonScores:
    """The metrics of one ground-truth skeleton (see the module docs for each definition)."""

    name: str
    run_length: float
    n_splits: int
    n_merges: int | None
    split_edges: float
    omit_edges: float
    merged_edges: float
    erl: float
    normalized_erl: float
    edge_accuracy: float
    split_rate: float
    merge_rate: float
    n_nodes: int
    n_edges: int
    merge_sites: tuple[tuple[float, float, float], ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["merge_sites"] = [list(p) for p in self.merge_sites]
        return d


# ------------------------------------------------------------------------------ reading
def read_skeletons(path: str | os.PathLike) -> dict[str, Neuron]:
    """Read every ``.swc`` file of a folder or a ``.zip`` archive, by file name (without .swc).

    Raises
    ------
    SkeletonError
        A missing path, a folder or archive without SWC files, or an unreadable file.
    """
    from ..io.swc import SwcParseError, read_swc

    path = Path(path)
    out: dict[str, Neuron] = {}
    try:
        if path.is_dir():
            for f in sorted(path.glob("*.swc")):
                out[f.stem] = read_swc(f)
        elif path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                for info in sorted(z.infolist(), key=lambda i: i.filename):
                    if info.filename.lower().endswith(".swc") and not info.is_dir():
                        out[Path(info.filename).stem] = read_swc(z.read(info), name=f"{path}:{info.filename}")
        elif path.exists():
            raise SkeletonError(f"{path}: not a folder or a .zip of SWC files")
        else:
            raise SkeletonError(f"{path}: no such folder or file")
    except SwcParseError as e:
        raise SkeletonError(str(e)) from None
    except (OSError, zipfile.BadZipFile) as e:
        raise SkeletonError(f"{path}: {getattr(e, 'strerror', None) or e}") from None
    if not out:
        raise SkeletonError(f"{path}: no .swc files in it")
    return out


def _swc_axes(neuron: Neuron, axes: str) -> str:
    if axes != "auto":
        return axes
    for line in neuron.header:     # "# id, type, z, y, x, r, pid" (the reference's files) names the order
        words = [w.strip().lower() for w in line.replace(",", " ").split()]
        if {"x", "y", "z"} <= set(words):
            return "".join(w for w in words if w in ("x", "y", "z"))
    return "xyz"


def _coords(neuron: Neuron, axes: str, voxel_size) -> tuple[np.ndarray, np.ndarray]:
    """(voxel coordinates in array order z, y, x; physical x, y, z)."""
    order = _swc_axes(neuron, axes)
    if sorted(order) != ["x", "y", "z"]:
        raise SkeletonError(f"{neuron.source}: the coordinate columns must be x, y and z in some order, not {order!r}")
    zyx = neuron.xyz[:, [order.index(a) for a in "zyx"]]
    return zyx, zyx[:, ::-1] * np.asarray(voxel_size, dtype=np.float64)


def _labels_at(seg, zyx: np.ndarray) -> np.ndarray:
    """The segment label of the voxel holding each point; 0 outside the volume."""
    idx = np.floor(zyx + 0.5).astype(np.int64)
    shape = np.asarray(seg.shape)
    inside = np.all((idx >= 0) & (idx < shape), axis=1)
    out = np.zeros(len(idx), dtype=seg.dtype)
    if isinstance(seg, np.ndarray):
        out[inside] = seg[tuple(idx[inside].T)]
        return out
    # A lazily read volume (neurorecon.io.volume.Volume): read the 64^3 blocks that hold nodes.
    rows = np.flatnonzero(inside)
    block = idx[rows] // 64
    key = np.ravel_multi_index(tuple(block.T), tuple(-(-shape // 64)))
    order = np.argsort(key, kind="stable")
    rows, key = rows[order], key[order]
    for r in np.split(rows, np.flatnonzero(np.diff(key)) + 1) if len(rows) else []:
        lo = idx[r[0]] // 64 * 64
        patch = seg.read(lo.tolist(), np.minimum(lo + 64, shape).tolist())
        out[r] = patch[tuple((idx[r] - lo).T)]
    return out


# ------------------------------------------------------------------------------ per skeleton
def fill_gaps(parent: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Give each connected stretch of unlabelled nodes (0) the label of the one segment it
    touches; stretches touching two or more segments, or none, stay 0.

    Examples
    --------
    >>> fill_gaps(np.array([-1, 0, 1, 2, 3]), np.array([5, 0, 5, 0, 7])).tolist()
    [5, 5, 5, 0, 7]
    """
    labels = np.asarray(labels)
    zero = labels == 0
    if not zero.any() or zero.all():
        return labels.copy()
    top = graph.run_tops(parent, np.where(zero, 0, -1))       # one id per stretch of zeros
    child = np.flatnonzero(parent >= 0)
    par = parent[child]
    cross = zero[child] != zero[par]
    c, p = child[cross], par[cross]
    gap = np.where(zero[c], c, p)
    seg = np.where(zero[c], p, c)
    distinct, code = np.unique(labels[seg], return_inverse=True)
    pairs = np.unique(top[gap] * len(distinct) + code.ravel())
    stretch, which = pairs // len(distinct), pairs % len(distinct)
    n_touch = np.bincount(stretch, minlength=len(labels))
    fill = np.zeros(len(labels), dtype=np.int64)
    fill[stretch] = which
    take = zero & (n_touch[np.maximum(top, 0)] == 1)
    out = labels.copy()
    out[take] = distinct[fill[top[take]]]
    return out


def expected_run_length(lengths, merged=None) -> float:
    """sum(l^2) / sum(l): the expected length of correct cable from a random point of cable.

    ``merged`` marks pieces that count 0 in the numerator (their cable is not correct); 0 when
    there is no cable.

    >>> expected_run_length([30.0, 10.0]), expected_run_length([30.0, 10.0], [True, False])
    (25.0, 2.5)
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    total = lengths.sum()
    if total <= 0:
        return 0.0
    good = lengths if merged is None else np.where(np.asarray(merged, dtype=bool), 0.0, lengths)
    return float(np.dot(good, lengths) / total)


@dataclass
class _Labelled:
    """One skeleton with its node labels after gap filling, and its segment pieces."""

    name: str
    parent: np.ndarray
    xyz: np.ndarray           # physical
    label: np.ndarray         # segment label per node after filling (0: unlabelled)
    top: np.ndarray           # top node of each labelled node's piece (-1 when unlabelled)
    edge: np.ndarray          # child rows of the edges (parent[edge] is the other end)
    edge_length: np.ndarray   # per node: length of its edge to its parent (0 at roots)
    segments: np.ndarray      # distinct labels on the skeleton
    counts: np.ndarray        # nodes in each
    first: np.ndarray         # each segment's first node (file order)


def _label_skeleton(name: str, neuron: Neuron, seg, axes: str, voxel_size) -> _Labelled:
    if len(neuron) and graph.cycle_mask(neuron.parent).any():
        raise SkeletonError(f"{neuron.source or name}: the parent links form a cycle")
    parent = neuron.parent
    zyx, xyz = _coords(neuron, axes, voxel_size)
    label = fill_gaps(parent, _labels_at(seg, zyx))
    on = label != 0
    distinct, code = np.unique(label, return_inverse=True)
    code = code.ravel()
    top = graph.run_tops(parent, np.where(on, code, -1))
    segments, first, counts = np.unique(label[on], return_index=True, return_counts=True)
    return _Labelled(name, parent, xyz, label, top, np.flatnonzero(parent >= 0), graph.edge_lengths(xyz, parent),
                     segments, counts, np.flatnonzero(on)[first])


def _shared_segments(skels: list[_Labelled]) -> list[set]:
    """Per skeleton, the segments with more than SHARED_NODES of its nodes and of another's."""
    big = [s.segments[s.counts > SHARED_NODES] for s in skels]
    if not big:
        return []
    values, n = np.unique(np.concatenate(big), return_counts=True)
    shared = values[n > 1]
    return [set(b[np.isin(b, shared)].tolist()) for b in big]


# ------------------------------------------------------------------------------ merges with fragments
def _fragment_label(name: str) -> int | None:
    head = name.split(".")[0]
    return int(head) if head.lstrip("-").isdigit() else None


def _fragment_forest(neurons: list[Neuron], axes: str, voxel_size):
    """One forest (parent, physical xyz) from a segment's fragment files."""
    parents, coords, offset = [], [], 0
    for n in neurons:
        _, xyz = _coords(n, axes, voxel_size)
        parents.append(np.where(n.parent >= 0, n.parent + offset, -1))
        coords.append(xyz)
        offset += len(n)
    return np.concatenate(parents), np.concatenate(coords)


def _merge_sites(sk: _Labelled, kdtree, label: int, parent: np.ndarray, xyz: np.ndarray, piece_nodes: np.ndarray):
    """Merge sites (physical xyz, in tip order) of one fragment on one skeleton."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    n = len(parent)
    dist, nearest = kdtree.query(xyz)
    degree = graph.child_counts(parent) + (parent >= 0)
    tips = np.flatnonzero((degree == 1) & (dist > FAR))
    near = np.flatnonzero(dist < NEAR)
    if len(tips) == 0 or len(near) == 0:
        return []
    c = np.flatnonzero(parent >= 0)
    # + 1e-9: the graph routines would read an edge of length 0 (duplicate nodes) as no edge.
    w = np.linalg.norm(xyz[c] - xyz[parent[c]], axis=1) + 1e-9
    g = coo_matrix((w, (c, parent[c])), shape=(n, n)).tocsr()
    _, _, source = dijkstra(g, directed=False, indices=near, min_only=True, return_predecessors=True)
    start = source[tips]
    start = start[start >= 0]
    start = start[np.sort(np.unique(start, return_index=True)[1])]        # distinct, in tip order
    on_skel = nearest[start]
    ok = (sk.label[on_skel] == label) & (piece_nodes[np.maximum(sk.top[on_skel], 0)] >= PIECE_NODES)
    sites = start[ok]
    if len(sites) == 0:
        return []
    branch = np.flatnonzero((degree > 2) & (dist < BRANCH_NEAR))
    if len(branch):
        along = dijkstra(g, directed=False, indices=sites, limit=BRANCH_RADIUS)[:, branch]
        best = np.argmin(along, axis=1)
        moved = np.isfinite(along[np.arange(len(sites)), best]) & (along[np.arange(len(sites)), best] < BRANCH_RADIUS)
        sites = np.where(moved, branch[best], sites)
    return [tuple(map(float, xyz[s])) for s in sites]


def _find_merges(skels: list[_Labelled], fragments: Mapping[int, list[Neuron]], axes: str, voxel_size):
    """Per skeleton: segments with a merge site, and the sites kept after dropping repeats."""
    from scipy.spatial import cKDTree

    merged = [set() for _ in skels]
    sites: list[tuple[int, tuple]] = []
    forests = {}
    for k, sk in enumerate(skels):
        mine = [int(v) for v in sk.segments if int(v) in fragments]
        if not mine:
            continue
        kdtree = cKDTree(sk.xyz)
        piece_nodes = np.bincount(sk.top[sk.top >= 0], minlength=len(sk.label))
        for label in sorted(mine):
            if label not in forests:
                forests[label] = _fragment_forest(fragments[label], axes, voxel_size)
            found = _merge_sites(sk, kdtree, label, *forests[label], piece_nodes)
            if found:
                merged[k].add(label)
                sites += [(k, s) for s in found]
    kept = [[] for _ in skels]
    if sites:
        pts = np.array([s for _, s in sites])
        neighbours = cKDTree(pts).query_ball_point(pts, SITE_RADIUS)
        dropped = np.zeros(len(sites), dtype=bool)
        for i, (k, s) in enumerate(sites):       # greedy, in order: one pass over the few sites
            if not dropped[i]:
                kept[k].append(s)
                dropped[[j for j in neighbours[i] if j != i]] = True
    return merged, kept


# ------------------------------------------------------------------------------ the metrics
def _pct(n, of: int) -> float:
    return 100.0 * float(n) / of if of else math.nan


def _scores(sk: _Labelled, merged: set, n_merges: int | None, sites) -> SkeletonScores:
    parent, label, e = sk.parent, sk.label, sk.edge
    a, b = label[e], label[parent[e]]
    n_edges = len(e)
    run_length = float(sk.edge_length.sum())
    split = _pct(np.count_nonzero(a != b), n_edges)        # a labelled-unlabelled edge too: see the module docs
    omit = _pct(np.count_nonzero((a == 0) & (b == 0)), n_edges)
    is_merged = np.isin(sk.segments, np.array(sorted(merged), dtype=sk.segments.dtype)) if merged else \
        np.zeros(len(sk.segments), dtype=bool)
    merged_pct = _pct(float(np.sum(sk.counts[is_merged] - 1)), n_edges)
    same = e[(a == b) & (a != 0)]
    piece_length = np.bincount(sk.top[same], weights=sk.edge_length[same], minlength=len(label))
    erl = expected_run_length(piece_length[sk.top[sk.first]], is_merged)
    n_splits = max(len(sk.segments) - 1, 0)
    segmented = run_length * (1.0 - (omit + split) / 100.0)
    return SkeletonScores(
        name=sk.name, run_length=run_length, n_splits=n_splits, n_merges=n_merges,
        split_edges=split, omit_edges=omit, merged_edges=merged_pct, erl=erl,
        normalized_erl=erl / run_length if run_length > 0 else math.nan,
        edge_accuracy=100.0 - (split + omit + merged_pct),
        split_rate=segmented / n_splits if n_splits else math.nan,
        merge_rate=segmented / n_merges if n_merges else math.nan,
        n_nodes=len(label), n_edges=n_edges, merge_sites=tuple(sites),
    )  # fmt: skip


def _named(items, what: str) -> dict[str, Neuron]:
    if isinstance(items, Mapping):
        return {str(k): v for k, v in items.items()}
    out = {}
    for n in items:
        if not isinstance(n, Neuron):
            raise TypeError(f"{what} must be Neurons (neurorecon.io.read_swc), got {type(n).__name__}")
        out[Path(n.source or f"{what}{len(out)}").name.removesuffix(".swc")] = n
    return out


def skeleton_metrics(seg, skeletons: Mapping[str, Neuron] | Sequence[Neuron], *, voxel_size=(1.0, 1.0, 1.0),
                     fragments: Mapping[str, Neuron] | Sequence[Neuron] | None = None,
                     swc_axes: str = "auto") -> list[SkeletonScores]:
    """Score a segmentation against ground-truth skeletons (definitions in the module docs).

    Parameters
    ----------
    seg : (nz, ny, nx) integer array, or a :class:`neurorecon.io.volume.Volume`
        The predicted segmentation, 0 = unlabelled; a Volume is read only around the nodes.
    skeletons : {name: Neuron} or sequence of Neuron
        Ground-truth skeletons in voxel coordinates (names from the files when a sequence).
    voxel_size : (vx, vy, vz)
        Physical size of a voxel along x, y, z (the array's last, middle and first axes); the
        lengths and the merge thresholds are in these units.
    fragments : {name: Neuron} or sequence of Neuron, optional
        Skeletons of the predicted segments, named ``<label>`` or ``<label>.<anything>`` by
        segment label, in the same voxel coordinates; needed to count merges. Files of one
        label are taken together; names that are not a number are ignored.
    swc_axes : "auto", "xyz" or "zyx"
        What the SWC coordinate columns are. "zyx": the columns are in array order (the
        reference's files say so in a "# id, type, z, y, x, r, pid" header); "xyz": SWC
        x, y, z index the array as [z, y, x] (neurorecon's convention); "auto": the order the
        file's column header names, else "xyz".

    Returns
    -------
    list of SkeletonScores
        In the order of ``skeletons``; see :func:`summarize` for the averages over skeletons
        and :func:`scores_csv` for the reference's results.csv layout.

    Raises
    ------
    SkeletonError
        A skeleton whose parent links form a cycle, or bad coordinate columns.
    """
    if swc_axes not in ("auto", "xyz", "zyx"):
        raise ValueError(f"swc_axes must be 'auto', 'xyz' or 'zyx', not {swc_axes!r}")
    if len(voxel_size) != 3 or min(voxel_size) <= 0:
        raise ValueError("voxel_size takes three positive numbers: vx, vy, vz")
    if len(getattr(seg, "shape", ())) != 3:
        raise ValueError(f"seg must be a 3D [z, y, x] label volume, got shape {getattr(seg, 'shape', None)}")
    skels = [_label_skeleton(name, n, seg, swc_axes, voxel_size) for name, n in _named(skeletons, "skeletons").items()]
    merged = _shared_segments(skels)
    n_merges: list[int | None] = [None] * len(skels)
    sites: list[list] = [[] for _ in skels]
    if fragments is not None:
        by_label: dict[int, list[Neuron]] = {}
        for name, n in _named(fragments, "fragments").items():
            lab = _fragment_label(name)
            if lab is not None:
                by_label.setdefault(lab, []).append(n)
        found, sites = _find_merges(skels, by_label, swc_axes, voxel_size)
        merged = [m | f for m, f in zip(merged, found)]
        n_merges = [len(s) for s in sites]
    return [_scores(sk, m, k, s) for sk, m, k, s in zip(skels, merged, n_merges, sites)]


def summarize(scores: Sequence[SkeletonScores]) -> dict:
    """Averages over skeletons weighted by run length (NaNs left out, as the reference does), and
    the total splits and merges (merges None without fragments)."""
    w = np.array([s.run_length for s in scores], dtype=np.float64)
    avg = {}
    for attr in COLUMNS:
        if attr == "run_length":
            continue
        v = np.array([math.nan if getattr(s, attr) is None else getattr(s, attr) for s in scores], dtype=np.float64)
        ok = ~np.isnan(v) & ~np.isnan(w)
        avg[attr] = float(np.dot(v[ok], w[ok]) / w[ok].sum()) if ok.any() and w[ok].sum() > 0 else math.nan
    merges = [s.n_merges for s in scores]
    return {"average": avg, "total": {"n_splits": int(sum(s.n_splits for s in scores)),
                                      "n_merges": None if any(m is None for m in merges) else int(sum(merges))}}


def scores_csv(scores: Sequence[SkeletonScores]) -> str:
    """The scores as the reference's results.csv: one row per skeleton, its column names."""
    buf = io.StringIO()
    buf.write("," + ",".join(COLUMNS.values()) + "\n")
    for s in scores:
        vals = [getattr(s, a) for a in COLUMNS]
        buf.write(s.name + "," + ",".join("" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(v)
                                          for v in vals) + "\n")
    return buf.getvalue()
