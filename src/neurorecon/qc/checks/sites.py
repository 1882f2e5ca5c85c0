"""Findings per defect site, and one file-level finding where a check fires on much of a file.

A connected run of nodes with the same problem (five 5 µm edges in a row, a stretch that turns
back on itself) is one defect, so it is one finding listing its nodes. A check that fires on a
large share of what it inspects has found how the file was made (resampling, z sampling, a
tracer's habit), not a defect at each place: it reports that once, naming the cause.

A file-level finding lists every node it concerns (so that JSON readers and the detector's
per-node check hits keep them, and the viewer can go to the first) and has no fix; its message
starts with ``file-level:``.
"""

from __future__ import annotations

import numpy as np

from ...morphology import graph
from ..context import unique
from ..findings import Finding, make_finding


def edge_runs(parent: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """``rows`` (child rows of flagged edges) grouped into runs connected along the tree.

    Each run lists its top edge (the one nearest the root) first."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return []
    label = np.full(len(parent), -1)
    label[rows] = 0
    top = graph.run_tops(parent, label)[rows]
    order = np.lexsort((rows, rows != top, top))
    cut = np.flatnonzero(np.diff(top[order])) + 1
    return np.split(rows[order], cut)


def flood(check: str, severity, neuron, sites: list[np.ndarray], n_inspected: int, share: float,
          min_sites: int, cause: str) -> list[Finding] | None:
    """One file-level finding if ``sites`` cover more than ``share`` of the ``n_inspected`` items
    and number more than ``min_sites``; else None (the caller reports the sites one by one).

    ``cause`` names what the flood says about the file, e.g. ``"sparse z sampling"``."""
    hit = sum(len(s) for s in sites)
    if len(sites) <= min_sites or n_inspected == 0 or hit <= share * n_inspected:
        return None
    rows = unique(np.concatenate(sites))
    msg = (f"file-level: {cause}: {hit} of {n_inspected} ({100 * hit / n_inspected:.0f}%) at {len(sites)} places, "
           f"first at node {neuron.ids[rows[0]]}; reported once for the whole file")
    return [make_finding(check, severity, neuron, rows, msg)]


def node_list(neuron, rows: np.ndarray, k: int = 3) -> str:
    """``"12, 13, 14 (+5 more)"``: the first ``k`` ids of ``rows`` for a message."""
    ids = neuron.ids[rows[:k]].tolist()
    more = f" (+{len(rows) - k} more)" if len(rows) > k else ""
    return ", ".join(map(str, ids)) + more
