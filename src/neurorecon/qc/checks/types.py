"""Type checks: node types that are unknown, switch mid-branch, contradict their parent, and the soma."""

from __future__ import annotations

import numpy as np

from ...morphology import graph, types as T
from ..context import unique
from ..findings import Fix, Severity, make_finding
from . import check
from .layout import LAYOUT, tree_position_labels

E, W, I = Severity.ERROR, Severity.WARNING, Severity.INFO

#: Allowed parent types per child type (Allen neuron_morphology type validation): an axon may
#: leave the soma, the axon or a basal dendrite (axon-carrying dendrites); dendrites only their own
#: kind or the soma. Types not listed here (custom 7+) are not constrained.
ALLOWED_PARENTS = {
    T.AXON: (T.SOMA, T.AXON, T.BASAL_DENDRITE),
    T.BASAL_DENDRITE: (T.SOMA, T.BASAL_DENDRITE),
    T.APICAL_DENDRITE: (T.SOMA, T.APICAL_DENDRITE),
}


@check("undefined_type", W, "a node type outside known_types (type 0 is 'undefined')")
def undefined_type(ctx):
    n = ctx.neuron
    bad = ~np.isin(n.types, ctx.th.known_types)
    if tree_position_labels(ctx) and bad.any():
        rows = np.flatnonzero(bad)
        return [make_finding("undefined_type", I, n, rows, f"file-level: {len(rows)} node(s) of {T.type_name(0)} type: the "
                             f"types label tree positions, not compartments ({LAYOUT}); reported once for the whole file")]
    out = []
    for t in unique(n.types[bad]).tolist():
        rows = np.flatnonzero(n.types == t)
        out.append(make_finding("undefined_type", W, n, rows, f"{len(rows)} node(s) of {T.type_name(t)} (known types: {', '.join(map(str, ctx.th.known_types))})"))
    return out


def _switch_edges(ctx) -> np.ndarray:
    """Nodes whose compartment type differs from their parent's (both informative)."""
    n, p = ctx.neuron, ctx.parent
    has = (p >= 0) & ctx.informative
    has[has] &= ctx.informative[p[has]] & (n.types[has] != n.types[p[has]])
    return has


@check("type_change", E, "type switches along a branch without a branch point, or twice on a root-to-tip path", fixable=True)
def type_change(ctx):
    n, p = ctx.neuron, ctx.parent
    switch = _switch_edges(ctx)
    mid_branch = switch.copy()
    mid_branch[switch] = n.n_children[p[switch]] == 1
    fixes = _sandwich_relabels(ctx, mid_branch)
    out = []
    for r in np.flatnonzero(mid_branch).tolist():
        msg = f"type switches from {T.type_name(n.types[p[r]])} to {T.type_name(n.types[r])} at node {n.ids[r]}, which is not a branch point"
        out.append(make_finding("type_change", E, n, [r, p[r]], msg, fixes.get(r)))
    _, n_switches, _ = graph.ancestor_sums(p, switch.astype(float))
    second = switch & ~mid_branch & (n_switches >= 2)
    for r in np.flatnonzero(second).tolist():
        msg = f"type switches a second time on the path from the root (to {T.type_name(n.types[r])} at node {n.ids[r]})"
        out.append(make_finding("type_change", E, n, [r, p[r]], msg))
    return out


def _sandwich_relabels(ctx, mid_branch: np.ndarray) -> dict[int, Fix]:
    """Relabel a short unbranched run whose type differs from the same type on both sides."""
    n, p, th = ctx.neuron, ctx.parent, ctx.th
    starts = np.flatnonzero(mid_branch)
    fixes = {}
    for s in starts.tolist():
        t_run, t_out = int(n.types[s]), int(n.types[p[s]])
        run = [s]
        node = s
        while len(run) <= th.relabel_max_nodes:
            child = ctx.only_child[node]
            if child < 0 or n.types[child] != t_run:
                break
            run.append(int(child))
            node = child
        child = ctx.only_child[node]
        if len(run) <= th.relabel_max_nodes and child >= 0 and n.types[child] == t_out:
            fixes[s] = Fix("relabel", {"node_ids": n.ids[run].tolist(), "type": t_out})
    return fixes


