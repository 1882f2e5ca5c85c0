"""What a reviewer looks at: rule findings and detector scores as one list of flags, by priority.

Priority (first reviewed first):

1. rule findings of severity *error* (a broken structure is certain, whatever the image shows);
2. detector flags, ``p_error`` descending;
3. rule findings of severity *warning*, then *info*.

Ties keep the order the checks report (severity, then check) or the node order of SCORES.csv.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..morphology.neuron import Neuron

__all__ = ["Flag", "ScoresError", "rule_flags", "read_scores", "collect_flags", "order_flags"]

_TIER = {("rule", "error"): 0, ("detector", "warning"): 1, ("rule", "warning"): 2, ("rule", "info"): 3}
#: What the ``priority`` shown in the viewer (0..1, colour) is for rule findings.
_RULE_PRIORITY = {"error": 1.0, "warning": 0.5, "info": 0.25}
SCORE_COLUMNS = ("node_id", "p_error", "flag", "reason", "x", "y", "z", "fix")


class ScoresError(ValueError):
    """A SCORES.csv that cannot be read; the one-line message names the file and line."""


@dataclass(frozen=True)
class Flag:
    """One place to review.

    Attributes
    ----------
    key : str
        Unique within a review (``detector:<node>`` or ``<check>:<node>``).
    node_id : int
        The node the view jumps to (the first of ``node_ids``).
    xyz : tuple of float
        Its position, µm.
    source : str
        ``"rule"`` or ``"detector"``.
    check : str
        The check id, or ``detector.<reason>``.
    reason : str
        What is wrong, in words.
    p : float or None
        The detector's p(error); None for rule findings.
    severity : str
        ``error``, ``warning`` or ``info`` (detector flags are warnings).
    fix : dict or None
        The proposed correction, ``{"action": ..., **params}`` as in :mod:`neurorecon.qc.fixes`.
    node_ids : tuple of int
        Every node the finding names.
    """

    key: str
    node_id: int
    xyz: tuple[float, float, float]
    source: str
    check: str
    reason: str
    p: float | None
    severity: str
    fix: dict | None
    node_ids: tuple[int, ...] = ()

    @property
    def priority(self) -> float:
        """0..1, for colouring: p for detector flags, by severity for rule findings."""
        return float(self.p) if self.p is not None else _RULE_PRIORITY.get(self.severity, 0.5)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["xyz"], d["node_ids"] = list(self.xyz), list(self.node_ids)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Flag":
        """The inverse of :meth:`to_dict`; raises KeyError/TypeError/ValueError on bad input."""
        xyz = tuple(float(v) for v in d["xyz"])
        if len(xyz) != 3:
            raise ValueError("xyz needs 3 numbers")
        fix = d.get("fix")
        if fix is not None and not (isinstance(fix, dict) and isinstance(fix.get("action"), str)):
            raise ValueError("fix must be an object with an action")
        p = d.get("p")
        return cls(str(d["key"]), int(d["node_id"]), xyz, str(d["source"]), str(d["check"]), str(d.get("reason", "")),
                   None if p is None else float(p), str(d.get("severity", "warning")), fix,
                   tuple(int(i) for i in d.get("node_ids") or [d["node_id"]]))

    def describe_fix(self) -> str:
        """The proposed correction in a few words (``no proposed fix`` when there is none).

        Examples
        --------
        >>> f = Flag("detector:5", 5, (0, 0, 0), "detector", "detector.spur", "spur", 0.9, "warning",
        ...          {"action": "prune", "node_id": 5})
        >>> f.describe_fix()
        'prune node 5 and everything below it'
        """
        return describe_fix(self.fix)


def describe_fix(fix: dict | None) -> str:
    """A fix dict in words."""
    if not fix:
        return "no proposed fix"
    a, node = fix.get("action"), fix.get("node_id")
    if a == "move":
        return f"move node {node} to ({', '.join(f'{float(v):.2f}' for v in fix.get('xyz', []))})"
    if a == "prune":
        return f"prune node {node} and everything below it"
    if a == "relabel":
        ids = fix.get("node_ids", [])
        return f"relabel {'node ' + str(ids[0]) if len(ids) == 1 else f'{len(ids)} nodes'} as type {fix.get('type')}"
    if a == "bridge":
        return f"connect node {node} to node {fix.get('parent_id')}"
    if a == "merge":
        return f"merge node {node} into node {fix.get('into_id')}"
    if a in ("cut", "delete", "drop_duplicate", "renumber"):
        return f"{a.replace('_', ' ')} node {node}"
    return str(a)


# ------------------------------------------------------------------------------- rule findings
def rule_flags(neuron: Neuron, config=None) -> list[Flag]:
    """The check findings on ``neuron`` that name nodes, as flags (check order).

    Parameters
    ----------
    neuron : Neuron
    config : CheckConfig, optional

    Returns
    -------
    list of Flag
    """
    from ..qc.run import check_neuron

    out, seen = [], set()
    for f in check_neuron(neuron, config):
        if not f.node_ids:       # a whole-neuron finding (no soma, a missing neurite): nowhere to go
            continue
        key = _unique(f"{f.check}:{f.node_ids[0]}", seen)
        out.append(Flag(key, int(f.node_ids[0]), tuple(float(v) for v in f.xyz[0]), "rule", f.check, f.message, None,
                        str(f.severity), f.fix.to_dict() if f.fix else None, tuple(int(i) for i in f.node_ids)))
    return out


def _unique(key: str, seen: set) -> str:
    k, n = key, 1
    while k in seen:
        n += 1
        k = f"{key}#{n}"
    seen.add(k)
    return k


# ------------------------------------------------------------------------------- SCORES.csv
def read_scores(path: str | os.PathLike, neuron: Neuron, threshold: float = 0.5) -> list[Flag]:
    """Detector flags from a SCORES.csv (``neurorecon detect``): nodes with ``p_error >= threshold``.

    Columns ``node_id`` and ``p_error`` are required; ``reason`` and ``fix`` (a JSON proposed
    correction) are read where present. Positions come from ``neuron``, so every scored node
    must be in it.

    Parameters
    ----------
    path : path-like
    neuron : Neuron
        The trace the scores belong to.
    threshold : float

    Returns
    -------
    list of Flag
        In file order (see :func:`order_flags`).

    Raises
    ------
    ScoresError
        Missing columns, values that are not numbers, p outside [0, 1], bad fix JSON, a node id
        twice or one the trace lacks.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeError) as e:
        raise ScoresError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if r and "".join(r).strip()]
    if not rows:
        raise ScoresError(f"{path}: empty file; expected a header {','.join(SCORE_COLUMNS)}")
    head = [h.strip().lower() for h in rows[0]]
    missing = [c for c in ("node_id", "p_error") if c not in head]
    if missing:
        raise ScoresError(f"{path}: line 1: missing column(s) {', '.join(missing)}; expected {','.join(SCORE_COLUMNS)}")
    col = {c: head.index(c) for c in SCORE_COLUMNS if c in head}
    body = rows[1:]
    short = next((k for k, r in enumerate(body) if len(r) < len(head)), None)
    if short is not None:
        raise ScoresError(f"{path}: line {short + 2}: {len(body[short])} fields, the header has {len(head)}")
    ids = _column(path, body, col["node_id"], "node_id", np.int64)
    p = _column(path, body, col["p_error"], "p_error", np.float64)
    bad = np.flatnonzero(~((p >= 0) & (p <= 1)))
    if len(bad):
        raise ScoresError(f"{path}: line {bad[0] + 2}: p_error {body[bad[0]][col['p_error']]!r} is not in [0, 1]")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ScoresError(f"{path}: node id {uniq[counts > 1][0]} is scored twice")
    rows_in_trace = neuron.index_of(ids)
    if (rows_in_trace < 0).any():
        k = int(np.flatnonzero(rows_in_trace < 0)[0])
        raise ScoresError(f"{path}: line {k + 2}: node {ids[k]} is not in the trace {neuron.source or ''} "
                          "(scores of another trace?)".replace("  ", " "))
    keep = np.flatnonzero(p >= threshold)
    xyz = neuron.xyz[rows_in_trace[keep]].round(4).tolist()
    out = []
    for k, pos in zip(keep.tolist(), xyz):
        r = body[k]
        reason = r[col["reason"]].strip() if "reason" in col else ""
        fix = _fix(path, k + 2, r[col["fix"]]) if "fix" in col else None
        out.append(Flag(f"detector:{ids[k]}", int(ids[k]), tuple(pos), "detector", f"detector.{reason or 'error'}",
                        _explain(reason, p[k]), float(p[k]), "warning", fix, (int(ids[k]),)))
    return out


