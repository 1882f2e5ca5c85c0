"""Image measurements: brick by brick, they equal one dense pass over the whole volume; they do not
depend on how the work is cut up or on the storage format; and they mean the same at 0.3 and 1 µm."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import correlate1d, maximum_filter

from neurorecon.detect import image_features as F
from neurorecon.synth.render import Fibres, Imaging, render
from neurorecon.io.volume import open_volume, write_tiff, write_zarr
from neurorecon.morphology import graph

VS = (0.5, 0.5, 1.0)


def _arc(n, z0=18.0):
    """A curved fibre, not along any axis, through the box (µm)."""
    t = np.linspace(0, 1, n)
    return np.stack([10 + 60 * t, 20 + 35 * t + 8 * np.sin(2 * np.pi * t), z0 + 12 * t], axis=1)


def _tree():
    """The arc (1 µm steps) with a side branch leaving it halfway; nodes near the box faces too."""
    main = _arc(70)
    side = main[35] + np.linspace(1, 40, 40)[:, None] * np.array([0.2, -0.9, 0.35])
    xyz = np.vstack([main, side])
    parent = np.concatenate([[-1], np.arange(69), [35], np.arange(70, 109)])
    return xyz, parent


def _render(vs, seed=3):
    xyz, parent = _tree()
    fine = np.vstack([_arc(400), xyz[70:]])
    fpar = np.concatenate([[-1], np.arange(399), [int(np.argmin(np.linalg.norm(_arc(400) - xyz[35], axis=1)))],
                           np.arange(400, 438)])
    fibres = Fibres.from_tree(fine, fpar, np.full(len(fine), 0.5))
    imaging = Imaging(voxel_size=vs, signal=60, background=10, bead_rate=0.5, dim_rate=0.0)
    shape = tuple(int(round(e / v)) for e, v in zip((48.0, 80.0, 80.0), vs[::-1]))
    return render(fibres, np.zeros(3), shape, imaging, np.random.default_rng(seed)), xyz, parent


@pytest.fixture(scope="module")
def scene():
    return _render(VS)


def _small_bricks(monkeypatch):
    """Bricks, read groups, waves and gathers as small as they go: every brick face, slot reuse and
    partial brick at the volume's faces is exercised."""
    monkeypatch.setattr(F, "BRICK_ACROSS", 1)
    monkeypatch.setattr(F, "GROUP_RAW", 1)
    monkeypatch.setattr(F, "WAVE_ROWS", 7)
    monkeypatch.setattr(F, "CHUNK_ROWS", 3)
    monkeypatch.setattr(F, "PREFETCH", 1)


def _fields(raw):
    return {k: getattr(raw, k) for k in raw.__dataclass_fields__}


