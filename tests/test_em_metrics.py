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
    assert PINKY.is_file(), f"{PINKY}: no such file (../shared/data must be beside the repository)"
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
    from skimage import metrics
    seg, gt = pinky_pair
    split, merge = voi(seg, gt)
    assert split > 0.02 and merge > 0.02
    # scikit-image returns [H(image1 | image0), H(image0 | image1)] in bits: split, merge for (gt, seg).
    # Its table indexes labels directly, so it gets the ids renumbered (same partitions, gt 0 stays 0).
    seg_small, gt_small = _renumbered(seg), _renumbered(gt)
    ref = metrics.variation_of_information(gt_small, seg_small, ignore_labels=[0])
    assert (split, merge) == pytest.approx(tuple(ref), abs=1e-9)


def test_adapted_rand_agrees_with_scikit_image_up_to_its_pair_convention(pinky_pair):
    from skimage import metrics
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
    assert DEMO.is_dir(), f"{DEMO}: no such folder (../shared/data must be beside the repository)"
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


# ------------------------------------------------------------------------------ skeleton metrics: by hand
ZYX = (" id, type, z, y, x, r, pid",)        # the reference's column header: coordinates in array order


def _skeleton(points_zyx, parents=None, name="s", header=ZYX):
    """A skeleton from (z, y, x) points, a chain unless ``parents`` (0-based, -1 root) is given."""
    pts = np.asarray(points_zyx, dtype=float)
    n = len(pts)
    par = np.arange(-1, n - 1) if parents is None else np.asarray(parents)
    xyz = pts if header == ZYX else pts[:, ::-1]
    return Neuron.from_arrays(np.arange(1, n + 1), np.full(n, 2), xyz, np.ones(n), np.where(par >= 0, par + 1, -1),
                              header=header, source=f"{name}.swc")


def _line(x0, x1, y=5, z=5, step=1):
    return [(z, y, x) for x in range(x0, x1 + 1, step)]


def _score(seg, skels, **kw):
    return skeleton_metrics(seg, {f"s{k}": s for k, s in enumerate(skels)}, **kw)


def _seg_along(labels_by_x, shape=(10, 10, 20), y=5, z=5):
    seg = np.zeros(shape, np.uint32)
    seg[z, y, :len(labels_by_x)] = labels_by_x
    return seg


def test_gap_in_one_segment_is_filled_and_counts_as_correct():
    line = _skeleton(_line(0, 10))                               # 11 nodes, 10 edges of length 1
    for labels in ([1] * 4 + [0] * 3 + [1] * 4, [1] * 8 + [0] * 3, [0] * 2 + [1] * 9):    # inside, at a tip, at the root
        (s,) = _score(_seg_along(labels), [line])
        assert (s.n_splits, s.split_edges, s.omit_edges, s.edge_accuracy) == (0, 0.0, 0.0, 100.0), labels
        assert s.run_length == 10.0 and s.erl == 10.0 and s.normalized_erl == 1.0
        assert math.isnan(s.split_rate) and s.n_merges is None and math.isnan(s.merge_rate)


def test_nodes_outside_the_volume_are_unlabelled_in_arrays_and_lazy_volumes():
    seg = _seg_along([1] * 10 + [2] * 10)
    line = _skeleton(_line(-3, 25))                              # 3 nodes before x = 0, 6 beyond x = 19
    for vol in (seg, open_volume(seg)):
        (s,) = _score(vol, [line])
        # Both ends are unlabelled stretches touching one segment each: filled, as a gap at a tip is.
        assert (s.n_splits, s.split_edges, s.omit_edges) == (1, pytest.approx(100 / 28), 0.0)
    (far,) = _score(seg, [_skeleton(_line(0, 10, y=50))])           # wholly outside
    assert far.omit_edges == 100.0 and far.erl == 0.0 and far.n_splits == 0


def test_a_split_with_an_unfilled_gap():
    (s,) = _score(_seg_along([1] * 4 + [0] * 3 + [2] * 4), [_skeleton(_line(0, 10))])
    # The gap touches segments 1 and 2: it stays; its 2 inner edges are omitted and its 2 end edges
    # (labelled - unlabelled) count as split, as in the reference.
    assert s.n_splits == 1 and s.split_edges == 20.0 and s.omit_edges == 20.0 and s.edge_accuracy == 60.0
    assert s.erl == pytest.approx((3**2 + 3**2) / 6) and s.normalized_erl == pytest.approx(0.3)
    assert s.split_rate == pytest.approx(10 * (1 - 0.4) / 1)


