"""What ``check --html`` costs: whole-process wall time of ``neurorecon check FILE`` against
``neurorecon check FILE --html DIR`` (runs interleaved, best and median of N), and the page size.

    python benchmarks/bench_reports.py [--file SWC] [--repeat 7] [--src SRC_FOLDER]

``--src`` measures another checkout's package (e.g. the main branch's ``src``) for a before/after.
Prints a Markdown table; docs/reports.md quotes it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIGGEST = REPO.parent / "shared" / "data" / "morphologies" / "mouse_wholebrain_axons" / "121959.swc"


def _run(argv: list[str], env: dict) -> float:
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if r.returncode not in (0, 1):                   # 1: findings at --fail-on, a normal outcome
        raise SystemExit(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    return wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", type=Path, default=BIGGEST, help="SWC to check (default: the largest shared real file)")
    ap.add_argument("--repeat", type=int, default=7, help="runs of each command (default 7)")
    ap.add_argument("--src", type=Path, default=REPO / "src", help="the package folder to measure (default: this checkout's)")
    args = ap.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(args.src.resolve()), "COLUMNS": "100"}
    base = [sys.executable, "-m", "neurorecon", "check", str(args.file)]
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "html"
        _run(base, env)                               # warm the file cache and the byte-code
        plain, with_html = [], []
        for _ in range(args.repeat):
            plain.append(_run(base, env))
            with_html.append(_run(base + ["--html", str(html)], env))
        page = max((p.stat().st_size for p in html.glob("*.html")), default=0)
    med_p, med_h = statistics.median(plain), statistics.median(with_html)
    print(f"| package | check (s, best / median) | check --html (s, best / median) | ratio of medians | page |\n"
          f"|---|---|---|---|---|\n"
          f"| {args.src} | {min(plain):.2f} / {med_p:.2f} | {min(with_html):.2f} / {med_h:.2f} | "
          f"{med_h / med_p:.2f} | {page / 1e3:.0f} kB |")
    print(f"\n{args.file.name}, {args.repeat} runs each, interleaved; {os.cpu_count()} CPUs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
