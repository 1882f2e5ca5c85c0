"""The electron-microscopy commands of the ``neurorecon`` CLI: ``segment``, ``evaluate-seg`` and
``synth-em``. They register on :data:`neurorecon.cli.app`; cli.py imports this module after its own
commands, so the shared options and helpers are defined by then."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Optional, Tuple

import typer

from .cli import _exits, _fail, _progress, _voxel_size, _writable, app
from .cliutil import ImageFormat, Split


class SwcAxes(str, Enum):
    auto = "auto"
    xyz = "xyz"
    zyx = "zyx"


# (attribute, short column name, decimals shown); the reference's names are in em.skeleton_metrics.COLUMNS.
_ERROR_COLUMNS = (("n_splits", "splits", 0), ("n_merges", "merges", 0), ("split_edges", "split %", 2),
                  ("omit_edges", "omit %", 2), ("merged_edges", "merged %", 2), ("edge_accuracy", "edge acc. %", 2))
_LENGTH_COLUMNS = (("run_length", "run length", 2), ("erl", "ERL", 2), ("normalized_erl", "norm. ERL", 4),
                   ("split_rate", "split rate", 2), ("merge_rate", "merge rate", 2))
_VOLUME_HELP = "3D TIFF, zarr/OME-Zarr, N5, Neuroglancer precomputed, .npy or .npy.gz; indexed [z, y, x]"


def _open_labels(source: str, what: str):
    """A label volume: a numpy array (.npy/.npy.gz, memory-mapped where it can be) or a lazily
    read Volume. Exit 2 with one line for anything that is not a 3D integer volume."""
    from .io.npy import is_npy, load_npy
    from .io.volume import VolumeError, open_volume

    try:
        if is_npy(source):
            vol = load_npy(source)
            if vol.ndim != 3:
                _fail(f"{source}: not a 3D volume (shape {vol.shape}); {what} must be a [z, y, x] label volume")
        else:
            vol = open_volume(source)
    except VolumeError as e:
        _fail(str(e))
    if vol.dtype == bool or not (vol.dtype.kind in "iu"):
        _fail(f"{source}: {what} labels must be integers, not {vol.dtype}")
    return vol


def _whole(vol, source: str):
    """All of a volume, as an array (for the voxel-wise metrics)."""
    import numpy as np

    if isinstance(vol, np.ndarray):
        return vol
    from .io.volume import VolumeError

    try:
        return vol.read((0, 0, 0), vol.shape)
    except VolumeError as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{source}: {e.strerror or e}")


def _plain(value):
    """JSON has no NaN: missing values (no split, no merge, no fragments) are null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def _print_tables(doc: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    vox = doc["voxel"]
    if vox is not None:
        t = Table(title=f"voxel metrics: {doc['seg']} against {doc['gt']}", title_justify="left")
        t.add_column("metric")
        t.add_column("value", justify="right")
        for key, name in (("voi_split", "VOI split (bits)"), ("voi_merge", "VOI merge (bits)"), ("voi", "VOI (bits)"),
                          ("adapted_rand_error", "adapted Rand error"), ("rand_precision", "Rand precision"),
                          ("rand_recall", "Rand recall")):
            t.add_row(name, f"{vox[key]:.4f}")
        console.print(t)
    sk = doc["skeleton"]
    if sk is not None:
        # Two tables of six columns each fit an 80-column terminal; one of eleven would not.
        avg = sk["average"]
        for title, columns in ((f"skeleton errors: {doc['skeletons']}", _ERROR_COLUMNS),
                               ("skeleton run lengths", _LENGTH_COLUMNS)):
            t = Table(title=title, title_justify="left")
            t.add_column("skeleton")
            for _, name, _ in columns:
                t.add_column(name, justify="right")
            for s in sk["skeletons"]:
                t.add_row(s["name"], *(_fmt(s[a], d) for a, _, d in columns))
            t.add_row("average", *("" if a == "run_length" else _fmt(avg[a], 4) for a, _, _ in columns), style="bold")
            console.print(t)
        console.print("average: weighted by run length, as the reference's results_overview.txt")
        total = sk["total"]
        merges = "not counted (give --fragments)" if total["n_merges"] is None else total["n_merges"]
        console.print(f"total: {total['n_splits']} splits, merges: {merges}")


@app.command("evaluate-seg", epilog=_exits("evaluated"))
def evaluate_seg(
    seg: str = typer.Argument(..., help=f"The predicted segmentation ({_VOLUME_HELP}); 0 = unlabelled."),
    gt: Optional[str] = typer.Argument(None, help="Dense ground-truth labels of the same shape, 0 = background (left out of the scores); "
                                                  "may be omitted with --skeletons."),
    skeletons: Optional[Path] = typer.Option(None, "--skeletons", metavar="DIR", help="Ground-truth skeletons: a folder or .zip of SWC files in voxel coordinates."),
    fragments: Optional[Path] = typer.Option(None, "--fragments", metavar="DIR", help="Skeletons of the predicted segments, named <label>.swc (folder or .zip): needed to count merges."),
    swc_axes: SwcAxes = typer.Option(SwcAxes.auto, "--swc-axes", help="The SWC coordinate columns: zyx = array order, xyz = SWC x, y, z index [z, y, x]; auto: as the file's column header says, else xyz."),
    voxel_size: Optional[Tuple[float, float, float]] = typer.Option(None, "--voxel-size", metavar="VX VY VZ", help="Voxel size for the skeleton lengths and merge distances (default: 1 1 1, lengths in voxels)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", metavar="RESULTS.csv", help="Write the per-skeleton metrics as CSV (the reference's results.csv columns)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing RESULTS.csv."),
    json_out: Optional[str] = typer.Option(None, "--json", metavar="FILE", help="Write every metric as JSON to FILE (replaced; '-': print it instead of the tables)."),
) -> None:
    """Score a segmentation: VOI split/merge and adapted Rand error against dense labels (GT), and
    split, merge, omit, ERL and edge accuracy against ground-truth skeletons (--skeletons).

    Conventions: docs/segmentation.md. GT and SEG are compared voxel by voxel with GT 0 left
    out; the skeleton metrics are those of segmentation-skeleton-metrics 5.9 (AllenNeuralDynamics).
    """
    import json

    import numpy as np

    from .em.skeleton_metrics import SkeletonError, read_skeletons, scores_csv, skeleton_metrics, summarize
    from .io.volume import VolumeError

    if gt is None and skeletons is None:
        _fail("give the ground truth: GT (dense labels), --skeletons DIR, or both")
    if fragments is not None and skeletons is None:
        _fail("--fragments counts merges on ground-truth skeletons: give --skeletons DIR too")
    if out is not None and skeletons is None:
        _fail("-o/--out writes the per-skeleton metrics: give --skeletons DIR too")
    vs = _voxel_size(voxel_size) or (1.0, 1.0, 1.0)
    inputs = [p for p in (seg, gt, skeletons, fragments) if p is not None]
    if json_out and json_out != "-":
        _writable(Path(json_out), overwrite=True, inputs=inputs)
    if out is not None:
        _writable(out, overwrite=overwrite, inputs=inputs)

    seg_vol = _open_labels(seg, "SEG")
    gt_vol = _open_labels(gt, "GT") if gt is not None else None
    if gt_vol is not None and tuple(gt_vol.shape) != tuple(seg_vol.shape):
        _fail(f"SEG and GT differ in shape: {tuple(seg_vol.shape)} ({seg}) and {tuple(gt_vol.shape)} ({gt})")
    try:
        gt_skels = read_skeletons(skeletons) if skeletons is not None else None
        frags = read_skeletons(fragments) if fragments is not None else None
    except SkeletonError as e:
        _fail(str(e))

    doc = {"seg": seg, "gt": gt, "skeletons": None if skeletons is None else str(skeletons),
           "fragments": None if fragments is None else str(fragments), "voxel_size": list(vs), "voxel": None, "skeleton": None}
    if gt_vol is not None:
        from .em.metrics import adapted_rand_error, contingency_table, voi

        seg_arr = _whole(seg_vol, seg)
        table = contingency_table(seg_arr, _whole(gt_vol, gt))
        try:
            split, merge = voi(table=table)
            rand = adapted_rand_error(table=table)
        except ValueError as e:
            _fail(f"{gt}: {e}")
        doc["voxel"] = {"voi_split": split, "voi_merge": merge, "voi": split + merge, "adapted_rand_error": rand.error,
                        "rand_precision": rand.precision, "rand_recall": rand.recall, "n_voxels": table.n_voxels,
                        "n_gt_labels": int(np.count_nonzero(table.gt_labels)), "n_seg_labels": int(np.count_nonzero(table.seg_labels))}
        seg_vol = seg_arr      # read once: the skeletons index it too
    if gt_skels is not None:
        try:
            scores = skeleton_metrics(seg_vol, gt_skels, voxel_size=vs, fragments=frags, swc_axes=swc_axes.value)
        except (SkeletonError, VolumeError) as e:
            _fail(str(e))
        doc["skeleton"] = {"skeletons": [s.to_dict() for s in scores], **summarize(scores)}
        if out is not None:
            from .io.atomic import atomic_write_text

            atomic_write_text(out, scores_csv(scores))
    text = json.dumps(_plain(doc), indent=1)
    if json_out == "-":
        typer.echo(text)
    else:
        _print_tables(doc)
    if json_out and json_out != "-":
        from .io.atomic import atomic_write_text

        atomic_write_text(json_out, text + "\n")
        typer.echo(f"JSON: {json_out}")
    if out is not None and json_out != "-":
        typer.echo(f"CSV: {out}")


# ------------------------------------------------------------------------------ EM-like volumes
# The names of neurorecon.synth.em.STYLES (that module imports numpy and scipy, too slow for the
# CLI's start; tests/test_synth_em.py checks the two agree).
class EMStyleName(str, Enum):
    random = "random"
    tem = "tem"
    faint = "faint"
    dense = "dense"
    noisy = "noisy"
    sem = "sem"


HELDOUT_STYLE = "sem"


@app.command("synth-em", epilog=_exits("written", "the pinky40 labels were not found"))
def synth_em(
    out: Path = typer.Option(..., "-o", "--out", metavar="DIR", help="Folder for the volumes (image, labels and a .json each)."),
    n: int = typer.Option(4, "-n", "--n", min=1, help="Number of volumes."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same volumes (volume k does not depend on -n)."),
    split: Split = typer.Option(Split.train, "--split", help="train: crops of pinky40 outside the held-out block; heldout: crops of the block x >= 256, y >= 256 (test only)."),
    size: Tuple[int, int, int] = typer.Option((256, 256, 64), "--size", metavar="X Y Z", help="Volume size in voxels (16 x 16 x 40 nm); x, y at least 32, z at least 4."),
    style: EMStyleName = typer.Option(EMStyleName.random, "--style", help=f"Look of the images: random draws a jittered training style per volume; {HELDOUT_STYLE} is held out (test only: --split heldout)."),
    fmt: ImageFormat = typer.Option(ImageFormat.tif, "--format", help="File format of image and labels: tif (3D TIFF) or zarr (OME-Zarr)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace volumes already in --out."),
) -> None:
    """Render serial-section-EM-like volumes from a real dense segmentation (pinky40), with labels."""
    sx, sy, sz = size
    split, style_name, fmt = split.value, style.value, fmt.value
    if min(sx, sy) < 32 or sz < 4:
        _fail(f"--size {sx} {sy} {sz}: x and y must be at least 32 voxels, z at least 4")
    if style_name == HELDOUT_STYLE and split == "train":
        _fail(f"the {HELDOUT_STYLE} style is held out for testing; use it with --split heldout")
    if not _fits(split, (sz, sy, sx)):
        _fail(f"--size {sx} {sy} {sz}: no crop that size fits the {split} region of pinky40 "
              + ("(x < 256 or y < 256 of 512 x 512 x 512: at most 512 x 256 or 256 x 512 in x, y; 512 in z)" if split == "train"
                 else "(x >= 256 and y >= 256: at most 256 x 256 x 512)"))
    _writable(out, folder=True)
    if not overwrite and out.is_dir() and any(out.glob("em_*")):
        _fail(f"{out} already holds volumes; pass --overwrite to replace them")

    import numpy as np

    from .synth.em import STYLES, EMStyle, load_pinky40, nucleus_mask, pinky40_split, random_crop, render_em, write_em

    try:
        labels, voxel_nm = load_pinky40()
    except FileNotFoundError as e:
        _fail(str(e), 1)
    regions = pinky40_split(labels, split)
    nuclei = nucleus_mask(labels, voxel_nm)      # of the whole volume: a crop of the soma gets its part
    advance, stop = _progress(n, "rendering")
    try:
        for i in range(n):
            rng = np.random.default_rng([seed, i])
            crop, origin = random_crop(regions, (sz, sy, sx), rng)
            look = EMStyle.random(rng) if style_name == "random" else STYLES[style_name]
            box = tuple(slice(o, o + k) for o, k in zip(origin, crop.shape))
            result = render_em(crop, look, rng, voxel_nm, nucleus=nuclei[box])
            name = f"em_{i:04d}"
            info = {"source": "pinky40", "split": split, "seed": seed, "index": i,
                    "origin_zyx": [int(v) for v in origin], "size_xyz": [sx, sy, sz]}
            write_em(result, out, name, fmt, voxel_nm, info)
            defects = ", ".join(f"{d.kind} z {d.z}" for d in result.defects) or "none"
            typer.echo(f"{out / name}: {sx} x {sy} x {sz} at x {origin[2]}, y {origin[1]}, z {origin[0]} ({split}), "
                       f"style {look.name}, {len(np.unique(crop))} labels, defects: {defects}")
            advance()
    finally:
        stop()


def _fits(split: str, size_zyx) -> bool:
    """Whether a crop of size_zyx fits the split's boxes (pinky40's shape is fixed: no need to
    read 512 MB to refuse a bad --size)."""
    nz, ny, nx = 512, 512, 512
    h = 256
    boxes = [(nz, ny - h, nx - h)] if split == "heldout" else [(nz, h, nx), (nz, ny, h)]
    return any(all(s <= b for s, b in zip(size_zyx, box)) for box in boxes)


# ------------------------------------------------------------------------------ segment
# Choices as enums, so that --help lists them and a wrong value is a usage error naming them.
# They must match neurorecon.em.segment.METHODS and FORMATS (a test checks), which are not
# imported here: that would load numpy and scipy at every start of the CLI.
class Method(str, Enum):
    watershed = "watershed"
    affinities = "affinities"


class SegFormat(str, Enum):
    tif = "tif"
    zarr = "zarr"
    precomputed = "precomputed"


@app.command(epilog=_exits("segmented", "SEG could not be written"))
def segment(
    image: str = typer.Argument(..., help="The EM stack: 3D TIFF ([z, y, x], uint8 or uint16), slice folder, OME-Zarr/zarr, N5 or Neuroglancer precomputed (path or URL); only read, never modified."),
    voxel_size: Optional[Tuple[float, float, float]] = typer.Option(None, "--voxel-size", metavar="VX VY VZ", help="Voxel size in µm, e.g. 0.016 0.016 0.04 (default: from the file; required where it records none). Sections are resampled in-plane to the method's resolution and back."),
    out: Path = typer.Option(..., "-o", "--out", metavar="SEG", help="Label volume to write, IMAGE's shape, uint32 (uint64 if needed): a .tif file, a .zarr folder (OME-Zarr), or a precomputed folder with --format precomputed."),
    method: Method = typer.Option(Method.watershed, "--method", help="watershed (default): a plain baseline with no learning (membrane map, distance-transform seeds, seeded watershed, linking of 2D pieces across sections). affinities: a small 3D U-Net's affinities, then fragments and mean-affinity agglomeration; a first model, not yet better than watershed on held-out data (docs/segmentation.md)."),
    model: Optional[Path] = typer.Option(None, "--model", metavar="PT", help="With --method affinities: the model's weights (a .pt with its .json beside it, as `neurorecon train-seg` writes; default: the shipped model)."),
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
    if model is not None and method is not Method.affinities:
        _fail("--model is for --method affinities")
    if model is not None and not model.is_file():
        _fail(f"{model}: no such file")
    advance, stop = _progress(volume.shape[0], "segmenting sections")
    seen = [0]

    def progress(done: int, total: int) -> None:
        # Sections (watershed) or tiles (affinities), shown as the share of the sections done.
        now = int(volume.shape[0] * done / max(total, 1))
        advance(now - seen[0])
        seen[0] = now

    t0 = time.perf_counter()
    try:
        params = {"model": model} if model is not None else {}
        labels = run_segment(volume, vs, method=method.value, progress=progress, **params)
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


# ------------------------------------------------------------------------------ train-seg
@app.command("train-seg", epilog=_exits("trained and written", "the pinky40 labels were not found"))
def train_seg(
    out: Path = typer.Option(..., "-o", "--out", metavar="DIR", help="Folder for the model: affinities.pt (weights) and affinities.json (settings, validation record)."),
    steps: int = typer.Option(2000, "--steps", min=1, help="Training steps (each a batch of freshly rendered patches)."),
    seed: int = typer.Option(0, "--seed", help="Seed of everything random (patches, styles, augmentation, initial weights): same seed, same model."),
    batch: int = typer.Option(1, "--batch", min=1, help="Patches per step."),
    patch: Tuple[int, int, int] = typer.Option((128, 128, 16), "--patch", metavar="X Y Z", help="Patch size in voxels (16 x 16 x 40 nm); x and y multiples of 4, z at most 64."),
    base: int = typer.Option(16, "--base", min=2, help="Channels of the U-Net's first level (then 2x and 4x)."),
    lr: float = typer.Option(1e-3, "--lr", min=1e-6, max=1.0, help="Adam learning rate (cosine decay to 5 % over the last 30 % of the steps)."),
    validate_every: int = typer.Option(250, "--validate-every", min=1, help="Steps between validation rounds (each also saves the weights)."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", min=0.1, help="Stop and save after this much wall time, whatever --steps says."),
    threads: int = typer.Option(2, "--threads", min=1, help="CPU threads for torch."),
    json_out: Optional[Path] = typer.Option(None, "--json", metavar="FILE", help="Write the training record (settings, losses, validation) as JSON to FILE."),
) -> None:
    """Train the affinity U-Net on EM rendered on the fly from the pinky40 training region (never the held-out block or style)."""
    px, py, pz = patch
    if px % 4 or py % 4 or min(px, py) < 8 or not 1 <= pz <= 64:
        _fail(f"--patch {px} {py} {pz}: x and y must be multiples of 4 (at least 8), z 1-64")
    if px > 240 or py > 240:
        _fail(f"--patch {px} {py} {pz}: x and y at most 240 (with the 8-pixel warp margin a patch must fit the 256-wide training boxes)")
    _writable(out, folder=True)
    if json_out is not None:
        _writable(json_out, overwrite=True)
    import json

    from .em.train_seg import train_affinity_model

    try:
        from .synth.em import load_pinky40

        labels, _ = load_pinky40()
    except FileNotFoundError as e:
        _fail(str(e), 1)
    try:
        record = train_affinity_model(out, steps=steps, seed=seed, batch=batch, patch=(pz, py, px), base=base, lr=lr,
                                      validate_every=validate_every, max_minutes=max_minutes, labels=labels,
                                      num_threads=threads, log=lambda s: typer.echo(s))
    except ValueError as e:
        _fail(str(e))
    typer.echo(f"model: {out / 'affinities.pt'}")
    if json_out is not None:
        from .io.atomic import atomic_write_text

        atomic_write_text(json_out, json.dumps(record, indent=1) + "\n")
        typer.echo(f"JSON: {json_out}")
