"""The review viewer in headless Chromium: offline page, layers, keys that move and decide, a
crash and resume of a `neurorecon review` process, `neurorecon apply`, flag colours and centring,
screenshots.

Chromium and chromedriver must be installed (`make test` installs them); these tests fail, not
skip, without them. Screenshots go to $NEURORECON_SCREENSHOTS when set (`make screenshots`).

Under load: every wait polls until a deadline, and the deadlines grow with the ``time_scale``
fixture (a calibration of this machine's speed, times $NEURORECON_TEST_TIMEOUT_SCALE). Review
servers run in their own process group, which the ``processes`` fixture kills whatever happens.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from selenium.webdriver.common.action_chains import ActionChains

import pytest

NOTE = "fibre continues: trace on"
#: Deadlines are multiplied by this (set from the time_scale fixture for each test).
SCALE = 1.0


@pytest.fixture(autouse=True)
def _scaled_deadlines(time_scale):
    global SCALE
    SCALE = time_scale


def wait(cond, what: str, timeout: float = 30.0):
    timeout *= SCALE
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = cond()
        except Exception:          # page still booting, file being replaced
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def load(driver, url: str, n_layers: int = 3) -> None:
    driver.get(url)
    wait(lambda: driver.execute_script(
        f"const l = window.viewer && viewer.layerManager.managedLayers;"
        f"return !!l && l.length == {n_layers} && l.every(x => x.isReady())"), "the layers to load")


def press(driver, key: str) -> None:
    ActionChains(driver).send_keys(key).perform()


def position(driver) -> list[float]:
    return driver.execute_script("return Array.from(viewer.position.value)")


def at(driver, xyz) -> bool:
    return np.allclose(position(driver), xyz, atol=1e-3)


def events(path: Path) -> list[dict]:
    return json.loads(path.read_text())["events"] if path.exists() else []


def status(driver) -> str:
    return driver.execute_script("return document.body.innerText")


def pixels(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(float)


def shot(viewer, size=(480, 360)) -> np.ndarray:
    """viewer.screenshot waits for the page to render; never forever."""
    with ThreadPoolExecutor(1) as ex:
        return pixels(ex.submit(viewer.screenshot, size=list(size)).result(timeout=60 * SCALE).screenshot.image)


def save_page(driver, path: Path) -> None:
    """A full-page screenshot, as a small PNG (palette of 256 colours)."""
    from PIL import Image
    import io

    im = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    im.quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)


# ------------------------------------------------------------------------------ in-process viewer
def test_viewer_offline_layers_keys_and_screenshot(browser, review_sample, screenshots, tmp_path):
    from neurorecon.io.volume import open_volume
    from neurorecon.viewer.review import open_review, start_server

    start_server(0)
    rp = tmp_path / "review.json"
    rv = open_review(str(review_sample.trace), open_volume(str(review_sample.image)), str(rp),
                     scores=str(review_sample.scores))
    load(browser, rv.url)

    urls = browser.execute_script("return [location.href].concat(performance.getEntriesByType('resource').map(e => e.name))")
    assert len(urls) > 3 and all(u.startswith("http://127.0.0.1:") for u in urls), urls   # nothing from outside
    st = rv.viewer.state
    assert [(layer.name, layer.type) for layer in st.layers] == [
        ("image", "image"), ("trace", "segmentation"), ("flags", "annotation")]
    assert [a.id for a in st.layers["flags"].annotations] == [f"flag{k}" for k in range(5)]
    assert list(st.dimensions.names) == ["x", "y", "z"]
    assert at(browser, review_sample.xyz(17))                    # flag 1, the type switch at node 17

    press(browser, "n")                                           # next flag: the run 9-11, at node 10
    wait(lambda: at(browser, review_sample.xyz(10)), "the view to move to flag 2")
    assert np.allclose(rv.viewer.state.position, review_sample.xyz(10))
    assert rv.viewer.state.cross_section_scale < 0.1              # zoomed in
    press(browser, "r")                                           # reject: written, then on to flag 3
    ev = wait(lambda: events(rp), "the decision in REVIEW.json")
    assert [(e["flag"], e["decision"]) for e in ev] == [("detector:10", "reject")]
    assert 0 <= ev[0]["active_seconds"] <= ev[0]["wall_seconds"]
    wait(lambda: at(browser, review_sample.xyz(20)), "the view to move to flag 3")
    wait(lambda: "flag 3/5" in status(browser) and "prune node 20" in status(browser), "the status message")
    assert browser.execute_script("return viewer.layerManager.managedLayers.length") == 3   # n added no layer

    with rv.viewer.txn() as s:
        s.layout = "xy"
    with_image = shot(rv.viewer)
    assert with_image.std() > 10 and len(np.unique(with_image.reshape(-1, 3), axis=0)) > 50
    with rv.viewer.txn() as s:
        s.layers["image"].visible = False
    without = shot(rv.viewer)
    assert np.abs(with_image - without).mean() > 5               # the image layer is what fills the panel
    with rv.viewer.txn() as s:
        s.layers["image"].visible = True
        s.layout = "xy-3d"
    shot(rv.viewer)
    save_page(browser, screenshots / "review_viewer.png")


# ------------------------------------------------------------------------------ the CLI, crash, resume
def default_sigint():
    """For a child the test stops with Ctrl-C: Ctrl-C is handled there even where this test process
    has SIGINT ignored at the moment it forks (in a loaded `make test` the review processes were seen
    starting with SIGINT and SIGQUIT ignored, the mark of a C system() running in another thread of
    the test process; a command started like that keeps ignoring Ctrl-C, as a shell's background
    job does, and the test waited on it in vain)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class ReviewProcess:
    """`neurorecon review` in a subprocess of its own process group (registered in ``processes``,
    whose teardown kills the group), its URL read from stdout."""

    def __init__(self, sample, review: Path, processes: list):
        cmd = [sys.executable, "-m", "neurorecon", "review", str(sample.trace), "--image", str(sample.image),
               "--scores", str(sample.scores), "--review", str(review)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True, preexec_fn=default_sigint)
        processes.append(self.proc)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.output: list[str] = []
        self.url = self._wait_for("viewer: ")[len("viewer: "):]

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _wait_for(self, prefix: str, timeout: float = 60) -> str:
        timeout *= SCALE
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"review exited: {self.proc.wait()} {self.proc.stderr.read()}")
            self.output.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} line from review in {timeout} s: {self.output}")

    def rest(self) -> str:
        self.proc.wait(timeout=60 * SCALE)
        out = []
        while (line := self.lines.get(timeout=10 * SCALE)) is not None:
            out.append(line)
        return "\n".join(self.output + out)


