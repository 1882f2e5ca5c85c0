"""Carry out a finished review: accepted fixes applied, "marked as error" nodes kept as markers.

The outputs are those of ``neurorecon fix`` (:func:`neurorecon.qc.fixes.write_outputs`): the
corrected SWC, ``<out>.edits.json`` (every edit with before/after) and ``<out>.apo`` (a marker per
edit, then one per node marked as an error, for follow-up in Vaa3D or the viewer). Rejected and
undecided flags change nothing. Accepted fixes that change one node in incompatible ways (move
and prune it, two positions, two types, two parents) are refused, naming both flags; fixes that
agree but overlap (two prunes of one branch) go through, the later one reported as skipped.

Node ids are kept (the review, the log and the markers name nodes by their ids); the file is
renumbered 1..N depth-first only when an edit puts a parent after its child in a file that had
every parent first (a bridge re-roots a fragment), or an accepted fix asks for it (``reindex``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io.points import Point
from ..io.swc import read_swc
from ..morphology import graph
from ..morphology.neuron import Neuron
from ..qc.findings import Fix
from ..qc.fixes import Edit, FixError, FixOutputs, apply_fix, check_outputs, output_paths, reindex, write_outputs
from .flags import Flag, describe_fix
from .session import ReviewError, ReviewSession

__all__ = ["ApplyResult", "apply_review", "MARK_COLOR"]

#: Colour of the ``.apo`` markers of nodes marked as errors (edits use the colours of ``fix``).
MARK_COLOR = (255, 255, 0)
# Structural repairs first (as ``fix`` orders them), moves and relabels next, prunes last: an
# earlier prune would otherwise remove nodes a later accepted move names.
_ACTION_ORDER = ("drop_duplicate", "renumber", "cut", "bridge", "merge", "delete", "relabel", "move", "prune")


@dataclass
class ApplyResult:
    """What :func:`apply_review` did.

    Attributes
    ----------
    neuron : Neuron
        The corrected trace.
    edits : list of Edit
        As written to the edit log.
    paths : FixOutputs
        The SWC, edit log and ``.apo`` written.
    summary : dict
        :meth:`ReviewSession.summary` (flags, accept, reject, error, undecided, seconds).
    marked : list of (Flag, str)
        Nodes marked as errors, with the reviewer's note.
    skipped : list of (Flag, str)
        Accepted fixes that could not be carried out, and why.
    """

    neuron: Neuron
    edits: list[Edit]
    paths: FixOutputs
    summary: dict
    marked: list = field(default_factory=list)
    skipped: list = field(default_factory=list)


def apply_review(trace: str | os.PathLike, review: str | os.PathLike, out: str | os.PathLike, *,
                 overwrite: bool = False) -> ApplyResult:
    """Apply the accepted fixes of ``review`` to ``trace`` and write ``out`` (+ log, markers).

    Parameters
    ----------
    trace : path-like
        The SWC that was reviewed (its content must match the review's hash).
    review : path-like
        REVIEW.json from ``neurorecon review``.
    out : path-like
        The corrected SWC; ``<out>.edits.json`` and ``<out>.apo`` go beside it.
    overwrite : bool
        Allow replacing existing outputs (and the inputs, if ``out`` names one).

    Returns
    -------
    ApplyResult

    Raises
    ------
    ReviewError
        Malformed review, a trace other than the reviewed one, an accepted fix that is not a
        fix (unknown action, missing parameter), or two accepted fixes that contradict each other
        on a node (nothing is written then).
    FixError
        An output exists and ``overwrite`` is False.
    """
    session = ReviewSession.load(review, trace)
    paths = output_paths(out)
    check_outputs(paths, [trace, review], overwrite)
    neuron = read_swc(trace)
    n_in = neuron.n_nodes
    decided = session.decisions()
    accepted = [f for f in session.flags if f.key in decided and decided[f.key].decision == "accept" and f.fix]
    _refuse_contradictions(neuron, accepted, Path(review))
    was_ordered = _parents_first(neuron)
    neuron, edits, skipped, renumber = _apply_fixes(neuron, accepted, Path(review))
    if renumber or (was_ordered and not _parents_first(neuron)):
        neuron = reindex(neuron, edits)
    marked = [(f, decided[f.key].note) for f in session.flags if f.key in decided and decided[f.key].decision == "error"]
    summary = session.summary()
    log = {"input": str(trace), "output": str(paths.swc), "review": str(review), "n_nodes_in": n_in,
           "n_nodes_out": neuron.n_nodes, "summary": summary,
           "skipped": [{"flag": f.key, "fix": f.fix, "why": why} for f, why in skipped],
           "marked": [{"flag": f.key, "node_id": f.node_id, "xyz": list(f.xyz), "check": f.check, "note": note}
                      for f, note in marked]}
    write_outputs(paths, neuron, edits, log, [_marker(f, note) for f, note in marked])
    return ApplyResult(neuron, edits, paths, summary, marked, skipped)


def _apply_fixes(neuron: Neuron, accepted: list[Flag], review: Path):
    edits: list[Edit] = []
    skipped: list[tuple[Flag, str]] = []
    renumber = False
    rank = {a: k for k, a in enumerate(_ACTION_ORDER)}
    for f in sorted(accepted, key=lambda f: rank.get(f.fix["action"], len(rank))):   # stable: review order within
        if f.fix["action"] == "reindex":
            renumber = True
            continue
        why = f"{f.reason} (accepted in review: {describe_fix(f.fix)})"
        try:
            steps = _steps(f.fix)
            missed = 0
            for fix in steps:
                neuron, done = apply_fix(neuron, fix, f.check, why, edits)
                missed += not done
        except (FixError, ReviewError) as e:
            raise ReviewError(f"{review}: flag {f.key}: {e}") from None
        if missed:
            skipped.append((f, "the nodes it names are gone or changed (an earlier accepted fix)"
                            if missed == len(steps) else f"{missed} of its {len(steps)} nodes are gone or changed"))
    return neuron, edits, skipped, renumber


def _steps(fix: dict) -> list[Fix]:
    """The ``neurorecon fix`` edits of one accepted fix (a site's move names several nodes)."""
    if fix["action"] == "move" and "node_ids" in fix:
        ids, xyz = fix["node_ids"], fix.get("xyz")
        if not (isinstance(ids, list) and isinstance(xyz, list) and len(ids) == len(xyz)
                and all(isinstance(p, list) and len(p) == 3 for p in xyz)):
            raise ReviewError("fix 'move' of several nodes needs node_ids and one [x, y, z] per node")
        return [Fix("move", {"node_id": i, "xyz": p}) for i, p in zip(ids, xyz)]
    return [Fix(fix["action"], {k: v for k, v in fix.items() if k != "action"})]


# ------------------------------------------------------------------------------- contradictions
def _refuse_contradictions(neuron: Neuron, accepted: list[Flag], review: Path) -> None:
    """Raise :class:`ReviewError` naming two accepted flags that change one node in incompatible
    ways (move it and prune it, move it to two places, give it two types or two parents)."""
    seen: dict[int, tuple[Flag, str, object]] = {}
    for f in accepted:
        try:
            effects = _effects(neuron, f.fix)
        except ReviewError as e:
            raise ReviewError(f"{review}: flag {f.key}: {e}") from None
        for row, kind, value in effects:
            if row not in seen:
                seen[row] = (f, kind, value)
                continue
            g, k2, v2 = seen[row]
            if g is f or (kind == k2 and (kind == "gone" or value == v2)):
                continue
            what = (f"{_WORDS[k2]} and {_WORDS[kind]}" if kind != k2 else f"{_WORDS[kind]} twice, differently")
            raise ReviewError(f"{review}: accepted flags {g.key} ({describe_fix(g.fix, neuron)}) and {f.key} "
                              f"({describe_fix(f.fix, neuron)}) contradict each other at node {int(neuron.ids[row])} "
                              f"({what}); reject one of them in `neurorecon review` and apply again")


_WORDS = {"xyz": "move it", "type": "relabel it", "parent": "reconnect it", "gone": "remove it"}


def _effects(neuron: Neuron, fix: dict) -> list[tuple[int, str, object]]:
    """(row, what changes, to what) for every node ``fix`` changes, on the reviewed trace."""
    a = fix.get("action")
    try:
        if a == "move":
            steps = _steps(fix)
            rows = neuron.index_of([int(m.params["node_id"]) for m in steps])
            return [(int(r), "xyz", tuple(np.round(m.params["xyz"], 4))) for r, m in zip(rows, steps) if r >= 0]
        if a == "relabel":
            return [(int(r), "type", int(fix["type"])) for r in neuron.index_of(fix["node_ids"]) if r >= 0]
        row = int(neuron.index_of([int(fix["node_id"])])[0]) if "node_id" in fix else -1
        if row < 0:
            return []
        if a == "prune":
            return [(int(r), "gone", None) for r in np.flatnonzero(graph.subtree_mask(neuron.parent, row))]
        if a in ("delete", "merge"):
            return [(row, "gone", None)]
        if a in ("bridge", "cut"):
            return [(row, "parent", int(fix.get("parent_id", -1)))]
    except (KeyError, TypeError, ValueError) as e:
        raise ReviewError(f"fix {a!r}: bad or missing parameter {e}") from None
    return []


def _parents_first(n: Neuron) -> bool:
    return not bool(np.any(n.parent > np.arange(len(n))))


def _marker(f: Flag, note: str) -> Point:
    x, y, z = f.xyz
    return Point(x, y, z, name=f"error:{f.check}", comment=f"node {f.node_id}: {note}", color=MARK_COLOR)
