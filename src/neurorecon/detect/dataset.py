"""Training and held-out benchmark sets: which neurons, which imaging settings, how many crops.

The split is by neuron *and* by imaging: the held-out neurons (Allen V1 cell types, the varied
NeuroMorpho cell types, fly hemibrain neurons) and the held-out imaging settings below are never
used for training, which sees only mouse whole-brain axons, NeuroMorpho cortical cells and random
synthetic arbors (:mod:`neurorecon.detect.arbors`, for the branching densities the real training
cells lack) under randomly drawn settings from the training ranges.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.swc import read_swc
from .render import Imaging

TRAIN_SOURCES = ("mouse_wholebrain_axons", "cortical_cng", "synthetic:arbors")
N_SYNTHETIC_ARBORS = 40
HELDOUT_SOURCES = ("allen_v1", "neuromorpho_varied", "navis:hemibrain")
#: Node spacing of training traces, µm (held-out traces: 1.5-3.5, :func:`neurorecon.detect.synth.make_sample`).
TRAIN_SPACING_UM = (1.0, 3.5)

#: Imaging settings of the held-out split; none lies inside the training ranges on every parameter.
HELDOUT_IMAGING = (
    Imaging(voxel_size=(0.3, 0.3, 1.0), psf_sigma=(0.25, 1.8), signal=30.0, background=20.0, background_variation=0.3,
            read_noise=2.0, bead_rate=1.0, dim_rate=1.0, bits=8, name="fmost_0.3um_lowcontrast"),
    Imaging(voxel_size=(1.0, 1.0, 1.0), psf_sigma=(0.6, 0.9), signal=80.0, background=8.0, background_variation=0.2,
            read_noise=1.0, bead_rate=1.8, dim_rate=0.5, bits=16, name="iso_1um_16bit"),
    Imaging(voxel_size=(0.5, 0.5, 1.0), psf_sigma=(0.4, 1.2), signal=18.0, background=10.0, background_variation=0.4,
            read_noise=5.0, bead_rate=1.0, dim_rate=1.0, bits=8, name="noisy_0.5um"),
    Imaging(voxel_size=(0.7, 0.7, 1.0), psf_sigma=(0.45, 1.4), signal=60.0, background=25.0, background_variation=0.8,
            read_noise=2.0, bead_rate=0.5, dim_rate=2.5, bits=16, name="uneven_0.7um"),
)


def train_imaging(rng: np.random.Generator) -> Imaging:
    """A random setting from the training ranges."""
    vxy = rng.uniform(0.35, 0.65)
    return Imaging(voxel_size=(vxy, vxy, rng.uniform(0.9, 1.2)), psf_sigma=(rng.uniform(0.3, 0.5), rng.uniform(0.8, 1.6)),
                   signal=rng.uniform(25, 150), background=rng.uniform(5, 30), background_variation=rng.uniform(0, 0.5),
                   read_noise=rng.uniform(0.5, 4.0), bead_rate=rng.uniform(0.3, 1.5), dim_rate=rng.uniform(0, 1.5),
                   bits=int(rng.choice([8, 16])), name="train")


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repository (or $NEURORECON_DATA)."""
    env = os.environ.get("NEURORECON_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for up in here.parents:
        cand = up.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return Path("../shared/data")


def load_sources(sources, data_dir: Path | None = None, min_nodes: int = 30) -> list:
    """Gold neurons (µm) of the named sources: folders under data/morphologies,
    ``navis:hemibrain`` (the navis wheel's hemibrain skeletons, converted from 8 nm voxels) or
    ``synthetic:arbors`` (random arbors of :mod:`neurorecon.detect.arbors`)."""
    from .synth import gold_from_neuron

    data_dir = data_dir or shared_data_dir()
    out = []
    for src in sources:
        if src == "synthetic:arbors":
            from .arbors import synthetic_arbors

            out.extend(synthetic_arbors(N_SYNTHETIC_ARBORS))
            continue
        if src == "navis:hemibrain":
            files, scale = _navis_swcs(), 0.008
        else:
            folder = data_dir / "morphologies" / src
            if not folder.is_dir():   # silently training on fewer neurons would be worse than stopping
                raise FileNotFoundError(f"{folder}: no such folder (set $NEURORECON_DATA to the shared data folder)")
            files, scale = sorted(glob.glob(str(folder / "*.swc"))), 1.0
        for f in files:
            n = read_swc(f, strict=False)
            if len(n) >= min_nodes:
                out.append(gold_from_neuron(n, scale))
    return out


def _navis_swcs() -> list[str]:
    import importlib.util

    spec = importlib.util.find_spec("navis")
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "data", "swc", "*.swc")))


