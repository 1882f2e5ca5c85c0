"""Training the affinity U-Net (:mod:`neurorecon.em.unet`) on EM rendered on the fly from real labels.

Every training patch is a fresh crop of the pinky40 *training region* (``pinky40_split(labels,
"train")``: x < 256 or y < 256), rendered by :func:`~neurorecon.synth.em.render_em` in a random
training style (:meth:`EMStyle.random`, never the held-back ``sem``) with its random section
defects (missing, dark, shifted and folded sections), then augmented: an in-plane elastic warp,
flips and in-plane transposes, and per-section gamma, contrast, brightness, blur and noise. The
network never sees the same image twice, and never sees the held-out block (x, y >= 256).

Validation: the sections z >= :data:`VALID_FROM` of the training region are kept out of training
patches; :data:`N_VALID` fixed crops of them, rendered once with fixed seeds, give the validation
loss and a quick segmentation score (:func:`threshold_segment`, VOI and adapted Rand error).

Loss: binary cross-entropy on the affinities where they are defined (the mask of
:func:`~neurorecon.em.affinities.affinity_targets`), positives and negatives of each channel
weighted to count equally (boundaries are a small share of voxels, and the long-range channels
are mostly 0). Everything random comes from ``seed``: the same seed gives the same weights.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .affinities import OFFSETS, affinity_targets

__all__ = ["N_VALID", "VALID_FROM", "augment", "sample_patch", "sanity_scores", "watershed_segment", "threshold_segment",
           "train_affinity_model", "training_regions"]

#: Sections z >= VALID_FROM of the training region are for validation only.
VALID_FROM = 448
#: Fixed validation crops.
N_VALID = 4
_WARP_MARGIN = 8     # in-plane pixels rendered beyond the patch, so the warp never pulls in edges


def training_regions(labels: np.ndarray, z_range: tuple[int, int]) -> tuple[list, list[np.ndarray]]:
    """The pinky40 training boxes cut to sections ``z_range``, and each box's nucleus mask."""
    from ..synth.em import Region, nucleus_mask, pinky40_split

    z0, z1 = z_range
    regions = [Region(r.name, (r.origin[0] + z0, *r.origin[1:]), r.labels[z0:z1]) for r in pinky40_split(labels, "train")]
    # Nuclei from each whole box, so a soma cut by a crop keeps its nucleus where the soma puts it.
    return regions, [nucleus_mask(r.labels) for r in regions]


def _crop(regions, nuclei, size, rng):
    """A random crop of ``size`` inside one region (each place equally likely), with its nucleus mask."""
    places = np.array([np.prod([max(0, n - s + 1) for s, n in zip(size, r.labels.shape)]) for r in regions], float)
    if places.sum() == 0:
        raise ValueError(f"a patch of {tuple(size)} voxels (with the warp margin) fits no training region")
    i = int(rng.choice(len(regions), p=places / places.sum()))
    lo = [int(rng.integers(0, n - s + 1)) for s, n in zip(size, regions[i].labels.shape)]
    sl = tuple(slice(a, a + s) for a, s in zip(lo, size))
    return np.array(regions[i].labels[sl]), np.array(nuclei[i][sl])


def sample_patch(regions, nuclei, patch: Sequence[int], rng: np.random.Generator, warp: bool = True):
    """A rendered, augmented training patch: (image float32 (z, y, x) centred near 0, labels).

    The labels are rendered with a margin of :data:`_WARP_MARGIN` pixels, warped together with
    the image, and cut to ``patch``."""
    from ..synth.em import EMStyle, render_em

    m = _WARP_MARGIN
    size = (patch[0], patch[1] + 2 * m, patch[2] + 2 * m)
    lab, nuc = _crop(regions, nuclei, size, rng)
    render = render_em(lab, EMStyle.random(rng), rng, nucleus=nuc)
    image, lab = render.image.astype(np.float32), render.labels
    if warp:
        image, lab = _warp(image, lab, rng)
    image, lab = image[:, m:-m, m:-m], lab[:, m:-m, m:-m]
    return augment(image, lab, rng)


