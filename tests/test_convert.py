"""neurorecon.io.convert: multiscale OME-Zarr / precomputed output, downsampling, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
from typer.testing import CliRunner

from neurorecon.cli import app
from neurorecon.io.convert import DONE, JOURNAL, UNIT_BYTES, Plan, _unit_shape, convert, downsample, plan_levels
from neurorecon.io.volume import Volume, VolumeError, open_volume, write_tiff, write_zarr


def _image(shape=(40, 70, 90), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 250, shape).astype(np.uint8)


def _ts_level(dst: Path, fmt: str, k: int):
    """A level read straight through tensorstore, as an outside tool would."""
    if fmt == "ome-zarr":
        return ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": f"{dst}/{k}/"}}, read=True).result()
    store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": f"{dst}/"},
                     "scale_index": k}, read=True).result()
    return store[ts.d["channel"][0]][ts.d["z", "y", "x"].transpose[:]]


# ------------------------------------------------------------------------------ downsampling
def test_mean_of_odd_border_is_mean_of_existing_voxels():
    a = np.arange(3 * 5 * 7, dtype=np.float32).reshape(3, 5, 7)
    out = downsample(a, (2, 2, 2))
    assert out.shape == (2, 3, 4)
    assert out[1, 2, 3] == a[2, 4, 6]                     # a lone corner voxel keeps its value
    assert out[0, 0, 0] == pytest.approx(a[:2, :2, :2].mean())
    assert out[1, 0, 0] == pytest.approx(a[2, :2, :2].mean())


def test_integer_mean_rounds_and_keeps_dtype():
    a = np.array([[[0, 1], [1, 1]]], np.uint16)            # mean 0.75
    out = downsample(a, (1, 2, 2))
    assert out.dtype == np.uint16 and out.item() == 1
    big = np.full((2, 2, 2), 65535, np.uint16)             # sums overflow uint16: must not wrap
    assert downsample(big, (2, 2, 2)).item() == 65535


def test_mode_keeps_labels_and_never_invents_one():
    a = np.zeros((2, 4, 4), np.uint64)
    a[:, :2, :2] = 7
    a[0, 0, 0] = 3                                         # minority inside the 7 block
    a[:, 2:, 2:] = 2 ** 60 + 5                             # a label that float maths would mangle
    out = downsample(a, (2, 2, 2), labels=True)
    assert out.tolist() == [[[7, 0], [0, 2 ** 60 + 5]]]
    rng = np.random.default_rng(1)
    b = rng.choice(np.array([11, 22, 33], np.uint32), size=(5, 6, 7))
    assert set(np.unique(downsample(b, (2, 2, 2), labels=True))) <= {11, 22, 33}


def test_levels_halve_the_finest_axes_first():
    lv = plan_levels((100, 1000, 1000), (0.3, 0.3, 1.0), (64, 64, 64))
    # x, y halved until their voxels (1.2 µm) are no finer than z's (1 µm), then all three.
    assert [x.step for x in lv[1:]] == [(1, 2, 2), (1, 2, 2), (2, 2, 2), (1, 2, 2)]
    assert lv[-1].shape == (50, 63, 63) and lv[-1].voxel_size == pytest.approx((4.8, 4.8, 2.0))
    assert len(plan_levels((10, 10, 10), (1, 1, 1), (64, 64, 64))) == 1
    assert len(plan_levels((1000, 1000, 1000), (1, 1, 1), (64, 64, 64), max_levels=2)) == 2


def test_units_stay_within_budget_whatever_the_volume_size():
    shape = (20000, 40000, 40000)                          # a 32 TB whole brain, uint8
    levels = plan_levels(shape, (0.3, 0.3, 1.0), (64, 64, 64))
    plan = Plan("ome-zarr", "uint16", False, (64, 64, 64), levels, "x")
    for k, level in enumerate(levels):
        u = _unit_shape(plan, k)
        assert all(n % c == 0 for n, c in zip(u, (64, 64, 64)))
        assert np.prod(u) * 2 * np.prod(level.step) <= UNIT_BYTES


# ------------------------------------------------------------------------------ conversion
@pytest.mark.parametrize("fmt", ["ome-zarr", "precomputed"])
def test_tiff_converts_identically_with_a_pyramid(tmp_path, fmt):
    a = _image()
    write_tiff(tmp_path / "a.tif", a, (0.5, 0.5, 1.0))
    dst = tmp_path / ("out.zarr" if fmt == "ome-zarr" else "out")
    rep = convert(tmp_path / "a.tif", dst, chunks=(16, 32, 32))
    assert rep.plan.fmt == fmt and rep.skipped == 0 and not (dst / JOURNAL).exists()
    assert np.array_equal(_ts_level(dst, fmt, 0).read().result(), a)
    fine = _ts_level(dst, fmt, 0).read().result()
    for k in range(1, len(rep.plan.levels)):
        coarse = _ts_level(dst, fmt, k).read().result()
        assert np.array_equal(coarse, downsample(fine, rep.plan.levels[k].step))
        fine = coarse
    v1 = open_volume(dst, scale=1)
    assert v1.shape == rep.plan.levels[1].shape == (40, 35, 45)
    assert v1.voxel_size == pytest.approx((1.0, 1.0, 1.0))
    assert open_volume(dst).voxel_size == pytest.approx((0.5, 0.5, 1.0))


def test_ome_levels_carry_the_voxel_centre_shift(tmp_path):
    write_tiff(tmp_path / "a.tif", _image((40, 70, 90)), (0.5, 0.5, 1.0))
    convert(tmp_path / "a.tif", tmp_path / "o.zarr", chunks=(16, 16, 16))
    ds = json.loads((tmp_path / "o.zarr" / ".zattrs").read_text())["multiscales"][0]["datasets"]
    assert len(ds[0]["coordinateTransformations"]) == 1           # level 0: scale only
    scale, shift = (t[next(iter(set(t) - {"type"}))] for t in ds[1]["coordinateTransformations"])
    assert scale == [1.0, 1.0, 1.0] and shift == [0.0, 0.25, 0.25]   # (z, y, x): x, y halved once


def test_labels_go_to_precomputed_segmentation_by_mode(tmp_path):
    rng = np.random.default_rng(2)
    lab = np.repeat(rng.integers(1, 6, (10, 12, 14)).astype(np.uint64), 2, axis=0)
    write_zarr(tmp_path / "lab.zarr", lab, (1, 1, 1))
    rep = convert(tmp_path / "lab.zarr", tmp_path / "seg", chunks=(8, 8, 8))
    info = json.loads((tmp_path / "seg" / "info").read_text())
    assert rep.plan.labels and info["type"] == "segmentation"
    assert info["scales"][0]["encoding"] == "compressed_segmentation"
    assert np.array_equal(_ts_level(tmp_path / "seg", "precomputed", 0).read().result(), lab)
    assert np.array_equal(_ts_level(tmp_path / "seg", "precomputed", 1).read().result(),
                          downsample(lab, rep.plan.levels[1].step, labels=True))


def test_slice_folder_source(tmp_path):
    import tifffile

    a = _image((6, 30, 40), seed=3)
    (tmp_path / "planes").mkdir()
    for k, plane in enumerate(a):
        tifffile.imwrite(tmp_path / "planes" / f"z{k}.tif", plane)
    convert(tmp_path / "planes", tmp_path / "p.zarr", voxel_size=(1, 1, 2), chunks=(4, 16, 16))
    assert np.array_equal(open_volume(tmp_path / "p.zarr").read((0, 0, 0), a.shape), a)


# ------------------------------------------------------------------------------ resume and safety
class _Stop(Exception):
    pass


def test_interrupted_conversion_resumes_and_skips_finished_units(tmp_path):
    a = _image((64, 64, 64), seed=4)
    write_tiff(tmp_path / "a.tif", a, (1, 1, 1))
    dst = tmp_path / "r.zarr"

    def stop_after(n):
        def progress(done, total):
            if done >= n:
                raise _Stop
        return progress

    with pytest.raises(_Stop):
        convert(tmp_path / "a.tif", dst, chunks=(16, 16, 16), workers=1, progress=stop_after(3))
    assert (dst / JOURNAL).exists()
    with pytest.raises(VolumeError, match="unfinished conversion"):
        open_volume(dst)                                   # a half-written volume is not read as whole
    with open(dst / JOURNAL, "a") as fh:
        fh.write('[0, 16')                                 # a line torn by the interruption
    rep = convert(tmp_path / "a.tif", dst, chunks=(16, 16, 16), workers=1)
    assert rep.skipped == 3 and rep.units > 3
    clean = convert(tmp_path / "a.tif", tmp_path / "clean.zarr", chunks=(16, 16, 16))
    for k in range(len(rep.plan.levels)):
        assert np.array_equal(_ts_level(dst, "ome-zarr", k).read().result(),
                              _ts_level(tmp_path / "clean.zarr", "ome-zarr", k).read().result())
    assert clean.units == rep.units


_SLOW_CHILD = """
import sys, time, numpy as np
from neurorecon.io.convert import convert
from neurorecon.io.volume import Volume
def read(box):
    time.sleep(0.15)
    k, j, i = (np.arange(s.start, s.stop) for s in box)
    return ((k[:, None, None] * 7 + j[None, :, None] * 3 + i[None, None, :]) % 251).astype(np.uint8)
