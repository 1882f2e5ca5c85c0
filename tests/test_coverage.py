"""Coverage first: detect and review check that the image holds the trace at the given voxel size
before anything is scored (src/neurorecon/detect/coverage.py).

Real and realistic data: benchmark crops made by `neurorecon synth`'s generator (held-out neurons
and imaging) and the DIADEM confocal stacks with their gold traces (../shared/data/lm_real)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neurorecon.cli import app
from neurorecon.detect.api import OUTSIDE, CoverageError, detect
from neurorecon.detect.coverage import MARGIN_UM, covered_nodes, measure_coverage
from neurorecon.detect.evaluate import evaluate_files
from neurorecon.detect.scores import ScoresError, read_scores_csv
from neurorecon.io.swc import read_swc, write_swc
from neurorecon.io.volume import open_volume, write_tiff
from neurorecon.viewer.flags import collect_flags, read_scores

DIADEM = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lm_real" / "diadem_opf"
STACKS = ["OP_1", "OP_2", "OP_3", "OP_5", "OP_6"]
#: Held-out crops of seed 11 (0.3, 0.5 and 0.7 µm voxels; 83, 75 and 191 nodes).
CROPS = (0, 2, 3)
runner = CliRunner()


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    """Benchmark crops as `neurorecon synth --split heldout --seed 11` writes them."""
    from neurorecon.detect.dataset import HELDOUT_SOURCES, draw_sample, load_sources
    from neurorecon.synth.samples import write_sample

    folder = tmp_path_factory.mktemp("bench")
    golds = load_sources(HELDOUT_SOURCES)
    out = {}
    for i in CROPS:
        sample, _ = draw_sample(golds, i, 11, True)
        write_sample(sample, folder, f"crop_{i:04d}")
        out[i] = (folder / f"crop_{i:04d}.swc", folder / f"crop_{i:04d}.tif")
    return out


def _diadem(name):
    return read_swc(DIADEM / f"{name}.swc"), DIADEM / f"{name}.tif"


def _scaled(tif, factor):
    vol = open_volume(tif)
    return open_volume(tif, voxel_size=tuple(np.asarray(vol.voxel_size) * factor))


# ------------------------------------------------------------------------------ the measurement
@pytest.mark.parametrize("name", STACKS)
def test_diadem_stacks_fit_at_their_voxel_size(name):
    neuron, tif = _diadem(name)
    cov = measure_coverage(neuron.xyz, open_volume(tif), neuron.parent)
    assert cov.problem is None
    assert cov.n_covered == len(neuron)
    assert cov.fit >= 0.9 and cov.fit_t > 10      # measured 0.95-0.97, t 40-80


@pytest.mark.parametrize("i", CROPS)
def test_benchmark_crops_fit_at_their_voxel_size(crops, i):
    swc, tif = crops[i]
    neuron = read_swc(swc)
    cov = measure_coverage(neuron.xyz, open_volume(tif), neuron.parent)
    assert cov.problem is None and cov.fit_judged
    assert cov.fit >= 0.8                          # measured 0.89-0.95


# z alone 4x too large on OP_3 is not caught (fit 0.60, t 2.9: its x-y still fits): one of the
# few misses measured (detect/coverage.py's notes).
@pytest.mark.parametrize("name, factor", [(name, f) for name in ("OP_1", "OP_3", "OP_5") for f in (4, 10, (4, 4, 1))]
                         + [("OP_1", (1, 1, 4)), ("OP_5", (1, 1, 4))])
def test_voxel_size_too_large_is_caught_on_diadem(name, factor):
    neuron, tif = _diadem(name)
    cov = measure_coverage(neuron.xyz, _scaled(tif, np.broadcast_to(factor, 3)), neuron.parent)
    assert cov.fraction == 1.0                     # the trace shrinks into the image: coverage cannot tell
    assert cov.problem is not None and cov.problem.startswith("the trace does not")
    assert "check the voxel size or the image" in cov.problem


@pytest.mark.parametrize("factor", [4, 10])
@pytest.mark.parametrize("i", CROPS)
def test_voxel_size_too_large_is_caught_on_crops(crops, i, factor):
    swc, tif = crops[i]
    neuron = read_swc(swc)
    cov = measure_coverage(neuron.xyz, _scaled(tif, factor), neuron.parent)
    assert cov.problem is not None and cov.problem.startswith("the trace does not")


@pytest.mark.parametrize("name", ["OP_1", "OP_6"])
def test_voxel_size_too_small_puts_the_trace_outside(name):
    neuron, tif = _diadem(name)
    cov = measure_coverage(neuron.xyz, _scaled(tif, 0.25), neuron.parent)
    assert cov.fraction < 0.5
    assert f"of {len(neuron):,} nodes" in cov.problem and "lie inside the image" in cov.problem


def test_trace_wholly_outside_reports_both_extents():
    neuron, tif = _diadem("OP_1")
    vol = open_volume(tif)
    far = neuron.xyz + [4000.0, 0, 0]
    cov = measure_coverage(far, vol, neuron.parent)
    assert cov.n_covered == 0 and np.isnan(cov.fit)
    assert cov.problem.startswith(f"0 of {len(neuron):,} nodes (0.0%) lie inside the image")
    lo, hi = far[:, 0].min(), far[:, 0].max()
    assert f"the trace spans x {lo:,.0f}-{hi:,.0f} µm" in cov.problem
    assert f"the image spans x -0.2-{(vol.shape[2] - 0.5) * vol.voxel_size[0]:,.0f} µm" in cov.problem


def test_margin_counts_nodes_just_outside_the_last_voxel():
    vol = open_volume(DIADEM / "OP_2.tif")
    edge = (vol.shape[0] - 0.5) * vol.voxel_size[2]                   # the far face in z
    xyz = np.array([[10.0, 10.0, edge + MARGIN_UM - 0.1], [10.0, 10.0, edge + MARGIN_UM + 0.1],
                    [10.0, 10.0, -0.5 - MARGIN_UM + 0.1], [10.0, 10.0, -0.5 - MARGIN_UM - 0.1]])
    assert covered_nodes(xyz, vol.shape, vol.voxel_size).tolist() == [True, False, True, False]


def test_few_nodes_are_not_judged_but_still_counted():
    neuron, tif = _diadem("OP_2")
    part = neuron.take(np.arange(12))
    cov = measure_coverage(part.xyz, _scaled(tif, 10), part.parent)
    assert not cov.fit_judged and cov.problem is None
    assert "12 of 12 nodes inside the image; too few of them (under 24) to check the voxel size" in cov.summary()


# ------------------------------------------------------------------------------ detect()
def _cut_image(name, keep=0.75):
    """The stack cut to the first ``keep`` of its width: the trace's nodes beyond lie outside it."""
    neuron, tif = _diadem(name)
    vol = open_volume(tif)
    arr = vol.read((0, 0, 0), vol.shape)
    return neuron, open_volume(arr[:, :, : int(vol.shape[2] * keep)], voxel_size=vol.voxel_size)


