"""Refined moves of off-signal nodes (neurorecon.detect.refine) on small rendered fibres.

Each scene is a straight fibre, inclined in x, y and z (not along any voxel axis), rendered with
the anisotropic point-spread of the held-out settings, traced by nodes every 2 µm on it; a run of
nodes is then shifted off it in depth or sideways, as :mod:`neurorecon.synth.errors` does, and
flagged. A move must land within 1 µm of the drawn axis, or not be proposed.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from neurorecon.detect.benchmark import segment_distance
from neurorecon.detect.refine import anchor_path, choose_moves, find_candidates, refine_moves
from neurorecon.synth.render import Fibres, Imaging, render
from neurorecon.io.volume import open_volume

SIZE_UM = np.array([36.0, 36.0, 24.0])                  # x, y, z
DIRECTION = np.array([1.0, 0.35, 0.15]) / np.linalg.norm([1.0, 0.35, 0.15])
CENTRE = SIZE_UM / 2
RUN = np.arange(7, 11)                                  # the shifted nodes (4 of 17)

#: The finest and the coarsest held-out voxel sizes, with their axial blur.
SETTINGS = {
    "0.3x0.3x1": Imaging(voxel_size=(0.3, 0.3, 1.0), psf_sigma=(0.25, 1.8), signal=40, background=15,
                         bead_rate=0.0, dim_rate=0.0),
    "1x1x1": Imaging(voxel_size=(1.0, 1.0, 1.0), psf_sigma=(0.6, 0.9), signal=60, background=10,
                     bead_rate=0.0, dim_rate=0.0),
}


def _axis(offset=(0.0, 0.0, 0.0)):
    """Ends of the fibre axis (µm), moved by ``offset``."""
    return CENTRE - 17 * DIRECTION + offset, CENTRE + 17 * DIRECTION + offset


def _scene(imaging: Imaging, offsets=((0.0, 0.0, 0.0),), seed=0):
    """Volume with one fibre per offset; all equally bright."""
    ends = [_axis(o) for o in offsets]
    a = np.array([e[0] for e in ends])
    b = np.array([e[1] for e in ends])
    fibres = Fibres(a, b, np.full(len(a), 0.3), np.ones(len(a)))
    shape = tuple(int(s) for s in np.ceil(SIZE_UM[::-1] / np.asarray(imaging.voxel_size)[::-1]))
    image = render(fibres, np.zeros(3), shape, imaging, np.random.default_rng(seed))
    return open_volume(image, voxel_size=imaging.voxel_size), image


@pytest.fixture(scope="module", params=sorted(SETTINGS))
def one_fibre(request):
    return (request.param, *_scene(SETTINGS[request.param]))


def _trace(shift_rows=(), shift=(0.0, 0.0, 0.0), along=(0.0, 0.0, 0.0)):
    """17 nodes every 2 µm on the fibre axis; ``shift_rows`` moved by ``shift``; a chain."""
    s = (np.arange(17) - 8) * 2.0
    xyz = CENTRE + s[:, None] * DIRECTION + np.asarray(along)
    xyz[list(shift_rows)] += shift
    parent = np.arange(-1, 16)
    return xyz, parent


def _levels(image, volume, xyz):
    """Background (image median) and fibre contrast (median at on-fibre nodes above it) per node."""
    bg = float(np.median(image))
    idx = np.rint(xyz[:, ::-1] / np.asarray(volume.voxel_size)[::-1]).astype(int)
    on = image[idx[:, 0], idx[:, 1], idx[:, 2]].astype(float)
    contrast = max(float(np.median(on)) - bg, 1.0)
    return np.full(len(xyz), bg), np.full(len(xyz), contrast)


def _refine(volume, image, xyz, parent, flagged, reason):
    on_fibre = _trace()[0]
    bg, contrast = _levels(image, volume, on_fibre)
    reasons = np.where(flagged, reason, "").astype(object)
    return refine_moves(volume, xyz, parent, flagged, reasons, bg, contrast)


def _to_axis(points, offset=(0.0, 0.0, 0.0)):
    a, b = _axis(offset)
    return segment_distance(points, a[None], b[None])


def _flag(rows, n=17):
    f = np.zeros(n, bool)
    f[list(rows)] = True
    return f


@pytest.mark.parametrize("dz", [3.5, -5.0])
def test_depth_shifted_run_moves_back_onto_the_fibre(one_fibre, dz):
    name, volume, image = one_fibre
    xyz, parent = _trace(RUN, (0.0, 0.0, dz))
    out = _refine(volume, image, xyz, parent, _flag(RUN), "off_signal_z")
    assert np.isfinite(out[RUN]).all(), f"{name}: every node of the run gets a move"
    assert np.isnan(np.delete(out, RUN, axis=0)).all(), "unflagged nodes never move"
    d = _to_axis(out[RUN])
    assert d.max() < 1.0, (name, d.round(2))
    # The move is essentially in depth: the shift was.
    assert np.abs(out[RUN, :2] - xyz[RUN, :2]).max() < 1.0


def test_sideways_shifted_run_moves_back_even_with_the_other_reason(one_fibre):
    """A lateral shift whose reason says 'depth' (the model confuses the two) is still found:
    both lines are searched, the reason only tips a close call."""
    name, volume, image = one_fibre
    side = np.cross(DIRECTION, [0.0, 0.0, 1.0])
    side /= np.linalg.norm(side)
    xyz, parent = _trace(RUN, 4.5 * side)
    for reason in ("off_signal_xy", "off_signal_z"):
        out = _refine(volume, image, xyz, parent, _flag(RUN), reason)
        assert np.isfinite(out[RUN]).all(), (name, reason)
        d = _to_axis(out[RUN])
        assert d.max() < 1.0, (name, reason, d.round(2))


def test_node_on_its_fibre_is_not_moved(one_fibre):
    """A wrongly flagged node that sits on its fibre (where its neighbours say the fibre runs)
    gets no move, even though a brighter spot may lie nearby."""
    _, volume, image = one_fibre
    xyz, parent = _trace()
    out = _refine(volume, image, xyz, parent, _flag([8]), "off_signal_z")
    assert np.isnan(out).all()


def test_blank_image_gives_no_move():
    imaging = SETTINGS["1x1x1"]
    volume, image = _scene(imaging, offsets=())
    xyz, parent = _trace(RUN, (0.0, 0.0, 4.0))
    contrast = imaging.signal * 100.0 / (imaging.signal + imaging.background)   # what a fibre would give (8 bit)
    out = refine_moves(volume, xyz, parent, _flag(RUN), np.where(_flag(RUN), "off_signal_z", "").astype(object),
                       np.full(17, float(np.median(image))), np.full(17, contrast))
    assert np.isnan(out).all()


def test_second_fibre_beyond_the_run_is_not_chosen():
    """The run sits halfway (4 µm) between its own fibre and a parallel one 8 µm above: equally
    far, equally bright. The unflagged nodes around the run lie on its own fibre, so the move goes
    there, or nowhere; never onto the other fibre."""
    volume, image = _scene(SETTINGS["0.3x0.3x1"], offsets=((0.0, 0.0, 0.0), (0.0, 0.0, 8.0)))
    xyz, parent = _trace(RUN, (0.0, 0.0, 4.0))
    out = _refine(volume, image, xyz, parent, _flag(RUN), "off_signal_z")
    moved = np.isfinite(out).all(1)
    assert not (moved & ~_flag(RUN)).any()
    if moved.any():
        assert _to_axis(out[moved]).max() < 1.0
        assert (_to_axis(out[moved], (0.0, 0.0, 8.0)) > 3.0).all()


def test_trace_between_two_fibres_is_not_moved():
    """A trace running exactly between two equally bright parallel fibres (4 µm above and below):
    its flagged nodes lie where their unflagged neighbours say the fibre runs, so nothing says they
    are off it, let alone which way to move them; none is moved."""
    volume, image = _scene(SETTINGS["1x1x1"], offsets=((0.0, 0.0, -4.0), (0.0, 0.0, 4.0)))
    xyz, parent = _trace()
    flagged = _flag(RUN)
    bg = np.full(17, float(np.median(image)))
    contrast = _levels(image, volume, _trace(along=(0.0, 0.0, 4.0))[0])[1]
    out = refine_moves(volume, xyz, parent, flagged, np.where(flagged, "off_signal_z", "").astype(object), bg, contrast)
    assert np.isnan(out).all()


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_two_fibres_in_reach_is_ambiguous(name):
    """Two equally bright fibres 1.5 µm either side of where the run belongs, the run shifted 6 µm
    sideways: both would bring it back, neither is clearly the one. Nodes are left alone, or moved
    onto the nearer fibre; never onto the farther one."""
    side = np.cross(DIRECTION, [0.0, 0.0, 1.0])
    side /= np.linalg.norm(side)
    volume, image = _scene(SETTINGS[name], offsets=(1.5 * side, -1.5 * side))
    xyz, parent = _trace(RUN, 6.0 * side)
    flagged = _flag(RUN)
    bg = np.full(17, float(np.median(image)))
    contrast = _levels(image, volume, _trace(along=1.5 * side)[0])[1]
    reason = np.where(flagged, "off_signal_xy", "").astype(object)
    moves = choose_moves(find_candidates(volume, xyz, parent, RUN, flagged, bg, contrast), xyz, parent, flagged, reason)
    assert set(moves.why.tolist()) <= {"", "ambiguous"}
    assert (moves.why == "ambiguous").sum() >= 2
    if moves.ok.any():
        assert _to_axis(moves.target[moves.ok], 1.5 * side).max() < 1.0


def test_candidates_on_both_lines_and_sub_voxel_depth():
    """The depth line through a node 5 µm above an inclined fibre crosses it 5 µm below (1 µm
    z voxels, 1.8 µm axial blur): the candidate is placed to well under a voxel."""
    volume, image = _scene(SETTINGS["0.3x0.3x1"])
    xyz, parent = _trace([8], (0.0, 0.0, 5.0))
    bg, contrast = _levels(image, volume, _trace()[0])
    c = find_candidates(volume, xyz, parent, np.array([8]), _flag([8]), bg, contrast)
    depth = (c.line[0] == 0) & np.isfinite(c.height[0])
    best = np.flatnonzero(depth)[np.nanargmax(c.height[0][depth])]
    assert abs(c.disp[0, best, 2] + 5.0) < 0.5
    assert np.abs(c.disp[0, best, :2]).max() < 0.8       # the strip may shift sideways a little, no more


def test_anchor_path_two_sided_one_sided_and_none():
    xyz = np.column_stack([np.arange(8.0) * 2, np.zeros(8), np.zeros(8)])
    xyz[3:5, 2] += 4.0                                   # rows 3, 4 shifted up
    parent = np.arange(-1, 7)
    flagged = _flag([3, 4], 8)
    path = anchor_path(xyz, parent, np.array([3, 4]), flagged)
    assert (path.sides == 2).all()
    assert np.allclose(path.deviation(xyz[[3, 4]][:, None, :])[:, 0], 4.0)
    assert np.allclose(path.deviation((xyz[[3, 4]] - [0, 0, 4.0])[:, None, :])[:, 0], 0.0)
    # The run reaches the tip: only the anchor above is known, the path is a ray along the fibre.
    xyz[3:5, 2] -= 4.0
    flagged = _flag([5, 6, 7], 8)
    path = anchor_path(xyz, parent, np.array([6]), flagged)
    assert path.sides[0] == 1
    assert np.isclose(path.deviation(np.array([[[12.0, 0.0, 3.0]]]))[0, 0], 3.0)
    # Everything flagged: no anchor at all.
    path = anchor_path(xyz, parent, np.array([4]), np.ones(8, bool))
    assert path.sides[0] == 0 and np.isnan(path.deviation(xyz[[4]][:, None, :])).all()


def test_node_near_the_image_border():
    """Strips that leave the image are read as missing, not as dark background: no error, and a
    run shifted towards the border still moves back."""
    volume, image = _scene(SETTINGS["1x1x1"])
    _, parent = _trace()
    # Node 0 lies 3 µm inside the x = 0 face and its depth line reaches below z = 0: strips stick out.
    flagged = _flag([0, 1])
    xyz2, _ = _trace([0, 1], (0.0, 0.0, 4.0))
    out = _refine(volume, image, xyz2, parent, flagged, "off_signal_z")
    assert np.isnan(out[2:]).all()
    assert np.isfinite(out[:2]).all() and _to_axis(out[:2]).max() < 1.0
    # A trace wholly outside the image (and no background measured there): nothing to move onto.
    far = xyz2 + [100.0, 0.0, 0.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = refine_moves(volume, far, parent, flagged, np.where(flagged, "off_signal_z", "").astype(object),
                           np.full(17, np.nan), np.full(17, 10.0))
    assert np.isnan(out).all()
