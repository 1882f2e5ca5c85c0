"""Gaps, loops and geometry: where the trace leaves the fibre or doubles up on itself."""

from __future__ import annotations

import numpy as np

from ...morphology import graph
from ...morphology.spatial import close_pairs_by_rows, cross_pairs, cross_pairs_by_rows
from ..findings import Fix, Severity, make_finding
from . import check
from ..context import median, percentile, row_medians, unique
from .sites import edge_runs, flood

E, W = Severity.ERROR, Severity.WARNING


# ------------------------------------------------------------------------------------- gaps
@check("fragment", E, "a tree not connected to the soma tree (a gap)", fixable=True)
def fragment(ctx):
    n = ctx.neuron
    roots = n.roots
    if len(roots) <= 1 or ctx.main_root < 0:
        return []
    others = roots[roots != ctx.main_root]
    sizes = np.bincount(ctx.root_of[ctx.rooted], minlength=len(n))
    bridges = propose_bridges(ctx, others)
    out = []
    for r in others.tolist():
        b = bridges.get(r)
        fix = None
        where = ""
        if b is not None:
            end, target, dist = b
            fix = Fix("bridge", {"node_id": int(n.ids[end]), "parent_id": int(n.ids[target])})
            where = f"; bridge of {dist:.3g} from node {n.ids[end]} to node {n.ids[target]} proposed"
        msg = f"tree of {sizes[r]} node(s) rooted at node {n.ids[r]} is not connected to the soma tree{where}"
        out.append(make_finding("fragment", E, n, r, msg, fix))
    return out


