"""Dense neurite segmentation of serial-section EM: one entry point, :func:`segment`, for every method.

Methods: ``watershed`` (:mod:`neurorecon.em.watershed`), a plain baseline with no learning, the
default; ``affinities``, a small 3D U-Net's affinities (:mod:`neurorecon.em.unet`) turned into
neurites by fragments and mean-affinity agglomeration (:mod:`neurorecon.em.agglomerate`). The command ``neurorecon segment`` is this function
plus reading and writing (:func:`write_segmentation`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["FORMATS", "METHODS", "SegmentError", "check_voxel_size", "segment", "segmentation_format",
           "write_segmentation"]

#: The methods that exist, the default first.
METHODS = ("watershed", "affinities")
#: Output formats of :func:`write_segmentation`.
FORMATS = ("tif", "zarr", "precomputed")
# EM voxel sizes this package can segment, in µm: in-plane finer than 0.5 nm or coarser than 100 nm
# (membranes unresolved), or sections thicker than 1 µm, are a mistake, most often nm given as µm.
_IN_PLANE_UM = (0.0005, 0.1)
_SECTION_UM = (0.0005, 1.0)


class SegmentError(ValueError):
    """Input that cannot be segmented, or a segmentation that cannot be written; one line."""


def check_voxel_size(voxel_size: Sequence[float]) -> tuple[float, float, float]:
    """``(vx, vy, vz)`` in µm as floats, or :class:`SegmentError` naming what is wrong.

    Examples
    --------
    >>> check_voxel_size([0.016, 0.016, 0.04])
    (0.016, 0.016, 0.04)
    >>> check_voxel_size([16, 16, 40])
    Traceback (most recent call last):
    ...
    neurorecon.em.segment.SegmentError: voxel size (16, 16, 40) µm is not EM: in-plane must be 0.0005-0.1 µm and sections 0.0005-1 µm thick; it looks like nanometres: give 0.016 0.016 0.04
    """
    try:
        vs = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError):
        vs = ()
    if len(vs) != 3 or not all(np.isfinite(v) and v > 0 for v in vs):
        raise SegmentError(f"voxel size must be three positive numbers VX VY VZ in µm, got {voxel_size!r}")
    inside = all(_IN_PLANE_UM[0] <= v <= _IN_PLANE_UM[1] for v in vs[:2]) and _SECTION_UM[0] <= vs[2] <= _SECTION_UM[1]
    if not inside:
        hint = ""
        if min(vs) >= 2 and max(vs) <= 1000:      # 2-1000 nm given as µm
            hint = f"; it looks like nanometres: give {' '.join(f'{v / 1000:g}' for v in vs)}"
        shown = ", ".join(f"{v:g}" for v in vs)
        raise SegmentError(f"voxel size ({shown}) µm is not EM: in-plane must be {_IN_PLANE_UM[0]:g}-{_IN_PLANE_UM[1]:g} µm "
                           f"and sections {_SECTION_UM[0]:g}-{_SECTION_UM[1]:g} µm thick{hint}")
    return vs


def segment(image, voxel_size: Sequence[float], method: str = "watershed",
            progress: Callable[[int, int], None] | None = None, **params) -> np.ndarray:
    """Segment an EM volume into neurites; returns a label array of the image's shape.

    Parameters
    ----------
    image : numpy.ndarray or neurorecon.io.volume.Volume, shape (nz, ny, nx)
        Grey-level serial-section EM, membranes dark (uint8, uint16 or float). It is only read.
        A Volume (:func:`~neurorecon.io.volume.open_volume`) is read a slab of sections at a time.
    voxel_size : (vx, vy, vz) in µm
        E.g. ``(0.016, 0.016, 0.04)``. Sections are resampled in-plane to the method's own
        resolution and the labels back to the image's grid.
    method : str
        One of :data:`METHODS`: ``"watershed"``, the baseline (and default), or ``"affinities"``
        (settings: ``model``, a path or a loaded model, and ``threshold``, the agglomeration's).
    progress : callable(done, total), optional
        Called as sections are done.
    **params
        The method's settings, e.g. ``merge_threshold=0.45`` (see
        :class:`~neurorecon.em.watershed.WatershedParams`).

    Returns
    -------
    numpy.ndarray of uint32 (uint64 if more labels are needed), shape (nz, ny, nx)
        0 only where a section has no contrast at all; neurites 1..N.

    Raises
    ------
    SegmentError
        An unknown method or setting, a bad voxel size, or an image that is not 3D or not numeric.

    Examples
    --------
    >>> image = np.full((3, 40, 40), 200, np.uint8)
    >>> image[:, :, 19:21] = 20                 # one membrane down the middle of every section
    >>> labels = segment(image, (0.016, 0.016, 0.04))
    >>> labels.shape, labels.dtype.name, len(np.unique(labels))
    ((3, 40, 40), 'uint32', 2)
    """
    if method not in METHODS:
        raise SegmentError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    vs = check_voxel_size(voxel_size)
    shape = tuple(getattr(image, "shape", ()))
    if not hasattr(image, "read"):
        image = np.asarray(image)
        shape = image.shape
    if len(shape) != 3:
        what = "a 2D image" if len(shape) == 2 else f"an array of shape {shape}"
        raise SegmentError(f"{what}; segment needs a 3D [z, y, x] stack of sections")
    if min(shape) < 1:
        raise SegmentError(f"an empty image (shape {shape})")
    dtype = np.dtype(image.dtype)
    if dtype.kind not in "uif":
        raise SegmentError(f"image of type {dtype}; segment needs grey levels (uint8, uint16 or float)")
    if method == "affinities":
        return _affinities(image, vs, progress, **params)
    from .watershed import WatershedParams, watershed

    try:
        settings = WatershedParams(**params)
    except TypeError:
        from dataclasses import fields

        known = ", ".join(f.name for f in fields(WatershedParams))
        unknown = ", ".join(sorted(set(params) - {f.name for f in fields(WatershedParams)}))
        raise SegmentError(f"unknown setting(s) {unknown} for method {method!r}; known: {known}") from None
    except ValueError as e:
        raise SegmentError(str(e)) from None
    return watershed(image, vs, settings, progress=progress)


def _affinities(image, vs, progress, model=None, threshold: float | None = None, **unknown) -> np.ndarray:
    """The learned method: the U-Net's affinities (:mod:`neurorecon.em.unet`), then fragments and
    mean-affinity agglomeration (:mod:`neurorecon.em.agglomerate`). ``model``: a path to other
    weights (default: the shipped ones) or a loaded model; ``threshold``: the agglomeration's."""
    if unknown:
        raise SegmentError(f"unknown setting(s) {', '.join(sorted(unknown))} for method 'affinities'; known: model, threshold")
    from .agglomerate import THRESHOLD, agglomerate
    from .unet import load_affinity_model, predict_affinities

    if model is None or isinstance(model, (str, os.PathLike)):
        try:
            model = load_affinity_model(model)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise SegmentError(f"cannot load the affinity model: {str(e).splitlines()[0]}") from None
    if hasattr(image, "read"):
        image = image.read((0, 0, 0), image.shape)
    aff = predict_affinities(np.asarray(image), model, vs, progress=progress)
    return agglomerate(aff, model.meta["offsets"], threshold=THRESHOLD if threshold is None else threshold)


