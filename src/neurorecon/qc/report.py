"""Check reports: the terminal table and the JSON file."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from ..io.atomic import atomic_write_text
from .findings import Severity, describe_fix
from .run import FileReport

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
_SHORT = {Severity.ERROR: "error", Severity.WARNING: "warn", Severity.INFO: "info"}


def escape(text: str) -> str:
    """``text`` safe inside rich markup (a message may hold ``[...]``)."""
    from rich.markup import escape as _escape

    return _escape(text)


def to_json(reports: list[FileReport]) -> str:
    return json.dumps({"files": [r.to_dict() for r in reports]}, indent=1)


def write_json(reports: list[FileReport], path: str | os.PathLike) -> Path:
    return atomic_write_text(path, to_json(reports))


def shorten_middle(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters by dropping its middle (an ellipsis marks the cut).

    A path keeps its file name whole when the name fits, and as much of its start as there is
    room for; otherwise the end keeps two thirds.

    Examples
    --------
    >>> shorten_middle("../shared/data/morphologies/mouse_wholebrain_axons/121959.swc", 30)
    '../shared/data/mor…/121959.swc'
    >>> shorten_middle("a_very_long_file_name_of_a_neuron.swc", 20)
    'a_very…_a_neuron.swc'
    """
    if len(text) <= width:
        return text
    keep = max(width - 1, 2)
    name = text.replace("\\", "/").rsplit("/", 1)[-1]
    tail = len(name) + 1 if len(name) + 1 <= keep - 2 and name != text else keep - keep // 3
    return text[:keep - tail] + "…" + text[len(text) - tail:]


def print_reports(reports: list[FileReport], console, *, max_rows: int = 15, details: bool = True) -> None:
    """Findings per file (at most ``max_rows`` each), then one summary row per file.

    Nothing wraps: every finding is one line (and one more for its proposed fix, in words), paths
    are shortened from the middle and long messages end in an ellipsis, so the tables fit the
    console's width (80 columns and up); the JSON and HTML reports carry the full text.
    """
    width = max(int(console.width), 40)
    if details:
        for rep in reports:
            if rep.readable and rep.findings:
                console.print(_findings_table(rep, width, max_rows))
                console.print()
    console.print(_summary_table(reports, width))


def _findings_table(rep: FileReport, width: int, max_rows: int):
    from rich import box
    from rich.table import Table

    title = f"{shorten_middle(rep.path, width - 16)} ({rep.n_nodes} nodes)"
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, width=width)
    t.add_column("level", no_wrap=True)
    t.add_column("check", no_wrap=True, overflow="ellipsis", max_width=21)
    # No node-id column: the messages name their nodes, and the room goes to the message.
    t.add_column("message / proposed fix", no_wrap=True, overflow="ellipsis", ratio=1)
    for f in rep.findings[:max_rows]:
        text = escape(f.message) + (f"\n[dim]fix: {escape(describe_fix(f.fix))}[/]" if f.fix else "")
        t.add_row(f"[{_STYLE[f.severity]}]{_SHORT[f.severity]}[/]", f.check, text)
    if len(rep.findings) > max_rows:
        t.add_row("", f"... {len(rep.findings) - max_rows} more", "see --json or --html for all")
    return t


def _summary_table(reports: list[FileReport], width: int):
    from rich import box
    from rich.table import Table

    s = Table(title="summary", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, width=width)
    name_width = max(16, min(max((len(r.path) for r in reports), default=16), width - 52))
    s.add_column("file", no_wrap=True, width=name_width)
    for col in ("nodes", "errors", "warn", "info"):
        s.add_column(col, justify="right", no_wrap=True, width=max(len(col), 6 if col == "nodes" else 3))
    s.add_column("checks hit", no_wrap=True, overflow="ellipsis", ratio=1)
    for rep in reports:
        path = escape(shorten_middle(rep.path, name_width))
        if not rep.readable:
            s.add_row(path, "-", "-", "-", "-", f"[bold red]unreadable[/]: {escape(rep.error or '')}")
            continue
        sev = Counter(f.severity for f in rep.findings)
        hit = Counter(f.check for f in rep.findings)
        s.add_row(path, str(rep.n_nodes), _n(sev[Severity.ERROR], Severity.ERROR), _n(sev[Severity.WARNING], Severity.WARNING),
                  _n(sev[Severity.INFO], Severity.INFO), ", ".join(f"{k}×{v}" for k, v in hit.most_common(6)))
    return s


def _n(k: int, sev: Severity) -> str:
    return f"[{_STYLE[sev]}]{k}[/]" if k else "0"


def exit_code(reports: list[FileReport], fail_on: Severity) -> int:
    """1 if any file is unreadable or has a finding at or above ``fail_on``, else 0."""
    for rep in reports:
        worst = rep.worst()
        if worst is not None and worst >= fail_on:
            return 1
    return 0
