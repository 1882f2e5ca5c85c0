"""Section defects of serial-section EM, for :func:`neurorecon.synth.em.render_em`.

Each defect is a :class:`Defect`: a kind, the first section it touches and every parameter it
needs, drawn up front by :func:`draw_defects`, so that applying it is deterministic and the list
says exactly what was done to which sections. Kinds, in the order they are applied:

``smudge``
    A stain smudge or precipitate: a soft, irregular dark blotch over 1-3 sections.
``brightness``
    A brightness and contrast jump (a section stained or imaged differently) over 1-4 sections.
``blur``
    An out-of-focus section.
``shift``
    A misaligned section ("slip", one section) or a step in the alignment (``to_end``: every
    section from ``z`` on), by 1-2 px in y and/or x. The labels are shifted with the image: the
    shifted image shows the tissue displaced, so the labels of that image are displaced too.
``missing``
    A section lost in cutting: the image holds the previous section again (the next one at z = 0);
    the labels keep the true tissue, which the model has to infer from the neighbours.
``blank``
    A section that was not imaged: one grey value everywhere; the labels keep the true tissue.

The first three act on the noise-free brightness (after the optical blur, before the noise), the
last three on the finished 8-bit stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

__all__ = ["DEFECT_KINDS", "Defect", "apply_brightness_defects", "apply_stack_defects", "draw_defects"]

#: Kinds and how often each is drawn.
DEFECT_WEIGHTS = {"brightness": 3.0, "shift": 2.0, "smudge": 1.5, "missing": 1.0, "blank": 1.0, "blur": 1.0}
DEFECT_KINDS = tuple(DEFECT_WEIGHTS)


@dataclass(frozen=True)
class Defect:
    """One section defect: ``kind``, first section ``z`` (index into the rendered volume) and its
    parameters (see the module docstring for what each kind means)."""

    kind: str
    z: int
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in DEFECT_WEIGHTS:
            raise ValueError(f"unknown defect kind {self.kind!r}; one of {', '.join(DEFECT_KINDS)}")

    def sections(self, nz: int) -> list[int]:
        """The sections of an ``nz``-section volume whose image this defect changes."""
        p = self.params
        if self.kind == "shift":
            stop = nz if p.get("to_end") else self.z + 1
        else:
            stop = self.z + int(p.get("depth", 1))
        return list(range(self.z, min(stop, nz)))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "z": int(self.z), **{k: _plain(v) for k, v in self.params.items()}}


def _plain(v):
    """JSON-ready numbers (numpy scalars are not)."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return round(float(v), 4)
    return v


def draw_defects(shape: tuple[int, int, int], rate: float, rng: np.random.Generator) -> list[Defect]:
    """Draw the section defects of one volume.

    Parameters
    ----------
    shape : (nz, ny, nx) of the volume.
    rate : float
        Mean number of defects per 64 sections (the style's ``defects``).
    rng : numpy.random.Generator

    Returns
    -------
    list of Defect, sorted by section.
    """
    nz, ny, nx = shape
    kinds = np.array(DEFECT_KINDS)
    w = np.array([DEFECT_WEIGHTS[k] for k in kinds])
    count = rng.poisson(rate * nz / 64.0)
    out = []
    for kind in rng.choice(kinds, size=count, p=w / w.sum()):
        out.append(_draw_one(str(kind), nz, ny, nx, rng))
    return sorted(out, key=lambda d: (d.z, d.kind))


