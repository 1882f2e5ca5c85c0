"""What a reviewer looks at: rule findings and detector scores as one list of flags, by priority.

Priority (first reviewed first):

1. rule findings of severity *error* (a broken structure is certain, whatever the image shows);
2. detector flags, ``p_error`` descending;
3. rule findings of severity *warning*, then *info*.

Ties keep the order the checks report (severity, then check) or the node order of SCORES.csv.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..detect.scores import ScoresError, read_scores_csv
from ..morphology.neuron import Neuron
from ..qc.findings import describe_fix  # one place for fixes in words; re-exported for the viewer

__all__ = ["Flag", "ScoresError", "describe_fix", "rule_flags", "read_scores", "collect_flags", "order_flags",
           "drop_uncovered"]

_TIER = {("rule", "error"): 0, ("detector", "warning"): 1, ("rule", "warning"): 2, ("rule", "info"): 3}
#: What the ``priority`` shown in the viewer (0..1, colour) is for rule findings.
_RULE_PRIORITY = {"error": 1.0, "warning": 0.5, "info": 0.25}


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

    The file is read by :func:`neurorecon.detect.scores.read_scores_csv`; positions come from
    ``neuron``, so every scored node must be in it.

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
        A malformed file (see ``read_scores_csv``), or a node id the trace lacks.
    """
    sc = read_scores_csv(path)
    rows_in_trace = neuron.index_of(sc.node_id)
    if (rows_in_trace < 0).any():
        k = int(np.flatnonzero(rows_in_trace < 0)[0])
        raise ScoresError(f"{path}: line {k + 2}: node {sc.node_id[k]} is not in the trace {neuron.source or ''} "
                          "(scores of another trace?)".replace("  ", " "))
    keep = np.flatnonzero(sc.p_error >= threshold)
    xyz = neuron.xyz[rows_in_trace[keep]].round(4).tolist()
    out = []
    for k, pos in zip(keep.tolist(), xyz):
        nid, p, reason = int(sc.node_id[k]), float(sc.p_error[k]), sc.reason[k]
        out.append(Flag(f"detector:{nid}", nid, tuple(pos), "detector", f"detector.{reason or 'error'}",
                        _explain(reason, p), p, "warning", sc.fix[k], (nid,)))
    return out


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
                  config=None, rules: bool = True, sites: bool = True, uncovered=()) -> list[Flag]:
    """Rule findings (if ``rules``) and detector flags (if ``scores``), in review order.

    With ``sites`` (the default) the node flags are grouped into error sites, one flag each
    (:func:`neurorecon.viewer.sites.group_sites`).

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
    sites : bool
        One flag per error site rather than per node.
    uncovered : collection of int
        Ids of nodes the image does not cover: their detector flags are left out (:func:`drop_uncovered`).

    Returns
    -------
    list of Flag
    """
    flags = rule_flags(neuron, config) if rules else []
    if scores is not None:
        flags += drop_uncovered(read_scores(scores, neuron, threshold), uncovered)
    if sites:
        from .sites import group_sites     # sites builds on Flag: imported here, not at the top

        flags = group_sites(neuron, flags)
    return order_flags(flags)


# ------------------------------------------------------------------------------- coverage
def drop_uncovered(flags: list[Flag], uncovered) -> list[Flag]:
    """``flags`` without the detector's flags on nodes the image does not cover
    (:mod:`neurorecon.detect.coverage`): the detector saw nothing there. Rule findings stay, since
    the checks need no image.

    Examples
    --------
    >>> mk = lambda key, src, node: Flag(key, node, (0, 0, 0), src, "c", "", None, "warning", None)
    >>> [f.key for f in drop_uncovered([mk("d1", "detector", 1), mk("d2", "detector", 2), mk("r", "rule", 1)], [1])]
    ['d2', 'r']
    """
    out = {int(i) for i in uncovered}
    return [f for f in flags if f.source != "detector" or f.node_id not in out] if out else list(flags)