def test_nodes_outside_the_image_are_not_scored_nor_flagged(tmp_path):
    neuron, vol = _cut_image("OP_1")
    outside = ~covered_nodes(neuron.xyz, vol.shape, vol.voxel_size)
    assert 0.05 < outside.mean() < 0.5            # a part outside, most inside
    res = detect(neuron, vol)
    assert res.coverage.n_outside == outside.sum()
    assert np.isnan(res.p_error[outside]).all() and np.isfinite(res.p_error[~outside]).all()
    assert not res.flagged[outside].any()
    assert (res.reason[outside] == OUTSIDE).all() and OUTSIDE not in res.reason[~outside]
    assert all(res.fixes[r] is None for r in np.flatnonzero(outside))
    assert not any(f.node_ids[0] in set(neuron.ids[outside].tolist()) for f in res.findings())
    path = res.write_csv(tmp_path / "s.csv")
    rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
    assert [r[1] == "" for r in rows] == outside.tolist()
    assert all(r[2] == "0" and r[3] == OUTSIDE for r, o in zip(rows, outside) if o)
    back = read_scores_csv(path)
    assert np.array_equal(np.isnan(back.p_error), outside)
    assert np.allclose(back.p_error[~outside], res.p_error[~outside], atol=1e-5)


def test_detect_refuses_a_trace_outside_and_force_goes_on():
    neuron, tif = _diadem("OP_2")
    far = neuron.with_changes(xyz=neuron.xyz + [0.0, 600.0, 0.0])
    with pytest.raises(CoverageError, match=r"^0 of 235 nodes \(0\.0%\) lie inside the image"):
        detect(far, open_volume(tif))
    res = detect(far, open_volume(tif), force=True)
    assert np.isnan(res.p_error).all() and not res.flagged.any() and res.findings() == []
    assert res.warnings[0].startswith("scored anyway (forced): 0 of 235 nodes")


