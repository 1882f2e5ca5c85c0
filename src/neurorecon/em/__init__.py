"""Electron microscopy: dense neurite segmentation (:func:`segment`)."""

from .segment import METHODS, SegmentError, segment

__all__ = ["METHODS", "SegmentError", "segment"]
