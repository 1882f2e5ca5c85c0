"""Edit actions: one proposed fix carried out on a neuron and recorded, and sorting.

The vocabulary every proposer shares (the checks, the image detector, a review): :func:`apply_fix`
carries out one :class:`~neurorecon.qc.findings.Fix` and records an :class:`Edit`;
:func:`reindex` and :func:`reorder` sort. :mod:`neurorecon.qc.fixes` decides which fixes to make.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..morphology import graph
from ..morphology.neuron import Neuron
from .config import CheckConfig
from .context import CheckContext
from .findings import Fix


@dataclass
class Edit:
    """One edit made: the action, who proposed it, the nodes, where, why, and before/after."""

    action: str
    check: str
    node_ids: list[int]
    xyz: list[list[float]]
    why: str
    before: Any
    after: Any

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class FixError(ValueError):
    """A fix that cannot be carried out (unknown action, missing parameter) or an output refused."""


# ---------------------------------------------------------------------------------- edit actions
def _rows_of(neuron: Neuron, node_id: int) -> np.ndarray:
    return np.flatnonzero(neuron.ids == node_id)


def _row_of(neuron: Neuron, node_id: int) -> int | None:
    """The row of the one node with this id; None where the id is missing or not unique (an
    edit planned on another state of the tree does not apply)."""
    rows = _rows_of(neuron, node_id)
    return int(rows[0]) if len(rows) == 1 else None


def _record(neuron: Neuron, r: int) -> dict:
    return {"id": int(neuron.ids[r]), "type": int(neuron.types[r]), "xyz": neuron.xyz[r].tolist(),
            "radius": float(neuron.radius[r]), "parent_id": int(neuron.parent_ids[r])}


def apply_fix(neuron: Neuron, fix: Fix, check: str, why: str, edits: list[Edit]) -> tuple[Neuron, bool]:
    """Carry out one proposed fix and record it in ``edits``.

    Parameters
    ----------
    neuron : Neuron
    fix : Fix
        One of :data:`FIX_ACTIONS` with its parameters (node ids refer to ``neuron``).
    check : str
        Who proposed it (a check id, ``detector.<reason>``), for the edit log.
    why : str
        The reason, for the edit log.
    edits : list of Edit
        Appended to when the fix is applied.

    Returns
    -------
    (Neuron, bool)
        The edited neuron and True, or ``neuron`` itself and False when the nodes the fix names
        are gone or no longer fit it (nothing is recorded then).

    Raises
    ------
    FixError
        For an action outside :data:`FIX_ACTIONS` or parameters it lacks.
    """
    handler = _ACTIONS.get(fix.action)
    if handler is None:
        raise FixError(f"unknown fix action {fix.action!r} (known: {', '.join(sorted(_ACTIONS))})")
    try:
        result = handler(neuron, fix.params)
    except (KeyError, TypeError, ValueError) as e:
        raise FixError(f"fix {fix.action!r}: bad or missing parameter {e}") from None
    if result is None:
        return neuron, False
    new, node_rows, before, after = result
    edits.append(Edit(fix.action, check, neuron.ids[node_rows].tolist(), neuron.xyz[node_rows].round(4).tolist(),
                      why, before, after))
    return new, True


def _drop_duplicate(n: Neuron, p):
    rows = _rows_of(n, p["node_id"])
    if len(rows) <= p["occurrence"]:
        return None
    r = rows[p["occurrence"]]
    return n.take(np.delete(np.arange(len(n)), r)), [r], _record(n, r), None


def _renumber(n: Neuron, p):
    rows = _rows_of(n, p["node_id"])
    if len(rows) <= p["occurrence"]:
        return None
    r = rows[p["occurrence"]]
    ids = n.ids.copy()
    ids[r] = n.ids.max() + 1
    return n.with_changes(ids=ids), [r], {"id": int(n.ids[r])}, {"id": int(ids[r])}


def _cut(n: Neuron, p):
    r = _row_of(n, p["node_id"])
    if r is None:
        return None
    parent_ids = n.parent_ids.copy()
    parent_ids[r] = -1
    return n.with_changes(parent_ids=parent_ids), [r], {"parent_id": int(n.parent_ids[r])}, {"parent_id": -1}


def _reattach_children(n: Neuron, node_id: int, new_parent: int) -> np.ndarray:
    parent_ids = n.parent_ids.copy()
    parent_ids[parent_ids == node_id] = new_parent
    return parent_ids


def _delete(n: Neuron, p):
    r = _row_of(n, p["node_id"])
    if r is None:
        return None
    parent_ids = _reattach_children(n, int(n.ids[r]), int(n.parent_ids[r]))
    keep = np.delete(np.arange(len(n)), r)
    return n.with_changes(parent_ids=parent_ids).take(keep), [r], _record(n, r), None


def _merge(n: Neuron, p):
    rows, into = _rows_of(n, p["node_id"]), _rows_of(n, p["into_id"])
    if len(rows) != 1 or len(into) != 1:
        return None
    r = rows[0]
    parent_ids = _reattach_children(n, int(n.ids[r]), int(p["into_id"]))
    keep = np.delete(np.arange(len(n)), r)
    return n.with_changes(parent_ids=parent_ids).take(keep), [r, into[0]], _record(n, r), {"merged_into": int(p["into_id"])}


def _relabel(n: Neuron, p):
    rows = n.index_of(p["node_ids"])
    if (rows < 0).any():
        return None
    types = n.types.copy()
    types[rows] = p["type"]
    return n.with_changes(types=types), rows, {"types": n.types[rows].tolist()}, {"type": int(p["type"])}


def _bridge(n: Neuron, p):
    end, target = _rows_of(n, p["node_id"]), _rows_of(n, p["parent_id"])
    if len(end) != 1 or len(target) != 1:
        return None
    parent = n.parent.copy()
    # Re-root the fragment at its open end: reverse the parent pointers from the end to the root.
    chain = [int(end[0])]
    while parent[chain[-1]] >= 0:
        chain.append(int(parent[chain[-1]]))
        if len(chain) > len(n):
            return None
    parent_ids = n.parent_ids.copy()
    for child, par in zip(chain[1:], chain[:-1]):
        parent_ids[child] = n.ids[par]
    parent_ids[end[0]] = p["parent_id"]
    before = {"parent_id": int(n.parent_ids[end[0]]), "rerooted": len(chain) > 1}
    return n.with_changes(parent_ids=parent_ids), [end[0], target[0]], before, {"parent_id": int(p["parent_id"])}


def _move(n: Neuron, p):
    """Put one node at a new position (the detector's snap back onto the fibre)."""
    r = _row_of(n, p["node_id"])
    if r is None:
        return None
    xyz = n.xyz.copy()
    xyz[r] = p["xyz"]
    return n.with_changes(xyz=xyz), [r], {"xyz": n.xyz[r].round(4).tolist()}, {"xyz": [round(float(v), 4) for v in p["xyz"]]}


def _prune(n: Neuron, p):
    """Delete a node and everything below it (a spur, an over-extension, a trace onto a neighbour)."""
    base = _row_of(n, p["node_id"])
    if base is None:
        return None
    gone = np.flatnonzero(graph.subtree_mask(n.parent, base))
    before = {"removed_ids": n.ids[gone].tolist(), "removed": [_record(n, r) for r in gone.tolist()]}
    return n.take(np.delete(np.arange(len(n)), gone)), [base], before, None


_ACTIONS = {"move": _move, "prune": _prune, "drop_duplicate": _drop_duplicate, "renumber": _renumber, "cut": _cut, "delete": _delete,
            "merge": _merge, "relabel": _relabel, "bridge": _bridge}
#: The fix actions :func:`apply_fix` knows (``reindex`` is done by :func:`reindex`).
FIX_ACTIONS = tuple(_ACTIONS)


def is_sorted(n: Neuron) -> bool:
    """Ids are 1..N in file order and every parent comes before its child."""
    return bool(np.array_equal(n.ids, np.arange(1, len(n) + 1)) and parents_first(n))


def parents_first(n: Neuron) -> bool:
    """Every node's parent (where it has one) is on an earlier line."""
    return bool(np.all(n.parent < np.arange(len(n))))


def depth_first_order(n: Neuron) -> np.ndarray:
    """Rows in depth-first order from the soma tree's root, then the other trees in file order."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import depth_first_order as dfo

    m = len(n)
    main = CheckContext(n, CheckConfig()).main_root
    # The traversal visits children in column order, i.e. in row order. Relabel the rows so that
    # the soma tree's root comes first and every other row keeps its relative (file) order.
    perm = np.arange(m) if main < 0 else np.concatenate([[main], np.delete(np.arange(m), main)])  # perm[new] = old
    new_of = np.empty(m, dtype=np.int64)
    new_of[perm] = np.arange(m)
    roots = new_of[n.roots]
    has = np.flatnonzero(n.parent >= 0)
    # A virtual node m links to every root, in order, so one traversal covers all trees.
    src = np.concatenate([np.full(len(roots), m), new_of[n.parent[has]]])
    dst = np.concatenate([roots, new_of[has]])
    g = csr_matrix((np.ones(len(src)), (src, dst)), shape=(m + 1, m + 1))
    g.sort_indices()
    order = perm[dfo(g, m, directed=True, return_predecessors=False)[1:]]
    if len(order) < m:  # nodes in cycles (only if a cycle could not be fixed) keep their place at the end
        order = np.concatenate([order, np.setdiff1d(np.arange(m), order)])
    return order


def reindex(n: Neuron, edits: list[Edit]) -> Neuron:
    """Sort depth-first from the soma tree's root and renumber 1..N (only if not sorted already)."""
    if is_sorted(n) or len(n) == 0:
        return n
    m = len(n)
    order = depth_first_order(n)
    if np.array_equal(order, np.arange(m)) and np.array_equal(n.ids, np.arange(1, m + 1)):
        return n  # only a cycle left unfixed keeps it from being sorted
    new_id = np.empty(m, dtype=np.int64)
    new_id[order] = np.arange(1, m + 1)
    parent_ids = np.where(n.parent >= 0, new_id[np.maximum(n.parent, 0)], n.parent_ids.clip(max=-1))
    out = n.with_changes(ids=new_id, parent_ids=parent_ids).take(order)
    changed = int(np.count_nonzero(n.ids[order] != np.arange(1, m + 1)))
    edits.append(Edit("reindex", "sort", [], [], f"ids not in parent-before-child order 1..N; {changed} node(s) renumbered",
                      {"ids": "file order"}, {"ids": "1..N depth-first"}))
    return out


def reorder(n: Neuron, edits: list[Edit]) -> Neuron:
    """Move lines, ids kept, so that every parent comes before its children (depth-first from the
    soma tree's root); for readers that need parents first after a bridge re-rooted a fragment."""
    if parents_first(n) or len(n) == 0:
        return n
    order = depth_first_order(n)
    moved = int(np.count_nonzero(order != np.arange(len(n))))
    if moved == 0:
        return n  # only a cycle left unfixed keeps it from being parents-first
    edits.append(Edit("reorder", "sort", [], [], f"a parent came after its child; {moved} line(s) moved, ids kept",
                      {"lines": "file order"}, {"lines": "depth-first, parents first"}))
    return n.take(order)
