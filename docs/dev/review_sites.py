"""Node flags before, error sites after, on synthetic crops with injected errors (docs/review.md).

    neurorecon synth --out crops -n 8 --seed 0
    for c in crops/crop_*.swc; do neurorecon detect $c --image ${c%.swc}.tif --out ${c%.swc}.scores.csv; done
    python docs/dev/review_sites.py crops

Per crop: injected errors (runs of labelled nodes of one type along the tree), node flags
(p >= 0.5), distinct per-node proposals, sites, sites with a fix; for the errors the detector
finds (a flag on one of their nodes), how many are exactly one site and how many sites they make;
and the false alarms (sites and node flags on no labelled node).
"""
import csv, json, sys
from collections import Counter
from pathlib import Path
import numpy as np
from neurorecon.io import read_swc
from neurorecon.morphology import graph
from neurorecon.viewer.flags import collect_flags

def runs(n, lab):
    t = np.array([lab.get(int(i), "") for i in n.ids])
    par = n.parent
    bad = t != ""
    joined = bad & (par >= 0)
    joined[par >= 0] &= t[par[par >= 0]] == t[par >= 0]
    head = graph.nearest_marked_ancestor(par, (bad & ~joined) | ~bad)
    out = {}
    for r in np.flatnonzero(bad):
        out.setdefault(int(head[r]), set()).add(int(n.ids[r]))
    return list(out.values())

tot = Counter()
for c in sorted(Path(sys.argv[1]).glob("crop_*.swc")):
    c = c.with_suffix("")
    n = read_swc(f"{c}.swc")
    nodes = collect_flags(n, f"{c}.scores.csv", rules=False, sites=False)
    sites = collect_flags(n, f"{c}.scores.csv", rules=False)
    lab = {int(r["node_id"]): r["error_type"] for r in csv.DictReader(open(f"{c}.labels.csv")) if r["label"] == "1"}
    errs = runs(n, lab)
    found = [e for e in errs if any(f.node_id in e for f in nodes)]
    split = [sum(bool(e & set(s.node_ids)) for s in sites) for e in found]
    nodes_per = [sum(f.node_id in e for f in nodes) for e in found]
    row = dict(errors=len(errs), node_flags=len(nodes), node_proposals=len({json.dumps(f.fix, sort_keys=True) for f in nodes if f.fix}),
               sites=len(sites), sites_with_fix=sum(f.fix is not None for f in sites), found=len(found),
               found_one_site=sum(k == 1 for k in split), flags_on_found=sum(nodes_per), sites_on_found=sum(split),
               false_alarm_sites=sum(not (set(lab) & set(s.node_ids)) for s in sites),
               false_alarm_node_flags=sum(f.node_id not in lab for f in nodes))
    tot.update(row)
    print(c.name, row)
print("total", dict(tot))
