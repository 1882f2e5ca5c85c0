"""Lazy 3D volume reading: every source type, voxel sizes, borders, bad input, writers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neurorecon.io.volume import (
    Volume,
    VolumeError,
    open_volume,
    write_tiff,
    write_zarr,
)

tifffile = pytest.importorskip("tifffile")
ts = pytest.importorskip("tensorstore")

SHAPE = (20, 33, 47)  # (nz, ny, nx): all different, so a swapped axis cannot go unnoticed
VS = (0.3, 0.4, 2.0)  # (vx, vy, vz) um
BOXES = [
    ((0, 0, 0), SHAPE),
    ((3, 5, 7), (11, 20, 40)),
    ((19, 32, 46), SHAPE),
    ((5, 0, 10), (6, 33, 11)),
    ((7, 9, 30), (19, 10, 47)),
]


@pytest.fixture
def data() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 65535, SHAPE, dtype=np.uint16)


# --- makers: one per source type; each returns what open_volume is given -------------------


def _tiff(root: Path, a: np.ndarray):
    return write_tiff(root / "vol.tif", a, VS)


def _tiff_zlib(root: Path, a: np.ndarray):
    # Compressed pixels cannot be memory-mapped: exercises the read-into-memory path.
    path = root / "vol_zlib.tiff"
    tifffile.imwrite(
        path, a, imagej=True, compression="zlib", resolution=(1 / VS[0], 1 / VS[1]),
        metadata={"axes": "ZYX", "spacing": VS[2], "unit": "micron"},
    )  # fmt: skip
    return path


def _ome_zarr(root: Path, a: np.ndarray):
    return write_zarr(root / "vol.ome.zarr", a, VS, chunks=(8, 16, 16))


def _zarr2(root: Path, a: np.ndarray):
    return write_zarr(root / "plain.zarr", a, VS, chunks=(8, 16, 16), ome=False)


def _zarr3_array(path: Path, a: np.ndarray) -> None:
    metadata = {
        "shape": list(a.shape),
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [8, 16, 16]}},
        "data_type": a.dtype.name,
    }
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path) + "/"}, "metadata": metadata}
    ts.open(spec, create=True).result().write(a).result()


def _zarr3(root: Path, a: np.ndarray):
    _zarr3_array(root / "plain3.zarr", a)
    return root / "plain3.zarr"


def _ome_zarr_v3(root: Path, a: np.ndarray):
    # OME-Zarr 0.5: a zarr v3 group whose attributes nest the metadata under "ome".
    path = root / "vol5.ome.zarr"
    _zarr3_array(path / "s0", a)
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    ds = {"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [VS[2], VS[1], VS[0]]}]}
    ome = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [ds]}]}
    meta = {"zarr_format": 3, "node_type": "group", "attributes": {"ome": ome}}
    (path / "zarr.json").write_text(json.dumps(meta))
    return path


def _n5(root: Path, a: np.ndarray):
    # Dimensions in x, y, z order, as Java N5 writers store them; resolution in nm (no units).
    path = root / "vol.n5"
    metadata = {
        "dimensions": list(a.shape[::-1]), "blockSize": [16, 16, 8], "dataType": a.dtype.name,
        "compression": {"type": "gzip"}, "resolution": [v * 1000 for v in VS],
    }  # fmt: skip
    spec = {"driver": "n5", "kvstore": {"driver": "file", "path": str(path) + "/"}, "metadata": metadata}
    ts.open(spec, create=True).result().write(a.T).result()
    return path


def _precomputed(root: Path, a: np.ndarray, num_channels: int = 1):
    path = root / "vol_precomputed"
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": str(path) + "/"},
        "multiscale_metadata": {"type": "image", "data_type": a.dtype.name, "num_channels": num_channels},
        "scale_metadata": {
            "size": list(a.shape[::-1]), "resolution": [v * 1000 for v in VS], "encoding": "raw",
            "chunk_size": [16, 16, 8], "voxel_offset": [3, 4, 5],
        },
    }  # fmt: skip
    store = ts.open(spec, create=True).result()
    # Stored x, y, z, channel with origin voxel_offset; write our z, y, x data into it.
    store.translate_to[0][ts.d["channel"][0]].T.write(a).result()
    return path


def _slices(root: Path, a: np.ndarray):
    # Names 1..20 without zero padding: lexical order would put 10 before 2.
    folder = root / "slices"
    folder.mkdir()
    for k, plane in enumerate(a, start=1):
        tifffile.imwrite(folder / f"plane_{k}.tif", plane)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _array(root: Path, a: np.ndarray):
    return a


MAKERS = {
    "array": _array,
    "tiff": _tiff,
    "tiff_zlib": _tiff_zlib,
    "ome_zarr": _ome_zarr,
    "ome_zarr_v3": _ome_zarr_v3,
    "zarr2": _zarr2,
    "zarr3": _zarr3,
    "n5": _n5,
    "precomputed": _precomputed,
    "slices": _slices,
}
KNOWN_VS = ["tiff", "tiff_zlib", "ome_zarr", "ome_zarr_v3", "n5", "precomputed"]
UNKNOWN_VS = ["array", "zarr2", "zarr3", "slices"]


def _open(kind: str, tmp_path: Path, a: np.ndarray, **kw) -> Volume:
    return open_volume(MAKERS[kind](tmp_path, a), **kw)


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", MAKERS)
def test_round_trip_reads_identical_boxes(kind, tmp_path, data):
    vol = _open(kind, tmp_path, data)
    assert vol.shape == SHAPE and vol.dtype == data.dtype
    for lo, hi in BOXES:
        box = vol.read(lo, hi)
        want = data[tuple(slice(a, b) for a, b in zip(lo, hi))]
        assert box.dtype == data.dtype
        np.testing.assert_array_equal(box, want, err_msg=f"{kind} {lo}-{hi}")


@pytest.mark.parametrize("kind", KNOWN_VS)
def test_voxel_size_recovered(kind, tmp_path, data):
    vol = _open(kind, tmp_path, data)
    assert vol.voxel_size == pytest.approx(VS, rel=1e-6)
    assert vol.voxel_size_known


@pytest.mark.parametrize("kind", UNKNOWN_VS)
def test_voxel_size_unknown_defaults_to_one(kind, tmp_path, data):
    source = MAKERS[kind](tmp_path, data)
    vol = open_volume(source)
    assert vol.voxel_size == (1.0, 1.0, 1.0) and not vol.voxel_size_known
    vol = open_volume(source, voxel_size=VS)
    assert vol.voxel_size == VS and vol.voxel_size_known


@pytest.mark.parametrize("kind", ["tiff", "ome_zarr", "precomputed"])
def test_voxel_size_argument_wins(kind, tmp_path, data):
    vol = _open(kind, tmp_path, data, voxel_size=(1, 2, 3))
    assert vol.voxel_size == (1.0, 2.0, 3.0) and vol.voxel_size_known


def test_plain_tiff_without_calibration(tmp_path, data):
    tifffile.imwrite(tmp_path / "raw.tif", data)
    vol = open_volume(tmp_path / "raw.tif")
    assert vol.voxel_size == (1.0, 1.0, 1.0) and not vol.voxel_size_known
    np.testing.assert_array_equal(vol.read((2, 3, 4), (5, 6, 7)), data[2:5, 3:6, 4:7])


def test_ome_tiff_physical_size(tmp_path, data):
    meta = {"axes": "ZYX", "PhysicalSizeX": 300, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 0.4, "PhysicalSizeZ": 2.0}
    tifffile.imwrite(tmp_path / "vol.ome.tif", data, ome=True, metadata=meta)
    assert open_volume(tmp_path / "vol.ome.tif").voxel_size == pytest.approx(VS)


# --- units ------------------------------------------------------------------------------------


def test_ome_zarr_nanometres_converted(tmp_path, data):
    path = write_zarr(tmp_path / "nm.zarr", data, (300, 400, 2000))
    attrs = json.loads((path / ".zattrs").read_text())
    for axis in attrs["multiscales"][0]["axes"]:
        axis["unit"] = "nanometer"
    (path / ".zattrs").write_text(json.dumps(attrs))
    assert open_volume(path).voxel_size == pytest.approx(VS)


def test_ome_zarr_multiscale_level_scale_applies(tmp_path, data):
    # OME-Zarr 0.4: a scale on the multiscale itself applies on top of each dataset's scale.
    path = write_zarr(tmp_path / "outer.zarr", data, (0.15, 0.2, 1.0))
    attrs = json.loads((path / ".zattrs").read_text())
    attrs["multiscales"][0]["coordinateTransformations"] = [{"type": "scale", "scale": [2.0, 2.0, 2.0]}]
    (path / ".zattrs").write_text(json.dumps(attrs))
    assert open_volume(path).voxel_size == pytest.approx(VS)


def test_imagej_nanometres_converted(tmp_path, data):
    meta = {"axes": "ZYX", "spacing": 2000, "unit": "nm"}
    tifffile.imwrite(tmp_path / "nm.tif", data, imagej=True, resolution=(1 / 300, 1 / 400), metadata=meta)
    assert open_volume(tmp_path / "nm.tif").voxel_size == pytest.approx(VS, rel=1e-6)


@pytest.mark.parametrize(
    "attrs",
    [
        {"resolution": [0.3, 0.4, 2.0], "units": ["um", "um", "um"]},
        {"resolution": [300, 400, 2000], "units": ["nm", "nm", "nm"]},
        {"pixelResolution": {"unit": "um", "dimensions": [0.3, 0.4, 2.0]}},
        {"pixelResolution": {"unit": "nm", "dimensions": [300, 400, 2000]}},
    ],
)
def test_n5_resolution_attributes(attrs, tmp_path, data):
    path = _n5(tmp_path, data)
    meta = json.loads((path / "attributes.json").read_text())
    meta.pop("resolution")
    (path / "attributes.json").write_text(json.dumps({**meta, **attrs}))
    assert open_volume(path).voxel_size == pytest.approx(VS)


def test_n5_axes_attribute_orders_dimensions(tmp_path, data):
    # With "axes", dimensions may be stored in any order, here z, y, x.
    path = tmp_path / "zyx.n5"
    metadata = {
        "dimensions": list(data.shape), "blockSize": [8, 16, 16], "dataType": "uint16",
        "compression": {"type": "raw"}, "axes": ["z", "y", "x"], "resolution": [2000, 400, 300],
    }  # fmt: skip
    spec = {"driver": "n5", "kvstore": {"driver": "file", "path": str(path) + "/"}, "metadata": metadata}
    ts.open(spec, create=True).result().write(data).result()
    vol = open_volume(path)
    assert vol.shape == SHAPE and vol.voxel_size == pytest.approx(VS)
    np.testing.assert_array_equal(vol.read((1, 2, 3), (9, 30, 44)), data[1:9, 2:30, 3:44])


# --- borders ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", MAKERS)
def test_boxes_outside_are_filled(kind, tmp_path, data):
    vol = _open(kind, tmp_path, data)
    padded = np.pad(data, 10, constant_values=7)  # padded[k + 10] == data[k]
    for lo, hi in [((-3, -4, -5), (4, 5, 6)), ((15, 30, 40), (25, 40, 52)), ((-2, 10, 20), (22, 12, 21))]:
        want = padded[tuple(slice(a + 10, b + 10) for a, b in zip(lo, hi))]
        np.testing.assert_array_equal(vol.read(lo, hi, fill=7), want)
    outside = vol.read((30, 0, 0), (32, 3, 4), fill=7)
    assert outside.shape == (2, 3, 4) and (outside == 7).all()
    assert vol.read((0, 0, 0), (0, 5, 5)).shape == (0, 5, 5)


def test_read_returns_a_copy(data):
    vol = open_volume(data)
    vol.read((0, 0, 0), (2, 2, 2))[:] = 0
    assert data[:2, :2, :2].any()


@pytest.mark.parametrize("lo, hi", [((0, 0, 5), (1, 1, 4)), ((0, 0), (1, 1)), ((0, 0, 0.5), (1, 1, 1))])
def test_bad_box_refused(lo, hi, data):
    with pytest.raises((VolumeError, TypeError)):
        open_volume(data).read(lo, hi)


# --- coordinates ------------------------------------------------------------------------------


def test_voxel_centre_convention(data):
    vol = open_volume(data, voxel_size=VS)
    k, j, i = 4, 7, 11
    assert vol.to_physical([k, j, i]).tolist() == pytest.approx([i * VS[0], j * VS[1], k * VS[2]])
    assert vol.to_voxel([i * VS[0], j * VS[1], k * VS[2]]).tolist() == pytest.approx([k, j, i])


def test_physical_voxel_round_trip_vectorised(data):
    vol = open_volume(data, voxel_size=VS)
    kji = np.random.default_rng(1).uniform(-5, 50, (100, 3))
    xyz = vol.to_physical(kji)
    assert xyz.shape == (100, 3)
    np.testing.assert_allclose(xyz[:, 2], kji[:, 0] * VS[2])  # z comes from k
    np.testing.assert_allclose(vol.to_voxel(xyz), kji)
    with pytest.raises(ValueError):
        vol.to_voxel([1.0, 2.0])


# --- axes -------------------------------------------------------------------------------------


def test_singleton_leading_axes_dropped(tmp_path, data):
    tifffile.imwrite(tmp_path / "tzcyx.tif", data[None, :, None], imagej=True, metadata={"axes": "TZCYX"})
    np.testing.assert_array_equal(open_volume(tmp_path / "tzcyx.tif").read((0, 0, 0), SHAPE), data)

    path = write_zarr(tmp_path / "tczyx.zarr", data, VS)
    _ome_5d(path, data[None, None])
    vol = open_volume(path)
    assert vol.shape == SHAPE and vol.voxel_size == pytest.approx(VS)
    np.testing.assert_array_equal(vol.read((2, 3, 4), (9, 30, 40)), data[2:9, 3:30, 4:40])

    np.testing.assert_array_equal(open_volume(data[None, None]).read((0, 0, 0), SHAPE), data)


def _ome_5d(path: Path, a5: np.ndarray) -> None:
    """Replace the OME-Zarr's array by a t, c, z, y, x one."""
    import shutil

    shutil.rmtree(path / "0")
    meta = {"shape": list(a5.shape), "chunks": [1, 1, 8, 16, 16], "dtype": a5.dtype.str, "dimension_separator": "/"}
    spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(path / "0") + "/"}, "metadata": meta}
    ts.open(spec, create=True).result().write(a5).result()
    attrs = json.loads((path / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    ms["axes"] = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}] + ms["axes"]
    ms["datasets"][0]["coordinateTransformations"][0]["scale"][:0] = [1.0, 1.0]
    (path / ".zattrs").write_text(json.dumps(attrs))