def _draw_one(kind: str, nz: int, ny: int, nx: int, rng: np.random.Generator) -> Defect:
    z = int(rng.integers(nz))
    if kind == "brightness":
        return Defect(kind, z, {"depth": int(rng.integers(1, 5)), "gain": float(np.exp(rng.normal(0, 0.18))),
                                "offset": float(rng.normal(0, 0.06))})
    if kind == "smudge":
        r = float(rng.uniform(0.12, 0.4) * min(ny, nx))
        return Defect(kind, z, {"depth": int(rng.integers(1, 4)), "y": float(rng.uniform(0, ny)), "x": float(rng.uniform(0, nx)),
                                "radius_px": r, "strength": float(rng.uniform(0.25, 0.6)), "seed": int(rng.integers(2**31))})
    if kind == "blur":
        return Defect(kind, z, {"sigma_px": float(rng.uniform(1.2, 3.0))})
    if kind == "shift":
        dy, dx = 0, 0
        while dy == 0 and dx == 0:
            dy, dx = (int(v) for v in rng.integers(-2, 3, size=2))
        return Defect(kind, z, {"dy": dy, "dx": dx, "to_end": bool(rng.random() < 0.4)})
    if kind == "missing":
        return Defect(kind, z)
    return Defect(kind, z, {"value": int(rng.choice([0, 0, 128, 255]))})


def apply_brightness_defects(bright: np.ndarray, defects, shape_xy: tuple[int, int]) -> None:
    """Apply the smudge, brightness and blur defects to ``bright`` (z, y, x) float32, in place."""
    nz = bright.shape[0]
    for d in defects:
        zs = d.sections(nz)
        if not zs:
            continue
        p = d.params
        if d.kind == "smudge":
            blot = _smudge(shape_xy, p)
            bright[zs] *= 1.0 - p["strength"] * blot
        elif d.kind == "brightness":
            bright[zs] = bright[zs] * p["gain"] + p["offset"]
        elif d.kind == "blur":
            bright[zs] = ndi.gaussian_filter(bright[zs], (0, p["sigma_px"], p["sigma_px"]), mode="reflect")


def _smudge(shape_xy: tuple[int, int], p: dict) -> np.ndarray:
    """A soft blotch in [0, 1]: a disc whose edge is roughened by smooth noise, and mottled inside
    (a smear of stain is uneven, never a clean disc)."""
    ny, nx = shape_xy
    rng = np.random.default_rng(p["seed"])
    yy, xx = np.ogrid[:ny, :nx]
    r = np.hypot(yy - p["y"], xx - p["x"]) / p["radius_px"]
    rough = ndi.gaussian_filter(rng.standard_normal((ny, nx)).astype(np.float32), max(2.0, p["radius_px"] / 4), mode="wrap")
    rough /= rough.std() + 1e-9
    mottle = ndi.gaussian_filter(rng.standard_normal((ny, nx)).astype(np.float32), 2.0, mode="wrap")
    mottle /= mottle.std() + 1e-9
    blot = 1.0 / (1.0 + np.exp((r + 0.25 * rough - 1.0) * 8.0))
    return (blot * np.clip(0.8 + 0.25 * mottle, 0.3, 1.2)).astype(np.float32)


def apply_stack_defects(image: np.ndarray, labels: np.ndarray, defects) -> None:
    """Apply the shift, missing and blank defects to the uint8 ``image`` and (shifts only) the
    ``labels``, both (z, y, x), in place. Shifts come first, so a later missing section repeats
    its neighbour as it finally stands."""
    nz = image.shape[0]
    order = {"shift": 0, "missing": 1, "blank": 2}
    for d in sorted((d for d in defects if d.kind in order), key=lambda d: (order[d.kind], d.z)):
        zs = d.sections(nz)
        if not zs:
            continue
        if d.kind == "shift":
            image[zs] = shift_sections(image[zs], d.params["dy"], d.params["dx"])
            labels[zs] = shift_sections(labels[zs], d.params["dy"], d.params["dx"])
        elif d.kind == "missing":
            image[d.z] = image[d.z - 1] if d.z > 0 else image[min(1, nz - 1)]
        else:
            image[d.z] = d.params["value"]


def shift_sections(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``a`` (z, y, x) moved by (dy, dx) px within each section; the strip uncovered at the edge
    repeats the edge row or column (the tissue beyond the crop is not known)."""
    py, px = abs(dy), abs(dx)
    padded = np.pad(a, ((0, 0), (py, py), (px, px)), mode="edge")
    ny, nx = a.shape[1:]
    return padded[:, py - dy:py - dy + ny, px - dx:px - dx + nx]
