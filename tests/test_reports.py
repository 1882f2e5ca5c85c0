"""Reports people read: fixes in words, one orientation (y and z up), clustered markers, small
pages, and a terminal table that fits 80 columns. On real reconstructions and a rendered crop."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neurorecon.io.png import encode_png
from neurorecon.io.swc import read_swc, write_swc
from neurorecon.qc.findings import Fix, Severity, describe_fix, make_finding
from neurorecon.qc.fixes import FIX_ACTIONS, apply_fix
from neurorecon.qc.projection import cluster_points, fit_panels, marker_radius, tree_picture

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "morphologies"
AXON = DATA / "mouse_wholebrain_axons" / "121959.swc"
PYRAMID = DATA / "cortical_cng" / "IF1_030400.CNG.swc"
EDGES = DATA / "edge_cases"


@pytest.fixture(scope="module")
def pyramid():
    return read_swc(PYRAMID, strict=False)


# ------------------------------------------------------------------------------ fixes in words
def test_every_fix_action_has_words_and_sizes_match_the_edit(pyramid):
    n = pyramid
    leaf = int(np.flatnonzero((n.n_children == 0) & (n.parent > 0))[0])
    branch = int(np.flatnonzero((n.n_children == 2) & (n.parent > 0))[-1])       # a branch point: prunes several
    ids = n.ids
    fixes = {
        "move": Fix("move", {"node_id": int(ids[leaf]), "xyz": (n.xyz[leaf] + [3.0, 4.0, 0.0]).tolist()}),
        "prune": Fix("prune", {"node_id": int(ids[branch])}),
        "bridge": Fix("bridge", {"node_id": int(ids[leaf]), "parent_id": int(ids[0])}),
        "relabel": Fix("relabel", {"node_ids": ids[[leaf, branch]].tolist(), "type": 2}),
        "merge": Fix("merge", {"node_id": int(ids[leaf]), "into_id": int(ids[n.parent[leaf]])}),
        "cut": Fix("cut", {"node_id": int(ids[leaf])}),
        "delete": Fix("delete", {"node_id": int(ids[leaf])}),
        "drop_duplicate": Fix("drop_duplicate", {"node_id": int(ids[leaf]), "occurrence": 1}),
        "renumber": Fix("renumber", {"node_id": int(ids[leaf]), "occurrence": 1}),
    }
    assert set(FIX_ACTIONS) <= set(fixes), "a fix action without a phrase in this test"
    for action, fix in fixes.items():
        text = fix.describe(n)
        assert "{" not in text and "'" not in text and str(fix.params.get("node_id", "")) in text, (action, text)
    # The sizes in the words are what the edit does.
    pruned, _ = apply_fix(n, fixes["prune"], "t", "t", [])
    assert fixes["prune"].describe(n) == f"prune {len(n) - len(pruned)} nodes from node {ids[branch]}"
    assert fixes["move"].describe(n).endswith(", 5.0 µm away")
    gap = np.linalg.norm(n.xyz[leaf] - n.xyz[0])
    assert fixes["bridge"].describe(n) == f"bridge node {ids[leaf]} to node {ids[0]} ({gap:.1f} µm)"
    assert fixes["relabel"].describe(n) == f"relabel 2 nodes ({ids[leaf]}, {ids[branch]}) as axon (type 2)"
    # Without the neuron the words still say what happens, and dicts (SCORES.csv, REVIEW.json) work too.
    assert describe_fix(fixes["prune"].to_dict()) == f"prune node {ids[branch]} and everything below it"
    assert describe_fix(None) == "no proposed fix"


def test_json_has_fix_text_beside_fix():
    from neurorecon.qc import check_paths
    from neurorecon.qc.report import to_json

    reports = check_paths(sorted(str(p) for p in EDGES.glob("*.swc")))
    found = [f for r in json.loads(to_json(reports))["files"] for f in r["findings"]]
    with_fix = [f for f in found if f["fix"]]
    assert with_fix, "the edge cases should propose fixes"
    for f in found:
        assert ("fix_text" in f) and (f["fix_text"] is None) == (f["fix"] is None)
    for f in with_fix:
        assert f["fix_text"] == describe_fix(f["fix"]) and "{" not in f["fix_text"]


def test_check_html_shows_fixes_in_words_without_matplotlib(tmp_path):
    """The HTML report is drawn with numpy (matplotlib's import alone cost more than the check)."""
    code = ("import sys, json; from neurorecon.qc import check_paths; from neurorecon.qc.html import write_html; "
            f"r = check_paths([{str(EDGES / 'disconnected_neurite.swc')!r}, {str(AXON)!r}]); "
            f"write_html(r, {str(tmp_path / 'html')!r}); print(json.dumps('matplotlib' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "false"
    page = (tmp_path / "html" / "disconnected_neurite.swc.html").read_text()
    assert "bridge node 10 to node 9 (" in page and "µm)" in page
    assert "{&#x27;action" not in page and "{'action" not in page
    big = (tmp_path / "html" / "121959.swc.html").read_text()
    assert len(big) < 200_000, "a 31,500-node neuron's page stays small"


# ------------------------------------------------------------------------------ orientation
def test_projection_puts_y_and_z_up_on_a_real_neuron(pyramid):
    n = pyramid
    xy, xz = fit_panels(n.xyz)
    for panel, axis in ((xy, 1), (xz, 2)):
        px = panel.to_px(n.xyz)
        top, bottom = int(np.argmax(n.xyz[:, axis])), int(np.argmin(n.xyz[:, axis]))
        assert px[top, 1] == px[:, 1].min() and px[bottom, 1] == px[:, 1].max()
        assert px[int(np.argmax(n.xyz[:, 0])), 0] == px[:, 0].max()       # x to the right
        assert px[:, 1].min() >= 0 and px[:, 1].max() <= panel.height - 1
        # The picture agrees: its first drawn row is the highest node's, its last the lowest's.
        img = tree_picture(n, panel)
        drawn = np.flatnonzero(img.any(axis=1))
        assert abs(drawn[0] - px[top, 1]) <= 2.5 and abs(drawn[-1] - px[bottom, 1]) <= 2.5


def test_detect_snippet_has_the_same_orientation():
    """A bright voxel above and right of the node appears above and right of the ring."""
    from neurorecon.detect.report import mip_picture, snippet_panels

    vs = (0.5, 0.5, 1.0)
    img = np.zeros((40, 100, 100), np.float32)                    # z, y, x
    node = np.array([25.0, 25.0, 20.0])
    bright = node + [4.0, 6.0, 5.0]                               # x +4, y +6, z +5 µm
    img[int(round(bright[2] / vs[2])), int(round(bright[1] / vs[1])), int(round(bright[0] / vs[0]))] = 100
    for panel in snippet_panels(node):
        pic = mip_picture(img, np.zeros(3, int), vs, panel)
        row, col = np.unravel_index(np.argmax(pic), pic.shape)
        ring_col, ring_row = panel.to_px(node)[0]
        want_col, want_row = panel.to_px(bright)[0]
        assert row < ring_row and col > ring_col, panel.name
        assert abs(row - want_row) <= 2 and abs(col - want_col) <= 2, panel.name


def test_check_html_markers_follow_y_up(tmp_path, pyramid):
    from neurorecon.qc.html import projections_html

    n = pyramid
    hi, lo = int(np.argmax(n.xyz[:, 1])), int(np.argmin(n.xyz[:, 1]))
    fs = [make_finding("t", Severity.ERROR, n, [hi], "highest"), make_finding("t", Severity.ERROR, n, [lo], "lowest")]
    svg = projections_html(n, fs).split("<svg xmlns")[1]          # the xy panel
    cy = {m.group(2): float(m.group(1)) for m in re.finditer(r"cy='([\d.]+)'.*?>(\d)</text>", svg)}
    assert cy["1"] < cy["2"], "the finding at the largest y must be drawn higher"
    assert "y (µm) →" in svg and "x (µm) →" in svg and "rotate(-90)" in svg


# ------------------------------------------------------------------------------ clustering
def test_markers_cluster_with_counts_and_never_overlap(pyramid):
    n = pyramid
    panel = fit_panels(n.xyz)[0]
    rng = np.random.default_rng(0)
    rows = rng.choice(len(n), 600, replace=False)
    px = panel.to_px(n.xyz[rows])
    group = cluster_points(px, 16)
    k = group.max() + 1
    assert 1 < k < 150, "600 findings over one neuron draw as a readable number of markers"
    count = np.bincount(group)
    centre = np.stack([np.bincount(group, px[:, j]) for j in (0, 1)], 1) / count[:, None]
    d = np.sqrt(((centre[:, None] - centre[None]) ** 2).sum(-1)) + np.eye(k) * 1e9
    r = marker_radius(count)
    assert (d >= r[:, None] + r[None, :] - 1e-6).all(), "two markers overlap"
    # A dense spot of 300 findings is one marker that says 300.
    spot = np.full((300, 2), 50.0) + rng.normal(0, 2, (300, 2))
    far = np.array([[400.0, 300.0]])
    g = cluster_points(np.vstack([spot, far]), 16)
    assert len(set(g[:300])) == 1 and g[300] != g[0]


def test_check_html_draws_a_count_for_a_crowd(tmp_path, pyramid):
    from neurorecon.qc.html import projections_html

    n = pyramid
    near = np.argsort(np.linalg.norm(n.xyz - n.xyz[0], axis=1))[:120]   # 120 nodes around the soma
    fs = [make_finding("t", Severity.WARNING, n, [r], "crowd") for r in near.tolist()]
    xy = projections_html(n, fs).split("<svg xmlns")[1]
    counts = [int(c) for c in re.findall(r"fill='white'>(\d+)</text>", xy)]
    assert sum(counts) + xy.count("r='5'") == 120 and max(counts) >= 60


# ------------------------------------------------------------------------------ page size
@pytest.fixture(scope="module")
def crop_detection(tmp_path_factory):
    """A rendered crop of a real Allen cell with injected errors, scored by the shipped detector."""
    from neurorecon.detect.api import detect
    from neurorecon.detect.dataset import HELDOUT_IMAGING
    from neurorecon.synth.samples import gold_from_neuron, make_sample
    from neurorecon.io.volume import open_volume

    gold = gold_from_neuron(read_swc(DATA / "allen_v1" / "Scnn1a_473845048_m.swc", strict=False))
    other = gold_from_neuron(read_swc(DATA / "allen_v1" / "Rorb_325404214_m.swc", strict=False))
    s = make_sample(gold, [other], HELDOUT_IMAGING[1], np.random.default_rng(0), size_um=(240.0, 240.0, 80.0),
                    spacing=1.0, n_errors=(1, 2))
    volume = open_volume(s.image, voxel_size=s.imaging.voxel_size)
    folder = tmp_path_factory.mktemp("crop")
    write_swc(s.trace, folder / "crop.swc")
    return detect(s.trace, volume), volume, folder


def test_detect_report_of_a_2000_node_crop_is_under_1_mb(crop_detection):
    from neurorecon.detect.report import MAX_SNIPPETS, snippet_rows, write_detection_html

    result, volume, folder = crop_detection
    assert len(result.neuron) >= 2000 and result.flagged.sum() > MAX_SNIPPETS
    write_detection_html(result, folder / "crop.swc", volume, folder / "html")
    page = (folder / "html" / "crop.swc.html").read_text()
    assert len(page.encode()) < 1_000_000, f"{len(page.encode())} bytes"
    sites = len(snippet_rows(result))
    assert 10 <= sites <= MAX_SNIPPETS
    assert page.count("data:image/png;base64,") == 2 + 2 * sites          # projections + xy/xz per snippet
    # Every flagged node is on the page (a snippet or a table row), and its fix is in words.
    for nid in result.neuron.ids[result.flagged].tolist():
        assert f"<td>{nid}</td>" in page
    assert "proposed: prune" in page or "proposed: move" in page


def test_snippets_show_one_per_site(crop_detection):
    from neurorecon.detect.report import SNIPPET_UM, snippet_rows

    result, _, _ = crop_detection
    rows = snippet_rows(result)
    p = result.p_error[rows]
    assert (np.diff(p) <= 1e-12).all(), "most likely first"
    fixes = [repr(result.fixes[r].to_dict()) for r in rows if result.fixes[r] is not None]
    assert len(fixes) == len(set(fixes)), "two snippets of one proposed fix"
    d = np.abs(result.neuron.xyz[rows][:, None] - result.neuron.xyz[rows][None]).max(-1) + np.eye(len(rows)) * 1e9
    assert d.min() >= SNIPPET_UM / 4


# ------------------------------------------------------------------------------ PNG
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_png_round_trips_through_pillow(bits):
    rng = np.random.default_rng(bits)
    pix = rng.integers(0, 2 ** bits, (17, 37)).astype(np.uint8)      # odd width: padded rows
    palette = rng.integers(0, 256, (2 ** bits, 3)).astype(np.uint8)
    im = Image.open(io.BytesIO(encode_png(pix, palette, bits=bits)))
    assert im.mode == "P" and im.size == (37, 17)
    np.testing.assert_array_equal(np.asarray(im), pix)
    np.testing.assert_array_equal(np.asarray(im.convert("RGB")), palette[pix])
    grey = rng.integers(0, 256, (5, 9)).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_png(grey)))), grey)