# ------------------------------------------------------------------------------ writing
def segmentation_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The format SEG is written in: ``fmt`` if given, else from the suffix (.tif/.tiff, .zarr).

    Examples
    --------
    >>> segmentation_format("seg.zarr"), segmentation_format("out/seg", "precomputed")
    ('zarr', 'precomputed')
    """
    if fmt is not None:
        if fmt not in FORMATS:
            raise SegmentError(f"{path}: unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix in (".tif", ".tiff"):
        return "tif"
    if suffix == ".zarr":
        return "zarr"
    raise SegmentError(f"{path}: cannot tell the format from the name; end it in .tif or .zarr, or give "
                       "--format precomputed (or tif, zarr)")


def write_segmentation(path: str | os.PathLike, labels: np.ndarray, voxel_size: Sequence[float],
                       fmt: str | None = None, *, overwrite: bool = False) -> Path:
    """Write a label volume as a 3D TIFF, an OME-Zarr or a Neuroglancer precomputed segmentation.

    Every format is written beside ``path`` and renamed into place, so an interrupted write
    leaves no partial output (and, with ``overwrite``, the old one until the new one is whole).

    Parameters
    ----------
    path : the ``.tif`` file or the ``.zarr`` / precomputed folder.
    labels : numpy.ndarray, shape (nz, ny, nx), uint32 or uint64
    voxel_size : (vx, vy, vz) in µm, recorded in the output.
    fmt : {"tif", "zarr", "precomputed"}, optional
        Default: from the suffix (:func:`segmentation_format`).
    overwrite : replace an existing output (a folder only if it holds a volume).

    Returns
    -------
    pathlib.Path

    Notes
    -----
    TIFF: an OME-TIFF (ImageJ stores no 32-bit integers) with the voxel size as
    ``PhysicalSizeX/Y/Z``, uint32 only (OME has no 64-bit integers); zarr: OME-Zarr 0.4, one scale; precomputed: a multiscale
    ``segmentation`` volume (compressed_segmentation encoding, each level by the mode), made by
    :func:`neurorecon.io.convert.convert`.
    """
    from ..io.volume import VolumeError, write_tiff, write_zarr

    fmt = segmentation_format(path, fmt)
    path = Path(path)
    labels = np.asarray(labels)
    if labels.dtype.name not in ("uint32", "uint64"):
        raise SegmentError(f"{path}: labels must be uint32 or uint64, got {labels.dtype}")
    if fmt == "tif" and labels.dtype == np.uint64:
        raise SegmentError(f"{path}: more labels than uint32 holds, and TIFF (OME) has no 64-bit integers; "
                           "write .zarr or --format precomputed")
    check_replaceable(path, overwrite)
    try:
        if fmt == "tif":
            return write_tiff(path, labels, voxel_size)
        if fmt == "zarr":
            return write_zarr(path, labels, voxel_size, overwrite=True)
        return _write_precomputed(path, labels, voxel_size)
    except VolumeError as e:
        raise SegmentError(str(e)) from None


def check_replaceable(path: Path, overwrite: bool) -> None:
    """Refuse an existing output without ``overwrite``, and a folder that holds no volume even
    with it (``--overwrite`` pointed at the wrong folder must not delete it)."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    if not overwrite:
        raise SegmentError(f"{path}: exists; pass --overwrite to replace it")
    marks = (".zattrs", ".zgroup", ".zarray", "zarr.json", "info", "attributes.json")
    if path.is_dir() and not any((path / m).exists() for m in marks):
        raise SegmentError(f"{path}: exists and is not a volume; not replacing it (choose another output)")


def _write_precomputed(path: Path, labels: np.ndarray, voxel_size: Sequence[float]) -> Path:
    import shutil

    from ..io.atomic import temporary_beside
    from ..io.convert import convert
    from ..io.volume import open_volume

    with temporary_beside(path, folder=True) as tmp:
        inner = tmp / "volume"
        convert(open_volume(labels, voxel_size=voxel_size), inner, fmt="precomputed", labels=True)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        os.replace(inner, path)
        tmp.rmdir()
    return path
