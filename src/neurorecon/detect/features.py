"""Per-node feature table: morphology, node types, rule-check hits and contrast-normalised image
evidence, plus the same evidence gathered from each node's tree neighbourhood.

Image intensities are expressed as ``(value - local background) / fibre contrast``, where the
fibre contrast is a robust estimate of how much brighter than background the traced fibre is in
the node's block. That removes the microscope's gain, offset and brightness; the remaining noise
level enters as one feature (``snr``) so that the model can weigh weak evidence accordingly.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..morphology import graph
from ..morphology.neuron import Neuron
from ..morphology.spatial import any_within, close_pairs, close_pairs_by_rows
from .image_features import SHELL_DIRS, SHELL_R, RawImage, edge_points, frames, measure

CHECK_HITS = ("loop", "duplicate_point", "overlapping_segments", "back_tracking", "z_jump", "long_edge", "type_change",
              "parent_type_violation", "multifurcation", "near_bifurcation", "abnormal_compartment")


@dataclass
class FeatureTable:
    X: np.ndarray               # (N, F) float32
    names: tuple[str, ...]
    raw: RawImage               # kept for proposed corrections (local background)
    spacing: float
    contrast: np.ndarray        # fibre contrast per node (image units), for the same normalisation later
    parent: np.ndarray = None   # type: ignore[assignment]  # parent rows the features walked (cycles cut)


def compute_features(neuron: Neuron, volume, *, progress=None, block_um: float = 96.0) -> FeatureTable:
    """The feature table of ``neuron`` (µm) against ``volume`` (see :mod:`neurorecon.io.volume`)."""
    parent = neuron.parent.copy()
    parent[neuron.in_cycle] = -1   # cycles would make tree walks meaningless; the loop check reports them
    xyz = neuron.xyz
    fc = graph.first_child(parent)
    # The trace's own features need no image: a worker thread computes them while measure() reads
    # and samples it, on the core that measure's two threads (sampling here, decoding in its
    # read-ahead thread) leave idle much of the time; numpy and the decoder release the GIL.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="neurorecon-trace") as ex:
        trace = ex.submit(_trace_features, neuron, parent, fc, volume)
        raw = measure(xyz, parent, fc, volume, block_um=block_um, progress=progress)
        spacing, cols = trace.result()
    contrast, img = _image_features(raw, xyz, parent, fc)
    cols.update(img)
    names = tuple(cols)
    X = np.stack([np.asarray(cols[k], dtype=np.float32) for k in names], axis=1) if len(neuron) else \
        np.zeros((0, len(names)), np.float32)
    return FeatureTable(X, names, raw, spacing, contrast, parent)


def _trace_features(neuron: Neuron, parent, fc, volume) -> tuple[float, dict]:
    """The median edge length, and the features of the trace alone: morphology, node types and
    rule-check hits."""
    spacing = _spacing(neuron, parent)
    cols = _morphology(neuron, parent, fc, spacing, volume)
    cols.update(_types(neuron, parent))
    cols.update(_check_hits(neuron))
    return spacing, cols


def _image_features(raw: RawImage, xyz, parent, fc) -> tuple[np.ndarray, dict]:
    """The fibre contrast per node, and the image features: the measurements normalised by it,
    and the same evidence gathered over each node's tree neighbourhood."""
    # The forward shell maxima and which shell points of the trace's ends lie on it need no
    # contrast: a worker thread finds them while this one works out the contrast and normalises
    # the measurements (the other core is idle by now).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="neurorecon-image") as ex:
        top = ex.submit(lambda: _forward_top(raw, frames(xyz, parent, fc)[3]))
        ends = ex.submit(_end_shells_traced, xyz, parent)
        block = _block_contrast(raw)
        contrast = _contrast(raw, parent, block)
        img = _image(raw, contrast, block)
        img.update(_forward(raw, contrast, top.result()))
        img.update(_end_clear(raw, contrast, *ends.result()))
    cols = dict(img)
    cols.update(_neighbourhood(parent, {k: img[k] for k in _SPREAD}))
    cols.update(_upstream(parent, img["turn_off"], k=12))
    cols.update(_upstream(parent, img["fwd_unexpl7"], k=12, name="up_fwd_unexpl"))
    cols.update(_section_max(parent, {"fwd_unexpl7": img["fwd_unexpl7"], "turn_off": img["turn_off"]}))
    cols.update(_continuity(raw, contrast, xyz, parent, fc))
    return contrast, cols