def _warp(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, amp: float = 4.0):
    """One smooth random in-plane displacement (up to ~``amp`` px) for every section: tissue
    shapes deform a little, as between animals and sections; labels follow by nearest neighbour."""
    nz, ny, nx = image.shape
    coarse = rng.normal(0.0, amp / 2, (2, 4, 4))
    dy, dx = (ndi.zoom(c, (ny / 4, nx / 4), order=3, grid_mode=True, mode="nearest")[:ny, :nx] for c in coarse)
    zz, yy, xx = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    coords = np.stack([zz, yy + dy[None], xx + dx[None]]).astype(np.float32)
    return (ndi.map_coordinates(image, coords, order=1, mode="reflect"),
            ndi.map_coordinates(labels, coords, order=0, mode="reflect"))


def augment(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
    """Flips (z, y, x), an in-plane transpose, per-section normalisation as at inference, then
    per-section gamma, contrast, brightness, blur and noise. Returns (image - 0.5, labels)."""
    from .watershed import normalize_sections

    flips = tuple(ax for ax in range(3) if rng.random() < 0.5)
    if flips:
        image, labels = np.flip(image, flips), np.flip(labels, flips)
    if rng.random() < 0.5:
        image, labels = image.transpose(0, 2, 1), labels.transpose(0, 2, 1)
    norm, _ = normalize_sections(np.ascontiguousarray(image))
    nz = len(norm)
    if rng.random() < 0.5:        # blur a few sections (focus varies between sections)
        for k in np.flatnonzero(rng.random(nz) < 0.3):
            norm[k] = ndi.gaussian_filter(norm[k], rng.uniform(0.3, 1.2))
    gamma = np.exp(rng.normal(0.0, 0.25, nz)).astype(np.float32)[:, None, None]
    contrast = np.exp(rng.normal(0.0, 0.15, nz)).astype(np.float32)[:, None, None]
    shift = rng.normal(0.0, 0.06, nz).astype(np.float32)[:, None, None]
    norm = (np.clip(norm, 0, 1) ** gamma - 0.5) * contrast + shift
    norm += rng.normal(0.0, rng.uniform(0.0, 0.06), norm.shape).astype(np.float32)
    return np.ascontiguousarray(norm, np.float32), np.ascontiguousarray(labels)


def _weighted_bce(logits, target, mask):
    """Mean BCE over masked voxels, positives and negatives of each channel weighted equally."""
    import torch
    import torch.nn.functional as F

    dims = (0, 2, 3, 4)
    n = mask.sum(dims).clamp(min=1)
    pos = (target * mask).sum(dims) / n
    pos = pos.clamp(0.01, 0.99)[None, :, None, None, None]
    w = torch.where(target > 0.5, 0.5 / pos, 0.5 / (1 - pos)) * mask
    return (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * w).sum() / mask.sum().clamp(min=1)


def threshold_segment(aff: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """A quick segmentation for sanity numbers only: 3D connected components (6-connected) of the
    voxels whose three short-range affinities all exceed ``threshold``, grown into the rest
    (nearest label), uint32. Not the real post-processing (:mod:`neurorecon.em.agglomerate`).

    The minimum, not the mean: only the voxel on one side of an interface has a low affinity
    (to its neighbour across), so the mean of three is 2/3 on a true boundary and a threshold
    of it would join everything."""
    inside = aff[:3].min(0) > threshold
    lab, _ = ndi.label(inside)
    if lab.any() and not lab.all():
        # Nearest label, sections 2.5 pixels apart (40 / 16 nm), so a section with nothing
        # inside (a missing one) takes its neighbours' labels.
        idx = ndi.distance_transform_edt(lab == 0, sampling=(2.5, 1.0, 1.0), return_distances=False, return_indices=True)
        lab = lab[tuple(idx)]
    return lab.astype(np.uint32)


def watershed_segment(aff: np.ndarray) -> np.ndarray:
    """A second quick segmentation for sanity numbers: the watershed baseline's own 2D seeded
    watershed and section linking (:mod:`neurorecon.em.watershed`, default settings, untuned
    here) run on the learned boundary map ``1 - mean(y, x short-range affinities)`` instead of
    its hand-made membrane map, so the difference from the baseline is the map alone. uint32."""
    from .watershed import WatershedParams, _components, link_sections, watershed_sections

    params = WatershedParams()
    membrane = (1.0 - 0.5 * (aff[1] + aff[2])).astype(np.float32)
    pieces, counts = watershed_sections(membrane, params)
    starts = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
    lab = np.where(pieces > 0, pieces + starts[:, None, None], 0)
    links = [link_sections(lab[k - 1], lab[k], params.link_overlap) for k in range(1, len(lab))]
    links = np.concatenate(links) if links else np.zeros((0, 2), np.int64)
    lut = _components(int(counts.sum()) + 1, links[:, 0], links[:, 1])
    return lut[lab].astype(np.uint32)


def _validation_set(labels, patch, seed):
    """N_VALID crops of the validation sections, rendered once: (image, labels) pairs."""
    regions, nuclei = training_regions(labels, (VALID_FROM, labels.shape[0]))
    rng = np.random.default_rng([seed, 7919])
    size = (min(patch[0], labels.shape[0] - VALID_FROM), patch[1], patch[2])
    return [sample_patch(regions, nuclei, size, rng, warp=False) for _ in range(N_VALID)]


def _validate(model, valid, offsets) -> dict:
    import torch

    from .metrics import adapted_rand_error, voi

    losses, vois, arands = [], [], []
    model.eval()
    with torch.inference_mode():
        for image, lab in valid:
            aff, mask = affinity_targets(lab, offsets)
            logits = model.logits(torch.from_numpy(image)[None, None])
            losses.append(float(_weighted_bce(logits, torch.from_numpy(aff[None]).float(), torch.from_numpy(mask[None]).float())))
            seg = threshold_segment(torch.sigmoid(logits)[0].numpy())
            vois.append(sum(voi(seg, lab)))
            arands.append(adapted_rand_error(seg, lab)[0])
    model.train()
    return {"loss": float(np.mean(losses)), "voi": float(np.mean(vois)), "arand": float(np.mean(arands))}


def train_affinity_model(out: str | Path, *, steps: int = 2000, seed: int = 0, batch: int = 1,
                         patch: Sequence[int] = (16, 128, 128), base: int = 16, lr: float = 1e-3,
                         validate_every: int = 250, max_minutes: float | None = None,
                         labels: np.ndarray | None = None, num_threads: int = 2,
                         log: Callable[[str], None] = print) -> dict:
    """Train the affinity U-Net and write ``out/affinities.pt`` and ``out/affinities.json``.

    Parameters
    ----------
    out : folder
        Written to (weights and settings), also every ``validate_every`` steps, so a stopped run
        leaves its latest weights.
    steps, batch, patch (z, y, x), base, lr :
        Adam with this learning rate, the last 30 % of the steps decaying it (cosine) to 5 %.
    seed : int
        Everything random (patches, styles, augmentation, initial weights) comes from it.
    validate_every : int
        Steps between validation rounds (and saves).
    max_minutes : float, optional
        Stop (and save) after this much wall time, whatever ``steps`` says.
    labels : numpy.ndarray, optional
        The pinky40 labels (default: :func:`~neurorecon.synth.em.load_pinky40`).
    log : callable(str)
        Progress lines (loss every 25 steps, validation).

    Returns
    -------
    dict
        The settings and the training record, as written to ``affinities.json``.
    """
    import torch

    from .unet import AffinityUNet, save_affinity_model

    patch = tuple(int(p) for p in patch)
    if len(patch) != 3 or min(patch) < 1 or patch[1] % 4 or patch[2] % 4:
        raise ValueError(f"patch must be (z, y, x) with y and x multiples of 4, got {patch}")
    if steps < 1 or batch < 1:
        raise ValueError("steps and batch must be at least 1")
    if labels is None:
        from ..synth.em import load_pinky40

        labels, _ = load_pinky40()
    torch.set_num_threads(num_threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    out = Path(out)
    offsets = OFFSETS
    regions, nuclei = training_regions(labels, (0, VALID_FROM))
    valid = _validation_set(labels, patch, seed)
    model = AffinityUNet(len(offsets), base)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    decay_from = int(0.7 * steps)

    def lr_at(step):
        if step < decay_from:
            return lr
        t = (step - decay_from) / max(1, steps - decay_from)
        return lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * t)))

    meta = {"offsets": [list(o) for o in offsets], "base": base, "voxel_nm": [40.0, 16.0, 16.0],
            "training": {"seed": seed, "steps": steps, "batch": batch, "patch": list(patch), "lr": lr,
                         "data": "pinky40 training region (x < 256 or y < 256), z < %d; random training styles" % VALID_FROM,
                         "validation": f"{N_VALID} crops of the training region at z >= {VALID_FROM}"},
            "history": []}
    first = _validate(model, valid, offsets)      # the untrained model: what training improved on
    first.update(step=0, train_loss=None, minutes=0.0)
    meta["history"].append(first)
    start = time.monotonic()
    running, done = [], 0
    for step in range(1, steps + 1):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        pairs = [sample_patch(regions, nuclei, patch, rng) for _ in range(batch)]
        x = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None]
        tm = [affinity_targets(p[1], offsets) for p in pairs]
        y = torch.from_numpy(np.stack([t[0] for t in tm])).float()
        mask = torch.from_numpy(np.stack([t[1] for t in tm])).float()
        loss = _weighted_bce(model.logits(x), y, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        running.append(loss.item())
        done = step
        minutes = (time.monotonic() - start) / 60
        out_of_time = max_minutes is not None and minutes >= max_minutes
        if step % 25 == 0:
            log(f"step {step}/{steps} loss {np.mean(running[-25:]):.4f} lr {lr_at(step):.2e} {minutes:.1f} min")
        if step % validate_every == 0 or step == steps or out_of_time:
            v = _validate(model, valid, offsets)
            v.update(step=step, train_loss=float(np.mean(running[-validate_every:])), minutes=round(minutes, 2))
            meta["history"].append(v)
            log(f"validation step {step}: loss {v['loss']:.4f} VOI {v['voi']:.3f} ARand {v['arand']:.4f}")
            meta["training"]["steps_done"] = done
            meta["training"]["minutes"] = round(minutes, 2)
            save_affinity_model(model, out / "affinities.pt", meta)
        if out_of_time:
            log(f"stopped after {minutes:.1f} minutes ({step} steps)")
            break
    meta["train_losses"] = [round(v, 5) for v in running]
    return meta


def sanity_scores(split: str = "heldout", model=None, n: int = 4, size: Sequence[int] = (32, 192, 192),
                  seed: int = 2024, threshold: float = 0.5, labels: np.ndarray | None = None) -> dict:
    """VOI / adapted Rand error of the model (with :func:`threshold_segment` and with
    :func:`watershed_segment`) beside the watershed baseline on the same ``n`` rendered crops.

    ``split="heldout"``: crops of the HELD-OUT block (x, y >= 256) in the held-back ``sem`` style,
    for reporting once (nothing is tuned on it). ``split="valid"``: crops of the validation
    sections of the training region (z >= :data:`VALID_FROM`) in random training styles.
    """
    from ..synth.em import (HELDOUT_STYLE, PINKY40_VOXEL_NM, STYLES, EMStyle, load_pinky40, nucleus_mask,
                            pinky40_split, random_crop, render_em)
    from .metrics import adapted_rand_error, voi
    from .segment import segment
    from .unet import load_affinity_model, predict_affinities

    if split not in ("heldout", "valid"):
        raise ValueError(f"split must be 'heldout' or 'valid', not {split!r}")
    if labels is None:
        labels, _ = load_pinky40()
    model = load_affinity_model() if model is None else model
    vs = tuple(v / 1000 for v in PINKY40_VOXEL_NM[::-1])        # (vx, vy, vz) µm
    rng = np.random.default_rng(seed)
    if split == "heldout":
        regions = pinky40_split(labels, "heldout")
    else:
        regions, _ = training_regions(labels, (VALID_FROM, labels.shape[0]))
    rows = []
    for i in range(n):
        lab, origin = random_crop(regions, size, rng)
        style = STYLES[HELDOUT_STYLE] if split == "heldout" else EMStyle.random(rng)
        render = render_em(lab, style, rng, nucleus=nucleus_mask(lab))
        t = time.monotonic()
        aff = predict_affinities(render.image, model, vs)
        t_model = time.monotonic() - t
        segs = {"model_threshold_cc": threshold_segment(aff, threshold), "model_watershed": watershed_segment(aff),
                "watershed": segment(render.image, vs, method="watershed")}
        row = {"origin_zyx": [int(o) for o in origin], "style": style.name, "network_seconds": t_model}
        for name, s in segs.items():
            split_, merge = voi(s, render.labels)
            row[name] = {"voi_split": split_, "voi_merge": merge, "voi": split_ + merge,
                         "arand": adapted_rand_error(s, render.labels)[0]}
        rows.append(row)
    mean = {name: {k: float(np.mean([r[name][k] for r in rows])) for k in ("voi_split", "voi_merge", "voi", "arand")}
            for name in segs}
    return {"split": split, "crops": rows, "mean": mean, "size_zyx": list(size), "seed": seed}


if __name__ == "__main__":       # python -m neurorecon.em.train_seg [valid|heldout]: the sanity numbers
    import sys

    print(json.dumps(sanity_scores(sys.argv[1] if len(sys.argv) > 1 else "valid"), indent=1))
