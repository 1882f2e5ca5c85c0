"""File and structure checks: what makes the parent pointers not describe a tree."""

from __future__ import annotations

import numpy as np

from ...morphology import graph
from ..context import unique
from ..findings import Finding, Fix, Severity, make_finding
from . import check

E = Severity.ERROR


@check("parse_error", E, "a line that cannot be read as an SWC node")
def parse_error(ctx):
    return [
        Finding("parse_error", E, (), (), f"line {p.line}: {p.message}", None)
        for p in ctx.neuron.parse_problems
    ]


@check("duplicate_id", E, "the same node id on more than one line", fixable=True)
def duplicate_id(ctx):
    n = ctx.neuron
    order = np.argsort(n.ids, kind="stable")
    s = n.ids[order]
    dup = np.flatnonzero(s[1:] == s[:-1]) + 1
    if len(dup) == 0:
        return []
    out = []
    for k in dup.tolist():
        i = int(n.ids[order[k]])
        start = int(np.searchsorted(s, i))  # the id's first line, in file order (stable sort)
        first, row, occurrence = int(order[start]), int(order[k]), k - start
        same = _same_record(n, first, row)
        fix = Fix("drop_duplicate" if same else "renumber", {"node_id": i, "occurrence": occurrence})
        what = "an exact copy of" if same else "different from"
        out.append(make_finding("duplicate_id", E, n, [first, row], f"id {i} appears again (occurrence {occurrence + 1}), {what} the first", fix))
    return out


def _same_record(n, a: int, b: int) -> bool:
    return bool(
        n.types[a] == n.types[b]
        and np.array_equal(n.xyz[a], n.xyz[b])
        and n.radius[a] == n.radius[b]
        and n.parent_ids[a] == n.parent_ids[b]
    )


@check("negative_id", E, "a node id below zero", fixable=True)
def negative_id(ctx):
    rows = np.flatnonzero(ctx.neuron.ids < 0)
    if len(rows) == 0:
        return []
    return [make_finding("negative_id", E, ctx.neuron, rows, f"{len(rows)} node(s) with a negative id; re-indexing gives ids 1..N", Fix("reindex"))]


@check("missing_parent", E, "a parent id that names no node (or is negative but not -1)", fixable=True)
def missing_parent(ctx):
    n = ctx.neuron
    bad = ((n.parent_ids >= 0) & (n.parent < 0)) | (n.parent_ids < -1)
    out = []
    for r in np.flatnonzero(bad).tolist():
        pid = int(n.parent_ids[r])
        why = "is negative but not -1" if pid < -1 else "names no node in the file"
        out.append(make_finding("missing_parent", E, n, r, f"node {n.ids[r]}: parent id {pid} {why}", Fix("cut", {"node_id": int(n.ids[r])})))
    return out


@check("self_parent", E, "a node that is its own parent", fixable=True)
def self_parent(ctx):
    n = ctx.neuron
    rows = np.flatnonzero(n.parent == np.arange(len(n)))
    return [make_finding("self_parent", E, n, r, f"node {n.ids[r]} is its own parent", Fix("cut", {"node_id": int(n.ids[r])})) for r in rows.tolist()]


@check("cycle", E, "parent pointers that loop back (A -> B -> ... -> A)", fixable=True)
def cycle(ctx):
    n = ctx.neuron
    p = ctx.parent
    members = graph.cycle_members(p)
    members = members[p[members] != members]  # self-parents are reported by self_parent
    if len(members) == 0:
        return []
    label = graph.cycle_labels(p, members)
    out = []
    for lab in unique(label):
        rows = members[label == lab]
        weakest = int(rows[np.argmax(n.edge_length[rows])])
        msg = f"{len(rows)} nodes form a cycle of parent pointers; the longest edge ({n.edge_length[weakest]:.3g}) is the least plausible"
        out.append(make_finding("cycle", E, n, rows, msg, Fix("cut", {"node_id": int(n.ids[weakest])})))
    return out
