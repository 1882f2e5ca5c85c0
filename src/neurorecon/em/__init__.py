"""Electron microscopy: dense neurite segmentation (:func:`segment`) and metrics against dense and
skeleton ground truth."""

from .agglomerate import agglomerate
from .metrics import adapted_rand_error, contingency_table, voi
from .segment import METHODS, SegmentError, segment
from .skeleton_metrics import expected_run_length, read_skeletons, skeleton_metrics, summarize

__all__ = ["METHODS", "SegmentError", "agglomerate", "adapted_rand_error", "contingency_table", "expected_run_length", "read_skeletons",
           "segment", "skeleton_metrics", "summarize", "voi"]