def test_non_singleton_channel_refused(tmp_path, data):
    cases = []
    tifffile.imwrite(tmp_path / "zcyx.tif", np.stack([data, data], axis=1), imagej=True, metadata={"axes": "ZCYX"})
    cases.append(str(tmp_path / "zcyx.tif"))
    path = write_zarr(tmp_path / "c2.zarr", data, VS)
    _ome_5d(path, np.stack([data, data])[None])
    cases.append(str(path))
    cases.append(str(_precomputed(tmp_path, data, num_channels=3)))
    for source in cases:
        with pytest.raises(VolumeError, match="channel") as err:
            open_volume(source)
        assert source in str(err.value)
    with pytest.raises(VolumeError, match="size 2"):
        open_volume(np.stack([data, data]))


# --- bad input --------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.tif"
    with pytest.raises(VolumeError, match="no such file") as err:
        open_volume(missing)
    assert str(missing) in str(err.value)


def test_2d_tiff_refused(tmp_path, data):
    tifffile.imwrite(tmp_path / "plane.tif", data[0])
    with pytest.raises(VolumeError, match="not a 3D volume") as err:
        open_volume(tmp_path / "plane.tif")
    assert str(tmp_path / "plane.tif") in str(err.value)
    with pytest.raises(VolumeError):
        open_volume(data[0])


