"""Render fMOST-like 3D images of fibres from skeletons.

Fibres are drawn along skeleton edges as a line density (sub-voxel trilinear splatting) that is
then blurred once by the fibre's Gaussian cross-section combined with an anisotropic point-spread
function. Beads (varicosities) and dim stretches modulate the line density, a smooth field makes
the background uneven, and Poisson (shot) plus Gaussian (read) noise is added before the image is
scaled to 8 or 16 bits.

Conventions (shared with :mod:`neurorecon.io.volume`): arrays are indexed [z, y, x]; the centre of
voxel [k, j, i] is at physical ``origin + (i*vx, j*vy, k*vz)`` in µm.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..morphology.spatial import cross_pairs, points_along


@dataclass(frozen=True)
class Imaging:
    """One imaging setting.

    Parameters
    ----------
    voxel_size : (vx, vy, vz) in µm.
    psf_sigma : (lateral, axial) Gaussian point-spread sigma in µm; axial is the larger one.
    fibre_sigma : cross-section sigma of a thin fibre in µm (thicker fibres use their radius).
    signal : expected photons at the centre of a fibre of normal brightness.
    background : mean background photons.
    background_variation : relative amplitude of the smooth background field (0 = flat).
    read_noise : Gaussian read-noise sigma in photons.
    bead_rate : varicosities per 10 µm of fibre.
    dim_rate : dim stretches per 100 µm of fibre (each 5-15 µm long, at 25-50% brightness).
    bits : 8 or 16.
    name : a label for reports.
    black_level : photons subtracted before digitising (a detector offset set so that the
        background reads 0, as in many confocal stacks: a near-black, clipped background).
    gain_boost : the gain relative to the default one (above 1: bright fibres saturate at the top
        value, as confocal fibres often do at 254-255).
    """

    voxel_size: tuple[float, float, float] = (0.5, 0.5, 1.0)
    psf_sigma: tuple[float, float] = (0.35, 1.0)
    fibre_sigma: float = 0.35
    signal: float = 60.0
    background: float = 12.0
    background_variation: float = 0.3
    read_noise: float = 2.0
    bead_rate: float = 1.0
    dim_rate: float = 1.0
    bits: int = 8
    name: str = "default"
    black_level: float = 0.0
    gain_boost: float = 1.0

    def __post_init__(self):
        if len(self.voxel_size) != 3 or min(self.voxel_size) <= 0:
            raise ValueError(f"voxel_size must be three positive numbers, got {self.voxel_size}")
        if self.bits not in (8, 16):
            raise ValueError(f"bits must be 8 or 16, got {self.bits}")

    def with_changes(self, **kw) -> "Imaging":
        return replace(self, **kw)


@dataclass(frozen=True)
class Fibres:
    """Skeleton edges to draw: segment ends ``a``, ``b`` (M, 3) µm, radius (M,), brightness (M,)."""

    a: np.ndarray
    b: np.ndarray
    radius: np.ndarray
    brightness: np.ndarray

    @staticmethod
    def from_tree(xyz: np.ndarray, parent: np.ndarray, radius: np.ndarray, brightness: float = 1.0) -> "Fibres":
        has = parent >= 0
        child = np.flatnonzero(has)
        return Fibres(xyz[child], xyz[parent[child]], radius[child], np.full(len(child), float(brightness)))

    @staticmethod
    def concat(items: list["Fibres"]) -> "Fibres":
        items = [f for f in items if len(f.a)]
        if not items:
            z = np.zeros((0, 3))
            return Fibres(z, z, np.zeros(0), np.zeros(0))
        return Fibres(*(np.concatenate([getattr(f, k) for f in items]) for k in ("a", "b", "radius", "brightness")))

    def __len__(self) -> int:
        return len(self.a)


def _modulation(pts: np.ndarray, imaging: Imaging, rng: np.random.Generator, total_length: float) -> np.ndarray:
    """Beads and dim stretches as a function of position, so crossing fibres stay independent."""
    m = np.ones(len(pts))
    if len(pts) == 0:
        return m
    for rate, per, width, amp in ((imaging.bead_rate, 10.0, (0.5, 1.0), (0.8, 2.5)),
                                  (imaging.dim_rate, 100.0, (2.5, 7.0), (-0.75, -0.5))):
        k = rng.poisson(rate * total_length / per)
        if k == 0:
            continue
        centres = pts[rng.integers(0, len(pts), k)]
        w = rng.uniform(*width, k)
        a = rng.uniform(*amp, k)
        i, j, dist = cross_pairs(pts, centres, 3.0 * w.max())
        bump = a[j] * np.exp(-0.5 * (dist / w[j]) ** 2)
        if amp[0] < 0:  # dim stretches multiply, so overlapping ones never go negative
            m *= np.exp(np.bincount(i, np.log1p(bump), minlength=len(pts)))
        else:
            m += np.bincount(i, bump, minlength=len(pts))
    return m


def _splat(vol: np.ndarray, coords: np.ndarray, weights: np.ndarray) -> None:
    """Add ``weights`` at fractional voxel ``coords`` (z, y, x) with trilinear weights."""
    base = np.floor(coords).astype(np.int64)
    frac = coords - base
    shape = np.array(vol.shape)
    flat = vol.reshape(-1)
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                idx = base + (dz, dy, dx)
                w = weights * np.where(dz, frac[:, 0], 1 - frac[:, 0]) * np.where(dy, frac[:, 1], 1 - frac[:, 1]) \
                    * np.where(dx, frac[:, 2], 1 - frac[:, 2])
                ok = np.all((idx >= 0) & (idx < shape), axis=1)
                lin = np.ravel_multi_index(idx[ok].T, vol.shape)
                flat += np.bincount(lin, w[ok], minlength=flat.size).astype(vol.dtype)


def fibre_density(fibres: Fibres, origin: np.ndarray, shape: tuple[int, int, int], imaging: Imaging,
                  rng: np.random.Generator) -> np.ndarray:
    """Noise-free fibre image (float32, [z, y, x]); a horizontal fibre of brightness 1 peaks near 1."""
    from scipy.ndimage import gaussian_filter

    vs = np.asarray(imaging.voxel_size, dtype=float)
    out = np.zeros(shape, dtype=np.float32)
    if len(fibres) == 0:
        return out
    sigma_fibre = np.clip(0.6 * fibres.radius, imaging.fibre_sigma, 1.5)
    thick = sigma_fibre > 2 * imaging.fibre_sigma
    pad = 4.0 * np.sqrt(1.5 ** 2 + imaging.psf_sigma[1] ** 2)
    lo, hi = np.asarray(origin) - pad, np.asarray(origin) + (np.array(shape[::-1]) - 1) * vs + pad
    for cls, sf in ((~thick, imaging.fibre_sigma), (thick, 1.0)):
        sub = Fibres(fibres.a[cls], fibres.b[cls], fibres.radius[cls], fibres.brightness[cls])
        if len(sub) == 0:
            continue
        pts, seg, w = points_along(sub.a, sub.b, 0.3 * vs.min())
        inside = np.all((pts >= lo) & (pts <= hi), axis=1)
        pts, w, seg = pts[inside], w[inside], seg[inside]
        w = w * sub.brightness[seg] * _modulation(pts, imaging, rng, float(w.sum()))
        s_lat = np.hypot(sf, imaging.psf_sigma[0])
        s_ax = np.hypot(sf, imaging.psf_sigma[1])
        # Line density per voxel volume, scaled so that the blurred peak of a horizontal line is ~1.
        w = w * (2 * np.pi * s_lat * s_ax) / vs.prod()
        pad_vox = np.ceil(pad / vs[::-1]).astype(int)
        buf = np.zeros(tuple(np.array(shape) + 2 * pad_vox), dtype=np.float32)
        coords = (pts - origin)[:, ::-1] / vs[::-1] + pad_vox
        _splat(buf, coords, w)
        sigma_vox = np.array([s_ax, s_lat, s_lat]) / vs[::-1]
        buf = gaussian_filter(buf, sigma_vox, truncate=3.0)
        out += (1.5 if sf > imaging.fibre_sigma else 1.0) * buf[tuple(slice(p, p + s) for p, s in zip(pad_vox, shape))]
    return out


def background_field(shape: tuple[int, int, int], imaging: Imaging, rng: np.random.Generator) -> np.ndarray:
    """A smooth, positive background (photons) varying by about ``background_variation``."""
    from scipy.ndimage import zoom

    coarse = rng.normal(0.0, 1.0, (3, 4, 4))
    field = zoom(coarse, np.array(shape) / np.array(coarse.shape), order=1, grid_mode=True, mode="nearest")
    field = field[: shape[0], : shape[1], : shape[2]]
    return (imaging.background * np.clip(1.0 + imaging.background_variation * field, 0.2, None)).astype(np.float32)


def add_noise(fibre: np.ndarray, imaging: Imaging, rng: np.random.Generator) -> np.ndarray:
    """Photons -> noisy counts -> 8- or 16-bit image (bright beads may saturate, as on a real scope)."""
    photons = imaging.signal * fibre + background_field(fibre.shape, imaging, rng)
    counts = rng.poisson(np.maximum(photons, 0)).astype(np.float32)
    counts += rng.normal(0.0, imaging.read_noise, counts.shape).astype(np.float32)
    top = 255 if imaging.bits == 8 else 65535
    # Gain puts a normal fibre at ~40% of the range (8 bit) or ~6% (16 bit, lots of headroom).
    target = 100.0 if imaging.bits == 8 else 4000.0
    gain = imaging.gain_boost * target / (imaging.signal + imaging.background)
    img = np.clip(np.rint((counts - imaging.black_level) * gain), 0, top)
    return img.astype(np.uint8 if imaging.bits == 8 else np.uint16)


def render(fibres: Fibres, origin, shape, imaging: Imaging, rng: np.random.Generator) -> np.ndarray:
    """A noisy fMOST-like image of ``fibres`` in the box whose voxel [0, 0, 0] centre is ``origin`` (µm)."""
    return add_noise(fibre_density(fibres, np.asarray(origin, float), tuple(shape), imaging, rng), imaging, rng)
