"""Segmentation metrics (neurorecon.em): VOI and the adapted Rand error on hand-checked cases and
against scikit-image on a real segmentation (pinky40), the skeleton metrics against the results
segmentation-skeleton-metrics 5.9.14 published with its demo data (../shared/data/skeleton_metrics),
the .npy loader, and the evaluate-seg command."""

from __future__ import annotations

import csv
import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neurorecon.cli import app
from neurorecon.em import adapted_rand_error, contingency_table, expected_run_length, skeleton_metrics, summarize, voi
from neurorecon.em import metrics as em_metrics
from neurorecon.em.skeleton_metrics import COLUMNS, SkeletonError, fill_gaps, read_skeletons
from neurorecon.io.npy import load_npy
from neurorecon.io.volume import VolumeError, open_volume
from neurorecon.morphology.neuron import Neuron

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEMO = SHARED / "skeleton_metrics"
PINKY = SHARED / "em" / "pinky40_labels_512.npy.gz"
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


# ------------------------------------------------------------------------------ VOI and adapted Rand: by hand
def test_identical_segmentations_score_zero():
    gt = np.array([[1, 1, 2, 2], [3, 3, 0, 0]])
    assert voi(gt * 10, gt) == (0.0, 0.0)                  # label values do not matter, only the partition
    assert adapted_rand_error(gt * 10, gt) == (0.0, 1.0, 1.0)


def test_one_object_split_in_two_is_only_split_with_the_exact_entropy():
    gt = np.full((4, 10), 7)
    seg = np.ones_like(gt)
    seg[:, 7:] = 2                                         # 70% / 30%
    split, merge = voi(seg, gt)
    h = -(0.7 * math.log2(0.7) + 0.3 * math.log2(0.3))
    assert split == pytest.approx(h, abs=1e-12) and merge == 0.0
    assert voi(np.repeat([[1, 1, 2, 2]], 3, 0), np.full((3, 4), 5)) == (1.0, 0.0)
    err, precision, recall = adapted_rand_error(seg, gt)
    assert precision == 1.0 and recall == pytest.approx((28**2 + 12**2) / 40**2)
    assert err == pytest.approx(1 - 2 * recall / (1 + recall))


def test_a_merge_is_only_merge():
    gt = np.array([[1, 1, 1, 2, 2, 2]])
    seg = np.full_like(gt, 4)
    assert voi(seg, gt) == (0.0, 1.0)
    assert adapted_rand_error(seg, gt) == pytest.approx((1 / 3, 0.5, 1.0))


def test_gt_background_is_left_out_and_seg_zero_is_one_segment_for_voi():
    gt = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    seg = np.array([3, 3, 3, 3, 9, 8, 7, 3])               # anything under gt 0 is ignored
    assert voi(seg, gt) == (0.0, 0.0)
    seg0 = np.array([0, 0, 3, 3, 0, 0, 0, 0])
    assert voi(seg0, gt) == (1.0, 0.0)                     # seg 0 is a segment: 2 halves
    # Adapted Rand: seg 0 voxels in the gt are singletons, counted as CREMI does (+ n0 / n_voxels).
    err, p, r = adapted_rand_error(seg0, gt)
    singles = 2 / 8
    assert p == pytest.approx((4 + singles) / (4 + singles)) and r == pytest.approx((4 + singles) / 16)


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="differ in shape"):
        voi(np.zeros((2, 3), int), np.zeros((3, 2), int))
    with pytest.raises(ValueError, match="integers"):
        voi(np.zeros(4), np.ones(4, int))
    with pytest.raises(ValueError, match="no labelled voxel"):
        adapted_rand_error(np.ones(4, int), np.zeros(4, int))