@pytest.mark.parametrize("make", ["text_file", "empty_dir", "zarr_group_without_ome", "ome_dataset_without_path"])
def test_unknown_format_refused(make, tmp_path):
    path = tmp_path / make
    if make == "text_file":
        path.write_text("hello")
    else:
        path.mkdir()
        if make == "zarr_group_without_ome":
            (path / ".zgroup").write_text('{"zarr_format": 2}')
        if make == "ome_dataset_without_path":
            (path / ".zattrs").write_text('{"multiscales": [{"datasets": [{}]}]}')
    with pytest.raises(VolumeError) as err:
        open_volume(path)
    assert str(path) in str(err.value)


def test_wrong_driver_or_scale_refused(tmp_path, data):
    path = _ome_zarr(tmp_path, data)
    with pytest.raises(VolumeError, match="attributes.json"):
        open_volume(path, driver="n5")
    with pytest.raises(VolumeError, match="unknown driver"):
        open_volume(path, driver="hdf5")
    with pytest.raises(VolumeError, match="scale 1"):
        open_volume(path, scale=1)
    with pytest.raises(VolumeError, match="voxel_size"):
        open_volume(path, voxel_size=(1, 0, 1))


def test_corrupt_slice_named(tmp_path, data):
    folder = _slices(tmp_path, data)
    tifffile.imwrite(folder / "plane_5.tif", data[0, :10])  # wrong shape
    vol = open_volume(folder)
    with pytest.raises(VolumeError, match="plane_5.tif"):
        vol.read((0, 0, 0), (6, 2, 2))