def _spacing(neuron: Neuron, parent: np.ndarray) -> float:
    e = graph.edge_lengths(neuron.xyz, parent)
    e = e[e > 0]
    return float(np.median(e)) if len(e) else 1.0


# ----------------------------------------------------------------------------- morphology
def _morphology(neuron: Neuron, parent, fc, spacing, volume) -> dict:
    xyz = neuron.xyz
    n = len(xyz)
    has_p = parent >= 0
    nc = graph.child_counts(parent)
    d_par = np.where(has_p[:, None], xyz - xyz[np.maximum(parent, 0)], 0.0)
    len_par = np.linalg.norm(d_par, axis=1)
    d_ch = np.where((fc >= 0)[:, None], xyz[np.maximum(fc, 0)] - xyz, 0.0)
    len_ch = np.linalg.norm(d_ch, axis=1)
    cosang = np.einsum("ij,ij->i", d_par, d_ch) / np.maximum(len_par * len_ch, 1e-9)
    turn = np.where(has_p & (fc >= 0), np.degrees(np.arccos(np.clip(cosang, -1, 1))), 0.0)
    # Turning at the parent too: a kink shows on both sides of a moved node.
    turn_parent = np.where(has_p, turn[np.maximum(parent, 0)], 0.0)
    root, depth, _ = graph.ancestor_sums(parent)
    section = section_lengths(parent, len_par, nc)
    comp_cable = np.bincount(root, weights=len_par, minlength=n)[root]
    vs = np.asarray(volume.voxel_size, float)
    extent = (np.asarray(volume.shape[::-1]) - 1) * vs
    to_edge = np.minimum(xyz, extent - xyz)
    near_other, near_far = _proximity(xyz, parent, root, depth)
    return {
        "n_children": nc, "is_tip": (nc == 0) & has_p, "is_root": ~has_p,
        "edge_len": len_par / spacing, "child_edge_len": len_ch / spacing,
        "turn": turn, "turn_parent": turn_parent,
        "edge_dz": np.abs(d_par[:, 2]) / np.maximum(len_par, 1e-9),
        **section,
        "comp_cable": np.log1p(np.minimum(comp_cable, COMP_CAP_UM)),
        "to_edge_xy": np.minimum(to_edge[:, 0], to_edge[:, 1]), "to_edge_z": to_edge[:, 2],
        "near_other_comp": near_other, "near_far_node": near_far,
        **_end_partners(xyz, parent, fc, nc, root),
    }


#: Path lengths are capped: what matters is how near a branch point, tip or type change a node is;
#: beyond that, whole-neuron traces (sections of millimetres) would lie outside anything trained on.
SECTION_CAP_UM = 40.0
COMP_CAP_UM = 500.0
TYPE_RUN_CAP_UM = 60.0


def section_lengths(parent: np.ndarray, edge_um: np.ndarray, n_children: np.ndarray | None = None) -> dict:
    """Path length (µm, capped at :data:`SECTION_CAP_UM`) from each node up to the branch point or
    root its unbranched section leaves from (``sec_pos``), down to the section's end, a tip or
    branch point (``sec_rest``), and of the whole section (``sec_len``). In µm rather than hops, so that a
    trace sampled every 1 µm and one sampled every 3 µm read the same."""
    n = len(parent)
    nc = graph.child_counts(parent) if n_children is None else n_children
    sec = graph.section_ids(parent, nc)
    _, path, _ = graph.ancestor_sums(parent, edge_um)
    # Measured from the branch point (or root) the section leaves, not its first node, which lies
    # one edge further on: otherwise the edge length would show.
    anchor = np.where(parent[sec] >= 0, parent[sec], sec)
    pos = path - path[anchor]
    length = np.zeros(n)
    np.maximum.at(length, sec, pos)
    length = length[sec]
    cap = SECTION_CAP_UM
    return {"sec_pos": np.minimum(pos, cap), "sec_rest": np.minimum(length - pos, cap), "sec_len": np.minimum(length, cap)}


