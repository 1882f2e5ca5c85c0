"""Electron microscopy: dense neurite segmentation (:func:`segment`) and metrics against dense and
skeleton ground truth; affinity targets and the learned affinity model (:func:`predict_affinities`,
:func:`load_affinity_model`, which import torch on first use)."""

from .affinities import OFFSETS, affinity_targets
from .agglomerate import agglomerate
from .metrics import adapted_rand_error, contingency_table, voi
from .segment import METHODS, SegmentError, segment
from .skeleton_metrics import expected_run_length, read_skeletons, skeleton_metrics, summarize

__all__ = ["METHODS", "OFFSETS", "SegmentError", "adapted_rand_error", "affinity_targets", "agglomerate", "contingency_table",
           "expected_run_length", "load_affinity_model", "predict_affinities", "read_skeletons", "segment",
           "skeleton_metrics", "summarize", "voi"]


def __getattr__(name: str):
    # torch takes ~1 s to import: only code that uses the model pays for it.
    if name in ("load_affinity_model", "predict_affinities"):
        from . import unet

        return getattr(unet, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
