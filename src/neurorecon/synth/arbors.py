"""Synthetic neuron arbors: the branching densities and shapes the real training neurons lack.

The real training neurons (mouse long-range axons, NeuroMorpho cortical cells) branch 0.3-0.7
times per 100 µm of cable. Many cell types branch far more: Purkinje and granule cells, microglia
and astrocytes 5-10 times, insect neuropil arbors about 30 times per 100 µm, most of it twigs of a
few µm. A detector that only ever saw sparse arbors learns that "a short side branch" means "a
spur" and that "another branch close by" means "a loop", and then flags the correct nodes of every
dense cell. Training on random arbors that span the whole range (each drawn from its own
:class:`ArborStyle`) teaches it to ask the image instead.

The arbors are grown section by section from a root: each section is a persistent random walk; at
its end it either branches (a continuing child and a side child, the side child often a short
twig) or ends; growth is kept inside a ball so that dense styles really are dense. Deterministic
under a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..morphology.neuron import Neuron

STEP_UM = 0.8


@dataclass(frozen=True)
class ArborStyle:
    """Parameters of one random arbor.

    Parameters
    ----------
    branch_per_100um : branch points per 100 µm of cable (sets the mean section length).
    twig_fraction : share of side branches that are twigs (one short section, then a tip).
    twig_um : mean twig length, µm.
    tortuosity : direction noise, radians per √µm.
    extent_um : radius of the ball the arbor grows in.
    cable_um : total cable length to grow.
    n_stems : primary branches leaving the root.
    root_radius, tip_radius : radius at the root and at the tips (µm); it tapers in between.
    typed : SWC types per stem (2, 3, 4) if True, else type 0 as in skeletons made from EM meshes.
    """

    branch_per_100um: float
    twig_fraction: float
    twig_um: float
    tortuosity: float
    extent_um: float
    cable_um: float
    n_stems: int
    root_radius: float
    tip_radius: float
    typed: bool

    @property
    def section_um(self) -> float:
        # a tree with B branch points has about 2B + 1 sections
        return 50.0 / self.branch_per_100um


def random_style(rng: np.random.Generator) -> ArborStyle:
    """A style drawn log-uniformly from sparse (0.5 branch points per 100 µm) to very dense (40)."""
    bp = float(np.exp(rng.uniform(np.log(0.5), np.log(40.0))))
    dense = bp > 8
    cable = float(rng.uniform(1500.0, 5000.0))
    # cable per µm³ of the ball: fly neuropil arbors ~1e-3, sparse projection cells far less
    density = float(np.exp(rng.uniform(np.log(2e-4), np.log(4e-3))))
    return ArborStyle(
        branch_per_100um=bp,
        twig_fraction=float(rng.uniform(0.3, 0.8) if dense else rng.uniform(0.0, 0.5)),
        twig_um=float(rng.uniform(1.0, 5.0)),
        tortuosity=float(rng.uniform(0.05, 0.35)),
        extent_um=float(np.cbrt(cable / density / (4 / 3 * np.pi))),
        cable_um=cable,
        n_stems=int(rng.integers(1, 7)),
        root_radius=float(rng.uniform(0.4, 2.0)),
        tip_radius=float(rng.uniform(0.08, 0.3)),
        typed=bool(rng.random() < 0.6),
    )


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _turn(d: np.ndarray, angle: float, rng: np.random.Generator) -> np.ndarray:
    """``d`` turned by ``angle`` radians about a random axis across it."""
    a = _unit(np.cross(d, rng.normal(size=3)))
    return _unit(np.cos(angle) * d + np.sin(angle) * a)


def _walk(start: np.ndarray, d0: np.ndarray, length: float, tortuosity: float, rng) -> np.ndarray:
    """Points every ~STEP_UM along a persistent random walk (the start point excluded)."""
    n = max(1, int(np.ceil(length / STEP_UM)))
    step = length / n
    drift = np.cumsum(rng.normal(0.0, tortuosity * np.sqrt(step), (n, 3)), axis=0)
    d = _unit(d0[None, :] + drift)
    return start + np.cumsum(d * step, axis=0)


def grow_arbor(style: ArborStyle, rng: np.random.Generator) -> Neuron:
    """One arbor of ``style``, root (type 1) at the origin, coordinates in µm."""
    xyz, parent, types, path = [np.zeros((1, 3))], [np.array([-1])], [np.array([1])], [np.zeros(1)]
    n_rows = 1
    cable = 0.0
    # queue items: (parent row, start point, direction, type, path distance at start, is twig)
    queue = []
    for k in range(style.n_stems):
        t = int(rng.choice([2, 3, 3, 4])) if style.typed else 0
        queue.append((0, np.zeros(3), _unit(rng.normal(size=3)), t, 0.0, False))
    head = 0
    while head < len(queue):
        prow, start, d, t, s0, twig = queue[head]
        head += 1
        mean = style.twig_um if twig else style.section_um
        length = float(np.clip(rng.exponential(mean), 0.6, 6 * mean + 1))
        r = np.linalg.norm(start)
        if r > 0.7 * style.extent_um:   # lean back into the ball, harder the further out
            d = _unit(d - (r / style.extent_um) * start / r)
        pts = _walk(start, d, length, style.tortuosity, rng)
        m = len(pts)
        xyz.append(pts)
        parent.append(np.concatenate([[prow], n_rows + np.arange(m - 1)]))
        types.append(np.full(m, t))
        steps = np.linalg.norm(np.diff(np.vstack([start, pts]), axis=0), axis=1)
        path.append(s0 + np.cumsum(steps))
        end_row = n_rows + m - 1
        n_rows += m
        cable += length
        if twig or cable >= style.cable_um:
            continue
        end_dir = _unit(pts[-1] - (pts[-2] if m > 1 else start))
        s_end = float(path[-1][-1])
        queue.append((end_row, pts[-1], _turn(end_dir, rng.uniform(0.1, 0.6), rng), t, s_end, False))
        side_twig = bool(rng.random() < style.twig_fraction)
        queue.append((end_row, pts[-1], _turn(end_dir, rng.uniform(0.5, 1.6), rng), t, s_end, side_twig))
    xyz_a = np.vstack(xyz)
    parent_a = np.concatenate(parent)
    dist = np.concatenate(path)
    taper = max(style.cable_um / max(style.n_stems, 1) / 4, 20.0)
    radius = np.maximum(style.tip_radius, style.root_radius * np.exp(-dist / taper))
    ids = np.arange(1, len(xyz_a) + 1)
    pids = np.where(parent_a >= 0, parent_a + 1, -1)
    return Neuron.from_arrays(ids, np.concatenate(types), xyz_a, radius, pids, source="synthetic arbor")


def synthetic_arbors(n: int, seed: int = 2026) -> list[Neuron]:
    """``n`` arbors, each of its own random style (deterministic under ``seed``)."""
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        out.append(grow_arbor(random_style(rng), rng))
    return out
