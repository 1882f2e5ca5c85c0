"""Small indexed PNG pictures of EM volumes, labels and segmentations (no matplotlib).

One palette for all: 128 grey levels for the image, then black and 127 label colours in golden-angle
hue steps (neighbouring label numbers far apart in hue), so that a sheet of image and label tiles is
one 8-bit indexed PNG of about 100 kB. Used by ``make demo`` and the pictures of docs/em_rendering.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.atomic import atomic_write_bytes
from ..io.png import encode_png

GAP = 4


def palette() -> np.ndarray:
    """128 grey levels, then black and 127 colours around the hue circle in golden-angle steps
    (neighbouring indices far apart in hue) at two lightnesses."""
    grey_levels = np.repeat(np.linspace(0, 255, 128).astype(np.uint8)[:, None], 3, axis=1)
    k = np.arange(127)
    hue = (k * 0.618034) % 1.0
    light = np.where(k % 2, 0.55, 0.8)
    rgb = np.stack([np.clip(np.abs((hue * 6 + o) % 6 - 3) - 1, 0, 1) for o in (0, 4, 2)], axis=1)
    colours = (255 * (light[:, None] * (0.35 + 0.65 * rgb))).astype(np.uint8)
    return np.concatenate([grey_levels, [[0, 0, 0]], colours]).astype(np.uint8)


def grey(img: np.ndarray) -> np.ndarray:
    """Palette indices of a uint8 image tile (0..127)."""
    return (np.asarray(img).astype(np.uint16) >> 1).astype(np.uint8)


def colour(lab: np.ndarray) -> np.ndarray:
    """Palette indices of a label tile: its labels numbered in order, so that up to 127 labels
    get distinct colours (0 is black)."""
    ids, inv = np.unique(lab, return_inverse=True)
    idx = (inv.reshape(lab.shape) - (1 if ids[0] == 0 else 0)) % 127 + 1
    idx[lab == 0] = 0
    return (idx + 128).astype(np.uint8)


def outline(img: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """The image tile with each label's boundary drawn in its colour: what a proofreader checks
    (do the segment edges follow the membranes?)."""
    lab = np.asarray(lab)
    edge = np.zeros(lab.shape, bool)
    edge[:-1] |= lab[:-1] != lab[1:]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    return np.where(edge, colour(lab), grey(img))


def xz(a: np.ndarray, y: int, stretch: float = 2.5) -> np.ndarray:
    """The x-z cut at row ``y`` of a (z, y, x) volume, z stretched ``stretch`` times (2.5: 40 nm
    sections beside 16 nm pixels, to scale)."""
    cut = a[:, y, :]
    rows = np.minimum((np.arange(int(round(cut.shape[0] * stretch))) / stretch).astype(int), cut.shape[0] - 1)
    return cut[rows]


def sheet(rows: list[list[np.ndarray]]) -> np.ndarray:
    """Tiles (palette indices) laid out in rows, with white gaps."""
    h = sum(max(t.shape[0] for t in r) for r in rows) + GAP * (len(rows) - 1)
    w = max(sum(t.shape[1] for t in r) + GAP * (len(r) - 1) for r in rows)
    out = np.full((h, w), 127, np.uint8)
    y = 0
    for r in rows:
        x = 0
        for t in r:
            out[y:y + t.shape[0], x:x + t.shape[1]] = t
            x += t.shape[1] + GAP
        y += max(t.shape[0] for t in r) + GAP
    return out


def write_png(path: str | Path, pixels: np.ndarray) -> Path:
    """``pixels`` (palette indices) as an indexed PNG, written atomically; returns the path."""
    return atomic_write_bytes(path, encode_png(pixels, palette(), bits=8))


def segmentation_sheet(image: np.ndarray, truth: np.ndarray, seg: np.ndarray, sections=None, y: int | None = None) -> np.ndarray:
    """A sheet comparing a segmentation with the truth: per section (default: a quarter and three
    quarters of the way through), the image, the true labels, the segmentation and the segmentation's
    outlines on the image; then the same four as x-z cuts at row ``y`` (default: the middle)."""
    nz, ny = image.shape[:2]
    sections = sections if sections is not None else (nz // 4, (3 * nz) // 4)
    y = ny // 2 if y is None else y
    rows = [[grey(image[z]), colour(truth[z]), colour(seg[z]), outline(image[z], seg[z])] for z in sections]
    rows.append([grey(xz(image, y)), colour(xz(truth, y)), colour(xz(seg, y)), outline(xz(image, y), xz(seg, y))])
    return sheet(rows)
