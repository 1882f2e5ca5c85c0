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

from .dataset import HELDOUT_SOURCES, TRAIN_SOURCES, build_split, load_sources
from .errors import ERROR_TYPES
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


def train(out: str | Path | None, *, n_train: int = 1200, n_valid: int = 150, n_heldout: int = 400, seed: int = 0,
          jobs: int = 2, rounds: int = 200, data_dir=None, progress=None) -> TrainReport:
    t0 = time.time()
    train_golds = load_sources(TRAIN_SOURCES, data_dir)
    held_golds = load_sources(HELDOUT_SOURCES, data_dir)
    if not train_golds:
        raise FileNotFoundError("no training neurons found (expected ../shared/data/morphologies or $NEURORECON_DATA)")
    tr = build_split(train_golds, n_train, seed, False, jobs=jobs, progress=progress)
    va = build_split(train_golds, n_valid, seed + 1, False, jobs=jobs, progress=progress)
    meta = {"command": f"neurorecon train --n-train {n_train} --n-valid {n_valid} --n-heldout {n_heldout} --seed {seed} --rounds {rounds}",
            "train_sources": list(TRAIN_SOURCES), "heldout_sources": list(HELDOUT_SOURCES),
            "n_train_nodes": int(len(tr.y)), "n_train_errors": int(tr.y.sum())}
    det = fit(tr.X, tr.y, tr.etype, tr.names, seed=seed, rounds=rounds, valid=(va.X, va.y, va.parent), meta=meta,
              parent=tr.parent, groups=tr.crop, tip_rounds=rounds)
    heldout = {}
    if n_heldout and held_golds:
        ho = build_split(held_golds, n_heldout, seed + 2, True, jobs=jobs, progress=progress)
        p, _ = det.predict(ho.X, ho.names, ho.parent, reason_threshold=np.inf)
        names = _names(ho.etype)
        heldout["all"] = evaluate(ho.y, p, names).to_dict()
        for s in sorted(set(ho.setting.tolist())):
            m = ho.setting == s
            heldout[s] = evaluate(ho.y[m], p[m], names[m]).to_dict()
        det.meta["heldout"] = heldout
        det.meta["n_heldout_nodes"] = int(len(ho.y))
    det.meta["train_seconds"] = round(time.time() - t0, 1)
    if out is not None:
        det.save(out)
    return TrainReport(det, heldout, int(len(tr.y)), time.time() - t0)
