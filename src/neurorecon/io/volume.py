"""Read 3D images lazily, whatever format they come in.

Every part of neurorecon that looks at image data goes through :func:`open_volume`, which
returns a small :class:`Volume`: shape, data type, voxel size and a :meth:`Volume.read` that
fetches one box. Nothing but metadata is read when a volume is opened.

Conventions (outside tools rely on these)
-----------------------------------------
* Arrays are indexed ``[z, y, x]``: ``Volume.shape`` is ``(nz, ny, nx)`` and boxes are given
  as ``(z, y, x)`` voxel indices.
* ``Volume.voxel_size`` is ``(vx, vy, vz)`` in micrometres: x, y, z order, like SWC coordinates.
* The centre of voxel ``[k, j, i]`` is at physical ``(x, y, z) = (i*vx, j*vy, k*vz)``.
  Indices always start at 0: a stored origin (precomputed ``voxel_offset``, an OME-Zarr
  ``translation``) is not applied.
* Volumes are single-channel 3D. Singleton extra axes (OME-Zarr ``t, c``, a precomputed
  ``channel``, ImageJ ``T``/``C``) are dropped; a channel, time or RGB axis longer than 1 is
  refused with :class:`VolumeError`.

Sources
-------
* a numpy array in memory;
* a 3D TIFF (``.tif``/``.tiff``, ImageJ hyperstacks and OME-TIFF included): memory-mapped when
  the pixels are stored uncompressed and contiguous, otherwise read into memory once, at the
  first :meth:`Volume.read`;
* zarr v2 and v3 arrays, OME-Zarr groups (v0.1 to v0.5), N5 datasets and multiscale groups, and
  Neuroglancer precomputed volumes, read with tensorstore from a local path or any URL
  tensorstore understands (``file://``, ``gs://``, ``s3://``, ``https://``); the format is
  found from the metadata files present, or given as ``driver=`` or a URL prefix such as
  ``zarr3://gs://...``, ``precomputed://...`` or tensorstore's ``gs://...|zarr3:``;
* a folder of 2D TIFF slices, one per z plane, in natural order of the numbers in the file
  names; only the planes a box needs are read.

Voxel size: an explicit ``voxel_size`` argument always wins. Otherwise it comes from the
format's metadata (ImageJ ``spacing``/``unit`` and X/YResolution, OME-TIFF ``PhysicalSize``,
OME-Zarr ``scale`` transforms and axis units, N5 ``resolution``/``units`` or
``pixelResolution``, precomputed ``resolution`` in nm), converted to micrometres. Where it is
missing, ``(1, 1, 1)`` is used and ``Volume.voxel_size_known`` is False.

tensorstore and tifffile are imported only by the functions that need them, so that importing
this module (and starting the CLI) stays fast.
"""

from __future__ import annotations

import json
import operator
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Volume", "VolumeError", "ome_attrs", "open_volume", "write_tiff", "write_zarr"]

Box = tuple[slice, slice, slice]
Reader = Callable[[Box], np.ndarray]

_TIFF_SUFFIXES = (".tif", ".tiff")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
# Files whose presence makes a folder a chunked array rather than a folder of slices.
_METADATA_FILES = ("zarr.json", ".zarray", ".zattrs", ".zgroup", "attributes.json", "info")
_PROBES = (  # (metadata key, tensorstore driver), in the order a folder is probed
    ("zarr.json", "zarr3"),
    (".zarray", "zarr"),
    (".zattrs", "zarr"),
    (".zgroup", "zarr"),
    ("attributes.json", "n5"),
    ("info", "neuroglancer_precomputed"),
)
_DRIVERS = {
    "zarr": "zarr", "zarr2": "zarr", "zarr3": "zarr3", "n5": "n5",
    "precomputed": "neuroglancer_precomputed", "neuroglancer_precomputed": "neuroglancer_precomputed",
    "tif": "tiff", "tiff": "tiff", "slices": "slices",
}  # fmt: skip
# Micrometres per unit. Keys are lower case; ImageJ writes the micro sign as a literal "\u00B5".
_UM_PER_UNIT = {
    "micrometer": 1.0, "micrometre": 1.0, "micron": 1.0, "microns": 1.0, "um": 1.0, "µm": 1.0,
    "μm": 1.0, "\\u00b5m": 1.0, "nanometer": 1e-3, "nanometre": 1e-3, "nm": 1e-3,
    "angstrom": 1e-4, "å": 1e-4, "picometer": 1e-6, "pm": 1e-6, "millimeter": 1e3,
    "millimetre": 1e3, "mm": 1e3, "centimeter": 1e4, "cm": 1e4, "meter": 1e6, "metre": 1e6, "m": 1e6,
}  # fmt: skip
_AXIS_WORDS = {"c": "channel", "channel": "channel", "t": "time", "time": "time", "s": "RGB sample"}
_IMAGEJ_DTYPES = ("uint8", "uint16", "int16", "float32")
_LABEL_TIFF_DTYPES = ("uint32",)  # written as OME-TIFF: ImageJ has no 32-bit integers (OME none of 64)
# Left inside its output by an unfinished neurorecon.io.convert run.
_CONVERT_JOURNAL = ".neurorecon-convert.jsonl"


