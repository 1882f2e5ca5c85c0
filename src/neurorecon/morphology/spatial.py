"""Close-pair search on a uniform grid.

Checks need "which nodes lie within r of each other" for every neuron they read. A grid hash in
numpy answers that in a few vectorised passes and keeps ``neurorecon check`` free of the 0.4 s it
takes to import scipy.spatial, which is longer than checking a typical neuron. The order-free
searches (``*_by_rows``) run the same grid in C where the compiled helpers were built
(:mod:`neurorecon.native`: 3x faster on a whole-brain neuron, the same pairs and distances).
"""

from __future__ import annotations

import numpy as np

from .. import native

_FULL_NEIGHBOURHOOD = np.array(
    [(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)], dtype=np.int64
)
# Within one set each pair of cells is visited once: the cell itself and the 13 "forward" ones.
_HALF_NEIGHBOURHOOD = np.array([(0, 0, 0)] + [tuple(o) for o in _FULL_NEIGHBOURHOOD if tuple(o) > (0, 0, 0)], dtype=np.int64)

_EMPTY = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))


class _Grid:
    """Points hashed to cells at least r wide, sorted by cell key."""

    def __init__(self, points: np.ndarray, lo: np.ndarray, cell_size: float, dims: np.ndarray):
        cell = np.floor((points - lo) / cell_size).astype(np.int64) + 1
        keys = (cell[:, 0] * dims[1] + cell[:, 1]) * dims[2] + cell[:, 2]
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]


def _frame(points: list[np.ndarray], r: float) -> tuple[np.ndarray, float, np.ndarray]:
    lo = np.min([p.min(axis=0) for p in points], axis=0)
    hi = np.max([p.max(axis=0) for p in points], axis=0)
    # Any cell at least r wide is correct (neighbours are searched one cell around); the lower
    # bound keeps the key space within int64 when r is tiny or zero.
    cell_size = max(r, float((hi - lo).max()) / 2**20, 1e-12)
    dims = np.floor((hi - lo) / cell_size).astype(np.int64) + 3
    return lo, cell_size, dims


def _candidates(query: _Grid, ref: _Grid, offsets: np.ndarray, dims: np.ndarray, chunk: int, same: bool):
    """Yield (query rows, ref rows) of points in neighbouring cells, ``chunk`` queries at a time."""
    for off in offsets:
        # Keys are linear in the cell coordinates, so a neighbouring cell is a constant key offset
        # and the queries stay sorted (cache-friendly searchsorted).
        delta = (off[0] * dims[1] + off[1]) * dims[2] + off[2]
        for start in range(0, len(query.keys), chunk):
            q = query.keys[start : start + chunk] + delta
            first = np.searchsorted(ref.keys, q, "left")
            counts = np.searchsorted(ref.keys, q, "right") - first
            total = int(counts.sum())
            if total == 0:
                continue
            i = np.repeat(np.arange(start, start + len(q)), counts)
            j = np.repeat(first - np.cumsum(counts) + counts, counts) + np.arange(total)
            if same and delta == 0:
                i, j = i[i < j], j[i < j]
            yield query.order[i], ref.order[j]


def _collect(pairs, a, b, r, keep, ordered: bool):
    out_i, out_j, out_d = [], [], []
    for i, j in pairs:
        if ordered:
            i, j = np.minimum(i, j), np.maximum(i, j)
        d = np.linalg.norm(a[i] - b[j], axis=1)
        ok = d <= r
        i, j, d = i[ok], j[ok], d[ok]
        if keep is not None and len(i):
            ok = keep(i, j, d)
            i, j, d = i[ok], j[ok], d[ok]
        out_i.append(i)
        out_j.append(j)
        out_d.append(d)
    if not out_i:
        return _EMPTY
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)


