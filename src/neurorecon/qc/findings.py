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

    def describe(self, neuron=None) -> str:
        """The edit in plain English; see :func:`describe_fix`."""
        return describe_fix(self, neuron)


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
            "fix_text": self.fix.describe() if self.fix else None,
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


#: Names of the SWC types, for fixes in words.
TYPE_NAMES = {0: "undefined", 1: "soma", 2: "axon", 3: "basal dendrite", 4: "apical dendrite"}


def describe_fix(fix: "Fix | dict | None", neuron=None) -> str:
    """A proposed fix in a few plain words, for people (terminal, JSON ``fix_text``, HTML, viewer).

    Parameters
    ----------
    fix : Fix, dict or None
        A :class:`Fix`, or its :meth:`Fix.to_dict` form (``{"action": ..., **params}``).
    neuron : Neuron, optional
        The reconstruction the fix is for; with it the text gives sizes (nodes a prune removes,
        the length of a bridge, how far a node moves).

    Returns
    -------
    str
        ``"no proposed fix"`` for None.

    Examples
    --------
    >>> describe_fix({"action": "move", "node_id": 12, "xyz": [10.2, 3.1, 4.0]})
    'move node 12 to (10.20, 3.10, 4.00) µm'
    >>> describe_fix(Fix("bridge", {"node_id": 5, "parent_id": 9}))
    'bridge node 5 to node 9'
    >>> describe_fix({"action": "relabel", "node_ids": [3, 4, 5], "type": 3})
    'relabel 3 nodes (3, 4, 5) as basal dendrite (type 3)'
    """
    if not fix:
        return "no proposed fix"
    d = fix.to_dict() if isinstance(fix, Fix) else dict(fix)
    action = str(d.pop("action", "?"))
    text = _PHRASES.get(action, _generic)(d, neuron)
    return text if action in _PHRASES else f"{action.replace('_', ' ')} {text}".strip()


def _ids(ids, limit: int = 4) -> str:
    ids = [int(i) for i in ids]
    head = ", ".join(map(str, ids[:limit]))
    return head + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def _nodes(ids) -> str:
    ids = list(ids)
    return f"node {int(ids[0])}" if len(ids) == 1 else f"{len(ids)} nodes ({_ids(ids)})"


def _at(xyz) -> str:
    return "(" + ", ".join(f"{float(v):.2f}" for v in xyz) + ") µm"


def _rows(neuron, *ids):
    """Rows of ``ids`` in ``neuron``; None if there is no neuron or an id is not (uniquely) in it."""
    if neuron is None:
        return None
    rows = neuron.index_of(np.asarray(ids, dtype=np.int64))
    return None if (rows < 0).any() else rows


def _move(d, neuron) -> str:
    xyz = np.asarray(d.get("xyz", []), dtype=float)
    if "node_ids" in d and xyz.ndim == 2:          # one fix moving a run of nodes
        return f"move {_nodes(d['node_ids'])} onto the fibre"
    node = d.get("node_id")
    text = f"move node {node} to {_at(xyz)}"
    rows = _rows(neuron, node)
    if rows is not None and xyz.shape == (3,):
        text += f", {float(np.linalg.norm(xyz - neuron.xyz[rows[0]])):.1f} µm away"
    return text


def _prune(d, neuron) -> str:
    node = d.get("node_id")
    rows = _rows(neuron, node)
    if rows is None:
        return f"prune node {node} and everything below it"
    from ..morphology.graph import subtree_mask

    k = int(subtree_mask(neuron.parent, int(rows[0])).sum())
    return f"prune {k} node{'s' if k != 1 else ''} from node {node}"


def _bridge(d, neuron) -> str:
    node, to = d.get("node_id"), d.get("parent_id")
    rows = _rows(neuron, node, to)
    gap = "" if rows is None else f" ({float(np.linalg.norm(neuron.xyz[rows[0]] - neuron.xyz[rows[1]])):.1f} µm)"
    return f"bridge node {node} to node {to}{gap}"


def _relabel(d, neuron) -> str:
    t = d.get("type")
    name = TYPE_NAMES.get(int(t), "type") if isinstance(t, (int, np.integer)) else "type"
    ids = d.get("node_ids") or ([d["node_id"]] if "node_id" in d else [])
    return f"relabel {_nodes(ids)} as {name} (type {t})"


def _generic(d, neuron) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items())


_PHRASES = {
    "move": _move,
    "prune": _prune,
    "bridge": _bridge,
    "relabel": _relabel,
    "merge": lambda d, n: f"merge node {d.get('node_id')} into node {d.get('into_id')}",
    "cut": lambda d, n: f"cut node {d.get('node_id')} from its parent",
    "delete": lambda d, n: f"delete node {d.get('node_id')} (its children join its parent)",
    "drop_duplicate": lambda d, n: f"drop copy {int(d.get('occurrence', 1)) + 1} of node {d.get('node_id')} (an exact repeat)",
    "renumber": lambda d, n: f"give copy {int(d.get('occurrence', 1)) + 1} of node {d.get('node_id')} a new id",
    "reindex": lambda d, n: "renumber the nodes 1..N",
}
