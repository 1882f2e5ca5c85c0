"""Serial-section-EM-like images rendered from real dense segmentations.

The shapes come from a real segmentation (pinky40: 512^3 voxels of mouse visual cortex at
16 x 16 x 40 nm, see :func:`load_pinky40`); only the look is synthetic, so a model trained on
the images sees real neurite geometry. :func:`render_em` draws, from the labels alone:

* cytoplasm whose tone differs between objects, with fine texture (filtered noise), dark specks
  (ribosomes, microtubules seen end-on) and slow variation along each object;
* membranes at every label boundary, their width and darkness varying between objects and along
  each membrane; where a membrane lies in the section plane (the label changes between sections
  but not within them) it shows as a wider grey smear, as it does in a 40 nm thick section;
* extracellular space where the label is 0;
* a nucleus (pale, clumped chromatin, dark envelope) in objects thick enough to be a soma;
* mitochondria: dark elongated bodies with cristae, inside objects, along each neurite's axis;
* synapses: a vesicle cloud against a membrane and a postsynaptic density across it;
* uneven illumination, an in-plane blur larger than the one across sections (each section is
  imaged on its own; only its thickness mixes depths), Poisson (electron) and Gaussian noise, and
  scan-line noise in the SEM-like style;
* section defects (:mod:`neurorecon.synth.em_defects`), listed with their sections.

An :class:`EMStyle` holds every parameter of the look. :data:`STYLES` names a few; one,
:data:`HELDOUT_STYLE`, is for testing only: :meth:`EMStyle.random` (training) never draws it,
nor anything with its scan-line noise. Arrays are (z, y, x), like TIFF stacks; the pinky40 file
is stored (x, y, z) and is transposed on loading.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..io.shared import shared_data_dir
from .em_defects import Defect, apply_brightness_defects, apply_stack_defects, draw_defects

__all__ = ["EMRender", "EMStyle", "HELDOUT_STYLE", "PINKY40_VOXEL_NM", "Region", "STYLES", "TRAIN_STYLES",
           "crop_fits", "load_pinky40", "nucleus_mask", "pinky40_split", "random_crop", "relabel_sequential", "render_em", "write_em"]

PINKY40_FILE = Path("em") / "pinky40_labels_512.npy.gz"
#: pinky40's shape, (z, y, x), and voxel size in nm, (z, y, x).
PINKY40_SHAPE = (512, 512, 512)
PINKY40_VOXEL_NM = (40.0, 16.0, 16.0)
#: The held-out block is x >= HELDOUT_FROM and y >= HELDOUT_FROM (file axes), all z.
HELDOUT_FROM = 256


# ------------------------------------------------------------------------------------ the data
def load_pinky40(data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The pinky40 dense segmentation as a read-only (z, y, x) uint32 array, and its voxel size.

    Parameters
    ----------
    data_dir : path, optional
        The shared data folder (holding ``em/pinky40_labels_512.npy.gz``); default
        $NEURORECON_DATA or ``../shared/data`` beside the repository.

    Returns
    -------
    labels : ndarray of uint32, shape (512, 512, 512), (z, y, x), read-only; 0 is unlabelled
        (extracellular space).
    voxel_size_nm : (40.0, 16.0, 16.0), (z, y, x).

    Raises
    ------
    FileNotFoundError
        If the file is not there.
    """
    folder = Path(data_dir) if data_dir is not None else shared_data_dir()
    path = folder / PINKY40_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (give the shared data folder, or set $NEURORECON_DATA)")
    return _load_npy_gz(str(path.resolve())), PINKY40_VOXEL_NM


@lru_cache(maxsize=2)
def _load_npy_gz(path: str) -> np.ndarray:
    # Cached: a run renders many crops of one volume.
    from ..io.npy import load_npy

    arr = load_npy(path)
    if arr.ndim != 3:
        raise ValueError(f"{path}: expected a 3D label array, got shape {arr.shape}")
    return arr.T      # file (x, y, z) -> (z, y, x); a Fortran-ordered file makes this C-ordered, no copy


@dataclass(frozen=True)
class Region:
    """A box of the segmentation: its name, its origin (z, y, x) in the full volume, and a view."""

    name: str
    origin: tuple[int, int, int]
    labels: np.ndarray


