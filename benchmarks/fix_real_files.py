"""Count what ``neurorecon fix`` does on the real files: error findings before and after, edits and
declined proposals per kind. The numbers of docs/checks.md, "Fixes on real files".

Run from the repository root::

    .venv/bin/python benchmarks/fix_real_files.py [../shared/data/morphologies]

"added" counts the error findings after fixing whose check and set of node ids
(``qc.fixes.finding_key``) the input did not have: an exact match, stricter than the rule that
tests/test_properties.py asserts (``added_errors``, which also lets a site shrink and a cut leave a
fragment).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from neurorecon.io import read_swc
from neurorecon.qc.findings import Severity
from neurorecon.qc.fixes import finding_key, fix_neuron
from neurorecon.qc.run import check_neuron


def errors(neuron) -> list:
    return [f for f in check_neuron(neuron) if f.severity >= Severity.ERROR]


def main(root: Path) -> None:
    files = sorted(root.rglob("*.swc"))
    before, after, edits, declined = Counter(), Counter(), Counter(), Counter()
    changed = added = 0
    for path in files:
        n = read_swc(path, strict=False)
        e0 = errors(n)
        res = fix_neuron(n)
        e1 = errors(res.neuron)
        before.update(f.check for f in e0)
        after.update(f.check for f in e1)
        edits.update(e.action for e in res.edits)
        declined.update(d["why"].split(":")[0] for d in res.declined)
        changed += bool(res.edits)
        keys = {finding_key(f) for f in e0}
        added += sum(finding_key(f) not in keys for f in e1)
    print(f"{len(files)} files under {root}; {changed} changed by fix; {added} error finding(s) added\n")
    print("| error check | before | after |\n|---|---|---|")
    for check in sorted(before | after):
        print(f"| `{check}` | {before[check]} | {after[check]} |")
    print(f"| **all** | {sum(before.values())} | {sum(after.values())} |\n")
    print("| edit | count |\n|---|---|")
    for action, count in sorted(edits.items()):
        print(f"| `{action}` | {count} |")
    print("\n| declined because | count |\n|---|---|")
    for why, count in sorted(declined.items()):
        print(f"| {why} | {count} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "data" / "morphologies")
