"""Proposed corrections for flagged nodes, in the fix vocabulary of :mod:`neurorecon.qc.fixes`.

Conservative by design: a proposal is made only where the image backs it, and a person accepts it
(``review``) before ``apply`` carries it out.

* ``off_signal_z`` / ``off_signal_xy``: ``move`` the node onto its fibre's centre, found on the raw
  voxels by :mod:`neurorecon.detect.refine` (sub-µm), only where that fibre is unambiguous and the move
  brings the node back towards the unflagged nodes around its run.
* ``spur`` / ``overextension`` / ``jump`` / ``loop``: ``prune`` the flagged stretch from its first
  flagged node, only if everything below that node is flagged too (nothing unflagged is cut).
* ``gap``: ``bridge`` a fragment's root to the nearest open end of another piece within 20 µm,
  when the straight line between them runs on signal.
* ``wrong_type``: ``relabel`` the node to the type of the nearest unflagged node above it.
* ``early_stop``: no proposal (continuing a trace is tracing, left to the person).
"""

from __future__ import annotations

import numpy as np

from ..morphology import graph
from ..morphology.neuron import Neuron
from ..qc.findings import Fix

BRIDGE_MAX_UM = 20.0
PRUNE_REASONS = ("spur", "overextension", "jump", "loop")
PRUNE_MIN_P = 0.8       # cutting is the least reversible proposal: ask for more certainty
PRUNE_MAX_NODES = 20


def propose(neuron: Neuron, p: np.ndarray, flagged: np.ndarray, reason: np.ndarray, move_offset: np.ndarray,
            move_ok: np.ndarray, sample_line) -> list[Fix | None]:
    """One proposal (or None) per node.

    ``move_offset`` (N, 3) µm goes from each node to where it should move and ``move_ok`` (N,) says
    where that move is backed by the image (see :func:`neurorecon.detect.refine.refine_moves`; flagged
    off-signal nodes without it get no proposal); ``sample_line(a, b)`` is the normalised minimum
    intensity along straight segments a -> b."""
    out: list[Fix | None] = [None] * len(neuron)
    parent = neuron.parent
    ids = neuron.ids
    rows = np.flatnonzero(flagged)
    ok = np.asarray(move_ok, dtype=bool)
    moves = rows[np.isin(reason[rows], ("off_signal_z", "off_signal_xy")) & ok[rows]]
    for r, pos in zip(moves.tolist(), (neuron.xyz[moves] + move_offset[moves]).round(4).tolist()):
        out[r] = Fix("move", {"node_id": int(ids[r]), "xyz": pos})
    sure = flagged & (p >= PRUNE_MIN_P)
    prune_rows = rows[np.isin(reason[rows], PRUNE_REASONS) & sure[rows]]
    for r, head in zip(prune_rows.tolist(), _prune_heads(parent, flagged, prune_rows).tolist()):
        if head >= 0 and sure[head]:
            out[r] = Fix("prune", {"node_id": int(ids[head])})
    wt = rows[reason[rows] == "wrong_type"]
    anchor = graph.nearest_marked_ancestor(parent, ~flagged)[wt]   # the first unflagged node above
    ok = ~flagged[anchor] & (neuron.types[anchor] != neuron.types[wt])
    for r, a in zip(wt[ok].tolist(), anchor[ok].tolist()):
        out[r] = Fix("relabel", {"node_ids": [int(ids[r])], "type": int(neuron.types[a])})
    gaps = rows[(reason[rows] == "gap") & (parent[rows] < 0)]
    for r, target in _bridges(neuron, gaps, sample_line).items():
        out[r] = Fix("bridge", {"node_id": int(ids[r]), "parent_id": int(ids[target])})
    return out


def _prune_heads(parent: np.ndarray, flagged: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each row, the first node of its flagged stretch (whose parent is unflagged), or -1 when
    that stretch has an unflagged node below it, reaches the root, or is over PRUNE_MAX_NODES long."""
    has_p = parent >= 0
    starts = flagged & has_p
    starts[has_p] &= ~flagged[parent[has_p]]
    head = graph.nearest_marked_ancestor(parent, starts | ~flagged)[rows]
    _, depth, _ = graph.ancestor_sums(parent)
    unflagged_below = graph.subtree_sums(parent, ~flagged)
    ok = starts[head] & (unflagged_below[head] == 0) & (depth[rows] - depth[head] < PRUNE_MAX_NODES)
    return np.where(ok, head, -1)


def _bridges(neuron: Neuron, roots: np.ndarray, sample_line) -> dict:
    """Each gap root's partner: the nearest tip of another piece within BRIDGE_MAX_UM on signal."""
    if len(roots) == 0:
        return {}
    parent = neuron.parent
    comp, _, _ = graph.ancestor_sums(parent)
    nc = neuron.n_children
    ends = np.flatnonzero((nc == 0) & (parent >= 0))
    out = {}
    for r in roots.tolist():
        cand = ends[comp[ends] != comp[r]]
        if len(cand) == 0:
            continue
        d = np.linalg.norm(neuron.xyz[cand] - neuron.xyz[r], axis=1)
        ok = d <= BRIDGE_MAX_UM
        if not ok.any():
            continue
        cand, d = cand[ok], d[ok]
        order = np.argsort(d)[:3]
        line = sample_line(np.repeat(neuron.xyz[r][None], len(order), 0), neuron.xyz[cand[order]])
        good = np.flatnonzero(line >= 0.35)
        if len(good):
            out[r] = int(cand[order[good[0]]])
    return out
