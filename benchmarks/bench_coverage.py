"""How well the coverage check (src/neurorecon/detect/coverage.py) tells a right voxel size from a
wrong one, on benchmark crops and the DIADEM stacks.

Run from the repository root (a few minutes on 2 cores)::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_coverage.py

What it does: draws the crops `neurorecon synth` would write for five (split, seed, count) sets
(180 crops: held-out seeds 11, 23 and 99, train seeds 5 and 7), adds the five DIADEM stacks of
``../shared/data/lm_real/diadem_opf``, and measures :func:`measure_coverage` on each at its own
voxel size and at that voxel size times 4 and 10 (all axes), 4 in x-y only, 4 in z only, 2, and
0.25. It prints, per case, how many the check stops (``Coverage.problem``): the right voxel size
should never be stopped, the wrong ones as often as possible. "judged" counts the traces with at
least MIN_FIT_NODES nodes inside the image (the fit is not judged below that) or with less than half
inside (coverage alone stops those).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from neurorecon.detect.coverage import MIN_COVERED, MIN_FIT_NODES, measure_coverage
from neurorecon.io.swc import read_swc
from neurorecon.io.volume import open_volume

SETS = (("heldout", 11, 30), ("train", 5, 40), ("heldout", 23, 40), ("heldout", 99, 40), ("train", 7, 30))
FACTORS = ((1, 1, 1), (4, 4, 4), (10, 10, 10), (4, 4, 1), (1, 1, 4), (2, 2, 2), (0.25, 0.25, 0.25))
DIADEM = Path("../shared/data/lm_real/diadem_opf")


def cases():
    """(name, xyz, parent, image array [z, y, x], voxel size) for every crop and stack."""
    from neurorecon.detect.dataset import HELDOUT_SOURCES, TRAIN_SOURCES, draw_sample, load_sources

    for split, seed, n in SETS:
        golds = load_sources(HELDOUT_SOURCES if split == "heldout" else TRAIN_SOURCES)
        for i in range(n):
            drawn = draw_sample(golds, i, seed, split == "heldout")
            if drawn is not None:
                s = drawn[0]
                yield f"{split}/{seed}/{i}", s.trace.xyz, s.trace.parent, s.image, s.imaging.voxel_size
    for swc in sorted(DIADEM.glob("*.swc")):
        neuron, vol = read_swc(swc), open_volume(swc.with_suffix(".tif"))
        yield f"diadem/{swc.stem}", neuron.xyz, neuron.parent, vol.read((0, 0, 0), vol.shape), vol.voxel_size


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    stopped = {f: [0, 0, 0, 0] for f in FACTORS}       # stopped judged, judged, stopped all, all
    hardest = []
    for name, xyz, parent, image, vs in cases():
        for f in FACTORS:
            cov = measure_coverage(xyz, open_volume(image, voxel_size=tuple(np.asarray(vs) * f)), parent)
            judged = cov.n_fit >= MIN_FIT_NODES or cov.fraction < MIN_COVERED
            row = stopped[f]
            row[0] += judged and cov.problem is not None
            row[1] += judged
            row[2] += cov.problem is not None
            row[3] += 1
            if f == (1, 1, 1) and cov.fit_judged:
                hardest.append((cov.fit, cov.fit_t, name))
    print(f"{'voxel size x':16s} {'stopped (judged)':>18s} {'stopped (all)':>15s}")
    for f, (a, b, c, d) in stopped.items():
        print(f"{str(f):16s} {f'{a}/{b}':>18s} {f'{c}/{d}':>15s}")
    print("hardest at the right voxel size (fit, t, case):",
          ", ".join(f"{m:.2f} {t:.2f} {n}" for m, t, n in sorted(hardest)[:3]))


if __name__ == "__main__":
    main()