def _fragment_ends(ctx, fragment_roots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Open ends of the given fragments (their root if unbranched there, and their tips), with
    the unit direction in which the fragment points out of each end (zero if undefined)."""
    n, p = ctx.neuron, ctx.parent
    in_frag = ctx.rooted & np.isin(ctx.root_of, fragment_roots)
    tips = np.flatnonzero(in_frag & (n.n_children == 0) & (p >= 0))
    root_ends = fragment_roots[n.n_children[fragment_roots] <= 1]
    ends = np.concatenate([root_ends, tips])
    inward = np.full(len(ends), -1)
    inward[: len(root_ends)] = ctx.only_child[root_ends]
    inward[len(root_ends):] = p[tips]
    d = np.zeros((len(ends), 3))
    ok = inward >= 0
    d[ok] = n.xyz[ends[ok]] - n.xyz[inward[ok]]
    norm = np.linalg.norm(d, axis=1)
    d[norm > 0] /= norm[norm > 0, None]
    return ends, d


def propose_bridges(ctx, fragment_roots: np.ndarray) -> dict[int, tuple[int, int, float]]:
    """Closest admissible bridge per fragment: {fragment root: (end row, target row, distance)}.

    A bridge joins an open end of the fragment to the nearest soma-tree node within
    ``bridge_max_factor`` x spacing, and only if the fragment, continued past its end, points
    towards that node within ``bridge_max_angle`` degrees.
    """
    n, th = ctx.neuron, ctx.th
    ends, direction = _fragment_ends(ctx, fragment_roots)
    main = np.flatnonzero(ctx.in_main_tree)
    reach = th.bridge_max_factor * ctx.spacing
    i, j, d = cross_pairs(n.xyz[ends], n.xyz[main], reach)
    if len(i) == 0:
        return {}
    gap = n.xyz[main[j]] - n.xyz[ends[i]]
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.einsum("ij,ij->i", gap, direction[i]) / d
    undefined = (d == 0) | ~np.any(direction[i] != 0, axis=1)
    ok = undefined | (cos >= np.cos(np.radians(th.bridge_max_angle)))
    i, j, d = i[ok], j[ok], d[ok]
    frag = ctx.root_of[ends[i]]
    order = np.lexsort((d, frag))
    first = np.ones(len(order), bool)
    first[1:] = frag[order][1:] != frag[order][:-1]
    pick = order[first]
    return {int(frag[k]): (int(ends[i[k]]), int(main[j[k]]), float(d[k])) for k in pick}


def _edge_findings(ctx, check_id, severity, rows, describe, cause):
    """One finding per run of flagged edges (``rows`` are their child rows), or one file-level
    finding when the runs cover more than ``flood_share`` of the neurite edges."""
    n, p, th = ctx.neuron, ctx.parent, ctx.th
    sites = edge_runs(p, rows)
    whole = flood(check_id, severity, n, sites, int(ctx.neurite_edge.sum()), th.flood_share, th.flood_min_sites, cause)
    if whole is not None:
        return whole
    return [make_finding(check_id, severity, n, np.append(s, p[s[0]]), describe(s)) for s in sites]


def _locally_long(ctx, rows: np.ndarray) -> np.ndarray:
    """``rows`` whose edge is longer than ``local_edge_factor`` x the median of the edges around it and than the fibre is wide
    (two above, two below along the first child). Skeletons place nodes at a spacing that follows
    the fibre's width (400-voxel edges along a thick trunk, 40 along twigs) and traces resampled
    coarsely at their tips step 5 um among 5 um steps: only an edge that stands out of its own
    neighbourhood is long there."""
    n, p = ctx.neuron, ctx.parent
    if len(rows) == 0:
        return rows
    e = n.edge_length
    fc = ctx.cached("first_child", lambda: graph.first_child(p))
    up1 = p[rows]
    up2 = np.where(up1 >= 0, p[np.maximum(up1, 0)], -1)
    dn1 = fc[rows]
    dn2 = np.where(dn1 >= 0, fc[np.maximum(dn1, 0)], -1)
    around = np.stack([up1, up2, dn1, dn2], axis=1)
    ok = (around >= 0) & ctx.neurite_edge[np.maximum(around, 0)]
    vals = np.where(ok, e[np.maximum(around, 0)], np.nan)
    local = row_medians(vals)      # NaN for an edge with no neighbour: the global limit alone decides
    # A skeleton of a thick fibre steps by about its width: an edge within the wider end's diameter
    # is how the fibre was sampled (placeholder radii of 1 leave traces at 1 um spacing unaffected).
    width = 2 * np.maximum(n.radius[rows], np.where(up1 >= 0, n.radius[np.maximum(up1, 0)], 0))
    return rows[~(e[rows] <= ctx.th.local_edge_factor * local) & (e[rows] > width)]


def _edge_text(ctx, s: np.ndarray, what: str) -> str:
    """``edge 4->5 <what>`` for one edge, ``7 edges in a row from 4->5 <what>`` for a run."""
    n, p = ctx.neuron, ctx.parent
    head = f"edge {n.ids[p[s[0]]]}->{n.ids[s[0]]}"
    return f"{head} {what}" if len(s) == 1 else f"{len(s)} edges in a row from {head} {what}"


@check("long_edge", W, "a parent-child distance far above the neuron's typical spacing")
def long_edge(ctx):
    n, th = ctx.neuron, ctx.th
    limit = min(th.long_edge_factor * ctx.spacing, th.long_edge_max_length)
    rows = _locally_long(ctx, np.flatnonzero(ctx.neurite_edge & (n.edge_length > limit)))
    e = n.edge_length

    def describe(s):
        return _edge_text(ctx, s, f"{'is' if len(s) == 1 else 'are up to'} {e[s].max():.3g} long "
                                  f"({e[s].max() / ctx.spacing:.0f}x the median spacing {ctx.spacing:.3g})")

    return _edge_findings(ctx, "long_edge", W, rows, describe, f"coarse sampling: edges longer than {limit:.3g}")


@check("z_jump", W, "a step along z larger than z_jump_distance and z_jump_factor x the neuron's own z step")
def z_jump(ctx):
    n, th = ctx.neuron, ctx.th
    has = ctx.neurite_edge
    dz = np.zeros(len(n))
    dz[has] = np.abs(n.xyz[has, 2] - n.xyz[ctx.parent[has], 2])
    # Traces from anisotropic stacks step between z planes; a jump is a step far beyond the
    # file's own typical (non-zero) z step, and beyond NeuroM's absolute 30.
    steps = dz[has & (dz > 0)]
    own = median(steps) if len(steps) else 0.0
    limit = max(th.z_jump_distance, th.z_jump_factor * own)
    rows = _locally_long(ctx, np.flatnonzero(dz > limit))

    def describe(s):
        return _edge_text(ctx, s, f"{'jumps' if len(s) == 1 else 'jump up to'} {dz[s].max():.3g} in z (limit {limit:.3g})")

    return _edge_findings(ctx, "z_jump", W, rows, describe, f"sparse z sampling: edges stepping more than {limit:.3g} in z")


@check("abnormal_compartment", W, "an edge longer than mean + abnormal_compartment_sd SD and outside the neuron's own tail of edge lengths")
def abnormal_compartment(ctx):
    n, th = ctx.neuron, ctx.th
    e = n.edge_length[ctx.neurite_edge]
    e = e[e > 0]
    if len(e) < 3:
        return []
    # Mean + 5 SD alone flags the upper tail of every file whose spread is tiny (1 um-resampled
    # traces: 1.07 um edges) or heavy (manual traces with variable steps). An abnormal edge
    # stands out of the file's own tail as well: abnormal_compartment_tail_factor x its 99th
    # percentile.
    limit = max(e.mean() + th.abnormal_compartment_sd * e.std(), th.abnormal_compartment_tail_factor * percentile(e, 99))
    rows = _locally_long(ctx, np.flatnonzero(ctx.neurite_edge & (n.edge_length > limit)))
    length = n.edge_length

    def describe(s):
        return _edge_text(ctx, s, f"{'is' if len(s) == 1 else 'are up to'} {length[s].max():.3g} long, beyond the neuron's own edge lengths (limit {limit:.3g})")

    return _edge_findings(ctx, "abnormal_compartment", W, rows, describe, f"edges longer than {limit:.3g}")


# ------------------------------------------------------------------------------------- coincidence
def _coincident_pairs(ctx, radius: float, *, far_only: bool = False):
    """Close pairs of non-soma nodes of the same tree within ``radius``, and whether they are
    near on the tree (at most ``loop_min_hops`` edges apart). The search runs once per neuron at
    the largest radius any check asks for; each check then takes its share."""
    i, j, d, near = ctx.cached("coincident_pairs", lambda: _search_coincident(ctx))
    ok = d <= radius
    if far_only:
        ok &= ~near
    return i[ok], j[ok], d[ok], near[ok]


def _search_coincident(ctx):
    n, th = ctx.neuron, ctx.th
    radius = max(th.loop_distance_factor, th.overlap_distance_factor) * ctx.spacing
    cand = np.flatnonzero(~ctx.is_soma & ctx.rooted)
    root = ctx.root_of[cand]
    # Close pairs are rare (a few per thousand nodes), so the search by key ranges (a third of the
    # binary searches of close_pairs) pays, and the pairs are put in one order afterwards.
    i, j, d = close_pairs_by_rows(n.xyz[cand], radius)
    order = np.lexsort((j, i))
    i, j, d = i[order], j[order], d[order]
    same = root[i] == root[j]
    i, j, d = cand[i[same]], cand[j[same]], d[same]
    return i, j, d, graph.within_hops(ctx.parent, i, j, th.loop_min_hops)


@check("loop", E, "distinct branches joined through coincident or near-coincident nodes", fixable=True)
def loop(ctx):
    n = ctx.neuron
    i, j, d, _ = _coincident_pairs(ctx, ctx.th.loop_distance_factor * ctx.spacing, far_only=True)
    i, j, d = _one_pair_per_contact(ctx, i, j, d)
    out = []
    for a, b, dist in zip(i.tolist(), j.tolist(), d.tolist()):
        tip = b if n.n_children[b] == 0 else a if n.n_children[a] == 0 else -1
        fix = Fix("delete", {"node_id": int(n.ids[tip])}) if tip >= 0 else None
        how = "coincide" if dist == 0 else f"are {dist:.3g} apart"
        msg = f"nodes {n.ids[a]} and {n.ids[b]} {how} but lie on different branches: the branches close a loop"
        out.append(make_finding("loop", E, n, [a, b], msg, fix))
    return out


def _one_pair_per_contact(ctx, i, j, d):
    """Keep the closest pair of each contact: pairs whose nodes are both within two hops of an
    already kept pair's nodes describe the same place where two branches meet."""
    order = np.argsort(d, kind="stable")
    kept: list[int] = []
    for k in order.tolist()[:2000]:
        if kept:
            ki, kj = i[kept], j[kept]
            same = graph.within_hops(ctx.parent, np.full(len(kept), i[k]), ki, 2) & graph.within_hops(ctx.parent, np.full(len(kept), j[k]), kj, 2)
            same |= graph.within_hops(ctx.parent, np.full(len(kept), i[k]), kj, 2) & graph.within_hops(ctx.parent, np.full(len(kept), j[k]), ki, 2)
            if same.any():
                continue
        kept.append(k)
    kept.sort()
    return i[kept], j[kept], d[kept]


@check("duplicate_point", W, "two nodes at the same position close together on the tree (double click)", fixable=True)
def duplicate_point(ctx):
    n = ctx.neuron
    i, j, d, near = _coincident_pairs(ctx, 0.0)
    p = ctx.parent
    # Parent-child pairs are zero_length_segment; lines repeating one id are duplicate_id.
    keep = near & (p[i] != j) & (p[j] != i) & (n.ids[i] != n.ids[j])
    # Neurites of one soma node starting at one point is how MouseLight writes neurites that
    # leave the soma together (or start on it): a layout, not a double click.
    roots = np.zeros(len(n), bool)
    roots[ctx.neurite_roots] = True
    keep &= ~(roots[i] & roots[j] & (p[i] == p[j]))
    out = []
    for a, b in zip(i[keep].tolist(), j[keep].tolist()):
        fix = None
        if p[a] == p[b] and n.types[a] == n.types[b]:
            fix = Fix("merge", {"node_id": int(n.ids[b]), "into_id": int(n.ids[a])})
        out.append(make_finding("duplicate_point", W, n, [a, b], f"nodes {n.ids[a]} and {n.ids[b]} are at the same position", fix))
    return out


@check("zero_length_segment", W, "a parent-child edge of length <= zero_length_tolerance", fixable=True)
def zero_length_segment(ctx):
    n, p = ctx.neuron, ctx.parent
    rows = np.flatnonzero((p >= 0) & (n.edge_length <= ctx.th.zero_length_tolerance) & ~ctx.is_soma & ~n.in_cycle)
    # A neurite's first node on its soma node is MouseLight's layout (NeuroM, which keeps the
    # soma apart from the neurites, sees no segment there either).
    rows = rows[~ctx.is_soma[p[rows]]]
    out = []
    for r in rows.tolist():
        out.append(make_finding("zero_length_segment", W, n, [r, p[r]], f"node {n.ids[r]} is at its parent's position ({n.edge_length[r]:.3g} away)", Fix("delete", {"node_id": int(n.ids[r])})))
    return out


@check("overlapping_segments", W, "a run of nodes lying on another branch (double-traced fibre)")
def overlapping_segments(ctx):
    n, th = ctx.neuron, ctx.th
    i, j, d, near = _coincident_pairs(ctx, th.overlap_distance_factor * ctx.spacing, far_only=True)
    sec = ctx.section
    keep = ~near & (sec[i] != sec[j])
    # A double trace lies inside the fibre it repeats: branches that merely run side by side (1-2 um
    # apart in 4 um-spaced cortical traces) are not one. Without radii the spacing alone decides.
    r = np.maximum(n.radius[i], n.radius[j])
    keep &= (d <= r) | (r <= 0)
    i, j = i[keep], j[keep]
    if len(i) == 0:
        return []
    # Count, per ordered pair of sections, how many distinct nodes of the first lie on the second.
    a = np.concatenate([i, j])
    b = np.concatenate([j, i])
    key = np.stack([sec[a], sec[b], a], axis=1)
    key = key[np.lexsort(key.T[::-1])]            # rows in order (np.unique(axis=0) imports numpy.ma)
    key = key[np.concatenate(([True], np.any(key[1:] != key[:-1], axis=1)))]
    first = np.flatnonzero(np.concatenate(([True], np.any(key[1:, :2] != key[:-1, :2], axis=1))))
    pairs, counts = key[first, :2], np.diff(np.append(first, len(key)))
    out = []
    seen = set()
    for (sa, sb), c in zip(pairs.tolist(), counts.tolist()):
        if c < th.overlap_min_nodes or (sb, sa) in seen:
            continue
        seen.add((sa, sb))
        rows = key[(key[:, 0] == sa) & (key[:, 1] == sb), 2]
        msg = f"{c} nodes of the branch at node {n.ids[sa]} run along the branch at node {n.ids[sb]}"
        out.append(make_finding("overlapping_segments", W, n, rows, msg))
    return out


def _prefix_range(ctx, values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``graph.section_prefix_range`` (column-wise min and max of ``values`` over the valid nodes
    above each node in its section, itself excluded) by one sort and running min/max instead of
    pointer doubling: nodes in (section, depth) order, and a running minimum restarted at each
    section by shifting every section below the ones before it. Rows off any root (cycles) get
    the unbounded range, so that the caller keeps them."""
    p = ctx.parent
    hops = ctx.cached("hops", lambda: graph.ancestor_sums(p, np.ones(len(p)))[1])
    sec = ctx.section
    order = np.lexsort((hops, sec))
    group = np.cumsum(np.concatenate(([0], sec[order][1:] != sec[order][:-1])))
    # A running minimum over the whole order stays inside a section when each section's values lie
    # below all earlier sections': values are unit-vector components (|v| <= 1), so a step of 4
    # per section separates them (and adds back exactly: the steps are small integers). A node
    # without a value stands for 2: above its section's values, below every earlier section's.
    step = 4.0 * group[:, None]
    v = values[order]
    ok = valid[order, None]
    lo = np.minimum.accumulate(np.where(ok, v, 2.0) - step, axis=0) + step
    hi = np.maximum.accumulate(np.where(ok, v, -2.0) + step, axis=0) - step
    lo[lo > 1.5] = np.inf
    hi[hi < -1.5] = -np.inf
    # Exclude each node itself: take the running value of the node before it in the section.
    first = np.concatenate(([True], group[1:] != group[:-1]))
    lo = np.where(first[:, None], np.inf, np.roll(lo, 1, axis=0))
    hi = np.where(first[:, None], -np.inf, np.roll(hi, 1, axis=0))
    out_lo = np.empty_like(lo)
    out_hi = np.empty_like(hi)
    out_lo[order], out_hi[order] = lo, hi
    off = ~ctx.rooted
    out_lo[off], out_hi[off] = -1.0, 1.0
    return out_lo, out_hi


def _may_point_back(ctx, seg: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Segments that could point against an earlier segment of their section: a lower bound of
    u_b . u_a over the box of earlier directions must be negative (exact-safe pre-filter)."""
    n, p = ctx.neuron, ctx.parent
    u = np.zeros((len(n), 3))
    u[seg] = (n.xyz[seg] - n.xyz[p[seg]]) / n.edge_length[seg, None]
    lo, hi = _prefix_range(ctx, u, seg)
    r = rows[np.isfinite(lo[rows]).all(axis=1)]
    bound = np.minimum(u[r] * lo[r], u[r] * hi[r]).sum(axis=1)
    # (1e-9: the running ranges carry rounding of order 1e-11; a pre-filter may keep too many.)
    return r[bound < 1e-9]


@check("back_tracking", W, "a segment that turns back into an earlier segment of its own branch (NeuroM rule)")
def back_tracking(ctx):
    n, p = ctx.neuron, ctx.parent
    seg = ctx.neurite_edge & (n.edge_length > 0)
    segments = np.flatnonzero(seg)
    if len(segments) < 3:
        return []
    later = _may_point_back(ctx, seg, segments)
    rmax = np.maximum(n.radius, np.where(p >= 0, n.radius[np.maximum(p, 0)], 0))
    widest = 2 * rmax[segments].max()
    # A segment pairs only with a later one of its own branch further out: those beyond the last
    # such one on their branch (a third of them in whole-brain axons) need not be searched.
    last = np.full(len(n), -np.inf)
    np.maximum.at(last, ctx.section[later], ctx.path_length[later])
    segments = segments[ctx.path_length[segments] < last[ctx.section[segments]]]
    length = n.edge_length[segments]
    # b's end lies within sqrt((rmax_a + rmax_b)^2 + (0.55 |a|)^2) of a's midpoint. One search
    # radius for all segments would let a few long ones inflate it for every node, so typical and
    # long segments are searched separately, each with its own exact bound.
    hits = []
    for group in (length <= 2 * ctx.spacing, length > 2 * ctx.spacing):
        early = segments[group]
        if len(early) and len(later):
            reach = float(np.hypot(widest, 0.55 * length[group].max()))
            hits.append(_turning_back(ctx, early, later, rmax, reach))
    rows = unique(np.concatenate(hits) if hits else np.zeros(0, np.int64)).astype(np.int64)

    def describe(s):
        what = "turns" if len(s) == 1 else "turn"
        return _edge_text(ctx, s, f"{what} back into an earlier segment of the same branch").replace("edge", "segment", 1)

    return _edge_findings(ctx, "back_tracking", W, rows, describe, "segments turning back along their own branch")


def _turning_back(ctx, early, later, rmax, reach) -> np.ndarray:
    """Rows of ``later`` segments b that turn back into one of the ``early`` segments a."""
    n, p = ctx.neuron, ctx.parent
    sec, depth = ctx.section, ctx.path_length
    xyz = n.xyz
    vec = xyz - xyz[np.maximum(p, 0)]           # each segment's vector (rows without a parent unused)

    def keep(ia, jb, _d):
        # NeuroM: b (later on the branch) points against a and ends inside a's cylinder:
        # perpendicular distance <= sum of the max radii, projection < 0.55 |a| from a's middle.
        # Most candidates are a segment's own neighbours along the branch: the cheap tests
        # (same branch, further out, not a's child, pointing against a) go first.
        a, b = early[ia], later[jb]
        ok = (sec[a] == sec[b]) & (depth[b] > depth[a]) & (p[b] != a)
        ok[ok] = np.einsum("ij,ij->i", vec[a[ok]], vec[b[ok]]) < 0
        k = np.flatnonzero(ok)
        a, b = a[k], b[k]
        va = vec[a]
        cp = xyz[b] - (xyz[a] + xyz[p[a]]) / 2
        la = np.sqrt(np.einsum("ij,ij->i", va, va))
        proj = np.einsum("ij,ij->i", cp, va) / la
        perp = np.linalg.norm(cp - proj[:, None] * va / la[:, None], axis=1)
        ok[k] = (perp <= rmax[a] + rmax[b]) & (np.abs(proj) < 0.55 * la)
        return ok

    mid = (xyz[early] + xyz[p[early]]) / 2
    # (In any order: the caller takes the unique rows.)
    return later[cross_pairs_by_rows(mid, xyz[later], reach, keep=keep)[1]]
