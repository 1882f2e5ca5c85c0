"""Property tests: exact write/read round trips, and fixes that are idempotent, lose no node
silently and never add an error-level finding (on random trees, on defect-injected realistic trees
and on every real file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurorecon.io import format_swc, read_swc
from neurorecon.morphology import Neuron
from neurorecon.morphology.graph import ancestor_sums, subtree_mask
from neurorecon.qc.findings import Severity
from neurorecon.qc.fixes import fix_neuron
from neurorecon.qc.run import check_neuron

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REMOVING = ("delete", "drop_duplicate", "merge")  # one node each; prune lists what it removed
WHOLE = ("no_soma", "multiple_somas", "missing_neurite")
HERE = Path(__file__).resolve().parent
CHECKS_DATA = HERE / "data" / "checks"
MORPHOLOGIES = HERE.parents[1] / "shared" / "data" / "morphologies"

coord = st.one_of(
    st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e-6, max_value=1e-6, allow_nan=False),  # tiny, subnormals, -0.0
    st.integers(-5000, 5000).map(float),
    st.sampled_from([0.0, -0.0, 1e-300, -5e-324, 123456789.123456789, 0.1, 1 / 3]),
)
radius = st.one_of(st.floats(min_value=0, max_value=50, allow_nan=False), st.sampled_from([0.0, 1e-12, 0.5]))


@st.composite
def trees(draw, min_nodes=1, max_nodes=25, extra=True):
    """A random tree: node k hangs from a random earlier node; ids permuted with gaps; rows shuffled."""
    n = draw(st.integers(min_nodes, max_nodes))
    parent = [-1] + [draw(st.integers(0, k - 1)) for k in range(1, n)]
    # a few extra roots
    for k in draw(st.lists(st.integers(1, max(n - 1, 1)), max_size=2)):
        if k < n:
            parent[k] = -1
    xyz = draw(st.lists(st.tuples(coord, coord, coord), min_size=n, max_size=n))
    rad = draw(st.lists(radius, min_size=n, max_size=n))
    types = draw(st.lists(st.integers(0, 10), min_size=n, max_size=n))
    # ids: a random injective map into 0..big, so there are gaps and any order
    ids = draw(st.lists(st.integers(0, 10 * n + 10), min_size=n, max_size=n, unique=True))
    order = draw(st.permutations(range(n)))
    k_extra = draw(st.integers(0, 3)) if extra else 0
    ext = draw(st.lists(st.lists(coord, min_size=k_extra, max_size=k_extra), min_size=n, max_size=n))
    ids_a = np.array(ids, dtype=np.int64)
    parent_ids = np.array([-1 if p < 0 else ids[p] for p in parent], dtype=np.int64)
    rows = np.array(order)
    return Neuron.from_arrays(
        ids=ids_a[rows],
        types=np.array(types)[rows],
        xyz=np.array(xyz, dtype=np.float64).reshape(n, 3)[rows],
        radius=np.array(rad)[rows],
        parent_ids=parent_ids[rows],
        extra=np.array(ext, dtype=np.float64).reshape(n, k_extra)[rows],
        extra_names=tuple(f"col{i}" for i in range(k_extra)),
    )


def _bitwise(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@SETTINGS
@given(trees())
def test_write_read_round_trip_is_exact(neuron):
    back = read_swc(format_swc(neuron).encode())
    assert _bitwise(back.ids, neuron.ids)
    assert _bitwise(back.types, neuron.types)
    assert _bitwise(back.parent_ids, neuron.parent_ids)
    assert _bitwise(back.xyz, neuron.xyz)
    assert _bitwise(back.radius, neuron.radius)
    assert _bitwise(back.extra, neuron.extra)
    assert back.extra_names == neuron.extra_names
    # writing what was read gives the same text
    assert format_swc(back) == format_swc(neuron)


# ------------------------------------------------------------------------------ fixes
@st.composite
def defective_trees(draw):
    """Random trees (smaller, on a coarse grid so that coincidences happen) with injected defects."""
    t = draw(trees(min_nodes=2, max_nodes=18, extra=False))
    ids, types, xyz, rad, pids = t.ids.copy(), t.types.copy(), t.xyz.copy(), t.radius.copy(), t.parent_ids.copy()
    if draw(st.booleans()):  # coarse coordinates: many coincident points and zero-length edges
        xyz = np.round(xyz / 1000) * draw(st.sampled_from([1.0, 2.0, 5.0]))
    n = len(ids)
    defects = draw(st.lists(st.sampled_from(["dup_line", "dup_id", "cycle", "missing", "coincident", "self"]), max_size=3))
    rows = [ids, types, xyz, rad, pids]
    for d in defects:
        ids, types, xyz, rad, pids = rows
        n = len(ids)
        k = draw(st.integers(0, n - 1))
        if d == "dup_line":
            rows = [np.append(ids, ids[k]), np.append(types, types[k]), np.vstack([xyz, xyz[k]]), np.append(rad, rad[k]), np.append(pids, pids[k])]
        elif d == "dup_id":
            rows = [np.append(ids, ids[k]), np.append(types, 3), np.vstack([xyz, xyz[k] + 1.0]), np.append(rad, 1.0), np.append(pids, pids[k])]
        elif d == "cycle" and n >= 2:
            j = draw(st.integers(0, n - 1))
            # make k's parent j and j's parent k (a 2-cycle, or a self-parent when k == j)
            pids = pids.copy()
            pids[k], pids[j] = ids[j], ids[k]
            rows = [ids, types, xyz, rad, pids]
        elif d == "missing":
            pids = pids.copy()
            pids[k] = int(ids.max()) + 1000
            rows = [ids, types, xyz, rad, pids]
        elif d == "coincident":
            j = draw(st.integers(0, n - 1))
            xyz = xyz.copy()
            xyz[j] = xyz[k]
            rows = [ids, types, xyz, rad, pids]
        elif d == "self":
            pids = pids.copy()
            pids[k] = ids[k]
            rows = [ids, types, xyz, rad, pids]
    ids, types, xyz, rad, pids = rows
    return Neuron.from_arrays(ids, types, xyz, rad, pids)


def _same_neuron(a: Neuron, b: Neuron) -> bool:
    return (
        a.ids.tolist() == b.ids.tolist()
        and a.types.tolist() == b.types.tolist()
        and a.parent_ids.tolist() == b.parent_ids.tolist()
        and _bitwise(a.xyz, b.xyz)
        and _bitwise(a.radius, b.radius)
    )


def _n_removed(edits) -> int:
    return sum(1 if e.action in REMOVING else len(e.before["removed_ids"]) if e.action == "prune" else 0 for e in edits)


def added_errors(before: Neuron, after: Neuron, edits, by_place: bool = False) -> list:
    """Error-level findings on ``after`` that ``before`` did not have.

    A finding is its check and the set of node ids it names (or its message where it names none; its
    check alone for no_soma, multiple_somas and missing_neurite, whose node only places a marker);
    one that names some of the nodes of an input finding of the same check is that site, shrunk;
    ids stay across a fix, except that a ``renumber`` edit gives a duplicated id a new one (read
    back through the edit log). One error may change its check: a ``cut`` of a missing-parent,
    self-parent or cycle link at node r leaves r the root of a fragment; that fragment counts as
    the error the cut fixed, if the input named r in such an error; and where the input had a cycle,
    a cut may make the cycle's tree the soma tree, and the tree that was the soma tree (a root in
    the input) a fragment.

    With ``by_place`` a finding is its check and the positions of its nodes instead of their ids
    (for ``renumber``, which gives every node a new id).
    """
    old_id = {e.after["id"]: e.before["id"] for e in edits if e.action == "renumber"}

    def where(f):
        return frozenset(f.xyz) if by_place else frozenset(old_id.get(i, i) for i in f.node_ids)

    def key(f):
        return (f.check,) if f.check in WHOLE else (f.check, where(f)) if f.node_ids else (f.check, f.message)

    errs = [f for f in check_neuron(before) if f.severity == Severity.ERROR]
    old = {key(f) for f in errs}

    def shrunk(f):  # fewer nodes of a site the input had in error
        return bool(f.node_ids) and any(g.check == f.check and where(g) >= where(f) for g in errs)

    exposed = {p for f in errs if f.check in ("missing_parent", "self_parent", "cycle") for p in where(f)}
    if any(f.check in ("cycle", "self_parent") for f in errs):
        # the cut cycle may be the soma tree now
        exposed |= {tuple(p) for p in before.xyz[before.roots].round(4).tolist()} if by_place else set(before.ids[before.roots].tolist())
    cut = any(e.action == "cut" for e in edits)
    return [(f.check, f.node_ids, f.message) for f in check_neuron(after)
            if f.severity >= Severity.ERROR and key(f) not in old and not shrunk(f)
            and not (f.check == "fragment" and cut and where(f) & exposed)]


def _check_fix_properties(neuron):
    res = fix_neuron(neuron)
    assert res.converged
    assert neuron.n_nodes - res.neuron.n_nodes == _n_removed(res.edits)
    out = res.neuron
    # ids kept: every id is one of the input's or one a renumber edit gave
    assert set(out.ids.tolist()) <= set(neuron.ids.tolist()) | {e.after["id"] for e in res.edits if e.action == "renumber"}
    assert added_errors(neuron, out, res.edits) == []
    again = fix_neuron(out)
    assert again.edits == [], [(e.action, e.check, e.node_ids, e.why) for e in again.edits]
    assert _same_neuron(again.neuron, out)
    # and the text written survives a round trip unchanged
    assert _same_neuron(read_swc(format_swc(out).encode()), out)
    return res


def _check_renumber(neuron, res):
    """``renumber`` makes the same edits, then re-indexes (and fixes on where sorting let a check
    see more to fix); no error is added, compared by place."""
    num = fix_neuron(neuron, renumber=True)
    assert num.converged
    kept = [e.to_dict() for e in res.edits if e.action != "reorder"]
    assert [e.to_dict() for e in num.edits if e.action != "reindex"][: len(kept)] == kept
    out = num.neuron
    assert out.ids.tolist() == list(range(1, out.n_nodes + 1))
    # parents first, but for a cycle a declined cut left and what hangs from it (they go last)
    rooted = ancestor_sums(out.parent)[2]
    assert np.all((out.parent < np.arange(out.n_nodes)) | ~rooted)

    assert added_errors(neuron, out, num.edits, by_place=True) == []
    assert fix_neuron(out, renumber=True).edits == []


@SETTINGS
@given(trees(max_nodes=20, extra=False))
def test_fix_is_idempotent_and_documents_removed_nodes(neuron):
    _check_fix_properties(neuron)


@SETTINGS
@given(defective_trees())
def test_fix_is_idempotent_on_defective_trees(neuron):
    res = _check_fix_properties(neuron)
    _check_renumber(neuron, res)


@SETTINGS
@given(trees(max_nodes=15, extra=False))
def test_fix_keeps_every_surviving_node(neuron):
    """Nodes not documented as removed keep their position and radius (as a multiset)."""
    res = fix_neuron(neuron)
    removed = [e.before for e in res.edits if e.action in REMOVING]
    removed += [r for e in res.edits if e.action == "prune" for r in e.before["removed"]]
    before = sorted(tuple(p) + (r,) for p, r in zip(neuron.xyz.tolist(), neuron.radius.tolist()))
    after = sorted(tuple(p) + (r,) for p, r in zip(res.neuron.xyz.tolist(), res.neuron.radius.tolist()))
    for rec in removed:
        before.remove(tuple(rec["xyz"]) + (rec["radius"],))
    assert before == after


# ------------------------------------------------------------------------------ realistic trees and real files
CLEAN = read_swc(CHECKS_DATA / "clean.swc")  # a realistic neuron: soma, apical, axon, two basal trees
DEFECTS = ("dup_line", "dup_id", "missing", "self", "cycle", "fragment", "coincident", "zero_length",
           "type_run", "retrace", "typed_fragment")


def _inject(draw, n: Neuron, kind: str) -> Neuron:
    """``n`` with one defect of ``kind`` at a drawn place (the defects of make_defects.py)."""
    ids, types, xyz, rad, pids = n.ids.copy(), n.types.copy(), n.xyz.copy(), n.radius.copy(), n.parent_ids.copy()
    m = len(ids)
    k = draw(st.integers(0, m - 1))
    j = draw(st.integers(0, m - 1))
    p = n.parent
    new_id = int(ids.max()) + 1
    if kind == "dup_line":
        return n.take(np.append(np.arange(m), k))
    if kind in ("dup_id", "zero_length"):
        # a new node next to (or on) node k: with an id already used, or at k's parent's place
        at = xyz[p[k]] if kind == "zero_length" and p[k] >= 0 else xyz[k] + [0.7, 0.0, 0.0]
        nid = ids[j] if kind == "dup_id" else new_id
        if kind == "zero_length":
            pids[k] = nid
        return Neuron.from_arrays(np.append(ids, nid), np.append(types, types[k]), np.vstack([xyz, at]),
                                  np.append(rad, rad[k]), np.append(pids, n.parent_ids[k]))
    if kind == "missing":
        pids[k] = new_id + 1000
    elif kind == "self":
        pids[k] = ids[k]
    elif kind == "cycle":
        below = np.flatnonzero(subtree_mask(n.parent, k))
        pids[k] = ids[below[-1]] if len(below) > 1 else ids[j]
    elif kind in ("fragment", "typed_fragment"):
        pids[k] = -1
        if kind == "typed_fragment":
            types[subtree_mask(n.parent, k)] = draw(st.sampled_from([2, 3, 4]))
    elif kind == "coincident":
        xyz[k] = xyz[j]
    elif kind == "type_run":
        run = [k]
        for _ in range(draw(st.integers(0, 4))):
            if p[run[-1]] >= 0:
                run.append(int(p[run[-1]]))
        types[run] = draw(st.sampled_from([0, 2, 3, 4]))
    elif kind == "retrace":
        return _retrace(n, k, draw(st.integers(2, 8)))
    return Neuron.from_arrays(ids, types, xyz, rad, pids)


def _retrace(n: Neuron, row: int, k: int) -> Neuron:
    """A new branch from ``row``'s parent that runs along ``row`` and up to k-1 nodes below it,
    0.1 um to the side, its last node exactly on the node it follows (a double-traced stretch)."""
    along = [row]
    while len(along) < k and n.n_children[along[-1]] == 1:
        along.append(int(np.flatnonzero(n.parent == along[-1])[0]))
    if n.parent[row] < 0:
        return n
    xyz = n.xyz[along] + [0.0, 0.1, 0.0]
    xyz[-1] = n.xyz[along[-1]]
    new = np.arange(len(along)) + n.ids.max() + 1
    parents = np.concatenate([[n.ids[n.parent[row]]], new[:-1]])
    return Neuron.from_arrays(np.concatenate([n.ids, new]), np.concatenate([n.types, n.types[along]]), np.vstack([n.xyz, xyz]),
                              np.concatenate([n.radius, n.radius[along]]), np.concatenate([n.parent_ids, parents]))


# Defects go into the realistic clean neuron and, where the shared data is there, a real one.
_REAL_BASE = MORPHOLOGIES / "allen_v1" / "Pvalb_469628681_m.swc"
BASES = [CLEAN] + ([read_swc(_REAL_BASE)] if _REAL_BASE.is_file() else [])


@st.composite
def injected_trees(draw):
    n = draw(st.sampled_from(BASES))
    for kind in draw(st.lists(st.sampled_from(DEFECTS), min_size=1, max_size=4)):
        n = _inject(draw, n, kind)
    return n


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(injected_trees())
def test_fix_adds_no_error_on_defect_injected_realistic_trees(neuron):
    res = _check_fix_properties(neuron)
    _check_renumber(neuron, res)


FIXTURES = sorted(CHECKS_DATA.glob("*.swc"))


@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
def test_fix_adds_no_error_on_the_defect_fixtures(path):
    neuron = read_swc(path, strict=False)
    res = _check_fix_properties(neuron)
    _check_renumber(neuron, res)


REAL_FILES = sorted(MORPHOLOGIES.rglob("*.swc")) if MORPHOLOGIES.is_dir() else []


@pytest.mark.parametrize("path", REAL_FILES or [None],
                         ids=[str(p.relative_to(MORPHOLOGIES)) for p in REAL_FILES] or ["no-shared-data"])
def test_fix_adds_no_error_on_real_files(path):
    if path is None:
        pytest.skip(f"{MORPHOLOGIES} does not exist")
    neuron = read_swc(path, strict=False)
    res = _check_fix_properties(neuron)
    _check_renumber(neuron, res)
