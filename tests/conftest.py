"""Shared fixtures: a small review sample (image, trace with known errors, SCORES.csv) and a
headless Chromium for the viewer tests."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

# Selenium Manager would try the network (driver downloads, usage statistics) before falling back.
os.environ.setdefault("SE_OFFLINE", "true")
os.environ.setdefault("SE_AVOID_STATS", "true")

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
VOXEL = (0.5, 0.5, 1.0)


def _trace_rows():
    """A soma, a basal dendrite along x (ids 2-14, 2 µm apart), a branch along y from node 6
    (ids 15-19) and a spur into background from node 12 (ids 20-22). Errors: node 10 is 3.5 µm
    beside its fibre, node 17 has the axon type in a dendrite, 20-22 are the spur."""
    rows = [[1, 1, 8.0, 20.0, 10.0, 3.0, -1]]
    rows += [[2 + k, 3, float(x), 20.0, 10.0, 1.0, 1 + k] for k, x in enumerate(range(10, 36, 2))]
    rows += [[15 + k, 3, 18.0, float(y), 10.0, 1.0, 6 if k == 0 else 14 + k] for k, y in enumerate(range(22, 32, 2))]
    rows += [[20 + k, 3, 30.0, float(y), 10.0, 0.8, 12 if k == 0 else 19 + k] for k, y in enumerate((17, 15, 13))]
    rows[9][3] = 23.5
    rows[16][1] = 2
    return rows


def _fix_json(fix):
    return '"' + json.dumps(fix, separators=(",", ":")).replace('"', '""') + '"'


#: The detector's flags in SCORES.csv (node, p, reason, fix); node 8 (p 0.3) stays under 0.5.
SCORES = [
    (10, 0.95, "off_signal_xy", {"action": "move", "node_id": 10, "xyz": [26.0, 20.0, 10.0]}),
    (20, 0.90, "spur", {"action": "prune", "node_id": 20}),
    (4, 0.70, "off_signal_z", {"action": "move", "node_id": 4, "xyz": [14.0, 20.0, 12.0]}),
    (19, 0.60, "early_stop", None),
    (8, 0.30, "", None),
]
#: Review order: the two rule findings (type_change, errors) first, then the detector by p.
FLAG_KEYS = ["type_change:17", "type_change:18", "detector:10", "detector:20", "detector:4", "detector:19"]


@dataclass
class ReviewSample:
    folder: Path
    trace: Path
    image: Path
    scores: Path
    rows: list
    volume_shape: tuple
    flag_keys: tuple = tuple(FLAG_KEYS)

    def expected_fixed(self) -> str:
        """The trace after the scripted review's accepted fixes (accept, reject, accept, accept,
        reject, mark: the order of FLAG_KEYS): node 17 relabelled to 3, node 10 moved onto its
        fibre, the spur 20-22 pruned; node 4 (rejected move) untouched; ids kept."""
        from neurorecon.io import read_swc
        from neurorecon.io.swc import format_swc

        n = read_swc(self.trace)
        types, xyz = n.types.copy(), n.xyz.copy()
        types[n.index_of([17])] = 3
        xyz[n.index_of([10])] = [26.0, 20.0, 10.0]
        return format_swc(n.with_changes(types=types, xyz=xyz).take(np.flatnonzero(n.ids < 20)))

    def xyz(self, node_id: int) -> list[float]:
        return next(r[2:5] for r in self.rows if r[0] == node_id)


def make_review_sample(folder: Path) -> ReviewSample:
    from neurorecon.detect.render import Fibres, Imaging, render
    from neurorecon.io.volume import write_tiff

    rows = _trace_rows()
    folder.mkdir(parents=True, exist_ok=True)
    trace = folder / "trace.swc"
    trace.write_text("# review test trace\n" + "".join(" ".join(map(str, r)) + "\n" for r in rows))
    # The image shows the true fibres: the dendrite straight through node 10's true place, the
    # branch, no spur.
    xyz = np.array([r[2:5] for r in rows], float)
    xyz[9, 1] = 20.0
    ids = [r[0] for r in rows]
    parent = np.array([ids.index(r[6]) if r[6] > 0 else -1 for r in rows])
    parent[19:] = -2                      # drop the spur's edges
    keep = parent >= -1
    fibres = Fibres.from_tree(xyz, np.where(keep, parent, -1), np.full(len(rows), 0.8))
    imaging = Imaging(voxel_size=VOXEL, signal=80.0, background=10.0, bead_rate=0.0, dim_rate=0.0, name="test")
    shape = (21, 81, 89)
    img = render(fibres, np.zeros(3), shape, imaging, np.random.default_rng(0))
    image = folder / "image.tif"
    write_tiff(image, img, VOXEL)
    lines = ["node_id,p_error,flag,reason,x,y,z,fix"]
    for node, p, reason, fix in SCORES:
        x, y, z = xyz[ids.index(node)] if node != 10 else (26.0, 23.5, 10.0)
        lines.append(f"{node},{p:.5f},{int(p >= 0.5)},{reason},{x:.4f},{y:.4f},{z:.4f},{_fix_json(fix) if fix else ''}")
    scores = folder / "scores.csv"
    scores.write_text("\n".join(lines) + "\n")
    return ReviewSample(folder, trace, image, scores, rows, shape)


@pytest.fixture
def review_sample(tmp_path) -> ReviewSample:
    return make_review_sample(tmp_path / "sample")


@pytest.fixture
def screenshots(tmp_path) -> Path:
    """Where the viewer tests save screenshots: $NEURORECON_SCREENSHOTS (`make screenshots`
    writes the docs' images there) or a test folder."""
    d = Path(os.environ.get("NEURORECON_SCREENSHOTS") or tmp_path / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium per test process (xdist worker)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: the viewer tests need Chromium and its driver; `make test` "
                    "installs them (apt-get install --no-install-recommends chromium chromium-driver)", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
              "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--window-size=1100,720", "--enable-unsafe-swiftshader"):
        opts.add_argument(a)
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()