def decide(driver, review: Path, key: str, n_events: int) -> list[dict]:
    press(driver, key)
    return wait(lambda: len(ev := events(review)) == n_events and ev, f"event {n_events} ({key}) in REVIEW.json")


def test_review_session_crash_resume_and_apply(browser, review_sample, screenshots, tmp_path, processes):
    sample, rp = review_sample, tmp_path / "review.json"
    keys = sample.flag_keys
    p = ReviewProcess(sample, rp, processes)
    try:
        load(browser, p.url)
        assert at(browser, sample.xyz(17))
        decide(browser, rp, "a", 1)                               # flag 1 (relabel 17): accept
        wait(lambda: at(browser, sample.xyz(10)), "flag 2")
        press(browser, "n")
        wait(lambda: at(browser, sample.xyz(20)), "flag 3 after n")
        press(browser, "p")
        wait(lambda: at(browser, sample.xyz(10)), "flag 2 after p")
        decide(browser, rp, "a", 2)                               # flag 2 (move 9-11, one fix): accept
        decide(browser, rp, "e", 3)                               # flag 3: marked by mistake ...
        ev = decide(browser, rp, "u", 4)                          # ... and undone
        assert [(e["flag"], e["decision"]) for e in ev] == [
            (keys[0], "accept"), (keys[1], "accept"), (keys[2], "error"), (keys[2], "undo")]
        assert ev[2]["note"] == "marked by reviewer" and ev[3]["undoes"] == 3
        assert all(0 <= e["active_seconds"] <= e["wall_seconds"] and e["time"] for e in ev)
        wait(lambda: at(browser, sample.xyz(20)), "flag 3 again after undo")
    finally:
        p.proc.send_signal(signal.SIGKILL)                        # a crash mid-session
        p.proc.wait(timeout=60 * SCALE)
    before = rp.read_text()
    assert json.loads(before)["events"] == ev                     # nothing lost

    p = ReviewProcess(sample, rp, processes)                      # resume with the same file
    try:
        assert any("5 flags, 3 undecided" in line for line in p.output), p.output
        load(browser, p.url)
        assert at(browser, sample.xyz(20))                        # the first undecided flag
        wait(lambda: "flag 3/5 [undecided]" in status(browser), "the resumed status")
        decide(browser, rp, "a", 5)                               # flag 3 (prune the spur at 20): accept
        decide(browser, rp, "r", 6)                               # flag 4 (move 4, a false alarm): reject
        wait(lambda: at(browser, sample.xyz(19)), "flag 5")
        # The note typed into the flag's description in the selection panel (what its text box does).
        browser.execute_script(
            "const src = viewer.layerManager.getLayerByName('flags').layer.localAnnotations;"
            "const ref = src.getReference('flag4'); src.update(ref, {...ref.value, description: arguments[0]});"
            "ref.dispose();", NOTE)
        save_page(browser, screenshots / "review_note.png")
        ev = decide(browser, rp, "e", 7)                          # flag 5: error, with the note
        assert (ev[-1]["flag"], ev[-1]["decision"], ev[-1]["note"]) == (keys[4], "error", NOTE)
        assert ev[:4] == json.loads(before)["events"]
        wait(lambda: "all 5 flags decided" in status(browser), "the all-decided status")
    finally:
        p.proc.send_signal(signal.SIGINT)                         # Ctrl-C: a clean exit
    out = p.rest()
    assert p.proc.returncode == 0, out
    assert "(5 of 5 decided)" in out
    data = json.loads(rp.read_text())
    assert [f["decision"] for f in data["flags"]] == ["accept", "accept", "accept", "reject", "error"]

    fixed = tmp_path / "fixed.swc"
    r = subprocess.run([sys.executable, "-m", "neurorecon", "apply", str(sample.trace), str(rp), "-o", str(fixed)],
                       capture_output=True, text=True, timeout=120 * SCALE)
    assert r.returncode == 0, r.stderr
    assert "flags seen: 5; accepted 3, rejected 1, marked as error 1, undecided 0" in r.stdout
    assert "active time per decision: median" in r.stdout
    assert fixed.read_text() == sample.expected_fixed()
    assert "error:detector.early_stop" in (tmp_path / "fixed.apo").read_text()
    assert os.path.getsize(screenshots / "review_note.png") < 300_000


