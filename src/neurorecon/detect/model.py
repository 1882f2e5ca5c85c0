"""The learned detector: gradient-boosted trees over the per-node features.

Four LightGBM models ship in ``neurorecon/detect/models/`` (LightGBM's text format, gzipped:
a quarter of the size): ``detector.txt.gz`` gives a first p(error) per node from its features,
``context.txt.gz`` the final p(error) from the first scores around the node in the tree
(:mod:`neurorecon.detect.context`), ``tips.txt.gz`` a second opinion at trace ends (trained on
tips only; a tip's p is the larger of the two), and ``reasons.txt.gz`` (trained on error nodes
only) names the most likely kind of error, which is reported as the node's ``reason``. ``meta.json`` records the
feature names (the table must match them exactly), the training command, the decision point and the
held-out numbers.

The decision point: the trees are trained with error nodes weighted up, so their raw score is not a
probability, and where 0.5 falls on it is an accident of the weights. Training picks the raw score
that best separates the validation crops (Youden's J: recall minus false-positive rate, highest)
and ``predict`` rescales the odds so that this score lands on 0.5, the documented threshold. The
map is strictly increasing, so ranks (AUC, recall at a fixed false-positive rate) are unchanged.
"""

from __future__ import annotations

import gzip
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..morphology.graph import child_counts
from ..synth.errors import ERROR_TYPES

MODEL_DIR = Path(__file__).with_name("models")


class ModelError(RuntimeError):
    pass


