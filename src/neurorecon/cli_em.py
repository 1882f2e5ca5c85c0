"""The electron-microscopy commands of the ``neurorecon`` CLI: ``segment``. They register on
:data:`neurorecon.cli.app`; cli.py imports this module after its own commands, so the shared
options and helpers are defined by then."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional, Tuple

import typer

from .cli import _exits, _fail, _progress, _writable, app


# Choices as enums, so that --help lists them and a wrong value is a usage error naming them.
# They must match neurorecon.em.segment.METHODS and FORMATS (a test checks), which are not
# imported here: that would load numpy and scipy at every start of the CLI.
class Method(str, Enum):
    watershed = "watershed"


class SegFormat(str, Enum):
    tif = "tif"
    zarr = "zarr"
    precomputed = "precomputed"


@app.command(epilog=_exits("segmented", "SEG could not be written"))
def segment(
    image: str = typer.Argument(..., help="The EM stack: 3D TIFF ([z, y, x], uint8 or uint16), slice folder, OME-Zarr/zarr, N5 or Neuroglancer precomputed (path or URL); only read, never modified."),
    voxel_size: Optional[Tuple[float, float, float]] = typer.Option(None, "--voxel-size", metavar="VX VY VZ", help="Voxel size in µm, e.g. 0.016 0.016 0.04 (default: from the file; required where it records none). Sections are resampled in-plane to the method's resolution and back."),
    out: Path = typer.Option(..., "-o", "--out", metavar="SEG", help="Label volume to write, IMAGE's shape, uint32 (uint64 if needed): a .tif file, a .zarr folder (OME-Zarr), or a precomputed folder with --format precomputed."),
    method: Method = typer.Option(Method.watershed, "--method", help="watershed: a plain baseline with no learning (membrane map, distance-transform seeds, seeded watershed, linking of 2D pieces across sections); the default until a learned model ships."),
    fmt: Optional[SegFormat] = typer.Option(None, "--format", help="SEG's format (default: from its suffix, .tif or .zarr)."),
    json_out: Optional[Path] = typer.Option(None, "--json", metavar="FILE", help="Also write a JSON summary (shape, labels, method, settings, time) to FILE (replaced)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing SEG (never IMAGE)."),
) -> None:
    """Segment an EM volume into neurites: one label per neurite, 0 only in blank sections."""
    import json
    import time

    from .em.segment import (SegmentError, check_replaceable, check_voxel_size, segment as run_segment,
                             segmentation_format, write_segmentation)
    from .io.volume import VolumeError, open_volume

    try:
        kind = segmentation_format(out, fmt and fmt.value)
        vs = None if voxel_size is None else check_voxel_size(voxel_size)
    except SegmentError as e:
        _fail(str(e))
    _check_not_input(out, image)
    _writable(out, folder=kind != "tif", overwrite=overwrite, inputs=[image])
    try:
        check_replaceable(out, overwrite)
    except SegmentError as e:
        _fail(str(e))
    if json_out is not None:
        _writable(json_out, overwrite=True, inputs=[image, out])
    try:
        volume = open_volume(image, voxel_size=vs)
    except VolumeError as e:
        _fail(str(e))
    if vs is None:
        if not volume.voxel_size_known:
            _fail(f"{image}: the voxel size is not recorded in the file; give --voxel-size VX VY VZ (µm)")
        try:
            vs = check_voxel_size(volume.voxel_size)
        except SegmentError as e:
            _fail(f"{image}: the file's {e}; give --voxel-size VX VY VZ (µm)")
    advance, stop = _progress(volume.shape[0], "segmenting sections")
    seen = [0]

    def progress(done: int, total: int) -> None:
        advance(done - seen[0])
        seen[0] = done

    t0 = time.perf_counter()
    try:
        labels = run_segment(volume, vs, method=method.value, progress=progress)
    except (SegmentError, VolumeError) as e:
        _fail(str(e))
    finally:
        stop()
    seconds = time.perf_counter() - t0
    try:
        write_segmentation(out, labels, vs, kind, overwrite=overwrite)
    except SegmentError as e:
        _fail(str(e), 1)
    except OSError as e:
        _fail(f"{e.filename or out}: {e.strerror or e}", 1)
    n = int(labels.max())
    nz, ny, nx = labels.shape
    typer.echo(f"{out}: {kind}, {labels.dtype.name}, {n} labels, {nx} x {ny} x {nz} voxels (x, y, z) at "
               f"{vs[0]:g} x {vs[1]:g} x {vs[2]:g} µm")
    typer.echo(f"{method.value}: {seconds:.1f} s ({labels.size / max(seconds, 1e-9) / 1e6:.2f} Mvoxels/s)")
    if json_out is not None:
        from dataclasses import asdict

        from .em.watershed import WatershedParams
        from .io.atomic import atomic_write_text

        report = {"image": image, "out": str(out), "format": kind, "method": method.value,
                  "shape_zyx": list(labels.shape), "voxel_size_um": list(vs), "dtype": labels.dtype.name,
                  "labels": n, "seconds": round(seconds, 3), "settings": asdict(WatershedParams())}
        atomic_write_text(json_out, json.dumps(report, indent=1) + "\n")
        typer.echo(f"JSON: {json_out}")


def _check_not_input(out: Path, image: str) -> None:
    """SEG must not be IMAGE, lie inside it or hold it: --overwrite would replace the input."""
    from .io.volume import _is_url

    if _is_url(image) and not image.lower().startswith("file://"):
        return
    src = Path(image[7:] if image.lower().startswith("file://") else image).resolve()
    dst = out.resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        _fail(f"{out}: is, holds or lies inside the input {image}; choose another output")
