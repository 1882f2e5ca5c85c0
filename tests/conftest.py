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
    (ids 15-19) and a spur into background from node 12 (ids 20-22). Errors: nodes 9-11 are a run
    beside their fibre (2, 3.5 and 2 µm off), node 17 has the axon type in a dendrite, 20-22 are
    the spur."""
    rows = [[1, 1, 8.0, 20.0, 10.0, 3.0, -1]]
    rows += [[2 + k, 3, float(x), 20.0, 10.0, 1.0, 1 + k] for k, x in enumerate(range(10, 36, 2))]
    rows += [[15 + k, 3, 18.0, float(y), 10.0, 1.0, 6 if k == 0 else 14 + k] for k, y in enumerate(range(22, 32, 2))]
    rows += [[20 + k, 3, 30.0, float(y), 10.0, 0.8, 12 if k == 0 else 19 + k] for k, y in enumerate((17, 15, 13))]
    rows[8][3], rows[9][3], rows[10][3] = 22.0, 23.5, 22.0
    rows[16][1] = 2
    return rows


def _fix_json(fix):
    return '"' + json.dumps(fix, separators=(",", ":")).replace('"', '""') + '"'


#: The detector's flags in SCORES.csv (node, p, reason, fix), as ``detect`` writes them: one per
#: node. Node 17 (axon type in a dendrite) is flagged too; the run 9-11 is 3 flags with a move each; the spur 20-22 is 3 flags, 20-21 proposing a
#: prune from 20 and the tip 22 (off the fibre too) a move. Node 8 (p 0.3) stays under 0.5; every
#: other node is scored 0.02.
SCORES = [
    (10, 0.95, "off_signal_xy", {"action": "move", "node_id": 10, "xyz": [26.0, 20.0, 10.0]}),
    (9, 0.80, "off_signal_xy", {"action": "move", "node_id": 9, "xyz": [24.0, 20.0, 10.0]}),
    (11, 0.82, "off_signal_xy", {"action": "move", "node_id": 11, "xyz": [28.0, 20.0, 10.0]}),
    (20, 0.90, "spur", {"action": "prune", "node_id": 20}),
    (21, 0.88, "spur", {"action": "prune", "node_id": 20}),
    (22, 0.84, "off_signal_xy", {"action": "move", "node_id": 22, "xyz": [30.0, 14.0, 10.0]}),
    (4, 0.70, "off_signal_z", {"action": "move", "node_id": 4, "xyz": [14.0, 20.0, 12.0]}),
    (17, 0.97, "wrong_type", {"action": "relabel", "node_ids": [17], "type": 3}),
    (19, 0.60, "early_stop", None),
    (8, 0.30, "", None),
]
#: Review order, one flag per error site: the type switch at 17 (two rule findings and the
#: detector's wrong_type, one site) first, then the detector's sites by p: the run 9-11 (at its most likely node, 10), the spur
#: 20-22 (at its base), node 4 (a false alarm), node 19 (no fix).
FLAG_KEYS = ["type_change:17", "detector:10", "detector:20", "detector:4", "detector:19"]
#: Node flags behind those sites: 2 rule findings and 9 detector nodes at p >= 0.5.
N_NODE_FLAGS = 11


@dataclass
class ReviewSample:
    folder: Path
    trace: Path
    image: Path
    scores: Path
    rows: list
    volume_shape: tuple
    flag_keys: tuple = tuple(FLAG_KEYS)
    n_node_flags: int = N_NODE_FLAGS

    def expected_fixed(self) -> str:
        """The trace after the scripted review's accepted fixes (accept, accept, accept, reject,
        mark: the order of FLAG_KEYS): node 17 relabelled to 3, nodes 9-11 moved onto their fibre,
        the spur 20-22 pruned; node 4 (rejected move) untouched; ids kept."""
        from neurorecon.io import read_swc
        from neurorecon.io.swc import format_swc

        n = read_swc(self.trace)
        types, xyz = n.types.copy(), n.xyz.copy()
        types[n.index_of([17])] = 3
        xyz[n.index_of([9, 10, 11])] = [[24.0, 20.0, 10.0], [26.0, 20.0, 10.0], [28.0, 20.0, 10.0]]
        return format_swc(n.with_changes(types=types, xyz=xyz).take(np.flatnonzero(n.ids < 20)))

    def xyz(self, node_id: int) -> list[float]:
        return next(r[2:5] for r in self.rows if r[0] == node_id)


def make_review_sample(folder: Path) -> ReviewSample:
    from neurorecon.synth.render import Fibres, Imaging, render
    from neurorecon.io.volume import write_tiff

    rows = _trace_rows()
    folder.mkdir(parents=True, exist_ok=True)
    trace = folder / "trace.swc"
    trace.write_text("# review test trace\n" + "".join(" ".join(map(str, r)) + "\n" for r in rows))
    # The image shows the true fibres: the dendrite straight through node 10's true place, the
    # branch, no spur.
    xyz = np.array([r[2:5] for r in rows], float)
    xyz[8:11, 1] = 20.0
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
    flagged = {node: (p, reason, fix) for node, p, reason, fix in SCORES}
    for r in rows:                               # every node, in file order, as `detect` writes
        p, reason, fix = flagged.get(r[0], (0.02, "", None))
        x, y, z = r[2:5]
        lines.append(f"{r[0]},{p:.5f},{int(p >= 0.5)},{reason},{x:.4f},{y:.4f},{z:.4f},{_fix_json(fix) if fix else ''}")
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


#: Seconds a reference machine, idle, takes for :func:`_calibration_work` (what the time scale
#: compares against).
_REFERENCE_SECONDS = 0.08


def _calibration_work() -> float:
    import time

    t0 = time.perf_counter()
    s = 0
    for i in range(1_500_000):
        s += i * i
    return time.perf_counter() - t0


@pytest.fixture(scope="session")
def time_scale() -> float:
    """How much longer than on an idle reference machine the browser tests may wait: the mean
    of three runs of a fixed workload (a loaded machine shares its cores, so the mean grows with
    the load) over the reference, in [1, 10], times $NEURORECON_TEST_TIMEOUT_SCALE (default 1).
    The tests poll with deadlines; the scale only moves the deadlines, never a sleep."""
    measured = sum(_calibration_work() for _ in range(3)) / 3
    factor = min(max(measured / _REFERENCE_SECONDS, 1.0), 10.0)
    return float(os.environ.get("NEURORECON_TEST_TIMEOUT_SCALE", "1")) * factor


@pytest.fixture
def processes():
    """Subprocesses a test starts, each in its own process group: whatever the test's outcome,
    teardown kills every group still running (a review server and anything it started)."""
    import signal
    import subprocess

    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


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


@pytest.fixture
def readonly(tmp_path):
    """A folder this process cannot write in: a 0555 folder, or /sys where permission bits do not
    stop us (root). Writing there fails for real, so the test is of the actual write."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    for where in (d, Path("/sys")):
        try:
            (where / "probe").write_text("x")
        except OSError:
            yield where
            break
        (where / "probe").unlink()
    else:
        pytest.skip("no folder here refuses writes (root, and no /sys)")
    d.chmod(0o755)
