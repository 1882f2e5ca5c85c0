"""The pictures of docs/em_rendering.md (docs/img/em/*.png), from the pinky40 training region.

    PYTHONPATH=src .venv/bin/python docs/dev/em_pictures.py [docs/img/em]

Per style, one PNG (same crop, same seed, no section defects, so only the style differs): top,
the labels of section 20, that section rendered, and section 40; bottom, an x-z cut of labels and
image (z stretched 2.5 times, so that the cut is to scale), and a 2x zoom of section 20. Also a
256 x 256 soma crop (labels and section 20: a nucleus) and a sheet of section defects. Pixels are indexed: 128 grey levels and 128
label colours, which keeps each file near 100 kB.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from neurorecon.em.pictures import colour, grey, palette, sheet, xz
from neurorecon.io.png import encode_png
from neurorecon.synth.em import STYLES, load_pinky40, nucleus_mask, render_em
from neurorecon.synth.em_defects import Defect

T = 160            # tile size (px)
# Training region only (x < 256): neuropil with dendrites, axons and synapses.
CROP = (slice(300, 364), slice(296, 456), slice(40, 200))
SOMA = (slice(150, 214), slice(0, 256), slice(200, 456))       # y < 256: training too


def style_sheet(labels, image, z1=20, z2=40, y=80) -> np.ndarray:
    zoom = np.kron(image[z1, 40:120, 40:120], np.ones((2, 2), np.uint8))
    return sheet([[colour(labels[z1]), grey(image[z1]), grey(image[z2])],
                  [colour(xz(labels, y)), grey(xz(image, y)), grey(zoom)]])


def write(path: Path, pix: np.ndarray) -> None:
    data = encode_png(pix, palette(), bits=8)
    path.write_bytes(data)
    print(f"{path}: {pix.shape[1]} x {pix.shape[0]}, {len(data) / 1000:.0f} kB")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    labels, vs = load_pinky40()
    crop = np.array(labels[CROP])
    for name, style in STYLES.items():
        r = render_em(crop, style, np.random.default_rng(7), vs, defects=())
        write(out / f"{name}.png", style_sheet(crop, r.image))
    soma = np.array(labels[SOMA])
    nuclei = nucleus_mask(labels, vs)
    r = render_em(soma, STYLES["tem"], np.random.default_rng(7), vs, defects=(), nucleus=nuclei[SOMA])
    write(out / "soma_tem.png", sheet([[colour(soma[20]), grey(r.image[20])]]))
    defects = (Defect("smudge", 10, {"depth": 1, "y": 70.0, "x": 90.0, "radius_px": 45.0, "strength": 0.5, "seed": 1}),
               Defect("brightness", 20, {"depth": 1, "gain": 1.3, "offset": 0.03}),
               Defect("blur", 30, {"sigma_px": 2.0}),
               Defect("shift", 40, {"dy": 0, "dx": 2, "to_end": True}),
               Defect("missing", 50), Defect("blank", 56, {"value": 0}))
    clean = render_em(crop, STYLES["tem"], np.random.default_rng(7), vs, defects=())
    got = render_em(crop, STYLES["tem"], np.random.default_rng(7), vs, defects=defects)
    # In-plane defects as sections (top: clean, bottom: with the defect); the ones between
    # sections (a step shift, a missing and a blank section) show in an x-z cut.
    write(out / "defects.png", sheet([[grey(clean.image[d.z]) for d in defects[:3]] + [grey(xz(clean.image, 80))],
                                      [grey(got.image[d.z]) for d in defects[:3]] + [grey(xz(got.image, 80))]]))

if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/img/em"))