def close_pairs(xyz: np.ndarray, r: float, keep=None, chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i < j) of points at distance <= r.

    ``keep(i, j, d) -> bool mask`` may filter the pairs as they are found, so that memory stays
    bounded by the pairs kept rather than by all candidates (queries run ``chunk`` at a time).
    Returns rows ``i``, rows ``j`` and their distances.
    """
    if len(xyz) < 2 or not np.isfinite(r) or r < 0:
        return _EMPTY
    lo, size, dims = _frame([xyz], r)
    grid = _Grid(xyz, lo, size, dims)
    return _collect(_candidates(grid, grid, _HALF_NEIGHBOURHOOD, dims, chunk, same=True), xyz, xyz, r, keep, ordered=True)


def cross_pairs(a: np.ndarray, b: np.ndarray, r: float, keep=None, chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i in a, j in b) at distance <= r. Returns rows of a, rows of b, distances.

    The grid over one set is queried with the other, so pairs within one set are never
    enumerated. ``keep(i, j, d)`` filters pairs as they are found, as in :func:`close_pairs`.
    """
    if len(a) == 0 or len(b) == 0 or not np.isfinite(r) or r < 0:
        return _EMPTY
    if len(a) > len(b):
        # Queries cost more than the grid: query with the smaller set.
        return _swapped(cross_pairs, a, b, r, keep, chunk)
    lo, size, dims = _frame([a, b], r)
    pairs = _candidates(_Grid(a, lo, size, dims), _Grid(b, lo, size, dims), _FULL_NEIGHBOURHOOD, dims, chunk, same=False)
    return _collect(pairs, a, b, r, keep, ordered=False)


def _swapped(search, a: np.ndarray, b: np.ndarray, r: float, keep, chunk: int):
    """``search(b, a, ...)`` with its results, and the arguments ``keep`` sees, in (a, b) order."""
    flipped = None if keep is None else (lambda j, i, d: keep(i, j, d))
    j, i, d = search(b, a, r, keep=flipped, chunk=chunk)
    return i, j, d