@dataclass
class Detector:
    booster: object
    reasons: object
    names: tuple[str, ...]
    meta: dict
    context: object = None      # second-look model over the first scores in the tree (None: first scores are final)
    tips: object = None         # model of trace ends only (None: tips are scored like any node)
    decision_point: float = 0.5  # raw score that ``predict`` maps to p = 0.5
    context_with_features: bool = False  # the context model also reads the node's own features (session 9b)

    def predict(self, X: np.ndarray, names: tuple[str, ...], parent: np.ndarray | None = None,
                reason_threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """p(error) and the reason (error type name) for every row of the feature table.

        ``parent`` (parent rows, -1 at roots; :attr:`FeatureTable.parent`) is needed by a detector
        with a context model. With ``reason_threshold``, reasons are worked out only for rows with p
        at or above it (the others get ""): the reason model is large, and most nodes are fine."""
        if tuple(names) != tuple(self.names):
            raise ModelError("feature table does not match the model's features (retrain with `neurorecon train`)")
        if len(X) == 0:
            return np.zeros(0), np.zeros(0, dtype=object)
        if (self.context is not None or self.tips is not None) and (parent is None or len(parent) != len(X)):
            raise ModelError("this detector reads each node's neighbours in the tree: pass the parent rows")
        p = np.asarray(self.booster.predict(X, num_threads=2))
        if self.context is not None:
            table = _context_table(parent, p, X, names, self.context_with_features)
            p = np.asarray(self.context.predict(table, num_threads=2))
        if self.tips is not None:
            tip = np.flatnonzero(_tip_rows(parent))
            if len(tip):
                p[tip] = np.maximum(p[tip], self.tips.predict(X[tip], num_threads=2))
        p = rescale_odds(p, self.decision_point)
        rows = np.arange(len(X)) if reason_threshold is None else np.flatnonzero(p >= reason_threshold)
        reason = np.full(len(X), "", dtype=object)
        if len(rows):
            r = np.asarray(self.reasons.predict(X[rows], num_threads=2)).reshape(len(rows), -1)
            reason[rows] = np.array(ERROR_TYPES, dtype=object)[r.argmax(1)]
        return p, reason

    def save(self, folder: str | Path) -> None:
        from ..io.atomic import atomic_write_bytes, atomic_write_text

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, model in (("detector", self.booster), ("reasons", self.reasons), ("context", self.context),
                            ("tips", self.tips)):
            if model is None:
                continue
            atomic_write_bytes(folder / f"{name}.txt.gz", gzip.compress(model.model_to_string().encode(), mtime=0))
        atomic_write_text(folder / "meta.json", json.dumps({**self.meta, "features": list(self.names)}, indent=1))


def load_detector(folder: str | Path | None = None, *, without_pandas: bool = False) -> Detector:
    """The shipped detector (or one trained into ``folder``); reads local files only.

    ``without_pandas``: import LightGBM (if not yet imported) with pandas hidden. LightGBM imports
    pandas, when installed, only to accept DataFrames, which neurorecon never gives it; the import
    costs ~0.3 s of a `neurorecon detect` run. LightGBM then takes no DataFrames in this process,
    so only a command that owns its process (the CLI) should ask for it."""
    if without_pandas and "lightgbm" not in sys.modules and "pandas" not in sys.modules:
        sys.modules["pandas"] = None           # makes `import pandas` raise ImportError
        try:
            import lightgbm  # noqa: F401
        finally:
            del sys.modules["pandas"]
    import lightgbm as lgb

    folder = Path(folder) if folder else MODEL_DIR
    try:
        meta = json.loads((folder / "meta.json").read_text())
        booster = lgb.Booster(model_str=gzip.decompress((folder / "detector.txt.gz").read_bytes()).decode())
        reasons = lgb.Booster(model_str=gzip.decompress((folder / "reasons.txt.gz").read_bytes()).decode())
        context = None
        if meta.get("context_features"):
            context = lgb.Booster(model_str=gzip.decompress((folder / "context.txt.gz").read_bytes()).decode())
        tips = None
        if meta.get("tip_model"):
            tips = lgb.Booster(model_str=gzip.decompress((folder / "tips.txt.gz").read_bytes()).decode())
    except FileNotFoundError as e:
        raise ModelError(f"no trained detector in {folder} ({Path(e.filename).name} missing); run `neurorecon train`") from None
    return Detector(booster, reasons, tuple(meta["features"]), meta, context, tips, float(meta.get("decision_point", 0.5)),
                    bool(meta.get("context_with_features", False)))


def rescale_odds(p: np.ndarray, point: float) -> np.ndarray:
    """Scores with their odds multiplied so that ``point`` maps to 0.5 (0 and 1 stay put)."""
    if point == 0.5:
        return p
    k = (1.0 - point) / point
    return p * k / (p * k + (1.0 - p))


#: At most this share of the validation crops' correct nodes may be flagged (session 9): Youden's
#: J alone flagged 3.6 % of the held-out correct nodes, and a proofreader clears each by hand.
MAX_VALID_FPR = 0.02


#: The context model's own settings (session 9b, chosen on the validation crops): it reads the
#: first scores around the node and the node's own features, and a slower, smaller-leaved model
#: (with 1.5x the first model's rounds) raised validation recall at 1.4 % FPR from 0.917 to 0.929;
#: on the 16 context columns alone no setting passed 0.920.
CONTEXT_PARAMS = dict(learning_rate=0.05, num_leaves=63)

# Chosen on the validation crops (session 8): 127 leaves at learning rate 0.1, 200 + 100 rounds,
# separate errors as well as 63 leaves at 0.05 with 500 + 300 rounds did, in 40% of the inference time.
PARAMS = dict(objective="binary", learning_rate=0.1, num_leaves=127, min_data_in_leaf=30, feature_fraction=0.8,
              bagging_fraction=0.8, bagging_freq=1, lambda_l2=1.0, num_threads=2, deterministic=True,
              force_row_wise=True, verbose=-1)


def fit(X, y, etype, names, *, seed: int = 0, rounds: int = 200, reason_rounds: int = 60,
        valid: tuple | None = None, meta: dict | None = None, parent: np.ndarray | None = None,
        groups: np.ndarray | None = None, folds: int = 4, context_rounds: int | None = None,
        tip_rounds: int = 200, sample_weight: np.ndarray | None = None,
        max_valid_fpr: float | None = MAX_VALID_FPR) -> Detector:
    """Train the models with fixed seeds (same data + seed -> same model).

    ``valid`` is ``(X, y)`` or, with a context model, ``(X, y, parent)``. The context model is
    trained when ``parent`` (parent rows of the training nodes) and ``groups`` (which crop each
    node comes from) are given: on first scores predicted out of fold, crop by crop, by models
    that never saw the crop, since scores of a model on its own training nodes are too good
    (``context_rounds``, by default 1.5 times ``rounds``). The context model reads those scores
    around the node and the node's own features (:data:`CONTEXT_PARAMS`). With
    ``valid``, the decision point is placed on the validation crops (see the module docstring),
    no lower than where ``max_valid_fpr`` of their correct nodes are flagged. ``sample_weight``
    multiplies each node's training weight (real images' correct nodes count more)."""
    import lightgbm as lgb

    params = _params(y, seed)
    extra = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
    weight = type_weights(y, etype) * extra
    booster = _train(params, X, y, rounds, valid, list(names), weight)
    err = y > 0
    rparams = {**PARAMS, "objective": "multiclass", "num_class": len(ERROR_TYPES), "num_leaves": 31, "seed": seed}
    reasons = lgb.train(rparams, lgb.Dataset(X[err], etype[err] - 1, feature_name=list(names)),
                        num_boost_round=reason_rounds)
    meta = dict(meta or {}, best_iteration=booster.best_iteration)
    context = None
    if parent is not None and groups is not None:
        from .context import NAMES

        first = np.zeros(len(y))
        fold = np.asarray(groups) % folds
        for k in range(folds):
            out = fold == k
            model = _train(params, X[~out], y[~out], booster.best_iteration or rounds, None, list(names), weight[~out])
            first[out] = model.predict(X[out], num_threads=2)
        cvalid = None
        if valid is not None:
            cvalid = (_context_table(valid[2], booster.predict(valid[0], num_threads=2), valid[0], names, True), valid[1])
        cnames = list(NAMES) + [f"x_{n}" for n in names]
        context = _train({**params, **CONTEXT_PARAMS}, _context_table(parent, first, X, names, True), y,
                         context_rounds or max(rounds * 3 // 2, 1), cvalid, cnames, weight)
        meta.update(context_features=cnames, context_with_features=True, context_best_iteration=context.best_iteration)
    tips = None
    if parent is not None and tip_rounds:
        tips = _fit_tips(X, y, etype, parent, names, seed, tip_rounds, valid, extra)
        meta.update(tip_model=True, tip_best_iteration=tips.best_iteration)
    det = Detector(booster, reasons, tuple(names), meta, context, tips, context_with_features=context is not None)
    if valid is not None:
        _place_decision_point(det, valid, max_valid_fpr)
    return det


def _place_decision_point(det: Detector, valid: tuple, max_fpr: float | None = None) -> None:
    """Youden's J over the validation scores (see the module docstring), raised if needed so that
    at most ``max_fpr`` of the validation correct nodes are flagged; left at 0.5 when the
    validation crops lack either class."""
    from .evaluate import threshold_at_fpr, youden_threshold

    y = np.asarray(valid[1]) > 0
    if y.all() or not y.any():
        return
    pv, _ = det.predict(valid[0], det.names, valid[2] if len(valid) > 2 else None, reason_threshold=np.inf)
    point = youden_threshold(y, pv)
    rule = "Youden's J on the validation crops"
    if max_fpr is not None:
        cap = float(threshold_at_fpr(y, pv, max_fpr))
        if cap > point:
            point, rule = float(np.clip(cap, 1e-3, 1 - 1e-3)), f"Youden's J on the validation crops, raised to {max_fpr:.1%} of their correct nodes flagged"
    det.decision_point = point
    det.meta.update(decision_point=det.decision_point, decision_rule=rule)


def _fit_tips(X, y, etype, parent, names, seed: int, rounds: int, valid: tuple | None, extra=None):
    """A model of trace ends alone. An early stop labels one tip among thousands of nodes, and
    the only evidence is what lies beyond it; among tips only, the trees spend their splits on that
    evidence. Its p is used as a second opinion (the larger of the two), so it can only add flags
    at tips. (Weighting early stops up 3-10x more changed nothing on the validation crops.)"""
    tip = _tip_rows(parent)
    w = type_weights(y[tip], etype[tip]) * (1.0 if extra is None else extra[tip])
    params = {**PARAMS, "num_leaves": 31, "seed": seed}
    tvalid = None
    if valid is not None and len(valid) > 2:
        vt = _tip_rows(valid[2])
        tvalid = (valid[0][vt], valid[1][vt])
    return _train(params, X[tip], y[tip], rounds, tvalid, list(names), w)


def _tip_rows(parent: np.ndarray) -> np.ndarray:
    """Nodes with a parent and no child."""
    parent = np.asarray(parent)
    return (parent >= 0) & (child_counts(parent) == 0)


def type_weights(y: np.ndarray, etype: np.ndarray, cap: float = 10.0) -> np.ndarray:
    """Training weight per node: 1 for correct nodes; error nodes weighted so that rare error kinds
    count about as much as the median kind (at most ``cap`` times). A loop or a spur labels dozens
    of nodes, an early stop one tip: unweighted, the trees would learn the common kinds and leave
    the rare ones below the threshold."""
    w = np.ones(len(y))
    err = np.asarray(y) > 0
    codes = np.asarray(etype)[err].astype(np.int64)
    if not len(codes):
        return w
    count = np.bincount(codes, minlength=len(ERROR_TYPES) + 1).astype(float)
    ref = np.median(count[count > 0])
    per_type = np.clip(ref / np.maximum(count, 1.0), 1.0, cap)
    w[err] = per_type[codes]
    return w


def _context_table(parent, p, X, names, with_features: bool = False) -> np.ndarray:
    """The context model's input: the first scores around each node, and (``with_features``) the
    node's own features after them, so that the model can tell where in feature space a
    neighbour's high score means an error run and where it is only a busy neighbourhood."""
    from .context import context_features

    col = {n: k for k, n in enumerate(names)}
    c = context_features(parent, p, X[:, col["sec_pos"]], X[:, col["sec_len"]])
    return np.hstack([c, np.asarray(X, np.float32)]) if with_features else c


def _params(y: np.ndarray, seed: int) -> dict:
    pos = max(float(np.mean(y)), 1e-3)
    return {**PARAMS, "seed": seed, "scale_pos_weight": float(np.clip((1 - pos) / pos / 3.0, 1.0, 10.0))}


def _train(params: dict, X, y, rounds: int, valid: tuple | None, names: list, weight=None):
    """One binary booster, early-stopped on ``valid`` (its first two items) when given."""
    import lightgbm as lgb

    dtrain = lgb.Dataset(X, y, weight=weight, feature_name=names, free_raw_data=False)
    kw = {}
    if valid is not None:
        dvalid = lgb.Dataset(valid[0], valid[1], reference=dtrain)
        kw = dict(valid_sets=[dvalid], callbacks=[lgb.early_stopping(60, verbose=False)])
    return lgb.train(params, dtrain, num_boost_round=rounds, **kw)
