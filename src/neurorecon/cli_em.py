"""The EM command of the ``neurorecon`` CLI: ``synth-em`` (EM-like training and test volumes
rendered from the pinky40 segmentation). It registers on :data:`neurorecon.cli.app`; cli.py
imports this module after its own commands, so the shared options and helpers are defined by then."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Tuple

import typer

from .cli import _exits, _fail, _progress, _writable, app
from .cliutil import ImageFormat, Split


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