def _reference(image, vs, xyz, parent, fc):
    """The samples of measure() from one dense pass: bin the whole volume, smooth it (mode
    'nearest' at its faces), dilate the rasterised trace; NaN (not covered) outside the volume."""
    vs = np.asarray(vs, float)[::-1]
    b = np.maximum(1, np.rint(F.WORK_UM / vs).astype(int))
    vox = vs * b
    w = np.array(image.shape) // b
    binned = image[:w[0] * b[0], :w[1] * b[1], :w[2] * b[2]].astype(np.float64)
    binned = binned.reshape(w[0], b[0], w[1], b[1], w[2], b[2]).mean(axis=(1, 3, 5))
    img = binned
    for ax in range(3):
        s = F.SMOOTH_UM / vox[ax]
        r = int(F.SMOOTH_TRUNCATE * s + 0.5)
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / s) ** 2)
        img = correlate1d(img, k / k.sum(), axis=ax, mode="nearest")
    d = np.ceil(F.COVER_UM / vox).astype(int)
    trace = np.floor(F.edge_points(xyz, parent)[:, ::-1] / vox - (b - 1) / (2 * b) + 0.5).astype(int) + d
    ok = np.all((trace >= 0) & (trace < w + 2 * d), axis=1)
    grid = np.zeros(tuple(w + 2 * d), bool)
    grid[tuple(trace[ok].T)] = True
    cov = maximum_filter(grid, size=tuple(2 * d + 1))[d[0]:d[0] + w[0], d[1]:d[1] + w[1], d[2]:d[2] + w[2]]

    def sample(pts):
        m = np.floor(pts[..., ::-1] / vox - (b - 1) / (2 * b) + 0.5).astype(int)
        inside = np.all((m >= 0) & (m < w), axis=-1)
        m = np.where(inside[..., None], m, 0)
        idx = (m[..., 0], m[..., 1], m[..., 2])
        return np.where(inside, img[idx], np.nan), inside & cov[idx]

    _, u, wv, ahead = F.frames(xyz, parent, fc)
    disk = xyz[:, None, :] + F.DISK_AB[None, :, 0:1] * u[:, None, :] + F.DISK_AB[None, :, 1:2] * wv[:, None, :]
    shell = xyz[:, None, None, :] + np.array(F.SHELL_R)[None, :, None, None] * F.SHELL_DIRS[None, None]
    q = xyz[np.maximum(parent, 0)]
    edge = xyz[:, None, :] + F.EDGE_T[None, :, None] * (q - xyz)[:, None, :]
    ahd = xyz[:, None, :] + F.AHEAD_D[None, :, None] * ahead[:, None, :]
    cone = xyz[:, None, None, :] + np.array(F.CONE_D)[None, :, None, None] * F._cone_dirs(ahead)[:, None]
    out = {"disk": sample(disk)[0], "shell": sample(shell), "ahead": sample(ahd)[0], "cone": sample(cone)}
    e = sample(edge)[0]
    out["edge"] = np.where((parent >= 0)[:, None], e, np.nan)
    return out


