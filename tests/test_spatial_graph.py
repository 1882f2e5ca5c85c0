"""The grid close-pair search and the pointer-doubling graph walks against plain references."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from neurorecon.morphology import graph
from neurorecon.morphology.spatial import any_within, close_pairs, close_pairs_by_rows, cross_pairs, cross_pairs_by_rows


@pytest.mark.parametrize("seed", range(12))
def test_close_and_cross_pairs_match_a_kd_tree(seed):
    rng = np.random.default_rng(seed)
    # Rounded coordinates make exact coincidences and distances exactly at r common.
    a = np.round(rng.random((rng.integers(2, 500), 3)) * rng.integers(1, 30), 1)
    b = np.round(rng.random((rng.integers(1, 400), 3)) * 10, 1)
    r = [0.0, 0.1, 0.5, 2.0][seed % 4]

    def clear(pairs, p, q):
        # Pairs at distance r to within rounding may fall either side in either implementation.
        return sorted((x, y) for x, y in pairs if abs(np.linalg.norm(p[x] - q[y]) - r) > 1e-9)

    i, j, d = close_pairs(a, r)
    expected = cKDTree(a).query_pairs(r, output_type="ndarray")
    assert len(set(zip(i.tolist(), j.tolist()))) == len(i)
    assert clear(zip(i.tolist(), j.tolist()), a, a) == clear(map(tuple, expected.tolist()), a, a)
    assert np.allclose(d, np.linalg.norm(a[i] - a[j], axis=1)) and np.all(d <= r)
    i, j, d = cross_pairs(a, b, r, keep=lambda i, j, d: (i + j) % 2 == 0)
    ref = cKDTree(a).query_ball_tree(cKDTree(b), r)
    want = ((x, y) for x, ys in enumerate(ref) for y in ys if (x + y) % 2 == 0)
    assert clear(zip(i.tolist(), j.tolist()), a, b) == clear(want, a, b)


@pytest.mark.parametrize("seed", range(8))
def test_row_ordered_pair_searches_find_the_same_pairs(seed):
    """The faster searches (key ranges along the last axis) list the same pairs and distances as
    close_pairs / cross_pairs, in another order; any_within agrees with the pairs."""
    rng = np.random.default_rng(100 + seed)
    a = np.round(rng.random((rng.integers(2, 600), 3)) * rng.integers(1, 40), 1)
    b = np.round(rng.random((rng.integers(1, 500), 3)) * 12, 1)
    r = [0.0, 0.3, 1.0, 2.5][seed % 4]
    chunk = [7, 1 << 16][seed % 2]       # a tiny chunk exercises the chunk seams

    def as_set(i, j, d):
        return {(x, y, round(z, 9)) for x, y, z in zip(i.tolist(), j.tolist(), d.tolist())}

    assert as_set(*close_pairs_by_rows(a, r, chunk=chunk)) == as_set(*close_pairs(a, r))
    keep = lambda i, j, d: (i + j) % 3 != 0    # noqa: E731
    assert as_set(*cross_pairs_by_rows(a, b, r, keep=keep, chunk=chunk)) == as_set(*cross_pairs(a, b, r, keep=keep))
    assert as_set(*cross_pairs_by_rows(b, a, r, chunk=chunk)) == as_set(*cross_pairs(b, a, r))
    near = np.zeros(len(a), bool)
    near[cross_pairs(a, b, r)[0]] = True
    np.testing.assert_array_equal(any_within(a, b, r, chunk=chunk), near)
    assert not any_within(a, b, -1.0).any() and len(close_pairs_by_rows(a[:1], r)[0]) == 0


def test_ancestor_sums_and_cycles_match_a_walk():
    rng = np.random.default_rng(5)
    n = 400
    parent = np.array([-1] + [int(rng.integers(0, k)) for k in range(1, n)])
    parent[[50, 51, 52]] = [52, 50, 51]  # a 3-cycle; nodes hanging below it never reach a root
    parent[70] = 70  # a self-parent
    w = rng.random(n)
    root, total, rooted = graph.ancestor_sums(parent, w)
    for k in range(n):
        seen, node, acc = set(), k, 0.0
        while parent[node] >= 0 and node not in seen:
            seen.add(node)
            acc += w[node]
            node = parent[node]
        reaches = parent[node] < 0
        assert rooted[k] == reaches
        if reaches:
            assert root[k] == node and total[k] == pytest.approx(acc)
    assert set(graph.cycle_members(parent).tolist()) == {50, 51, 52, 70}


def _walk_subtree(parent, row):
    kids = {}
    for c, p in enumerate(parent):
        kids.setdefault(int(p), []).append(c)
    out, todo = [], [row]
    while todo:
        x = todo.pop()
        out.append(x)
        todo.extend(kids.get(x, []))
    return sorted(out)


@pytest.mark.parametrize("seed", [0, 1])
def test_subtree_helpers_match_a_walk(seed):
    rng = np.random.default_rng(seed)
    n = 300
    parent = np.array([-1] + [int(rng.integers(0, k)) for k in range(1, n)])
    parent[120] = -1  # a second tree
    w = rng.random(n)
    sums = graph.subtree_sums(parent, w)
    for row in (0, 7, 120, 299):
        below = _walk_subtree(parent, row)
        assert np.flatnonzero(graph.subtree_mask(parent, row)).tolist() == below
        assert sums[row] == pytest.approx(w[below].sum())
    rows = np.sort(rng.choice(n, 150, replace=False))
    sub = graph.induced_parents(parent, rows)
    for k, r in enumerate(rows):
        assert sub[k] == (np.flatnonzero(rows == parent[r])[0] if parent[r] in rows else -1)


def _walk_up(parent, row):
    out = [row]
    while parent[out[-1]] >= 0:
        out.append(int(parent[out[-1]]))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_run_tops_and_topmost_marked_ancestor_match_a_walk(seed):
    rng = np.random.default_rng(seed)
    n = 400
    # long chains with side branches, so runs and nested marks occur
    parent = np.array([-1] + [k - 1 if rng.random() < 0.8 else int(rng.integers(0, k)) for k in range(1, n)])
    parent[200] = -1
    label = np.where(rng.random(n) < 0.6, rng.integers(0, 3, n), -1)
    tops = graph.run_tops(parent, label)
    marked = rng.random(n) < 0.1
    topmost = graph.topmost_marked_ancestor(parent, marked)
    for row in range(n):
        path = _walk_up(parent, row)
        if label[row] < 0:
            assert tops[row] == -1
        else:
            k = 0                                   # climb while the parent carries the same label
            while k + 1 < len(path) and label[path[k + 1]] == label[row]:
                k += 1
            assert tops[row] == path[k]
        above = [r for r in path if marked[r]]
        assert topmost[row] == (above[-1] if above else -1)


def test_points_along_covers_each_segment_evenly():
    from neurorecon.morphology.spatial import points_along

    a = np.array([[0.0, 0, 0], [5.0, 5, 5]])
    b = np.array([[3.0, 0, 0], [5.0, 5, 5]])           # a 3 µm segment and a zero-length one
    pts, seg, share = points_along(a, b, 1.0)
    assert seg.tolist() == [0, 0, 0, 1]
    assert np.allclose(pts[:3, 0], [0.5, 1.5, 2.5]) and np.allclose(pts[3], [5, 5, 5])
    assert np.allclose(share, [1, 1, 1, 0])


def test_reroot_turns_only_the_path_round():
    from neurorecon.morphology.graph import reroot

    #      0
    #      |
    #      1
    #     / \
    #    2   3
    #        |
    #        4
    p = np.array([-1, 0, 1, 1, 3])
    np.testing.assert_array_equal(reroot(p, 4), [1, 3, 1, 4, -1])
    np.testing.assert_array_equal(reroot(p, 2), [1, 2, -1, 1, 3])
    np.testing.assert_array_equal(reroot(p, 0), p)
    q = reroot(p, 4)   # still one tree with the same undirected edges
    edges = lambda par: {frozenset((i, int(par[i]))) for i in range(len(par)) if par[i] >= 0}
    assert edges(q) == edges(p)
