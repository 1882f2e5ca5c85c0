"""Training and held-out benchmark sets: which neurons, which imaging settings, how many crops.

The split is by neuron *and* by imaging: the held-out neurons (Allen V1 cell types, the varied
NeuroMorpho cell types, fly hemibrain neurons) and the held-out imaging settings below are never
used for training, which sees only mouse whole-brain axons, NeuroMorpho cortical cells and random
synthetic arbors (:mod:`neurorecon.synth.arbors`, for the branching densities the real training
cells lack) under randomly drawn settings from the training ranges.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.swc import read_swc
from ..synth.render import Imaging

#: ``diadem:calibration``: the gold traces of the DIADEM calibration stacks (fly projection-neuron
#: axons; :data:`neurorecon.detect.benchmark_real.CALIBRATION_STACKS`), rendered like any neuron.
TRAIN_SOURCES = ("mouse_wholebrain_axons", "cortical_cng", "synthetic:arbors", "diadem:calibration")
N_SYNTHETIC_ARBORS = 40
HELDOUT_SOURCES = ("allen_v1", "neuromorpho_varied", "navis:hemibrain")
#: Node spacing of training traces, µm (held-out traces: 1.5-3.5, :func:`neurorecon.synth.samples.make_sample`).
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


#: Share of training crops imaged in the confocal style (:func:`train_imaging`).
CONFOCAL_SHARE = 0.35


def train_imaging(rng: np.random.Generator) -> Imaging:
    """A random setting from the training ranges.

    A share of the crops (:data:`CONFOCAL_SHARE`) is imaged like a confocal stack (the DIADEM
    stacks): a few background photons cut to 0 by the detector offset, and a gain at which bright
    fibres saturate. Before session 9 every training background was noisy and unsaturated, and on
    real confocal stacks the detector flagged 10 % of the gold nodes."""
    vxy = rng.uniform(0.32, 0.65)
    im = Imaging(voxel_size=(vxy, vxy, rng.uniform(0.9, 1.2)), psf_sigma=(rng.uniform(0.3, 0.5), rng.uniform(0.8, 1.6)),
                 signal=rng.uniform(25, 150), background=rng.uniform(5, 30), background_variation=rng.uniform(0, 0.5),
                 read_noise=rng.uniform(0.5, 4.0), bead_rate=rng.uniform(0.3, 1.5), dim_rate=rng.uniform(0, 1.5),
                 bits=int(rng.choice([8, 16])), name="train")
    if rng.random() < CONFOCAL_SHARE:
        bg = rng.uniform(0.2, 4.0)
        noise = np.sqrt(bg + im.read_noise ** 2)
        im = im.with_changes(background=bg, black_level=bg + rng.uniform(0.0, 3.0) * noise,
                             gain_boost=float(np.exp(rng.uniform(np.log(0.7), np.log(4.0)))), bits=8, name="train_confocal")
    return im


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
    ``synthetic:arbors`` (random arbors of :mod:`neurorecon.synth.arbors`) or
    ``diadem:calibration`` (the DIADEM calibration stacks' gold traces)."""
    from ..synth.samples import gold_from_neuron

    data_dir = data_dir or shared_data_dir()
    out = []
    for src in sources:
        if src == "synthetic:arbors":
            from ..synth.arbors import synthetic_arbors

            out.extend(synthetic_arbors(N_SYNTHETIC_ARBORS))
            continue
        if src == "diadem:calibration":
            from .benchmark_real import CALIBRATION_STACKS, diadem_dir

            for name in CALIBRATION_STACKS:
                out.append(gold_from_neuron(read_swc(diadem_dir(data_dir) / f"{name}.swc", strict=False)))
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
    files = [] if spec is None or not spec.submodule_search_locations else sorted(
        glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "data", "swc", "*.swc")))
    if not files:      # as for a missing folder: a smaller held-out split would pass unnoticed
        raise FileNotFoundError("navis:hemibrain: the navis package's example skeletons are not installed "
                                "(pip install navis, or the dev/bench extras)")
    return files


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
    from ..synth.samples import make_sample

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
        # Hand traces often sit 1-2 voxels beside the fibre's centre as a whole (DIADEM's OP_2, 5, 6):
        # not an error, and training must say so.
        offset = None if heldout or rng.random() >= OFFSET_SHARE else _xy_offset(rng)
        s = make_sample(gold, others, imaging, rng, size_um=size, spacing=step, reroot=0.0 if heldout else 0.3,
                        trace_offset=offset)
        if s is not None:
            return s, g
    return None


