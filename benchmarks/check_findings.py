"""Findings per check on the real reconstructions, before and after a change.

Run from the repository root::

    .venv/bin/python benchmarks/check_findings.py                  # before = REV below, after = this tree
    .venv/bin/python benchmarks/check_findings.py --before 3268509 --samples 3

"Before" is the source tree of a git revision (extracted with ``git archive`` into a temporary
folder and run in its own process); "after" is the working tree. Both check the same files with
default settings. The table counts warnings and errors (what the target limits) per check; info
findings are counted apart. ``--samples N`` prints N findings per check of the "after" run, for
judging by eye (docs/checks.md records that judgement).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared/data/morphologies"
#: The commit the quiet-checks work (issue 14, item 3) started from.
BASELINE = "3268509"

_WORKER = """
import json, sys
from neurorecon.qc.run import check_file
out = []
for p in sys.argv[1:]:
    r = check_file(p)
    out.append({"path": p, "n_nodes": r.n_nodes, "readable": r.readable,
                "findings": [[f.check, str(f.severity), f.message, list(f.node_ids[:8])] for f in r.findings]})
print(json.dumps(out))
"""


def run_tree(src: Path, files: list[str]) -> list[dict]:
    """Check ``files`` with the package found under ``src`` (a folder holding ``neurorecon``)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    r = subprocess.run([sys.executable, "-c", _WORKER, *files], capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"check_findings: worker for {src} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout)


def extract(rev: str, dest: Path) -> Path:
    """The ``src`` folder of revision ``rev``, written under ``dest``."""
    archive = dest / "src.tar"
    with open(archive, "wb") as f:
        r = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], stdout=f, stderr=subprocess.PIPE)
    if r.returncode:
        raise SystemExit(f"check_findings: git archive {rev}: {r.stderr.decode().strip()}")
    with tarfile.open(archive) as t:
        t.extractall(dest, filter="data")
    return dest / "src"


def loud(findings) -> list:
    return [f for f in findings if f[1] in ("warning", "error")]


def table(before: list[dict] | None, after: list[dict]) -> list[str]:
    nodes = sum(r["n_nodes"] for r in after)
    cb = Counter(f[0] for r in before or [] for f in loud(r["findings"]))
    ca = Counter(f[0] for r in after for f in loud(r["findings"]))
    out = ["| check | before | after |", "|---|---|---|"]
    for cid in sorted(set(cb) | set(ca), key=lambda c: (-cb.get(c, 0), c)):
        out.append(f"| `{cid}` | {cb.get(cid, 0) if before else '–'} | {ca.get(cid, 0)} |")
    tb, ta = sum(cb.values()), sum(ca.values())
    out.append(f"| **all warnings and errors** | **{tb if before else '–'}** | **{ta}** |")

    def per_k(rs, c):
        return f"{1000 * c / nodes:.2f}" if rs is not None else "–"

    def worst(rs):
        if rs is None:
            return "–"
        r = max(rs, key=lambda r: len(loud(r["findings"])))
        return f"{len(loud(r['findings']))} (`{Path(r['path']).name}`)"

    out.append(f"| per 1,000 nodes ({nodes:,} nodes) | {per_k(before, tb)} | {per_k(after, ta)} |")
    out.append(f"| most in one file | {worst(before)} | {worst(after)} |")
    ib = sum(f[1] == "info" for r in before or [] for f in r["findings"])
    ia = sum(f[1] == "info" for r in after for f in r["findings"])
    out.append(f"| info findings (not counted above) | {ib if before else '–'} | {ia} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help="folder searched for *.swc (default: %(default)s)")
    ap.add_argument("--before", default=BASELINE, help="git revision for the 'before' column (default %(default)s); 'none' to skip")
    ap.add_argument("--exclude", action="append", default=None,
                    help="sub-folder to leave out, repeatable (default: edge_cases, reader test files with deliberate defects; 'none' for none)")
    ap.add_argument("--per-file", action="store_true", help="also print warnings and errors per file, before and after")
    ap.add_argument("--flyem", action="store_true",
                    help="check the 5 FlyEM hemibrain skeletons of navis.example_neurons() instead (written as SWC to a temporary folder)")
    ap.add_argument("--samples", type=int, default=0, help="print this many 'after' findings per check")
    args = ap.parse_args(argv)
    args.exclude = [x for x in (args.exclude or ["edge_cases"]) if x != "none"]
    if args.flyem:
        with tempfile.TemporaryDirectory(prefix="check-findings-flyem-") as tmp:
            import navis

            for nrn in navis.example_neurons():
                navis.write_swc(nrn, Path(tmp) / f"hemibrain_{nrn.id}.swc")
            return report(args, sorted(str(p) for p in Path(tmp).glob("*.swc")), "navis.example_neurons()")
    files = sorted(str(p) for p in args.data.rglob("*.swc") if not set(p.relative_to(args.data).parts) & set(args.exclude))
    if not files:
        print(f"check_findings: no .swc files under {args.data}", file=sys.stderr)
        return 2
    return report(args, files, f"{args.data} (excluding {', '.join(args.exclude) or 'nothing'})")


def report(args, files: list[str], where: str) -> int:
    after = run_tree(REPO / "src", files)
    before = None
    if args.before != "none":
        with tempfile.TemporaryDirectory(prefix="check-findings-") as tmp:
            before = run_tree(extract(args.before, Path(tmp)), files)
    print(f"{len(files)} files from {where}; before = {args.before}, after = working tree\n")
    print("\n".join(table(before, after)))
    if args.per_file:
        print("\n| file | nodes | before | after | after, by check |\n|---|---|---|---|---|")
        for k, r in enumerate(after):
            b = len(loud(before[k]["findings"])) if before else "–"
            by = Counter(f[0] for f in loud(r["findings"]))
            print(f"| `{Path(r['path']).name}` | {r['n_nodes']} | {b} | {len(loud(r['findings']))} | "
                  + ", ".join(f"{c} {v}" for c, v in by.most_common()) + " |")
    if args.samples:
        by_check: dict[str, list] = {}
        for r in after:
            for f in r["findings"]:
                by_check.setdefault(f[0], []).append((Path(r["path"]).name, f))
        for cid, items in sorted(by_check.items()):
            print(f"\n{cid} ({len(items)}):")
            for name, f in items[: args.samples]:
                print(f"  {name}: [{f[1]}] {f[2]} nodes={f[3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
