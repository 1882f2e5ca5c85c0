"""Conservative fixes: apply the fixes that checks propose, log every edit, never guess.

``fix_neuron`` runs the fixable checks, applies the proposals of one group at a time (structure
first, then duplicates, types, gaps, finally sorting), and checks again until nothing is left to
fix, so that fixing twice changes nothing the second time. Every edit is recorded with what, where,
why and before/after, and can be written as JSON and as Vaa3D ``.apo`` markers for review.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_write_text
from ..io.points import Point, format_apo
from ..io.swc import format_swc, read_swc
from ..morphology import graph
from ..morphology.neuron import Neuron
from .config import CheckConfig
from .findings import Fix
from .run import check_neuron

#: Fix groups in the order they are applied; each pass applies one group, then re-checks.
FIX_ORDER = (
    ("duplicate_id",),
    ("missing_parent", "self_parent", "cycle"),
    ("duplicate_point", "zero_length_segment", "loop"),
    ("type_change", "parent_type_violation"),
    ("fragment",),
)
MAX_PASSES = 50

_COLORS = {"move": (0, 255, 255), "prune": (255, 0, 0), "delete": (255, 0, 0), "merge": (255, 128, 0), "drop_duplicate": (255, 128, 0), "renumber": (128, 128, 255),
           "cut": (255, 0, 255), "relabel": (0, 200, 0), "bridge": (0, 128, 255), "reindex": (128, 128, 128)}


@dataclass
class Edit:
    action: str
    check: str
    node_ids: list[int]
    xyz: list[list[float]]
    why: str
    before: Any
    after: Any

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class FixResult:
    neuron: Neuron
    edits: list[Edit] = field(default_factory=list)
    converged: bool = True

    @property
    def changed(self) -> bool:
        return bool(self.edits)


class FixError(ValueError):
    pass


def fix_neuron(neuron: Neuron, config: CheckConfig | None = None) -> FixResult:
    """Apply every conservative fix the checks propose, until none is left.

    Examples
    --------
    >>> from neurorecon.io import read_swc
    >>> n = read_swc(b"1 1 0 0 0 5 -1\\n2 3 0 0 8 1 1\\n2 3 0 0 8 1 1\\n")
    >>> res = fix_neuron(n)
    >>> res.neuron.n_nodes, [e.action for e in res.edits]
    (2, ['drop_duplicate'])
    """
    config = config or CheckConfig()
    fixable = {c for group in FIX_ORDER for c in group}
    edits: list[Edit] = []
    for _ in range(MAX_PASSES):
        findings = [f for f in check_neuron(neuron, _only(config, fixable)) if f.fix is not None]
        group = next((g for g in FIX_ORDER if any(f.check in g for f in findings)), None)
        if group is None:
            break
        for f in (f for f in findings if f.check in group):
            neuron = _apply(neuron, f, edits)
    else:
        return FixResult(reindex(neuron, edits), edits, converged=False)
    return FixResult(reindex(neuron, edits), edits)


def _only(config: CheckConfig, ids: set[str]) -> CheckConfig:
    from dataclasses import replace

    return replace(config, only=frozenset(i for i in ids if config.enabled(i)))


# ---------------------------------------------------------------------------------- edit actions
def _rows_of(neuron: Neuron, node_id: int) -> np.ndarray:
    return np.flatnonzero(neuron.ids == node_id)


def _record(neuron: Neuron, r: int) -> dict:
    return {"id": int(neuron.ids[r]), "type": int(neuron.types[r]), "xyz": neuron.xyz[r].tolist(),
            "radius": float(neuron.radius[r]), "parent_id": int(neuron.parent_ids[r])}


def _apply(neuron: Neuron, finding, edits: list[Edit]) -> Neuron:
    # A fix that no longer applies (its nodes are gone or changed) is left: a later pass re-checks.
    return apply_fix(neuron, finding.fix, finding.check, finding.message, edits)[0]


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
    rows = _rows_of(n, p["node_id"])
    if len(rows) != 1:
        return None
    r = rows[0]
    parent_ids = n.parent_ids.copy()
    parent_ids[r] = -1
    return n.with_changes(parent_ids=parent_ids), [r], {"parent_id": int(n.parent_ids[r])}, {"parent_id": -1}


def _reattach_children(n: Neuron, node_id: int, new_parent: int) -> np.ndarray:
    parent_ids = n.parent_ids.copy()
    parent_ids[parent_ids == node_id] = new_parent
    return parent_ids


def _delete(n: Neuron, p):
    rows = _rows_of(n, p["node_id"])
    if len(rows) != 1:
        return None
    r = rows[0]
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
    rows = _rows_of(n, p["node_id"])
    if len(rows) != 1:
        return None
    r = rows[0]
    xyz = n.xyz.copy()
    xyz[r] = p["xyz"]
    return n.with_changes(xyz=xyz), [r], {"xyz": n.xyz[r].round(4).tolist()}, {"xyz": [round(float(v), 4) for v in p["xyz"]]}


def _prune(n: Neuron, p):
    """Delete a node and everything below it (a spur, an over-extension, a trace onto a neighbour)."""
    rows = _rows_of(n, p["node_id"])
    if len(rows) != 1:
        return None
    gone = graph.subtree_mask(n.parent, rows[0])
    return n.take(np.flatnonzero(~gone)), [rows[0]], {"removed_ids": n.ids[gone].tolist()}, None


_ACTIONS = {"move": _move, "prune": _prune, "drop_duplicate": _drop_duplicate, "renumber": _renumber, "cut": _cut, "delete": _delete,
            "merge": _merge, "relabel": _relabel, "bridge": _bridge}
#: The fix actions :func:`apply_fix` knows (``reindex`` is done by :func:`reindex`).
FIX_ACTIONS = tuple(_ACTIONS)


def is_sorted(n: Neuron) -> bool:
    """Ids are 1..N in file order and every parent comes before its child."""
    return bool(np.array_equal(n.ids, np.arange(1, len(n) + 1)) and np.all(n.parent < np.arange(len(n))))


def reindex(n: Neuron, edits: list[Edit]) -> Neuron:
    """Sort depth-first from the soma tree's root and renumber 1..N (only if not sorted already)."""
    if is_sorted(n) or len(n) == 0:
        return n
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import depth_first_order

    from .context import CheckContext

    ctx = CheckContext(n, CheckConfig())
    m = len(n)
    # The traversal visits children in column order, i.e. in row order. Relabel the rows so that
    # the soma tree's root comes first and every other row keeps its relative (file) order.
    main = ctx.main_root
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
    order = perm[depth_first_order(g, m, directed=True, return_predecessors=False)[1:]]
    if len(order) < m:  # nodes in cycles (only if a cycle could not be fixed) keep their place at the end
        order = np.concatenate([order, np.setdiff1d(np.arange(m), order)])
    new_id = np.empty(m, dtype=np.int64)
    new_id[order] = np.arange(1, m + 1)
    parent_ids = np.where(n.parent >= 0, new_id[np.maximum(n.parent, 0)], n.parent_ids.clip(max=-1))
    out = n.with_changes(ids=new_id, parent_ids=parent_ids).take(order)
    changed = int(np.count_nonzero(n.ids[order] != np.arange(1, m + 1)))
    edits.append(Edit("reindex", "sort", [], [], f"ids not in parent-before-child order 1..N; {changed} node(s) renumbered",
                      {"ids": "file order"}, {"ids": "1..N depth-first"}))
    return out


