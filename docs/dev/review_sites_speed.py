"""Speed of the grouping into sites (docs/review.md): a 100,000-node trace, 2,000 flagged runs
of 5 nodes (spurs, off-fibre runs, wrong types, jumps, gaps) and 3,000 type_change findings.

    PYTHONPATH=src python docs/dev/review_sites_speed.py
"""
import time, numpy as np
from neurorecon.morphology.neuron import Neuron
from neurorecon.viewer.flags import Flag
from neurorecon.viewer.sites import group_sites
rng = np.random.default_rng(0)
m = 100_000
# long unbranched chains: parent = previous node, with a branch every 50 nodes
parent_ids = np.arange(0, m); parent_ids[0] = -1
br = np.arange(50, m, 50); parent_ids[br] = rng.integers(1, br)
n = Neuron.from_arrays(np.arange(1, m + 1), np.full(m, 3), rng.uniform(0, 500, (m, 3)), np.ones(m), parent_ids)
reasons = ["spur", "off_signal_xy", "wrong_type", "jump", "gap"]
flags = []
for s in rng.choice(m - 10, 2000, replace=False):
    r = reasons[s % 5]
    for k in range(5):
        i = int(s + k + 1)
        fix = {"spur": {"action": "prune", "node_id": int(s + 1)}, "off_signal_xy": {"action": "move", "node_id": i, "xyz": [0, 0, 0]},
               "wrong_type": {"action": "relabel", "node_ids": [i], "type": 2}, "jump": None, "gap": None}[r]
        flags.append(Flag(f"detector:{i}", i, (0., 0., 0.), "detector", f"detector.{r}", "p(error) = 0.9: x", 0.9, "warning", fix, (i,)))
uniq = {f.node_id: f for f in flags}
flags = list(uniq.values())
rules = [Flag(f"type_change:{i}", int(i), (0., 0., 0.), "rule", "type_change", "t", None, "error", None, (int(i), int(i) - 1))
         for i in rng.choice(np.arange(2, m), 3000, replace=False)]
t = time.perf_counter()
sites = group_sites(n, rules + flags)
print(len(flags), "node flags +", len(rules), "rule ->", len(sites), "sites in", round(time.perf_counter() - t, 2), "s")
