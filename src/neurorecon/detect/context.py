"""Second look: each node's first score seen together with the scores around it in the tree.

Most errors are runs, and a run is often obvious at one end only: a trace that jumped onto a
neighbouring fibre ends where that fibre goes on (a clear "early stop"), while its nodes near the
turn look like any good node; the new nodes of a loop are clearest where they cross background.
The first model scores each node from its own neighbourhood; the context model then reads the
strongest first scores up and down the tree within 2-20 hops, over the node's unbranched section
and at the section's tip, and decides again. It is trained on out-of-fold first scores, so that it
learns how far the first model can be trusted on data it has not seen.
"""

from __future__ import annotations

import numpy as np

from ..morphology import graph

HOPS = (2, 5, 10, 20)
#: Columns of :func:`context_features`, in order.
NAMES = ("logit", *(f"{d}{k}" for k in HOPS for d in ("up", "down")), "up10_hops",
         "sec_max", "sec_mean", "sec_tip", "sec_start_parent", "sec_pos", "sec_len")
_NONE = -20.0     # logit where there is nothing to look at (above a root, below a tip)


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


def context_features(parent: np.ndarray, p: np.ndarray, sec_pos: np.ndarray, sec_len: np.ndarray) -> np.ndarray:
    """(N, len(NAMES)) float32 table of the first scores ``p`` around each node.

    ``parent`` holds parent rows (-1 at roots) of a forest; every column is computed for all nodes
    at once. ``up{k}``/``down{k}``: the largest logit among the node and its ancestors /
    descendants at most k hops away; ``up10_hops``: how far up the largest of the 10 is;
    ``sec_*``: over the node's unbranched section (``sec_tip`` is the tip's logit where the section
    ends in one, ``sec_start_parent`` the branch point it leaves from). ``sec_pos`` and
    ``sec_len`` (µm along the section, capped; the feature table's columns of the same names) are
    passed through."""
    parent = np.asarray(parent, dtype=np.int64)
    n = len(parent)
    lp = logit(p)
    cols = {"logit": lp}
    anc = graph.ancestors(parent, np.arange(n), max(HOPS))
    up = np.where(anc >= 0, lp[np.maximum(anc, 0)], _NONE)
    down = _down_max(parent, lp, HOPS)
    for k in HOPS:
        cols[f"up{k}"] = up[:, :k + 1].max(1)
        cols[f"down{k}"] = down[k]
    cols["up10_hops"] = up[:, 1:11].argmax(1) + 1 if n else np.zeros(0)
    cols.update(_section(parent, lp), sec_pos=sec_pos, sec_len=sec_len)
    return np.stack([np.asarray(cols[k], dtype=np.float32) for k in NAMES], axis=1) if n else \
        np.zeros((0, len(NAMES)), np.float32)


def _down_max(parent: np.ndarray, v: np.ndarray, hops: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Largest ``v`` over each node and its descendants within k hops, for every k in ``hops``:
    one pass per hop, each a segmented maximum over children grouped by parent."""
    child = np.flatnonzero(parent >= 0)
    child = child[np.argsort(parent[child], kind="stable")]
    owners, starts = np.unique(parent[child], return_index=True)
    m = v.copy()
    out = {}
    for k in range(1, max(hops) + 1):
        best = np.maximum.reduceat(m[child], starts) if len(child) else np.zeros(0)
        m = m.copy()
        m[owners] = np.maximum(m[owners], best)
        if k in hops:
            out[k] = m
    return out


def _section(parent: np.ndarray, lp: np.ndarray) -> dict:
    n = len(parent)
    nc = graph.child_counts(parent)
    sec = graph.section_ids(parent, nc)
    size = np.bincount(sec, minlength=n)
    smax = np.full(n, -np.inf)
    np.maximum.at(smax, sec, lp)
    tip = np.full(n, _NONE)
    ends = nc == 0
    tip[sec[ends]] = lp[ends]            # a section holds at most one tip
    start_parent = parent[sec]
    return {"sec_max": smax[sec], "sec_mean": (np.bincount(sec, weights=lp, minlength=n) / np.maximum(size, 1))[sec],
            "sec_tip": tip[sec], "sec_start_parent": np.where(start_parent >= 0, lp[np.maximum(start_parent, 0)], _NONE)}
