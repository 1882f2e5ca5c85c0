"""A small anisotropic 3D U-Net that predicts affinities from serial-section EM, and tiled inference.

Serial sections are ~2.5 times thicker than their pixels are wide, so the network works in 2D at
full resolution and adds depth lower down: the first level's convolutions are 1 x 3 x 3, the
deeper ones mix 1 x 3 x 3 and 3 x 3 x 3, and pooling is 1 x 2 x 2 (in-plane only). Padding is
"same", so the output has the input's shape (y and x a multiple of 4 for the two poolings;
:func:`predict_affinities` pads). There is no normalisation layer: with none, a voxel's output
depends only on its neighbourhood, not on the tile it was predicted in, so tiles blend without
seams. The output is one sigmoid channel per offset of :data:`~neurorecon.em.affinities.OFFSETS`.

torch is imported by this module only; the rest of neurorecon does not need it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn

from .affinities import OFFSETS, check_offsets

__all__ = ["DEFAULT_MODEL", "AffinityUNet", "load_affinity_model", "predict_affinities", "save_affinity_model"]

#: The shipped weights (state_dict) and, beside them, their settings (same name, ``.json``).
DEFAULT_MODEL = Path(__file__).parent / "models" / "affinities.pt"


def _conv(cin: int, cout: int, kz: int) -> nn.Module:
    return nn.Conv3d(cin, cout, (kz, 3, 3), padding=(kz // 2, 1, 1))


class _Block(nn.Sequential):
    """Two convolutions with ReLU: 1 x 3 x 3 then ``kz`` x 3 x 3."""

    def __init__(self, cin: int, cout: int, kz: int):
        super().__init__(_conv(cin, cout, 1), nn.ReLU(inplace=True), _conv(cout, cout, kz), nn.ReLU(inplace=True))


class AffinityUNet(nn.Module):
    """3-level U-Net: ``base``, 2 ``base``, 4 ``base`` channels; (N, 1, z, y, x) -> (N, C, z, y, x) in [0, 1].

    Parameters
    ----------
    n_out : int
        Output channels (one per affinity offset).
    base : int
        Channels of the first level.
    """

    def __init__(self, n_out: int = len(OFFSETS), base: int = 16):
        super().__init__()
        f = base
        self.enc0 = _Block(1, f, 1)            # full resolution: in-plane only
        self.enc1 = _Block(f, 2 * f, 3)
        self.bottom = _Block(2 * f, 4 * f, 3)
        self.pool = nn.MaxPool3d((1, 2, 2))
        self.up1 = nn.ConvTranspose3d(4 * f, 2 * f, (1, 2, 2), stride=(1, 2, 2))
        self.dec1 = _Block(4 * f, 2 * f, 3)
        self.up0 = nn.ConvTranspose3d(2 * f, f, (1, 2, 2), stride=(1, 2, 2))
        self.dec0 = _Block(2 * f, f, 3)        # 3 x 3 x 3 here so that z affinities see both sections
        self.head = nn.Conv3d(f, n_out, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-sigmoid output (what the loss takes, for numerical stability)."""
        e0 = self.enc0(x)
        e1 = self.enc1(self.pool(e0))
        b = self.bottom(self.pool(e1))
        d1 = self.dec1(torch.cat([self.up1(b), e1], 1))
        d0 = self.dec0(torch.cat([self.up0(d1), e0], 1))
        return self.head(d0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


# ------------------------------------------------------------------------------ weights
def save_affinity_model(model: AffinityUNet, path: str | Path, meta: dict) -> Path:
    """Write ``model``'s weights to ``path`` (.pt, a state_dict) and ``meta`` beside it (.json).

    ``meta`` must hold ``offsets``, ``base`` and ``voxel_nm`` (z, y, x) — what
    :func:`load_affinity_model` needs to rebuild the model — and may hold anything else
    (training settings, validation numbers)."""
    path = Path(path)
    missing = {"offsets", "base", "voxel_nm"} - set(meta)
    if missing:
        raise ValueError(f"meta lacks {', '.join(sorted(missing))}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Half precision halves the file; the weights are cast back to float32 on loading.
    torch.save({k: v.detach().to(torch.float16) for k, v in model.state_dict().items()}, path)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return path


def load_affinity_model(path: str | Path | None = None) -> AffinityUNet:
    """The affinity model at ``path`` (default: the shipped one, :data:`DEFAULT_MODEL`), in eval mode.

    Its settings (``model.meta``: offsets, voxel size in nm, training record) come from the
    .json beside the weights. Nothing is downloaded.
    """
    path = Path(DEFAULT_MODEL if path is None else path)
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"{path}: no affinity model here (need {path.name} and {meta_path.name})")
    meta = json.loads(meta_path.read_text())
    offsets = check_offsets(meta["offsets"])
    model = AffinityUNet(len(offsets), int(meta["base"]))
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.eval()
    model.meta = meta
    return model


# ------------------------------------------------------------------------------ inference
def _resize(arr: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """``arr`` (..., z, y, x) linearly resampled to ``shape`` (z, y, x), low-passed where it shrinks."""
    lead = arr.ndim - 3
    f = [1.0] * lead + [n / m for n, m in zip(shape, arr.shape[lead:])]
    if all(v == 1.0 for v in f):
        return arr
    sigma = [0.5 / v if v < 1 else 0.0 for v in f]
    if any(sigma):
        arr = ndi.gaussian_filter(arr, sigma)
    out = ndi.zoom(arr, f, order=order, grid_mode=True, mode="nearest")
    assert out.shape[lead:] == tuple(shape), (out.shape, shape)
    return out


def _window(size: Sequence[int], overlap: Sequence[int]) -> np.ndarray:
    """Blending weight of a tile: 1 inside, a linear ramp over the overlap at each edge (never 0,
    so that voxels every tile sees only at its edge still get a value)."""
    w = np.ones(tuple(size), np.float32)
    for ax, (n, o) in enumerate(zip(size, overlap)):
        if o <= 0:
            continue
        ramp = np.minimum(1.0, (np.arange(n) + 0.5) / o)
        ramp = np.minimum(ramp, ramp[::-1]).astype(np.float32)
        w *= ramp.reshape([-1 if a == ax else 1 for a in range(3)])
    return w


def _starts(n: int, tile: int, overlap: int) -> list[int]:
    """Tile origins covering 0..n with at least ``overlap`` between neighbours (n >= tile)."""
    if n <= tile:
        return [0]
    k = int(np.ceil((n - overlap) / (tile - overlap)))
    return [int(round(i * (n - tile) / (k - 1))) for i in range(k)] if k > 1 else [0]


def predict_affinities(image, model: AffinityUNet, voxel_size: Sequence[float],
                       progress: Callable[[int, int], None] | None = None, *,
                       tile: Sequence[int] = (24, 192, 192), overlap: Sequence[int] = (4, 32, 32),
                       num_threads: int | None = 2) -> np.ndarray:
    """Affinities of an EM volume, on the image's grid.

    Parameters
    ----------
    image : numpy.ndarray, shape (nz, ny, nx)
        Grey levels, membranes dark (any numeric type; any size).
    model : AffinityUNet
        From :func:`load_affinity_model`.
    voxel_size : (vx, vy, vz) in µm
        The image is resampled to the model's resolution (``model.meta["voxel_nm"]``, z, y, x)
        and the affinities back; a factor within 5 % of 1 is not worth the interpolation.
    progress : callable(done, total), optional
        Called after each tile.
    tile, overlap : (z, y, x) voxels at the model's resolution
        Tiles are blended with linear ramps over the overlap, which hides the weaker predictions
        near tile edges; y and x of ``tile`` must be multiples of 4.
    num_threads : int or None
        torch's CPU threads (None: leave as set).

    Returns
    -------
    numpy.ndarray of float32, shape (len(offsets), nz, ny, nx), in [0, 1]
        Channel k: the probability that a voxel and its neighbour at ``model.meta["offsets"][k]``
        (in the model's voxels) belong to one object.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.size == 0 or image.dtype.kind not in "uif":
        raise ValueError(f"image must be a non-empty 3D numeric array (z, y, x), got {image.dtype} {image.shape}")
    vs = [float(v) for v in voxel_size]
    if len(vs) != 3 or not all(np.isfinite(v) and v > 0 for v in vs):
        raise ValueError(f"voxel size must be three positive numbers (vx, vy, vz) in µm, got {voxel_size!r}")
    tile = tuple(int(t) for t in tile)
    if tile[1] % 4 or tile[2] % 4 or min(tile) < 1:
        raise ValueError(f"tile y and x must be positive multiples of 4, got {tile}")
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    from .watershed import normalize_sections

    mz, my, mx = (float(v) for v in model.meta["voxel_nm"])
    f = [v * 1000.0 / m for v, m in zip(vs[::-1], (mz, my, mx))]      # input voxel / model voxel, (z, y, x)
    f = [v if abs(v - 1) > 0.05 else 1.0 for v in f]
    work_shape = tuple(max(1, int(round(n * v))) for n, v in zip(image.shape, f))
    work = _resize(np.nan_to_num(image.astype(np.float32)), work_shape)
    norm, _ = normalize_sections(work)
    norm -= 0.5
    # Pad to at least one tile (and y, x to multiples of 4) by reflection, so any shape works.
    target = [max(n, t) for n, t in zip(work_shape, tile)]
    pad = [(0, t - n) for n, t in zip(work_shape, target)]
    mode = "reflect" if all(p[1] < n for p, n in zip(pad, work_shape)) else "edge"
    norm = np.pad(norm, pad, mode=mode) if any(p[1] for p in pad) else norm
    n_out = len(model.meta["offsets"])
    acc = np.zeros((n_out, *norm.shape), np.float32)
    wsum = np.zeros(norm.shape, np.float32)
    window = _window(tile, overlap)
    grid = [(z, y, x) for z in _starts(norm.shape[0], tile[0], overlap[0])
            for y in _starts(norm.shape[1], tile[1], overlap[1]) for x in _starts(norm.shape[2], tile[2], overlap[2])]
    with torch.inference_mode():
        for i, (z, y, x) in enumerate(grid):
            sl = (slice(z, z + tile[0]), slice(y, y + tile[1]), slice(x, x + tile[2]))
            out = model(torch.from_numpy(np.ascontiguousarray(norm[sl]))[None, None])[0].numpy()
            acc[(slice(None),) + sl] += out * window
            wsum[sl] += window
            if progress is not None:
                progress(i + 1, len(grid))
    acc /= wsum
    acc = acc[:, :work_shape[0], :work_shape[1], :work_shape[2]]
    return np.clip(_resize(acc, image.shape), 0.0, 1.0).astype(np.float32, copy=False)
