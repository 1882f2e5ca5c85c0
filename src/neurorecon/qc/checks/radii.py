"""Radius checks and the relation of neurites to the soma (NeuroM's rules and defaults)."""

from __future__ import annotations

import numpy as np

from ...morphology import graph, types as T
from ..findings import Severity, make_finding
from . import check
from .layout import LAYOUT, tree_position_labels

W, I = Severity.WARNING, Severity.INFO


@check("nonpositive_radius", W, "a radius <= min_radius (default 0)")
def nonpositive_radius(ctx):
    n = ctx.neuron
    rows = np.flatnonzero(n.radius <= ctx.th.min_radius)
    if len(rows) == 0:
        return []
    return [make_finding("nonpositive_radius", W, n, rows, f"{len(rows)} node(s) with radius <= {ctx.th.min_radius:g}")]


@check("fat_end", W, "a tip at least fat_end_multiple x the mean radius of its last fat_end_points nodes")
def fat_end(ctx):
    n, th = ctx.neuron, ctx.th
    tips = np.flatnonzero((n.n_children == 0) & ~ctx.is_soma & (ctx.parent >= 0))
    if len(tips) == 0:
        return []
    anc = graph.ancestors(ctx.parent, tips, th.fat_end_points - 1)
    same = (anc >= 0) & (ctx.section[np.maximum(anc, 0)] == ctx.section[tips][:, None]) & ~ctx.is_soma[np.maximum(anc, 0)]
    r = np.where(same, n.radius[np.maximum(anc, 0)], 0.0)
    mean = r.sum(axis=1) / same.sum(axis=1)
    bad = (same.sum(axis=1) >= 2) & (mean * th.fat_end_multiple <= n.radius[tips])
    if bad.any() and tree_position_labels(ctx):
        # Radii measured from a segmentation's mask swell at boutons and cut ends.
        return [make_finding("fat_end", I, n, tips[bad], f"file-level: {int(bad.sum())} of {len(tips)} tips at least "
                             f"{th.fat_end_multiple:g}x the mean radius of their last nodes, radii measured from the "
                             f"mask ({LAYOUT}); reported once for the whole file")]
    return [make_finding("fat_end", W, n, t, f"tip {n.ids[t]} has radius {n.radius[t]:.3g}, >= {th.fat_end_multiple:g}x the mean {m:.3g} of its last nodes") for t, m in zip(tips[bad].tolist(), mean[bad].tolist())]


def _first_child(ctx, rows: np.ndarray) -> np.ndarray:
    """First non-soma child of each row (-1 if none): the next node along the neurite. A soma
    node hanging from a neurite (soma_not_root) is not part of that neurite."""
    parent = np.where(ctx.is_soma, -1, ctx.parent)
    offsets, children = graph.children_csr(parent)
    has = offsets[rows + 1] > offsets[rows]
    out = np.full(len(rows), -1)
    out[has] = children[offsets[rows[has]]]
    return out


@check("narrow_start", W, "a neurite whose first node is narrower than narrow_start_fraction x the next")
def narrow_start(ctx):
    n = ctx.neuron
    roots = ctx.neurite_roots
    # A tree's root with the soma further down that tree is an end of a neurite, not its start;
    # so is any root of a skeleton made from a segmentation (rooted where skeletonisation began).
    top = ctx.parent[roots] < 0
    if not tree_position_labels(ctx):
        top &= np.isin(roots, ctx.root_of[ctx.soma_rows[ctx.parent[ctx.soma_rows] >= 0]])
    roots = roots[~top]
    nxt = _first_child(ctx, roots)
    ok = nxt >= 0
    roots, nxt = roots[ok], nxt[ok]
    bad = n.radius[roots] < ctx.th.narrow_start_fraction * n.radius[nxt]
    return [make_finding("narrow_start", W, n, [r, c], f"neurite starts at node {n.ids[r]} with radius {n.radius[r]:.3g}, narrower than the next node ({n.radius[c]:.3g})") for r, c in zip(roots[bad].tolist(), nxt[bad].tolist())]


def _dangling(ctx) -> tuple[np.ndarray, np.ndarray]:
    """Neurite roots starting more than dangling_distance beyond the soma, and by how much."""
    n = ctx.neuron
    soma_xyz = n.xyz[ctx.soma_rows]
    centre = soma_xyz.mean(axis=0)
    # A one-node soma reaches as far as its radius (for a marker: as far as its neurites start).
    extent = max(np.linalg.norm(soma_xyz - centre, axis=1).max(), ctx.soma_reach)
    roots = ctx.neurite_roots
    # The root of the soma's own tree is not a neurite leaving the soma: a skeleton rooted away
    # from its soma (FlyEM) is reported by soma_not_root.
    soma_trees = ctx.root_of[ctx.soma_rows[ctx.rooted[ctx.soma_rows]]]
    roots = roots[~((ctx.parent[roots] < 0) & np.isin(roots, soma_trees))]
    beyond = np.linalg.norm(n.xyz[roots] - centre, axis=1) - extent
    far = beyond > ctx.th.dangling_distance
    roots, beyond = roots[far], beyond[far]
    dend = np.flatnonzero(np.isin(n.types, (T.BASAL_DENDRITE, T.APICAL_DENDRITE)))
    keep = np.ones(len(roots), bool)
    for k, r in enumerate(roots.tolist()):
        if n.types[r] == T.AXON and len(dend):
            # NeuroM: an axon may start on a dendrite (axon-carrying dendrite) without dangling.
            gap = np.linalg.norm(n.xyz[dend] - n.xyz[r], axis=1)
            keep[k] = not np.any(gap < 2 * n.radius[dend] + 2)
    return roots[keep], beyond[keep]


@check("root_node_jump", W, "a neurite attached to the soma that starts beyond root_jump_multiplier x soma radius")
def root_node_jump(ctx):
    n = ctx.neuron
    if ctx.soma_center is None:
        return []
    roots = ctx.neurite_roots
    roots = roots[ctx.parent[roots] >= 0]
    # A neurite that dangles is reported as dangling_neurite only: one finding per site.
    roots = roots[~np.isin(roots, ctx.cached("dangling", lambda: _dangling(ctx))[0])]
    dist = np.linalg.norm(n.xyz[roots] - ctx.soma_center, axis=1)
    limit = ctx.th.root_jump_multiplier * ctx.soma_reach
    bad = dist > limit
    return [make_finding("root_node_jump", W, n, [r, ctx.parent[r]], f"neurite at node {n.ids[r]} starts {d:.3g} from the soma centre (limit {limit:.3g})") for r, d in zip(roots[bad].tolist(), dist[bad].tolist())]


@check("dangling_neurite", W, "a neurite starting more than dangling_distance outside the soma (NeuroM rule)")
def dangling_neurite(ctx):
    n = ctx.neuron
    if ctx.soma_center is None:
        return []
    roots, beyond = ctx.cached("dangling", lambda: _dangling(ctx))
    return [make_finding("dangling_neurite", W, n, r, f"neurite at node {n.ids[r]} starts {b:.3g} beyond the soma surface (limit {ctx.th.dangling_distance:g})")
            for r, b in zip(roots.tolist(), beyond.tolist())]