def _agree(a, b, what, tol=1e-4, share=0.003):
    """Equal (NaN where NaN) but for a few samples a float32 rounding moves to the next voxel."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert np.array_equal(np.isnan(a), np.isnan(b)) or np.mean(np.isnan(a) != np.isnan(b)) <= share, what
    both = np.isfinite(a) & np.isfinite(b)
    off = ~np.isclose(a[both], b[both], rtol=tol, atol=tol * np.nanmax(np.abs(b)))
    assert off.mean() <= share, f"{what}: {off.mean():.4f} of samples differ"


@pytest.mark.parametrize("vs, small", [(VS, False), (VS, True), ((0.7, 0.7, 1.0), True), ((0.3, 0.3, 2.5), False)],
                         ids=["0.5 µm", "0.5 µm, smallest bricks", "0.7 µm (5-tap kernel)", "0.3 µm, 2.5 µm z"])
def test_bricks_equal_one_dense_pass(monkeypatch, vs, small):
    image, xyz, parent = _render(vs)
    # Nodes at and beyond the faces: the first and last nodes pushed out of the box.
    xyz = xyz.copy()
    xyz[0] = [0.3, 1.0, 0.2]
    xyz[-1] = [79.9, 2.0, 47.5]
    if small:
        _small_bricks(monkeypatch)
    fc = graph.first_child(parent)
    raw = F.measure(xyz, parent, fc, open_volume(image, voxel_size=vs))
    ref = _reference(image, vs, xyz, parent, fc)
    disk = ref["disk"]
    _agree(raw.centre, disk[:, 0], "centre")
    dmax = np.max(np.where(np.isnan(disk), -np.inf, disk), axis=1)
    _agree(raw.disk_max[:, 2], np.where(np.isfinite(dmax), dmax, np.nan), "disk max within 7 µm")
    _agree(raw.shell, ref["shell"][0], "shells")
    _agree(raw.edge, ref["edge"], "edge")
    _agree(raw.ahead, ref["ahead"], "ahead")
    _agree(raw.cone, ref["cone"][0], "cone")
    seen = np.isfinite(ref["shell"][0])                 # coverage only counts where the image has a value
    assert np.mean(raw.shell_cov[seen] != ref["shell"][1][seen]) <= 0.003
    seen = np.isfinite(ref["cone"][0])
    assert np.mean(raw.cone_cov[seen] != ref["cone"][1][seen]) <= 0.003
    assert raw.shell_cov.any() and (~raw.shell_cov).any()


def test_the_same_whatever_the_bricks(scene, monkeypatch):
    image, xyz, parent = scene
    vol = open_volume(image, voxel_size=VS)
    fc = graph.first_child(parent)
    a = _fields(F.measure(xyz, parent, fc, vol))
    _small_bricks(monkeypatch)
    b = _fields(F.measure(xyz, parent, fc, vol))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_tiff_and_zarr_identical(scene, tmp_path):
    image, xyz, parent = scene
    tif = open_volume(write_tiff(tmp_path / "img.tif", image, VS))
    zarr = open_volume(write_zarr(tmp_path / "img.zarr", image, VS, chunks=(32, 64, 64)))
    fc = graph.first_child(parent)
    a, b = _fields(F.measure(xyz, parent, fc, tif)), _fields(F.measure(xyz, parent, fc, zarr))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_the_same_fibre_at_0_3_and_1_um():
    """The working grid and the smoothing are in µm: on-fibre contrast, background and ridge offsets
    agree between fine and coarse voxels."""
    xyz = _arc(40)
    parent = np.arange(-1, len(xyz) - 1)
    fine = _arc(400)
    fibres = Fibres.from_tree(fine, np.arange(-1, len(fine) - 1), np.full(len(fine), 0.5))
    out = {}
    for vs in ((0.3, 0.3, 1.0), (1.0, 1.0, 1.0)):
        shape = tuple(int(round(e / v)) for e, v in zip((48.0, 80.0, 80.0), vs[::-1]))
        imaging = Imaging(voxel_size=vs, psf_sigma=(0.6, 1.2), signal=80, background=10, read_noise=1.0,
                          bead_rate=0.0, dim_rate=0.0, background_variation=0.0)
        image = render(fibres, np.zeros(3), shape, imaging, np.random.default_rng(1))
        out[vs] = F.measure(xyz, parent, graph.first_child(parent), open_volume(image, voxel_size=vs))
    a, b = out.values()
    for f in (lambda r: r.centre - r.background, lambda r: r.disk_max[:, 1] - r.background, lambda r: r.background):
        fa, fb = np.median(f(a)), np.median(f(b))
        assert abs(fa - fb) <= 0.2 * max(abs(fa), abs(fb)), (fa, fb)
    for r in (a, b):
        assert np.median(np.linalg.norm(r.snap, axis=1)) < 0.7


def test_nodes_outside_the_volume_and_long_edges():
    image = np.full((20, 40, 40), 10, np.uint8)
    vol = open_volume(image, voxel_size=(1.0, 1.0, 1.0))
    # Inside, then an edge of 5 km to a node far outside, then one just beyond a face.
    xyz = np.array([[20.0, 20, 10], [21, 20, 10], [5000.0, -3e6, 7e5], [41.5, 20, 10]])
    parent = np.array([-1, 0, 1, 1])
    done = []
    raw = F.measure(xyz, parent, graph.first_child(parent), vol, progress=done.append)
    assert sum(done) == len(xyz)
    assert np.isfinite(raw.centre[:2]).all() and np.isnan(raw.centre[2:]).all()
    np.testing.assert_allclose(raw.centre[:2], 10, rtol=1e-5)
    assert np.isnan(raw.edge[2]).all()                    # the far node's edge: outside all along
    assert np.isfinite(raw.edge[1]).all()
    assert np.isnan(raw.shell[2]).all() and not raw.shell_cov[2].any()


def test_memory_is_bounded_by_the_bricks_in_flight():
    """A fibre along a long volume: the bricks held at once do not grow with its length."""
    vol = open_volume(np.zeros((16, 32, 8192), np.uint8), voxel_size=(1.0, 1.0, 1.0))
    xyz = np.stack([np.arange(5.0, 8185.0), np.full(8180, 16.0), np.full(8180, 8.0)], axis=1)
    parent = np.arange(-1, len(xyz) - 1)
    grid = F._Grid(vol, sweep=2)
    plan = F._plan(grid, xyz, parent)
    assert len(plan.keys) >= 250
    assert plan.slots <= F.WAVE_BRICKS + 8
    raw = F.measure(xyz, parent, graph.first_child(parent), vol)
    assert np.all(raw.centre == 0)