def test_a_segment_met_twice_counts_once_with_its_first_piece():
    (s,) = _score(_seg_along([1] * 4 + [2] * 3 + [1] * 4), [_skeleton(_line(0, 10))])
    assert s.n_splits == 1 and s.split_edges == 20.0
    # Pieces: segment 1's first stretch (length 3) and segment 2's (2); the later stretch of
    # segment 1 is not counted (the reference's run length starts from the segment's first node).
    assert s.erl == pytest.approx((9 + 4) / 5)
    assert expected_run_length([3.0, 2.0]) == s.erl


def test_fill_gaps_on_a_branched_tree():
    #      0(7) - 1(0) - 2(0) - 3(7)         a gap inside one segment: filled
    #                    \- 4(0) - 5(8)      ... unless a branch of it reaches another segment
    parent = np.array([-1, 0, 1, 2, 2, 4])
    assert fill_gaps(parent, np.array([7, 0, 0, 7, 0, 8])).tolist() == [7, 0, 0, 7, 0, 8]
    assert fill_gaps(parent, np.array([7, 0, 0, 7, 0, 7])).tolist() == [7] * 6
    assert fill_gaps(parent, np.array([0, 0, 0, 0, 0, 0])).tolist() == [0] * 6        # nothing to fill from


def test_voxel_size_and_coordinate_order():
    seg = _seg_along([3] * 6 + [4] * 5)
    zyx = _skeleton(_line(0, 10))
    xyz = _skeleton(_line(0, 10), header=(" id type x y z r parent",))
    plain = _skeleton(_line(0, 10), header=())                   # no header: SWC x, y, z
    a, b, c = (_score(seg, [s])[0] for s in (zyx, xyz, plain))
    assert a.to_dict() == b.to_dict() == c.to_dict() and a.n_splits == 1
    # Read the wrong way round, the line runs along z and meets the segments at one node only.
    (forced,) = _score(seg, [zyx], swc_axes="xyz")
    assert forced.n_splits == 0 and a.n_splits == 1
    (big,) = _score(seg, [zyx], voxel_size=(0.5, 2.0, 2.0))      # x is the array's last axis
    assert big.run_length == 5.0 and big.erl == pytest.approx(a.erl / 2)
    with pytest.raises(ValueError, match="positive"):
        _score(seg, [zyx], voxel_size=(1, 0, 1))


def test_a_segment_on_two_skeletons_is_a_merge_on_both():
    seg = np.zeros((10, 20, 80), np.uint32)
    seg[5, 5, :] = seg[5, 15, :] = 9
    a, b = _skeleton(_line(0, 59, y=5)), _skeleton(_line(0, 59, y=15))      # 60 nodes each
    for s in _score(seg, [a, b]):
        assert s.merged_edges == 100.0 and s.erl == 0.0 and s.edge_accuracy == 0.0 and s.n_merges is None
    short = _skeleton(_line(0, 39, y=15))                          # 40 nodes: not more than 50
    for s in _score(seg, [a, short]):
        assert s.merged_edges == 0.0 and s.erl == s.run_length


def _merge_scene():
    """Skeleton A (90 nodes along x) lies in segment 5, which also holds an unannotated neuron:
    three branches of the fragment 5.swc leave A along y at x = 151 and 160 (9 apart: one merge)
    and a separate piece, 5.extra.swc, leaves at x = 61. Skeleton B lies in segment 7, whose
    fragment follows it and nothing else."""
    seg = np.zeros((20, 120, 200), np.uint64)
    seg[10, 10, :] = 5
    seg[18, 60, :] = 7
    a = _skeleton(_line(10, 188, y=10, z=10, step=2), name="A")
    b = _skeleton(_line(10, 100, y=60, z=18, step=2), name="B")
    trunk = _line(10, 188, y=10, z=10, step=3)
    pts, par = list(trunk), list(range(-1, len(trunk) - 1))
    for x in (151, 160):
        at = trunk.index((10, 10, x))
        for k, y in enumerate(range(13, 111, 3)):
            par.append(at if k == 0 else len(pts) - 1)
            pts.append((10, y, x))
    frag = {"5": _skeleton(pts, par), "5.extra": _skeleton([(10, y, 61) for y in range(13, 111, 3)]),
            "7": _skeleton(_line(10, 100, y=60, z=18, step=3)), "notes": _skeleton(_line(0, 100, y=100))}
    return seg, {"A": a, "B": b}, frag


def test_merges_found_with_the_fragments():
    seg, skels, frags = _merge_scene()
    a, b = skeleton_metrics(seg, skels, fragments=frags)
    # Sites: the branch point at x = 151 (the one at 160 is within 30 of it), and the end of the
    # separate piece nearest A (it has no branch point), at (x, y, z) = (61, 13, 10).
    assert a.n_merges == 2 and a.merge_sites == ((151.0, 10.0, 10.0), (61.0, 13.0, 10.0))
    assert a.merged_edges == 100.0 and a.erl == 0.0 and a.merge_rate == pytest.approx(178.0 / 2)
    assert b.n_merges == 0 and b.merged_edges == 0.0 and b.erl == b.run_length == 90.0
    assert summarize([a, b])["total"] == {"n_splits": 0, "n_merges": 2}
    a0, b0 = skeleton_metrics(seg, skels)                          # without fragments merges are not counted
    assert a0.n_merges is None and a0.erl == a0.run_length and math.isnan(a0.merge_rate)
    assert summarize([a0, b0])["total"]["n_merges"] is None


