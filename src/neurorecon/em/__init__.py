"""Electron-microscopy segmentations: metrics against dense and skeleton ground truth."""

from .metrics import adapted_rand_error, contingency_table, voi
from .skeleton_metrics import expected_run_length, read_skeletons, skeleton_metrics, summarize

__all__ = ["adapted_rand_error", "contingency_table", "expected_run_length", "read_skeletons", "skeleton_metrics",
           "summarize", "voi"]