# --- laziness ---------------------------------------------------------------------------------


def test_zarr_box_reads_only_its_chunks(tmp_path, data):
    # Every chunk except the one under the box is replaced by garbage that cannot be decoded:
    # the box still reads correctly, and a box over a garbage chunk fails, so the garbage is
    # really detected when read.
    path = _ome_zarr(tmp_path, data)  # chunks (8, 16, 16); chunk (1, 1, 1) covers [8:16, 16:32, 16:32]
    chunk_files = [p for p in (path / "0").rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(chunk_files) == 3 * 3 * 3
    for p in chunk_files:
        if p.relative_to(path / "0").parts != ("1", "1", "1"):
            p.write_bytes(b"not a blosc chunk")
    vol = open_volume(path)
    np.testing.assert_array_equal(vol.read((9, 17, 18), (15, 30, 31)), data[9:15, 17:30, 18:31])
    with pytest.raises(VolumeError, match="cannot read box"):
        vol.read((0, 0, 0), (1, 1, 1))


def test_slices_read_only_needed_planes(tmp_path, data):
    folder = _slices(tmp_path, data)
    for k in range(4, 21):  # planes z = 3..19 become unreadable
        (folder / f"plane_{k}.tif").write_bytes(b"garbage")
    vol = open_volume(folder)
    assert vol.shape == SHAPE
    np.testing.assert_array_equal(vol.read((0, 4, 5), (3, 30, 40)), data[0:3, 4:30, 5:40])
    with pytest.raises(VolumeError, match="plane_4.tif"):
        vol.read((3, 0, 0), (4, 1, 1))


def test_import_does_not_load_heavy_readers():
    code = "import sys, neurorecon.io.volume; print(sorted(m for m in ('tensorstore', 'tifffile') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- scales and URLs --------------------------------------------------------------------------


def test_ome_zarr_scale_selection(tmp_path, data):
    path = _ome_zarr(tmp_path, data)
    half = data[::2, ::2, ::2]
    write_zarr(tmp_path / "tmp.zarr", half, VS)
    (tmp_path / "tmp.zarr" / "0").rename(path / "1")
    attrs = json.loads((path / ".zattrs").read_text())
    ds = {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [2 * VS[2], 2 * VS[1], 2 * VS[0]]}]}
    attrs["multiscales"][0]["datasets"].append(ds)
    (path / ".zattrs").write_text(json.dumps(attrs))
    vol = open_volume(path, scale=1)
    assert vol.shape == half.shape and vol.voxel_size == pytest.approx([2 * v for v in VS])
    np.testing.assert_array_equal(vol.read((0, 0, 0), half.shape), half)
    assert open_volume(path).shape == SHAPE