class VolumeError(ValueError):
    """A volume that cannot be opened or read; the one-line message starts with its path."""


@dataclass(frozen=True)
class Volume:
    """A lazily read single-channel 3D image; open one with :func:`open_volume`.

    Attributes
    ----------
    path : str
        Where the data came from (a path, a URL, or ``"<array>"``); used in messages.
    shape : tuple of int
        ``(nz, ny, nx)``.
    dtype : numpy.dtype
    voxel_size : tuple of float
        ``(vx, vy, vz)`` in micrometres.
    voxel_size_known : bool
        False when no voxel size was given or found and ``(1, 1, 1)`` stands in for it.
    """

    path: str
    shape: tuple[int, int, int]
    dtype: np.dtype
    voxel_size: tuple[float, float, float]
    voxel_size_known: bool = True
    # Returns an array it owns for an in-bounds box; the format-specific part of a volume.
    _reader: Reader | None = field(default=None, repr=False, compare=False)

    def read(self, lo: Sequence[int], hi: Sequence[int], fill: Any = 0) -> np.ndarray:
        """Read the box ``[lo, hi)`` of voxel indices ``(z, y, x)``.

        Parts of the box outside the volume are set to ``fill``, so a caller can ask for a patch
        centred on a node near the border. Only the chunks, pages or planes the box overlaps
        are read.

        Parameters
        ----------
        lo, hi : sequence of 3 int
            First and one-past-last voxel index along z, y, x; may lie outside the volume.
        fill : scalar
            Value for voxels outside the volume; must fit ``dtype``.

        Returns
        -------
        numpy.ndarray
            Shape ``hi - lo``, dtype ``self.dtype``; a new array the caller may modify.
        """
        lo, hi = _check_box(lo, hi, self.path)
        inner_lo = [min(max(v, 0), n) for v, n in zip(lo, self.shape)]
        inner_hi = [min(max(v, 0), n) for v, n in zip(hi, self.shape)]
        inside = tuple(slice(a, b) for a, b in zip(inner_lo, inner_hi))
        if (inner_lo, inner_hi) == (lo, hi) and all(a < b for a, b in zip(lo, hi)):
            return self._reader(inside)
        out = np.full([b - a for a, b in zip(lo, hi)], fill, dtype=self.dtype)
        if all(a < b for a, b in zip(inner_lo, inner_hi)):
            out[tuple(slice(a - o, b - o) for a, b, o in zip(inner_lo, inner_hi, lo))] = self._reader(inside)
        return out

    def to_physical(self, index: Any) -> np.ndarray:
        """Convert voxel indices ``(k, j, i)`` (z, y, x order) to physical ``(x, y, z)`` in µm.

        Parameters
        ----------
        index : array_like, shape (3,) or (N, 3)
            Voxel indices, fractional allowed.

        Returns
        -------
        numpy.ndarray of float, same shape

        Examples
        --------
        >>> vol = open_volume(np.zeros((2, 3, 4), np.uint8), voxel_size=(0.5, 0.5, 2.0))
        >>> vol.to_physical([1, 2, 3]).tolist()
        [1.5, 1.0, 2.0]
        """
        kji = _points(index)
        return kji[..., ::-1] * np.asarray(self.voxel_size)

    def to_voxel(self, xyz: Any) -> np.ndarray:
        """Convert physical ``(x, y, z)`` in µm to fractional voxel indices ``(k, j, i)``.

        The inverse of :meth:`to_physical`; round to the nearest integer for the voxel whose
        centre is closest.

        Parameters
        ----------
        xyz : array_like, shape (3,) or (N, 3)

        Returns
        -------
        numpy.ndarray of float, same shape
        """
        return (_points(xyz) / np.asarray(self.voxel_size))[..., ::-1]

    def box_around(self, lo_um: Any, hi_um: Any) -> tuple[np.ndarray, np.ndarray]:
        """Voxel box ``[lo, hi)`` (z, y, x) holding every voxel centre in the physical box
        ``lo_um``..``hi_um`` (x, y, z µm), plus one voxel of margin; not clipped to the volume."""
        lo = np.floor(self.to_voxel(lo_um)).astype(np.int64)
        hi = np.ceil(self.to_voxel(hi_um)).astype(np.int64) + 1
        return lo, hi


