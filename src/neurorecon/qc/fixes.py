"""Conservative fixes: apply the fixes that checks propose, log every edit, never guess.

``fix_neuron`` runs the checks, applies the proposals of one group at a time (structure first,
then duplicates, types, gaps), and checks again until nothing is left to fix, so that fixing twice
changes nothing the second time. Every batch of edits is checked before it is kept: a fix that
would add an error-level finding the input did not have is declined and left for review (see
:class:`Baseline`). Node ids are kept unless re-numbering is asked for. Every edit is recorded
with what, where, why and before/after, and can be written as JSON and as Vaa3D ``.apo`` markers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..io.atomic import atomic_write_text
from ..io.points import Point, format_apo
from ..io.swc import format_swc, read_swc
from ..morphology import types as T
from ..morphology.neuron import Neuron
from ..morphology.spatial import cross_pairs
from .config import CheckConfig
from .context import CheckContext
from .edits import (_ACTIONS, FIX_ACTIONS, Edit, FixError, apply_fix, depth_first_order, is_sorted,  # noqa: F401 (re-exported)
                    parents_first, reindex, reorder)
from .findings import Finding, Fix, Severity
from .run import check_neuron

#: Fix groups in the order they are applied; each pass applies one group, then re-checks.
FIX_ORDER = (
    ("duplicate_id",),
    ("missing_parent", "self_parent", "cycle"),
    ("duplicate_point", "zero_length_segment", "loop"),
    ("type_change", "parent_type_violation"),
    ("fragment",),
)
MAX_PASSES = 100
MAX_SORTS = 4
#: Checks whose error a ``cut`` turns into a fragment rooted at the cut node: the node was not
#: connected to the soma tree before either, so the fragment is the same error made explicit.
CUT_EXPOSES_FRAGMENT = ("missing_parent", "self_parent", "cycle")

#: Checks about the whole neuron: the node they name only places the marker (the soma tree's root
#: for no_soma, the first node of each soma group for multiple_somas), so a fix that moves the
#: root does not make the error a new one.
WHOLE_NEURON = ("no_soma", "multiple_somas", "missing_neurite")

_COLORS = {"move": (0, 255, 255), "prune": (255, 0, 0), "delete": (255, 0, 0), "merge": (255, 128, 0), "drop_duplicate": (255, 128, 0), "renumber": (128, 128, 255),
           "cut": (255, 0, 255), "relabel": (0, 200, 0), "bridge": (0, 128, 255), "reindex": (128, 128, 128), "reorder": (128, 128, 128)}


@dataclass
class FixResult:
    """The fixed neuron, the edits made, and the proposed fixes that were declined (with why)."""

    neuron: Neuron
    edits: list[Edit] = field(default_factory=list)
    converged: bool = True
    declined: list[dict] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.edits)


class Proposal(NamedTuple):
    """One fix to try: who proposes it, the fix, and the reason for the log."""

    check: str
    fix: Fix
    why: str

    @property
    def key(self) -> tuple:
        return (self.check, self.fix.action, json.dumps(self.fix.params, sort_keys=True))


def fix_neuron(neuron: Neuron, config: CheckConfig | None = None, *, renumber: bool = False) -> FixResult:
    """Apply every conservative fix the checks propose and that adds no error, until none is left.

    Parameters
    ----------
    neuron : Neuron
    config : CheckConfig, optional
        Which checks run (a disabled check is not fixed) with what thresholds and severities.
    renumber : bool
        Sort depth-first from the soma tree's root and re-index 1..N at the end. Otherwise every
        node keeps its id (a removed node leaves a gap); rows are only reordered, ids kept, where
        the input had every parent before its children and a bridge broke that.

    Returns
    -------
    FixResult
        ``declined`` lists the proposals left for review: the fix would add an error-level
        finding, would join different types, or no longer fits its nodes.

    Examples
    --------
    >>> from neurorecon.io import read_swc
    >>> n = read_swc(b"1 1 0 0 0 5 -1\\n2 3 0 0 8 1 1\\n2 3 0 0 8 1 1\\n")
    >>> res = fix_neuron(n)
    >>> res.neuron.n_nodes, [e.action for e in res.edits]
    (2, ['drop_duplicate'])
    """
    config = config or CheckConfig()
    guard = Baseline(neuron, check_neuron(neuron, config), config)
    was_ordered = parents_first(neuron)
    edits: list[Edit] = []
    for _ in range(MAX_SORTS):
        neuron, more, declined, converged = _fix_passes(neuron, guard, config)
        edits += more
        n_edits = len(edits)
        if renumber:
            neuron = reindex(neuron, edits)
            # New ids: the re-indexed neuron, same errors at the same places, is the reference now.
            guard = Baseline(neuron, guard.findings(neuron), config)
        elif was_ordered:
            neuron = reorder(neuron, edits)
        # Sorting changes the order in which the checks meet the nodes, and so may change what
        # they propose (ties); fixing until sorting moves nothing makes a second run a no-op.
        if not converged or len(edits) == n_edits:
            break
    else:
        converged = False
    left = [{"check": k[0], "action": k[1], "fix": json.loads(k[2]), "why": why} for k, why in declined.items()]
    return FixResult(neuron, edits, converged, left)


def _fix_passes(neuron: Neuron, guard: "Baseline", config: CheckConfig) -> tuple[Neuron, list[Edit], dict, bool]:
    """Fix group by group until every proposal left is declined: (neuron, edits, declined, converged)."""
    edits: list[Edit] = []
    declined: dict[tuple, str] = {}
    for _ in range(MAX_PASSES):
        batch = _next_batch(neuron, guard.findings(neuron), config, declined)
        if not batch:
            return neuron, edits, declined, True
        neuron, accepted, rejected = guard.apply(neuron, batch)
        if accepted:
            edits += accepted
            # The neuron changed (also between the halves of a split batch): what was declined may
            # fit now, and declining on the final neuron only is what makes a second run a no-op.
            declined.clear()
        else:
            declined.update(rejected)
    return neuron, edits, declined, False


def _next_batch(neuron: Neuron, findings: list[Finding], config: CheckConfig, declined: dict) -> list[Proposal]:
    """The proposals of the first fix group that has any not yet declined (declining, with the
    reason, those the fix policy rules out before trying them)."""
    ctx = CheckContext(neuron, config)  # its derived arrays are computed on first use only
    for group in FIX_ORDER:
        props = [p for f in findings if f.check in group and f.fix is not None
                 for p in [_proposal(ctx, f)] if p.key not in declined]
        batch = []
        for p in props:
            why = _ruled_out(neuron, p)
            if why:
                declined[p.key] = why
            else:
                batch.append(p)
        if batch:
            return batch
    return []


def _proposal(ctx: CheckContext, f: Finding) -> Proposal:
    """The finding's fix, except that the tip of a loop that lies along another branch for a
    stretch is removed with the whole double-traced stretch (deleting only the tip would leave the
    rest of the stretch as a stub, and the next node as the next loop)."""
    if f.check == "loop" and f.fix.action == "delete":
        rows = np.flatnonzero(ctx.neuron.ids == f.fix.params["node_id"])
        if len(rows) == 1:
            stretch = retraced_stretch(ctx, int(rows[0]))
            if len(stretch) > 1:
                top = int(ctx.neuron.ids[stretch[-1]])
                why = f"{f.message}; the tip is the end of a double-traced stretch of {len(stretch)} nodes"
                return Proposal(f.check, Fix("prune", {"node_id": top}), why)
    return Proposal(f.check, f.fix, f.message)


def _ruled_out(neuron: Neuron, p: Proposal) -> str | None:
    """Why the fix policy declines ``p`` without trying it (None if it may be tried).

    Only a cut touches the nodes of a parent cycle (their types and positions mean nothing until
    the cycle is cut: a relabel there would flip back and forth). A gap bridge joins nodes of the
    same type only; the one exception is a neurite end joined to a soma node, since every neurite
    type grows from the soma (a soma end is never hung from a neurite: that would be a soma with
    a neurite parent).
    """
    named = [v for k, v in p.fix.params.items() if k in ("node_id", "into_id", "parent_id")] + list(p.fix.params.get("node_ids", []))
    looped = neuron.ids[neuron.in_cycle]
    if p.fix.action != "cut" and np.isin(named, looped).any():
        return "it names a node of a parent cycle; the cycle is to be cut first"
    if p.fix.action != "bridge":
        return None
    end = np.flatnonzero(neuron.ids == p.fix.params["node_id"])
    target = np.flatnonzero(neuron.ids == p.fix.params["parent_id"])
    if len(end) != 1 or len(target) != 1:
        return None
    t_end, t_target = int(neuron.types[end[0]]), int(neuron.types[target[0]])
    if t_end == t_target or (t_target == T.SOMA and t_end != T.SOMA):
        return None
    return f"the bridge would join {T.type_name(t_end)} to {T.type_name(t_target)}"


def retraced_stretch(ctx: CheckContext, tip: int) -> np.ndarray:
    """Rows of the unbranched stretch ending at ``tip`` that runs along another branch.

    From the tip up to its section's first node (never into the soma), the nodes that lie within
    ``overlap_distance_factor`` x spacing of a node of another section, as long as every node from
    the tip on does; tip first. The branch point the section grows from does not count: the
    section's first node is always next to it. Nodes near the branch point are near on the tree to
    the fibre they retrace, so a tree-distance rule would leave them as a stub.
    """
    n, th = ctx.neuron, ctx.th
    sec = np.flatnonzero(ctx.section == ctx.section[tip])
    sec = sec[np.argsort(-ctx.path_length[sec], kind="stable")]
    others = np.flatnonzero(ctx.section != ctx.section[tip])
    i, j, _ = cross_pairs(n.xyz[sec], n.xyz[others], th.overlap_distance_factor * ctx.spacing)
    far = others[j] != ctx.parent[sec[-1]]
    on_other = np.zeros(len(sec), bool)
    on_other[i[far]] = True
    on_other &= ~ctx.is_soma[sec]
    stop = np.flatnonzero(~on_other)
    return sec[: stop[0] if len(stop) else len(sec)]


class Baseline:
    """The error-level findings of the input, and the test that a fix adds none.

    A finding is identified by its check and the set of node ids it names (by its check and
    message if it names no node, by its check alone if it is about the whole neuron). An error
    after a fix is covered when the input had the same one, or one of the same check naming all its
    nodes and more (a site of several nodes that a fix made smaller), reading a node renumbered by a
    ``renumber`` fix under its old id; a ``fragment`` is also covered when the input had a missing-parent, self-parent or cycle error at its root (the cut
    that fixed it exposed that node's disconnection, see :data:`CUT_EXPOSES_FRAGMENT`), or when its
    root was a root in the input and the input had a cycle (the cut tree may be the soma tree now).
    """

    def __init__(self, neuron: Neuron, findings: list[Finding], config: CheckConfig):
        self.config = config
        errors = [f for f in findings if f.severity >= Severity.ERROR]
        self.keys = {finding_key(f) for f in errors}
        self.sites: dict[str, list[frozenset]] = {}
        for f in errors:
            self.sites.setdefault(f.check, []).append(frozenset(f.node_ids))
        self.cut_nodes = {i for f in errors if f.check in CUT_EXPOSES_FRAGMENT for i in f.node_ids}
        if any(f.check in ("cycle", "self_parent") for f in errors):
            # Cutting a cycle makes its nodes a tree, which may be larger than (or hold the soma
            # of) the tree that was the soma tree: that tree, separate before, becomes a fragment.
            self.cut_nodes |= set(neuron.ids[neuron.roots].tolist())
        self.alias: dict[int, int] = {}
        self._last: tuple[Neuron | None, list[Finding]] = (neuron, findings)

    def findings(self, neuron: Neuron) -> list[Finding]:
        """All findings on ``neuron`` (the last neuron checked is remembered)."""
        if self._last[0] is not neuron:
            self._last = (neuron, check_neuron(neuron, self.config))
        return self._last[1]

    def added_errors(self, neuron: Neuron, alias: dict[int, int]) -> list[Finding]:
        """Error-level findings on ``neuron`` that the input did not have."""
        out = []
        for f in self.findings(neuron):
            if f.severity < Severity.ERROR:
                continue
            ids = tuple(alias.get(i, i) for i in f.node_ids)
            if finding_key(f, ids) in self.keys or (f.check == "fragment" and self.cut_nodes.intersection(ids)):
                continue
            if ids and any(site >= set(ids) for site in self.sites.get(f.check, ())):
                continue  # the same site, fewer of its nodes left in error
            out.append(f)
        return out

    def apply(self, neuron: Neuron, batch: list[Proposal]) -> tuple[Neuron, list[Edit], dict[tuple, str]]:
        """Apply ``batch`` if together its fixes add no error; else split it in halves and try
        each, down to single fixes, which are declined (with the reason) if they add one."""
        edits: list[Edit] = []
        cand = neuron
        for p in batch:
            cand = apply_fix(cand, p.fix, p.check, p.why, edits)[0]
        if not edits:
            return neuron, [], {p.key: "the nodes it names are gone or no longer fit it" for p in batch}
        alias = {**self.alias, **_renumbered(edits)}
        added = self.added_errors(cand, alias)
        if not added:
            self.alias = alias
            return cand, edits, {}
        if len(batch) == 1:
            f = added[0]
            return neuron, [], {batch[0].key: f"it would add an error: {f.check} at node(s) {', '.join(map(str, f.node_ids[:4]))}"}
        half = len(batch) // 2
        n1, e1, d1 = self.apply(neuron, batch[:half])
        n2, e2, d2 = self.apply(n1, batch[half:])
        return n2, e1 + e2, {**d1, **d2}


def finding_key(f: Finding, ids: tuple[int, ...] | None = None) -> tuple:
    """What identifies a finding across a fix: its check and the node ids it names (only its
    check for a finding about the whole neuron, see :data:`WHOLE_NEURON`)."""
    if f.check in WHOLE_NEURON:
        return (f.check,)
    ids = f.node_ids if ids is None else ids
    return (f.check, frozenset(ids)) if ids else (f.check, f.message)


def _renumbered(edits: list[Edit]) -> dict[int, int]:
    """New id -> old id for the nodes that ``renumber`` edits gave a new id."""
    return {e.after["id"]: e.before["id"] for e in edits if e.action == "renumber"}


# ---------------------------------------------------------------------------------- files
def edit_points(edits: list[Edit]) -> list[Point]:
    """One review marker per located edit."""
    out = []
    for e in edits:
        if not e.xyz:
            continue
        x, y, z = e.xyz[0]
        out.append(Point(x, y, z, name=f"{e.action}:{e.check}", comment=e.why, color=_COLORS.get(e.action, (255, 255, 0))))
    return out


@dataclass
class FixOutputs:
    swc: Path
    log: Path
    apo: Path


def output_paths(out: str | os.PathLike) -> FixOutputs:
    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower() in (".swc", ".eswc") else out
    return FixOutputs(out, Path(f"{stem}.edits.json"), Path(f"{stem}.apo"))


def fix_file(src: str | os.PathLike, out: str | os.PathLike, config: CheckConfig | None = None, *,
             dry_run: bool = False, overwrite: bool = False, renumber: bool = False) -> tuple[FixResult, FixOutputs]:
    """Fix ``src`` into ``out`` (plus ``<out>.edits.json`` and ``<out>.apo``).

    The input is never written unless ``out`` is the input and ``overwrite`` is True; existing
    outputs are not replaced unless ``overwrite`` is True. With ``dry_run`` nothing is written.
    ``renumber`` as in :func:`fix_neuron`; the log lists the declined proposals too.
    """
    src, paths = Path(src), output_paths(out)
    if not dry_run:
        check_outputs(paths, [src], overwrite)
    neuron = read_swc(src)
    result = fix_neuron(neuron, config, renumber=renumber)
    if not dry_run:
        log = {"input": str(src), "output": str(paths.swc), "n_nodes_in": neuron.n_nodes,
               "n_nodes_out": result.neuron.n_nodes, "converged": result.converged, "declined": result.declined}
        write_outputs(paths, result.neuron, result.edits, log)
    return result, paths


def check_outputs(paths: FixOutputs, inputs: list[str | os.PathLike], overwrite: bool) -> None:
    """Raise :class:`FixError` if an output exists (naming it the input where it is one) and
    ``overwrite`` is False."""
    given = {Path(p).resolve() for p in inputs}
    for target in (paths.swc, paths.log, paths.apo):
        if target.exists() and not overwrite:
            what = "the input" if target.resolve() in given else "an existing file"
            raise FixError(f"{target} is {what}; pass --overwrite to replace it")


def write_outputs(paths: FixOutputs, neuron: Neuron, edits: list[Edit], log: dict,
                  extra_points: list[Point] = ()) -> None:
    """Write the edited SWC, the JSON edit log (``log`` plus the edits) and the ``.apo`` markers
    (one per located edit, then ``extra_points``), each atomically; the SWC last, so that its
    presence means the log and markers beside it are complete."""
    log = {**log, "edits": [e.to_dict() for e in edits]}
    atomic_write_text(paths.apo, format_apo(edit_points(edits) + list(extra_points)))
    atomic_write_text(paths.log, json.dumps(log, indent=1))
    atomic_write_text(paths.swc, format_swc(neuron))
