"""``make demo``: check the bundled real neurons, write JSON and HTML reports, fix them.

Run as ``python -m neurorecon.demo --out out/demo``.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path


def demo_files() -> list[Path]:
    folder = resources.files("neurorecon") / "data" / "demo"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".swc"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="out/demo", help="folder for the results (default out/demo)")
    args = ap.parse_args(argv)
    out = Path(args.out)

    from rich.console import Console

    from .qc import check_paths
    from .qc.fixes import fix_file
    from .qc.html import write_html
    from .qc.report import print_reports, write_json

    console = Console()
    files = [str(p) for p in demo_files()]
    console.print(f"[bold]neurorecon demo[/]: checking {len(files)} real reconstructions")
    reports = check_paths(files, jobs=2)
    print_reports(reports, console, max_rows=8)
    write_json(reports, out / "report.json")
    index = write_html(reports, out / "html")
    fixed = []
    for f in files:
        result, paths = fix_file(f, out / "fixed" / Path(f).name, overwrite=True)
        fixed.append((Path(f).name, len(result.edits), paths))
    console.print("\n[bold]fixes[/] (conservative; every edit logged for review):")
    for name, n_edits, paths in fixed:
        console.print(f"  {name}: {n_edits} edit(s) -> {paths.swc}  (log {paths.log.name}, markers {paths.apo.name})")
    console.print(f"\n[bold green]done.[/] Results in {out}/:\n"
                  f"  {out / 'report.json'}   machine-readable findings\n"
                  f"  {index}   open in a browser: projections with every finding circled\n"
                  f"  {out / 'fixed'}/   fixed SWC files, edit logs (.edits.json) and Vaa3D review markers (.apo)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