def open_volume(
    source: str | os.PathLike | np.ndarray,
    voxel_size: Sequence[float] | None = None,
    *,
    scale: int = 0,
    driver: str | None = None,
) -> Volume:
    """Open a 3D image for lazy reading; only metadata is read here.

    Parameters
    ----------
    source : path, URL or numpy.ndarray
        A numpy array ``[z, y, x]``; a TIFF file; a folder of TIFF slices; a zarr, OME-Zarr, N5
        or Neuroglancer precomputed folder; or a URL of one of the latter (see module docs).
    voxel_size : (vx, vy, vz) in µm, optional
        Overrides whatever the metadata says. Defaults to the metadata, else ``(1, 1, 1)``.
    scale : int
        Resolution level of a multiscale source (OME-Zarr dataset, N5 ``s<scale>``, precomputed
        scale index); 0 is the full resolution.
    driver : str, optional
        Force the format: ``"tiff"``, ``"slices"``, ``"zarr"`` (v2), ``"zarr3"``, ``"n5"`` or
        ``"precomputed"``. By default it is detected from the files present.

    Returns
    -------
    Volume

    Raises
    ------
    VolumeError
        Missing path, unknown format, a 2D image, a channel/time axis longer than 1, unreadable
        metadata, or a bad ``voxel_size``.

    Examples
    --------
    >>> vol = open_volume(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    >>> vol.shape, vol.voxel_size_known
    ((2, 3, 4), False)
    >>> vol.read((1, 2, 2), (2, 4, 5)).tolist()
    [[[22, 23, 0], [0, 0, 0]]]
    """
    if isinstance(source, np.ndarray):
        return _open_array(source, voxel_size)
    label = os.fspath(source)
    given = None if voxel_size is None else _check_voxel_size(voxel_size, label)
    driver, location = _split_driver(label, driver)
    local = _local_path(location)
    if local is not None and not local.exists():
        raise VolumeError(f"{label}: no such file or directory")
    if local is not None and (local / _CONVERT_JOURNAL).exists():
        raise VolumeError(f"{label}: an unfinished conversion; run the same `neurorecon convert` again to finish it")
    if driver is None and local is not None:
        driver = _sniff_local(local, label)
    if driver in ("tiff", "slices"):
        if local is None:
            raise VolumeError(f"{label}: {driver} sources must be local files")
        return (_open_tiff if driver == "tiff" else _open_slices)(local, label, given)
    return _open_chunked(_kvstore_spec(location), label, driver, scale, given)


# --- shared helpers -------------------------------------------------------------------------


def _check_box(lo: Sequence[int], hi: Sequence[int], path: str) -> tuple[list[int], list[int]]:
    # operator.index refuses floats: a box at fractional indices is a caller bug, not a round.
    lo, hi = [operator.index(v) for v in lo], [operator.index(v) for v in hi]
    if len(lo) != 3 or len(hi) != 3 or any(b < a for a, b in zip(lo, hi)):
        raise VolumeError(f"{path}: bad box lo={lo} hi={hi}; need 3 (z, y, x) indices with lo <= hi")
    return lo, hi


def _points(a: Any) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    if a.shape[-1:] != (3,):
        raise ValueError(f"expected coordinates of shape (3,) or (N, 3), got {a.shape}")
    return a


def _check_voxel_size(voxel_size: Sequence[float], path: str) -> tuple[float, float, float]:
    try:
        vs = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError):
        vs = ()
    if len(vs) != 3 or not all(np.isfinite(v) and v > 0 for v in vs):
        raise VolumeError(f"{path}: voxel_size must be three positive numbers (vx, vy, vz) in um, got {voxel_size!r}")
    return vs


def _make_volume(path: str, shape: Sequence[int], dtype: Any, reader: Reader, given, found) -> Volume:
    """Build the Volume; ``found`` is the metadata's (vx, vy, vz), None or with None entries."""
    if given is not None:
        voxel_size, known = given, True
    else:
        found = found or (None, None, None)
        voxel_size = tuple(1.0 if v is None else float(v) for v in found)
        known = all(v is not None and v > 0 for v in found)
    return Volume(path, tuple(int(n) for n in shape), np.dtype(dtype), voxel_size, known, reader)


def _unit_um(unit: Any, default: float | None) -> float | None:
    """Micrometres per ``unit``; ``default`` when no unit is given, None when it is not a length."""
    if unit is None or str(unit).strip() == "":
        return default
    return _UM_PER_UNIT.get(str(unit).strip().lower())


def _voxel_from_axes(names: list[str], values: Sequence[float] | None, units: Sequence[Any], default_unit):
    """(vx, vy, vz) in µm from per-axis sizes and units; None entries where unknown."""
    out = []
    for axis in "xyz":
        try:
            i = names.index(axis)
            factor = _unit_um(units[i] if i < len(units) else None, default_unit)
            out.append(float(values[i]) * factor if factor else None)
        except (ValueError, IndexError, TypeError):
            out.append(None)
    return tuple(out)


def _positional(rank: int, xyz_first: bool = False) -> list[str]:
    """Axis names when a format does not record them: zarr/numpy end with z, y, x; N5 starts x, y, z."""
    if xyz_first:
        return ["x", "y", "z"][:rank] + [f"d{i}" for i in range(3, rank)]
    return [f"d{i}" for i in range(rank - 3)] + ["z", "y", "x"][max(0, 3 - rank) :]


def _axis_plan(names: Sequence[str], shape: Sequence[int], path: str) -> tuple[list[int], list[int]]:
    """Positions of the z, y, x axes, and of the singleton axes to drop; refuses anything else."""
    names = [str(n).lower() for n in names]
    if any(a not in names for a in "zyx"):
        axes = ",".join(names)
        raise VolumeError(f"{path}: not a 3D volume (shape {tuple(shape)}, axes {axes}); need z, y and x axes")
    zyx = [names.index(a) for a in "zyx"]
    drop = [i for i in range(len(names)) if i not in zyx]
    for i in drop:
        if shape[i] != 1:
            word = _AXIS_WORDS.get(names[i], "extra")
            raise VolumeError(
                f"{path}: {word} axis '{names[i]}' has size {shape[i]}; neurorecon reads single-channel 3D volumes "
                "(extract one channel or time point first)"
            )
    return zyx, drop


