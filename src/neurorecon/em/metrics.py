"""Voxel-wise segmentation metrics against a dense ground truth: variation of information (VOI
split and merge) and the adapted Rand error, as the SNEMI3D and CREMI challenges score them.

Both are computed from one contingency table (voxel counts per pair of ground-truth and
predicted labels). The table is built from runs: consecutive voxels (in memory order) with the
same pair of labels are counted at once, so a real segmentation, whose labels come in long runs,
needs one sort of its runs rather than of its voxels.

Conventions (the same as CREMI's ``cremi.evaluation``)
------------------------------------------------------
* Label 0 in the ground truth is background/unlabelled: those voxels are left out of both scores.
* Label 0 in the segmentation is unlabelled: VOI counts those voxels as one more segment (as
  CREMI's ``voi`` does); the adapted Rand error counts each as a segment of its own, a singleton
  (as the SNEMI3D script and CREMI's ``adapted_rand`` do).
* Information is in bits (log base 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["Contingency", "RandError", "adapted_rand_error", "contingency_table", "voi"]

# Voxels compared per pass when finding runs: bounds the temporaries (two boolean masks) to a few
# tens of MB whatever the volume's size.
_CHUNK = 1 << 24
# Up to this many (gt, seg) label pairs the cells are counted in a dense array (8 bytes a pair)
# instead of being sorted.
_DENSE_CELLS = 1 << 25


@dataclass(frozen=True)
class Contingency:
    """Voxel counts per pair of labels (the non-zero cells of the contingency table).

    Attributes
    ----------
    gt_labels, seg_labels : (G,), (S,) arrays
        The distinct labels of each volume, sorted.
    gt_index, seg_index : (K,) int64
        Indices into ``gt_labels`` and ``seg_labels`` of each non-zero cell.
    counts : (K,) int64
        Voxels in each cell.
    n_voxels : int
        Voxels in the volume (background included).
    """

    gt_labels: np.ndarray
    seg_labels: np.ndarray
    gt_index: np.ndarray
    seg_index: np.ndarray
    counts: np.ndarray
    n_voxels: int


class RandError(NamedTuple):
    """The adapted Rand error and the Rand precision and recall it is made of."""

    error: float
    precision: float
    recall: float


def _labels(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: labels must be integers, got {arr.dtype}")
    return arr


def contingency_table(seg, gt) -> Contingency:
    """Count the voxels of every pair (ground-truth label, predicted label).

    Parameters
    ----------
    seg, gt : array_like of int, same shape
        Predicted and ground-truth label volumes (any number of dimensions; any integer dtype).

    Returns
    -------
    Contingency

    Raises
    ------
    ValueError
        If the shapes differ, the arrays are empty, or the labels are not integers.

    Notes
    -----
    Time is one pass over the voxels plus a sort of the runs (stretches of voxels, in memory
    order, with the same pair of labels). Memory beyond the inputs is about 2 bytes per voxel of
    a 16M-voxel chunk (~35 MB) plus ~40 bytes per run; a non-contiguous input is copied first.
    A 512^3 uint64 volume of real neurons (~5M runs) takes about a second.

    Examples
    --------
    >>> t = contingency_table([[1, 1, 2]], [[5, 5, 5]])
    >>> t.gt_labels.tolist(), t.seg_labels.tolist(), t.counts.tolist()
    ([5], [1, 2], [2, 1])
    """
    seg, gt = _labels(seg, "seg"), _labels(gt, "gt")
    if seg.shape != gt.shape:
        raise ValueError(f"seg and gt differ in shape: {seg.shape} and {gt.shape}")
    if seg.size == 0:
        raise ValueError("seg and gt are empty")
    # Any order counts the same, so walk both in memory order when they share one: no copies.
    order = "F" if seg.flags.f_contiguous and gt.flags.f_contiguous and seg.ndim > 1 else "C"
    s, g = seg.ravel(order), gt.ravel(order)
    starts_g, starts_s, lengths = [], [], []
    for lo in range(0, s.size, _CHUNK):
        gs, ss = g[lo:lo + _CHUNK], s[lo:lo + _CHUNK]
        change = np.empty(gs.size, dtype=bool)
        change[0] = True
        np.not_equal(gs[1:], gs[:-1], out=change[1:])
        change[1:] |= ss[1:] != ss[:-1]
        at = np.flatnonzero(change)
        starts_g.append(gs[at])
        starts_s.append(ss[at])
        lengths.append(np.diff(at, append=gs.size))
    g_lab, g_inv = _compact(np.concatenate(starts_g))
    s_lab, s_inv = _compact(np.concatenate(starts_s))
    key = g_inv * len(s_lab) + s_inv
    weights = np.concatenate(lengths)
    if len(g_lab) * len(s_lab) <= _DENSE_CELLS:
        counts = np.bincount(key, weights=weights, minlength=len(g_lab) * len(s_lab)).astype(np.int64)
        cells = np.flatnonzero(counts)
        counts = counts[cells]
    else:
        cells = np.unique(key)
        counts = np.bincount(np.searchsorted(cells, key), weights=weights, minlength=len(cells)).astype(np.int64)
    return Contingency(g_lab, s_lab, cells // len(s_lab), cells % len(s_lab), counts, int(s.size))


def _compact(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values, sorted, and each value's index among them (np.unique's
    return_inverse is several times slower than this sort of the distinct values plus a search)."""
    distinct = np.unique(values)
    return distinct, np.searchsorted(distinct, values).astype(np.int64)


