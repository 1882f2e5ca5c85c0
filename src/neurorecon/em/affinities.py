"""Affinity targets: for each offset, whether a voxel and its neighbour at that offset are one object.

An affinity map has one channel per offset ``(dz, dy, dx)``: channel k at voxel v is 1 when v and
``v + offset_k`` carry the same nonzero label, else 0. The short-range offsets (one voxel back
along z, y and x) come first, as the post-processing (:mod:`neurorecon.em.agglomerate`) expects;
the long-range ones teach a network context (is this membrane really closed?) and give the
agglomeration repulsive evidence across small gaps. Where ``v + offset`` lies outside the volume
there is no target: the mask is False there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["OFFSETS", "affinity_targets", "check_offsets"]

#: The offsets (dz, dy, dx) of the shipped model: short range first, then long range in the
#: section plane (3 and 9 pixels, ~50 and ~150 nm at 16 nm) and two sections back.
OFFSETS: tuple[tuple[int, int, int], ...] = (
    (-1, 0, 0), (0, -1, 0), (0, 0, -1),
    (0, -3, 0), (0, 0, -3), (0, -9, 0), (0, 0, -9), (-2, 0, 0),
)  # fmt: skip


def check_offsets(offsets: Sequence[Sequence[int]]) -> tuple[tuple[int, int, int], ...]:
    """``offsets`` as a tuple of integer triples, or ValueError naming what is wrong."""
    try:
        out = tuple(tuple(int(c) for c in o) for o in offsets)
    except (TypeError, ValueError):
        raise ValueError(f"offsets must be (dz, dy, dx) integer triples, got {offsets!r}") from None
    if not out or any(len(o) != 3 or o == (0, 0, 0) for o in out):
        raise ValueError(f"offsets must be non-zero (dz, dy, dx) integer triples, got {offsets!r}")
    return out


def _slices(offset: Sequence[int], shape: Sequence[int]):
    """Slices of the voxels v whose neighbour v + offset is inside, and of those neighbours."""
    here, there = [], []
    for d, n in zip(offset, shape):
        if d >= 0:
            here.append(slice(0, max(n - d, 0)))
            there.append(slice(d, n) if d < n else slice(n, n))
        else:
            here.append(slice(-d, n) if -d < n else slice(n, n))
            there.append(slice(0, max(n + d, 0)))
    return tuple(here), tuple(there)


def affinity_targets(labels: np.ndarray, offsets: Sequence[Sequence[int]] = OFFSETS) -> tuple[np.ndarray, np.ndarray]:
    """Affinities of a label volume, and where they are defined.

    Parameters
    ----------
    labels : numpy.ndarray of integers, shape (nz, ny, nx)
        0 is background (extracellular space, unlabelled): it has affinity 0 to everything.
    offsets : sequence of (dz, dy, dx)
        Default :data:`OFFSETS`.

    Returns
    -------
    affinities : numpy.ndarray of uint8, shape (len(offsets), nz, ny, nx)
        1 where ``labels[v] == labels[v + offset] != 0``, else 0.
    mask : numpy.ndarray of bool, same shape
        False where ``v + offset`` is outside the volume (the affinity there is 0 and means nothing).

    Examples
    --------
    >>> lab = np.array([[[1, 1, 2, 0]]])
    >>> aff, mask = affinity_targets(lab, [(0, 0, -1)])
    >>> aff[0, 0, 0].tolist(), mask[0, 0, 0].tolist()
    ([0, 1, 0, 0], [False, True, True, True])
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 3D integer array (z, y, x), got {labels.dtype} {labels.shape}")
    offsets = check_offsets(offsets)
    aff = np.zeros((len(offsets),) + labels.shape, np.uint8)
    mask = np.zeros((len(offsets),) + labels.shape, bool)
    for k, off in enumerate(offsets):
        here, there = _slices(off, labels.shape)
        a, b = labels[here], labels[there]
        aff[k][here] = (a == b) & (a != 0)
        mask[k][here] = True
    return aff, mask