def _np_zyx(arr: np.ndarray, names: Sequence[str], path: str) -> np.ndarray:
    """A [z, y, x] view of ``arr`` (no copy, so a memmap stays unread)."""
    zyx, drop = _axis_plan(names, arr.shape, path)
    view = arr[tuple(0 if i in drop else slice(None) for i in range(arr.ndim))]
    kept = [i for i in range(arr.ndim) if i not in drop]
    return view.transpose([kept.index(i) for i in zyx])


def _array_reader(arr: np.ndarray) -> Reader:
    # np.array copies: the caller must not get a view into someone's array or a memmap.
    return lambda box: np.array(arr[box])


def _open_array(arr: np.ndarray, voxel_size) -> Volume:
    label = "<array>"
    given = None if voxel_size is None else _check_voxel_size(voxel_size, label)
    view = _np_zyx(arr, _positional(arr.ndim), label)
    return _make_volume(label, view.shape, view.dtype, _array_reader(view), given, None)


# --- locating the source ----------------------------------------------------------------------


def _is_url(text: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text) is not None


def _split_driver(text: str, driver: str | None) -> tuple[str | None, str]:
    """Separate a driver named in the source (``zarr3://url``, ``url|zarr3:``) from the location."""
    named = None
    if "|" in text:  # tensorstore URL pipeline: "<kvstore url>|<driver>:"
        text, _, tail = text.partition("|")
        named = tail.split(":", 1)[0]
    m = re.match(r"^(zarr2?|zarr3|n5|precomputed)://(.*)$", text)
    if m and (_is_url(m.group(2)) or m.group(1) == "precomputed"):  # Neuroglancer-style prefix
        named, text = m.group(1), m.group(2)
    driver = driver or named
    if driver is None:
        return None, text
    if driver.lower() not in _DRIVERS:
        raise VolumeError(f"{text}: unknown driver {driver!r}; use one of {', '.join(sorted(set(_DRIVERS)))}")
    return _DRIVERS[driver.lower()], text


def _local_path(location: str) -> Path | None:
    """The local path of a plain path or a ``file://`` URL; None for remote URLs."""
    if not _is_url(location):
        return Path(location)
    if location.lower().startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(location).path))
    return None


def _sniff_local(path: Path, label: str) -> str | None:
    """'tiff', 'slices', or None for a chunked array whose driver the metadata decides."""
    if path.is_file():
        try:
            with open(path, "rb") as fh:
                magic = fh.read(4)
        except OSError as e:
            raise VolumeError(f"{label}: cannot read: {e.strerror or e}") from e
        if path.suffix.lower() in _TIFF_SUFFIXES or magic in _TIFF_MAGIC:
            return "tiff"
        raise VolumeError(f"{label}: unknown format; expected a TIFF file or a zarr, N5 or precomputed folder")
    if any((path / name).is_file() for name in _METADATA_FILES):
        return None
    if _slice_files(path):
        return "slices"
    raise VolumeError(
        f"{label}: unknown format; the folder has no zarr/N5/precomputed metadata ({', '.join(_METADATA_FILES)}) "
        "and no TIFF slices"
    )


# --- TIFF -------------------------------------------------------------------------------------


def _tiff_names(axes: str) -> list[str]:
    """tifffile axis letters as names; a generic page axis (I, Q) stands for z when there is no Z."""
    names = list(axes.lower())
    if "z" not in names:
        for i, a in enumerate(names):
            if a in "iq":
                names[i] = "z"
                break
    return names


def _open_tiff(path: Path, label: str, given) -> Volume:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape, dtype = series.axes, series.shape, series.dtype
            contiguous = series.dataoffset is not None  # uncompressed, one run of bytes
            found = _tiff_voxel_size(tif)
    except (OSError, ValueError, IndexError, tifffile.TiffFileError) as e:
        raise VolumeError(f"{label}: cannot read as TIFF: {e}") from e
    names = _tiff_names(axes)
    zyx, _ = _axis_plan(names, shape, label)  # refuse 2D or multichannel before any pixel is read
    reader = _tiff_memmap_reader(path, names, label) if contiguous else None
    if reader is None:
        reader = _tiff_memory_reader(path, names, label)
    return _make_volume(label, [shape[i] for i in zyx], dtype, reader, given, found)


def _tiff_memmap_reader(path: Path, names: list[str], label: str) -> Reader | None:
    import tifffile

    try:
        arr = tifffile.memmap(path, mode="r")
    except ValueError:  # e.g. odd bit depths or byte orders numpy cannot map
        return None
    return _array_reader(_np_zyx(arr, names, label))


def _tiff_memory_reader(path: Path, names: list[str], label: str) -> Reader:
    """Compressed or scattered pixels: decode the whole image once, at the first read."""
    cache: list[np.ndarray] = []

    def read(box: Box) -> np.ndarray:
        if not cache:
            import tifffile

            cache.append(_np_zyx(tifffile.imread(path, series=0), names, label))
        return np.array(cache[0][box])

    return read


