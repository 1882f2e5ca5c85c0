"""The compiled helpers (``neurorecon/_native.c``), or None where they were not built.

The package installs with pip alone: ``setup.py`` builds the helpers when a C compiler is there
and goes on without them when not, and every caller has a numpy path that gives the same result.
``NEURORECON_NATIVE=0`` in the environment turns them off (tests compare the two paths with it).
"""

from __future__ import annotations

import os


def _load():
    if os.environ.get("NEURORECON_NATIVE", "1") == "0":
        return None
    try:
        from . import _native
    except ImportError:
        return None
    return _native


lib = _load()
