"""``make demo``: the proofreader's loop on real neurons, start to end.

1. check the bundled real reconstructions, write JSON and HTML reports, fix them;
2. render an image crop of one of them with tracing errors injected (a held-out imaging setting),
   score its trace with the shipped detector, write the HTML report with image snippets, and
   evaluate the scores against the injected errors;
3. electron microscopy: render an EM-like volume from a bundled crop of the held-out pinky40 block
   in the held-back test style, segment it (the default method), score it against the true labels
   and write PNG overlays (two sections and an x-z cut);
4. print the ``neurorecon review`` command that opens the LM crop in the viewer.

Everything is written under ``--out`` (default ``out/demo``); the bundled files are only read.
Run as ``python -m neurorecon.demo --out out/demo``.
"""

from __future__ import annotations

import argparse
import shlex
from importlib import resources
from pathlib import Path

#: The crop the demo renders: a draw of :func:`neurorecon.detect.dataset.draw_sample` with a
#: held-out imaging setting (crop 2: ``noisy_0.5um``), fixed so that every run shows the same loop.
#: Chosen, before running the detector on it, for a mammalian cell and three kinds of error
#: (jump, off_signal_xy, spur) in a small image (1.8 MB).
CROP_SEED, CROP_NUMBER = 4, 2
CROP_SIZE_UM = (96.0, 96.0, 48.0)
#: The EM part: 32 x 160 x 160 voxels of the held-out pinky40 block (never trained or tuned on),
#: bundled (68 kB; data/demo/README.md), rendered in the style held back from training.
EM_CROP, EM_STYLE, EM_SEED = "pinky40_heldout_crop.npz", "sem", 0


def demo_files() -> list[Path]:
    folder = resources.files("neurorecon") / "data" / "demo"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".swc"))


def check_and_fix(files: list[str], out: Path, console) -> Path:
    """Step 1: the check reports (terminal, ``report.json``, ``html/``) and the fixed files."""
    from .qc import check_paths
    from .qc.fixes import fix_file
    from .qc.html import write_html
    from .qc.report import print_reports, write_json

    console.print(f"[bold]1. check[/] {len(files)} real reconstructions")
    reports = check_paths(files, jobs=2)
    print_reports(reports, console, max_rows=8)
    write_json(reports, out / "report.json")
    index = write_html(reports, out / "html")
    console.print("\n[bold]   fix[/] (conservative; every edit logged for review):")
    for f in files:
        result, paths = fix_file(f, out / "fixed" / Path(f).name, overwrite=True)
        console.print(f"   {Path(f).name}: {len(result.edits)} edit(s); log {paths.log.name}")
    return index


def render_crop(files: list[str], folder: Path) -> tuple[dict, str]:
    """Step 2a: a rendered crop of a bundled neuron with injected errors, written as
    ``crop.tif``, ``crop.swc``, ``crop.labels.csv`` and ``crop.json``; returns its description and
    the neuron's file name."""
    from .detect.dataset import draw_sample
    from .synth.samples import gold_from_neuron, write_sample
    from .io.swc import read_swc

    golds = [gold_from_neuron(read_swc(f, strict=False)) for f in files]
    drawn = draw_sample(golds, CROP_NUMBER, CROP_SEED, heldout=True, size=CROP_SIZE_UM)
    if drawn is None:                 # the draw is fixed; this would be a change in the generator
        raise RuntimeError("the demo crop could not be drawn")
    sample, g = drawn
    return write_sample(sample, folder, "crop"), Path(files[g]).name


def detect_and_evaluate(folder: Path, meta: dict, console) -> tuple[Path, Path, Path, Path]:
    """Step 2b: score the crop's trace, write scores, the HTML report and the evaluation."""
    from .detect.api import detect
    from .detect.evaluate import evaluate_files, format_metrics
    from .detect.report import write_detection_html
    from .io.atomic import atomic_write_text
    from .io.swc import read_swc
    from .io.volume import open_volume

    trace, image = folder / meta["trace"], folder / meta["image"]
    volume = open_volume(image, voxel_size=meta["voxel_size"])
    result = detect(read_swc(trace), volume)
    scores = result.write_csv(folder / "crop.scores.csv", overwrite=True)
    index = write_detection_html(result, trace, volume, folder / "html")
    metrics = format_metrics(evaluate_files(scores, folder / meta["labels"]))
    atomic_write_text(folder / "evaluation.txt", metrics + "\n")
    console.print(f"   detect: {len(result.neuron)} nodes scored, {int(result.flagged.sum())} flagged "
                  f"(p >= {result.threshold})")
    console.print("   evaluation against the injected errors:")
    for line in metrics.splitlines():
        console.print(f"     {line}", highlight=False)
    return trace, image, scores, index


