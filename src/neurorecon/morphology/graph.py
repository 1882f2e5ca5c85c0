"""Graph operations on parent-index arrays.

A neuron's structure is one int array ``parent`` (row index of each node's parent, -1 for a root).
Everything here is vectorised: walks up the tree use pointer doubling (log2(depth) numpy passes)
instead of per-node Python loops, and stay correct when the parent pointers contain cycles.
"""

from __future__ import annotations

import numpy as np


def lookup(ids: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Row of each queried id in ``ids`` (first occurrence), -1 where absent."""
    if len(ids) == 0:
        return np.full(len(query), -1, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    pos = np.searchsorted(sorted_ids, query)
    pos_c = np.minimum(pos, len(ids) - 1)
    found = (pos < len(ids)) & (sorted_ids[pos_c] == query)
    return np.where(found, order[pos_c], -1).astype(np.int64)


def resolve_parents(ids: np.ndarray, parent_ids: np.ndarray) -> np.ndarray:
    """Parent row index per node; negative parent ids and unknown parents give -1."""
    parent = lookup(ids, parent_ids)
    parent[parent_ids < 0] = -1
    return parent


def child_counts(parent: np.ndarray) -> np.ndarray:
    return np.bincount(parent[parent >= 0], minlength=len(parent)).astype(np.int64)


def children_csr(parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Children of every node as (offsets, child_rows): children of i are rows[offsets[i]:offsets[i+1]]."""
    has = np.flatnonzero(parent >= 0)
    rows = has[np.argsort(parent[has], kind="stable")]
    offsets = np.zeros(len(parent) + 1, dtype=np.int64)
    np.cumsum(child_counts(parent), out=offsets[1:])
    return offsets, rows


def first_child(parent: np.ndarray) -> np.ndarray:
    """First child row of each node in file order (-1 for tips)."""
    out = np.full(len(parent), -1, dtype=np.int64)
    c = np.flatnonzero(parent >= 0)[::-1]           # reversed: the first child in file order wins
    out[parent[c]] = c
    return out


def edge_lengths(xyz: np.ndarray, parent: np.ndarray) -> np.ndarray:
    has = parent >= 0
    out = np.zeros(len(parent))
    d = xyz[has] - xyz[parent[has]]
    out[has] = np.sqrt(np.einsum("ij,ij->i", d, d))
    return out


def _n_doublings(n: int) -> int:
    return max(1, int(np.ceil(np.log2(max(n, 2)))) + 1)


def ancestor_sums(parent: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Walk every node up to its root at once.

    Returns
    -------
    root : (N,) int64
        Row of the root each node hangs from (meaningless where ``rooted`` is False).
    total : (N,) float64
        Sum of ``weights`` over the edges from the node to its root (node counts if None).
    rooted : (N,) bool
        False for nodes whose parent chain enters a cycle and never reaches a root.
    """
    n = len(parent)
    idx = np.arange(n)
    is_root = parent < 0
    jump = np.where(is_root, idx, parent)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    total = np.where(is_root, 0.0, w)
    for _ in range(_n_doublings(n)):
        nxt = jump[jump]
        if np.array_equal(nxt, jump):
            break
        total = total + total[jump]
        jump = nxt
    rooted = is_root[jump] if n else np.zeros(0, bool)
    return jump, total, rooted


def cycle_members(parent: np.ndarray) -> np.ndarray:
    """Rows that lie on a cycle of parent pointers (including self-parents)."""
    n = len(parent)
    _, _, rooted = ancestor_sums(parent)
    if rooted.all():
        return np.zeros(0, dtype=np.int64)
    # Following parents 2^k >= n times from any unrooted node lands on its cycle, and that map is a
    # bijection on the cycle itself, so the image of the unrooted nodes is exactly the cycle members.
    jump = np.where(parent < 0, np.arange(n), parent)
    for _ in range(_n_doublings(n)):
        jump = jump[jump]
    return np.unique(jump[~rooted])


def cycle_labels(parent: np.ndarray, members: np.ndarray) -> np.ndarray:
    """For the given cycle members, the smallest row on each one's cycle (one label per cycle)."""
    label = np.arange(len(parent))
    jump = np.where(parent < 0, np.arange(len(parent)), parent)
    for _ in range(_n_doublings(len(parent))):
        label = np.minimum(label, label[jump])
        jump = jump[jump]
    return label[members]


def cycle_mask(parent: np.ndarray) -> np.ndarray:
    mask = np.zeros(len(parent), dtype=bool)
    mask[cycle_members(parent)] = True
    return mask


def nearest_marked_ancestor(parent: np.ndarray, marked: np.ndarray) -> np.ndarray:
    """For each node, the closest node at or above it that is marked (or its root, if none is)."""
    n = len(parent)
    idx = np.arange(n)
    jump = np.where(marked | (parent < 0), idx, parent)
    for _ in range(_n_doublings(n)):
        nxt = jump[jump]
        if np.array_equal(nxt, jump):
            break
        jump = nxt
    return jump


def run_tops(parent: np.ndarray, label: np.ndarray) -> np.ndarray:
    """For each node with ``label >= 0``, the top node of its run: the nodes connected to it along
    the tree through parents with the same label. -1 for unlabelled nodes.

    A run of one problem (a stretch of long edges, a detector reason along a branch) is one site,
    so checks and the viewer group their nodes by this top."""
    label = np.asarray(label)
    on = label >= 0
    has = parent >= 0
    goes_on = on & has
    goes_on[has] &= label[parent[has]] == label[has]
    top = nearest_marked_ancestor(parent, on & ~goes_on)
    return np.where(on, top, -1)


def topmost_marked_ancestor(parent: np.ndarray, marked: np.ndarray) -> np.ndarray:
    """For each node, the highest marked node at or above it (-1 where none is)."""
    n = len(parent)
    near = nearest_marked_ancestor(parent, marked)
    near = np.where(marked[near], near, -1)
    up = np.where(parent >= 0, near[np.maximum(parent, 0)], -1)       # next marked node strictly above
    jump = np.where(marked & (up >= 0), up, np.arange(n))
    for _ in range(_n_doublings(n)):
        nxt = jump[jump]
        if np.array_equal(nxt, jump):
            break
        jump = nxt
    return np.where(near >= 0, jump[np.maximum(near, 0)], -1)


def section_prefix_range(parent: np.ndarray, start: np.ndarray, values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per node, the column-wise min and max of ``values`` over the valid nodes above it in its
    own unbranched section (excluding itself; +inf/-inf where there are none)."""
    n = len(parent)
    mn = np.where(valid[:, None], values, np.inf)
    mx = np.where(valid[:, None], values, -np.inf)
    jump = np.where(start | (parent < 0), np.arange(n), parent)
    for _ in range(_n_doublings(n)):
        # min/max are idempotent, so counting a node twice on the way up is harmless.
        mn = np.minimum(mn, mn[jump])
        mx = np.maximum(mx, mx[jump])
        nxt = jump[jump]
        if np.array_equal(nxt, jump):
            break
        jump = nxt
    above = ~start & (parent >= 0)
    up = np.maximum(parent, 0)
    return np.where(above[:, None], mn[up], np.inf), np.where(above[:, None], mx[up], -np.inf)


def section_starts(parent: np.ndarray, n_children: np.ndarray) -> np.ndarray:
    """True where an unbranched section begins: at roots and at children of roots or branch points."""
    start = parent < 0
    has = ~start
    p = parent[has]
    start[has] = (parent[p] < 0) | (n_children[p] != 1)
    return start


def section_ids(parent: np.ndarray, n_children: np.ndarray) -> np.ndarray:
    """Row of the first node of each node's unbranched section."""
    return nearest_marked_ancestor(parent, section_starts(parent, n_children))


def ancestors(parent: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """(len(rows), k+1) array: rows, their parents, grandparents... (-1 beyond a root)."""
    out = np.full((len(rows), k + 1), -1, dtype=np.int64)
    cur = np.asarray(rows, dtype=np.int64)
    out[:, 0] = cur
    for j in range(1, k + 1):
        ok = cur >= 0
        cur = np.where(ok, parent[np.where(ok, cur, 0)], -1)
        out[:, j] = cur
    return out


def within_hops(parent: np.ndarray, a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """True where nodes a[i] and b[i] are at most k edges apart along the tree."""
    anc_a = ancestors(parent, a, k)
    anc_b = ancestors(parent, b, k)
    near = np.zeros(len(a), dtype=bool)
    for i in range(k + 1):
        for j in range(k + 1 - i):
            near |= (anc_a[:, i] == anc_b[:, j]) & (anc_a[:, i] >= 0)
    return near


def induced_parents(parent: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Parent pointers of the sub-tree made of ``rows``, as indices into ``rows`` (-1 where the
    parent is not among them: that node becomes a root)."""
    rows = np.asarray(rows, dtype=np.int64)
    index = np.full(len(parent), -1, dtype=np.int64)
    index[rows] = np.arange(len(rows))
    par = parent[rows]
    return np.where(par >= 0, index[np.maximum(par, 0)], -1)


def subtree_mask(parent: np.ndarray, row: int) -> np.ndarray:
    """True for ``row`` and every node below it."""
    marked = np.zeros(len(parent), dtype=bool)
    marked[row] = True
    return nearest_marked_ancestor(parent, marked) == row


def subtree_sums(parent: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Sum of ``weights`` over each node and everything below it (one vectorised pass per depth level)."""
    _, depth, _ = ancestor_sums(parent)
    total = np.asarray(weights, dtype=np.float64).copy()
    order = np.argsort(-depth, kind="stable")
    for level in np.split(order, np.flatnonzero(np.diff(depth[order])) + 1):
        level = level[parent[level] >= 0]
        np.add.at(total, parent[level], total[level])
    return total


def reroot(parent: np.ndarray, row: int) -> np.ndarray:
    """Parents of the same tree hung from ``row`` instead: the edges on the path from ``row`` up to
    its old root turn round, every other edge stays. ``parent`` must be cycle-free."""
    _, depth, _ = ancestor_sums(parent)
    path = ancestors(parent, np.array([row]), int(depth[row]))[0]     # row, its parent, ..., old root
    out = parent.copy()
    out[path[1:]] = path[:-1]
    out[row] = -1
    return out
