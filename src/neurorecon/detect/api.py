"""Score every node of a trace against its image: p(error), the reason, and a proposed correction.

Usage (tests/test_detect.py runs the same on generated images)::

    from neurorecon.detect import detect_file
    result = detect_file("trace.swc", "image.tif", voxel_size=(0.3, 0.3, 1.0))
    result.write_csv("scores.csv")

Before any node is scored the image's coverage of the trace is measured
(:mod:`neurorecon.detect.coverage`): nodes outside the image are not scored (p_error NaN, an empty
cell in SCORES.csv, reason ``outside_image``), and an image that holds less than half of the trace,
or a voxel size at which the trace does not lie on the image's fibres, is a :class:`CoverageError`
unless ``force=True``.
"""

from __future__ import annotations

import importlib
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..morphology.neuron import Neuron
from ..qc.findings import Finding, Fix, Severity, make_finding
from .correct import propose
from .coverage import Coverage, measure_coverage
from .features import FeatureTable, compute_features

THRESHOLD = 0.5
#: Median node spacing (µm) of the training traces; outside it the detector has not been measured.
TRAINED_SPACING_UM = (1.0, 3.5)


#: The reason of the nodes the image does not cover (not scored).
OUTSIDE = "outside_image"


class DetectError(ValueError):
    pass


class CoverageError(DetectError):
    """The image does not hold the trace, or the voxel size does not fit it (one line: what was found)."""


@dataclass
class Detection:
    neuron: Neuron
    p_error: np.ndarray
    reason: np.ndarray            # error type per node ("" where not flagged, OUTSIDE where not scored)
    fixes: list                   # Fix or None per node
    features: FeatureTable
    threshold: float = THRESHOLD
    coverage: Coverage | None = None   # what the image covers; p_error is NaN where it does not

    @property
    def flagged(self) -> np.ndarray:
        return self.p_error >= self.threshold          # False where NaN (not scored)

    @property
    def scored(self) -> np.ndarray:
        return np.isfinite(self.p_error)

    @property
    def warnings(self) -> list[str]:
        """What the reviewer should know before trusting the flags."""
        lo, hi = TRAINED_SPACING_UM
        s = self.features.spacing
        out = [f"scored anyway (forced): {self.coverage.problem}"] if self.coverage and self.coverage.problem else []
        if len(self.neuron) > 1 and not lo * 0.9 <= s <= hi * 1.1:
            out.append(f"median node spacing {s:.2f} µm is outside the {lo:g}-{hi:g} µm the detector was trained on: "
                       "its flags are less reliable")
        return out

    def findings(self) -> list[Finding]:
        """Flagged nodes as check-report findings (check id ``detector.<reason>``), highest p first."""
        rows = np.flatnonzero(self.flagged)
        rows = rows[np.argsort(-self.p_error[rows], kind="stable")]
        return [make_finding(f"detector.{self.reason[r]}", Severity.WARNING, self.neuron, [r],
                             f"p(error) = {self.p_error[r]:.2f}: {REASON_TEXT.get(self.reason[r], self.reason[r])}",
                             self.fixes[r]) for r in rows.tolist()]

    def to_csv(self) -> str:
        """SCORES.csv text: one ``%`` format per line over the columns as Python lists (np.char
        formats element by element too, and then joins the columns pairwise: 4x slower)."""
        fix = [""] * len(self.neuron)
        for r in np.flatnonzero([f is not None for f in self.fixes]).tolist():
            text = json.dumps(self.fixes[r].to_dict(), separators=(",", ":"))
            fix[r] = '"' + text.replace('"', '""') + '"'     # CSV quoting: the JSON holds commas
        xyz = self.neuron.xyz.T.tolist()
        p, line = self.p_error.tolist(), "%d,%.5f,%d,%s,%.4f,%.4f,%.4f,%s\n"
        if not self.scored.all():         # nodes not scored: an empty p_error cell
            p, line = ["" if v != v else "%.5f" % v for v in p], line.replace("%.5f", "%s", 1)
        cols = (self.neuron.ids.tolist(), p, self.flagged.view(np.int8).tolist(), self.reason.tolist(), *xyz, fix)
        return "node_id,p_error,flag,reason,x,y,z,fix\n" + "".join([line % row for row in zip(*cols)])

    def write_csv(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        from ..io.atomic import atomic_write_text

        path = Path(path)
        if path.exists() and not overwrite:
            raise DetectError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
        return atomic_write_text(path, self.to_csv())


#: What each reason means, in words (the HTML report and the review viewer show it).
REASON_TEXT = {
    "off_signal_z": "the node lies off the fibre in depth (z)",
    "off_signal_xy": "the node lies beside the fibre",
    "jump": "the trace leaves its fibre and follows a neighbouring one",
    "gap": "the fibre continues between two trace ends that are not connected",
    "loop": "a cross-link joins two branches through background",
    "wrong_type": "the node type disagrees with the rest of its branch",
    "spur": "a side branch runs into background",
    "early_stop": "the trace stops while the fibre goes on",
    "overextension": "the trace runs on past the end of the fibre",
}


def detect(neuron: Neuron, volume, *, detector=None, threshold: float = THRESHOLD, progress=None,
           force: bool = False, coverage: Coverage | None = None) -> Detection:
    """Score ``neuron`` (µm) against ``volume`` (a :class:`neurorecon.io.volume.Volume`).

    Parameters
    ----------
    neuron : Neuron
        The trace.
    volume : Volume
        Its image.
    detector : Detector or concurrent.futures.Future, optional
        The model (:func:`neurorecon.detect.model.load_detector`), or a future that will hold it
        (the CLI loads it in a thread meanwhile); None: the shipped one, loaded in a
        worker thread while the features are computed (importing LightGBM and parsing the trees
        take ~0.4 s, on a core the feature computation leaves partly idle).
    threshold : float
        Nodes with p(error) at or above it are flagged, given a reason and maybe a correction.
    progress : callable, optional
        Called with the number of nodes measured, as they are.
    force : bool
        Score even when the coverage check fails (nodes outside the image are still not scored).
    coverage : Coverage, optional
        :func:`neurorecon.detect.coverage.measure_coverage` of this trace and image, if already
        measured (the CLI does, before the model loads).

    Returns
    -------
    Detection

    Raises
    ------
    CoverageError
        Less than half the trace inside the image, or a trace that does not lie on the image's
        fibres at its voxel size (see :mod:`neurorecon.detect.coverage`); not with ``force``.
    """
    from .model import load_detector

    cov = coverage if coverage is not None else measure_coverage(neuron.xyz, volume, neuron.parent)
    if cov.problem and not force:
        raise CoverageError(cov.problem)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="neurorecon-model") as ex:
        if detector is None:
            detector = ex.submit(load_detector)
        # The corrections sample the image through scipy.ndimage, whose import (~0.15 s: it brings
        # scipy.special) is done by the worker too, rather than between inference and the output.
        ex.submit(_import_after, detector, "scipy.ndimage")
        ft = compute_features(neuron, volume, progress=progress)
        if isinstance(detector, Future):
            detector = detector.result()
    p, reason = detector.predict(ft.X, ft.names, ft.parent, reason_threshold=threshold)
    p = np.where(cov.covered, p, np.nan)
    reason = np.where(cov.covered, reason, OUTSIDE)
    flagged = p >= threshold
    bg = float(np.nanmedian(ft.raw.background)) if np.isfinite(ft.raw.background).any() else 0.0
    contrast = float(np.median(ft.contrast)) if len(ft.contrast) else 1.0

    def sample_line(a, b):
        return _line_min(volume, a, b, bg, contrast)

    from .refine import refine_moves

    parent = np.where(neuron.in_cycle, -1, neuron.parent)     # as in the features: no walks round a cycle
    move_to = refine_moves(volume, neuron.xyz, parent, flagged, reason, ft.raw.background, ft.contrast)
    moving = np.isfinite(move_to).all(1)
    fixes = propose(neuron, p, flagged, reason, np.where(moving[:, None], move_to - neuron.xyz, 0.0), moving,
                    sample_line)
    return Detection(neuron, p, reason, fixes, ft, threshold, cov)


