"""Proposed corrections for flagged nodes, in the fix vocabulary of :mod:`neurorecon.qc.fixes`.

Conservative by design: a proposal is made only where the image backs it, and a person accepts it
(``review``) before ``apply`` carries it out.

* ``off_signal_z`` / ``off_signal_xy``: ``move`` the node onto the fibre's intensity ridge found
  across the fibre (sub-µm), when that ridge is bright enough to be fibre (>= 0.5 contrast).
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

RIDGE_MIN = 0.5
BRIDGE_MAX_UM = 20.0
PRUNE_REASONS = ("spur", "overextension", "jump", "loop")
PRUNE_MIN_P = 0.8       # cutting is the least reversible proposal: ask for more certainty
PRUNE_MAX_NODES = 20


def propose(neuron: Neuron, flagged: np.ndarray, reason: np.ndarray, snap: np.ndarray, ridge: np.ndarray,
            sample_line, p: np.ndarray | None = None) -> list[Fix | None]:
    """One proposal (or None) per node; ``snap`` is the ridge offset (µm), ``ridge`` its normalised
    height, ``sample_line(a, b)`` the normalised minimum intensity along straight segments a->b."""
    n = len(neuron)
    out: list[Fix | None] = [None] * n
    parent = neuron.parent
    ids = neuron.ids
    rows = np.flatnonzero(flagged)
    for kind in ("off_signal_z", "off_signal_xy"):
        m = rows[(reason[rows] == kind) & (ridge[rows] >= RIDGE_MIN)]
        new = neuron.xyz[m] + snap[m]
        for r, pos in zip(m.tolist(), new.round(4).tolist()):
            out[r] = Fix("move", {"node_id": int(ids[r]), "xyz": pos})
    prune_rows = rows[np.isin(reason[rows], PRUNE_REASONS)]
    if len(prune_rows):
        sure = flagged if p is None else flagged & (p >= PRUNE_MIN_P)
        for r, top in _prune_tops(parent, sure, prune_rows[sure[prune_rows]]).items():
            out[r] = Fix("prune", {"node_id": int(ids[top])})
    wt = rows[reason[rows] == "wrong_type"]
    if len(wt):
        anchor = graph.nearest_marked_ancestor(parent, ~flagged)
        for r in wt.tolist():
            a = anchor[r]
            src = a if not flagged[a] else -1
            if src >= 0 and neuron.types[src] != neuron.types[r]:
                out[r] = Fix("relabel", {"node_ids": [int(ids[r])], "type": int(neuron.types[src])})
    gaps = rows[(reason[rows] == "gap") & (parent[rows] < 0)]
    for r, target in _bridges(neuron, gaps, sample_line).items():
        out[r] = Fix("bridge", {"node_id": int(ids[r]), "parent_id": int(ids[target])})
    return out


def _prune_tops(parent: np.ndarray, flagged: np.ndarray, rows: np.ndarray) -> dict:
    """For each row, the first flagged node of its flagged stretch, if nothing below it is unflagged."""
    # A flagged node with an unflagged node below it (within 64 hops) must not be pruned.
    unflagged = np.flatnonzero(~flagged & (parent >= 0))
    above = graph.ancestors(parent, unflagged, 64)[:, 1:].ravel()
    above = above[above >= 0]
    has_unflagged_below = np.zeros(len(parent), bool)
    has_unflagged_below[above[flagged[above]]] = True
    out = {}
    for r, chain in zip(rows.tolist(), graph.ancestors(parent, rows, 64)):
        chain = chain[chain >= 0]
        k = np.flatnonzero(~flagged[chain])
        if len(k) == 0:
            continue          # the whole piece up to its root is flagged: not a stretch to cut off
        head = int(chain[k[0] - 1])
        if not has_unflagged_below[head] and k[0] <= PRUNE_MAX_NODES:
            out[r] = head
    return out


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