def _tiff_voxel_size(tif) -> tuple:
    """(vx, vy, vz) µm from OME-XML, ImageJ metadata or resolution tags; None entries if unknown."""
    if tif.is_ome and tif.ome_metadata:
        return _ome_tiff_voxel_size(tif.ome_metadata)
    page = tif.pages[0]
    ij = tif.imagej_metadata
    if ij is not None:
        # ImageJ writes calibrated stacks with a length unit; 'pixel' or none means uncalibrated.
        factor = _unit_um(ij.get("unit"), None)
        if not factor:
            return (None, None, None)
        vx, vy = _tiff_pixel_size(page)
        vz = ij.get("spacing", 1.0)
        return tuple(None if v is None else float(v) * factor for v in (vx, vy, vz))
    # Plain TIFF: only x and y, and only when the resolution unit is a real length.
    tag = page.tags.get("ResolutionUnit")
    factor = {2: 25400.0, 3: 10000.0}.get(int(tag.value) if tag is not None else 1)
    if factor is None:
        return (None, None, None)
    vx, vy = _tiff_pixel_size(page)
    return (None if vx is None else vx * factor, None if vy is None else vy * factor, None)


def _tiff_pixel_size(page) -> tuple[float | None, float | None]:
    """Pixel width and height in the file's resolution unit (the tags hold pixels per unit)."""
    out = []
    for name in ("XResolution", "YResolution"):
        tag = page.tags.get(name)
        num, den = tag.value if tag is not None else (0, 1)
        out.append(den / num if num else None)
    return out[0], out[1]


def _ome_tiff_voxel_size(xml: str) -> tuple:
    pixels = re.search(r"<(?:\w+:)?Pixels\b[^>]*>", xml)
    out = []
    for axis in "XYZ":
        size = re.search(rf'\bPhysicalSize{axis}="([^"]+)"', pixels.group(0)) if pixels else None
        unit = re.search(rf'\bPhysicalSize{axis}Unit="([^"]+)"', pixels.group(0)) if pixels else None
        factor = _unit_um(unit.group(1) if unit else None, 1.0)  # OME's default unit is µm
        out.append(float(size.group(1)) * factor if size and factor else None)
    return tuple(out)


# --- folder of slices -------------------------------------------------------------------------


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _slice_files(folder: Path) -> list[Path]:
    # Hidden files include macOS "._name.tif" resource forks, which are not images.
    files = [p for p in folder.iterdir() if p.suffix.lower() in _TIFF_SUFFIXES and not p.name.startswith(".")]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _read_plane(path: Path, shape: tuple[int, int], dtype: np.dtype, label: str) -> np.ndarray:
    import tifffile

    try:
        plane = tifffile.imread(path)
    except (OSError, ValueError, IndexError, tifffile.TiffFileError) as e:
        raise VolumeError(f"{label}: cannot read slice {path.name}: {e}") from e
    plane = plane.reshape(plane.shape[-2:]) if plane.size == np.prod(plane.shape[-2:]) else plane
    if plane.shape != shape or plane.dtype != dtype:
        raise VolumeError(
            f"{label}: slice {path.name} is {plane.shape} {plane.dtype}, expected {shape} {dtype} like the first slice"
        )
    return plane


def _open_slices(folder: Path, label: str, given) -> Volume:
    import tifffile

    files = _slice_files(folder) if folder.is_dir() else []
    if not files:
        raise VolumeError(f"{label}: no .tif/.tiff slices in this folder")
    try:
        with tifffile.TiffFile(files[0]) as tif:
            shape, dtype = tif.series[0].shape, tif.series[0].dtype
    except (OSError, ValueError, IndexError, tifffile.TiffFileError) as e:
        raise VolumeError(f"{label}: cannot read slice {files[0].name}: {e}") from e
    plane_shape = tuple(int(n) for n in shape[-2:])
    if len(shape) < 2 or int(np.prod(shape)) != plane_shape[0] * plane_shape[1]:
        raise VolumeError(f"{label}: slice {files[0].name} has shape {tuple(shape)}; slices must be 2D grayscale")

    def read(box: Box) -> np.ndarray:  # only the planes in the box's z range are opened
        zs, ys, xs = box
        planes = [_read_plane(files[k], plane_shape, dtype, label)[ys, xs] for k in range(zs.start, zs.stop)]
        return np.stack(planes)

    # A slice folder records no z spacing, so only an explicit voxel_size counts as known.
    return _make_volume(label, (len(files), *plane_shape), dtype, read, given, None)


# --- chunked formats through tensorstore ----------------------------------------------------


def _first_line(e: BaseException) -> str:
    # tensorstore messages run to several lines and append the whole spec; keep the reason.
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text.split(" [tensorstore_spec=", 1)[0]


