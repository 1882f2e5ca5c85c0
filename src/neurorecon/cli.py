"""The ``neurorecon`` command line: parse, call the API, print.

Heavy modules (numpy, scipy, tensorstore) are imported inside the commands so that the CLI
starts fast.

One vocabulary across commands (docs/cli.md is generated from this file by
``python -m neurorecon.clidoc``): the inputs a command works on are arguments; its main output is
``-o/--out``; ``--json FILE`` and ``--html DIR`` write reports (replaced on a rerun); an existing
main output is replaced only with ``--overwrite``; an image a trace was traced in is ``--image``
(``view``'s volumes are what it shows, so they are its arguments); ``--format`` is always a
volume format. Every output is checked to be writable before the work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import typer

from . import __version__, _interrupt
from .cliutil import (FailOn, ImageFormat, Split, VolumeFormat, document_arguments, exit_now as _exit, exits as _exits,
                      print_detection as _print_detection, progress as _progress)

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="neurorecon: check, fix and review neuron reconstructions.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"neurorecon {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                       help="Print the version and exit.")) -> None:
    """neurorecon: check, fix and review neuron reconstructions."""


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"neurorecon: error: {message}", err=True)
    raise typer.Exit(code)


def _writable(path: Path, **kw) -> Path:
    """check_writable, with its refusal as a usage error (before any work is done)."""
    from .io.atomic import WriteError, check_writable

    try:
        return check_writable(path, **kw)
    except WriteError as e:
        _fail(str(e))


def _config(config: Optional[Path], sets: List[str], disable: List[str], only: List[str]):
    from .qc.config import ConfigError, load_config, parse_set_options

    try:
        return load_config(config, parse_set_options(sets), disable, only)
    except ConfigError as e:
        _fail(str(e))


SetOpt = typer.Option([], "--set", metavar="KEY=VALUE", help="Override a threshold (see docs/checks.md); repeatable.")
ConfigOpt = typer.Option(None, "--config", metavar="FILE", help="TOML file with [thresholds], [severity] and disable = [...].")
DisableOpt = typer.Option([], "--disable", metavar="ID", help="Check id to skip; repeatable.")
OnlyOpt = typer.Option([], "--only", metavar="ID", help="Run only this check id; repeatable.")
VoxelOpt = typer.Option(None, "--voxel-size", metavar="VX VY VZ", help="Voxel size in µm (default: from the file).")
ImageOpt = typer.Option(..., "--image", metavar="IMAGE",
                        help="The image the trace was traced in: 3D TIFF, slice folder, OME-Zarr/zarr, N5 or Neuroglancer precomputed (path or URL).")


@app.command(epilog=_exits("nothing at or above --fail-on was found", "something was found, or a file was unreadable"))
def check(
    paths: List[str] = typer.Argument(..., help="SWC/ESWC files, folders or glob patterns."),
    json_out: Optional[str] = typer.Option(None, "--json", metavar="FILE", help="Write the JSON report to FILE (replaced; '-': print it instead of the tables)."),
    html_out: Optional[Path] = typer.Option(None, "--html", metavar="DIR", help="Write an HTML report per neuron into this folder (its pages are replaced)."),
    fail_on: FailOn = typer.Option(FailOn.error, "--fail-on", help="Exit 1 if anything at or above this severity is found."),
    jobs: int = typer.Option(1, "-j", "--jobs", min=1, help="Files checked in parallel."),
    config: Optional[Path] = ConfigOpt,
    sets: List[str] = SetOpt,
    disable: List[str] = DisableOpt,
    only: List[str] = OnlyOpt,
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print only the summary table."),
    max_rows: int = typer.Option(15, "--max-rows", help="Findings shown per file in the terminal."),
) -> None:
    """Check reconstructions for structural, geometric, type and radius errors."""
    from .qc.findings import Severity
    from .qc.run import PathError, expand_paths

    level = Severity.parse(fail_on.value)
    cfg = _config(config, sets, disable, only)
    try:
        files = expand_paths(paths)
    except PathError as e:
        _fail(str(e))
    if json_out and json_out != "-":
        _writable(Path(json_out), overwrite=True, inputs=files)
    if html_out:
        _writable(html_out, folder=True)
    reports = _run_checks(files, cfg, jobs)

    from rich.console import Console

    from .qc.report import exit_code, print_reports, to_json, write_json

    console = Console(soft_wrap=False)
    if json_out == "-":
        typer.echo(to_json(reports))
    else:
        print_reports(reports, console, max_rows=max_rows, details=not quiet)
    if json_out and json_out != "-":
        write_json(reports, json_out)
        console.print(f"JSON report: {json_out}")
    if html_out:
        from .qc.html import write_html

        console.print(f"HTML report: {write_html(reports, html_out)}")
    raise typer.Exit(exit_code(reports, level))


def _run_checks(files, cfg, jobs):
    from .qc.run import check_paths

    if len(files) == 1:
        return check_paths(files, cfg)
    advance, stop = _progress(len(files), "checking")     # drawn on a terminal only (a log gets no blank line)
    try:
        return check_paths(files, cfg, jobs=jobs, on_done=lambda _: advance())
    finally:
        stop()


@app.command(epilog=_exits("fixed (or planned, with --dry-run)", "an output could not be written"))
def fix(
    src: Path = typer.Argument(..., help="SWC/ESWC file to fix (never changed unless -o names it and --overwrite is given)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", metavar="FIXED.swc", help="Fixed SWC, required unless --dry-run; the edit log (.edits.json) and .apo markers go beside it."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan; write nothing."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Allow replacing existing outputs (or the input, if -o names it)."),
    renumber: bool = typer.Option(False, "--renumber", help="Sort parents first and re-index the ids 1..N (default: every node keeps its id)."),
    config: Optional[Path] = ConfigOpt,
    sets: List[str] = SetOpt,
    disable: List[str] = DisableOpt,
) -> None:
    """Apply conservative fixes and log every edit (JSON log + Vaa3D .apo markers)."""
    from .io.swc import SwcParseError
    from .qc.fixes import FixError, fix_file

    if out is None and not dry_run:
        _fail("give -o/--out FILE (or --dry-run)")
    if not src.is_file():
        _fail(f"{src}: no such file")
    if not dry_run:
        _writable(out, overwrite=True)    # fix_file refuses existing outputs, naming each
    cfg = _config(config, sets, disable, [])
    try:
        result, paths = fix_file(src, out or src, cfg, dry_run=dry_run, overwrite=overwrite, renumber=renumber)
    except (FixError, SwcParseError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{e.filename or src}: {e.strerror or e}", 1)

    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"{'planned' if dry_run else 'applied'} edits: {src}", title_justify="left")
    for col in ("#", "action", "check", "nodes", "why"):
        t.add_column(col, overflow="fold")
    for k, e in enumerate(result.edits, start=1):
        t.add_row(str(k), e.action, e.check, ", ".join(map(str, e.node_ids[:4])), e.why)
    console.print(t if result.edits else "nothing to fix")
    if not result.converged:
        console.print("[yellow]stopped after the maximum number of passes; re-check the output[/]")
    if not dry_run:
        console.print(f"fixed SWC: {paths.swc}\nedit log: {paths.log}\nreview markers: {paths.apo}")


# ------------------------------------------------------------------------------ volumes
@app.command(epilog=_exits("converted, or already complete", "the output could not be written"))
def convert(
    src: str = typer.Argument(..., help="3D TIFF, slice folder, OME-Zarr/zarr, N5 or Neuroglancer precomputed (path or URL)."),
    dst_arg: Optional[Path] = typer.Argument(None, metavar="[DST]", help="Deprecated: the output folder as a second argument; give -o/--out DST."),
    dst_opt: Optional[Path] = typer.Option(None, "-o", "--out", metavar="DST", help="Output folder, required: OME-Zarr (a .zarr folder) or Neuroglancer precomputed."),
    fmt: Optional[VolumeFormat] = typer.Option(None, "--format", help="Output format (default: ome-zarr for a .zarr folder, else precomputed)."),
    voxel_size: Optional[Tuple[float, float, float]] = typer.Option(None, "--voxel-size", metavar="VX VY VZ", help="Voxel size in µm; required where the source records none."),
    labels: Optional[bool] = typer.Option(None, "--labels/--no-labels", help="Downsample by the mode (a label volume) or the mean (an image); default: 32/64-bit integers are labels."),
    chunks: Tuple[int, int, int] = typer.Option((64, 64, 64), "--chunks", metavar="CZ CY CX", help="Chunk shape."),
    levels: Optional[int] = typer.Option(None, "--levels", min=1, help="Most pyramid levels (default: until one chunk holds the volume)."),
    scale: int = typer.Option(0, "--scale", min=0, help="Level of a multiscale source to read."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
) -> None:
    """Stream a volume into a multiscale OME-Zarr or precomputed volume; rerun to resume."""
    from .io.convert import convert as run_convert
    from .io.volume import VolumeError

    dst = _convert_dst(dst_arg, dst_opt)
    _writable(dst, folder=True)
    bar = {}

    def progress(done: int, total: int) -> None:
        if not bar:
            if done:
                typer.echo(f"resuming {dst}: {done} of {total} units were done before; skipping them", err=True)
            bar["advance"], bar["stop"] = _progress(total, "converting")
            bar["advance"](done)
        else:
            bar["advance"](1)

    try:
        rep = run_convert(src, dst, fmt=fmt and fmt.value, voxel_size=voxel_size, labels=labels, chunks=chunks,
                          levels=levels, scale=scale, overwrite=overwrite, progress=progress)
    except VolumeError as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{e.filename or dst}: {e.strerror or e}", 1)
    finally:
        if bar:
            bar["stop"]()
    if rep.complete_before:
        typer.echo(f"{dst} is complete ({rep.units} units); nothing to do")
        return
    plan = rep.plan
    kind = "labels (mode)" if plan.labels else "image (mean)"
    typer.echo(f"{dst}: {plan.fmt}, {plan.dtype} {kind}, {len(plan.levels)} levels")
    for k, lv in enumerate(plan.levels):
        typer.echo(f"  {k}: {lv.shape[2]} x {lv.shape[1]} x {lv.shape[0]} voxels (x, y, z) at "
                   f"{lv.voxel_size[0]:g} x {lv.voxel_size[1]:g} x {lv.voxel_size[2]:g} µm")
    resumed = f", resumed: {rep.skipped} of {rep.units} units were done before" if rep.skipped else ""
    typer.echo(f"{rep.source_bytes / 1e6:.1f} MB in {rep.seconds:.1f} s ({rep.mb_per_s:.1f} MB/s){resumed}")


def _convert_dst(dst_arg: Optional[Path], dst_opt: Optional[Path]) -> Path:
    if dst_arg is not None and dst_opt is not None:
        _fail("give the output once: -o/--out DST")
    if dst_arg is None and dst_opt is None:
        _fail("give the output folder: -o/--out DST")
    if dst_arg is not None:
        typer.echo("warning: DST as a second argument is deprecated; give -o/--out DST", err=True)
    return dst_arg or dst_opt


# ------------------------------------------------------------------------------ AI error detection
ForceOpt = typer.Option(False, "--force", help="Go on when the image covers less than half the trace or the voxel "
                        "size does not fit it (nodes outside the image are still not scored).")


@app.command(epilog=_exits("scored", "SCORES.csv could not be written"))
def detect(
    trace: Path = typer.Argument(..., help="The manual trace (SWC/ESWC, µm)."),
    image: str = ImageOpt,
    voxel_size: Optional[Tuple[float, float, float]] = VoxelOpt,
    out: Path = typer.Option(..., "-o", "--out", metavar="SCORES.csv", help="Scores to write: node_id,p_error,flag,reason,x,y,z,fix."),
    threshold: float = typer.Option(0.5, "--threshold", min=0.0, max=1.0, help="Flag nodes with p_error at or above this."),
    html_out: Optional[Path] = typer.Option(None, "--html", metavar="DIR", help="Also write the check report with the flagged nodes and image snippets into this folder."),
    model: Optional[Path] = typer.Option(None, "--model", metavar="DIR", help="A model folder from `neurorecon train` (default: the shipped one)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing SCORES.csv."),
    force: bool = ForceOpt,
) -> None:
    """Score every node of a trace for tracing errors against the image it was traced in.

    Conventions: SWC x, y, z in µm; a 3D image is indexed [z, y, x]; the centre of voxel [k, j, i]
    is at (i*VX, j*VY, k*VZ). Nodes outside the image are not scored (empty p_error); an image
    holding less than half the trace, or a voxel size at which the trace does not lie on the
    image's fibres, is an error unless --force.
    """
    from concurrent.futures import ThreadPoolExecutor

    from .detect.api import DetectError, detect as run_detect
    from .detect.model import ModelError, load_detector
    from .io.swc import SwcParseError, read_swc
    from .io.volume import VolumeError, open_volume

    vs = _voxel_size(voxel_size)
    _writable(out, overwrite=overwrite, inputs=[trace, image] + ([model] if model else []))
    if html_out:
        _writable(html_out, folder=True)
    if not trace.is_file():
        _fail(f"{trace}: no such file")
    if model is not None and not model.is_dir():
        _fail(f"{model}: no such folder")
    try:
        neuron = read_swc(trace)
        volume = open_volume(image, voxel_size=vs)
    except (SwcParseError, VolumeError) as e:
        _fail(str(e))
    if vs is None and not volume.voxel_size_known:
        _fail(f"{image}: the voxel size is not recorded in the file; give --voxel-size VX VY VZ")
    cov = _coverage(neuron, volume, force)
    advance, stop = _progress(len(neuron), "scoring nodes")
    # The model loads (LightGBM's import and the trees' parse, ~0.4 s) in a thread while the
    # features are computed; detect() waits for it when it needs it. The thread starts only after
    # this one's own imports (tensorstore, rich): two threads importing packages at the same time
    # can each find the other's modules half-initialised (an ImportError, now and then).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="neurorecon-model") as ex:
        detector = ex.submit(load_detector, model, without_pandas=True)
        try:
            result = run_detect(neuron, volume, detector=detector, threshold=threshold, progress=advance,
                                force=True, coverage=cov)
        except ModelError as e:
            _fail(str(e))
        finally:
            stop()
    try:
        result.write_csv(out, overwrite=overwrite)
    except (DetectError, OSError) as e:
        _fail(str(e), 1)
    _print_detection(result, out)
    if html_out:
        from .detect.report import write_detection_html

        typer.echo(f"HTML report: {write_detection_html(result, trace, volume, html_out)}")


def _coverage(neuron, volume, force: bool):
    """The image's coverage of the trace (detect/coverage.py); exit 2 with what was found unless forced."""
    from .detect.coverage import measure_coverage

    cov = measure_coverage(neuron.xyz, volume, neuron.parent)
    if cov.problem and not force:
        _fail(f"{cov.problem} (--voxel-size VX VY VZ, --image; --force to go on anyway)")
    return cov