# ------------------------------------------------------------------------------ colours, centring
def test_flags_distinct_and_centred_at_the_crop_border(browser, review_sample, tmp_path):
    """A flag on the volume's border (x) and one beyond it (z): the view centres on the first
    (the slice at its depth), puts the second's slice inside the volume, draws the outside black,
    and the flag ring in a colour no node type has, at the centre of the panel."""
    from neurorecon.io import read_swc
    from neurorecon.io.volume import open_volume
    from neurorecon.viewer import layers
    from neurorecon.viewer.flags import Flag
    from neurorecon.viewer.review import ReviewViewer, start_server
    from neurorecon.viewer.session import ReviewSession

    start_server(0)
    volume = open_volume(str(review_sample.image))
    lo, hi = layers.volume_bounds(volume)
    edge = (float(lo[0]), 20.0, 10.0)                              # on the crop's x = 0 face
    beyond = (18.0, 30.0, float(hi[2]) + 4.0)                      # 4 µm past the last slice
    flags = [Flag(f"t:{k}", k + 1, xyz, "rule", "test", "test flag", None, "error", None)
             for k, xyz in enumerate((edge, beyond))]
    session = ReviewSession.start(tmp_path / "r.json", review_sample.trace, lambda: flags)
    rv = ReviewViewer(session, read_swc(review_sample.trace), volume)
    load(browser, rv.url)
    assert np.allclose(rv.viewer.state.position, layers.focus_point(edge, volume), atol=1e-4)
    with rv.viewer.txn() as s:
        s.layout = "xy"
        s.show_scale_bar = False                                   # white, like the ring
        s.layers["image"].visible = s.layers["trace"].visible = False   # only the flags draw
    x, y, panel = wait(lambda: ring_centre(browser), "the flag ring")
    assert abs(x - (panel["left"] + panel["width"] / 2)) < 4 and abs(y - (panel["top"] + panel["height"] / 2)) < 4
    with rv.viewer.txn() as s:
        s.layers["image"].visible = True

    def sides():
        page = pixels(browser.get_screenshot_as_png())
        left = page[int(y) - 40: int(y) + 40, int(panel["left"]) + 2: int(x) - 25]
        right = page[int(y) - 40: int(y) + 40, int(x) + 25: int(x) + 200]
        return (left, right) if right.mean() > 2 * left.mean() + 1 else None   # the image drawn

    left, _ = wait(sides, "the image beside the flag")
    assert left.size and left.max() < 8                            # outside the volume: black, not grey
    press(browser, "n")
    wait(lambda: at(browser, layers.focus_point(beyond, volume)), "the view at the flag beyond the volume")
    assert rv.viewer.state.position[2] < hi[2]                    # the slice cuts the image


def ring_centre(driver):
    """Centre (page pixels) of the flag ring drawn in the xy panel (pixels of the undecided flag
    colour), and the panel's box; None until it is drawn."""
    from neurorecon.viewer import layers

    panel = driver.execute_script(
        "const r = document.querySelector('.neuroglancer-rendered-data-panel').getBoundingClientRect();"
        "return {left: r.left, top: r.top, width: r.width, height: r.height};")
    page = pixels(driver.get_screenshot_as_png())
    top, left = int(panel["top"]), int(panel["left"])
    box = page[top: top + int(panel["height"]), left: left + int(panel["width"])]
    from scipy import ndimage

    colour = np.all(np.abs(box - 255 * np.array(layers.FLAG_COLORS[None])) < 40, axis=2)
    blobs, n = ndimage.label(colour)
    for k, sl in enumerate(ndimage.find_objects(blobs), 1):       # the ring: a square blob (the status text is not)
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if 20 <= h <= 40 and 20 <= w <= 40 and abs(h - w) <= 3:
            ys, xs = np.nonzero(blobs[sl] == k)
            return panel["left"] + sl[1].start + xs.mean(), panel["top"] + sl[0].start + ys.mean(), panel
    return None
