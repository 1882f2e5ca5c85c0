"""Any data in one viewer: images, SWC skeletons (coloured by type) and a label volume."""

from __future__ import annotations

import os
from pathlib import Path

import neuroglancer

from ..io.swc import read_swc
from ..io.volume import Volume
from . import layers

__all__ = ["open_view"]


def _names(paths: list, used: set) -> list[str]:
    """Layer names from file names, made unique."""
    out = []
    for p in paths:
        base = Path(str(p).rstrip("/")).name or "data"
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base} ({k})"
        used.add(name)
        out.append(name)
    return out


def open_view(volumes: list[Volume] = (), skeletons: list[str | os.PathLike] = (),
              segmentation: Volume | None = None, *, token: str | None = None) -> neuroglancer.Viewer:
    """A viewer with the given images, SWC traces and label volume (the server must be bound
    first, :func:`neurorecon.viewer.review.start_server`).

    Parameters
    ----------
    volumes : list of Volume
        Image layers, one per volume.
    skeletons : list of path-like
        SWC files, one skeleton layer each.
    segmentation : Volume, optional
        A label volume, shown as a segmentation layer.
    token : str, optional
        Fixed viewer token.

    Returns
    -------
    neuroglancer.Viewer
    """
    neurons = [read_swc(p) for p in skeletons]
    viewer = neuroglancer.Viewer(token=token) if token else neuroglancer.Viewer()
    used: set = set()
    with viewer.txn() as s:
        s.dimensions = layers.um_space()
        for name, vol in zip(_names([v.path for v in volumes], used), volumes):
            s.layers[name] = layers.image_layer(vol)
        if segmentation is not None:
            s.layers[_names([segmentation.path], used)[0]] = layers.segmentation_layer(segmentation)
        for name, n in zip(_names(list(skeletons), used), neurons):
            s.layers[name] = layers.skeleton_layer(n)
        s.layout = "xy-3d"
        centre = _centre(list(volumes) + ([segmentation] if segmentation else []), neurons)
        if centre is not None:
            s.position = centre
    return viewer


def _centre(volumes: list[Volume], neurons: list) -> list[float] | None:
    """Start at the first trace's centre, else the first volume's."""
    for n in neurons:
        if len(n):
            return ((n.xyz.min(0) + n.xyz.max(0)) / 2).tolist()
    if volumes:
        v = volumes[0]
        return (v.to_physical([(s - 1) / 2 for s in v.shape])).tolist()
    return None
