"""The check registry. Each check is a function ``(ctx) -> list[Finding]`` registered under a
stable id with a default severity, a one-line summary and the peer tools it stands in for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..findings import Severity


@dataclass(frozen=True)
class CheckSpec:
    id: str
    severity: Severity
    summary: str
    func: Callable
    fixable: bool = False


CHECKS: dict[str, CheckSpec] = {}


def check(id: str, severity: Severity, summary: str, *, fixable: bool = False):
    def register(func):
        if id in CHECKS:
            raise RuntimeError(f"check id {id!r} registered twice")
        CHECKS[id] = CheckSpec(id, severity, summary, func, fixable)
        return func

    return register


# Registration happens on import; the order here is the order of the report.
from . import structure, geometry, branching, types, radii  # noqa: E402,F401
