"""What a check reports: findings, their severities and the fixes they propose."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class Severity(enum.IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2

    @classmethod
    def parse(cls, text: str) -> "Severity":
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r}; use one of: error, warning, info") from None

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Fix:
    """A proposed edit, in the vocabulary of :mod:`neurorecon.qc.fixes`.

    ``action`` is one of the fix actions (e.g. ``"reparent"``, ``"delete"``, ``"relabel"``) and
    ``params`` carries node ids and values; both are plain JSON.
    """

    action: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, **self.params}


@dataclass(frozen=True)
class Finding:
    """One problem at one place in a reconstruction."""

    check: str
    severity: Severity
    node_ids: tuple[int, ...]
    xyz: tuple[tuple[float, float, float], ...]
    message: str
    fix: Fix | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": str(self.severity),
            "node_ids": list(self.node_ids),
            "xyz": [list(p) for p in self.xyz],
            "message": self.message,
            "fix": self.fix.to_dict() if self.fix else None,
        }


def make_finding(check, severity, neuron, rows, message, fix=None) -> Finding:
    """A finding about the given rows of ``neuron`` (ids and positions taken from it)."""
    rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
    return Finding(
        check=check,
        severity=severity,
        node_ids=tuple(neuron.ids[rows].tolist()),
        xyz=tuple(tuple(round(v, 4) for v in p) for p in neuron.xyz[rows].tolist()),
        message=message,
        fix=fix,
    )