def test_contingency_table_matches_a_direct_count_in_any_memory_order(monkeypatch):
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 5, (7, 9, 11)).astype(np.uint64) * np.uint64(2**40)      # 64-bit labels
    seg = rng.integers(0, 4, (7, 9, 11)).astype(np.int16)
    seg[rng.random(seg.shape) < 0.5] = -3
    monkeypatch.setattr(em_metrics, "_CHUNK", 50)            # runs cut across chunk boundaries
    pairs, n = np.unique(np.stack([gt.ravel().astype(np.float64), seg.ravel()]), axis=1, return_counts=True)
    for s, g in ((seg, gt), (np.asfortranarray(seg), np.asfortranarray(gt)), (seg[:, ::2], gt[:, ::2])):
        t = contingency_table(s, g)
        got = sorted(zip(t.gt_labels[t.gt_index].astype(np.float64), t.seg_labels[t.seg_index], t.counts))
        if s.shape == seg.shape:
            assert got == sorted(zip(pairs[0], pairs[1], n)) and t.n_voxels == seg.size
        else:
            p2, n2 = np.unique(np.stack([g.ravel().astype(np.float64), s.ravel()]), axis=1, return_counts=True)
            assert got == sorted(zip(p2[0], p2[1], n2))
    monkeypatch.setattr(em_metrics, "_DENSE_CELLS", 1)      # the sorted path for many label pairs
    t = contingency_table(seg, gt)
    assert sorted(zip(t.gt_labels[t.gt_index].astype(np.float64), t.seg_labels[t.seg_index], t.counts)) == \
        sorted(zip(pairs[0], pairs[1], n))


# ------------------------------------------------------------------------------ against scikit-image, on pinky40
@pytest.fixture(scope="module")
def pinky_pair():
    """A 96 x 256 x 256 crop of the real pinky40 labels (gt) and a segmentation of it with real
    kinds of error: the 3 largest objects merged into one, 4 cut in half, 64-bit segment ids."""
    if not PINKY.is_file():
        pytest.skip(f"{PINKY}: no such file")
    gt = np.load(gzip.open(PINKY))[:96, :256, :256].copy()
    assert (gt == 0).any()
    labels, counts = np.unique(gt[gt > 0], return_counts=True)
    big = labels[np.argsort(counts)[::-1]]
    seg = gt.astype(np.uint64) + np.uint64(2**40)
    seg[np.isin(gt, big[:3])] = 5
    for k, lab in enumerate(big[3:7]):
        zs = np.flatnonzero(np.any(gt == lab, axis=(1, 2)))
        cut = (gt == lab) & (np.arange(96)[:, None, None] > np.median(zs))
        seg[cut] = 2**50 + k
    return seg, gt


def _renumbered(labels):
    assert labels.min() == 0 or labels.min() > 0
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape) + (labels.min() > 0)


def test_voi_equals_scikit_image_on_a_real_segmentation(pinky_pair):
    metrics = pytest.importorskip("skimage.metrics")
    seg, gt = pinky_pair
    split, merge = voi(seg, gt)
    assert split > 0.02 and merge > 0.02
    # scikit-image returns [H(image1 | image0), H(image0 | image1)] in bits: split, merge for (gt, seg).
    # Its table indexes labels directly, so it gets the ids renumbered (same partitions, gt 0 stays 0).
    seg_small, gt_small = _renumbered(seg), _renumbered(gt)
    ref = metrics.variation_of_information(gt_small, seg_small, ignore_labels=[0])
    assert (split, merge) == pytest.approx(tuple(ref), abs=1e-9)


def test_adapted_rand_agrees_with_scikit_image_up_to_its_pair_convention(pinky_pair):
    metrics = pytest.importorskip("skimage.metrics")
    seg, gt = pinky_pair
    seg_small, gt_small = _renumbered(seg) + 1, _renumbered(gt)       # no seg 0 in it
    ours = adapted_rand_error(seg_small, gt_small)
    ref = metrics.adapted_rand_error(gt_small, seg_small)           # ignore_labels=(0,) in gt by default
    # scikit-image counts pairs of distinct voxels: sum(n^2) - N in each sum. From our table the
    # same numbers come out exactly, which checks the table; the CREMI formula differs from them
    # by about 1 / (mean object size).
    t = contingency_table(seg_small, gt_small)
    fg = t.gt_labels[t.gt_index] != 0
    n, gi, si = t.counts[fg].astype(float), t.gt_index[fg], t.seg_index[fg]
    total = n.sum()
    ab = n @ n - total
    a, b = np.bincount(gi, weights=n), np.bincount(si, weights=n)
    p, r = ab / (b @ b - total), ab / (a @ a - total)
    # scikit-image returns them as (error, recall, precision), its docstring notwithstanding
    # (scikit-image issue #6485): its "precision" divides by the true objects' pairs.
    assert (1 - 2 * p * r / (p + r), r, p) == pytest.approx(tuple(ref), abs=1e-12)
    assert p < r - 0.02        # merging the 3 largest objects costs more precision than 4 cuts cost recall
    assert 0.02 < ours.error < 0.9
    assert (ours.error, ours.recall, ours.precision) == pytest.approx(tuple(ref), abs=1e-3)


