"""Where the project's shared real data lives: ``../shared/data`` beside the repository, or
``$NEURORECON_DATA``. Training, benchmarks and tests read it; the shipped package never needs it."""

from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repository (or $NEURORECON_DATA)."""
    env = os.environ.get("NEURORECON_DATA")
    if env:
        return Path(env)
    for up in Path(__file__).resolve().parents:
        cand = up.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return Path("../shared/data")
