"""The browser commands of the ``neurorecon`` CLI: ``review``, ``apply`` and ``view`` (Neuroglancer,
served from 127.0.0.1). They register on :data:`neurorecon.cli.app`; cli.py imports this module
after its own commands, so the shared options and helpers are defined by then."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from . import _interrupt
from .cli import (ConfigOpt, DisableOpt, ForceOpt, ImageOpt, SetOpt, VoxelOpt, _config, _coverage, _exits, _fail, _voxel_size,
                  _writable, app)


# ------------------------------------------------------------------------------ review in a browser
PortOpt = typer.Option(0, "--port", min=0, max=65535, help="Port on 127.0.0.1 (0: any free port).")
OpenOpt = typer.Option(False, "--open", help="Also open the viewer in the default web browser.")


def _open_image(image: str, voxel_size, *, need_voxel_size: bool = True):
    from .io.volume import VolumeError, open_volume

    vs = _voxel_size(voxel_size)
    try:
        volume = open_volume(image, voxel_size=vs)
    except VolumeError as e:
        _fail(str(e))
    if vs is None and not volume.voxel_size_known:
        if need_voxel_size:
            _fail(f"{image}: the voxel size is not recorded in the file; give --voxel-size VX VY VZ")
        typer.echo(f"warning: {image}: no voxel size recorded; showing 1 µm voxels (give --voxel-size)", err=True)
    return volume


def _serve(url: str, open_browser: bool, lock=None) -> None:
    """Print the URL, open a browser if asked, and wait for Ctrl-C or SIGTERM. ``lock`` is held
    while leaving, so that a decision being written is finished first."""
    import signal
    import time

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    _interrupt.raise_keyboard_interrupt()     # Ctrl-C ends the wait below, not the process
    typer.echo(f"viewer: {url}\n(Ctrl-C to stop)")
    sys.stdout.flush()
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    if lock is not None:
        with lock:
            pass


@app.command(epilog=_exits("stopped with Ctrl-C or SIGTERM, every decision saved", "the decisions file could not be written", served=True))
def review(
    trace: Path = typer.Argument(..., help="The trace to proofread (SWC/ESWC, µm)."),
    image: str = ImageOpt,
    voxel_size: Optional[Tuple[float, float, float]] = VoxelOpt,
    scores: Optional[Path] = typer.Option(None, "--scores", metavar="SCORES.csv", help="SCORES.csv from `neurorecon detect`: its flagged nodes are reviewed too."),
    review_file: Optional[Path] = typer.Option(None, "--review", metavar="REVIEW.json", help="The decisions file (default: TRACE.review.json); resumed if it exists."),
    threshold: float = typer.Option(0.5, "--threshold", min=0.0, max=1.0, help="Review detector scores at or above this."),
    port: int = PortOpt,
    open_browser: bool = OpenOpt,
    config: Optional[Path] = ConfigOpt,
    sets: List[str] = SetOpt,
    disable: List[str] = DisableOpt,
    force: bool = ForceOpt,
) -> None:
    """Proofread in Neuroglancer: step through the check findings and detector flags, decide each.

    Keys: n/p next/previous flag, a accept the proposed fix, r reject, e mark as error (note: edit
    the flag's description first), u undo. Every decision is saved to REVIEW.json at once; run
    the command again to resume, then `neurorecon apply`. Detector flags on nodes outside the
    image are not opened; an image holding less than half the trace, or a voxel size that does
    not fit it, is an error unless --force.
    """
    from .io.swc import SwcParseError, read_swc
    from .viewer.flags import ScoresError, drop_uncovered, read_scores
    from .viewer.session import ReviewError

    for path, what in ((trace, "trace"), (scores, "scores file")):
        if path is not None and not path.is_file():
            _fail(f"{path}: no such {what}")
    review_file = review_file or trace.with_suffix(".review.json")
    _writable(review_file, overwrite=True, inputs=[trace, image] + ([scores] if scores else []))
    volume = _open_image(image, voxel_size)
    try:
        neuron = read_swc(trace)
    except SwcParseError as e:
        _fail(str(e))
    cov = _coverage(neuron, volume, force)
    if cov.problem:
        typer.echo(f"warning: going on anyway (--force): {cov.problem}", err=True)
    outside = neuron.ids[~cov.covered].tolist()
    cfg = _config(config, sets, disable, [])
    from .viewer.review import open_review, start_server

    start_server(port)
    try:
        rv = open_review(str(trace), volume, str(review_file), scores=None if scores is None else str(scores),
                         threshold=threshold, config=cfg, uncovered=outside)
        detector = read_scores(scores, neuron, threshold) if scores is not None and outside else []
    except (SwcParseError, ScoresError, ReviewError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{e.filename or review_file}: {e.strerror or e}", 1)
    c = rv.session.counts()
    typer.echo(f"coverage: {cov.summary()}")
    if detector:
        typer.echo(f"{len(detector) - len(drop_uncovered(detector, outside))} detector flags on nodes outside the "
                   "image not opened")
    typer.echo(f"review: {review_file}: {len(rv.session.flags)} flags, {c['undecided']} undecided")
    if rv.session.upgraded_from is not None:
        typer.echo(f"note: {review_file} is a version-{rv.session.upgraded_from} review (one flag per node); it is "
                   "resumed as it is; a new --review file gets one flag per error site")
    _serve(rv.url, open_browser, rv.session.lock)
    c = rv.session.counts()
    typer.echo(f"saved {review_file} ({len(rv.session.flags) - c['undecided']} of {len(rv.session.flags)} decided); "
               f"next: neurorecon apply {trace} {review_file} -o FIXED.swc")


@app.command("apply", epilog=_exits("applied", "an output could not be written"))
def apply_review_cmd(
    trace: Path = typer.Argument(..., help="The reviewed trace (SWC/ESWC)."),
    review_file: Path = typer.Argument(..., help="REVIEW.json from `neurorecon review`."),
    out: Path = typer.Option(..., "-o", "--out", metavar="FIXED.swc", help="Corrected SWC; the edit log (.edits.json) and .apo markers go beside it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Allow replacing existing outputs (or an input, if -o names it)."),
) -> None:
    """Apply the accepted fixes of a review; nodes marked as errors become .apo markers."""
    from .io.swc import SwcParseError
    from .qc.fixes import FixError
    from .viewer.apply import apply_review
    from .viewer.session import ReviewError

    for path, what in ((trace, "trace"), (review_file, "review file")):
        if not path.is_file():
            _fail(f"{path}: no such {what}")
    _writable(out, overwrite=True)    # apply_review refuses existing outputs and inputs, naming each
    try:
        res = apply_review(trace, review_file, out, overwrite=overwrite)
    except (ReviewError, FixError, SwcParseError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{e.filename or out}: {e.strerror or e}", 1)
    s = res.summary
    typer.echo(f"flags seen: {s['flags']}; accepted {s['accept']}, rejected {s['reject']}, "
               f"marked as error {s['error']}, undecided {s['undecided']}")
    if s["median_seconds"] is not None:
        typer.echo(f"active time per decision: median {s['median_seconds']:.1f} s, mean {s['mean_seconds']:.1f} s, "
                   f"total {s['total_active_seconds']:.1f} s (wall median {s['median_wall_seconds']:.1f} s)")
    elif s["median_wall_seconds"] is not None:
        typer.echo(f"time per decision: median {s['median_wall_seconds']:.1f} s wall (no active time in this "
                   "version-1 review)")
    typer.echo(f"{len(res.edits)} edit(s) applied")
    for f, why in res.skipped:
        typer.echo(f"skipped: {f.key}: {why}", err=True)
    typer.echo(f"fixed SWC: {res.paths.swc}\nedit log: {res.paths.log}\nreview markers: {res.paths.apo}")


@app.command(epilog=_exits("stopped with Ctrl-C or SIGTERM", served=True))
def view(
    images: Optional[List[str]] = typer.Argument(None, help="Volumes to show: any format `detect` reads (paths or URLs). What `view` is about, so arguments, not --image."),
    voxel_size: Optional[Tuple[float, float, float]] = typer.Option(None, "--voxel-size", metavar="VX VY VZ", help="Voxel size in µm for every volume (default: from the files)."),
    skeleton: List[Path] = typer.Option([], "--skeleton", metavar="SWC", help="An SWC trace, coloured by node type; repeatable."),
    segmentation: Optional[str] = typer.Option(None, "--segmentation", metavar="VOLUME", help="A label volume (0: background)."),
    port: int = PortOpt,
    open_browser: bool = OpenOpt,
) -> None:
    """Show images, SWC traces and a label volume together in Neuroglancer."""
    from .io.swc import SwcParseError

    images = images or []
    if not images and not skeleton and segmentation is None:
        _fail("give an image, --skeleton SWC or --segmentation VOLUME")
    for p in skeleton:
        if not p.is_file():
            _fail(f"{p}: no such file")
    volumes = [_open_image(i, voxel_size, need_voxel_size=False) for i in images]
    seg = None if segmentation is None else _open_image(segmentation, voxel_size, need_voxel_size=False)
    from .viewer.review import start_server
    from .viewer.view import open_view

    start_server(port)
    try:
        viewer = open_view(volumes, skeleton, seg)
    except SwcParseError as e:
        _fail(str(e))
    _serve(viewer.get_viewer_url(), open_browser)
