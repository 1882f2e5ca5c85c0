"""The EM renderer (src/neurorecon/synth/em.py): render speed, and the pinky40 training region
against the held-out block (docs/em_rendering.md).

Run from the repository root (about 2 minutes on 2 cores)::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_synth_em.py

1. Shapes: per split, labels, label-0 voxels, in-plane boundary voxels, the soma's share.
2. Speed: render_em on 256 x 256 x 64 crops, every named style and 5 random ones, one process
   (wall and CPU seconds; the nucleus mask of the whole volume made once beforehand, as
   synth-em does).
3. Membrane contrast, the measure of tests/test_synth_em.py (mean grey >= 4 px inside objects
   minus mean grey on in-plane boundaries, no defects), per style on 8 crops of 128 x 128 x 32
   from each split. Nothing was tuned on the held-out block: this only reports it.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage as ndi

from neurorecon.synth.em import (STYLES, EMStyle, load_pinky40, nucleus_mask, pinky40_split, random_crop,
                                 render_em)

SOMA = 25024949


def boundary(lab):
    b = np.zeros(lab.shape, bool)
    for axis in (1, 2):
        d = np.diff(lab, axis=axis) != 0
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        b[tuple(lo)] |= d
        b[tuple(hi)] |= d
    return b


def shapes(labels):
    h = 256
    held = labels[:, h:, h:]
    train = [labels[:, :h, :], labels[:, h:, :h]]          # the training region without overlap
    for name, parts in (("train", train), ("heldout", [held])):
        n = sum(p.size for p in parts)
        ids = np.unique(np.concatenate([np.unique(p[::2, ::2, ::2]) for p in parts]))
        zero = sum(int((p == 0).sum()) for p in parts) / n
        bnd = sum(int(boundary(p[::8]).sum()) for p in parts) / (n / 8)
        soma = sum(int((p == SOMA).sum()) for p in parts) / n
        print(f"{name:8s} {n / 1e6:6.1f} M voxels, >= {len(ids)} labels (every 2nd voxel), label 0 {zero:.2%}, "
              f"in-plane boundary {bnd:.1%}, soma {soma:.1%}")


def contrast(image, lab):
    b = boundary(lab)
    far = np.stack([ndi.distance_transform_edt(~s) for s in b]) >= 4
    inside = far & (lab != 0)
    return image[inside].mean() - image[b].mean()


def main():
    labels, vs = load_pinky40()
    shapes(labels)
    t = time.perf_counter()
    nuclei = nucleus_mask(labels, vs)
    print(f"nucleus mask of the whole volume: {time.perf_counter() - t:.1f} s")

    rng = np.random.default_rng(0)
    regions = pinky40_split(labels, "train")
    styles = list(STYLES.values()) + [EMStyle.random(rng) for _ in range(5)]
    walls, cpus = [], []
    for st in styles:
        crop, origin = random_crop(regions, (64, 256, 256), rng)
        box = tuple(slice(o, o + k) for o, k in zip(origin, crop.shape))
        t, c = time.perf_counter(), time.process_time()
        render_em(crop, st, rng, vs, nucleus=nuclei[box])
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    print(f"render 256 x 256 x 64: wall median {np.median(walls):.2f} s (min {min(walls):.2f}, max {max(walls):.2f}), "
          f"CPU median {np.median(cpus):.2f} s, {len(walls)} volumes")

    crops = {}
    for split in ("train", "heldout"):
        r = np.random.default_rng(1)
        crops[split] = [random_crop(pinky40_split(labels, split), (32, 128, 128), r) for _ in range(8)]
    print("membrane contrast (grey levels), mean over 8 crops: style  train  heldout")
    for st in list(STYLES.values()):
        row = []
        for split in ("train", "heldout"):
            vals = []
            for k, (crop, origin) in enumerate(crops[split]):
                box = tuple(slice(o, o + n) for o, n in zip(origin, crop.shape))
                img = render_em(crop, st, np.random.default_rng(k), vs, defects=(), nucleus=nuclei[box]).image
                vals.append(contrast(img.astype(float), crop))
            row.append(f"{np.mean(vals):6.1f} (min {np.min(vals):5.1f})")
        print(f"  {st.name:6s} {row[0]}  {row[1]}")


if __name__ == "__main__":
    main()
