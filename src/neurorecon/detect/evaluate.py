"""Scores against labels: AUC, accuracy at 0.5, recall at a fixed false-positive rate, per error type.

Plain numpy (no scikit-learn): AUC is the Mann-Whitney statistic with ties counted half.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field

import numpy as np

#: The false-positive rate of the published census checker (74.7% recall at 1.4% false alerts).
REFERENCE_FPR = 0.014


class EvaluationError(ValueError):
    pass


@dataclass
class Metrics:
    n: int
    n_errors: int
    auc: float
    accuracy: float
    recall_at_fpr: float
    threshold_at_fpr: float
    precision: float
    recall: float
    per_type: dict = field(default_factory=dict)   # name -> (n, recall at 0.5, recall at the fpr threshold)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "Metrics":
        """The metrics of ``to_dict`` (or of a model's ``meta.json``), other keys left out."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (probability that an error node outranks a correct one)."""
    y = np.asarray(y).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sp = np.asarray(p)[order]
    # Average ranks over ties.
    starts = np.flatnonzero(np.concatenate([[True], sp[1:] != sp[:-1]]))
    ends = np.concatenate([starts[1:], [len(sp)]])
    avg = (starts + ends - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def threshold_at_fpr(y: np.ndarray, p: np.ndarray, fpr: float) -> float:
    """The lowest threshold t such that at most ``fpr`` of correct nodes have p > t."""
    neg = np.sort(np.asarray(p)[~np.asarray(y).astype(bool)])[::-1]
    k = int(np.floor(fpr * len(neg)))
    if len(neg) == 0:
        return 0.5
    return float(neg[min(k, len(neg) - 1)])


def youden_threshold(y, p) -> float:
    """The threshold, on a grid of 0.01 steps, that maximises recall minus false-positive rate
    (Youden's J); of equal maxima, the highest (fewer false alerts for the same J)."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=float)
    if y.all() or not y.any():
        raise EvaluationError("a threshold needs both correct and error nodes")
    grid = np.round(np.arange(1, 100) / 100, 2)
    tpr = 1.0 - np.searchsorted(np.sort(p[y]), grid, side="left") / y.sum()
    fpr = 1.0 - np.searchsorted(np.sort(p[~y]), grid, side="left") / (~y).sum()
    j = tpr - fpr
    return float(grid[np.flatnonzero(j >= j.max() - 1e-12)[-1]])   # equal up to rounding


def evaluate(y, p, etype_names=None, fpr: float = REFERENCE_FPR) -> Metrics:
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=float)
    if len(y) != len(p):
        raise EvaluationError(f"{len(p)} scores but {len(y)} labels")
    t = threshold_at_fpr(y, p, fpr)
    hit = p > t
    flag = p >= 0.5
    per = {}
    if etype_names is not None:
        names = np.asarray(etype_names, dtype=object)
        for name in sorted(set(names[y].tolist())):
            m = y & (names == name)
            per[name] = (int(m.sum()), float(flag[m].mean()), float(hit[m].mean()))
    tp = int((flag & y).sum())
    return Metrics(n=len(y), n_errors=int(y.sum()), auc=auc(y, p), accuracy=float((flag == y).mean()),
                   recall_at_fpr=float(hit[y].mean()) if y.any() else float("nan"), threshold_at_fpr=t,
                   precision=tp / max(int(flag.sum()), 1), recall=tp / max(int(y.sum()), 1), per_type=per)


def _read_csv(path: str | os.PathLike, need: tuple[str, ...]) -> dict[str, list[str]]:
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise EvaluationError(f"{path}: no such file") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise EvaluationError(f"{path}: not a readable CSV ({e})") from None
    if not rows:
        raise EvaluationError(f"{path}: no rows")
    header = [c for c in rows[0] if isinstance(c, str)]
    missing = [c for c in need if c not in header]
    if missing:
        raise EvaluationError(f"{path}: missing column(s) {', '.join(missing)}; has {', '.join(header)}")
    for k, r in enumerate(rows, start=2):
        if None in r or any(r.get(c) is None for c in need):
            raise EvaluationError(f"{path}: line {k} does not have one value per column")
    return {c: [r[c] for r in rows] for c in header}


def evaluate_files(scores: str | os.PathLike, labels: str | os.PathLike, fpr: float = REFERENCE_FPR, *,
                   partial_labels: bool = False) -> Metrics:
    """Match SCORES.csv (node_id, p_error) and LABELS.csv (node_id, label[, error_type]) by node id.

    Both files must name the same nodes: ``detect`` scores, and ``synth`` labels, every node of
    a trace, so ids that differ mean files of two different neurons (which would score a
    meaningless AUC). With ``partial_labels`` the labels may cover only some scored nodes. Nodes
    with an empty p_error (not scored: outside the image) are left out of the metrics.

    Raises
    ------
    EvaluationError
        Unreadable files, missing columns, bad values, or node ids that do not match.
    """
    s = _read_csv(scores, ("node_id", "p_error"))
    lab = _read_csv(labels, ("node_id", "label"))
    unscored = np.array([not v.strip() for v in s["p_error"]], dtype=bool)   # outside the image
    try:
        sid = np.array(s["node_id"], dtype=np.int64)
        p = np.array([v if v.strip() else "nan" for v in s["p_error"]], dtype=float)
        lid = np.array(lab["node_id"], dtype=np.int64)
        y = np.array(lab["label"], dtype=np.int64)
    except ValueError as e:
        raise EvaluationError(f"{scores} / {labels}: non-numeric node_id, p_error or label ({e})") from None
    if np.any((p < 0) | (p > 1)) or np.isnan(p[~unscored]).any():
        raise EvaluationError(f"{scores}: p_error must lie in [0, 1]")
    order = np.argsort(sid)
    pos = np.searchsorted(sid[order], lid)
    ok = (pos < len(sid)) & (sid[order][np.minimum(pos, len(sid) - 1)] == lid)
    _check_same_nodes(scores, labels, sid, lid, ok, partial_labels)
    names = np.array(lab.get("error_type", [""] * len(lid)), dtype=object)
    p_lab = p[order][pos]
    keep = np.isfinite(p_lab)               # nodes not scored (outside the image) are not measured
    if not keep.any():
        raise EvaluationError(f"{scores}: no labelled node was scored (all outside the image?)")
    return evaluate(y[keep], p_lab[keep], names[keep], fpr)


def _check_same_nodes(scores, labels, sid, lid, found, partial_labels: bool) -> None:
    only_scores = len(np.setdiff1d(sid, lid))
    if found.all() and (partial_labels or only_scores == 0):
        return
    shared = int(found.sum())
    only_labels = int((~found).sum())
    first = f", e.g. node {int(lid[~found][0])} has no score" if only_labels else ""
    raise EvaluationError(
        f"{scores} and {labels} do not name the same nodes: {shared} node id(s) in both, {only_scores} only in the "
        f"scores, {only_labels} only in the labels{first}; are they of the same trace?"
        + ("" if only_labels else " (--partial-labels if the labels cover only some nodes)"))


def format_metrics(m: Metrics, fpr: float = REFERENCE_FPR) -> str:
    lines = [f"nodes {m.n}, error nodes {m.n_errors}",
             f"AUC                       {m.auc:.4f}",
             f"accuracy at p>=0.5        {m.accuracy:.4f}  (precision {m.precision:.3f}, recall {m.recall:.3f})",
             f"recall at {100 * fpr:.1f}% FPR        {m.recall_at_fpr:.4f}  (threshold {m.threshold_at_fpr:.3f})"]
    if m.per_type:
        lines.append(f"{'error type':16s} {'nodes':>6s} {'recall@0.5':>11s} {'recall@FPR':>11s}")
        for k, (n, r5, rf) in m.per_type.items():
            lines.append(f"{k:16s} {n:6d} {r5:11.3f} {rf:11.3f}")
    return "\n".join(lines)