# ---------------------------------------------------------------------------------- files
def edit_points(edits: list[Edit]) -> list[Point]:
    """One review marker per located edit."""
    out = []
    for e in edits:
        if not e.xyz:
            continue
        x, y, z = e.xyz[0]
        out.append(Point(x, y, z, name=f"{e.action}:{e.check}", comment=e.why, color=_COLORS.get(e.action, (255, 255, 0))))
    return out


@dataclass
class FixOutputs:
    swc: Path
    log: Path
    apo: Path


def output_paths(out: str | os.PathLike) -> FixOutputs:
    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower() in (".swc", ".eswc") else out
    return FixOutputs(out, Path(f"{stem}.edits.json"), Path(f"{stem}.apo"))


def fix_file(src: str | os.PathLike, out: str | os.PathLike, config: CheckConfig | None = None, *,
             dry_run: bool = False, overwrite: bool = False) -> tuple[FixResult, FixOutputs]:
    """Fix ``src`` into ``out`` (plus ``<out>.edits.json`` and ``<out>.apo``).

    The input is never written unless ``out`` is the input and ``overwrite`` is True; existing
    outputs are not replaced unless ``overwrite`` is True. With ``dry_run`` nothing is written.
    """
    src, paths = Path(src), output_paths(out)
    if not dry_run:
        check_outputs(paths, [src], overwrite)
    neuron = read_swc(src)
    result = fix_neuron(neuron, config)
    if not dry_run:
        log = {"input": str(src), "output": str(paths.swc), "n_nodes_in": neuron.n_nodes,
               "n_nodes_out": result.neuron.n_nodes, "converged": result.converged}
        write_outputs(paths, result.neuron, result.edits, log)
    return result, paths


def check_outputs(paths: FixOutputs, inputs: list[str | os.PathLike], overwrite: bool) -> None:
    """Raise :class:`FixError` if an output exists (naming it the input where it is one) and
    ``overwrite`` is False."""
    given = {Path(p).resolve() for p in inputs}
    for target in (paths.swc, paths.log, paths.apo):
        if target.exists() and not overwrite:
            what = "the input" if target.resolve() in given else "an existing file"
            raise FixError(f"{target} is {what}; pass --overwrite to replace it")


def write_outputs(paths: FixOutputs, neuron: Neuron, edits: list[Edit], log: dict,
                  extra_points: list[Point] = ()) -> None:
    """Write the edited SWC, the JSON edit log (``log`` plus the edits) and the ``.apo`` markers
    (one per located edit, then ``extra_points``), each atomically; the SWC last, so that its
    presence means the log and markers beside it are complete."""
    log = {**log, "edits": [e.to_dict() for e in edits]}
    atomic_write_text(paths.apo, format_apo(edit_points(edits) + list(extra_points)))
    atomic_write_text(paths.log, json.dumps(log, indent=1))
    atomic_write_text(paths.swc, format_swc(neuron))