def test_detect_refuses_a_voxel_size_ten_times_too_large():
    neuron, tif = _diadem("OP_3")
    with pytest.raises(CoverageError, match="does not lie on the image's fibres"):
        detect(neuron, _scaled(tif, 10))


# ------------------------------------------------------------------------------ SCORES.csv readers
def test_readers_take_an_empty_p_error_as_unscored(tmp_path, review_sample):
    text = review_sample.scores.read_text().splitlines()
    # Node 20 (p 0.90, a flag) not scored: the image did not cover it.
    text = [",".join([c if k != 1 or not line.startswith("20,") else "" for k, c in enumerate(line.split(","))])
            for line in text]
    path = tmp_path / "s.csv"
    path.write_text("\n".join(text) + "\n")
    sc = read_scores_csv(path)
    assert np.isnan(sc.p_error[sc.node_id == 20]).all() and np.isfinite(sc.p_error[sc.node_id != 20]).all()
    neuron = read_swc(review_sample.trace)
    before = [f.key for f in read_scores(review_sample.scores, neuron)]
    assert "detector:20" in before
    assert [f.key for f in read_scores(path, neuron)] == [k for k in before if k != "detector:20"]
    path.write_text("node_id,p_error\n1,nan\n")
    with pytest.raises(ScoresError, match=r"p_error 'nan' is not in \[0, 1\]"):
        read_scores_csv(path)


def test_evaluate_leaves_unscored_nodes_out(tmp_path):
    scores = tmp_path / "s.csv"
    scores.write_text("node_id,p_error\n1,0.9\n2,0.1\n3,\n4,0.2\n")
    labels = tmp_path / "l.csv"
    labels.write_text("node_id,label\n1,1\n2,0\n3,1\n4,0\n")
    m = evaluate_files(scores, labels)
    assert (m.n, m.n_errors, m.auc) == (3, 1, 1.0)


# ------------------------------------------------------------------------------ review
def test_detector_flags_on_uncovered_nodes_are_not_opened_rule_findings_are(review_sample):
    n = read_swc(review_sample.trace)
    gone = {10, 17, 20}
    every = collect_flags(n, review_sample.scores, sites=False)
    kept = collect_flags(n, review_sample.scores, sites=False, uncovered=sorted(gone))
    assert {f.node_id for f in every if f.source == "detector"} >= gone
    assert [f.key for f in kept] == [f.key for f in every if f.source != "detector" or f.node_id not in gone]
    assert {f.key for f in kept if f.source == "rule"} >= {"type_change:17", "type_change:18"}


# ------------------------------------------------------------------------------ the CLI
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "neurorecon", *map(str, args)], capture_output=True, text=True)


