"""``make demo`` runs the whole loop (check, fix, render, detect, report, evaluate, segment EM, review
command) and writes only under its --out folder."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import neurorecon

SRC = Path(neurorecon.__file__).resolve().parent


def _tree(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*") if p.is_file()}


def test_demo_runs_the_whole_loop_into_its_out_folder(tmp_path):
    cwd, out = tmp_path / "cwd", tmp_path / "out"
    cwd.mkdir()
    bundled = _tree(SRC / "data")
    env = {**os.environ, "PYTHONPATH": str(SRC.parent), "COLUMNS": "100"}
    r = subprocess.run([sys.executable, "-m", "neurorecon.demo", "--out", str(out)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr == "", r.stderr[-2000:]
    # Only --out was written: not the working folder, not the bundled data.
    assert list(cwd.iterdir()) == []
    assert _tree(SRC / "data") == bundled

    # 1. check and fix the real neurons.
    files = json.loads((out / "report.json").read_text())["files"]
    assert len(files) == 4 and all(f["readable"] for f in files)
    fixes = [g for f in files for g in f["findings"] if g["fix"]]
    assert fixes and all(g["fix_text"] for g in fixes)
    for f in files:
        name = Path(f["path"]).name
        assert (out / "html" / f"{name}.html").is_file()
        stem = name[: -len(".swc")]
        assert all((out / "fixed" / f"{stem}{ext}").is_file() for ext in (".swc", ".edits.json", ".apo"))

    # 2. the rendered crop, its scores, the detector's report and the evaluation.
    det = out / "detect"
    meta = json.loads((det / "crop.json").read_text())
    assert meta["errors"] and meta["imaging"] == "noisy_0.5um"
    labels = (det / "crop.labels.csv").read_text().splitlines()
    scores = (det / "crop.scores.csv").read_text().splitlines()
    assert scores[0].startswith("node_id,p_error") and len(scores) == len(labels)
    page = (det / "html" / "crop.swc.html").read_text()
    assert "Flagged nodes" in page and page.count("data:image/png;base64,") > 2
    evaluation = (det / "evaluation.txt").read_text()
    assert "AUC" in evaluation and "recall at 1.4% FPR" in evaluation
    assert evaluation.splitlines()[0] in r.stdout

    # 3. EM: a held-out pinky40 crop rendered, segmented, scored against its labels, drawn.
    em = json.loads((out / "em" / "metrics.json").read_text())
    assert em["style"] == "sem" and em["voxels"] == 32 * 160 * 160 and em["true_objects"] > 50
    assert 0 < em["voi_split"] < 5 and 0 < em["voi_merge"] < 5 and 0 < em["adapted_rand_error"] < 1
    assert f"adapted Rand error {em['adapted_rand_error']:.3f}" in r.stdout
    png = (out / "em" / "segmentation.png").read_bytes()
    assert png.startswith(b"\x89PNG") and 10_000 < len(png) < 150_000

    # 4. the review command, runnable as printed: every file it names exists.
    line = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith("neurorecon review "))
    argv = shlex.split(line)
    assert argv[:2] == ["neurorecon", "review"] and argv[3] == "--image" and argv[5] == "--scores"
    assert Path(argv[2]) == det / "crop.swc" and Path(argv[4]) == det / "crop.tif" and Path(argv[6]) == det / "crop.scores.csv"
    assert all(Path(a).is_file() for a in argv[2::2])
