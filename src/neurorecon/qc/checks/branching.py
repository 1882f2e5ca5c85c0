"""Branching checks: more than two children, and bifurcations crowded together."""

from __future__ import annotations

import numpy as np

from ..findings import Severity, make_finding
from . import check
from .sites import edge_runs, flood, node_list

W = Severity.WARNING


@check("multifurcation", W, "a node outside the soma with more than two children")
def multifurcation(ctx):
    n = ctx.neuron
    rows = np.flatnonzero((n.n_children > 2) & ~ctx.is_soma)
    # Skeletons (FlyEM) branch in threes at one fork in thirty: the skeletoniser's habit, said once.
    forks = int(((n.n_children >= 2) & ~ctx.is_soma).sum())
    whole = flood("multifurcation", W, n, [np.array([r]) for r in rows], forks, ctx.th.flood_share, ctx.th.flood_min_sites,
                  "multifurcations throughout: forks with more than two children")
    if whole is not None:
        return whole
    return [make_finding("multifurcation", W, n, r, f"node {n.ids[r]} has {n.n_children[r]} children") for r in rows.tolist()]


@check("near_bifurcation", W, "two bifurcations closer than near_bifurcation_distance (and near_bifurcation_factor x spacing) along the branch")
def near_bifurcation(ctx):
    n, p, th = ctx.neuron, ctx.parent, ctx.th
    branch = (n.n_children >= 2) & ~ctx.is_soma & ctx.rooted
    rows = np.flatnonzero(branch)
    prev = p[ctx.section[rows]]  # the branch point this node's section grows from
    ok = prev >= 0
    rows, prev = rows[ok], prev[ok]
    ok = branch[prev]
    rows, prev = rows[ok], prev[ok]
    gap = ctx.path_length[rows] - ctx.path_length[prev]
    # A fixed 1.5 um is several node steps in a 0.3 um trace, where forks a few nodes apart are
    # how the tracer resolved them; closer than about one node step is what stands out.
    limit = min(th.near_bifurcation_distance, th.near_bifurcation_factor * ctx.spacing)
    close = gap < limit
    # Forks each close to the one before form one crowded site: group them along the tree of forks.
    fork_parent = np.full(len(n), -1, dtype=np.int64)
    fork_parent[rows] = prev
    sites = edge_runs(fork_parent, rows[close])
    whole = flood("near_bifurcation", W, n, sites, len(rows), th.flood_share, th.flood_min_sites,
                  f"crowded bifurcations: forks closer than {limit:.3g} to the previous fork")
    if whole is not None:
        return whole
    g = dict(zip(rows.tolist(), gap.tolist()))
    out = []
    for s in sites:
        top = fork_parent[s[0]]
        if len(s) == 1:
            msg = f"bifurcations at nodes {n.ids[top]} and {n.ids[s[0]]} are only {g[int(s[0])]:.3g} apart"
        else:
            msg = f"{len(s) + 1} bifurcations from node {n.ids[top]} on follow each other within {limit:.3g} (nodes {node_list(n, s)})"
        out.append(make_finding("near_bifurcation", W, n, np.append(s, top), msg))
    return out