def pinky40_split(labels: np.ndarray, split: str) -> list[Region]:
    """The training region or the held-out block of pinky40, as boxes of ``labels`` (z, y, x).

    The held-out block is x >= 256 and y >= 256 (all z): ``"heldout"`` returns exactly it.
    ``"train"`` returns the two largest boxes of the rest (x < 256 or y < 256): y < 256 (all x)
    and x < 256 (all y). They overlap at x, y < 256; together they cover the training region
    and no voxel of the held-out block, so any crop inside one of them is training data.
    """
    if labels.ndim != 3 or min(labels.shape[1:]) <= HELDOUT_FROM:
        raise ValueError(f"expected the pinky40 volume (z, y, x) of more than {HELDOUT_FROM} voxels in y and x, got {labels.shape}")
    h = HELDOUT_FROM
    if split == "heldout":
        return [Region("heldout", (0, h, h), labels[:, h:, h:])]
    if split == "train":
        return [Region("train_y_lt_256", (0, 0, 0), labels[:, :h, :]), Region("train_x_lt_256", (0, 0, 0), labels[:, :, :h])]
    raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")


def crop_fits(regions: list[Region], size_zyx) -> bool:
    """Whether a crop of ``size_zyx`` voxels fits inside at least one of the regions."""
    return any(all(0 < s <= n for s, n in zip(size_zyx, r.labels.shape)) for r in regions)