def test_cli_detect_trace_outside_exits_2_then_force(tmp_path):
    neuron, tif = _diadem("OP_2")
    swc = tmp_path / "far.swc"
    write_swc(neuron.with_changes(xyz=neuron.xyz + [0.0, 600.0, 0.0]), swc)
    out = tmp_path / "s.csv"
    r = _cli("detect", swc, "--image", tif, "--out", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("neurorecon: error: 0 of 235 nodes (0.0%) lie inside the image")
    assert r.stderr.count("\n") == 1
    assert "check the voxel size or the image" in r.stderr and "--force" in r.stderr
    assert not out.exists()
    r = _cli("detect", swc, "--image", tif, "--out", out, "--force")
    assert r.returncode == 0, r.stderr
    assert "coverage: 0 of 235 nodes inside the image, 235 outside (not scored)" in r.stdout
    assert "0 nodes scored, 0 flagged" in r.stdout and "scored anyway (forced)" in r.stderr
    assert all(line.split(",")[1:4] == ["", "0", OUTSIDE] for line in out.read_text().splitlines()[1:])


def test_cli_detect_wrong_voxel_size_exits_2(tmp_path):
    neuron, tif = _diadem("OP_5")
    r = _cli("detect", DIADEM / "OP_5.swc", "--image", tif, "--voxel-size", "3.3", "3.3", "10",
             "--out", tmp_path / "s.csv")
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert "does not lie on the image's fibres" in r.stderr and "--force" in r.stderr


def test_cli_detect_cut_image_counts_the_nodes_outside(tmp_path):
    # Cut at 60% of its width, the image holds 46% of OP_1's trace: an error that says so.
    neuron, vol = _cut_image("OP_1", 0.6)
    half = write_tiff(tmp_path / "half.tif", vol.read((0, 0, 0), vol.shape), vol.voxel_size)
    r = _cli("detect", DIADEM / "OP_1.swc", "--image", half, "--out", tmp_path / "h.csv")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("neurorecon: error: 687 of 1,496 nodes (45.9%) lie inside the image; the image spans "
                               "x -0.2-101 µm, y -0.2-169 µm, z -0.5-59.5 µm; the trace spans x 9.4-148 µm")
    # Cut at 75%, most of it is inside: scored, the rest counted.
    neuron, vol = _cut_image("OP_1")
    tif = write_tiff(tmp_path / "cut.tif", vol.read((0, 0, 0), vol.shape), vol.voxel_size)
    outside = int((~covered_nodes(neuron.xyz, vol.shape, vol.voxel_size)).sum())
    out = tmp_path / "s.csv"
    r = _cli("detect", DIADEM / "OP_1.swc", "--image", tif, "--out", out)
    assert r.returncode == 0, r.stderr
    n = len(neuron)
    assert f"coverage: {n - outside:,} of {n:,} nodes inside the image, {outside:,} outside (not scored)" in r.stdout
    assert f"\n{n - outside} nodes scored" in r.stdout
    labels = tmp_path / "l.csv"
    labels.write_text("node_id,label\n" + "".join(f"{i},0\n" for i in neuron.ids.tolist()))
    labels.write_text(labels.read_text().replace(f"\n{neuron.ids[0]},0\n", f"\n{neuron.ids[0]},1\n", 1))
    r = _cli("evaluate", out, labels)
    assert r.returncode == 0, r.stderr
    assert f"nodes {n - outside}," in r.stdout


def test_cli_review_trace_outside_exits_2_before_serving(review_sample, tmp_path):
    far = tmp_path / "far.swc"
    n = read_swc(review_sample.trace)
    write_swc(n.with_changes(xyz=n.xyz + [500.0, 0.0, 0.0]), far)
    r = runner.invoke(app, ["review", str(far), "--image", str(review_sample.image),
                            "--scores", str(review_sample.scores), "--review", str(tmp_path / "r.json")])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("neurorecon: error: 0 of 22 nodes (0.0%) lie inside the image") and "--force" in r.output
    assert not (tmp_path / "r.json").exists()


def _review_until_url(*args):
    """Run `neurorecon review` up to the line with the viewer's URL, then stop it (SIGTERM, as
    Ctrl-C would); its stdout up to there and its stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "neurorecon", "review", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("viewer:"):
                break
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return "".join(lines), proc.stderr.read()


def test_cli_review_skips_detector_flags_outside_the_image(review_sample, tmp_path):
    """The image cut at x < 28 µm: the spur (x = 30) and the dendrite's end lie outside; the spur's
    detector flag (node 20) is not opened and the count is said."""
    vol = open_volume(str(review_sample.image))
    cut = write_tiff(tmp_path / "cut.tif", vol.read((0, 0, 0), vol.shape)[:, :, :56], vol.voxel_size)
    out, err = _review_until_url(review_sample.trace, "--image", cut, "--scores", review_sample.scores,
                                 "--review", tmp_path / "r.json")
    assert "coverage: 16 of 22 nodes inside the image, 6 outside (not scored)" in out, (out, err)
    n_out, n_open = _expected_review_counts(review_sample, open_volume(str(cut)), n := read_swc(review_sample.trace))
    assert n_out >= 1 and 20 in n.ids[~covered_nodes(n.xyz, open_volume(str(cut)).shape, vol.voxel_size)]
    assert f"{n_out} detector flags on nodes outside the image not opened" in out
    assert f": {n_open} flags, {n_open} undecided" in out and "warning" not in err


def _expected_review_counts(sample, volume, neuron):
    """Detector node flags the cut image leaves out, and the flags (sites) review opens, worked
    out through the API from the sample's own SCORES.csv."""
    outside = neuron.ids[~covered_nodes(neuron.xyz, volume.shape, volume.voxel_size)]
    node_flags = read_scores(sample.scores, neuron)
    n_out = sum(f.node_id in set(outside.tolist()) for f in node_flags)
    return n_out, len(collect_flags(neuron, sample.scores, uncovered=outside))


def test_cli_review_force_opens_the_rule_findings_only(review_sample, tmp_path):
    far = tmp_path / "far.swc"
    n = read_swc(review_sample.trace)
    write_swc(n.with_changes(xyz=n.xyz + [500.0, 0.0, 0.0]), far)
    out, err = _review_until_url(far, "--image", review_sample.image, "--scores", review_sample.scores,
                                 "--review", tmp_path / "r.json", "--force")
    assert "warning: going on anyway (--force): 0 of 22 nodes (0.0%) lie inside the image" in err, (out, err)
    assert "coverage: 0 of 22 nodes inside the image, 22 outside (not scored)" in out
    n_out = len(read_scores(review_sample.scores, n))
    assert n_out >= 4 and f"{n_out} detector flags on nodes outside the image not opened" in out
    rules = len(collect_flags(n, None))         # the type_change site at 17-18 needs no image
    assert rules >= 1 and f": {rules} flags, {rules} undecided" in out


def test_peaks_match_a_whole_gaussian_smoothing_and_per_group_reads_match_one(crops, monkeypatch):
    """The fit's peaks, however read (the box around all points, patches, one box per node for a
    large image), are those of scipy's Gaussian (truncate 2) over the whole image."""
    from scipy.ndimage import gaussian_filter

    from neurorecon.detect import coverage

    swc, tif = crops[3]
    vol = open_volume(tif)
    vs = np.asarray(vol.voxel_size)
    sigma = np.asarray(coverage.SMOOTH_UM)[::-1] / vs[::-1]
    img = gaussian_filter(vol.read((0, 0, 0), vol.shape).astype(np.float32), sigma, truncate=2.0, mode="nearest")
    rng = np.random.default_rng(4)
    pts = rng.uniform(0, 1, (6, 50, 3)) * (np.asarray(vol.shape)[::-1] * vs)
    half = np.floor(np.asarray(coverage.PEAK_HALF_UM) / vs + 1e-9).astype(int)[::-1]
    c = np.clip(np.rint(pts / vs)[..., ::-1].astype(int).reshape(-1, 3), 0, np.asarray(vol.shape) - 1)
    want = [img[tuple(slice(max(a - h, 0), a + h + 1) for a, h in zip(p, half))].max() for p in c]
    got = coverage._peaks(vol, pts)
    assert np.allclose(got.ravel(), want, rtol=1e-4)
    neuron = read_swc(swc)
    whole = measure_coverage(neuron.xyz, vol, neuron.parent)
    monkeypatch.setattr(coverage, "REGION_VOXELS", 1)           # as for a large image: per group
    assert np.allclose(coverage._peaks(vol, pts), got, rtol=1e-5)
    grouped = measure_coverage(neuron.xyz, vol, neuron.parent)
    assert (grouped.fit, grouped.n_places) == (pytest.approx(whole.fit), whole.n_places)