def segment_em(out: Path, console) -> tuple[Path, Path]:
    """Step 4: render, segment, score, draw; returns the picture and the metrics file."""
    import json

    import numpy as np

    from .em.metrics import adapted_rand_error, voi
    from .em.pictures import segmentation_sheet, write_png
    from .em.segment import METHODS, segment
    from .io.atomic import atomic_write_text
    from .synth.em import PINKY40_VOXEL_NM, STYLES, render_em

    with np.load(resources.files("neurorecon") / "data" / "demo" / EM_CROP) as z:
        truth = z["labels"]
    r = render_em(truth, STYLES[EM_STYLE], np.random.default_rng(EM_SEED), PINKY40_VOXEL_NM, defects=())
    vs_um = tuple(v / 1000 for v in PINKY40_VOXEL_NM[::-1])                  # x, y, z in µm
    seg = segment(r.image, vs_um, method=METHODS[0])
    split, merge = voi(seg, truth)
    are = adapted_rand_error(seg, truth)[0]
    folder = out / "em"
    folder.mkdir(parents=True, exist_ok=True)
    picture = write_png(folder / "segmentation.png", segmentation_sheet(r.image, truth, seg))
    scores = {"method": METHODS[0], "style": EM_STYLE, "voxels": int(seg.size), "segments": int(seg.max()),
              "true_objects": int(len(np.unique(truth[truth > 0]))), "voi_split": split, "voi_merge": merge,
              "adapted_rand_error": are}
    metrics = atomic_write_text(folder / "metrics.json", json.dumps(scores, indent=1) + "\n")
    console.print(f"   segment ({METHODS[0]}): {scores['segments']} segments for {scores['true_objects']} true objects; "
                  f"VOI split {split:.2f} + merge {merge:.2f} bits, adapted Rand error {are:.3f}")
    return picture, metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/demo", help="folder for the results (default out/demo)")
    args = ap.parse_args(argv)
    out = Path(args.out)

    from rich.console import Console

    console = Console(soft_wrap=True)      # paths and the review command stay whole, to copy
    files = [str(p) for p in demo_files()]
    console.print("[bold]neurorecon demo[/]: check, fix, detect, review; segment EM\n")
    check_index = check_and_fix(files, out, console)
    folder = out / "detect"
    meta, source = render_crop(files, folder)
    console.print(f"\n[bold]2. detect[/]: a {meta['imaging']} image crop of {source} with {len(meta['errors'])} "
                  f"injected errors ({', '.join(sorted(set(meta['errors'])))})")
    trace, image, scores, detect_index = detect_and_evaluate(folder, meta, console)
    console.print(f"\n[bold]3. segment EM[/]: a {EM_STYLE}-style rendering of held-out pinky40 labels")
    em_picture, em_metrics = segment_em(out, console)
    review = " ".join(["neurorecon", "review", shlex.quote(str(trace)), "--image", shlex.quote(str(image)),
                       "--scores", shlex.quote(str(scores))])
    console.print(f"\n[bold green]done.[/] Results in {out}/:\n"
                  f"  {out / 'report.json'}  findings on the real neurons (machine-readable)\n"
                  f"  {check_index}  check report: projections with every finding marked\n"
                  f"  {out / 'fixed'}/  fixed SWC files, edit logs (.edits.json), Vaa3D markers (.apo)\n"
                  f"  {detect_index}  detector report: flags with image snippets\n"
                  f"  {folder / 'evaluation.txt'}  scores against the injected errors\n"
                  f"  {em_picture}  EM: image, true labels, segmentation, outlines (two sections, an x-z cut)\n"
                  f"  {em_metrics}  EM: VOI and adapted Rand error of the segmentation\n"
                  f"\n[bold]4. review[/] the crop's flags in the viewer (accept or reject each fix):\n"
                  f"  {review}", highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
