"""EM renderer (neurorecon.synth.em) on the real pinky40 segmentation: axes, the train / held-out
split, membranes on label boundaries in every style, determinism, section defects exactly where
recorded, writing and reading back, and the ``synth-em`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from dataclasses import fields, replace
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from neurorecon.cli_em import HELDOUT_STYLE as CLI_HELDOUT_STYLE, EMStyleName
from neurorecon.io.volume import open_volume
from neurorecon.synth.em import (
    HELDOUT_FROM,
    HELDOUT_STYLE,
    STYLE_RANGES,
    STYLES,
    TRAIN_STYLES,
    EMStyle,
    load_pinky40,
    nucleus_mask,
    pinky40_split,
    random_crop,
    relabel_sequential,
    render_em,
    write_em,
)
from neurorecon.synth.em_defects import Defect, shift_sections

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FILE = DATA / "em" / "pinky40_labels_512.npy.gz"


@cache
def _pinky():
    assert FILE.is_file(), f"{FILE}: no such file (../shared/data must be beside the repository)"
    return load_pinky40(DATA)


@cache
def _crop():
    """24 sections of 128 x 128 neuropil in the training region (x < 256): hundreds of objects,
    extracellular space, a few thick dendrites."""
    labels, _ = _pinky()
    return np.array(labels[300:324, 256:384, 0:128])


def _render(style, seed=2, defects=(), crop=None):
    return render_em(_crop() if crop is None else crop, style, np.random.default_rng(seed), defects=defects)


def _boundary(labels):
    """Voxels with a differing 4-neighbour in their section (worked out here, not by em.py)."""
    b = np.zeros(labels.shape, bool)
    for axis in (1, 2):
        d = np.diff(labels, axis=axis) != 0
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        b[tuple(lo)] |= d
        b[tuple(hi)] |= d
    return b


# ------------------------------------------------------------------------------------ data, split
def test_pinky40_axes_are_z_y_x():
    """The file is (x, y, z), Fortran-ordered: its first 512 x 512 values are the plane z = 0,
    x fastest. Read them on their own and compare with labels[0] (y, x)."""
    labels, vs = _pinky()
    assert labels.shape == (512, 512, 512) and labels.dtype == np.uint32 and vs == (40.0, 16.0, 16.0)
    d = zlib.decompressobj(wbits=31)
    raw = d.decompress(FILE.read_bytes()[:400_000], 2_000_000)
    header_len = 10 + int.from_bytes(raw[8:10], "little")
    assert b"'fortran_order': True" in raw[:header_len] and b"(512, 512, 512)" in raw[:header_len]
    plane_xy = np.frombuffer(raw, "<u4", 512 * 512, header_len).reshape(512, 512, order="F")
    assert np.array_equal(labels[0], plane_xy.T)
    assert not np.array_equal(labels[0], labels[0].T) and not np.array_equal(labels[0], labels[:, :, 0])


def test_heldout_block_never_in_training():
    labels, _ = _pinky()
    (held,) = pinky40_split(labels, "heldout")
    assert held.origin == (0, 256, 256) and held.labels.shape == (512, 256, 256)
    assert np.shares_memory(held.labels, labels) and held.labels.base is not None
    assert np.array_equal(held.labels[:, :3, :3], labels[:, 256:259, 256:259])
    train = pinky40_split(labels, "train")
    covered = np.zeros((512, 512), bool)
    for r in train:
        oz, oy, ox = r.origin
        nz, ny, nx = r.labels.shape
        assert np.array_equal(r.labels[::97, ::61, ::53], labels[oz:oz + nz, oy:oy + ny, ox:ox + nx][::97, ::61, ::53])
        covered[oy:oy + ny, ox:ox + nx] = True
        assert nz == 512
    yy, xx = np.mgrid[:512, :512]
    heldout_xy = (yy >= HELDOUT_FROM) & (xx >= HELDOUT_FROM)
    assert np.array_equal(covered, ~heldout_xy)           # all of the training region, none of the block
    rng = np.random.default_rng(0)
    for split, regions in (("train", train), ("heldout", [held])):
        for _ in range(300):
            size = (int(rng.integers(4, 64)), int(rng.integers(32, 257)), int(rng.integers(32, 257)))
            crop, (z, y, x) = random_crop(regions, size, rng)
            assert crop.shape == size
            inside = (y + size[1] > HELDOUT_FROM) and (x + size[2] > HELDOUT_FROM)     # box meets the block
            assert inside == (split == "heldout") and (split == "train" or (y >= 256 and x >= 256))
        assert np.array_equal(crop, labels[z:z + size[0], y:y + size[1], x:x + size[2]])
    with pytest.raises(ValueError, match="fits none"):
        random_crop([held], (8, 300, 64), rng)


def test_relabel_sequential_keeps_zero_and_order():
    a = np.array([[[7, 7, 0], [3, 99, 3]]], np.uint32)
    new, ids = relabel_sequential(a)
    assert new.dtype == np.uint16 and ids.tolist() == [0, 3, 7, 99]
    assert np.array_equal(ids[new], a)


# ------------------------------------------------------------------------------------ styles
def test_styles_named_and_cli_agree():
    assert {e.value for e in EMStyleName} == {"random", *STYLES}
    assert CLI_HELDOUT_STYLE == HELDOUT_STYLE in STYLES and HELDOUT_STYLE not in TRAIN_STYLES
    assert set(STYLE_RANGES) == {f.name for f in fields(EMStyle)} - {"name"}


def test_random_styles_never_the_heldout_one():
    rng = np.random.default_rng(1)
    held = STYLES[HELDOUT_STYLE]
    drawn = [EMStyle.random(rng) for _ in range(400)]
    assert {s.name for s in drawn} == {f"random:{k}" for k in TRAIN_STYLES}      # every training style, jittered
    for s in drawn:
        assert s.line_noise == 0.0 != held.line_noise
        for f in fields(EMStyle)[1:]:
            lo, hi = STYLE_RANGES[f.name]
            assert lo <= getattr(s, f.name) <= hi, (f.name, s)
    assert len({s.membrane_nm for s in drawn}) > 0.9 * len(drawn)                # numbers vary, not only the base


@pytest.mark.parametrize("name", list(STYLES) + ["random0", "random1", "random2", "random3"])
def test_membranes_are_dark_on_label_boundaries(name):
    """Every style: voxels on an in-plane label boundary are darker than those >= 4 px inside an
    object, by a margin over the noise; measured on boundaries moved 6 px, the difference is gone."""
    style = STYLES[name] if name in STYLES else EMStyle.random(np.random.default_rng(int(name[-1])))
    crop = _crop()
    image = _render(style).image.astype(float)
    b = _boundary(crop)
    far = np.stack([ndi.distance_transform_edt(~s) for s in b]) >= 4
    inside = far & (crop != 0)
    diff = image[inside].mean() - image[b].mean()
    assert diff > max(15.0, 0.8 * image[inside].std()), (style.name, diff)
    moved = _boundary(np.roll(crop, 6, axis=2))
    assert abs(image[~moved].mean() - image[moved].mean()) < 0.2 * diff


def test_extracellular_space_is_pale_and_organelles_dark():
    """Label 0 (a slab 24 px wide between two objects, made up here: pinky40's zeros are thin
    gaps) is paler than cytoplasm; inside pinky40 objects there are organelles (mitochondria,
    vesicle clouds, nuclei) far darker than the typical interior, in every training style."""
    slab = np.ones((6, 96, 96), np.uint32)
    slab[:, :, 48:] = 2
    slab[:, :, 36:60] = 0
    crop = _crop()
    far = np.stack([ndi.distance_transform_edt(~s) for s in _boundary(crop)]) >= 5
    for name in TRAIN_STYLES:
        image = _render(STYLES[name], crop=slab).image.astype(float)
        assert image[:, :, 42:54].mean() > image[:, :, list(range(6, 28)) + list(range(68, 90))].mean() + 5, name
        smooth = ndi.uniform_filter(_render(STYLES[name]).image.astype(float), (1, 5, 5))
        cyto = np.median(smooth[far & (crop != 0)])
        assert np.percentile(smooth[far & (crop != 0)], 1) < cyto - 25, name


def test_nuclei_only_in_the_soma():
    """Made for the whole volume, the nucleus mask falls in pinky40's one soma (the label that
    fills the top of sections 0-400), deep inside it, and nowhere in thinner objects."""
    labels, vs = _pinky()
    mask = nucleus_mask(labels, vs)
    sample = (slice(None, None, 2), slice(None, None, 4), slice(None, None, 4))
    inside = labels[sample][mask[sample]]
    soma = 25024949
    assert inside.size > 10_000 and np.mean(inside == soma) > 0.99
    assert 0.05 < mask[sample].sum() / np.sum(labels[sample] == soma) < 0.5
    with pytest.raises(ValueError, match="nucleus must have the shape"):
        render_em(_crop(), STYLES["tem"], np.random.default_rng(0), nucleus=mask[:2])


# ------------------------------------------------------------------------------------ determinism
def test_same_seed_same_volume():
    style = STYLES["tem"]
    a = _render(style, seed=11, defects="random")
    b = _render(style, seed=11, defects="random")
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels) and a.defects == b.defects
    c = _render(style, seed=12, defects="random")
    assert not np.array_equal(a.image, c.image)
    assert a.image.dtype == np.uint8 and a.image.shape == _crop().shape


# ------------------------------------------------------------------------------------ defects
def test_each_defect_changes_its_sections_only():
    crop = _crop()
    style = STYLES["dense"]
    clean = _render(style, defects=())
    defects = (Defect("blank", 3, {"value": 0}), Defect("shift", 7, {"dy": 2, "dx": -1, "to_end": False}),
               Defect("missing", 10), Defect("brightness", 12, {"depth": 2, "gain": 1.25, "offset": 0.0}),
               Defect("smudge", 15, {"depth": 1, "y": 60.0, "x": 70.0, "radius_px": 30.0, "strength": 0.5, "seed": 4}),
               Defect("blur", 18, {"sigma_px": 2.0}), Defect("shift", 20, {"dy": 0, "dx": 2, "to_end": True}))
    got = _render(style, defects=defects)
    assert got.defects == defects
    assert (got.image[3] == 0).all()                                                      # blank is blank
    assert np.array_equal(got.image[7], shift_sections(clean.image[7:8], 2, -1)[0])       # shifted, and by this much
    assert np.array_equal(got.image[7, 2:, :-1], clean.image[7, :-2, 1:])
    assert np.array_equal(got.labels[7, 2:, :-1], crop[7, :-2, 1:])                       # labels moved with it
    assert np.array_equal(got.image[10], got.image[9])                                    # missing: the previous again
    assert got.image[12:14].mean() > clean.image[12:14].mean() + 10                       # brighter
    smudged = got.image[15, 45:75, 55:85].astype(float).mean()
    assert smudged < clean.image[15, 45:75, 55:85].mean() - 15                             # darker under the smudge
    b18, in18 = _boundary(crop)[18], ndi.distance_transform_edt(~_boundary(crop)[18]) >= 4
    contrast = [im[18][in18].mean() - im[18][b18].mean() for im in (got.image.astype(float), clean.image.astype(float))]
    assert contrast[0] < 0.8 * contrast[1]                                               # out of focus: membranes fade
    assert np.array_equal(got.image[20:, :, 2:], clean.image[20:, :, :-2])                # step: every later section
    assert np.array_equal(got.labels[20:, :, 2:], crop[20:, :, :-2])
    touched = {3, 7, 10, 12, 13, 15, 18, 20, 21, 22, 23}
    for z in range(crop.shape[0]):
        assert np.array_equal(got.image[z], clean.image[z]) != (z in touched), z
        assert np.array_equal(got.labels[z], crop[z]) == (z not in (7, 20, 21, 22, 23)), z


def test_random_defects_are_recorded_where_applied():
    """Drawn defects: the sections that differ from the clean render are exactly those the
    recorded defects name."""
    crop = _crop()
    kinds = set()
    for seed in range(6):
        style = EMStyle.random(np.random.default_rng(seed))
        style = replace(style, defects=8.0)           # many defects in 24 sections
        got = _render(style, seed=seed, defects="random")
        clean = _render(style, seed=seed, defects=())
        named = set().union(*(d.sections(crop.shape[0]) for d in got.defects)) if got.defects else set()
        changed = {z for z in range(crop.shape[0]) if not np.array_equal(got.image[z], clean.image[z])}
        assert changed == named, (seed, [d.to_dict() for d in got.defects])
        kinds |= {d.kind for d in got.defects}
        json.dumps([d.to_dict() for d in got.defects])
    assert kinds == {"brightness", "shift", "smudge", "missing", "blank", "blur"}


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="3D integer"):
        render_em(np.zeros((4, 4), np.uint32), STYLES["tem"], np.random.default_rng(0))
    with pytest.raises(ValueError, match="3D integer"):
        render_em(np.zeros((2, 4, 4), np.float32), STYLES["tem"], np.random.default_rng(0))
    with pytest.raises(ValueError, match="voxel_size_nm"):
        render_em(np.zeros((2, 4, 4), np.uint32), STYLES["tem"], np.random.default_rng(0), voxel_size_nm=(40, 0, 16))
    with pytest.raises(ValueError, match="unknown defect"):
        Defect("fold", 2)


# ------------------------------------------------------------------------------------ writing
@pytest.mark.parametrize("fmt", ["tif", "zarr"])
def test_written_volume_reads_back_aligned(tmp_path, fmt):
    got = _render(STYLES["noisy"], defects=(Defect("shift", 5, {"dy": -2, "dx": 1, "to_end": True}),))
    meta = write_em(got, tmp_path, "v", fmt, info={"split": "train"})
    image = open_volume(str(tmp_path / meta["image"]))
    labels = open_volume(str(tmp_path / meta["labels"]))
    assert image.shape == labels.shape == got.image.shape
    assert image.voxel_size == pytest.approx((0.016, 0.016, 0.04)) and labels.voxel_size == pytest.approx((0.016, 0.016, 0.04))
    assert np.array_equal(image.read((0, 0, 0), image.shape), got.image)
    stored = labels.read((0, 0, 0), labels.shape)
    back = json.loads((tmp_path / "v.json").read_text())
    assert np.array_equal(np.asarray(back["label_ids"], np.uint32)[stored], got.labels)        # same ids, same voxels
    assert back["split"] == "train" and back["style"]["name"] == "noisy" and back["defects"][0]["kind"] == "shift"


# ------------------------------------------------------------------------------------ the command
def _cli(*args, cwd):
    env = {**os.environ, "COLUMNS": "200", "NEURORECON_DATA": str(DATA)}
    return subprocess.run([sys.executable, "-m", "neurorecon", "synth-em", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def _one_line_error(p, *words):
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("neurorecon: error: "), p.stderr
    assert p.stdout == "" and "Traceback" not in p.stderr
    for w in words:
        assert w in p.stderr, p.stderr


def test_cli_writes_volumes(tmp_path):
    _pinky()
    p = _cli("-o", "out", "-n", "2", "--seed", "4", "--size", "64", "48", "8", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == 2 and "random:" in p.stdout
    out = tmp_path / "out"
    assert sorted(f.name for f in out.iterdir()) == ["em_0000.json", "em_0000.labels.tif", "em_0000.tif",
                                                     "em_0001.json", "em_0001.labels.tif", "em_0001.tif"]
    labels, _ = _pinky()
    for k in range(2):
        meta = json.loads((out / f"em_{k:04d}.json").read_text())
        z, y, x = meta["origin_zyx"]
        assert meta["split"] == "train" and meta["size_xyz"] == [64, 48, 8] and not (y + 48 > 256 and x + 64 > 256)
        image = open_volume(str(out / meta["image"])).read((0, 0, 0), (8, 48, 64))
        stored = open_volume(str(out / meta["labels"])).read((0, 0, 0), (8, 48, 64))
        assert image.shape == (8, 48, 64) and image.dtype == np.uint8
        truth = labels[z:z + 8, y:y + 48, x:x + 64].copy()
        for d in meta["defects"]:                       # the written labels follow the image's shifts
            if d["kind"] == "shift":
                zs = slice(d["z"], None if d["to_end"] else d["z"] + 1)
                truth[zs] = shift_sections(truth[zs], d["dy"], d["dx"])
        assert np.array_equal(np.asarray(meta["label_ids"], np.uint32)[stored], truth)
    before = (out / "em_0001.tif").read_bytes()
    _one_line_error(_cli("-o", "out", "-n", "1", cwd=tmp_path), "already holds volumes", "--overwrite")
    p = _cli("-o", "out", "-n", "2", "--seed", "4", "--size", "64", "48", "8", "--overwrite", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (out / "em_0001.tif").read_bytes() == before                 # same seed, same volume

    p = _cli("-o", "held", "-n", "1", "--split", "heldout", "--style", "sem", "--format", "zarr", "--size", "40", "40", "6",
             cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    meta = json.loads((tmp_path / "held" / "em_0000.json").read_text())
    assert meta["style"]["name"] == "sem" and meta["image"] == "em_0000.zarr"
    assert meta["origin_zyx"][1] >= 256 and meta["origin_zyx"][2] >= 256
    assert open_volume(str(tmp_path / "held" / "em_0000.labels.zarr")).shape == (6, 40, 40)


def test_cli_bad_input_one_line(tmp_path, readonly):
    _one_line_error(_cli("-o", readonly / "em", "-n", "1", "--size", "64", "64", "4", cwd=tmp_path), "cannot write in")
    _one_line_error(_cli("-o", "o", "--size", "300", "300", "8", cwd=tmp_path), "--size 300 300 8", "train region")
    _one_line_error(_cli("-o", "o", "--size", "64", "300", "8", "--split", "heldout", cwd=tmp_path), "heldout region")
    _one_line_error(_cli("-o", "o", "--size", "16", "64", "8", cwd=tmp_path), "at least 32")
    _one_line_error(_cli("-o", "o", "--style", "sem", cwd=tmp_path), "held out", "--split heldout")
    (tmp_path / "afile").write_text("")
    _one_line_error(_cli("-o", "afile", "-n", "1", cwd=tmp_path), "is not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "ro"]
