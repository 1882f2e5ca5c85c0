"""Stream any volume into a chunked, multiscale OME-Zarr or Neuroglancer precomputed copy.

Whole-brain volumes do not fit in memory, so :func:`convert` works in *units*: boxes of a few
chunks, read, downsampled and written one at a time by a small pool of threads. Memory is set by
the unit size (:data:`UNIT_BYTES`) and the number of units in flight, never by the volume.

* Level 0 is a copy of the source. Each further level halves the axes whose voxels are finest
  (an fMOST stack of 0.3 x 0.3 x 1 µm voxels is halved in x and y until it is about isotropic,
  then in all three), and is computed from the level before it, read back from the output: the
  pyramid costs about 1/7 of a second pass, not a pass per level.
* Images are downsampled by the mean, label volumes (integer types of 32 or 64 bits) by the
  mode, so that no label is invented.
* Every finished unit is appended to a journal inside the output (``.neurorecon-convert.jsonl``,
  flushed and fsynced), together with the plan it belongs to. A conversion that is interrupted
  (killed, out of disk, Ctrl-C) is resumed by running it again: finished units are skipped. The
  journal is removed when the last unit is written, and :func:`~neurorecon.io.volume.open_volume`
  refuses a folder that still has one, so a half-written volume is never read as if it were whole.
  A finished output keeps its plan (``.neurorecon-convert.json``): running the same conversion
  again finds it complete and does nothing.
* A source without a recorded voxel size needs one given: a pyramid of guessed 1 µm voxels
  would be wrong at every level.

Voxel centres follow the package convention (voxel ``[k, j, i]`` at ``(i*vx, j*vy, k*vz)``), so a
coarse voxel made of ``f`` fine ones along an axis is centred ``(f - 1) / 2`` fine voxels in: the
OME-Zarr levels carry that as a ``translation``. Precomputed places voxel corners, not centres, at
multiples of the resolution, which needs no offset.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .volume import _CONVERT_JOURNAL, Volume, VolumeError, _first_line, ome_attrs, open_volume, zarr_metadata

__all__ = ["DONE", "FORMATS", "ConvertReport", "Level", "Plan", "convert", "downsample", "plan_levels"]

FORMATS = ("ome-zarr", "precomputed")
JOURNAL = _CONVERT_JOURNAL
#: The plan of a finished conversion, kept in the output so that a rerun can see it is complete.
DONE = ".neurorecon-convert.json"
#: Bytes a unit reads (its level-0 box, or the finer box it is downsampled from).
UNIT_BYTES = 32 << 20
#: Levels stop once every axis fits in one chunk, or at this many.
MAX_LEVELS = 10
_LABEL_DTYPES = ("uint32", "uint64", "int32", "int64")


@dataclass(frozen=True)
class Level:
    """One resolution level: shape ``(nz, ny, nx)``, the step from the level before it and the
    total factor from level 0 (both ``(z, y, x)``), voxel size ``(vx, vy, vz)`` µm."""

    shape: tuple[int, int, int]
    step: tuple[int, int, int]
    factor: tuple[int, int, int]
    voxel_size: tuple[float, float, float]


@dataclass(frozen=True)
class Plan:
    """Everything that fixes the output, chunk for chunk: a resumed conversion must match it."""

    fmt: str
    dtype: str
    labels: bool
    chunks: tuple[int, int, int]
    levels: tuple[Level, ...]
    source: str

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self)))   # tuples as lists, as they come back from disk


@dataclass
class ConvertReport:
    """What :func:`convert` did."""

    dst: Path
    plan: Plan
    units: int            # work units in all levels
    skipped: int          # finished before (a resumed conversion)
    seconds: float
    source_bytes: int     # size of level 0, uncompressed
    complete_before: bool = False   # the output was finished already: nothing was done

    @property
    def mb_per_s(self) -> float:
        """Level-0 megabytes (10^6 bytes) per second of this run, the pyramid included."""
        done = 1.0 - self.skipped / max(self.units, 1)
        return self.source_bytes * done / 1e6 / max(self.seconds, 1e-9)


def plan_levels(shape: Sequence[int], voxel_size: Sequence[float], chunks: Sequence[int],
                max_levels: int | None = None) -> tuple[Level, ...]:
    """The pyramid for a volume of ``shape`` ``(nz, ny, nx)``.

    An axis is halved at a level when its voxels are at most 1.5 times as long as the finest
    axis's and it is still longer than one chunk; levels stop when no axis is halved or after
    ``max_levels`` (default: until everything fits in a chunk, at most :data:`MAX_LEVELS`).

    Examples
    --------
    >>> [lv.shape for lv in plan_levels((100, 1000, 1000), (0.3, 0.3, 1.0), (64, 64, 64))]
    [(100, 1000, 1000), (100, 500, 500), (100, 250, 250), (50, 125, 125), (50, 63, 63)]
    """
    vs_zyx = np.array(voxel_size[::-1], dtype=float)
    shape = np.array(shape, dtype=np.int64)
    factor = np.ones(3, np.int64)
    levels = [Level(tuple(map(int, shape)), (1, 1, 1), (1, 1, 1), tuple(map(float, voxel_size)))]
    limit = MAX_LEVELS if max_levels is None else max_levels
    while len(levels) < limit:
        cur = vs_zyx * factor
        step = np.where((cur <= 1.5 * cur.min()) & (shape > np.asarray(chunks)), 2, 1)
        if (step == 1).all():
            break
        factor = factor * step
        shape = -(-shape // step)
        levels.append(Level(tuple(map(int, shape)), tuple(map(int, step)), tuple(map(int, factor)),
                            tuple(float(v) for v in (vs_zyx * factor)[::-1])))
    return tuple(levels)


def downsample(block: np.ndarray, step: Sequence[int], labels: bool = False) -> np.ndarray:
    """Reduce ``block`` by ``step`` ``(z, y, x)``: the mean (images) or the mode (labels).

    Axes not divisible by their step are padded by repeating the last plane, which leaves the mean
    of a border voxel the mean of the voxels that exist. The mean is rounded to the nearest
    integer for integer types. The mode breaks ties towards the voxel nearest the box corner.

    Examples
    --------
    >>> downsample(np.array([[[1, 3], [5, 7]]], np.uint8), (1, 2, 2)).tolist()
    [[[4]]]
    >>> downsample(np.array([[[7, 7], [2, 9]]], np.uint32), (1, 2, 2), labels=True).tolist()
    [[[7]]]
    """
    step = tuple(int(s) for s in step)
    pad = [(0, -n % s) for n, s in zip(block.shape, step)]
    if any(p for _, p in pad):
        block = np.pad(block, pad, mode="edge")
    out_shape = [n // s for n, s in zip(block.shape, step)]
    if labels:
        split = block.reshape(out_shape[0], step[0], out_shape[1], step[1], out_shape[2], step[2])
        return _mode(split.transpose(0, 2, 4, 1, 3, 5).reshape(*out_shape, -1))
    # Summed view by view into the narrowest type that cannot overflow: a reduction over the
    # reshaped block in int64 would hold 8 bytes per output voxel and more in temporaries.
    k = math.prod(step)
    acc = np.zeros(out_shape, _accumulator(block.dtype))
    for dz in range(step[0]):
        for dy in range(step[1]):
            for dx in range(step[2]):
                acc += block[dz::step[0], dy::step[1], dx::step[2]]
    if np.issubdtype(block.dtype, np.integer):
        acc += k // 2                                   # round half up; the mean fits the type
        acc //= k
    else:
        acc /= k
    return acc.astype(block.dtype)


def _accumulator(dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.dtype(np.float64)
    if dtype.itemsize <= 2:     # 8 values of 16 bits need 19: 32 bits are plenty
        return np.dtype(np.int32 if dtype.kind == "i" else np.uint32)
    return np.dtype(np.int64 if dtype.kind == "i" else np.uint64)


def _mode(v: np.ndarray) -> np.ndarray:
    """Most frequent value along the last axis (ties: the first), in slabs to bound the k x k
    comparison temporaries."""
    out = np.empty(v.shape[:-1], v.dtype)
    for z in range(v.shape[0]):
        s = v[z]
        counts = (s[..., :, None] == s[..., None, :]).sum(-1)
        out[z] = np.take_along_axis(s, counts.argmax(-1)[..., None], -1)[..., 0]
    return out


# ------------------------------------------------------------------------------------ convert
def convert(src: str | os.PathLike | Volume, dst: str | os.PathLike, *, fmt: str | None = None,
            voxel_size: Sequence[float] | None = None, labels: bool | None = None,
            chunks: Sequence[int] = (64, 64, 64), levels: int | None = None, scale: int = 0,
            overwrite: bool = False, workers: int = 2,
            progress: Callable[[int, int], None] | None = None) -> ConvertReport:
    """Convert ``src`` into a multiscale OME-Zarr or Neuroglancer precomputed volume at ``dst``.

    Parameters
    ----------
    src : path, URL or Volume
        Anything :func:`~neurorecon.io.volume.open_volume` opens, or an open :class:`Volume`
        (e.g. one whose reader generates data on the fly).
    dst : path
        A local folder to create. An interrupted conversion to the same ``dst`` with the same
        plan is resumed; anything else there is refused unless ``overwrite``.
    fmt : {"ome-zarr", "precomputed"}, optional
        Default: ``ome-zarr`` for a ``.zarr`` folder, else ``precomputed``.
    voxel_size : (vx, vy, vz) µm, optional
        Overrides the source's.
    labels : bool, optional
        Downsample by the mode (label volume) rather than the mean; default: integer types of 32
        or 64 bits are labels.
    chunks : (cz, cy, cx)
    levels : int, optional
        Most levels (default: until the volume fits in one chunk).
    scale : int
        Level of a multiscale source to read.
    overwrite : bool
        Delete an existing volume (or an interrupted conversion of something else) at ``dst``.
    workers : int
        Units processed at once.
    progress : callable(done, total), optional
        Called after each unit (``done`` counts units skipped on resume too).

    Returns
    -------
    ConvertReport

    Raises
    ------
    VolumeError
        Unreadable source, a source without a voxel size and none given, ``dst`` exists (and is
        neither a matching interrupted conversion nor the same conversion finished), or bad
        parameters.
    """
    vol = src if isinstance(src, Volume) else open_volume(src, voxel_size, scale=scale)
    if voxel_size is not None and isinstance(src, Volume):
        vol = Volume(vol.path, vol.shape, vol.dtype, tuple(map(float, voxel_size)), True, vol._reader)
    if not vol.voxel_size_known:
        raise VolumeError(f"{vol.path}: the voxel size is not recorded in the file; give it (--voxel-size VX VY VZ, µm)")
    dst = Path(dst)
    plan = _plan(vol, dst, fmt, labels, chunks, levels)
    if not overwrite and _finished_plan(dst) == plan.to_json():
        n = sum(len(_units(plan, k)) for k in range(len(plan.levels)))
        return ConvertReport(dst, plan, n, n, 0.0, math.prod(vol.shape) * np.dtype(plan.dtype).itemsize, True)
    done = _prepare(dst, plan, vol, overwrite)
    _limit_malloc_arenas()
    try:
        return _convert(vol, dst, plan, done, workers, progress)
    except ValueError as e:   # tensorstore's errors: a full disk, an unwritable or corrupted output
        if isinstance(e, VolumeError):
            raise
        raise VolumeError(f"{dst}: {_first_line(e)}") from e


def _convert(vol: Volume, dst: Path, plan: Plan, done: set, workers: int, progress) -> ConvertReport:
    stores = _open_levels(dst, plan)
    units = [(k, box) for k in range(len(plan.levels)) for box in _units(plan, k)]
    t0 = time.perf_counter()
    skipped = sum(1 for k, box in units if (k, box[0]) in done)
    with open(dst / JOURNAL, "a", encoding="utf-8") as journal:
        count = skipped
        if progress:
            progress(count, len(units))
        for k in range(len(plan.levels)):
            todo = [box for kk, box in units if kk == k and (k, box[0]) not in done]
            for lo in _run_level(vol, stores, plan, k, todo, workers):
                _log(journal, k, lo)
                count += 1
                if progress:
                    progress(count, len(units))
    _write_done(dst, plan)
    (dst / JOURNAL).unlink()
    nbytes = math.prod(vol.shape) * np.dtype(plan.dtype).itemsize
    return ConvertReport(dst, plan, len(units), skipped, time.perf_counter() - t0, nbytes)


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (process-wide; a no-op elsewhere).

    Units are tens of MB, allocated and freed by tensorstore's and our threads, each with an arena
    of its own by default; freed blocks then stay mapped, scattered over the arenas. Converting
    the 2 GB benchmark volume to precomputed peaked at 330 MiB that way, at 250 MiB with two
    arenas, at the same speed."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(-8, arenas)   # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _plan(vol: Volume, dst: Path, fmt, labels, chunks, levels) -> Plan:
    fmt = fmt or ("ome-zarr" if dst.suffix.lower() == ".zarr" else "precomputed")
    if fmt not in FORMATS:
        raise VolumeError(f"{dst}: unknown output format {fmt!r}; use one of {', '.join(FORMATS)}")
    chunks = tuple(int(c) for c in chunks)
    if len(chunks) != 3 or min(chunks) < 1:
        raise VolumeError(f"{dst}: chunks must be 3 positive sizes (z, y, x), got {chunks}")
    if levels is not None and levels < 1:
        raise VolumeError(f"{dst}: levels must be at least 1, got {levels}")
    dtype = np.dtype(vol.dtype)
    is_labels = dtype.name in _LABEL_DTYPES if labels is None else bool(labels)
    if fmt == "precomputed" and dtype.name not in ("uint8", "uint16", "uint32", "uint64", "int8", "int16",
                                                   "int32", "float32"):
        raise VolumeError(f"{dst}: Neuroglancer precomputed cannot store {dtype}")
    return Plan(fmt, dtype.name, is_labels, chunks, plan_levels(vol.shape, vol.voxel_size, chunks, levels), vol.path)


def _prepare(dst: Path, plan: Plan, vol: Volume, overwrite: bool) -> set:
    """Create ``dst`` (or find the units an interrupted run of the same plan finished)."""
    src = Path(vol.path) if not vol.path.startswith("<") else None
    if src is not None and src.exists() and _same_or_inside(dst, src):
        raise VolumeError(f"{dst}: the output must not be the source or lie inside it")
    journal = dst / JOURNAL
    if journal.exists() and not overwrite:
        header, done = _read_journal(journal)
        if header == plan.to_json():
            return done
        raise VolumeError(f"{dst}: holds an interrupted conversion with other settings or from another source; "
                          "pass --overwrite to start again")
    if dst.exists():
        if not overwrite:
            raise VolumeError(f"{dst}: already exists; pass --overwrite to replace it")
        _remove_volume(dst)
    dst.mkdir(parents=True)
    _write_metadata(dst, plan)
    with open(journal, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(plan.to_json()) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return set()


def _finished_plan(dst: Path) -> dict | None:
    """The plan a finished conversion at ``dst`` recorded (None: not one, or not finished)."""
    if (dst / JOURNAL).exists():
        return None
    try:
        return json.loads((dst / DONE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_done(dst: Path, plan: Plan) -> None:
    from .atomic import atomic_write_text

    atomic_write_text(dst / DONE, json.dumps(plan.to_json()) + "\n")


def _same_or_inside(dst: Path, src: Path) -> bool:
    d, s = dst.resolve(), src.resolve()
    return d == s or s in d.parents


def _remove_volume(dst: Path) -> None:
    """Delete a volume folder, but only one that looks like a volume: --overwrite pointed at the
    wrong folder must not wipe it."""
    marks = (JOURNAL, DONE, ".zattrs", ".zgroup", ".zarray", "zarr.json", "info", "attributes.json")
    if dst.is_dir() and not any((dst / m).exists() for m in marks):
        raise VolumeError(f"{dst}: exists and is not a volume; not deleting it (choose another output)")
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    else:
        dst.unlink()


def _read_journal(path: Path) -> tuple[dict | None, set]:
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    done = set()
    for line in lines[1:]:
        try:   # the last line may be cut short by the interruption: that unit is redone
            k, *lo = json.loads(line)
            done.add((int(k), tuple(int(v) for v in lo)))
        except (json.JSONDecodeError, ValueError, TypeError):
            continue
    return header, done


def _log(journal, level: int, lo: tuple[int, int, int]) -> None:
    journal.write(json.dumps([level, *lo]) + "\n")
    journal.flush()
    os.fsync(journal.fileno())


# ------------------------------------------------------------------------------------ units
def _unit_shape(plan: Plan, k: int) -> tuple[int, int, int]:
    """Chunk-aligned unit: one chunk deep, grown along x then y while its input stays within
    :data:`UNIT_BYTES` (whole rows and planes where they fit: slice sources read whole planes)."""
    level = plan.levels[k]
    item = np.dtype(plan.dtype).itemsize * math.prod(level.step)
    cz, cy, cx = plan.chunks
    nz, ny, nx = level.shape
    budget = max(UNIT_BYTES // (item * cz), 1)
    ux = min(-(-nx // cx) * cx, max(cx, budget // cy // cx * cx))
    uy = min(-(-ny // cy) * cy, max(cy, budget // ux // cy * cy))
    return cz, uy, ux


def _units(plan: Plan, k: int) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    shape, u = plan.levels[k].shape, _unit_shape(plan, k)
    out = []
    for z in range(0, shape[0], u[0]):
        for y in range(0, shape[1], u[1]):
            for x in range(0, shape[2], u[2]):
                lo = (z, y, x)
                out.append((lo, tuple(min(a + b, n) for a, b, n in zip(lo, u, shape))))
    return out


def _run_level(vol: Volume, stores: list, plan: Plan, k: int, todo: list, workers: int) -> Iterator:
    """Process ``todo`` units of level ``k`` with ``workers`` threads, at most ``2 * workers`` in
    flight (that bounds memory); yields each unit's ``lo`` as it is written."""
    def work(box):
        lo, hi = box
        _store_box(stores[k], lo, hi).write(_unit_data(vol, stores, plan, k, lo, hi)).result()
        return lo

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="neurorecon-convert") as ex:
        pending = []
        for box in todo:
            pending.append(ex.submit(work, box))
            if len(pending) >= 2 * max(1, workers):
                yield pending.pop(0).result()
        for f in pending:
            yield f.result()