def _import_after(loading, module: str) -> None:
    """Import ``module`` once ``loading`` (a future) is done: LightGBM's import brings parts of scipy
    too, and two threads importing parts of one package at the same time can each find the other's
    modules half-initialised (an ImportError)."""
    if isinstance(loading, Future):
        try:
            loading.result()
        except Exception:     # raised again where the model is needed
            pass
    importlib.import_module(module)


def _line_min(volume, a: np.ndarray, b: np.ndarray, bg: float, contrast: float) -> np.ndarray:
    """Normalised minimum intensity along straight segments (lightly smoothed; ends excluded)."""
    from scipy.ndimage import gaussian_filter

    vs = np.asarray(volume.voxel_size, float)
    out = np.zeros(len(a))
    for k in range(len(a)):
        lo, hi = volume.box_around(np.minimum(a[k], b[k]) - 3, np.maximum(a[k], b[k]) + 3)
        img = gaussian_filter(volume.read(tuple(lo), tuple(hi)).astype(np.float32), 0.6 / vs[::-1])
        t = np.linspace(0.15, 0.85, 8)
        pts = a[k] + t[:, None] * (b[k] - a[k])
        idx = np.clip(np.rint(pts[:, ::-1] / vs[::-1]).astype(int) - lo, 0, np.array(img.shape) - 1)
        out[k] = (img[idx[:, 0], idx[:, 1], idx[:, 2]].min() - bg) / max(contrast, 1e-6)
    return out


def detect_file(trace: str | os.PathLike, image, voxel_size=None, **kw) -> Detection:
    """Read an SWC and an image (any source :func:`neurorecon.io.volume.open_volume` takes) and score it."""
    from ..io.swc import read_swc
    from ..io.volume import open_volume

    neuron = read_swc(trace)
    volume = open_volume(image, voxel_size=voxel_size)
    if voxel_size is None and not getattr(volume, "voxel_size_known", True):
        raise DetectError(f"{image}: the voxel size is not recorded in the file; give it (--voxel-size VX VY VZ)")
    return detect(neuron, volume, **kw)


__all__ = ["CoverageError", "Detection", "DetectError", "OUTSIDE", "detect", "detect_file", "Fix"]
