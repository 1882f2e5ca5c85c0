"""Benchmark generator: fMOST-like image crops with "manual" traces and per-node error labels.

From a real reconstruction (the gold skeleton, µm) a crop box is chosen along the neuron; the gold
fibres inside it, plus distractor fibres from other neurons placed nearby, are rendered with one
:class:`~neurorecon.synth.render.Imaging` setting. The trace is the gold resampled at a manual
tracing spacing with annotation jitter (label 0), into which the errors of
:mod:`neurorecon.synth.errors` are injected (label 1). Coordinates are shifted so that the image's
voxel [0, 0, 0] centre is at (0, 0, 0) µm, the convention of ``neurorecon detect``.

The same seed gives the same sample, bit for bit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..morphology import graph
from ..morphology.neuron import Neuron
from .errors import ERROR_TYPES, INJECTORS, Scene, Trace
from ..morphology.spatial import points_along
from .render import Fibres, Imaging, render

#: How often each error type is drawn (jumps and loops need a suitable place, so are tried more).
ERROR_WEIGHTS = {"off_signal_z": 1.4, "off_signal_xy": 1.0, "jump": 1.2, "gap": 1.0, "loop": 1.0, "wrong_type": 0.8,
                 "spur": 1.0, "early_stop": 1.0, "overextension": 1.0}
JITTER_UM = (0.25, 0.25, 0.4)


@dataclass
class Sample:
    """One benchmark item: image [z, y, x], trace (µm, voxel [0,0,0] centre at the origin) and labels."""

    image: np.ndarray
    imaging: Imaging
    trace: Neuron
    label: np.ndarray
    etype: np.ndarray
    gold_xyz: np.ndarray          # where each trace node belongs on the gold (NaN: nowhere)
    gold_fibres: Fibres           # the gold skeleton edges inside the crop, for distance measures
    gold_types: np.ndarray        # each node's type before errors were injected
    info: dict = field(default_factory=dict)

    def error_names(self) -> np.ndarray:
        names = np.array(("",) + ERROR_TYPES, dtype=object)
        return names[self.etype]


# ------------------------------------------------------------------------------- gold handling
def gold_from_neuron(neuron: Neuron, scale: float = 1.0) -> Neuron:
    """A clean gold skeleton: structure resolved, scaled to µm, soma-less types kept."""
    if scale != 1.0:
        neuron = neuron.with_changes(xyz=neuron.xyz * scale, radius=neuron.radius * scale)
    bad = neuron.in_cycle
    if bad.any():
        neuron = neuron.take(np.flatnonzero(~bad))
    return neuron


def resample_rows(parent: np.ndarray, xyz: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows kept when a tree is resampled to about ``spacing`` µm (roots, tips and branch points
    always kept) and each kept row's kept parent. Vectorised: a node is kept when its path distance
    from the root crosses a multiple of ``spacing``."""
    length = graph.edge_lengths(xyz, parent)
    _, dist, _ = graph.ancestor_sums(parent, length)
    nc = graph.child_counts(parent)
    p = np.maximum(parent, 0)
    crosses = np.floor(dist / spacing) != np.floor(dist[p] / spacing)
    keep = (parent < 0) | (nc != 1) | crosses
    top = graph.nearest_marked_ancestor(parent, keep)
    kept_parent = np.where(parent >= 0, top[p], -1)
    rows = np.flatnonzero(keep)
    return rows, graph.induced_parents(kept_parent, rows)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _donor_pieces(others: list[Neuron], rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Unbranched-or-not paths of >= 45 µm from other neurons, as point lists root-ward."""
    out = []
    for _ in range(n * 4):
        if not others or len(out) >= n:
            break
        o = others[int(rng.integers(len(others)))]
        r = int(rng.integers(len(o)))
        anc = graph.ancestors(o.parent, np.array([r]), 200)[0]
        anc = anc[anc >= 0]
        pts = o.xyz[anc]
        if len(pts) > 2 and np.linalg.norm(np.diff(pts, axis=0), axis=1).sum() >= 45:
            out.append(pts)
    return out


def _distractor(other: Neuron, target: np.ndarray, rng: np.random.Generator, lo, hi) -> Fibres:
    """Another neuron, rotated and moved so that one of its nodes lies 3-12 µm from ``target``."""
    q = other.xyz[int(rng.integers(len(other)))]
    rot = _random_rotation(rng)
    offset = rng.normal(size=3)
    offset *= rng.uniform(3.0, 12.0) / np.linalg.norm(offset)
    xyz = (other.xyz - q) @ rot.T + target + offset
    f = Fibres.from_tree(xyz, other.parent, other.radius, brightness=rng.uniform(0.6, 1.6))
    pad = 10.0
    near = np.all((np.minimum(f.a, f.b) <= hi + pad) & (np.maximum(f.a, f.b) >= lo - pad), axis=1)
    return Fibres(f.a[near], f.b[near], f.radius[near], f.brightness[near])


# ---------------------------------------------------------------------------------- the sample
def make_sample(gold: Neuron, others: list[Neuron], imaging: Imaging, rng: np.random.Generator, *,
                size_um: tuple[float, float, float] = (96.0, 96.0, 64.0), spacing: float | None = None,
                n_errors: tuple[int, int] = (1, 4), n_distractors: tuple[int, int] = (0, 3),
                error_weights: dict | None = None, reroot: float = 0.0,
                trace_offset: np.ndarray | None = None) -> Sample | None:
    """One crop of ``gold`` with its rendered image and an error-injected trace (None if the crop
    holds too little of the neuron). ``trace_offset`` (µm): the whole trace lies that far beside
    its fibre (a hand trace off the fibre's centre; not an error)."""
    spacing = float(rng.uniform(1.5, 3.5)) if spacing is None else spacing
    vs = np.asarray(imaging.voxel_size, float)
    shape = tuple(int(s) for s in np.ceil(np.asarray(size_um)[::-1] / vs[::-1]))
    extent = (np.array(shape[::-1]) - 1) * vs
    rows, kept_parent = resample_rows(gold.parent, gold.xyz, spacing)
    centre = gold.xyz[rows[int(rng.integers(len(rows)))]]
    lo = centre - extent / 2 + rng.uniform(-0.3, 0.3, 3) * extent
    hi = lo + extent
    inside = np.all((gold.xyz[rows] >= lo + 0.5) & (gold.xyz[rows] <= hi - 0.5), axis=1)
    trace = _crop_trace(gold, rows, kept_parent, inside, rng, reroot)
    if trace is None:
        return None
    if trace_offset is not None:
        trace.xyz += np.asarray(trace_offset, float)
    fibres = [Fibres.from_tree(gold.xyz, gold.parent, gold.radius)]
    kmin, kmax = n_distractors
    alive = np.flatnonzero(trace.alive)
    for _ in range(int(rng.integers(kmin, kmax + 1))):
        if others:
            target = trace.gold[alive[int(rng.integers(len(alive)))]]
            fibres.append(_distractor(others[int(rng.integers(len(others)))], target, rng, lo, hi))
    scene_pts = _fibre_points(_clip(Fibres.concat(fibres), lo, hi, 20.0))
    gold_pts = _fibre_points(_clip(fibres[0], lo, hi, 20.0))
    scene = Scene(trace, scene_pts, gold_pts, lo, hi, spacing, _donor_pieces(others, rng, 3), rng)
    injected = _inject(scene, rng, n_errors, error_weights or ERROR_WEIGHTS)
    fibres.extend(trace.extra_fibres)
    all_fibres = _clip(Fibres.concat(fibres), lo, hi, 10.0)
    image = render(_shift(all_fibres, lo), np.zeros(3), shape, imaging, rng)
    neuron, keep = _to_neuron(trace, lo)
    gold_in = _clip(Fibres.from_tree(gold.xyz, gold.parent, gold.radius), lo, hi, 0.0)
    info = {"imaging": imaging.name, "spacing_um": spacing, "origin_um": lo.tolist(), "errors": injected,
            "voxel_size": list(imaging.voxel_size)}
    return Sample(image, imaging, neuron, trace.label[keep], trace.etype[keep], trace.gold[keep] - lo,
                  _shift(gold_in, lo), trace.gold_types[keep], info)


def _fibre_points(f: Fibres) -> np.ndarray:
    return points_along(f.a, f.b, 0.5)[0]


def _clip(f: Fibres, lo, hi, pad: float) -> Fibres:
    near = np.all((np.minimum(f.a, f.b) <= hi + pad) & (np.maximum(f.a, f.b) >= lo - pad), axis=1)
    return Fibres(f.a[near], f.b[near], f.radius[near], f.brightness[near])


def _shift(f: Fibres, lo) -> Fibres:
    return Fibres(f.a - lo, f.b - lo, f.radius, f.brightness)


def _crop_trace(gold: Neuron, rows, kept_parent, inside, rng, reroot: float = 0.0) -> Trace | None:
    """The resampled gold inside the box, with jitter; components under 3 nodes are dropped. With
    probability ``reroot`` each piece is re-hung from one of its tips (a trace begun at a fibre's
    end, not at the soma or where the fibre enters the image)."""
    sel = np.flatnonzero(inside)
    if len(sel) < 15:
        return None
    parent = graph.induced_parents(kept_parent, sel)
    root, _, _ = graph.ancestor_sums(parent)
    size = np.bincount(root, minlength=len(sel))
    keep = size[root] >= 3
    if keep.sum() < 15:
        return None
    sel2 = np.flatnonzero(keep)
    parent = graph.induced_parents(parent, sel2)
    if reroot > 0:
        nc = graph.child_counts(parent)
        root, _, _ = graph.ancestor_sums(parent)
        for r in np.flatnonzero(parent < 0).tolist():
            tips = np.flatnonzero((root == r) & (nc == 0))
            if len(tips) and rng.random() < reroot:
                parent = graph.reroot(parent, int(tips[rng.integers(len(tips))]))
    src = rows[sel[sel2]]
    g = gold.xyz[src]
    types = gold.types[src].copy()
    types[~np.isin(types, (1, 2, 3, 4))] = 3  # hemibrain 0/5/6 and other codes: treat as neurite
    radius = gold.radius[src]
    xyz = g + rng.normal(0.0, JITTER_UM, g.shape)
    return Trace(xyz, parent, types, radius, g.copy())


def _inject(scene: Scene, rng, n_errors, weights) -> list[str]:
    names = list(weights)
    p = np.array([weights[k] for k in names], float)
    p /= p.sum()
    # Dense crops (fly neurons, dendrite trees) get proportionally more errors.
    scale = max(1.0, scene.trace.alive.sum() / 80.0)
    want = int(round(rng.integers(n_errors[0], n_errors[1] + 1) * scale))
    done: list[str] = []
    for _ in range(want * 3):
        if len(done) >= want:
            break
        name = names[int(rng.choice(len(names), p=p))]
        if INJECTORS[name](scene):
            done.append(name)
    return done


def _to_neuron(trace: Trace, lo) -> tuple[Neuron, np.ndarray]:
    """Compact the trace (deleted nodes go; orphans become roots) into a Neuron with ids 1..N."""
    keep = np.flatnonzero(trace.alive)
    parent = graph.induced_parents(trace.parent, keep)
    ids = np.arange(1, len(keep) + 1)
    parent_ids = np.where(parent >= 0, parent + 1, -1)
    n = Neuron.from_arrays(ids, trace.types[keep], np.round(trace.xyz[keep] - lo, 4), trace.radius[keep], parent_ids)
    return n, keep


# --------------------------------------------------------------------------------- writing
def write_sample(sample: Sample, folder: str | os.PathLike, name: str, fmt: str = "tif") -> dict:
    """Write image (3D TIFF or OME-Zarr), trace SWC, labels CSV and a JSON description."""
    import json

    from ..io.atomic import atomic_write_text
    from ..io.swc import write_swc
    from ..io.volume import write_tiff, write_zarr

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    img_path = folder / (f"{name}.tif" if fmt == "tif" else f"{name}.zarr")
    if fmt == "tif":
        write_tiff(img_path, sample.image, sample.imaging.voxel_size)
    else:
        write_zarr(img_path, sample.image, sample.imaging.voxel_size, overwrite=True)
    write_swc(sample.trace, folder / f"{name}.swc")
    names = sample.error_names()
    lines = ["node_id,label,error_type"] + [f"{i},{l},{e}" for i, l, e in zip(sample.trace.ids, sample.label, names)]
    atomic_write_text(folder / f"{name}.labels.csv", "\n".join(lines) + "\n")
    gold = {"a": np.round(sample.gold_fibres.a, 4).tolist(), "b": np.round(sample.gold_fibres.b, 4).tolist()}
    meta = {**sample.info, "image": img_path.name, "trace": f"{name}.swc", "labels": f"{name}.labels.csv",
            "imaging_params": {k: getattr(sample.imaging, k) for k in sample.imaging.__dataclass_fields__},
            "gold_segments": gold, "gold_xyz": np.where(np.isnan(sample.gold_xyz), None, sample.gold_xyz.round(4)).tolist()}
    atomic_write_text(folder / f"{name}.json", json.dumps(meta))
    return meta