def test_n5_multiscale_group(tmp_path, data):
    group = tmp_path / "multi.n5"
    group.mkdir()
    half = data[:, ::2, ::2]
    for level, a in enumerate([data, half]):
        (_n5(tmp_path, a)).rename(group / f"s{level}")
        meta = json.loads((group / f"s{level}" / "attributes.json").read_text())
        meta.pop("resolution")  # the group's resolution applies
        (group / f"s{level}" / "attributes.json").write_text(json.dumps(meta))
    attrs = {"downsamplingFactors": [[1, 1, 1], [2, 2, 1]], "resolution": [300, 400, 2000], "units": ["nm"] * 3}
    (group / "attributes.json").write_text(json.dumps(attrs))
    vol = open_volume(group, scale=1)
    assert vol.shape == half.shape and vol.voxel_size == pytest.approx((0.6, 0.8, 2.0))
    np.testing.assert_array_equal(vol.read((0, 0, 0), half.shape), half)
    assert open_volume(group).voxel_size == pytest.approx(VS)
    with pytest.raises(VolumeError, match="s2"):
        open_volume(group, scale=2)


def test_precomputed_scale_index(tmp_path, data):
    path = _precomputed(tmp_path, data)
    half = data[:, ::2, ::2]
    spec = {
        "driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": str(path) + "/"},
        "scale_metadata": {"size": list(half.shape[::-1]), "resolution": [600, 800, 2000], "encoding": "raw",
                           "chunk_size": [16, 16, 8]},
    }  # fmt: skip
    ts.open(spec, create=True, open=True).result()[ts.d["channel"][0]].T.write(half).result()
    vol = open_volume(path, scale=1)
    assert vol.shape == half.shape and vol.voxel_size == pytest.approx((0.6, 0.8, 2.0))
    np.testing.assert_array_equal(vol.read((0, 0, 0), half.shape), half)