def close_pairs_by_rows(xyz: np.ndarray, r: float, chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of :func:`close_pairs` (i < j, distance <= r, the same distances), in another
    order: the 13 "forward" neighbouring cells and the cell itself are searched as 5 key ranges
    (the cells along the last axis have consecutive keys) rather than 14 cells, a third of the
    binary searches. For callers that do not depend on the order of the pairs. (With the compiled
    helpers, :mod:`neurorecon.native`, the same search runs in C.)"""
    if len(xyz) < 2 or not np.isfinite(r) or r < 0:
        return _EMPTY
    if native.lib is not None:
        return _native_pairs(native.lib.close_pairs(_points(xyz), float(r)))
    lo, size, dims = _frame([xyz], r)
    grid = _Grid(xyz, lo, size, dims)
    keys, order = grid.keys, grid.order
    row = dims[2]
    plane = dims[1] * dims[2]
    out_i, out_j, out_d = [], [], []
    for start in range(0, len(keys), chunk):
        pos = np.arange(start, min(start + chunk, len(keys)))
        k = keys[pos]
        # The cell itself (later points only, each pair once) and the next along the last axis,
        # then the rows (+1 along the middle axis) and (+1 along the first, -1..1 along the middle).
        ranges = [(pos + 1, np.searchsorted(keys, k + 1, "right"))]
        for delta in (row, plane - row, plane, plane + row):
            ranges.append((np.searchsorted(keys, k + delta - 1, "left"), np.searchsorted(keys, k + delta + 1, "right")))
        for first, stop in ranges:
            counts = np.maximum(stop - first, 0)
            total = int(counts.sum())
            if total == 0:
                continue
            i = order[np.repeat(pos, counts)]
            j = order[np.repeat(first - np.cumsum(counts) + counts, counts) + np.arange(total)]
            i, j = np.minimum(i, j), np.maximum(i, j)
            d = np.linalg.norm(xyz[i] - xyz[j], axis=1)
            ok = d <= r
            out_i.append(i[ok])
            out_j.append(j[ok])
            out_d.append(d[ok])
    if not out_i:
        return _EMPTY
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)


def cross_pairs_by_rows(a: np.ndarray, b: np.ndarray, r: float, keep=None, chunk: int = 1 << 16):
    """The pairs of :func:`cross_pairs` (rows of a, rows of b, distances), in another order: the
    27 neighbouring cells of a query are searched as 9 key ranges (the three cells along the last
    axis have consecutive keys), a third of the binary searches. For callers that do not depend
    on the order of the pairs. (With the compiled helpers the search runs in C and ``keep`` sees
    all pairs within r at once.)"""
    if len(a) == 0 or len(b) == 0 or not np.isfinite(r) or r < 0:
        return _EMPTY
    if native.lib is not None:
        i, j, d = _native_pairs(native.lib.cross_pairs(_points(a), _points(b), float(r)))
        if keep is not None and len(i):
            ok = keep(i, j, d)
            i, j, d = i[ok], j[ok], d[ok]
        return i, j, d
    if len(a) > len(b):
        return _swapped(cross_pairs_by_rows, a, b, r, keep, chunk)
    lo, size, dims = _frame([a, b], r)
    ga, gb = _Grid(a, lo, size, dims), _Grid(b, lo, size, dims)

    def pairs():
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                delta = (dx * dims[1] + dy) * dims[2]
                for start in range(0, len(ga.keys), chunk):
                    q = ga.keys[start:start + chunk] + delta
                    first = np.searchsorted(gb.keys, q - 1, "left")
                    counts = np.searchsorted(gb.keys, q + 1, "right") - first
                    total = int(counts.sum())
                    if total == 0:
                        continue
                    i = np.repeat(np.arange(start, start + len(q)), counts)
                    j = np.repeat(first - np.cumsum(counts) + counts, counts) + np.arange(total)
                    yield ga.order[i], gb.order[j]

    return _collect(pairs(), a, b, r, keep, ordered=False)


def _points(xyz: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(xyz, dtype=np.float64).reshape(-1, 3)


def _native_pairs(out: tuple[bytes, bytes, bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i, j, d = out
    return np.frombuffer(i, np.int64), np.frombuffer(j, np.int64), np.frombuffer(d, np.float64)


def any_within(a: np.ndarray, b: np.ndarray, r: float, chunk: int = 1 << 16) -> np.ndarray:
    """Per point of ``a``, whether a point of ``b`` lies within ``r`` (the test of
    :func:`cross_pairs`, ``|a - b| <= r``) without listing the pairs: the three neighbouring cells
    along the last axis have consecutive keys, so each of the nine rows of cells around a query is
    one key range, and a query found near is not searched again."""
    out = np.zeros(len(a), bool)
    if len(a) == 0 or len(b) == 0 or not np.isfinite(r) or r < 0:
        return out
    lo, size, dims = _frame([a, b], r)
    ga, gb = _Grid(a, lo, size, dims), _Grid(b, lo, size, dims)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            delta = (dx * dims[1] + dy) * dims[2]
            for start in range(0, len(ga.keys), chunk):
                rows = np.arange(start, min(start + chunk, len(ga.keys)))
                rows = rows[~out[ga.order[rows]]]
                q = ga.keys[rows] + delta
                first = np.searchsorted(gb.keys, q - 1, "left")
                counts = np.searchsorted(gb.keys, q + 1, "right") - first
                total = int(counts.sum())
                if total == 0:
                    continue
                i = ga.order[np.repeat(rows, counts)]
                j = gb.order[np.repeat(first - np.cumsum(counts) + counts, counts) + np.arange(total)]
                out[i[np.linalg.norm(a[i] - b[j], axis=1) <= r]] = True
    return out


def points_along(a: np.ndarray, b: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points at most ``step`` apart along segments a[i]-b[i], at the centres of equal pieces.

    Returns the points, the segment each lies on, and the length of segment each stands for.
    """
    d = b - a
    length = np.sqrt(np.einsum("ij,ij->i", d, d))
    n = np.maximum(1, np.ceil(length / step).astype(np.int64))
    seg = np.repeat(np.arange(len(length)), n)
    t = (np.arange(len(seg)) - (np.cumsum(n) - n)[seg] + 0.5) / n[seg]
    return a[seg] + t[:, None] * d[seg], seg, (length / n)[seg]
