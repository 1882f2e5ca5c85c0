"""HTML check reports: one page per neuron with projection plots marking every finding."""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_write_text
from ..io.swc import read_swc
from .findings import Severity, describe_fix
from .projection import AXES, TINT_INDEX, Marker, cluster_points, fit_panels, svg_panel, tree_picture
from .run import FileReport

_COLOR = {Severity.ERROR: "#d62728", Severity.WARNING: "#ff7f0e", Severity.INFO: "#1f77b4"}
#: Findings about more nodes than this tint them instead of getting a marker.
TINT_OVER = 10
#: Markers closer than this many pixels are drawn as one, with a count.
CLUSTER_PX = 16


def projections_html(neuron, findings) -> str:
    """The xy and xz projections (vertical axes up) with the findings as clustered, numbered markers.

    Finding ``k`` (1-based, the order of ``findings``) links to the table row ``#f<k>``. A finding
    about more than :data:`TINT_OVER` nodes (e.g. the type of a whole branch) tints those nodes
    instead of drawing a marker.
    """
    panels = fit_panels(neuron.xyz)
    tint: dict[int, list] = {}
    at, sev, num = [], [], []
    for k, f in enumerate(findings, start=1):
        if not f.node_ids or not f.xyz:
            continue
        if len(f.node_ids) > TINT_OVER:
            rows = neuron.index_of(np.asarray(f.node_ids, dtype=np.int64))
            tint.setdefault(TINT_INDEX[str(f.severity)], []).extend(rows[rows >= 0].tolist())
            continue
        at.append(f.xyz[0])
        sev.append(int(f.severity))
        num.append(k)
    tint = {k: np.asarray(v, dtype=np.int64) for k, v in tint.items()}
    return "".join(svg_panel(p, tree_picture(neuron, p, tint), _markers(p, np.asarray(at, float), np.asarray(sev, int), num, findings),
                             title=f"{p.name} projection ({AXES[p.b]} up)") for p in panels)


def _markers(panel, xyz, sev, num, findings) -> list[Marker]:
    if not len(num):
        return []
    px = panel.to_px(xyz)
    group = cluster_points(px, CLUSTER_PX)
    out = []
    for g in range(int(group.max()) + 1):
        members = np.flatnonzero(group == g)
        worst = Severity(int(sev[members].max()))
        ks = [num[m] for m in members.tolist()]
        if len(ks) == 1:
            f = findings[ks[0] - 1]
            label, title = str(ks[0]), f"finding {ks[0]}: {f.check}: {f.message}"
        else:
            label = str(len(ks))
            title = f"{len(ks)} findings here: " + ", ".join(map(str, ks[:20])) + (" ..." if len(ks) > 20 else "")
        c = px[members].mean(0)
        out.append(Marker(float(c[0]), float(c[1]), len(ks), _COLOR[worst], label, title, f"#f{ks[0]}"))
    return out


def _page_name(path: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).name) or "neuron"
    name, k = f"{base}.html", 1
    while name in used:
        k += 1
        name = f"{base}.{k}.html"
    used.add(name)
    return name


def write_html(reports: list[FileReport], out_dir: str | os.PathLike, extras: dict[str, str] | None = None,
               neurons: dict | None = None) -> Path:
    """Write ``index.html`` and one page per file into ``out_dir``; returns the index path.

    Parameters
    ----------
    reports : list of FileReport
    out_dir : path-like
        Created if missing; pages already there are replaced (atomically).
    extras : dict, optional
        A report's path to more HTML for the end of its page (e.g. image snippets).
    neurons : dict, optional
        A report's path to its Neuron, when the caller has it (otherwise the file is read again).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = {"index.html"}
    rows = []
    for rep in reports:
        page = _page_name(rep.path, used)
        neuron = (neurons or {}).get(rep.path)
        atomic_write_text(out / page, _neuron_page(rep, (extras or {}).get(rep.path, ""), neuron))
        n_err = sum(f.severity == Severity.ERROR for f in rep.findings)
        n_warn = sum(f.severity == Severity.WARNING for f in rep.findings)
        status = "unreadable" if not rep.readable else f"{n_err} errors, {n_warn} warnings"
        rows.append(f"<tr><td><a href='{page}'>{html.escape(rep.path)}</a></td><td>{rep.n_nodes}</td><td>{status}</td></tr>")
    index = _doc("neurorecon check report", "<h1>neurorecon check report</h1><table><tr><th>file</th><th>nodes</th><th>findings</th></tr>" + "".join(rows) + "</table>")
    return atomic_write_text(out / "index.html", index)


def _neuron_page(rep: FileReport, extra: str = "", neuron=None) -> str:
    title = html.escape(Path(rep.path).name)
    if not rep.readable:
        return _doc(title, f"<h1>{title}</h1><p class='err'>unreadable: {html.escape(rep.error or '')}</p><p><a href='index.html'>back</a></p>")
    neuron = neuron if neuron is not None else read_swc(rep.path, strict=False)
    rows = []
    for k, f in enumerate(rep.findings, start=1):
        ids = ", ".join(map(str, f.node_ids[:8])) + (" ..." if len(f.node_ids) > 8 else "")
        fix = html.escape(describe_fix(f.fix, neuron)) if f.fix else ""
        rows.append(f"<tr id='f{k}'><td>{k}</td><td style='color:{_COLOR[f.severity]}'>{f.severity}</td><td>{f.check}</td>"
                    f"<td>{ids}</td><td>{html.escape(f.message)}</td><td>{fix}</td></tr>")
    body = (f"<h1>{title}</h1><p>{html.escape(rep.path)} &middot; {rep.n_nodes} nodes &middot; {len(rep.findings)} findings &middot; <a href='index.html'>all files</a></p>"
            f"<div class='proj'>{projections_html(neuron, rep.findings)}</div>"
            "<p class='note'>A ring is one finding, numbered as in the table; a filled disc is that many findings close together "
            "(hover for their numbers, click for the first). Red: error, orange: warning, blue: info.</p>"
            "<table><tr><th>#</th><th>severity</th><th>check</th><th>node ids</th><th>message</th><th>proposed fix</th></tr>" + "".join(rows) + "</table>" + extra)
    return _doc(title, body)


def _doc(title: str, body: str) -> str:
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;"
             "font-size:13px;text-align:left;vertical-align:top}img{max-width:100%}.err{color:#d62728}.note{color:#555;font-size:12px}"
             "tr:target{background:#ffef9e}.proj svg{margin:0 12px 8px 0;vertical-align:top}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head><body>{body}</body></html>"