@pytest.mark.parametrize("form", ["file_url", "ng_prefix", "ts_pipeline", "driver_arg"])
def test_url_sources(form, tmp_path, data):
    path = _zarr3(tmp_path, data)
    url = path.as_uri()
    source, kw = {
        "file_url": (url, {}),
        "ng_prefix": (f"zarr3://{url}", {}),
        "ts_pipeline": (f"{url}|zarr3:", {}),
        "driver_arg": (url, {"driver": "zarr3"}),
    }[form]
    vol = open_volume(source, **kw)
    assert vol.path == source
    np.testing.assert_array_equal(vol.read((1, 2, 3), (4, 5, 6)), data[1:4, 2:5, 3:6])


def test_precomputed_url_prefix(tmp_path, data):
    vol = open_volume("precomputed://" + _precomputed(tmp_path, data).as_uri())
    assert vol.voxel_size == pytest.approx(VS)
    np.testing.assert_array_equal(vol.read((0, 0, 0), SHAPE), data)


# --- writers ----------------------------------------------------------------------------------


def test_write_zarr_refuses_overwrite(tmp_path, data):
    path = write_zarr(tmp_path / "v.zarr", data, VS)
    with pytest.raises(VolumeError, match="already exists") as err:
        write_zarr(path, data, VS)
    assert str(path) in str(err.value)
    np.testing.assert_array_equal(open_volume(path).read((0, 0, 0), SHAPE), data)
    write_zarr(path, data[:5], (1, 1, 1), overwrite=True)
    vol = open_volume(path)
    assert vol.shape == (5, 33, 47) and vol.voxel_size == (1.0, 1.0, 1.0)
    assert [p.name for p in tmp_path.iterdir()] == ["v.zarr"]  # no temporary folder left behind


def test_ome_zarr_metadata_is_v04(tmp_path, data):
    path = write_zarr(tmp_path / "v.zarr", data, VS)
    ms = json.loads((path / ".zattrs").read_text())["multiscales"][0]
    assert ms["version"] == "0.4" and [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [VS[2], VS[1], VS[0]]
    zarray = json.loads((path / "0" / ".zarray").read_text())
    assert zarray["zarr_format"] == 2 and zarray["compressor"]["cname"] == "zstd"


def test_write_tiff_checks_input(tmp_path, data):
    with pytest.raises(VolumeError, match="3D"):
        write_tiff(tmp_path / "a.tif", data[0], VS)
    with pytest.raises(VolumeError, match="int32"):
        write_tiff(tmp_path / "a.tif", data.astype(np.int32), VS)
    write_tiff(tmp_path / "a.tif", data.astype(np.float32), VS)
    assert [p.name for p in tmp_path.iterdir()] == ["a.tif"]  # the temporary file was renamed
    assert open_volume(tmp_path / "a.tif").dtype == np.float32
