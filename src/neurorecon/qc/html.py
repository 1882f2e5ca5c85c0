"""HTML check reports: one page per neuron with projection plots marking every finding."""

from __future__ import annotations

import base64
import html
import io
import os
import re
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_write_text
from ..io.swc import read_swc
from .findings import Severity
from .run import FileReport

_COLOR = {Severity.ERROR: "#d62728", Severity.WARNING: "#ff7f0e", Severity.INFO: "#1f77b4"}
_TYPE_COLOR = {1: "#000000", 2: "#1f77b4", 3: "#d62728", 4: "#9467bd"}


def _projection_png(neuron, findings) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    fig, axes = plt.subplots(1, 2, figsize=(13, 6.2))
    has = neuron.parent >= 0
    child, par = np.flatnonzero(has), neuron.parent[has]
    colors = [_TYPE_COLOR.get(int(t), "#7f7f7f") for t in neuron.types[child]]
    for ax, (a, b, la, lb) in zip(axes, ((0, 1, "x", "y"), (0, 2, "x", "z"))):
        seg = np.stack([neuron.xyz[par][:, [a, b]], neuron.xyz[child][:, [a, b]]], axis=1)
        ax.add_collection(LineCollection(seg, colors=colors, linewidths=0.6))
        ax.scatter(neuron.xyz[:, a], neuron.xyz[:, b], s=0.5, c="#bbbbbb", zorder=1)
        for k, f in enumerate(findings, start=1):
            if not f.xyz:
                continue
            pts = np.asarray(f.xyz)
            if len(pts) > 10:  # a finding about many nodes (e.g. every node's type) tints them instead
                ax.scatter(pts[:, a], pts[:, b], s=3, c=_COLOR[f.severity], alpha=0.25, zorder=2, linewidths=0)
                continue
            ax.scatter(pts[:, a], pts[:, b], s=60, facecolors="none", edgecolors=_COLOR[f.severity], linewidths=1.4, zorder=3)
            if k <= 60:
                ax.annotate(str(k), pts[0, [a, b]], fontsize=7, color=_COLOR[f.severity], xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel(la)
        ax.set_ylabel(lb)
        ax.set_aspect("equal", adjustable="datalim")
        ax.autoscale_view()
        if lb == "y":
            ax.invert_yaxis()  # image convention: y grows downwards
        ax.set_title(f"{la}{lb} projection")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _page_name(path: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).name) or "neuron"
    name, k = f"{base}.html", 1
    while name in used:
        k += 1
        name = f"{base}.{k}.html"
    used.add(name)
    return name


def write_html(reports: list[FileReport], out_dir: str | os.PathLike, extras: dict[str, str] | None = None) -> Path:
    """Write ``index.html`` and one page per file into ``out_dir``; returns the index path.

    ``extras`` maps a report's path to more HTML for the end of its page (e.g. image snippets)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = {"index.html"}
    rows = []
    for rep in reports:
        page = _page_name(rep.path, used)
        atomic_write_text(out / page, _neuron_page(rep, (extras or {}).get(rep.path, "")))
        n_err = sum(f.severity == Severity.ERROR for f in rep.findings)
        n_warn = sum(f.severity == Severity.WARNING for f in rep.findings)
        status = "unreadable" if not rep.readable else f"{n_err} errors, {n_warn} warnings"
        rows.append(f"<tr><td><a href='{page}'>{html.escape(rep.path)}</a></td><td>{rep.n_nodes}</td><td>{status}</td></tr>")
    index = _doc("neurorecon check report", "<h1>neurorecon check report</h1><table><tr><th>file</th><th>nodes</th><th>findings</th></tr>" + "".join(rows) + "</table>")
    return atomic_write_text(out / "index.html", index)


def _neuron_page(rep: FileReport, extra: str = "") -> str:
    title = html.escape(Path(rep.path).name)
    if not rep.readable:
        return _doc(title, f"<h1>{title}</h1><p class='err'>unreadable: {html.escape(rep.error or '')}</p><p><a href='index.html'>back</a></p>")
    neuron = read_swc(rep.path, strict=False)
    img = _projection_png(neuron, rep.findings)
    rows = []
    for k, f in enumerate(rep.findings, start=1):
        ids = ", ".join(map(str, f.node_ids[:8])) + (" ..." if len(f.node_ids) > 8 else "")
        fix = html.escape(str(f.fix.to_dict())) if f.fix else ""
        rows.append(f"<tr><td>{k}</td><td style='color:{_COLOR[f.severity]}'>{f.severity}</td><td>{f.check}</td><td>{ids}</td><td>{html.escape(f.message)}</td><td>{fix}</td></tr>")
    body = (f"<h1>{title}</h1><p>{html.escape(rep.path)} &middot; {rep.n_nodes} nodes &middot; {len(rep.findings)} findings &middot; <a href='index.html'>all files</a></p>"
            f"<img src='data:image/png;base64,{img}' alt='projections with findings circled'>"
            "<table><tr><th>#</th><th>severity</th><th>check</th><th>node ids</th><th>message</th><th>proposed fix</th></tr>" + "".join(rows) + "</table>" + extra)
    return _doc(title, body)


def _doc(title: str, body: str) -> str:
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;"
             "font-size:13px;text-align:left;vertical-align:top}img{max-width:100%}.err{color:#d62728}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head><body>{body}</body></html>"