def _voxel_size(values):
    if not values:
        return None
    if len(values) != 3 or min(values) <= 0:
        _fail("--voxel-size takes three positive numbers: VX VY VZ (µm)")
    return tuple(values)


@app.command(epilog=_exits("evaluated"))
def evaluate(
    scores: Path = typer.Argument(..., help="SCORES.csv from `neurorecon detect` (node_id, p_error)."),
    labels: Path = typer.Argument(..., help="LABELS.csv of the same trace (node_id, label[, error_type]), e.g. from `neurorecon synth`."),
    fpr: float = typer.Option(0.014, "--fpr", min=0.0, max=1.0, help="False-positive rate for the recall figure."),
    json_out: Optional[str] = typer.Option(None, "--json", metavar="FILE", help="Write the metrics as JSON to FILE (replaced; '-': print them instead of the table)."),
    partial_labels: bool = typer.Option(False, "--partial-labels", help="Allow LABELS.csv to label only some of the scored nodes (default: both name the same nodes)."),
) -> None:
    """AUC, accuracy at 0.5, recall at a fixed false-positive rate and recall per error type."""
    import json

    from .detect.evaluate import EvaluationError, evaluate_files, format_metrics

    if json_out and json_out != "-":
        _writable(Path(json_out), overwrite=True, inputs=[scores, labels])
    try:
        m = evaluate_files(scores, labels, fpr, partial_labels=partial_labels)
    except EvaluationError as e:
        _fail(str(e))
    text = json.dumps(m.to_dict(), indent=1)
    typer.echo(text if json_out == "-" else format_metrics(m, fpr))
    if json_out and json_out != "-":
        from .io.atomic import atomic_write_text

        atomic_write_text(json_out, text + "\n")
        typer.echo(f"JSON: {json_out}")