def _table(seg, gt, table: Contingency | None) -> Contingency:
    return contingency_table(seg, gt) if table is None else table


def _foreground(t: Contingency):
    fg = t.gt_labels[t.gt_index] != 0
    if not fg.any():
        raise ValueError("gt has no labelled voxel (every voxel is 0, the background)")
    return t.gt_index[fg], t.seg_index[fg], t.counts[fg]


def voi(seg=None, gt=None, *, table: Contingency | None = None) -> tuple[float, float]:
    """Variation of information, as its two conditional entropies: (split, merge), in bits.

    Parameters
    ----------
    seg, gt : array_like of int, same shape
        Predicted and ground-truth labels. Voxels where ``gt == 0`` are left out; ``seg == 0``
        counts as one more segment (CREMI's convention).
    table : Contingency, optional
        From :func:`contingency_table`, to score several metrics from one table; then ``seg``
        and ``gt`` are not needed.

    Returns
    -------
    split : float
        "VOI split", H(seg | gt): the information needed to tell which predicted segment a voxel
        is in, knowing its true object. It grows when a true object is cut into pieces; 0 if
        every true object lies in one segment.
    merge : float
        "VOI merge", H(gt | seg): grows when one segment takes in several true objects; 0 if
        every segment lies in one true object.

    Notes
    -----
    The same numbers as CREMI's ``voi(seg, gt)`` and as scikit-image's
    ``variation_of_information(gt, seg, ignore_labels=[0])`` (which returns them in that order
    too). Time and memory are those of :func:`contingency_table`.

    Examples
    --------
    One object cut in two equal halves costs exactly one bit of split and no merge:

    >>> voi([[1, 1, 2, 2]], [[7, 7, 7, 7]])
    (1.0, 0.0)
    """
    gi, si, n = _foreground(_table(seg, gt, table))
    p = n / n.sum()
    p_gt = np.bincount(gi, weights=p)[gi]
    p_seg = np.bincount(si, weights=p)[si]
    split = -float(np.sum(p * np.log2(p / p_gt)))
    merge = -float(np.sum(p * np.log2(p / p_seg)))
    return max(split, 0.0) + 0.0, max(merge, 0.0) + 0.0     # + 0.0: no "-0.0"


def adapted_rand_error(seg=None, gt=None, *, table: Contingency | None = None) -> RandError:
    """The adapted Rand error of SNEMI3D and CREMI: 1 - F-score of the Rand precision and recall.

    Parameters
    ----------
    seg, gt : array_like of int, same shape
        Predicted and ground-truth labels.
    table : Contingency, optional
        From :func:`contingency_table`; then ``seg`` and ``gt`` are not needed.

    Returns
    -------
    RandError
        ``(error, precision, recall)``. With n_ij the voxels of true object i in segment j,
        a_i = sum_j n_ij and b_j = sum_i n_ij: precision = sum n_ij^2 / sum b_j^2 (pairs of
        voxels in one segment that are in one true object), recall = sum n_ij^2 / sum a_i^2
        (pairs in one true object that are in one segment), error = 1 - 2pr / (p + r).

    Notes
    -----
    Exactly what is left out, as in CREMI's ``adapted_rand`` (and the SNEMI3D script it came
    from): every voxel with ``gt == 0`` (the rows of true label 0). Voxels with ``seg == 0``
    inside the ground truth are unlabelled predictions: they count in the true objects' sizes
    a_i, but each is a segment of its own, which the formula counts as adding
    (number of such voxels) / (voxels in the volume) to both sum n_ij^2 and sum b_j^2 (the
    script's term, kept so that the numbers are CREMI's).

    That term is questioned in cremi_python issue #3 (open since 2016); gala and then
    scikit-image went to counting pairs of distinct voxels instead (each sum of squares minus
    the voxel count), so ``skimage.metrics.adapted_rand_error(gt, seg)`` differs from these
    numbers by about 1 / (mean object size). It also treats ``seg == 0`` as an ordinary
    segment, and returns ``(error, recall, precision)`` in this function's terms (its
    "precision" divides by the true objects' pairs; scikit-image issue #6485).

    Examples
    --------
    One object cut in two equal halves: every predicted pair is right (precision 1), half of
    the true pairs are kept (recall 0.5):

    >>> adapted_rand_error([[1, 1, 2, 2]], [[7, 7, 7, 7]])
    RandError(error=0.33333333333333337, precision=1.0, recall=0.5)
    """
    t = _table(seg, gt, table)
    gi, si, n = _foreground(t)
    unlabelled = t.seg_labels[si] == 0
    singles = float(n[unlabelled].sum()) / t.n_voxels
    a = np.bincount(gi, weights=n)
    b = np.bincount(si[~unlabelled], weights=n[~unlabelled])
    nl = n[~unlabelled]
    # Integer sums of squares are exact (at most voxels^2 < 2^63 for any volume that fits in memory).
    sum_a = int(np.sum(a.astype(np.int64) ** 2))
    sum_b = int(np.sum(b.astype(np.int64) ** 2)) + singles
    sum_ab = int(np.sum(nl ** 2)) + singles
    precision = sum_ab / sum_b
    recall = sum_ab / sum_a
    f = 2.0 * precision * recall / (precision + recall)
    return RandError(1.0 - f, precision, recall)
