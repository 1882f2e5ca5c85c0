"""The watershed baseline and `neurorecon segment`, on EM-like images rendered from real labels.

The labels are the pinky40 dense segmentation of mouse visual cortex (16 x 16 x 40 nm, file axes
x, y, z) in ../shared/data/em. Only its training part is used (x < 256 or y < 256); the block
x >= 256 and y >= 256 is held out. The rendering is crude but has what a watershed must cope with:
dark membranes at every label boundary, dark organelles inside cells, cells of different
brightness, blur, noise and a different gain and offset in every section.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neurorecon.cli import app
from neurorecon.em import METHODS, SegmentError, adapted_rand_error, segment, voi
from neurorecon.em.segment import FORMATS, check_voxel_size, write_segmentation
from neurorecon.em.watershed import WatershedParams, link_sections, watershed_cut
from neurorecon.io.volume import open_volume, write_tiff, write_zarr

PINKY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "em" / "pinky40_labels_512.npy.gz"
VS = (0.016, 0.016, 0.04)
runner = CliRunner()


# ------------------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def pinky():
    # Required, not skipped: without it the quality of the segmentation goes untested.
    assert PINKY.is_file(), f"{PINKY}: no such file (../shared/data must be beside the repository)"
    return np.load(gzip.open(PINKY))


def crop(labels, x0, y0, z0, nx=128, ny=128, nz=16):
    """A [z, y, x] crop of the (x, y, z) file; never from the held-out block."""
    assert x0 + nx <= 256 or y0 + ny <= 256, "the block x >= 256, y >= 256 is held out"
    return np.ascontiguousarray(labels[x0:x0 + nx, y0:y0 + ny, z0:z0 + nz].transpose(2, 1, 0))


def render_em(labels, seed=0, noise=0.06, blur=1.0, organelles=0.004):
    """A crude serial-section EM image (uint8, membranes dark) of a [z, y, x] label volume."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    _, inv = np.unique(labels, return_inverse=True)
    img = rng.uniform(0.55, 0.85, inv.max() + 1)[inv.reshape(labels.shape)]
    spots = ndi.gaussian_filter((rng.random(labels.shape) < organelles).astype(np.float32), (0, 2, 2)) > 0.02
    img = np.where(spots, img - 0.25, img)
    edge = np.zeros(labels.shape, bool)
    for axis in (1, 2):
        d = np.diff(labels, axis=axis) != 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(1, None), slice(None, -1)
        edge[tuple(lo)] |= d
        edge[tuple(hi)] |= d
    img[edge | (labels == 0)] = 0.15
    img = ndi.gaussian_filter(img, (0, blur, blur)) + rng.normal(0, noise, labels.shape)
    img = img * rng.uniform(0.8, 1.2, (len(labels), 1, 1)) + rng.uniform(-0.08, 0.08, (len(labels), 1, 1))
    return np.clip(img * 255, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def sample(pinky):
    """A training crop (not one of the six the defaults were chosen on) and its image."""
    gt = crop(pinky, 0, 384, 256)
    return gt, render_em(gt, seed=21)


# ------------------------------------------------------------------------------ scores
def contingency(gt, seg):
    """Overlap counts of (true object, segment) pairs over gt != 0, with both objects' sizes."""
    m = gt != 0
    _, gi, gsize = np.unique(gt[m], return_inverse=True, return_counts=True)
    _, si, ssize = np.unique(seg[m], return_inverse=True, return_counts=True)
    key, count = np.unique(gi.astype(np.int64) * len(ssize) + si, return_counts=True)
    return key // len(ssize), key % len(ssize), count, gsize, ssize


def matched_share(gt, seg, min_size=2000, share=0.5):
    """Share of the true objects of >= min_size voxels that one segment matches: the segment
    overlapping the object most covers at least ``share`` of it and lies at least ``share`` in it."""
    g, s, count, gsize, ssize = contingency(gt, seg)
    order = np.lexsort((-count, g))
    best = order[np.r_[True, g[order][1:] != g[order][:-1]]]
    big = gsize[g[best]] >= min_size
    ok = (count[best] >= share * gsize[g[best]]) & (count[best] >= share * ssize[s[best]])
    return float(ok[big].mean())


def voi_arand(gt, seg):
    """(VOI split, VOI merge) in bits and the adapted Rand error, over gt != 0 (neurorecon.em.metrics;
    a helper of this file's own gave the same numbers to 1e-14)."""
    split, merge = voi(seg, gt)
    return split, merge, adapted_rand_error(seg, gt).error


# ------------------------------------------------------------------------------ quality
def test_segmentation_matches_the_true_neurites(sample):
    gt, img = sample
    seg = segment(img, VS)
    split, merge, arand = voi_arand(gt, seg)
    # Measured: 0.92 matched, VOI 0.78 + 0.49 bits, ARand 0.15; margins for other numpy/scipy builds.
    assert matched_share(gt, seg) >= 0.8
    assert split < 1.0 and merge < 0.65 and arand < 0.25
    # The scores do tell segmentations apart: one label per section, or every 2D piece on its own
    # (linking off), fail them.
    per_section = np.broadcast_to(np.arange(1, len(gt) + 1)[:, None, None], gt.shape)
    assert matched_share(gt, per_section) < 0.1
    unlinked = segment(img, VS, link_overlap=1.0)
    assert matched_share(gt, unlinked) < 0.1 and voi_arand(gt, unlinked)[0] > 3 * split


def test_labels_have_the_image_shape_are_consecutive_and_deterministic(sample):
    gt, img = sample
    before = img.copy()
    seg = segment(img, VS)
    assert seg.shape == img.shape and seg.dtype == np.uint32
    assert np.array_equal(np.unique(seg), np.arange(1, seg.max() + 1))    # 1..N, no 0 in an EM image
    assert np.array_equal(img, before)                                     # the input is only read
    assert np.array_equal(segment(img, VS), seg)
    assert np.array_equal(segment(img.astype(np.float32), VS), seg)        # the type does not matter, only levels
    assert np.array_equal(segment(img.astype(np.uint16) * 257, VS), seg)


def test_linking_gives_a_neurite_through_every_section_one_label(sample):
    gt, img = sample
    # True objects in every one of the 16 sections with at least 100 pixels (~180 nm across).
    through = [i for i in np.unique(gt) if i and ((gt == i).sum(axis=(1, 2)) >= 100).all()]
    assert len(through) >= 6

    def dominant(seg):        # per object and section, the segment covering most of it
        return np.array([[np.bincount(seg[k][gt[k] == i]).argmax() for k in range(len(gt))] for i in through])

    linked = dominant(segment(img, VS))
    # Measured: 39 of 40 steps from a section to the next keep the label; 5 of 8 objects have one
    # label through all 16 sections, the other 3 two.
    assert (linked[:, 1:] == linked[:, :-1]).mean() >= 0.9
    assert sum(len(set(d)) == 1 for d in linked) >= len(through) / 2
    # Without linking every section has labels of its own.
    unlinked = dominant(segment(img, VS, link_overlap=1.0))
    assert (unlinked[:, 1:] != unlinked[:, :-1]).all()


def test_finer_and_anisotropic_voxels_are_resampled_and_labels_come_back_at_the_input_grid(pinky):
    gt = crop(pinky, 64, 0, 384, nz=8)
    fine = gt.repeat(2, axis=1).repeat(2, axis=2)                  # 8 nm pixels
    seg = segment(render_em(fine, seed=3, blur=2.0, organelles=0.001), (0.008, 0.008, 0.04))
    assert seg.shape == fine.shape
    assert matched_share(fine, seg, min_size=8000) >= 0.7          # measured 0.86
    # x and y resampled differently; an odd shape comes back as it was.
    odd = gt[:5, :101, ::2][:, :, :57]                             # 32 nm in x, 16 nm in y
    seg = segment(render_em(odd, seed=4, blur=0.7), (0.032, 0.016, 0.04))
    assert seg.shape == odd.shape == (5, 101, 57)
    assert matched_share(odd, seg, min_size=1000) >= 0.6           # measured 0.88


def test_a_volume_is_read_in_slabs_with_the_same_result(sample, tmp_path, monkeypatch):
    import neurorecon.em.watershed as ws

    gt, img = sample
    whole = segment(img, VS)
    monkeypatch.setattr(ws, "SLAB_BYTES", 3 * 128 * 128 * 4 * 6)     # slabs of 3 sections
    done = []
    vol = open_volume(write_zarr(tmp_path / "em.zarr", img, VS, chunks=(4, 64, 64)))
    assert np.array_equal(segment(vol, vol.voxel_size, progress=lambda d, t: done.append((d, t))), whole)
    assert done == [(k, 16) for k in range(1, 17)]


def test_blank_sections_get_label_0_and_the_rest_is_segmented():
    image = np.full((4, 40, 40), 200, np.uint8)
    image[:, :, 19:21] = 20                       # one membrane down the middle
    image[2] = 0                                  # a missing section
    seg = segment(image, VS)
    assert (seg[2] == 0).all() and (seg[[0, 1, 3]] > 0).all()
    # Two cells in sections 0-1; section 3 is not linked across the gap.
    assert len(np.unique(seg[:2])) == 2 and set(np.unique(seg[3])).isdisjoint(np.unique(seg[:2]))
    assert (segment(np.zeros((3, 20, 20), np.uint8), VS) == 0).all()


def test_watershed_cut_follows_the_ridge_and_link_sections_the_overlap():
    relief = np.zeros((9, 12))
    relief[:, 6] = 1.0                        # a ridge down column 6 ...
    relief[4, 6] = 0.2                        # ... with a low pass the flood must not take
    markers = np.zeros((9, 12), int)
    markers[4, 1], markers[4, 10] = 1, 2
    cut = watershed_cut(relief, markers)
    assert (cut[:, :6] == 1).all() and (cut[:, 7:] == 2).all()
    below = np.array([[1, 1, 1, 1, 2, 2, 2, 2]])
    above = np.array([[7, 7, 7, 8, 8, 8, 8, 8]])
    # 7 overlaps 1 fully (3 of 1's 4 pixels); 8 overlaps 2 most (4 of 5 pixels, all of 2).
    assert link_sections(below, above, 0.5).tolist() == [[1, 7], [2, 8]]
    assert link_sections(below, above, 0.8).tolist() == [[2, 8]]


def test_bad_input_is_a_one_line_error():
    image = np.zeros((3, 20, 20), np.uint8)
    with pytest.raises(SegmentError, match="2D image"):
        segment(image[0], VS)
    with pytest.raises(SegmentError, match="unknown method 'ffn'; available: watershed"):
        segment(image, VS, method="ffn")
    with pytest.raises(SegmentError, match="unknown setting.*threshhold"):
        segment(image, VS, threshhold=0.4)
    with pytest.raises(SegmentError, match="threshold must be"):
        segment(image, VS, threshold=2.0)
    with pytest.raises(SegmentError, match="grey levels"):
        segment(image.astype(bool), VS)
    with pytest.raises(SegmentError, match="positive"):
        segment(image, (0.016, 0, 0.04))
    with pytest.raises(SegmentError, match="looks like nanometres: give 0.016 0.016 0.04"):
        check_voxel_size((16, 16, 40))
    with pytest.raises(SegmentError, match="not EM"):
        check_voxel_size((1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="link_overlap"):
        WatershedParams(link_overlap=0.0)


def test_labels_write_and_read_back_in_every_format(tmp_path):
    labels = (np.arange(2 * 30 * 40, dtype=np.uint32).reshape(2, 30, 40) * 1_000_003) % 4_000_000_000
    labels = labels.astype(np.uint32)
    for name, fmt in (("s.tif", None), ("s.zarr", None), ("s", "precomputed")):
        path = write_segmentation(tmp_path / name, labels, VS, fmt)
        vol = open_volume(path)
        assert vol.dtype == np.uint32 and vol.voxel_size == pytest.approx(VS), name
        assert np.array_equal(vol.read((0, 0, 0), vol.shape), labels), name
        with pytest.raises(SegmentError, match="exists; pass --overwrite"):
            write_segmentation(path, labels, VS, fmt)
        write_segmentation(path, labels[:, ::-1], VS, fmt, overwrite=True)
        assert np.array_equal(open_volume(path).read((0, 0, 0), vol.shape), labels[:, ::-1]), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s", "s.tif", "s.zarr"]     # no temporaries left
    with pytest.raises(SegmentError, match="cannot tell the format"):
        write_segmentation(tmp_path / "s.n5", labels, VS)
    with pytest.raises(SegmentError, match="64-bit"):
        write_segmentation(tmp_path / "big.tif", labels.astype(np.uint64), VS)


# ------------------------------------------------------------------------------ the command line
def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _digest(path: Path) -> str:
    files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def test_cli_segments_to_every_format_like_the_api(sample, tmp_path):
    gt, img = sample
    image = write_tiff(tmp_path / "em.tif", img, VS)
    before = _digest(image)
    expected = segment(img, VS)
    r = run("segment", image, "-o", tmp_path / "seg.tif", "--json", tmp_path / "seg.json")
    assert r.exit_code == 0, r.output
    assert f"{int(expected.max())} labels" in r.output
    report = json.loads((tmp_path / "seg.json").read_text())
    assert report["labels"] == int(expected.max()) and report["shape_zyx"] == list(img.shape)
    assert report["method"] == "watershed" and report["settings"]["link_overlap"] == WatershedParams().link_overlap
    zarr_in = write_zarr(tmp_path / "em.zarr", img, VS)
    for args, out in ((["--voxel-size", *VS], tmp_path / "seg.tif"), ([], tmp_path / "seg.zarr"),
                      (["--format", "precomputed"], tmp_path / "seg_pc")):
        src = zarr_in if out.name == "seg.zarr" else image
        r = run("segment", src, "-o", out, "--overwrite", *args)
        assert r.exit_code == 0, r.output
        vol = open_volume(out)
        assert vol.voxel_size == pytest.approx(VS) and vol.dtype == np.uint32
        assert np.array_equal(vol.read((0, 0, 0), vol.shape), expected), out
    assert _digest(image) == before


def test_cli_refuses_bad_input_with_one_line_and_exit_2(tmp_path, readonly):
    import tifffile

    img = np.full((3, 24, 24), 200, np.uint8)
    img[:, :, 11:13] = 20
    image = write_tiff(tmp_path / "em.tif", img, VS)
    tifffile.imwrite(tmp_path / "flat.tif", img[0])
    uncalibrated = tmp_path / "nocal.tif"
    tifffile.imwrite(uncalibrated, np.stack([img] * 2).reshape(6, 24, 24), photometric="minisblack")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "taken.zarr").mkdir()
    (tmp_path / "taken.zarr" / "mine.txt").write_text("keep me")
    out = tmp_path / "seg.tif"
    cases = [
        (["notes.txt"], "unknown format"),
        (["flat.tif"], "not a 3D volume"),
        (["nocal.tif"], "voxel size is not recorded"),
        (["em.tif", "--voxel-size", "0", "0.016", "0.04"], "positive"),
        (["em.tif", "--voxel-size", "16", "16", "40"], "looks like nanometres"),
        (["missing.tif"], "no such file"),
    ]
    for args, message in cases:
        r = run("segment", *[tmp_path / a if a.endswith((".txt", ".tif")) else a for a in args], "-o", out)
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, (args, r.output)
        assert len(r.output.strip().splitlines()) == 1, r.output
        assert not out.exists()
    assert run("segment", image, "-o", out).exit_code == 0
    r = run("segment", image, "-o", out)
    assert r.exit_code == 2 and "exists; pass --overwrite" in r.output
    r = run("segment", image, "-o", image, "--overwrite")
    assert r.exit_code == 2 and "input" in r.output
    r = run("segment", image, "-o", tmp_path / "taken.zarr", "--overwrite")
    assert r.exit_code == 2 and "is not a volume" in r.output and (tmp_path / "taken.zarr" / "mine.txt").exists()
    r = run("segment", image, "-o", tmp_path / "seg.n5")
    assert r.exit_code == 2 and "--format precomputed" in r.output
    r = run("segment", image, "-o", tmp_path / "x.tif", "--method", "ffn")        # not built yet
    assert r.exit_code == 2 and "watershed" in r.output and "affinities" in r.output
    (tmp_path / "adir.tif").mkdir()
    r = run("segment", image, "-o", tmp_path / "adir.tif")
    assert r.exit_code == 2 and "is a folder" in r.output
    for name in ("x.tif", "x.zarr"):            # an unwritable place is found before the work
        r = run("segment", image, "-o", readonly / name)
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "segmented" not in r.output
        assert "Traceback" not in r.output and "labels" not in r.output


def test_cli_choices_are_the_methods_and_formats_that_exist():
    from neurorecon.cli_em import Method, SegFormat

    assert tuple(m.value for m in Method) == METHODS
    assert tuple(f.value for f in SegFormat) == FORMATS
