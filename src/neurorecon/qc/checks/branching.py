"""Branching checks: more than two children, and bifurcations crowded together."""

from __future__ import annotations

import numpy as np

from ..findings import Severity, make_finding
from . import check

W = Severity.WARNING


@check("multifurcation", W, "a node outside the soma with more than two children")
def multifurcation(ctx):
    n = ctx.neuron
    rows = np.flatnonzero((n.n_children > 2) & ~ctx.is_soma)
    return [make_finding("multifurcation", W, n, r, f"node {n.ids[r]} has {n.n_children[r]} children") for r in rows.tolist()]


@check("near_bifurcation", W, "two bifurcations closer than near_bifurcation_distance along the branch")
def near_bifurcation(ctx):
    n, p = ctx.neuron, ctx.parent
    branch = (n.n_children >= 2) & ~ctx.is_soma & ctx.rooted
    rows = np.flatnonzero(branch)
    prev = p[ctx.section[rows]]  # the branch point this node's section grows from
    ok = prev >= 0
    rows, prev = rows[ok], prev[ok]
    ok = branch[prev]
    rows, prev = rows[ok], prev[ok]
    gap = ctx.path_length[rows] - ctx.path_length[prev]
    close = gap < ctx.th.near_bifurcation_distance
    return [
        make_finding("near_bifurcation", W, n, [a, b], f"bifurcations at nodes {n.ids[b]} and {n.ids[a]} are only {g:.3g} apart")
        for a, b, g in zip(rows[close].tolist(), prev[close].tolist(), gap[close].tolist())
    ]
