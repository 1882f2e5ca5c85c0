"""Electron-microscopy segmentations: metrics against dense and skeleton ground truth."""

from .metrics import adapted_rand_error, contingency_table, voi

__all__ = ["adapted_rand_error", "contingency_table", "voi"]