@app.command(epilog=_exits("written", "no source neurons were found"))
def synth(
    out: Path = typer.Option(..., "-o", "--out", metavar="DIR", help="Folder for the samples (image, trace .swc, .labels.csv, .json)."),
    n: int = typer.Option(4, "-n", "--n", min=1, help="Number of crops."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same samples."),
    split: Split = typer.Option(Split.heldout, "--split", help="train: training neurons, random imaging; heldout: held-out neurons and settings."),
    fmt: ImageFormat = typer.Option(ImageFormat.tif, "--image-format", help="Image file format: tif (3D TIFF) or zarr (OME-Zarr)."),
    size: Tuple[float, float, float] = typer.Option((80.0, 80.0, 48.0), "--size", metavar="X Y Z", help="Crop size in µm."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace crops already in --out."),
) -> None:
    """Generate benchmark crops: fMOST-like images with manual-like traces and per-node error labels."""
    from .detect.dataset import HELDOUT_SOURCES, TRAIN_SOURCES, draw_sample, load_sources
    from .synth.samples import write_sample

    split, fmt = split.value, fmt.value
    if min(size) < 16:
        _fail("--size takes three numbers of at least 16 µm")
    _writable(out, folder=True)
    if not overwrite and out.is_dir() and any(out.glob("crop_*")):
        _fail(f"{out} already holds crops; pass --overwrite to replace them")
    try:
        golds = load_sources(TRAIN_SOURCES if split == "train" else HELDOUT_SOURCES)
    except FileNotFoundError as e:
        _fail(str(e), 1)
    if not golds:
        _fail("no source neurons found (../shared/data/morphologies, or set NEURORECON_DATA)", 1)
    for i in range(n):
        drawn = draw_sample(golds, i, seed, split == "heldout", tuple(size))
        if drawn is None:
            typer.echo(f"crop {i}: no crop with enough of a neuron in 20 draws; skipped", err=True)
            continue
        sample, _ = drawn
        name = f"crop_{i:04d}"
        write_sample(sample, out, name, fmt)
        typer.echo(f"{out / name}: {len(sample.trace)} nodes, {int(sample.label.sum())} error nodes "
                   f"({', '.join(sample.info['errors']) or 'none'}), {sample.imaging.name}, voxel {sample.imaging.voxel_size}")


@app.command(epilog=_exits("trained", "no source neurons were found"))
def train(
    out: Path = typer.Option(..., "-o", "--out", metavar="DIR", help="Model folder to write (the shipped one is src/neurorecon/detect/models)."),
    n_train: int = typer.Option(1200, "--n-train", min=4, help="Training crops."),
    n_valid: int = typer.Option(150, "--n-valid", min=2, help="Validation crops (early stopping)."),
    n_heldout: int = typer.Option(400, "--n-heldout", min=0, help="Held-out crops to measure (0: skip)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same crops and model."),
    jobs: int = typer.Option(2, "-j", "--jobs", min=1, help="Processes generating crops."),
    rounds: int = typer.Option(200, "--rounds", min=1, help="Most boosting rounds."),
) -> None:
    """Generate the benchmark and train the detector (fixed seeds: same command, same model)."""
    from .detect.evaluate import format_metrics
    from .detect.train import train as run_train

    _writable(out, folder=True)
    total = n_train + n_valid + n_heldout
    advance, stop = _progress(total, "generating crops")
    try:
        rep = run_train(out, n_train=n_train, n_valid=n_valid, n_heldout=n_heldout, seed=seed, jobs=jobs, rounds=rounds,
                        progress=advance)
    except FileNotFoundError as e:
        _fail(str(e), 1)
    finally:
        stop()
    typer.echo(f"trained on {rep.n_train_nodes} nodes in {rep.seconds:.0f} s; model: {out}")
    from .detect.evaluate import Metrics

    for name, m in rep.heldout.items():
        flagged = f"\ncorrect nodes flagged at 0.5 {m['correct_flagged']:.4f}" if "correct_flagged" in m else ""
        typer.echo(f"\nheld-out: {name}\n" + format_metrics(Metrics.from_dict(m)) + flagged)


@app.command("checks", epilog=_exits("listed"))
def list_checks() -> None:
    """List the check ids with their default severity."""
    from .qc.checks import CHECKS

    for spec in CHECKS.values():
        typer.echo(f"{spec.id:22s} {str(spec.severity):8s} {'fix ' if spec.fixable else '    '}{spec.summary}")


# The browser commands (review, apply, view) register themselves on `app`.
from . import cli_review  # noqa: E402,F401
# The electron-microscopy commands (segment, evaluate-seg).
from . import cli_em  # noqa: E402,F401


def command():
    """The click command behind ``app``, with every argument's help (see cliutil.document_arguments)."""
    return document_arguments(typer.main.get_command(app))


def main() -> None:
    """The ``neurorecon`` command (``python -m neurorecon`` installs the Ctrl-C handling before
    this module's imports; it is installed here too for scripts that call main() directly)."""
    _interrupt.install()
    try:
        command()(prog_name="neurorecon")
    except KeyboardInterrupt:
        typer.echo("neurorecon: interrupted", err=True)
        _exit(130)
    except SystemExit as e:       # how typer ends every run, successful or not
        _exit(e.code)


if __name__ == "__main__":
    main()