@check("parent_type_violation", E, "a branch whose type may not grow from its parent's type (e.g. basal dendrite from axon)", fixable=True)
def parent_type_violation(ctx):
    n, p = ctx.neuron, ctx.parent
    switch = _switch_edges(ctx)
    at_branch = switch.copy()
    at_branch[switch] = n.n_children[p[switch]] != 1
    subtrees = _Subtrees(ctx, switch)
    out = []
    for r in np.flatnonzero(at_branch).tolist():
        child_t, parent_t = int(n.types[r]), int(n.types[p[r]])
        allowed = ALLOWED_PARENTS.get(child_t)
        if allowed is None or parent_t in allowed:
            continue
        fix = subtrees.relabel(r, parent_t)
        msg = f"{T.type_name(child_t)} branch at node {n.ids[r]} grows from {T.type_name(parent_t)}"
        out.append(make_finding("parent_type_violation", E, n, [r, p[r]], msg, fix))
    return out


class _Subtrees:
    """The part of the tree below each type switch, down to the next switch (one walk for all)."""

    def __init__(self, ctx, switch: np.ndarray):
        self.ctx = ctx
        self.top = graph.nearest_marked_ancestor(ctx.parent, switch)
        self.order = np.argsort(self.top, kind="stable")
        self.sorted_top = self.top[self.order]
        rows = np.flatnonzero(switch)
        # Switches nested below another switch: that one's subtree is not of one type.
        self.has_inner_switch = set(self.top[ctx.parent[rows]].tolist())

    def relabel(self, row: int, new_type: int) -> Fix | None:
        """Relabel the subtree at ``row`` when all of it carries the one wrong type."""
        if row in self.has_inner_switch:
            return None
        n = self.ctx.neuron
        lo, hi = np.searchsorted(self.sorted_top, [row, row + 1])
        sub = self.order[lo:hi]
        informative = sub[self.ctx.informative[sub]]
        if np.all(n.types[informative] == n.types[row]):
            return Fix("relabel", {"node_ids": n.ids[informative].tolist(), "type": int(new_type)})
        return None


@check("no_soma", E, "no node of type 1 (soma)")
def no_soma(ctx):
    n = ctx.neuron
    if len(ctx.soma_rows) or len(n) == 0:
        return []
    r = ctx.main_root if ctx.main_root >= 0 else 0
    return [make_finding("no_soma", E, n, r, "no soma node (type 1) in the reconstruction")]


@check("multiple_somas", E, "soma nodes in more than one separate group")
def multiple_somas(ctx):
    n, p = ctx.neuron, ctx.parent
    rows = ctx.soma_rows
    if len(rows) < 2:
        return []
    soma = ctx.is_soma
    # A soma group starts at a soma node whose parent is missing or not soma.
    start = soma & ~((p >= 0) & soma[np.maximum(p, 0)])
    firsts = np.flatnonzero(start)
    if len(firsts) < 2:
        return []
    return [make_finding("multiple_somas", E, n, firsts, f"{len(firsts)} separate soma groups (starting at nodes {', '.join(map(str, n.ids[firsts][:10].tolist()))})")]


@check("soma_not_root", E, "a soma node whose parent is a neurite node")
def soma_not_root(ctx):
    n, p = ctx.neuron, ctx.parent
    rows = np.flatnonzero(ctx.is_soma & (p >= 0))
    rows = rows[~ctx.is_soma[p[rows]]]
    if len(rows) and tree_position_labels(ctx):
        # The root is where the skeletonisation started: the soma inside the tree is the layout.
        return [make_finding("soma_not_root", I, n, rows, f"file-level: soma node {n.ids[rows[0]]} inside the tree, rooted "
                             f"where the skeletonisation started ({LAYOUT}); reported once for the whole file")]
    return [make_finding("soma_not_root", E, n, [r, p[r]], f"soma node {n.ids[r]} has neurite parent {n.ids[p[r]]} ({T.type_name(n.types[p[r]])})") for r in rows.tolist()]


@check("missing_neurite", I, "a neurite type listed in required_types is absent (NeuroM has_axon etc.)")
def missing_neurite(ctx):
    n = ctx.neuron
    present = set(unique(n.types).tolist())
    missing = [t for t in ctx.th.required_types if t not in present]
    if not missing or len(n) == 0:
        return []
    r = ctx.main_root if ctx.main_root >= 0 else 0
    return [make_finding("missing_neurite", I, n, r, f"no {', '.join(T.type_name(t) for t in missing)} in the reconstruction")]