def _end_partners(xyz, parent, fc, nc, root, reach: float = 20.0) -> dict:
    """For each trace end (tip, or root of a piece), the nearest end of another piece that lies
    ahead of it (within 72 degrees of the way the end points), how well aimed it is, and whether
    that end points back. A gap leaves two ends facing each other across a few µm; the ends of
    pieces cut by the image border or by a crossing rarely do. Other nodes get ``reach`` and 0."""
    tip = (nc == 0) & (parent >= 0)
    top = (parent < 0) & (fc >= 0)
    out = np.zeros((len(xyz), 3))
    out[:, 0] = reach
    ends = np.flatnonzero(tip | top)
    if len(ends) < 2:
        return {"end_partner_dist": out[:, 0], "end_partner_aim": out[:, 1], "end_partner_back": out[:, 2]}
    way = np.zeros((len(xyz), 3))
    way[tip] = xyz[tip] - xyz[parent[tip]]
    way[top] = xyz[top] - xyz[fc[top]]
    way /= np.maximum(np.linalg.norm(way, axis=1, keepdims=True), 1e-9)
    i, j, d = close_pairs(xyz[ends], reach)
    i, j = ends[i], ends[j]
    other = root[i] != root[j]
    i, j, d = (np.concatenate([a[other], b[other]]) for a, b in ((i, j), (j, i), (d, d)))
    v = (xyz[j] - xyz[i]) / np.maximum(d, 1e-9)[:, None]
    aim = np.einsum("ij,ij->i", way[i], v)
    back = -np.einsum("ij,ij->i", way[j], v)
    ahead = aim > 0.3
    i, d, aim, back = i[ahead], d[ahead], aim[ahead], back[ahead]
    order = np.lexsort((d, i))                       # nearest partner first, per end
    first = order[np.r_[True, i[order][1:] != i[order][:-1]]] if len(order) else order
    out[i[first]] = np.stack([d[first], aim[first], back[first]], axis=1)
    return {"end_partner_dist": out[:, 0], "end_partner_aim": out[:, 1], "end_partner_back": out[:, 2]}


def _proximity(xyz, parent, root, depth):
    """Distance to the nearest node of another connected piece, and to the nearest node more than
    6 hops away on the same piece (loops, double tracing), capped at 25 µm."""
    cap = 25.0
    # One piece: only the same-piece search (10 µm) is needed; pairs out to 25 µm cost far more.
    # (The pairs' order does not matter here: minima.)
    i, j, d = close_pairs_by_rows(xyz, cap if len(np.unique(root)) > 1 else 10.0)
    other = np.full(len(xyz), cap)
    far = np.full(len(xyz), cap)
    if len(i):
        diff = root[i] != root[j]
        np.minimum.at(other, i[diff], d[diff])
        np.minimum.at(other, j[diff], d[diff])
        same = ~diff & (d < 10.0)
        if same.any():
            ii, jj, dd = i[same], j[same], d[same]
            anc = graph.ancestors(parent, np.arange(len(parent)), 6)
            nf = ~_within_hops(anc, depth.astype(np.int64), ii, jj, 6)
            np.minimum.at(far, ii[nf], dd[nf])
            np.minimum.at(far, jj[nf], dd[nf])
    return other, far