#: Share of training traces shifted as a whole beside their fibre (:func:`_xy_offset`).
OFFSET_SHARE = 0.3


def _xy_offset(rng: np.random.Generator) -> np.ndarray:
    """A lateral shift of 0.3-0.8 µm in a random xy direction (and up to 0.3 µm in z)."""
    a = rng.uniform(0, 2 * np.pi)
    r = rng.uniform(0.3, 0.8)
    return np.array([r * np.cos(a), r * np.sin(a), rng.uniform(-0.3, 0.3)])


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


#: Node spacings (µm; None: as traced) at which the calibration stacks' gold traces are used as
#: correct examples, each also with a little annotation jitter.
REAL_SPACINGS = (None, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5)
REAL_JITTER_UM = 0.15


def real_negatives(stacks, seed: int, data_dir: Path | None = None) -> Split:
    """Correct examples from real confocal images: the gold traces of the DIADEM calibration
    stacks (:data:`neurorecon.detect.benchmark_real.CALIBRATION_STACKS`), as traced and resampled
    to the training spacings, all nodes label 0. Every variant of one stack gets the stack's crop
    number, so that the context model's out-of-fold scores never come from a model that saw the
    same stack. No error is injected: what lies untraced in a real image is unknown."""
    from ..io.volume import open_volume
    from .benchmark_real import DIADEM_VOXEL_UM, diadem_dir
    from .features import compute_features
    from ..synth.samples import resample_rows

    parts = []
    for k, name in enumerate(stacks):
        folder = diadem_dir(data_dir)
        gold = read_swc(folder / f"{name}.swc")
        volume = open_volume(folder / f"{name}.tif", voxel_size=DIADEM_VOXEL_UM)
        rng = np.random.default_rng([seed, k])
        for spacing in REAL_SPACINGS:
            n = gold
            if spacing is not None:
                rows, parent = resample_rows(gold.parent, gold.xyz, spacing)
                if len(rows) == len(gold):
                    continue
                n = _as_tree(gold, rows, parent)
            n = n.with_changes(xyz=n.xyz + rng.normal(0.0, REAL_JITTER_UM, n.xyz.shape))
            ft = compute_features(n, volume)
            parts.append((ft, k, name))
    off = np.cumsum([0] + [len(ft.X) for ft, _, _ in parts])[:-1]
    m = sum(len(ft.X) for ft, _, _ in parts)
    return Split(np.concatenate([ft.X for ft, _, _ in parts]), np.zeros(m, np.int8), np.zeros(m, np.int8),
                 np.concatenate([np.full(len(ft.X), f"real_{nm}", dtype=object) for ft, _, nm in parts]),
                 np.concatenate([np.full(len(ft.X), -1 - k) for ft, k, _ in parts]),
                 np.concatenate([np.full(len(ft.X), k) for ft, k, _ in parts]), parts[0][0].names,
                 np.concatenate([np.where(ft.parent >= 0, ft.parent + o, -1) for (ft, _, _), o in zip(parts, off)]))


def _as_tree(neuron, rows: np.ndarray, parent: np.ndarray):
    """The nodes ``rows`` of ``neuron`` as a tree with parent rows ``parent`` (ids 1..n)."""
    from ..morphology.neuron import Neuron

    ids = np.arange(1, len(rows) + 1)
    return Neuron.from_arrays(ids, neuron.types[rows], neuron.xyz[rows], neuron.radius[rows],
                              np.where(parent >= 0, parent + 1, -1))