def test_png_refuses_indices_beyond_the_palette():
    with pytest.raises(ValueError, match="does not fit"):
        encode_png(np.full((2, 2), 5, np.uint8), np.zeros((4, 3)), bits=2)


# ------------------------------------------------------------------------------ terminal
def _printed(reports, width: int) -> list[str]:
    from rich.console import Console

    from neurorecon.qc.report import print_reports

    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    print_reports(reports, console, max_rows=6)
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [80, 120])
def test_terminal_table_fits_and_wraps_nothing(tmp_path, width):
    from rich.cells import cell_len

    from neurorecon.qc import check_paths

    # A long path, as real data folders have: the table must shorten it, not wrap it.
    deep = tmp_path / "lab_with_a_long_name" / "session_2024_03_11_animal_17" / "reconstructions_curated"
    deep.mkdir(parents=True)
    files = []
    for src in (PYRAMID, EDGES / "disconnected_neurite.swc", EDGES / "simple.swc"):
        (deep / src.name).write_bytes(src.read_bytes())
        files.append(str(deep / src.name))
    (deep / "broken.swc").write_text("not an swc\n")
    files.append(str(deep / "broken.swc"))
    reports = check_paths(files)
    lines = _printed(reports, width)
    assert max(cell_len(line) for line in lines) <= width
    # One line per finding shown, one more for its fix, nothing else: no wrapped continuation lines.
    for rep in reports:
        if not rep.findings:
            continue
        shown = rep.findings[:6]
        title = next(k for k, line in enumerate(lines) if line.rstrip().endswith(f"{Path(rep.path).name} ({rep.n_nodes} nodes)"))
        start = title + 3                                  # the title, the column names, the rule
        expect = sum(1 + (f.fix is not None) for f in shown)
        block = lines[start:start + expect + 1]
        assert block[-1].strip() == "" or block[-1].strip().startswith("..."), f"a wrapped line: {block[-1]!r}"
        block = block[:-1]
        assert sum(line.startswith(("error", "warn", "info")) for line in block) == len(shown)
        assert sum("fix: " in line for line in block) == sum(f.fix is not None for f in shown)
    summary = lines[lines.index(next(line for line in lines if line.startswith("summary"))):]
    for rep in reports:
        name = Path(rep.path).name
        assert sum(name in line for line in summary) == 1, name      # shortened from the middle: the name stays
    assert any("unreadable" in line for line in summary)


def test_cli_check_at_80_columns(tmp_path):
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    r = subprocess.run([sys.executable, "-m", "neurorecon", "check", str(PYRAMID), str(EDGES / "disconnected_neurite.swc")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 1, r.stderr                   # the pyramid has errors
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "fix: bridge node 10 to node 9" in r.stdout