@dataclass
class Split:
    X: np.ndarray
    y: np.ndarray
    etype: np.ndarray
    setting: np.ndarray     # imaging setting name per node
    source: np.ndarray      # index of the gold neuron per node
    crop: np.ndarray        # crop number per node
    names: tuple
    parent: np.ndarray      # parent row within the split (-1 at roots; crops are separate trees)


def draw_sample(golds: list, i: int, seed: int, heldout: bool, size=(80.0, 80.0, 48.0), spacing: float | None = None):
    """Crop number ``i`` of a split: a deterministic (seed, i) draw of gold neuron, imaging and crop.
    Returns ``(sample, gold index)``; None if 20 draws found no crop with enough of a neuron.
    ``spacing`` (µm) fixes the trace's node spacing (otherwise drawn from the split's range)."""
    from .synth import make_sample

    rng = np.random.default_rng([seed, i])
    for _ in range(20):
        g = int(rng.integers(len(golds)))
        imaging = HELDOUT_IMAGING[i % len(HELDOUT_IMAGING)] if heldout else train_imaging(rng)
        others = [golds[k] for k in range(len(golds)) if k != g] or golds
        gold = golds[g]
        if not heldout:  # fibre thickness varies more across labs and cell types than in the training neurons
            gold = gold.with_changes(radius=gold.radius * rng.uniform(0.4, 3.0))
            if rng.random() < 0.5:
                gold = without_soma_type(gold)
        # Training traces are also sampled more densely than the held-out ones (1 µm, as many
        # tracers and resampling tools leave them), so that spacing is learnt as a nuisance.
        step = spacing if spacing is not None or heldout else float(rng.uniform(*TRAIN_SPACING_UM))
        s = make_sample(gold, others, imaging, rng, size_um=size, spacing=step, reroot=0.0 if heldout else 0.3)
        if s is not None:
            return s, g
    return None


def without_soma_type(neuron):
    """The same tree with its soma nodes (type 1) given the type of a neurite leaving them (0 if
    none): traces of fragments, or whose tracer never marked the soma, start at a root that is not
    a soma. Without such trees in training, every non-soma root inside the image looks like the
    far end of a gap."""
    t = neuron.types.copy()
    parent = neuron.parent
    c = np.flatnonzero(parent >= 0)
    leaving = c[(t[c] != 1) & (t[parent[c]] == 1)]
    new = np.where(t == 1, 0, t)
    new[parent[leaving]] = t[leaving]
    return neuron.with_changes(types=new)


def _features_of(args):
    from ..io.volume import open_volume
    from .features import compute_features

    drawn = draw_sample(_GOLDS, *args)
    if drawn is None:
        return None
    s, g = drawn
    ft = compute_features(s.trace, open_volume(s.image, voxel_size=s.imaging.voxel_size))
    return ft.X, s.label, s.etype, s.imaging.name, g, ft.names, ft.parent


_GOLDS: list = []


def _init(golds):
    global _GOLDS
    _GOLDS = golds


def build_split(golds: list, n_crops: int, seed: int, heldout: bool, *, jobs: int = 2,
                size: tuple = (80.0, 80.0, 48.0), progress=None) -> Split:
    """Generate ``n_crops`` samples and their features (in ``jobs`` processes, deterministic)."""
    import contextlib
    import multiprocessing as mp

    tasks = [(i, seed, heldout, size) for i in range(n_crops)]
    with contextlib.ExitStack() as stack:
        if jobs > 1:
            pool = stack.enter_context(mp.get_context("fork").Pool(jobs, initializer=_init, initargs=(golds,)))
            results_iter = pool.imap(_features_of, tasks, chunksize=4)
        else:
            _init(golds)
            results_iter = map(_features_of, tasks)
        results = []
        for r in results_iter:
            results.append(r)
            if progress:
                progress(1)
    results = [(k, r) for k, r in enumerate(results) if r is not None]
    offsets = np.cumsum([0] + [len(r[1]) for _, r in results])[:-1]
    parent = np.concatenate([np.where(r[6] >= 0, r[6] + o, -1) for (_, r), o in zip(results, offsets)])
    return Split(np.concatenate([r[0] for _, r in results]),
                 np.concatenate([r[1] for _, r in results]).astype(np.int8),
                 np.concatenate([r[2] for _, r in results]).astype(np.int8),
                 np.concatenate([np.full(len(r[1]), r[3], dtype=object) for _, r in results]),
                 np.concatenate([np.full(len(r[1]), r[4]) for _, r in results]),
                 np.concatenate([np.full(len(r[1]), k) for k, r in results]), results[0][1][5], parent)