convert(Volume("<slow>", (64, 64, 64), np.dtype(np.uint8), (1.0, 1.0, 1.0), True, read), sys.argv[1],
        chunks=(8, 64, 64), levels=1, workers=1)
"""


def test_sigkilled_conversion_resumes(tmp_path):
    dst = tmp_path / "k.zarr"
    script = tmp_path / "child.py"
    script.write_text(_SLOW_CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(dst)])
    deadline = time.time() + 60
    while time.time() < deadline:
        if (dst / JOURNAL).exists() and (dst / JOURNAL).read_text().count("\n") >= 4:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (dst / JOURNAL).exists()
    done_before = (dst / JOURNAL).read_text().count("\n") - 1
    assert 3 <= done_before < 8
    subprocess.run([sys.executable, str(script), str(dst)], check=True)
    k, j, i = np.ogrid[:64, :64, :64]
    expected = ((k * 7 + j * 3 + i) % 251).astype(np.uint8)
    assert np.array_equal(_ts_level(dst, "ome-zarr", 0).read().result(), expected)
    assert not (dst / JOURNAL).exists()


def test_refuses_to_overwrite_or_mix(tmp_path):
    a = _image((20, 20, 20))
    write_tiff(tmp_path / "a.tif", a, (1, 1, 1))
    first = convert(tmp_path / "a.tif", tmp_path / "o.zarr")
    assert not first.complete_before and (tmp_path / "o.zarr" / DONE).exists()
    again = convert(tmp_path / "a.tif", tmp_path / "o.zarr")      # the same conversion, finished: nothing to do
    assert again.complete_before and again.skipped == again.units == first.units
    with pytest.raises(VolumeError, match="already exists"):       # another conversion into it: refused
        convert(tmp_path / "a.tif", tmp_path / "o.zarr", chunks=(8, 8, 8))
    (tmp_path / "o.zarr" / DONE).unlink()                          # a volume made by another tool
    with pytest.raises(VolumeError, match="already exists"):
        convert(tmp_path / "a.tif", tmp_path / "o.zarr")
    (tmp_path / "o.zarr" / JOURNAL).write_text(json.dumps({"other": 1}) + "\n")
    with pytest.raises(VolumeError, match="interrupted conversion with other settings"):
        convert(tmp_path / "a.tif", tmp_path / "o.zarr")
    convert(tmp_path / "a.tif", tmp_path / "o.zarr", overwrite=True)
    assert np.array_equal(open_volume(tmp_path / "o.zarr").read((0, 0, 0), a.shape), a)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(VolumeError, match="not a volume"):
        convert(tmp_path / "a.tif", tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    write_zarr(tmp_path / "src.zarr", a, (1, 1, 1))
    with pytest.raises(VolumeError, match="must not be the source"):
        convert(tmp_path / "src.zarr", tmp_path / "src.zarr" / "inner", fmt="precomputed")


def test_generated_volume_source_is_read_box_by_box(tmp_path):
    boxes = []

    def read(box):
        boxes.append(tuple((s.start, s.stop) for s in box))
        return np.full([s.stop - s.start for s in box], 9, np.uint8)

    vol = Volume("<gen>", (16, 300, 300), np.dtype(np.uint8), (1.0, 1.0, 1.0), True, read)
    rep = convert(vol, tmp_path / "g", chunks=(16, 64, 64), levels=1)
    assert rep.units == len(boxes) and max(np.prod([b - a for a, b in bx]) for bx in boxes) <= UNIT_BYTES
    assert (open_volume(tmp_path / "g").read((0, 0, 0), (16, 300, 300)) == 9).all()


# ------------------------------------------------------------------------------ voxel size
def test_source_without_voxel_size_needs_one(tmp_path):
    import tifffile

    a = _image((20, 30, 40))
    tifffile.imwrite(tmp_path / "plain.tif", a)                  # no resolution, no ImageJ spacing
    with pytest.raises(VolumeError, match=r"plain\.tif: the voxel size is not recorded in the file; give it \(--voxel-size"):
        convert(tmp_path / "plain.tif", tmp_path / "o.zarr")
    assert not (tmp_path / "o.zarr").exists()
    rep = convert(tmp_path / "plain.tif", tmp_path / "o.zarr", voxel_size=(0.5, 0.5, 2.0))
    assert rep.plan.levels[0].voxel_size == (0.5, 0.5, 2.0)
    assert open_volume(tmp_path / "o.zarr").voxel_size == (0.5, 0.5, 2.0)
    r = CliRunner().invoke(app, ["convert", str(tmp_path / "plain.tif"), "-o", str(tmp_path / "c.zarr")])
    assert r.exit_code == 2 and "give it (--voxel-size VX VY VZ" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "c.zarr").exists()


# ------------------------------------------------------------------------------ CLI
def test_cli_convert_and_errors(tmp_path):
    write_tiff(tmp_path / "a.tif", _image((20, 30, 40)), (0.5, 0.5, 1.0))
    runner = CliRunner()
    r = runner.invoke(app, ["convert", str(tmp_path / "a.tif"), "-o", str(tmp_path / "o.zarr"), "--chunks", "16", "16", "16"])
    assert r.exit_code == 0, r.output
    assert "ome-zarr, uint8 image (mean)" in r.output and "MB/s" in r.output
    r = runner.invoke(app, ["convert", str(tmp_path / "a.tif"), "-o", str(tmp_path / "o.zarr"), "--chunks", "16", "16", "16"])
    assert r.exit_code == 0, r.output                             # a rerun of a finished conversion is no error
    n = convert(tmp_path / "a.tif", tmp_path / "o.zarr", chunks=(16, 16, 16)).units
    assert r.output.strip() == f"{tmp_path / 'o.zarr'} is complete ({n} units); nothing to do"
    r = runner.invoke(app, ["convert", str(tmp_path / "a.tif"), "-o", str(tmp_path / "o.zarr")])
    assert r.exit_code == 2 and "already exists" in r.output      # other chunks: another conversion
    r = runner.invoke(app, ["convert", str(tmp_path / "nope.tif"), "-o", str(tmp_path / "n.zarr")])
    assert r.exit_code == 2 and "no such file" in r.output
    r = runner.invoke(app, ["convert", str(tmp_path / "a.tif"), "-o", str(tmp_path / "x"), "--format", "png"])
    assert r.exit_code == 2 and "'png' is not one of 'ome-zarr', 'precomputed'" in r.output
    r = runner.invoke(app, ["convert", str(tmp_path / "a.tif"), "-o", str(tmp_path / "p"), "--labels", "--levels", "2",
                            "--chunks", "8", "8", "8"])
    assert r.exit_code == 0 and "labels (mode), 2 levels" in r.output
    r = runner.invoke(app, ["convert", str(tmp_path / "a.tif")])
    assert r.exit_code == 2 and "give the output folder: -o/--out DST" in r.output
    r = runner.invoke(app, ["convert", str(tmp_path / "a.tif"), str(tmp_path / "d.zarr")])   # the old form still works
    assert r.exit_code == 0 and "DST as a second argument is deprecated" in r.output
    assert open_volume(tmp_path / "d.zarr").shape == (20, 30, 40)
    r = runner.invoke(app, ["convert", str(tmp_path / "a.tif"), str(tmp_path / "d.zarr"), "-o", str(tmp_path / "e.zarr")])
    assert r.exit_code == 2 and "give the output once" in r.output


def test_cli_resume_says_how_many_units_it_skipped(tmp_path):
    write_tiff(tmp_path / "a.tif", _image((64, 64, 64), seed=4), (1, 1, 1))
    dst = tmp_path / "r.zarr"

    def stop_after_3(done, total):
        if done >= 3:
            raise _Stop

    with pytest.raises(_Stop):
        convert(tmp_path / "a.tif", dst, chunks=(16, 16, 16), workers=1, progress=stop_after_3)
    r = CliRunner().invoke(app, ["convert", str(tmp_path / "a.tif"), "-o", str(dst), "--chunks", "16", "16", "16"])
    assert r.exit_code == 0, r.output
    total = convert(tmp_path / "a.tif", dst, chunks=(16, 16, 16)).units
    assert f"resuming {dst}: 3 of {total} units were done before; skipping them" in r.output
    assert f"resumed: 3 of {total} units were done before" in r.output


def test_cli_progress_bar_on_a_terminal(tmp_path):
    """On a terminal (a pty here) convert draws a bar on stderr; into a pipe it prints none."""
    import pty

    write_tiff(tmp_path / "a.tif", _image((64, 64, 64)), (1, 1, 1))
    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "neurorecon", "convert", str(tmp_path / "a.tif"), "-o", str(tmp_path / "t.zarr"),
           "--chunks", "8", "8", "8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, env={**os.environ, "COLUMNS": "100"})
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:            # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    units = convert(tmp_path / "a.tif", tmp_path / "t.zarr", chunks=(8, 8, 8)).units
    assert b"converting" in seen and f"/{units}".encode() in seen
    cmd[6] = str(tmp_path / "u.zarr")
    piped = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and piped.stderr == "" and "u.zarr: ome-zarr" in piped.stdout