def _within_hops(anc, depth, a, b, k):
    """:func:`graph.within_hops` for a forest, given every node's ``k`` ancestors ``anc`` (N, k+1)
    and its depth: a common ancestor s hops above the shallower node of a pair lies s + (depth
    difference) hops above the deeper one, so at most k/2 + 1 column pairs are compared instead of
    all (k+1)(k+2)/2, and only for pairs close enough in depth (a tenth of the time on 1M pairs)."""
    dd = depth[a] - depth[b]
    deep, shallow, dd = np.where(dd >= 0, a, b), np.where(dd >= 0, b, a), np.abs(dd)
    near = np.zeros(len(a), bool)
    for s in range(k // 2 + 1):
        rows = np.flatnonzero(2 * s + dd <= k)
        up = anc[shallow[rows], s]
        near[rows] |= (anc[deep[rows], s + dd[rows]] == up) & (up >= 0)
    return near


def _types(neuron: Neuron, parent) -> dict:
    t = neuron.types
    n = len(t)
    has_p = parent >= 0
    pt = np.where(has_p, t[np.maximum(parent, 0)], t)
    differs_parent = has_p & (pt != t)
    child_differs = np.zeros(n, bool)
    c = np.flatnonzero(has_p)
    child_differs[parent[c[t[c] != t[parent[c]]]]] = True
    # Where this node's run of equal type began, and whether that was a root/soma.
    run_start = graph.nearest_marked_ancestor(parent, differs_parent)
    root, path, _ = graph.ancestor_sums(parent, graph.edge_lengths(neuron.xyz, parent))
    um_from_change = np.minimum(path - path[run_start], TYPE_RUN_CAP_UM)
    changed_from = np.where(parent[run_start] >= 0, t[np.maximum(parent[run_start], 0)], -1)
    starts_at_soma = (parent[run_start] < 0) | (changed_from == 1)
    key = root * 16 + np.clip(t, 0, 15)
    same_type = np.bincount(key, minlength=16 * n)[key] / np.bincount(root, minlength=n)[root]
    out = {f"type_{k}": t == k for k in (1, 2, 3, 4)}
    out.update({"type_differs_parent": differs_parent, "type_differs_child": child_differs,
                "type_um_from_change": um_from_change, "type_run_not_from_soma": ~starts_at_soma,
                "type_share": same_type})
    return out


def _check_hits(neuron: Neuron) -> dict:
    """How many findings of each check name each node (the rule engine of the foundation)."""
    from ..qc.config import CheckConfig
    from ..qc.run import check_neuron

    n = len(neuron)
    hits = {k: np.zeros(n, np.float32) for k in CHECK_HITS}
    # Only the checks counted here run (each check's findings do not depend on the others').
    found = [f for f in check_neuron(neuron, CheckConfig(only=frozenset(CHECK_HITS))) if f.check in hits and f.node_ids]
    if found:
        # All findings' nodes looked up at once (one lookup per finding costs a sort of the ids
        # each time); a node a finding names twice counts once.
        rows = neuron.index_of(np.concatenate([np.asarray(f.node_ids, np.int64) for f in found]))
        which = np.repeat(np.arange(len(found)), [len(f.node_ids) for f in found])
        ok = rows >= 0
        which, rows = np.divmod(np.unique(which[ok] * n + rows[ok]), n)
        check = np.array([f.check for f in found])[which]
        for k, v in hits.items():
            v += np.bincount(rows[check == k], minlength=n)
    return {f"check_{k}": v for k, v in hits.items()}


# ---------------------------------------------------------------------------------- image
def _contrast(raw: RawImage, parent: np.ndarray, block: np.ndarray, hops: int = 16) -> np.ndarray:
    """Fibre contrast per node: the median, over the node and the ``hops`` nodes above it, of the
    ridge height above local background at the nodes (within 1.5 µm). Local, so that thick and
    thin, bright and dim fibres each are measured against themselves (a bright neighbour does not
    make a thin branch look dim); long enough (17 nodes) that a moved run of up to 8 nodes is outvoted
    by its fibre. Never below a fifth of the block's typical contrast ``block`` (_block_contrast)."""
    height = raw.disk_max[:, 0] - raw.background
    anc = graph.ancestors(parent, np.arange(len(parent)), hops)
    win = np.where(anc >= 0, height[np.maximum(anc, 0)], np.nan)
    with warnings.catch_warnings():   # windows entirely outside the image: NaN, replaced below
        warnings.simplefilter("ignore", RuntimeWarning)
        local = np.nanmedian(win, axis=1) if len(win) else np.zeros(0)
    local = np.where(np.isfinite(local), local, block)
    return np.maximum(local, 0.2 * block)


def _block_contrast(raw: RawImage) -> np.ndarray:
    """The 70th percentile, over the nodes of each block, of the ridge height above background."""
    height = raw.disk_max[:, 0] - raw.background
    ok = np.isfinite(height)
    overall = np.nanpercentile(height[ok], 70) if ok.any() else 1.0
    out = np.full(len(height), overall, dtype=np.float64)
    # Each block's rows by one stable sort (a mask per block costs blocks x nodes).
    order = np.argsort(raw.block, kind="stable")
    for rows in np.split(order, np.flatnonzero(np.diff(raw.block[order])) + 1):
        good = rows[ok[rows]]
        if len(good) >= 12:
            out[rows] = np.percentile(height[good], 70)
    floor = max(float(overall) * 0.2, 1e-6)
    return np.maximum(out, floor)


def _image(raw: RawImage, c: np.ndarray, block: np.ndarray) -> dict:
    bg = raw.background.astype(np.float64)

    def norm(v):
        v = np.asarray(v, dtype=np.float64)
        shape = (-1,) + (1,) * (v.ndim - 1)
        return (v - bg.reshape(shape)) / c.reshape(shape)

    centre = norm(raw.centre)
    dmax = norm(raw.disk_max)
    edge = norm(raw.edge)
    ahead = norm(raw.ahead)
    cone = norm(raw.cone)
    cone_un = np.where(raw.cone_cov, -np.inf, cone)
    # The brightest untraced shell point of each shell, normalised after the maximum is taken: the
    # normalisation is monotonic (also in floating point), so the number is the same, without
    # normalising all 80 points of every node.
    top = np.where(raw.shell_cov | np.isnan(raw.shell), -np.inf, raw.shell).max(axis=2)
    with np.errstate(all="ignore"):
        un4, un7 = norm(top).T
        cone_max = np.max(np.where(np.isnan(cone_un), -np.inf, cone_un).reshape(len(c), -1), axis=1)
    un4, un7, cone_max = (np.where(np.isfinite(v), v, 0.0) for v in (un4, un7, cone_max))
    unexpl_count, expl_mean = _shell_stats(raw, bg, c)
    off3, off7, snap = raw.offset3, raw.offset7, raw.snap
    ahead_un = np.max(np.where(np.isnan(ahead[:, 1:3]), -1, ahead[:, 1:3]), axis=1)
    out = {
        "i_centre": centre, "i_max1": dmax[:, 0], "i_max3": dmax[:, 1], "i_max7": dmax[:, 2],
        "deficit3": dmax[:, 1] - centre, "deficit7": dmax[:, 2] - centre,
        "off3_xy": np.hypot(off3[:, 0], off3[:, 1]), "off3_z": np.abs(off3[:, 2]),
        "off7_xy": np.hypot(off7[:, 0], off7[:, 1]), "off7_z": np.abs(off7[:, 2]),
        "snap_xy": np.hypot(snap[:, 0], snap[:, 1]), "snap_z": np.abs(snap[:, 2]),
        "edge_min": np.nanmin(np.where(np.isnan(edge), np.inf, edge), axis=1),
        "edge_mean": _nanmean(edge),
        "shell_unexpl4": un4, "shell_unexpl7": un7,
        "shell_unexpl_count": unexpl_count,
        "shell_expl_mean": expl_mean,
        "ahead2": ahead[:, 0], "ahead4": ahead[:, 1], "ahead6": ahead[:, 2], "ahead9": ahead[:, 3],
        "cone_unexpl": cone_max, "turn_off": np.minimum(ahead_un, cone_max + 1.0),
        "snr": c / np.maximum(np.nan_to_num(raw.noise, nan=1.0), 1e-3),
        "contrast_vs_block": c / block,
        "out_of_image": np.isnan(raw.centre),
    }
    out["edge_min"] = np.where(np.isfinite(out["edge_min"]), out["edge_min"], np.nan)
    return out


def _shell_stats(raw: RawImage, bg: np.ndarray, c: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per node, how many untraced shell points are brighter than 0.4 (normalised), and the mean of
    the traced ones (NaN if none). Row blocks of ``chunk`` nodes: the normalised shells of all
    nodes would be a 64 MB array per 100k nodes, and each temporary as large again."""
    n = len(c)
    count = np.zeros(n, np.int64)
    mean = np.empty(n)
    for a in range(0, n, chunk):
        r = slice(a, a + chunk)
        shell = (raw.shell[r].astype(np.float64) - bg[r, None, None]) / c[r, None, None]
        cov = raw.shell_cov[r]
        count[r] = ((shell > 0.4) & ~cov).sum(axis=(1, 2))     # NaN compares False
        mean[r] = _nanmean(np.where(cov, shell, np.nan).reshape(len(shell), -1))
    return count, mean


def _forward(raw: RawImage, c: np.ndarray, top: np.ndarray) -> dict:
    """Brightest untraced signal on the shells within 60 degrees of the way the trace was going
    (``top``: :func:`_forward_top`), normalised.

    At a tip this asks "does the fibre go on?" (early stop, the near end of a gap), at a fragment's
    root "does it come from somewhere?" (the far end of a gap), and at the node where a trace turned
    off its fibre onto a neighbour "did the fibre go straight on?" (jump). Unlike the all-round
    shell features it ignores the sides, where a dense arbor's other branches always are."""
    # Normalised after the maximum is taken, as in _image.
    with np.errstate(all="ignore"):
        val = (top - raw.background[:, None]) / c[:, None]
    val = np.where(np.isfinite(val), val, 0.0)
    return {"fwd_unexpl4": val[:, 0], "fwd_unexpl7": val[:, 1]}


def _forward_top(raw: RawImage, ahead: np.ndarray) -> np.ndarray:
    """(N, 2): per shell, the brightest untraced shell point within 60 degrees of ``ahead`` (-inf: none)."""
    fwd = (ahead @ SHELL_DIRS.T) > 0.5                                  # (N, 40)
    keep = fwd[:, None, :] & ~raw.shell_cov & np.isfinite(raw.shell)
    return np.where(keep, raw.shell, -np.inf).max(axis=2)


#: A shell point this far (µm) from every traced edge is untraced signal, z distances counted
#: 1/Z_STRETCH: the blur is longer in z. Tighter than the coverage mask of the shell features.
END_CLEAR_UM = 1.5
Z_STRETCH = 1.6


def _end_clear(raw: RawImage, c: np.ndarray, ends: np.ndarray, traced: np.ndarray) -> dict:
    """At trace ends (tips, roots of pieces): the brightest shell point at 4 and 7 µm that lies
    clear of every traced edge (0 elsewhere); ``ends`` and ``traced`` from :func:`_end_shells_traced`.

    A fibre that goes on past a tip often bends, or runs beside another traced branch for a while;
    the shell features' coverage mask (2 µm, a box) then hides it. Measured exactly, and for the
    ends only (a few % of the nodes), it still shows."""
    n = len(raw.centre)
    out = np.zeros((n, len(SHELL_R)))
    if len(ends):
        vals = np.where(traced | np.isnan(raw.shell[ends]), -np.inf, raw.shell[ends])
        with np.errstate(all="ignore"):
            top = (vals.max(axis=2) - raw.background[ends, None]) / c[ends, None]
        out[ends] = np.where(np.isfinite(top), top, 0.0)
    return {f"end_clear{int(r)}": out[:, k] for k, r in enumerate(SHELL_R)}


def _end_shells_traced(xyz: np.ndarray, parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The trace ends (rows; none for a single node), and per end and shell point (ends, 2, 40)
    whether it lies within END_CLEAR_UM of a traced edge (z distances counted 1/Z_STRETCH)."""
    n = len(xyz)
    ends = np.flatnonzero((graph.child_counts(parent) == 0) | (parent < 0)) if n > 1 else np.zeros(0, np.int64)
    if not len(ends):
        return ends, np.zeros((0, len(SHELL_R), len(SHELL_DIRS)), bool)
    offsets = np.asarray(SHELL_R)[:, None, None] * SHELL_DIRS[None]                 # (2, 40, 3)
    pts = (xyz[ends, None, None, :] + offsets[None]).reshape(-1, 3)
    stretch = np.array([1.0, 1.0, 1.0 / Z_STRETCH])
    traced = any_within(pts * stretch, edge_points(xyz, parent) * stretch, END_CLEAR_UM)
    return ends, traced.reshape(len(ends), len(SHELL_R), -1)


#: Path length (µm) over which the directions into and out of a node are measured by
#: :func:`_continuity`: longer than the annotation jitter bends a few edges, shorter than a jump.
BEND_UM = 6.0
BEND_HOPS = 12


def _continuity(raw: RawImage, c: np.ndarray, xyz: np.ndarray, parent: np.ndarray, fc: np.ndarray) -> dict:
    """Does the trace keep its fibre's course? (jump: it leaves its fibre at a crossing and follows
    a neighbour).

    * ``bend6``: the angle (degrees) between the way the trace comes in over the last 6 µm and the
      way it goes on over the next 6 µm (NaN at ends): a jump bends the path at a crossing, not at
      a branch point, while hand-trace jitter only bends single edges;
    * ``fwd_parent4`` / ``fwd_parent7``: the brightest untraced shell point within 40 degrees of
      the incoming 6 µm direction: the parent's fibre goes straight on, untraced;
    * ``up_fwd_parent``: its maximum over the 12 nodes above (the nodes after the turn carry it),
      and ``sec_max_bend6`` / ``sec_max_fwd_parent`` over the unbranched section."""
    n = len(xyz)
    step = np.where(parent >= 0, np.linalg.norm(xyz - xyz[np.maximum(parent, 0)], axis=1), 0.0)
    up = _along(graph.ancestors(parent, np.arange(n), BEND_HOPS), step, from_child=False)
    down_rows = np.full((n, BEND_HOPS + 1), -1, np.int64)
    down_rows[:, 0] = np.arange(n)
    for j in range(1, BEND_HOPS + 1):
        prev = down_rows[:, j - 1]
        down_rows[:, j] = np.where(prev >= 0, fc[np.maximum(prev, 0)], -1)
    down = _along(down_rows, step, from_child=True)
    u_in = _unit_rows(xyz - xyz[np.maximum(up, 0)])
    u_out = _unit_rows(xyz[np.maximum(down, 0)] - xyz)
    with np.errstate(invalid="ignore"):
        cos = np.clip(np.einsum("ij,ij->i", u_in, u_out), -1.0, 1.0)
    bend = np.where((up >= 0) & (down >= 0), np.degrees(np.arccos(cos)), np.nan)
    cone = (np.nan_to_num(u_in) @ SHELL_DIRS.T) > np.cos(np.radians(40.0))
    keep = cone[:, None, :] & ~raw.shell_cov & np.isfinite(raw.shell) & (up >= 0)[:, None, None]
    top = np.where(keep, raw.shell, -np.inf).max(axis=2)
    with np.errstate(all="ignore"):
        val = (top - raw.background[:, None]) / c[:, None]
    val = np.where(np.isfinite(val), val, 0.0)
    out = {"bend6": bend, "fwd_parent4": val[:, 0], "fwd_parent7": val[:, 1]}
    out.update(_upstream(parent, val.max(1), k=BEND_HOPS, name="up_fwd_parent"))
    del out["up_fwd_parent_hops"]
    out.update(_section_max(parent, {"bend6": np.nan_to_num(bend), "fwd_parent": val.max(1)}))
    return out


def _along(rows: np.ndarray, step: np.ndarray, from_child: bool) -> np.ndarray:
    """Per node, the first of ``rows`` (its ancestors or first-child descendants, one column per
    hop, -1 past an end) at least BEND_UM of path away, else the farthest one; -1 if none."""
    valid = rows >= 0
    # Edge lengths walked: to an ancestor, the edges of the rows before it; to a descendant, its own.
    edge = np.where(valid, step[np.maximum(rows, 0)], 0.0)
    walked = np.cumsum(edge[:, 1:], axis=1) if from_child else np.cumsum(edge[:, :-1], axis=1)
    ok = valid[:, 1:]
    far = ok & (walked >= BEND_UM)
    last = np.where(ok.any(1), ok.shape[1] - 1 - np.argmax(ok[:, ::-1], axis=1), -1)
    j = np.where(far.any(1), np.argmax(far, axis=1), last)
    return np.where(j >= 0, rows[np.arange(len(rows)), j + 1], -1)


def _unit_rows(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.where(norm > 0, v / np.where(norm > 0, norm, 1.0), np.nan)


def _nanmean(v: np.ndarray) -> np.ndarray:
    ok = np.isfinite(v)
    return np.where(ok.any(1), np.where(ok, v, 0).sum(1) / np.maximum(ok.sum(1), 1), np.nan)


_SPREAD = ("i_centre", "i_max1", "deficit3", "edge_min", "shell_unexpl7", "cone_unexpl", "snap_z", "snap_xy")


def _neighbourhood(parent: np.ndarray, feats: dict) -> dict:
    """Min and max of key features over the node, its parent, grandparent and children: errors come
    in runs, and an edge's evidence belongs to both its ends."""
    has = parent >= 0
    p = np.maximum(parent, 0)
    gp = np.where(has, parent[p], -1)
    out = {}
    for name, v in feats.items():
        v = np.nan_to_num(np.asarray(v, dtype=np.float64), nan=0.0)
        lo = v.copy()
        hi = v.copy()
        for nb, ok in ((p, has), (np.maximum(gp, 0), gp >= 0)):
            lo = np.where(ok, np.minimum(lo, v[nb]), lo)
            hi = np.where(ok, np.maximum(hi, v[nb]), hi)
        c = np.flatnonzero(has)
        np.minimum.at(lo, parent[c], v[c])
        np.maximum.at(hi, parent[c], v[c])
        out[f"{name}_nbmin"] = lo
        out[f"{name}_nbmax"] = hi
    return out


def _section_max(parent: np.ndarray, feats: dict) -> dict:
    """Each feature's maximum over the node's unbranched section. A trace that jumped onto a
    neighbour makes one terminal section with "the fibre goes on" at both ends (its own fibre past
    the turn, the neighbour past the tip); a correct twig has neither."""
    sec = graph.section_ids(parent, graph.child_counts(parent))
    out = {}
    for name, v in feats.items():
        m = np.full(len(parent), -np.inf)
        np.maximum.at(m, sec, np.nan_to_num(np.asarray(v, float), nan=-np.inf))
        out[f"sec_max_{name}"] = np.where(np.isfinite(m[sec]), m[sec], 0.0)
    return out


def _upstream(parent: np.ndarray, evidence: np.ndarray, k: int, name: str = "up_turn_off") -> dict:
    """The strongest 'fibre goes straight on where the trace turns' evidence among the k nodes
    above, and how far up it is: a trace that followed a neighbour carries it from the turn on."""
    anc = graph.ancestors(parent, np.arange(len(parent)), k)[:, 1:]
    ev = np.nan_to_num(np.asarray(evidence, float), nan=0.0)
    vals = np.where(anc >= 0, ev[np.maximum(anc, 0)], -1.0)
    j = vals.argmax(1) if len(vals) else np.zeros(0, int)
    return {name: vals.max(1) if len(vals) else np.zeros(0), f"{name}_hops": j + 1}
