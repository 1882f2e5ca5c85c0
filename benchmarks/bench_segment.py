"""Quality and speed of `neurorecon segment --method watershed` (src/neurorecon/em/watershed.py).

Run from the repository root (about a minute on 2 cores)::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_segment.py

Images are the crude EM-like renderings of tests/test_em_watershed.py (``render_em``) of the
pinky40 labels in ../shared/data/em, 128 x 128 x 16 voxels at 16 x 16 x 40 nm. "tuning" are the six
training crops (x < 256 or y < 256) the defaults of WatershedParams were chosen on; "training,
unseen" a seventh training crop (the tests' sample); "held-out" five crops of the block x >= 256
and y >= 256, which nothing was tuned on. Scores over labelled voxels: VOI split and merge (bits),
adapted Rand error, and the share of true objects of >= 2000 voxels matched by one segment (the
segment overlapping it most covers >= 50% of it and lies >= 50% in it). Speed: the best of three
runs of segment() on a 256 x 256 x 64 training crop.
"""

from __future__ import annotations

import gzip
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_em_watershed import PINKY, VS, crop, matched_share, render_em, voi_arand  # noqa: E402

from neurorecon.em import segment  # noqa: E402

TUNING = [(0, 320, 320), (128, 320, 192), (64, 0, 384), (64, 384, 0), (192, 0, 384), (128, 128, 448)]
UNSEEN = [(0, 384, 256)]
HELDOUT = [(256, 256, 0), (384, 384, 100), (256, 384, 200), (384, 256, 300), (320, 320, 400)]


def held_out_crop(labels, x0, y0, z0, n=128, nz=16):
    assert x0 >= 256 and y0 >= 256
    return np.ascontiguousarray(labels[x0:x0 + n, y0:y0 + n, z0:z0 + nz].transpose(2, 1, 0))


def score(pairs):
    rows = []
    for gt, img in pairs:
        seg = segment(img, VS)
        rows.append((*voi_arand(gt, seg), matched_share(gt, seg)))
    return np.mean(rows, axis=0)


def main() -> None:
    labels = np.load(gzip.open(PINKY))
    sets = {
        "tuning (6 training crops)": [(g, render_em(g, seed=i)) for i, g in enumerate(crop(labels, *c) for c in TUNING)],
        "training, unseen (1 crop)": [(g, render_em(g, seed=21)) for g in (crop(labels, *c) for c in UNSEEN)],
        "held-out (5 crops)": [(g, render_em(g, seed=100 + i))
                               for i, g in enumerate(held_out_crop(labels, *c) for c in HELDOUT)],
    }
    print("| crops | VOI split | VOI merge | adapted Rand error | matched |\n|---|---|---|---|---|")
    for name, pairs in sets.items():
        s, m, a, t = score(pairs)
        print(f"| {name} | {s:.2f} | {m:.2f} | {a:.3f} | {t:.0%} |")
    gt = crop(labels, 0, 256, 0, 256, 256, 64)
    img = render_em(gt, seed=5)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        seg = segment(img, VS)
        times.append(time.perf_counter() - t0)
    s, m, a = voi_arand(gt, seg)
    print(f"\n256 x 256 x 64 voxels: {min(times):.2f} s, {img.size / min(times) / 1e6:.2f} Mvoxels/s "
          f"(runs {', '.join(f'{t:.2f}' for t in times)} s); VOI {s:.2f} + {m:.2f}, ARand {a:.3f}, "
          f"matched {matched_share(gt, seg):.0%}, {seg.max()} segments for {len(np.unique(gt))} true objects")


if __name__ == "__main__":
    main()