def _column(path: Path, body: list, k: int, name: str, dtype) -> np.ndarray:
    values = [r[k].strip() for r in body]
    try:
        arr = np.array(values, dtype=np.float64)
    except ValueError:
        bad = next(j for j, v in enumerate(values) if not _is_number(v))
        raise ScoresError(f"{path}: line {bad + 2}: {name} {values[bad]!r} is not a number") from None
    if dtype is np.int64:
        if not np.all(arr == np.round(arr)):
            bad = int(np.flatnonzero(arr != np.round(arr))[0])
            raise ScoresError(f"{path}: line {bad + 2}: node_id {values[bad]!r} is not an integer")
        return arr.astype(np.int64)
    return arr


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _fix(path: Path, line: int, text: str) -> dict | None:
    text = text.strip()
    if not text:
        return None
    try:
        fix = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScoresError(f"{path}: line {line}: the fix is not valid JSON ({e.msg})") from None
    if not isinstance(fix, dict) or not isinstance(fix.get("action"), str):
        raise ScoresError(f"{path}: line {line}: the fix must be a JSON object with an \"action\"")
    return fix


def _explain(reason: str, p: float) -> str:
    from ..detect.api import REASON_TEXT   # the detector's own words for its error types

    return f"p(error) = {p:.2f}: {REASON_TEXT.get(reason, reason or 'possible tracing error')}"