def _unit_data(vol: Volume, stores: list, plan: Plan, k: int, lo, hi) -> np.ndarray:
    if k == 0:
        return vol.read(lo, hi)
    step = plan.levels[k].step
    prev = plan.levels[k - 1].shape
    flo = [a * s for a, s in zip(lo, step)]
    fhi = [min(b * s, n) for b, s, n in zip(hi, step, prev)]
    block = _store_box(stores[k - 1], flo, fhi).read().result()
    return downsample(block, step, plan.labels)[tuple(slice(0, b - a) for a, b in zip(lo, hi))]


def _store_box(store, lo, hi):
    return store[tuple(slice(a, b) for a, b in zip(lo, hi))]


# ------------------------------------------------------------------------------------ writing
def _write_metadata(dst: Path, plan: Plan) -> None:
    if plan.fmt == "ome-zarr":
        attrs = ome_attrs(dst.stem, [lv.voxel_size for lv in plan.levels],
                          [_centre_shift(plan.levels[0].voxel_size, lv.factor) for lv in plan.levels])
        (dst / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
        (dst / ".zattrs").write_text(json.dumps(attrs, indent=1))


def _centre_shift(vs0: Sequence[float], factor_zyx: Sequence[int]) -> tuple[float, float, float]:
    return tuple((f - 1) / 2 * v for f, v in zip(factor_zyx[::-1], vs0))


def _open_levels(dst: Path, plan: Plan) -> list:
    """A [z, y, x] tensorstore per level, created (or reopened on resume)."""
    return [(_open_zarr if plan.fmt == "ome-zarr" else _open_precomputed)(dst, plan, k)
            for k in range(len(plan.levels))]


def _open_zarr(dst: Path, plan: Plan, k: int):
    import tensorstore as ts

    metadata = zarr_metadata(plan.levels[k].shape, plan.chunks, plan.dtype)
    spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": f"{dst}/{k}/"}, "metadata": metadata}
    return ts.open(spec, create=True, open=True).result()


def _open_precomputed(dst: Path, plan: Plan, k: int):
    import tensorstore as ts

    level = plan.levels[k]
    scale = {
        "key": str(k), "size": list(level.shape[::-1]), "voxel_offset": [0, 0, 0],
        "resolution": [v * 1000.0 for v in level.voxel_size],
        "chunk_size": [min(c, n) for c, n in zip(plan.chunks[::-1], level.shape[::-1])],
    }  # fmt: skip
    if plan.labels and plan.dtype in ("uint32", "uint64"):
        scale.update(encoding="compressed_segmentation", compressed_segmentation_block_size=[8, 8, 8])
    else:
        scale["encoding"] = "raw"
    spec = {"driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": f"{dst}/"},
            "scale_metadata": scale}
    # Given for every level: without it, adding a scale checks the volume's type against "image".
    spec["multiscale_metadata"] = {"type": "segmentation" if plan.labels else "image",
                                   "data_type": plan.dtype, "num_channels": 1}
    store = ts.open(spec, create=True, open=True).result()
    return store[ts.d["channel"][0]][ts.d["z", "y", "x"].transpose[:]]