# ------------------------------------------------------------------------------ skeleton metrics: the reference's demo
@pytest.fixture(scope="module")
def demo_scores():
    if not DEMO.is_dir():
        pytest.skip(f"{DEMO}: no such folder")
    seg = load_npy(DEMO / "pred_segmentation.npy.gz")
    gt = read_skeletons(DEMO / "target_swcs.zip")
    return skeleton_metrics(seg, gt, fragments=read_skeletons(DEMO / "pred_swcs.zip"))


def _reference_rows():
    with open(DEMO / "results.csv", newline="") as f:
        rows = list(csv.reader(f))
    return [{"name": r[0], **{c: (float(v) if v else math.nan) for c, v in zip(rows[0][1:], r[1:])}} for r in rows[1:]]


def _as_reference(s):
    """Our unrounded scores rounded the way the reference rounds its columns: ERL, edge accuracy
    and the rates to 0.01, normalized ERL from the rounded ERL to 0.0001."""
    erl = round(s.erl, 2)
    return {"SWC Run Length": s.run_length, "# Splits": s.n_splits, "# Merges": s.n_merges, "% Split Edges": s.split_edges,
            "% Omit Edges": s.omit_edges, "% Merged Edges": s.merged_edges, "ERL": erl,
            "Normalized ERL": round(erl / s.run_length, 4), "Edge Accuracy": round(s.edge_accuracy, 2),
            "Split Rate": round(s.split_rate, 2) if s.n_splits else math.nan,
            "Merge Rate": round(s.merge_rate, 2) if s.n_merges else math.nan}


def test_every_row_and_column_of_the_reference_results(demo_scores):
    ref = _reference_rows()
    assert [s.name for s in demo_scores] == [r["name"] for r in ref]        # the 14 skeletons, in order
    assert len(ref) == 14
    for s, r in zip(demo_scores, ref):
        ours = _as_reference(s)
        assert set(ours) == set(COLUMNS.values())
        for col, want in r.items():
            if col == "name":
                continue
            got = ours[col]
            if math.isnan(want):
                assert math.isnan(got), (s.name, col, got)
            else:       # unrounded columns to float precision, rounded ones exactly
                assert got == pytest.approx(want, rel=1e-12, abs=1e-12), (s.name, col, got, want)
        # and the raw values lie within the reference's rounding of them
        assert abs(s.erl - r["ERL"]) <= 0.005 and abs(s.edge_accuracy - r["Edge Accuracy"]) <= 0.005 + 1e-9
        assert abs(s.normalized_erl - r["Normalized ERL"]) <= 0.00005 + 0.005 / s.run_length


def test_the_reference_overview_averages_and_totals(demo_scores):
    text = (DEMO / "results_overview.txt").read_text()
    avg_text, total_text = text.split("Total Results...")
    want = {k.strip(): float(v) for k, v in (ln.split(":") for ln in avg_text.splitlines() if ":" in ln)}
    rounded = [_as_reference(s) for s in demo_scores]
    w = np.array([s.run_length for s in demo_scores])
    summary = summarize(demo_scores)
    by_column = {c: a for a, c in COLUMNS.items()}
    for col, value in want.items():
        v = np.array([r[col] for r in rounded], dtype=float)
        ok = ~np.isnan(v)
        ours = np.dot(v[ok], w[ok]) / w[ok].sum() if ok.any() else math.nan
        raw = summary["average"][by_column[col]]
        if math.isnan(value):
            assert math.isnan(ours) and math.isnan(raw), col
        else:     # from the rounded rows: the reference's 4 decimals; unrounded: within its rounding
            assert round(ours, 4) == value, (col, ours, value)
            assert abs(raw - value) <= 0.005, (col, raw, value)
    assert "# Splits: 30" in total_text and "# Merges: 0" in total_text
    assert summary["total"] == {"n_splits": 30, "n_merges": 0}


def test_lazy_volume_and_array_give_the_same_scores(demo_scores):
    vol = open_volume(np.ascontiguousarray(load_npy(DEMO / "pred_segmentation.npy.gz")))
    lazy = skeleton_metrics(vol, read_skeletons(DEMO / "target_swcs.zip"), fragments=read_skeletons(DEMO / "pred_swcs.zip"))
    assert [s.to_dict() for s in lazy] == [s.to_dict() for s in demo_scores]