def _kvstore_spec(location: str) -> dict:
    """A tensorstore kvstore spec for a folder (the path ends in '/')."""
    if _is_url(location):
        import tensorstore as ts

        try:
            kv = ts.KvStore.Spec(location).to_json()
        except ValueError as e:
            raise VolumeError(f"{location}: not a URL tensorstore can read: {_first_line(e)}") from e
    else:
        kv = {"driver": "file", "path": str(Path(location).resolve())}
    kv["path"] = kv.get("path", "").rstrip("/") + "/"
    return kv


def _kv_join(kv: dict, sub: str) -> dict:
    return {**kv, "path": kv["path"] + sub.strip("/") + "/"}


def _read_json(kv: dict, key: str, label: str) -> dict | None:
    """The JSON object stored under ``key``, or None if the key does not exist."""
    import tensorstore as ts

    try:
        result = ts.KvStore.open(kv).result().read(key).result()
    except ValueError as e:
        raise VolumeError(f"{label}: cannot read {key}: {_first_line(e)}") from e
    if result.state != "value":
        return None
    try:
        value = json.loads(result.value)
    except ValueError as e:
        raise VolumeError(f"{label}: {key} is not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise VolumeError(f"{label}: {key} does not hold a JSON object")
    return value


def _probe(kv: dict, label: str, driver: str | None) -> tuple[str, str, dict]:
    """Find the metadata file: returns (key, tensorstore driver, its JSON)."""
    for key, drv in _PROBES:
        if driver in (None, drv):
            meta = _read_json(kv, key, label)
            if meta is not None:
                return key, drv, meta
    wanted = [k for k, d in _PROBES if driver in (None, d)]
    raise VolumeError(f"{label}: no volume metadata found (looked for {', '.join(wanted)})")


def _open_chunked(kv: dict, label: str, driver: str | None, scale: int, given) -> Volume:
    key, driver, meta = _probe(kv, label, driver)
    try:
        spec, names, found = _layout(kv, key, driver, meta, scale, label)
    except (KeyError, TypeError, IndexError, AttributeError) as e:  # metadata of the wrong shape
        raise VolumeError(f"{label}: malformed {key}: {e!r}") from e
    view = _ts_zyx(_ts_open(spec, label), names, xyz_first=driver == "n5", path=label)
    return _make_volume(label, view.shape, view.dtype.numpy_dtype, _ts_reader(view, label), given, found)


def _layout(kv: dict, key: str, driver: str, meta: dict, scale: int, label: str):
    """(tensorstore spec, axis names or None, voxel size found or None) from a format's metadata."""
    if driver == "neuroglancer_precomputed":
        return _precomputed_layout(kv, meta, scale, label)
    if driver == "n5":
        return _n5_layout(kv, meta, scale, label)
    if key in (".zattrs", ".zgroup") or meta.get("node_type") == "group":
        return _ome_layout(kv, meta, driver, scale, label)
    _no_scales(scale, label, "a plain zarr array")
    return {"driver": driver, "kvstore": kv}, meta.get("dimension_names"), None  # zarr v3 may name axes


def _no_scales(scale: int, label: str, what: str) -> None:
    if scale != 0:
        raise VolumeError(f"{label}: scale {scale} requested but {what} has a single scale")


def _ts_open(spec: dict, label: str):
    import tensorstore as ts

    try:
        return ts.open(spec, read=True).result()
    except ValueError as e:
        raise VolumeError(f"{label}: cannot open as {spec['driver']}: {_first_line(e)}") from e


def _ts_zyx(store, names: Sequence[str] | None, xyz_first: bool, path: str):
    """A zero-origin [z, y, x] tensorstore view with singleton extra axes indexed away."""
    import tensorstore as ts

    names = [str(n or "").lower() for n in (names or store.domain.labels)]
    if len(names) != store.rank or any(a not in names for a in "zyx"):
        names = _positional(store.rank, xyz_first)
    zyx, drop = _axis_plan(names, store.shape, path)
    # Unique labels let tensorstore's dimension expressions (ts.d) address the axes by name.
    labels = [names[i] if i in zyx else f"_{i}" for i in range(store.rank)]
    view = store.translate_to[0][ts.d[:].label[tuple(labels)]]
    if drop:
        view = view[ts.d[tuple(labels[i] for i in drop)][(0,) * len(drop)]]
    return view[ts.d["z", "y", "x"].transpose[:]]


def _ts_reader(view, label: str) -> Reader:
    def read(box: Box) -> np.ndarray:
        try:
            return view[box].read().result()
        except ValueError as e:  # e.g. a corrupt or unreadable chunk
            raise VolumeError(f"{label}: cannot read box {[(s.start, s.stop) for s in box]}: {_first_line(e)}") from e

    return read


def _precomputed_layout(kv: dict, info: dict, scale: int, label: str):
    scales = info.get("scales") or []
    if not 0 <= scale < len(scales):
        raise VolumeError(f"{label}: scale {scale} not found; the precomputed volume has {len(scales)} scales")
    res = scales[scale].get("resolution") or [None] * 3  # nm, x, y, z
    found = tuple(None if r is None else float(r) / 1000.0 for r in res[:3])
    spec = {"driver": "neuroglancer_precomputed", "kvstore": kv, "scale_index": scale}
    return spec, ["x", "y", "z", "channel"], found


def _n5_layout(kv: dict, attrs: dict, scale: int, label: str):
    group, factors = {}, None
    if "dimensions" not in attrs:  # a multiscale group (n5-viewer / BigDataViewer): open s<scale>
        group, sub = attrs, f"s{scale}"
        attrs = _read_json(_kv_join(kv, sub), "attributes.json", label) or {}
        if "dimensions" not in attrs:
            raise VolumeError(f"{label}: N5 group has no dataset '{sub}'")
        kv = _kv_join(kv, sub)
        levels = group.get("downsamplingFactors") or group.get("scales") or []
        factors = attrs.get("downsamplingFactors") or (levels[scale] if scale < len(levels) else None)
    else:
        _no_scales(scale, label, "this N5 dataset")
    names = [str(a).lower() for a in (attrs.get("axes") or group.get("axes") or [])]
    names = names if len(names) == len(attrs["dimensions"]) else _positional(len(attrs["dimensions"]), True)
    # A level's own resolution wins; a group's applies to s0 and is scaled by the level's factors.
    values, units, default = _n5_resolution(attrs)
    if values is None:
        values, units, default = _n5_resolution(group)
        if values is not None and factors is not None:
            values = [v * f for v, f in zip(values, factors)]
    found = _voxel_from_axes(names, values, units, default) if values is not None else None
    return {"driver": "n5", "kvstore": kv}, names, found


def _n5_resolution(attrs: dict):
    """(sizes, units, default µm per unit) from ``pixelResolution`` or ``resolution``/``units``."""
    pr = attrs.get("pixelResolution")
    if isinstance(pr, dict) and isinstance(pr.get("dimensions"), list):
        return pr["dimensions"], [pr.get("unit")] * len(pr["dimensions"]), 1.0  # n5-viewer: µm
    if isinstance(pr, list):
        return pr, [], 1.0
    if isinstance(attrs.get("resolution"), list):
        # Neuroglancer reads a unit-less N5 resolution as nanometres; so do we.
        return attrs["resolution"], attrs.get("units") or [], 1e-3
    return None, [], None


def _ome_layout(kv: dict, attrs: dict, driver: str, scale: int, label: str):
    if attrs.get("node_type") == "group":  # zarr v3: user attributes live under "attributes"
        attrs = attrs.get("attributes", {})
    attrs = attrs.get("ome", attrs)  # OME-Zarr 0.5 nests its metadata under "ome"
    multiscales = attrs.get("multiscales")
    if not multiscales:
        raise VolumeError(f"{label}: zarr group without OME-Zarr 'multiscales' metadata; give the path of an array")
    ms = multiscales[0]
    datasets = ms.get("datasets") or []
    if not 0 <= scale < len(datasets):
        raise VolumeError(f"{label}: scale {scale} not found; the OME-Zarr has {len(datasets)} scales")
    axes = ms.get("axes")  # v0.3: names; v0.4+: objects with name/type/unit; older: absent (t,c,z,y,x)
    values = _ome_scale(datasets[scale], _ome_scale(ms, None))
    rank = len(axes) if axes else len(values) if values else 5
    names = [str(a.get("name") if isinstance(a, dict) else a).lower() for a in axes] if axes else _positional(rank)
    units = [a.get("unit") if isinstance(a, dict) else None for a in axes] if axes else []
    # A missing unit is read as micrometres, the unit nearly every light-microscopy writer uses.
    found = _voxel_from_axes(names, values, units, 1.0) if values else None
    spec = {"driver": driver, "kvstore": _kv_join(kv, str(datasets[scale]["path"]))}
    return spec, names, found


def _ome_scale(node: dict, outer: list[float] | None) -> list[float] | None:
    """The 'scale' of a node's coordinateTransformations, times an enclosing one."""
    for t in node.get("coordinateTransformations") or []:
        if t.get("type") == "scale" and isinstance(t.get("scale"), list):
            return [s * o for s, o in zip(t["scale"], outer)] if outer else list(t["scale"])
    return outer


# --- writers ----------------------------------------------------------------------------------


def _check_3d(array: Any, path: str) -> np.ndarray:
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise VolumeError(f"{path}: expected a 3D [z, y, x] array, got shape {arr.shape}")
    return arr


def write_tiff(path: str | os.PathLike, array: Any, voxel_size: Sequence[float]) -> Path:
    """Write a 3D array as an ImageJ hyperstack TIFF (a label volume: an OME-TIFF) that
    :func:`open_volume` reads back.

    The voxel size is stored the ImageJ way (X/YResolution as pixels per micron, ``spacing``
    for z, ``unit=micron``). ImageJ stores no 32-bit integers, so uint32 (a label volume) is
    written as OME-TIFF instead, the voxel size as ``PhysicalSizeX/Y/Z`` in µm.
    The file is written to a temporary name and renamed, so a crash never leaves a partial
    file. Pixels are uncompressed, so readers can memory-map them.

    Parameters
    ----------
    path : path of the ``.tif`` file; its folder is created if needed.
    array : array_like, shape (nz, ny, nx)
        uint8, uint16, int16 or float32 (the types ImageJ stores), or uint32 labels.
    voxel_size : (vx, vy, vz) in µm

    Returns
    -------
    pathlib.Path

    Raises
    ------
    VolumeError
        For an array that is not 3D, a dtype ImageJ cannot store, or a bad voxel size.
    """
    label = os.fspath(path)
    arr = _check_3d(array, label)
    vx, vy, vz = _check_voxel_size(voxel_size, label)
    if arr.dtype.name not in _IMAGEJ_DTYPES + _LABEL_TIFF_DTYPES:
        kinds = ", ".join(_IMAGEJ_DTYPES + _LABEL_TIFF_DTYPES)
        raise VolumeError(f"{label}: TIFF cannot store {arr.dtype} here; use one of {kinds}, or write_zarr")
    import tifffile

    from .atomic import temporary_beside

    if arr.dtype.name in _IMAGEJ_DTYPES:
        kw = {"imagej": True, "resolution": (1.0 / vx, 1.0 / vy),
              "metadata": {"axes": "ZYX", "spacing": vz, "unit": "micron"}}
    else:
        size = {f"PhysicalSize{a}": v for a, v in zip("XYZ", (vx, vy, vz))}
        kw = {"ome": True, "photometric": "minisblack",
              "metadata": {"axes": "ZYX", **size, **{f"{k}Unit": "µm" for k in size}}}
    path = Path(path)
    with temporary_beside(path) as tmp:
        with open(tmp, "wb") as fh:
            tifffile.imwrite(fh, arr, **kw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    return path


def write_zarr(
    path: str | os.PathLike,
    array: Any,
    voxel_size: Sequence[float],
    chunks: Sequence[int] = (64, 64, 64),
    ome: bool = True,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a 3D array as an OME-Zarr v0.4 image (or a plain zarr v2 array) with tensorstore.

    With ``ome=True`` the result is a zarr v2 group holding one scale, array ``0``, and
    ``multiscales`` metadata with axes z, y, x in micrometres and the voxel size as the scale
    transform. With ``ome=False`` it is a bare zarr v2 array and the voxel size is not recorded.
    Chunks are compressed with Blosc/zstd. Everything is written to a temporary folder beside
    ``path`` and renamed into place at the end.

    Parameters
    ----------
    path : path of the ``.zarr`` folder to create.
    array : array_like, shape (nz, ny, nx)
    voxel_size : (vx, vy, vz) in µm
    chunks : (cz, cy, cx) chunk shape; clipped to the array shape.
    ome : write OME-Zarr metadata (default) or a plain array.
    overwrite : replace ``path`` if it exists.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    VolumeError
        If ``path`` exists and ``overwrite`` is False, or for a bad array or voxel size.
    """
    import shutil

    from .atomic import temporary_beside

    label = os.fspath(path)
    arr = _check_3d(array, label)
    vs = _check_voxel_size(voxel_size, label)
    path = Path(path)
    if path.exists() and not overwrite:
        raise VolumeError(f"{label}: already exists; pass overwrite=True to replace it")
    with temporary_beside(path, folder=True) as tmp:
        _write_zarr_array(tmp / "0" if ome else tmp, arr, chunks)
        if ome:
            (tmp / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
            (tmp / ".zattrs").write_text(json.dumps(ome_attrs(path.stem, [vs]), indent=1))
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        os.replace(tmp, path)
    return path


def _write_zarr_array(folder: Path, arr: np.ndarray, chunks: Sequence[int]) -> None:
    import tensorstore as ts

    spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(folder) + "/"},
            "metadata": zarr_metadata(arr.shape, chunks, arr.dtype)}
    store = ts.open(spec, create=True).result()
    store.write(arr).result()


def zarr_metadata(shape: Sequence[int], chunks: Sequence[int], dtype: Any) -> dict:
    """The zarr v2 ``.zarray`` neurorecon writes: Blosc/zstd chunks (clipped to the shape), fill 0,
    nested chunk keys (OME-Zarr 0.4 requires them)."""
    dtype = np.dtype(dtype)
    return {
        "shape": [int(n) for n in shape],
        "chunks": [max(1, min(int(c), int(n))) for c, n in zip(chunks, shape)],
        "dtype": dtype.str,
        "compressor": {"id": "blosc", "cname": "zstd", "clevel": 5, "shuffle": 1},
        "fill_value": dtype.type(0).item(),
        "dimension_separator": "/",
    }


def ome_attrs(name: str, voxel_sizes: Sequence[Sequence[float]],
              translations: Sequence[Sequence[float]] | None = None) -> dict:
    """OME-Zarr v0.4 ``multiscales`` attributes for datasets ``"0"``, ``"1"``, ... with axes z, y, x
    in micrometres; ``voxel_sizes`` and ``translations`` are ``(x, y, z)`` per level."""
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    datasets = []
    for k, vs in enumerate(voxel_sizes):
        transforms = [{"type": "scale", "scale": [float(v) for v in vs[::-1]]}]
        if translations is not None and any(translations[k]):
            transforms.append({"type": "translation", "translation": [float(v) for v in translations[k][::-1]]})
        datasets.append({"path": str(k), "coordinateTransformations": transforms})
    return {"multiscales": [{"version": "0.4", "name": name, "axes": axes, "datasets": datasets}]}
