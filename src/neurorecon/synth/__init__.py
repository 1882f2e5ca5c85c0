"""Synthetic training and test data: rendered images, traces and per-node error labels.

For now the light-microscopy (fMOST-like) side: :mod:`~neurorecon.synth.render` draws fibres into
3D images, :mod:`~neurorecon.synth.arbors` grows random arbors, :mod:`~neurorecon.synth.errors`
injects labelled tracing errors and :mod:`~neurorecon.synth.samples` puts these together into
benchmark crops (``neurorecon synth``). An electron-microscopy renderer (``synth/em.py``) is to join.

This package sits below :mod:`neurorecon.detect`: it uses only :mod:`neurorecon.io` and
:mod:`neurorecon.morphology`. The names below are imported lazily, so that ``import
neurorecon.synth`` stays cheap. The render function itself is :func:`neurorecon.synth.render.render`
(``neurorecon.synth.render`` is the module, so it cannot also be the function).
"""

from __future__ import annotations

import importlib

_WHERE = {
    "Imaging": "render", "Fibres": "render", "fibre_density": "render",
    "ArborStyle": "arbors", "grow_arbor": "arbors", "random_style": "arbors", "synthetic_arbors": "arbors",
    "ERROR_TYPES": "errors", "ERROR_CODE": "errors", "INJECTORS": "errors", "Scene": "errors", "Trace": "errors",
    "Sample": "samples", "make_sample": "samples", "gold_from_neuron": "samples", "resample_rows": "samples",
    "write_sample": "samples",
}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
