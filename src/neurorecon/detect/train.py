"""``neurorecon train``: generate the benchmark, train the detector, measure it on the held-out split.

Reproducible: the crops are generated from fixed seeds (training seed ``seed``, validation
``seed + 1``, held-out ``seed + 2``), LightGBM runs deterministically, so the same command gives the
same model. The held-out split is only ever predicted, never used to fit or to pick a model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import HELDOUT_SOURCES, TRAIN_SOURCES, Split, build_split, load_sources, real_negatives
from ..synth.errors import ERROR_TYPES
from .evaluate import evaluate
from .model import Detector, fit


@dataclass
class TrainReport:
    detector: Detector
    heldout: dict            # setting name (and "all") -> metrics dict
    n_train_nodes: int
    seconds: float


def _names(etype: np.ndarray) -> np.ndarray:
    return np.array(("",) + ERROR_TYPES, dtype=object)[etype]


#: Training weight of a real image's correct node relative to a synthetic one: a few thousand real
#: nodes among half a million synthetic ones would otherwise hardly move a split.
REAL_WEIGHT = 5.0


def train(out: str | Path | None, *, n_train: int = 1200, n_valid: int = 150, n_heldout: int = 400, seed: int = 0,
          jobs: int = 2, rounds: int = 200, data_dir=None, progress=None, real: bool = True,
          cache: str | Path | None = None) -> TrainReport:
    """Generate the splits, fit, measure on the held-out split (and the DIADEM stacks).

    ``real``: add the DIADEM calibration stacks' gold nodes as correct examples
    (:func:`neurorecon.detect.dataset.real_negatives`); the report stacks are never used.
    ``cache``: a folder where the splits' feature tables are kept (and reused when the same split
    of the same features was built before), to refit without regenerating."""
    from .benchmark_real import CALIBRATION_STACKS

    t0 = time.time()
    train_golds = load_sources(TRAIN_SOURCES, data_dir)
    per_source = [load_sources((src,), data_dir) for src in HELDOUT_SOURCES]
    held_golds = [g for golds in per_source for g in golds]
    # Held-out gold index ranges per source: the fly neurons (hemibrain projection neurons) are
    # also reported apart, since training now sees fly projection-neuron axons (DIADEM).
    fly_from = sum(len(g) for src, g in zip(HELDOUT_SOURCES, per_source) if src != "navis:hemibrain")
    if not train_golds:
        raise FileNotFoundError("no training neurons found (expected ../shared/data/morphologies or $NEURORECON_DATA)")

    def split(golds, n, s, heldout):
        return _cached(cache, f"{'heldout' if heldout else 'train'}_{n}_{s}",
                       lambda: build_split(golds, n, s, heldout, jobs=jobs, progress=progress))

    tr = split(train_golds, n_train, seed, False)
    va = split(train_golds, n_valid, seed + 1, False)
    weight = np.ones(len(tr.y))
    if real:
        rn = real_negatives(CALIBRATION_STACKS, seed, data_dir)
        tr, n_real = _join(tr, rn), len(rn.y)
        weight = np.concatenate([weight, np.full(n_real, REAL_WEIGHT)])
    meta = {"command": f"neurorecon train --n-train {n_train} --n-valid {n_valid} --n-heldout {n_heldout} --seed {seed} --rounds {rounds}",
            "train_sources": list(TRAIN_SOURCES), "heldout_sources": list(HELDOUT_SOURCES),
            "real_negatives": list(CALIBRATION_STACKS) if real else [],
            "n_train_nodes": int(len(tr.y)), "n_train_errors": int(tr.y.sum())}
    det = fit(tr.X, tr.y, tr.etype, tr.names, seed=seed, rounds=rounds, valid=(va.X, va.y, va.parent), meta=meta,
              parent=tr.parent, groups=tr.crop, tip_rounds=rounds, sample_weight=weight)
    if n_heldout and held_golds:
        ho = split(held_golds, n_heldout, seed + 2, True)
        det.meta["heldout"] = heldout_metrics(det, ho, ho.source >= fly_from)
        det.meta["n_heldout_nodes"] = int(len(ho.y))
    det.meta["diadem"] = _diadem(det, data_dir)
    det.meta["train_seconds"] = round(time.time() - t0, 1)
    heldout = det.meta.get("heldout", {})
    if out is not None:
        det.save(out)
    return TrainReport(det, heldout, int(len(tr.y)), time.time() - t0)


def heldout_metrics(det: Detector, ho: Split, fly: np.ndarray | None = None) -> dict:
    """Metrics per imaging setting and overall ("all"), with the share of correct nodes flagged at
    0.5; with ``fly`` (per node: from a fly neuron), also "non_fly" and "fly"."""
    p, _ = det.predict(ho.X, ho.names, ho.parent, reason_threshold=np.inf)
    names = _names(ho.etype)
    subsets = {"all": np.ones(len(p), bool)}
    if fly is not None and fly.any():
        subsets.update(non_fly=~fly, fly=fly)
    subsets.update({s: ho.setting == s for s in sorted(set(ho.setting.tolist()))})
    out = {}
    for s, m in subsets.items():
        out[s] = evaluate(ho.y[m], p[m], names[m]).to_dict()
        ok = ho.y[m] == 0
        out[s]["correct_flagged"] = float((p[m][ok] >= 0.5).mean()) if ok.any() else float("nan")
    return out


def _diadem(det: Detector, data_dir) -> dict:
    """Nodes flagged per DIADEM stack (all false alerts); {} where the stacks are not available."""
    from .benchmark_real import DIADEM_STACKS, run_stack

    try:
        return {r.name: {"n": r.n, "flagged": r.flagged} for r in (run_stack(s, det, data_dir=data_dir) for s in DIADEM_STACKS)}
    except FileNotFoundError:
        return {}


def _join(a: Split, b: Split) -> Split:
    """Two splits as one; ``b``'s crops numbered after ``a``'s."""
    off = len(a.y)
    return Split(np.concatenate([a.X, b.X]), np.concatenate([a.y, b.y]), np.concatenate([a.etype, b.etype]),
                 np.concatenate([a.setting, b.setting]), np.concatenate([a.source, b.source]),
                 np.concatenate([a.crop, b.crop + a.crop.max() + 1]), a.names,
                 np.concatenate([a.parent, np.where(b.parent >= 0, b.parent + off, -1)]))


def _cached(cache, key: str, build) -> Split:
    """``build()``, or the split stored under ``key`` in ``cache`` by an earlier run with the same features."""
    if cache is None:
        return build()
    path = Path(cache) / f"{key}.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=True)
        return Split(z["X"], z["y"], z["etype"], z["setting"], z["source"], z["crop"], tuple(z["names"].tolist()), z["parent"])
    s = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, X=s.X, y=s.y, etype=s.etype, setting=s.setting, source=s.source, crop=s.crop,
             names=np.array(s.names, dtype=object), parent=s.parent)
    tmp.replace(path)
    return s