def random_crop(regions: list[Region], size_zyx, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A crop of ``size_zyx`` (z, y, x) voxels at a random place inside one of ``regions``
    (each place equally likely); returns a copy and its origin in the full volume."""
    size = tuple(int(s) for s in size_zyx)
    places = np.array([np.prod([max(0, n - s + 1) for s, n in zip(size, r.labels.shape)]) for r in regions], float)
    if len(size) != 3 or places.sum() == 0:
        shapes = ", ".join(f"{r.name} {r.labels.shape}" for r in regions)
        raise ValueError(f"a crop of {size} (z, y, x) voxels fits none of the regions ({shapes})")
    r = regions[int(rng.choice(len(regions), p=places / places.sum()))]
    lo = [int(rng.integers(0, n - s + 1)) for s, n in zip(size, r.labels.shape)]
    crop = np.array(r.labels[lo[0]:lo[0] + size[0], lo[1]:lo[1] + size[1], lo[2]:lo[2] + size[2]])
    return crop, tuple(o + k for o, k in zip(r.origin, lo))


def relabel_sequential(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels renumbered 1..n in order of their ids (0 stays 0), and ``ids`` with
    ``ids[new] == old`` (``ids[0] == 0``). uint16 where n < 65536, else uint32."""
    flat = labels.ravel()
    # np.unique sorts every voxel; the values at the starts of runs along x are all the values.
    starts = flat[np.r_[True, flat[1:] != flat[:-1]]] if flat.size else flat
    ids = np.unique(starts)
    if ids.size == 0 or ids[0] != 0:
        ids = np.r_[np.zeros(1, ids.dtype), ids]
    new = np.searchsorted(ids, labels)
    return new.astype(np.uint16 if len(ids) <= 65536 else np.uint32), ids


# ------------------------------------------------------------------------------------ styles
@dataclass(frozen=True)
class EMStyle:
    """The look of one rendered volume. Brightness is 0 (black) to 1 (unstained) before the
    final mapping to grey levels ``black`` .. ``white`` (fractions of 255)."""

    name: str
    cytoplasm: float = 0.78       # mean cytoplasm brightness
    cell_var: float = 0.06        # spread of cytoplasm tone between objects
    ecs: float = 0.9              # extracellular space (label 0)
    membrane_dark: float = 0.75   # darkening at the middle of a membrane
    membrane_nm: float = 10.0     # membrane profile sigma (nm)
    membrane_var: float = 0.3     # log-spread of width and darkness, per object and along membranes
    oblique: float = 0.35         # darkness of membranes in the section plane, relative to cut ones
    texture: float = 0.07         # cytoplasm texture amplitude
    grain_px: float = 1.2         # texture grain size (px)
    specks: float = 0.004         # dark specks per voxel
    mito_density: float = 1.2     # mitochondria per µm^3
    mito_dark: float = 0.5 
    vesicle_density: float = 0.7  # synapses (vesicle cloud + density) per µm^3
    blur_px: float = 0.7          # in-plane blur sigma (px)
    blur_z: float = 0.25          # blur across sections (px)
    dose: float = 150.0           # electrons per pixel at brightness 1 (Poisson noise)
    read_noise: float = 0.02      # Gaussian noise sigma (brightness units)
    line_noise: float = 0.0       # scan-line offsets sigma (SEM); 0 in every training style
    shading: float = 0.05         # uneven illumination across a section and between sections
    black: float = 0.06
    white: float = 0.95
    defects: float = 1.5          # section defects per 64 sections

    @classmethod
    def random(cls, rng: np.random.Generator) -> "EMStyle":
        """A training style: one of :data:`TRAIN_STYLES` with every number jittered (about
        +-20 %, within :data:`STYLE_RANGES`). Never the held-out style, never scan lines."""
        base = STYLES[TRAIN_STYLES[int(rng.integers(len(TRAIN_STYLES)))]]
        values = {}
        for f in fields(cls):
            if f.name == "name":
                continue
            lo, hi = STYLE_RANGES[f.name]
            values[f.name] = float(np.clip(getattr(base, f.name) * np.exp(rng.normal(0.0, 0.2)), lo, hi))
        values["line_noise"] = 0.0
        if values["white"] - values["black"] < 0.35:
            values["white"] = min(1.0, values["black"] + 0.35)
        return replace(base, name=f"random:{base.name}", **values)

    def to_dict(self) -> dict:
        return {f.name: (getattr(self, f.name) if f.name == "name" else round(float(getattr(self, f.name)), 5))
                for f in fields(self)}


#: Bounds that :meth:`EMStyle.random` keeps every number within.
STYLE_RANGES = {
    "cytoplasm": (0.5, 0.9), "cell_var": (0.0, 0.12), "ecs": (0.6, 1.0), "membrane_dark": (0.4, 0.9),
    "membrane_nm": (6.0, 24.0), "membrane_var": (0.1, 0.5), "oblique": (0.2, 0.7), "texture": (0.02, 0.16),
    "grain_px": (0.7, 2.0), "specks": (0.0, 0.01), "mito_density": (0.3, 1.5), "mito_dark": (0.25, 0.65),
    "vesicle_density": (0.2, 1.3), "blur_px": (0.4, 1.4), "blur_z": (0.0, 0.4), "dose": (15.0, 300.0),
    "read_noise": (0.005, 0.07), "line_noise": (0.0, 0.0), "shading": (0.0, 0.12), "black": (0.0, 0.3),
    "white": (0.7, 1.0), "defects": (0.5, 3.0),
}  # fmt: skip

STYLES = {
    # Classic ssTEM of osmium-stained cortex: bright cytoplasm, crisp dark membranes.
    "tem": EMStyle("tem"),
    # Light staining: thin, pale membranes, low contrast, softer focus.
    "faint": EMStyle("faint", cytoplasm=0.82, membrane_dark=0.56, membrane_nm=9.0, oblique=0.35, texture=0.05,
                     mito_dark=0.32, blur_px=1.1, dose=100.0, black=0.22, white=0.82),
    # Heavy staining: thick, very dark membranes, darker grainy cytoplasm, high contrast.
    "dense": EMStyle("dense", cytoplasm=0.62, cell_var=0.09, ecs=0.8, membrane_dark=0.86, membrane_nm=18.0,
                     texture=0.11, grain_px=1.5, specks=0.007, mito_dark=0.55, blur_px=0.7, black=0.02, white=0.88),
    # Fast acquisition: few electrons per pixel, so strong shot noise; sharp otherwise.
    "noisy": EMStyle("noisy", membrane_dark=0.7, blur_px=0.6, dose=25.0, read_noise=0.05, shading=0.08, defects=2.0),
    # Held out, for testing only: SEM-like (inverted backscatter) with scan lines, darker
    # cytoplasm, coarse grain and a softer focus, which no training style has.
    "sem": EMStyle("sem", cytoplasm=0.6, cell_var=0.05, ecs=0.75, membrane_dark=0.78, membrane_nm=13.0,
                   oblique=0.5, texture=0.08, grain_px=2.2, specks=0.002, mito_dark=0.42, blur_px=1.2,
                   blur_z=0.1, dose=90.0, read_noise=0.035, line_noise=0.015, shading=0.12, black=0.08,
                   white=0.8, defects=1.0),
}  # fmt: skip
#: The style kept for testing only.
HELDOUT_STYLE = "sem"
#: The named styles training draws from.
TRAIN_STYLES = tuple(k for k in STYLES if k != HELDOUT_STYLE)


# ------------------------------------------------------------------------------------ rendering
@dataclass(frozen=True)
class EMRender:
    """A rendered volume: ``image`` uint8 (z, y, x); ``labels`` the input labels as they lie in the
    image (only shift defects move them); the ``style`` and the ``defects`` applied."""

    image: np.ndarray
    labels: np.ndarray
    style: EMStyle
    defects: tuple[Defect, ...]


def render_em(labels: np.ndarray, style: EMStyle, rng: np.random.Generator,
              voxel_size_nm=PINKY40_VOXEL_NM, defects="random", nucleus: np.ndarray | None = None) -> EMRender:
    """Render an EM-like image of a dense segmentation.

    Parameters
    ----------
    labels : ndarray of integers, shape (nz, ny, nx)
        Dense segmentation, (z, y, x); 0 is extracellular space.
    style : EMStyle
    rng : numpy.random.Generator
        Everything random is drawn from it: the same seed gives the same volume, bit for bit.
        The defects draw from a stream of their own, so the same seed with and without defects
        gives the same image wherever no defect touches it.
    voxel_size_nm : (z, y, x) in nm
    defects : "random", or a sequence of Defect
        "random" draws them from ``style.defects``; ``()`` renders a clean volume.
    nucleus : ndarray of bool, shape (nz, ny, nx), optional
        Where somata have their nucleus; default :func:`nucleus_mask` of ``labels``. Pass the crop
        of a mask made for the whole volume, so that a soma cut by the crop keeps its nucleus
        where the whole soma puts it.

    Returns
    -------
    EMRender
    """
    lab_in = np.asarray(labels)
    if lab_in.ndim != 3 or lab_in.size == 0 or not np.issubdtype(lab_in.dtype, np.integer):
        raise ValueError(f"labels must be a non-empty 3D integer array (z, y, x), got {lab_in.dtype} {lab_in.shape}")
    vs = tuple(float(v) for v in voxel_size_nm)
    if len(vs) != 3 or min(vs) <= 0:
        raise ValueError(f"voxel_size_nm must be three positive numbers (z, y, x), got {voxel_size_nm}")
    seeds = rng.integers(2**63, size=4)
    r_struct, r_tex, r_org, r_def = (np.random.default_rng(s) for s in seeds)
    shape = lab_in.shape
    lab, _ = relabel_sequential(lab_in)
    lab = lab.astype(np.int32)
    n = int(lab.max()) + 1

    bxy, bz = _boundaries(lab)
    # Distance (nm) from each voxel centre to the nearest interface in its section (a boundary
    # voxel's centre is half a voxel from it). In-plane is what a membrane's look depends on; a
    # 3D transform would cost four times as much for the same picture.
    dist = np.empty(shape, np.float32)
    for k in range(shape[0]):
        dist[k] = ndi.distance_transform_edt(~bxy[k], sampling=vs[1:]) if bxy[k].any() else np.float32(1e6)
    dist += 0.5 * min(vs[1:])

    bright = _cytoplasm(lab, n, style, r_struct, r_tex)
    membrane = _membranes(lab, n, dist, bz, style, vs, r_struct)
    if nucleus is None:
        nucleus = nucleus_mask(lab_in, vs)
    elif np.shape(nucleus) != shape:
        raise ValueError(f"nucleus must have the shape of labels {shape}, got {np.shape(nucleus)}")
    nucleus = _nuclei(lab, np.asarray(nucleus, bool), bright, membrane, vs, r_org)
    mito = _mitochondria(lab, dist, nucleus, style, vs, r_org)
    vesicles, psd = _synapses(lab, dist, bxy, nucleus, style, vs, r_org)
    bright *= 1.0 - style.mito_dark * mito
    bright *= 1.0 - 0.55 * vesicles
    bright *= 1.0 - style.membrane_dark * np.minimum(membrane + psd, 1.0)
    bright *= 1.0 + style.shading * _smooth_noise(shape, (6.0, 60.0, 60.0), r_struct)
    bright = ndi.gaussian_filter(bright, (style.blur_z, style.blur_px, style.blur_px), mode="reflect")

    applied = tuple(draw_defects(shape, style.defects, r_def) if isinstance(defects, str) and defects == "random"
                    else defects)
    if not all(isinstance(d, Defect) for d in applied):
        raise ValueError("defects must be 'random' or a sequence of Defect")
    apply_brightness_defects(bright, applied, shape[1:])
    image = _imaging(bright, style, int(r_tex.integers(2**63)))
    lab_out = np.array(lab_in)
    apply_stack_defects(image, lab_out, applied)
    return EMRender(image, lab_out, style, applied)


def _boundaries(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voxels with a differing 4-neighbour in their section (``bxy``), and with a differing
    neighbour in the next or previous section (``bz``); both sides of an interface are marked."""
    bxy = np.zeros(lab.shape, bool)
    bz = np.zeros(lab.shape, bool)
    for axis, out in ((1, bxy), (2, bxy), (0, bz)):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        diff = lab[tuple(lo)] != lab[tuple(hi)]
        out[tuple(lo)] |= diff
        out[tuple(hi)] |= diff
    return bxy, bz


def _smooth_noise(shape, sigma, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise with unit spread. Broad fields are made at a lower
    resolution and interpolated up: the same look for a small part of the cost."""
    f = [max(1, int(s // 3)) for s in sigma]
    small = [n // k + 2 for n, k in zip(shape, f)]
    x = ndi.gaussian_filter(rng.standard_normal(small, dtype=np.float32), [s / k for s, k in zip(sigma, f)], mode="wrap")
    for axis, (k, n) in enumerate(zip(f, shape)):
        if k > 1:       # linear interpolation along this axis (ndi.zoom is 10 times slower)
            pos = np.arange(n, dtype=np.float32) / k
            i0 = pos.astype(np.intp)
            w = (pos - i0).reshape([-1 if a == axis else 1 for a in range(3)])
            x = np.take(x, i0, axis=axis) * (1 - w) + np.take(x, i0 + 1, axis=axis) * w
        else:
            x = np.take(x, np.arange(n), axis=axis)
    return ((x - x.mean()) / (x.std() + 1e-9)).astype(np.float32)


def _cytoplasm(lab, n, style: EMStyle, r_struct, r_tex) -> np.ndarray:
    """Per-object tone (a few objects markedly darker, as dark axons and glia are), slow variation
    along each object, fine grain and dark specks; extracellular space paler and smoother."""
    tone = style.cytoplasm * (1.0 + style.cell_var * r_struct.standard_normal(n))
    tone *= np.where(r_struct.random(n) < 0.12, 0.85, 1.0)
    tone[0] = style.ecs
    tone = np.clip(tone, 0.2, 1.0).astype(np.float32)
    shape = lab.shape
    bright = tone[lab]
    grain = ndi.gaussian_filter(r_tex.standard_normal(shape, dtype=np.float32), (0.4, style.grain_px, style.grain_px))
    grain /= grain.std() + 1e-9
    slow = _smooth_noise(shape, (3.0, 24.0, 24.0), r_tex)
    inside = lab > 0
    bright *= 1.0 + np.where(inside, style.texture, 0.3 * style.texture) * grain + 0.03 * slow
    specks = (r_tex.random(shape, dtype=np.float32) < style.specks) & inside
    dots = ndi.gaussian_filter(specks.astype(np.float32), (0.3, 0.7, 0.7))
    bright *= 1.0 - np.minimum(dots * 4.0, 0.5)
    return bright


def _membranes(lab, n, dist, bz, style: EMStyle, vs, rng) -> np.ndarray:
    """Membrane strength in [0, 1]: a Gaussian profile of the distance to the in-plane interface,
    its width and depth scaled per object and by smooth fields along the membrane; plus the grey
    of interfaces between sections (membranes in the section plane)."""
    shape = lab.shape
    width_obj = np.exp(style.membrane_var * rng.standard_normal(n)).astype(np.float32)
    dark_obj = np.exp(0.6 * style.membrane_var * rng.standard_normal(n)).astype(np.float32)
    width = style.membrane_nm * width_obj[lab] * np.exp(style.membrane_var * _smooth_noise(shape, (2.0, 8.0, 8.0), rng))
    dark = dark_obj[lab] * np.exp(0.7 * style.membrane_var * _smooth_noise(shape, (2.0, 6.0, 6.0), rng))
    # A boundary voxel holds part of the membrane however thin it is, so it is dark in full: the
    # profile runs from the voxel's edge, and the width sets how far the dark spreads beyond it.
    m = np.exp(-0.5 * (np.maximum(dist - 0.5 * min(vs[1:]), 0.0) / width) ** 2) * dark
    # A membrane crossing the section obliquely spreads its stain over the strip between where it
    # enters and leaves: grey, darkest next to the in-plane line, fainter across a wide smear.
    smear = style.oblique * dark * bz * (0.35 + 0.65 * np.exp(-dist / 50.0))
    m = np.maximum(m, smear)
    return np.clip(m, 0.0, 1.0)


def nucleus_mask(labels: np.ndarray, voxel_size_nm=PINKY40_VOXEL_NM, step: int = 4, min_depth_nm: float = 1500.0,
                 fraction: float = 0.45) -> np.ndarray:
    """Where nuclei go: in each object reaching deeper than ``min_depth_nm`` from its surface (a
    soma), the part deeper than ``fraction`` of its deepest point.

    Depth is the 3D distance to the nearest boundary between objects (an object is taken to go
    on beyond the volume's faces), worked out on every ``step``-th voxel in y and x. Objects
    under 64 of those voxels (pinky40 has small fragments inside its soma) do not count as
    boundaries, so they do not dent the nucleus. In pinky40 only the soma reaches 1.5 µm
    (2.2 µm; the next object 0.8 µm). Made for a crop alone, the mask depends on the crop; make
    it for the whole volume and crop it (see ``render_em``).

    Returns
    -------
    ndarray of bool, the shape of ``labels``.
    """
    lab, _ = relabel_sequential(labels[:, ::step, ::step])
    lab = lab.astype(np.int32)
    sizes = np.bincount(lab.ravel())
    big = np.where(sizes[lab] >= 64, lab, -1)           # -1: small, not a boundary
    surface = np.zeros(lab.shape, bool)
    for axis in range(3):
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        a, b = big[tuple(lo)], big[tuple(hi)]
        diff = (a != b) & (a >= 0) & (b >= 0)
        surface[tuple(lo)] |= diff
        surface[tuple(hi)] |= diff
    if not surface.any():
        return np.zeros(labels.shape, bool)
    vs = (float(voxel_size_nm[0]), float(voxel_size_nm[1]) * step, float(voxel_size_nm[2]) * step)
    depth = ndi.distance_transform_edt(~surface, sampling=vs).astype(np.float32)
    deepest = np.zeros(len(sizes), np.float32)
    np.maximum.at(deepest, lab.ravel(), depth.ravel())
    deepest[0] = 0.0
    threshold = np.where(deepest >= min_depth_nm, fraction * deepest, np.inf).astype(np.float32)
    small = (depth >= threshold[lab]) & (lab > 0)
    # Blocks of step x step: the nucleus lies far inside its soma, so they never reach another
    # object (only the small fragments within), and the renderer smooths the edge.
    return np.repeat(np.repeat(small, step, axis=1), step, axis=2)[:, : labels.shape[1], : labels.shape[2]]


def _nuclei(lab, mask, bright, membrane, vs, rng) -> np.ndarray:
    """Render the nuclei of ``mask`` (smoothed, its edge roughened, kept inside its object): paler
    nucleoplasm, dark chromatin clumps and a rim of heterochromatin; the envelope joins the
    membranes. Returns the final mask."""
    if not mask.any():
        return mask
    shape = lab.shape
    soft = ndi.gaussian_filter(mask.astype(np.float32), (0.5, 3.0, 3.0)) + 0.12 * _smooth_noise(shape, (2.0, 10.0, 10.0), rng)
    owner = np.zeros(int(lab.max()) + 1, bool)
    owner[np.unique(lab[mask])] = True
    nucleus = (soft > 0.5) & owner[lab] & (lab > 0)
    if not nucleus.any():
        return nucleus
    clumps = np.clip(_smooth_noise(shape, (0.8, 3.0, 3.0), rng) - 0.5, 0.0, 1.5)
    edge = np.full(shape, 1e6, np.float32)       # nm inside the nuclear envelope, in-plane
    for k in np.flatnonzero(nucleus.any(axis=(1, 2))):
        edge[k] = ndi.distance_transform_edt(nucleus[k], sampling=vs[1:])
    rim = np.exp(-edge / 50.0)
    bright[nucleus] *= (1.06 * (1.0 - 0.35 * clumps - 0.3 * rim))[nucleus]
    env = nucleus & (edge < vs[1] * 1.01)
    membrane[env] = np.maximum(membrane[env], 0.8)
    return nucleus


def _frame(u: np.ndarray) -> np.ndarray:
    """Rows: the unit vector ``u`` and two unit vectors perpendicular to it and to each other."""
    u = u / np.linalg.norm(u)
    a = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    v = np.cross(u, a)
    v /= np.linalg.norm(v)
    return np.stack([u, v, np.cross(u, v)])


def _box(centre, radius_nm, vs, shape):
    """The box of voxels within ``radius_nm`` (z, y, x) of ``centre`` and, as open grids, each
    voxel's offset from the centre in nm."""
    lo = [max(0, int(c - r / s)) for c, r, s in zip(centre, radius_nm, vs)]
    hi = [min(n, int(c + r / s) + 2) for c, r, s, n in zip(centre, radius_nm, vs, shape)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    grid = np.meshgrid(*[(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, centre, vs)], indexing="ij", sparse=True)
    return box, grid


def _volume_um3(shape, vs) -> float:
    return float(np.prod(shape) * np.prod(vs) * 1e-9)


def _mitochondria(lab, dist, nucleus, style: EMStyle, vs, rng) -> np.ndarray:
    """Mitochondria in [0, 1]: ellipsoids 180-360 nm thick and 1.5-5 times as long, placed in
    voxels at least 150 nm inside an object, their long axis along the object there (the main
    axis of its voxels within 500 nm), clipped to the object. Darker rim (the double membrane)
    and cristae stripes across the long axis."""
    out = np.zeros(lab.shape, np.float32)
    count = rng.poisson(style.mito_density * _volume_um3(lab.shape, vs))
    cand = np.flatnonzero((dist >= 150.0) & (lab > 0) & ~nucleus)
    if count == 0 or cand.size == 0:
        return out
    for flat in rng.choice(cand, size=min(count, cand.size), replace=False):
        c = np.unravel_index(flat, lab.shape)
        obj = lab[c]
        box, (gz, gy, gx) = _box(c, (500.0, 500.0, 500.0), vs, lab.shape)
        own = lab[box] == obj
        pts = np.stack(np.nonzero(own), axis=1) * np.array(vs)
        axis = np.linalg.eigh(np.cov(pts.T))[1][:, -1] if len(pts) > 3 else rng.standard_normal(3)
        frame = _frame(axis)
        thick = min(rng.uniform(90.0, 180.0), 0.9 * float(dist[c]))
        radii = np.array([thick * rng.uniform(1.5, 5.0), thick, thick * rng.uniform(0.8, 1.2)])
        # Coordinates in the mitochondrion's frame, nm.
        p = [frame[k, 0] * gz + frame[k, 1] * gy + frame[k, 2] * gx for k in range(3)]
        q = sum((pk / rk) ** 2 for pk, rk in zip(p, radii))
        inside = (q < 1.0) & own & (dist[box] > 12.0) & ~nucleus[box]
        if not inside.any():
            continue
        depth = (1.0 - np.sqrt(np.minimum(q, 1.0))) * thick        # nm inside the outer membrane
        rim = np.exp(-depth / 14.0)
        cristae = 0.5 + 0.5 * np.sin(2 * np.pi * p[0] / rng.uniform(60.0, 110.0) + rng.uniform(0, 2 * np.pi))
        val = np.where(inside, 0.7 + 0.3 * rim + 0.25 * cristae * (1.0 - rim), 0.0)
        out[box] = np.maximum(out[box], np.clip(val, 0.0, 1.0))
    return out


def _synapses(lab, dist, bxy, nucleus, style: EMStyle, vs, rng) -> tuple[np.ndarray, np.ndarray]:
    """Vesicle clouds and postsynaptic densities, each in [0, 1]. A synapse sits at a random point
    of an in-plane boundary between two objects: vesicles (40 nm, so dots of 2-3 px) fill the
    presynaptic object within 200-450 nm of it, densest near the membrane; the postsynaptic side
    gets a dark band 40 nm deep along 100-200 nm of the membrane. A soma is never presynaptic."""
    impulses = np.zeros(lab.shape, np.float32)
    psd = np.zeros(lab.shape, np.float32)
    count = rng.poisson(style.vesicle_density * _volume_um3(lab.shape, vs))
    cand = np.flatnonzero(bxy & (lab > 0))
    if count == 0 or cand.size == 0:
        return impulses, psd
    has_nucleus = np.zeros(int(lab.max()) + 1, bool)
    has_nucleus[np.unique(lab[nucleus])] = True
    nz, ny, nx = lab.shape
    for flat in rng.choice(cand, size=min(count, cand.size), replace=False):
        c = np.unravel_index(flat, lab.shape)
        pre = lab[c]
        across = [lab[c[0], c[1] + dy, c[2] + dx] for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))
                  if 0 <= c[1] + dy < ny and 0 <= c[2] + dx < nx]
        post = next((a for a in across if a not in (0, pre)), None)
        if post is None:
            continue
        if has_nucleus[pre]:
            pre, post = post, pre
        radius = rng.uniform(200.0, 450.0)
        box, (gz, gy, gx) = _box(c, (radius, radius, radius), vs, lab.shape)
        r = np.sqrt(gz ** 2 + gy ** 2 + gx ** 2)
        sub = lab[box]
        p_vesicle = rng.uniform(0.1, 0.25) * np.exp(-r / radius)
        cloud = (sub == pre) & (r < radius) & (dist[box] > 20.0)
        pick = cloud & (rng.random(sub.shape) < p_vesicle)
        # Packed vesicles grey the whole cloud a little, besides each one's own dot.
        impulses[box] = np.maximum(impulses[box], np.maximum(pick, 0.04 * cloud))
        band = (sub == post) & (r < rng.uniform(100.0, 200.0)) & (dist[box] < 45.0)
        psd[box] = np.maximum(psd[box], 0.8 * band)
    # A vesicle is a dark ring around a paler core; at 16 nm pixels that is a dark dot, 2-3 px.
    vesicles = np.minimum(ndi.gaussian_filter(impulses, (0.35, 0.8, 0.8)) * 5.0, 1.0)
    return vesicles, ndi.gaussian_filter(psd, (0.3, 0.7, 0.7))


def _imaging(bright: np.ndarray, style: EMStyle, seed: int) -> np.ndarray:
    """Electron shot noise, Gaussian noise, scan lines, and the mapping to 8-bit grey. Each
    section draws from its own stream, so a defect in one section leaves the others untouched."""
    out = np.empty(bright.shape, np.uint8)
    span = style.white - style.black
    for k in range(bright.shape[0]):
        rng = np.random.default_rng([seed, k])
        b = np.clip(bright[k], 0.0, 1.5)
        noisy = rng.poisson(b * style.dose).astype(np.float32) / style.dose
        noisy += style.read_noise * rng.standard_normal(b.shape, dtype=np.float32)
        if style.line_noise:
            noisy += style.line_noise * rng.standard_normal((b.shape[0], 1), dtype=np.float32)
        out[k] = np.clip(np.rint(255.0 * (style.black + span * noisy)), 0, 255).astype(np.uint8)
    return out


# ------------------------------------------------------------------------------------ writing
def write_em(render: EMRender, folder: str | os.PathLike, name: str, fmt: str = "tif",
             voxel_size_nm=PINKY40_VOXEL_NM, info: dict | None = None) -> dict:
    """Write a rendered volume: ``NAME.tif`` (or ``.zarr``) the image, ``NAME.labels.tif`` (or
    ``.labels.zarr``) its labels renumbered 1..n (0 stays 0; uint16, as ImageJ TIFF cannot hold
    pinky40's 32-bit ids), and ``NAME.json``: ``info``, the style, the defects and ``label_ids``
    (``label_ids[k]`` is the source id of label k). Returns that JSON as a dict."""
    import json

    from ..io.atomic import atomic_write_text
    from ..io.volume import write_tiff, write_zarr

    if fmt not in ("tif", "zarr"):
        raise ValueError(f"fmt must be 'tif' or 'zarr', not {fmt!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labels, ids = relabel_sequential(render.labels)
    vs_um = tuple(v / 1000.0 for v in voxel_size_nm[::-1])      # (x, y, z) µm, the io convention
    paths = {"image": f"{name}.{fmt}", "labels": f"{name}.labels.{fmt}"}
    for key, arr in (("image", render.image), ("labels", labels)):
        if fmt == "tif":
            write_tiff(folder / paths[key], arr, vs_um)
        else:
            write_zarr(folder / paths[key], arr, vs_um, overwrite=True)
    meta = {**(info or {}), **paths, "shape_zyx": list(render.image.shape),
            "voxel_size_nm": dict(zip("zyx", (float(v) for v in voxel_size_nm))),
            "style": render.style.to_dict(), "defects": [d.to_dict() for d in render.defects],
            "label_ids": [int(i) for i in ids]}
    atomic_write_text(folder / f"{name}.json", json.dumps(meta))
    return meta