def test_a_fragment_passing_by_another_segment_is_no_merge():
    seg, skels, frags = _merge_scene()
    seg[10, 10, 140:] = 6                   # A's nodes beyond x = 140 are now in segment 6: 5's piece there is gone
    a, _ = skeleton_metrics(seg, skels, fragments={"5": frags["5"]})
    assert a.n_splits == 1 and a.n_merges == 0                 # the branches at 151/160 leave segment 6's stretch


def test_bad_skeletons(tmp_path):
    ring = Neuron.from_arrays([1, 2, 3], [2, 2, 2], np.zeros((3, 3)), np.ones(3), [3, 1, 2], source="ring.swc")
    with pytest.raises(SkeletonError, match="ring.swc: the parent links form a cycle"):
        skeleton_metrics(np.zeros((2, 2, 2), np.uint8), [ring])
    with pytest.raises(ValueError, match="3D"):
        skeleton_metrics(np.zeros((2, 2), np.uint8), [ring])
    with pytest.raises(SkeletonError, match="no such folder"):
        read_skeletons(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SkeletonError, match="no .swc files"):
        read_skeletons(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.swc").write_text("1 2 0 0 0 1 -1\n2 2 zero 0 0 1 1\n")
    with pytest.raises(SkeletonError, match=r"x.swc:2"):
        read_skeletons(tmp_path / "bad")
    (tmp_path / "f.txt").write_text("hello")
    with pytest.raises(SkeletonError, match="not a folder or a .zip"):
        read_skeletons(tmp_path / "f.txt")


# ------------------------------------------------------------------------------ .npy / .npy.gz
def test_load_npy_plain_and_gzipped(tmp_path):
    a = np.arange(24, dtype=np.uint32).reshape(2, 3, 4)
    np.save(tmp_path / "a.npy", a)
    with gzip.open(tmp_path / "a.npy.gz", "wb") as f:
        np.save(f, a)
    plain, packed = load_npy(tmp_path / "a.npy"), load_npy(tmp_path / "a.npy.gz")
    assert isinstance(plain, np.memmap) and np.array_equal(plain, a) and np.array_equal(packed, a)
    assert packed.dtype == np.uint32
    (tmp_path / "t.npy").write_text("1 2 3")
    (tmp_path / "t.npy.gz").write_bytes(b"not gzip")
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for name, words in (("nope.npy", "no such file"), ("t.npy", "no .npy header"), ("t.npy.gz", "not a readable"),
                        ("o.npy", "Python objects")):
        with pytest.raises(VolumeError, match=words):
            load_npy(tmp_path / name)


# ------------------------------------------------------------------------------ the evaluate-seg command
def _usage_error(r, *words):
    """Exit 2 with one line on stderr naming ``words``, and no traceback."""
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("neurorecon: error: "), r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_cli_on_the_reference_demo(tmp_path):
    assert DEMO.is_dir(), f"{DEMO}: no such folder (../shared/data must be beside the repository)"
    out, js = tmp_path / "results.csv", tmp_path / "r.json"
    r = run("evaluate-seg", DEMO / "pred_segmentation.npy.gz", "--skeletons", DEMO / "target_swcs.zip",
            "--fragments", DEMO / "pred_swcs.zip", "-o", out, "--json", js)
    assert r.exit_code == 0, r.output
    assert "SNT_Data-053" in r.stdout and "total: 30 splits, merges: 0" in r.stdout
    doc = json.loads(js.read_text())
    assert doc["voxel"] is None and doc["skeleton"]["total"] == {"n_splits": 30, "n_merges": 0}
    ref = _reference_rows()
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    with open(DEMO / "results.csv", newline="") as f:
        assert rows[0] == next(csv.reader(f))                                   # the reference's header
    for row, want, s in zip(rows[1:], ref, doc["skeleton"]["skeletons"]):
        assert row[0] == want["name"] == s["name"]
        got = dict(zip(rows[0][1:], row[1:]))
        for col in ("SWC Run Length", "% Split Edges", "% Omit Edges", "% Merged Edges"):
            assert float(got[col]) == pytest.approx(want[col], rel=1e-12, abs=1e-12)
        assert int(got["# Splits"]) == want["# Splits"] and int(got["# Merges"]) == want["# Merges"]
        assert round(float(got["ERL"]), 2) == want["ERL"] and s["merge_rate"] is None
    r = run("evaluate-seg", DEMO / "pred_segmentation.npy.gz", "--skeletons", DEMO / "target_swcs.zip", "-o", out)
    _usage_error(r, "exists", "--overwrite")


def test_cli_dense_ground_truth_from_tiff_and_npy(tmp_path):
    from neurorecon.io.volume import write_tiff

    rng = np.random.default_rng(0)
    gt = np.repeat(np.repeat(rng.integers(0, 6, (4, 6, 6)), 4, axis=1), 4, axis=2).astype(np.uint16)
    seg = gt.astype(np.int32) + 100
    seg[:, :8] = 7                                                          # a merge ...
    seg[:2, 12:] += 50                                                      # ... and some splits
    write_tiff(tmp_path / "gt.tif", gt, (1, 1, 1))
    np.save(tmp_path / "seg.npy", seg)
    r = run("evaluate-seg", tmp_path / "seg.npy", tmp_path / "gt.tif", "--json", "-")
    assert r.exit_code == 0, r.output
    vox = json.loads(r.stdout)["voxel"]
    split, merge = voi(seg, gt)
    are = adapted_rand_error(seg, gt)
    assert (vox["voi_split"], vox["voi_merge"]) == pytest.approx((split, merge)) and split > 0.1 and merge > 0.1
    assert vox["adapted_rand_error"] == pytest.approx(are.error) and vox["n_voxels"] == gt.size
    r = run("evaluate-seg", tmp_path / "seg.npy", tmp_path / "gt.tif")
    assert r.exit_code == 0 and "VOI split" in r.stdout and f"{split:.4f}" in r.stdout


def test_cli_dense_and_skeletons_together(tmp_path):
    assert DEMO.is_dir(), f"{DEMO}: no such folder (../shared/data must be beside the repository)"
    seg = load_npy(DEMO / "pred_segmentation.npy.gz")
    with gzip.open(tmp_path / "gt.npy.gz", "wb") as f:
        np.save(f, seg)
    r = run("evaluate-seg", DEMO / "pred_segmentation.npy.gz", tmp_path / "gt.npy.gz", "--skeletons", DEMO / "target_swcs.zip",
            "--json", "-")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["voxel"]["voi_split"] == 0.0 and doc["voxel"]["adapted_rand_error"] == 0.0
    assert doc["skeleton"]["total"] == {"n_splits": 30, "n_merges": None}      # no --fragments: merges not counted


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, readonly):
    import tifffile

    vol = np.ones((3, 4, 5), np.uint8)
    np.save(tmp_path / "seg.npy", vol)
    np.save(tmp_path / "small.npy", vol[:2])
    np.save(tmp_path / "flat.npy", vol[0])
    np.save(tmp_path / "float.npy", vol.astype(np.float32))
    tifffile.imwrite(tmp_path / "plane.tif", vol[0])                       # a 2D image
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.swc").write_text("1 2 0 0 0 1 -1\n2 2 0 0 x 1 1\n")
    seg = tmp_path / "seg.npy"
    _usage_error(run("evaluate-seg", seg), "give the ground truth")
    _usage_error(run("evaluate-seg", tmp_path / "nope.npy", seg), "nope.npy", "no such file")
    _usage_error(run("evaluate-seg", tmp_path / "nope.tif", seg), "nope.tif")
    _usage_error(run("evaluate-seg", tmp_path / "flat.npy", seg), "flat.npy", "not a 3D volume")
    _usage_error(run("evaluate-seg", seg, tmp_path / "plane.tif"), "plane.tif", "3D")
    _usage_error(run("evaluate-seg", seg, tmp_path / "small.npy"), "differ in shape", "(3, 4, 5)", "(2, 4, 5)")
    _usage_error(run("evaluate-seg", tmp_path / "float.npy", seg), "float.npy", "integers")
    _usage_error(run("evaluate-seg", seg, "--skeletons", tmp_path / "empty"), "empty", "no .swc files")
    _usage_error(run("evaluate-seg", seg, "--skeletons", tmp_path / "bad"), "a.swc:2")
    _usage_error(run("evaluate-seg", seg, "--skeletons", tmp_path / "missing"), "missing", "no such folder")
    _usage_error(run("evaluate-seg", seg, seg, "--fragments", tmp_path / "bad"), "--skeletons")
    _usage_error(run("evaluate-seg", seg, seg, "--json", readonly / "r.json"), "r.json")
    _usage_error(run("evaluate-seg", seg, seg, "--json", tmp_path), "is a folder")
    _usage_error(run("evaluate-seg", seg, "--voxel-size", "1", "0", "1", "--skeletons", tmp_path / "empty"), "--voxel-size")
    zero = tmp_path / "zero.npy"
    np.save(zero, np.zeros((3, 4, 5), np.uint8))
    _usage_error(run("evaluate-seg", seg, zero), "zero.npy", "no labelled voxel")
