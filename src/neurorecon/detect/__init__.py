"""AI error detection: per-node features, the learned detector, corrections, benchmarks.

The training and test data it learns from and is measured on are made by :mod:`neurorecon.synth`.

The public entry points are :func:`detect` / :func:`detect_file` (score a trace against its image)
and :func:`neurorecon.detect.evaluate.evaluate` (metrics against labels). Submodules are imported
lazily so that ``import neurorecon.detect`` stays cheap.
"""

from __future__ import annotations


def __getattr__(name):
    if name in ("detect", "detect_file", "Detection", "DetectError"):
        from . import api

        return getattr(api, name)
    raise AttributeError(name)
