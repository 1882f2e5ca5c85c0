"""The check report with the detector's flags: rule findings, flagged nodes and image snippets."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import numpy as np

MAX_SNIPPETS = 40
SNIPPET_UM = 24.0


def _snippet_png(volume, neuron, row: int, p: float, reason: str) -> str:
    """Max projections (xy and xz) of a small box around the node, trace overlaid, node circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    vs = np.asarray(volume.voxel_size, float)
    c = neuron.xyz[row]
    lo, hi = volume.box_around(c - SNIPPET_UM / 2, c + SNIPPET_UM / 2)
    img = volume.read(tuple(lo), tuple(hi)).astype(np.float32)
    org = lo[::-1] * vs                                              # xyz of voxel [lo] centre
    near = np.all(np.abs(neuron.xyz - c) <= SNIPPET_UM / 2, axis=1)
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.2))
    for ax, (axis, a, b) in zip(axes, ((0, 0, 1), (1, 0, 2))):
        mip = img.max(axis=axis)
        ext = [org[a] - vs[a] / 2, org[a] + (mip.shape[1] - 0.5) * vs[a], org[b] - vs[b] / 2, org[b] + (mip.shape[0] - 0.5) * vs[b]]
        ax.imshow(mip, cmap="gray", origin="lower", extent=ext, aspect="auto")
        rows = np.flatnonzero(near & (neuron.parent >= 0))
        seg = np.stack([neuron.xyz[rows][:, [a, b]], neuron.xyz[neuron.parent[rows]][:, [a, b]]], axis=1)
        ax.add_collection(LineCollection(seg, colors="#00c8ff", linewidths=0.8))
        ax.plot(c[a], c[b], "o", mfc="none", mec="#ff3030", ms=12, mew=1.5)
        ax.set_xlabel("xyz"[a] + " (µm)")
        ax.set_ylabel("xyz"[b] + " (µm)")
        ax.set_xlim(ext[0], ext[1])
        ax.set_ylim(ext[2], ext[3])
    fig.suptitle(f"node {neuron.ids[row]}: p={p:.2f} {reason}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def snippets_html(result, volume) -> str:
    rows = np.flatnonzero(result.flagged)
    rows = rows[np.argsort(-result.p_error[rows], kind="stable")][:MAX_SNIPPETS]
    parts = [f"<h2>Flagged nodes ({int(result.flagged.sum())}; the {len(rows)} most likely shown)</h2>"]
    for r in rows.tolist():
        png = _snippet_png(volume, result.neuron, r, float(result.p_error[r]), str(result.reason[r]))
        fix = result.fixes[r]
        parts.append(f"<figure style='display:inline-block;margin:4px'><img src='data:image/png;base64,{png}' "
                     f"alt='node {result.neuron.ids[r]}'><figcaption>{html.escape(fix.action + ' ' + str(fix.params) if fix else 'no proposal')}"
                     "</figcaption></figure>")
    return "".join(parts)


def write_detection_html(result, trace: str | os.PathLike, volume, out_dir: str | os.PathLike) -> Path:
    """The foundation's check report for ``trace`` plus the detector's flags and image snippets."""
    from ..qc.html import write_html
    from ..qc.run import FileReport, check_neuron

    findings = check_neuron(result.neuron) + result.findings()
    rep = FileReport(str(trace), True, None, len(result.neuron), findings)
    return write_html([rep], out_dir, extras={str(trace): snippets_html(result, volume)})
