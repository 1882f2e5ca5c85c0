"""Check reports: the terminal table and the JSON file."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from ..io.atomic import atomic_write_text
from .findings import Severity
from .run import FileReport

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def to_json(reports: list[FileReport]) -> str:
    return json.dumps({"files": [r.to_dict() for r in reports]}, indent=1)


def write_json(reports: list[FileReport], path: str | os.PathLike) -> Path:
    return atomic_write_text(path, to_json(reports))


def print_reports(reports: list[FileReport], console, *, max_rows: int = 15, details: bool = True) -> None:
    """Findings per file (at most ``max_rows`` each), then one summary row per file."""
    from rich.table import Table

    if details:
        for rep in reports:
            if not rep.readable or not rep.findings:
                continue
            t = Table(title=f"{rep.path} ({rep.n_nodes} nodes)", title_justify="left", show_edge=False, pad_edge=False)
            for col in ("severity", "check", "nodes", "message"):
                t.add_column(col, overflow="fold")
            for f in rep.findings[:max_rows]:
                ids = ", ".join(map(str, f.node_ids[:4])) + (" ..." if len(f.node_ids) > 4 else "")
                t.add_row(f"[{_STYLE[f.severity]}]{f.severity}[/]", f.check, ids, f.message)
            if len(rep.findings) > max_rows:
                t.add_row("", f"... {len(rep.findings) - max_rows} more", "", "see --json or --html for all")
            console.print(t)
            console.print()
    s = Table(title="summary", title_justify="left")
    for col, kw in (("file", {}), ("nodes", {"justify": "right"}), ("errors", {"justify": "right"}),
                    ("warnings", {"justify": "right"}), ("info", {"justify": "right"}), ("checks hit", {})):
        s.add_column(col, overflow="fold", **kw)
    for rep in reports:
        if not rep.readable:
            s.add_row(rep.path, "-", "[bold red]unreadable[/]", "", "", rep.error or "")
            continue
        sev = Counter(f.severity for f in rep.findings)
        hit = Counter(f.check for f in rep.findings)
        s.add_row(rep.path, str(rep.n_nodes), _n(sev[Severity.ERROR], Severity.ERROR), _n(sev[Severity.WARNING], Severity.WARNING),
                  _n(sev[Severity.INFO], Severity.INFO), ", ".join(f"{k}×{v}" for k, v in hit.most_common(6)))
    console.print(s)


def _n(k: int, sev: Severity) -> str:
    return f"[{_STYLE[sev]}]{k}[/]" if k else "0"


def exit_code(reports: list[FileReport], fail_on: Severity) -> int:
    """1 if any file is unreadable or has a finding at or above ``fail_on``, else 0."""
    for rep in reports:
        worst = rep.worst()
        if worst is not None and worst >= fail_on:
            return 1
    return 0