# ------------------------------------------------------------------------------- together
def order_flags(flags: list[Flag]) -> list[Flag]:
    """Flags in review order: rule errors, detector flags by p descending, rule warnings, info.

    Examples
    --------
    >>> mk = lambda key, src, sev, p: Flag(key, 1, (0, 0, 0), src, "c", "", p, sev, None)
    >>> fl = [mk("w", "rule", "warning", None), mk("d1", "detector", "warning", 0.6),
    ...       mk("e", "rule", "error", None), mk("d2", "detector", "warning", 0.9)]
    >>> [f.key for f in order_flags(fl)]
    ['e', 'd2', 'd1', 'w']
    """
    def key(item):
        k, f = item
        return (_TIER.get((f.source, f.severity), 1 if f.source == "detector" else 3), -(f.p or 0.0), k)

    return [f for _, f in sorted(enumerate(flags), key=key)]


def collect_flags(neuron: Neuron, scores: str | os.PathLike | None = None, *, threshold: float = 0.5,
                  config=None, rules: bool = True) -> list[Flag]:
    """Rule findings (if ``rules``) and detector flags (if ``scores``), in review order.

    Parameters
    ----------
    neuron : Neuron
    scores : path-like, optional
        SCORES.csv from ``neurorecon detect``.
    threshold : float
        Detector flags are nodes with p_error at or above it.
    config : CheckConfig, optional
        For the checks.
    rules : bool
        Include the check findings.

    Returns
    -------
    list of Flag
    """
    flags = rule_flags(neuron, config) if rules else []
    if scores is not None:
        flags += read_scores(scores, neuron, threshold)
    return order_flags(flags)
