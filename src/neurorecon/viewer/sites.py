"""Error sites: the node flags of one error grouped into one flag, with one coherent fix.

The detector scores nodes, so one displaced run of 5 nodes is 5 flags, each with its own
proposal, and a spur is as many flags as it has nodes. A reviewer decides about errors, not
nodes; :func:`group_sites` turns node flags into sites:

* detector flags: a connected run of one reason along the tree is one site (the edge from a node
  to its parent joins them when both are flagged with the same reason); the two ends of a gap
  that the proposal bridges are one site; a prune site takes in every other site below its base
  (they go with the branch);
* rule findings of one check that name a common node are one site (``type_change`` reports both
  ends of a wrong-type run);
* a detector site on a rule site's nodes joins it when both propose the same fix, or they are
  the same kind of error (``type_change`` and ``wrong_type``) and do not disagree: one error,
  seen by both.

Each site has one fix in the action its reason calls for, over all its nodes: a run off its fibre
moves every node the image places (one multi-node ``move``), a spur is one ``prune`` at the
topmost node the detector would cut from, a wrong type is one ``relabel`` of the run, a gap one
``bridge``. A proposal of another action, or a prune from a node outside the site, is dropped, so
a site never moves and prunes the same nodes.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..morphology import graph
from ..morphology.neuron import Neuron
from .flags import Flag

__all__ = ["group_sites", "site_fix", "MOVE_REASONS", "PRUNE_REASONS"]

MOVE_REASONS = ("off_signal_z", "off_signal_xy")
PRUNE_REASONS = ("spur", "overextension", "jump", "loop")
#: The one action each reason's site may propose (reasons not named: the best node's proposal).
_ACTION = {**{r: "move" for r in MOVE_REASONS}, **{r: "prune" for r in PRUNE_REASONS},
           "wrong_type": "relabel", "gap": "bridge"}


def group_sites(neuron: Neuron, flags: list[Flag]) -> list[Flag]:
    """Node flags grouped into error sites, one flag each (rule sites first, in input order).

    Parameters
    ----------
    neuron : Neuron
        The trace the flags name.
    flags : list of Flag
        Node flags (:func:`neurorecon.viewer.flags.rule_flags`, :func:`~.flags.read_scores`).

    Returns
    -------
    list of Flag
        One per site; order them with :func:`~.flags.order_flags`.
    """
    rules = [f for f in flags if f.source != "detector"]
    det = [f for f in flags if f.source == "detector"]
    return _join_sources(_rule_sites(rules), _detector_sites(neuron, det))


#: A check and a detector reason that name the same kind of error (one site when on the same nodes,
#: even if only one of them proposes a fix).
_SAME_KIND = {("type_change", "detector.wrong_type")}


def _same_error(r: Flag, d: Flag) -> bool:
    """Rule site ``r`` and detector site ``d`` (sharing a node) are one error: both propose the
    same fix (or relabels to one type), or they are the same kind of error and do not disagree."""
    merged = _merged_fix([r, d])
    if merged is False:
        return False
    return (r.fix is not None and d.fix is not None) or (r.check, d.check) in _SAME_KIND


def _join_sources(rules: list[Flag], det: list[Flag]) -> list[Flag]:
    """A detector site that is a rule site's error seen again (:func:`_same_error`) joins it: one
    site, the rule's (certain, reviewed first), with the detector's p."""
    out, rest = list(rules), []
    at: dict[int, list[int]] = {}                 # node id -> rule sites naming it
    for i, r in enumerate(rules):
        for node in r.node_ids:
            at.setdefault(node, []).append(i)
    for d in det:
        near = dict.fromkeys(i for node in d.node_ids for i in at.get(node, ()))
        k = next((i for i in near if _same_error(out[i], d)), None)
        if k is None:
            rest.append(d)
            continue
        r = out[k]
        ids = r.node_ids + tuple(i for i in d.node_ids if i not in r.node_ids)
        p = max(r.p or 0.0, d.p or 0.0)
        out[k] = Flag(r.key, r.node_id, r.xyz, r.source, r.check, f"{r.reason}; detector: {d.reason}", p,
                      r.severity, _merged_fix([r, d]), ids)
    return out + rest


# ------------------------------------------------------------------------------- detector sites
def _detector_sites(neuron: Neuron, flags: list[Flag]) -> list[Flag]:
    if not flags:
        return []
    parent = neuron.parent
    rows = neuron.index_of([f.node_id for f in flags])
    _, code = np.unique([f.check for f in flags], return_inverse=True)
    reason = np.full(len(neuron), -1, dtype=np.int64)
    reason[rows] = code
    label = graph.run_tops(parent, reason)[rows]
    label = _pair_gaps(neuron, flags, rows, label)
    _, depth, _ = graph.ancestor_sums(parent)
    groups = _absorb_below_prunes(neuron, flags, rows, _groups(label), depth)
    return [_site(neuron, [flags[k] for k in g], depth) for g in groups]


def _groups(labels: np.ndarray) -> list[list[int]]:
    """Indices with equal labels, each group in input order, groups by their first index."""
    order = np.argsort(labels, kind="stable")
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    return sorted((g.tolist() for g in np.split(order, cuts)), key=lambda g: g[0])


def _pair_gaps(neuron: Neuron, flags: list[Flag], rows: np.ndarray, label: np.ndarray) -> np.ndarray:
    """A bridge proposed from one flagged gap end to another makes the two one site (``label``:
    the site label of each flag)."""
    gap = {r: k for k, (f, r) in enumerate(zip(flags, rows.tolist())) if f.check == "detector.gap"}
    pairs = [(k, gap[t]) for r, k in gap.items() if (flags[k].fix or {}).get("action") == "bridge"
             and (t := int(neuron.index_of([int(flags[k].fix.get("parent_id", -1))])[0])) in gap]
    if not pairs:
        return label
    root = {int(v): int(v) for v in np.unique(label[[k for pair in pairs for k in pair]])}

    def find(v):
        while root[v] != v:
            v = root[v]
        return v

    for a, b in pairs:                                    # a few gaps: a small union-find
        root[find(int(label[b]))] = find(int(label[a]))
    out = label.copy()
    for v in root:
        out[label == v] = find(v)
    return out


def _absorb_below_prunes(neuron: Neuron, flags: list[Flag], rows: np.ndarray, groups: list[list[int]],
                         depth: np.ndarray) -> list[list[int]]:
    """Sites wholly under a prune site's base join it (cutting the branch settles them too);
    nested prunes go to the topmost base."""
    parent = neuron.parent
    fixes = [site_fix(neuron, [flags[k] for k in g], depth=depth) for g in groups]
    site_of = {int(neuron.index_of([f["node_id"]])[0]): gi for gi, f in enumerate(fixes)
               if f and f["action"] == "prune"}
    if not site_of:
        return groups
    is_base = np.zeros(len(parent), dtype=bool)
    is_base[list(site_of)] = True
    top = graph.topmost_marked_ancestor(parent, is_base)            # nested prunes: the topmost base
    out = [list(g) for g in groups]
    for gi, g in enumerate(groups):
        owners = set(top[rows[g]].tolist())
        if len(owners) != 1 or -1 in owners:
            continue
        home = site_of[owners.pop()]
        if home != gi:
            out[home].extend(out[gi])     # after the base's own flags: their reason names the site
            out[gi] = []
    return [g for g in out if g]


def site_fix(neuron: Neuron, flags: list[Flag], *, depth: np.ndarray | None = None) -> dict | None:
    """The one fix of a detector site made of ``flags`` (node flags, the first one's reason rules).

    ``depth`` (edges to the root per row, :func:`neurorecon.morphology.graph.ancestor_sums`) saves
    recomputing it for every site of a trace.

    Examples
    --------
    A run of two off-fibre nodes, both placed by the image: one move of both.

    >>> from neurorecon.morphology.neuron import Neuron
    >>> n = Neuron.from_arrays([1, 2, 3], [3, 3, 3], [[0, 0, 0], [1, 2, 0], [2, 2, 0]], [1, 1, 1], [-1, 1, 2])
    >>> mk = lambda i, x: Flag(f"detector:{i}", i, (0, 0, 0), "detector", "detector.off_signal_xy", "", 0.9,
    ...                        "warning", {"action": "move", "node_id": i, "xyz": [x, 0.0, 0.0]})
    >>> site_fix(n, [mk(2, 1.0), mk(3, 2.0)])
    {'action': 'move', 'node_ids': [2, 3], 'xyz': [[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]}
    """
    reason = flags[0].check.removeprefix("detector.")
    action = _ACTION.get(reason)
    fixes = [f.fix for f in flags if f.fix and (action is None or f.fix["action"] == action)]
    if not fixes:
        return None
    if action == "move":
        if len(fixes) == 1:
            return {"action": "move", "node_id": int(fixes[0]["node_id"]), "xyz": list(fixes[0]["xyz"])}
        return {"action": "move", "node_ids": [int(f["node_id"]) for f in fixes], "xyz": [list(f["xyz"]) for f in fixes]}
    if action == "prune":
        return _prune_fix(neuron, flags, fixes, depth)
    if action == "relabel":
        return _relabel_fix(neuron, flags, fixes)
    best = max((f for f in flags if f.fix in fixes), key=lambda f: f.p or 0.0)
    return best.fix


def _prune_fix(neuron: Neuron, flags: list[Flag], fixes: list[dict], depth: np.ndarray | None) -> dict | None:
    """The topmost base the detector proposes that lies in the site (a base outside it would cut
    nodes that belong to another site)."""
    inside = {f.node_id for f in flags}
    bases = sorted({int(f["node_id"]) for f in fixes} & inside)
    if not bases:
        return None
    if depth is None:
        _, depth, _ = graph.ancestor_sums(neuron.parent)
    d = depth[neuron.index_of(bases)]
    return {"action": "prune", "node_id": bases[int(np.argmin(d))]}


def _relabel_fix(neuron: Neuron, flags: list[Flag], fixes: list[dict]) -> dict:
    """Every node of the run to the type most proposals give (nodes already of it left out)."""
    to = Counter(int(f["type"]) for f in fixes).most_common(1)[0][0]
    ids = np.array([f.node_id for f in flags])
    wrong = neuron.types[neuron.index_of(ids)] != to
    return {"action": "relabel", "node_ids": ids[wrong].tolist(), "type": to}


def _site(neuron: Neuron, flags: list[Flag], depth: np.ndarray) -> Flag:
    """One flag for the site: at the node its fix starts from (a prune's base, a bridge's end),
    else at its most likely node."""
    fix = site_fix(neuron, flags, depth=depth)
    ids = [f.node_id for f in flags]
    best = max(flags, key=lambda f: f.p or 0.0).node_id     # the first of equals: input order
    at = int(fix["node_id"]) if fix and fix.get("node_id") in ids else best
    head = next(f for f in flags if f.node_id == at)
    p = max(f.p or 0.0 for f in flags)
    reasons = Counter(f.check for f in flags)
    text = head.reason.split(": ", 1)[-1]
    more = f" ({len(flags)} flagged nodes)" if len(flags) > 1 else ""
    mixed = "" if len(reasons) == 1 else " and " + ", ".join(c.removeprefix("detector.") for c in reasons
                                                              if c != head.check) + " below it"
    return Flag(f"detector:{at}", at, head.xyz, "detector", head.check, f"p(error) = {p:.2f}: {text}{more}{mixed}",
                p, head.severity, fix, tuple([at] + [i for i in ids if i != at]))


# ------------------------------------------------------------------------------- rule sites
def _rule_sites(flags: list[Flag]) -> list[Flag]:
    """Findings of one check that share a node, as one site (when their fixes can be one)."""
    sites: list[list[Flag]] = []
    at: dict[tuple, list[int]] = {}               # (check, node id) -> sites naming it
    for f in flags:
        near = dict.fromkeys(i for node in f.node_ids for i in at.get((f.check, node), ()))
        k = next((i for i in near if _merged_fix(sites[i] + [f]) is not False), None)
        if k is None:
            k = len(sites)
            sites.append([f])
        else:
            sites[k].append(f)
        for node in f.node_ids:
            at.setdefault((f.check, node), []).append(k)
    return [_rule_site(s) for s in sites]


def _nodes(site: list[Flag]) -> set:
    return {i for f in site for i in f.node_ids}


def _merged_fix(site: list[Flag]):
    """The one fix of merged findings, None if none has one, False if they cannot be one."""
    fixes = [f.fix for f in site if f.fix]
    if not fixes:
        return None
    if all(x == fixes[0] for x in fixes):
        return fixes[0]
    if all(x["action"] == "relabel" and x.get("type") == fixes[0].get("type") for x in fixes):
        ids = sorted({int(i) for x in fixes for i in x.get("node_ids", [])})
        return {"action": "relabel", "node_ids": ids, "type": fixes[0]["type"]}
    return False


def _rule_site(site: list[Flag]) -> Flag:
    if len(site) == 1:
        return site[0]
    head = next((f for f in site if f.fix), site[0])
    ids = [head.node_id] + sorted(_nodes(site) - {head.node_id})
    reason = "; ".join(dict.fromkeys(f.reason for f in [head] + [f for f in site if f is not head]))
    return Flag(head.key, head.node_id, head.xyz, head.source, head.check, reason, head.p, head.severity,
                _merged_fix(site), tuple(ids))
