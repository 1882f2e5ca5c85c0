"""Headless Chromium check of ng_proto.py: layers present, key -> JSON, screenshots."""

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # ng_proto.py beside this file
import ng_proto  # noqa: E402

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

REVIEW = "/tmp/ng_review_test.json"
if os.path.exists(REVIEW):
    os.remove(REVIEW)

t0 = time.perf_counter()
viewer, url = ng_proto.build_viewer(REVIEW)
t_server = time.perf_counter() - t0
print("URL", url)

opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--disable-quic", "--no-first-run", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--window-size=1000,800",
          "--enable-unsafe-swiftshader"]:
    opts.add_argument(a)
t1 = time.perf_counter()
driver = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
t_browser = time.perf_counter() - t1
try:
    t2 = time.perf_counter()
    driver.get(url)

    def js(code):
        return driver.execute_script(code)

    # wait for the client to create the layers named in the Python state
    deadline = time.time() + 60
    names = None
    while time.time() < deadline:
        try:
            names = js("return window.viewer && viewer.layerManager.managedLayers"
                       ".map(l => [l.name, l.layer ? l.layer.constructor.name : null,"
                       " l.isReady()])")
        except Exception as e:  # page still booting
            names = repr(e)
        if isinstance(names, list) and len(names) == 3 and all(n[2] for n in names):
            break
        time.sleep(0.2)
    t_layers = time.perf_counter() - t2
    print("layers:", names)

    # Python-side screenshot: waits until the client has rendered with data loaded.
    t3 = time.perf_counter()
    shot = viewer.screenshot(size=[400, 300])
    t_shot = time.perf_counter() - t3
    px = shot.screenshot.image_pixels
    with open("/tmp/ng_viewer_screenshot.png", "wb") as f:
        f.write(shot.screenshot.image)
    print("viewer.screenshot", px.shape, "std", float(px[..., :3].std()),
          "unique colours", len(np.unique(px.reshape(-1, px.shape[-1]), axis=0)))

    # Press keys: focus the data panel by clicking it, then send keys.
    panel = driver.find_element(By.CSS_SELECTOR, ".neuroglancer-rendered-data-panel")
    ActionChains(driver).move_to_element(panel).click().perform()
    pos_before = list(viewer.state.position)
    t4 = time.perf_counter()
    ActionChains(driver).send_keys("n").perform()
    while not os.path.exists(REVIEW) and time.perf_counter() - t4 < 10:
        time.sleep(0.05)
    t_key = time.perf_counter() - t4
    time.sleep(0.5)
    print("after n: json", open(REVIEW).read() if os.path.exists(REVIEW) else None)
    print("position before/after n:", pos_before, list(viewer.state.position))
    for k in "ar":
        ActionChains(driver).send_keys(k).perform()
        time.sleep(0.5)
    data = json.load(open(REVIEW))
    print("decisions:", [d["decision"] for d in data["decisions"]])
    print("status messages:", dict(viewer.config_state.state.status_messages))
    # layer count unchanged -> default keyn (add-layer) did not fire
    print("layers after keys:", js("return viewer.layerManager.managedLayers.map(l=>l.name)"))

    # Simulate the UI edit of a flag's description (what the selection panel's text box does).
    r = js("""
      const layer = viewer.layerManager.getLayerByName('flags').layer;
      const src = layer.localAnnotations;
      const ref = src.getReference('3');
      const ann = ref.value;
      src.update(ref, {...ann, description: 'NOTE: wrong branch'});
      ref.dispose();
      return [Object.keys(layer).filter(k => k.toLowerCase().includes('annot')), ann.description];
    """)
    print("js edit:", r)
    time.sleep(1.0)
    print("notes seen by python:", viewer._nr_state.get("notes"))

    with viewer.txn() as s:
        s.layout = "3d"
        s.projection_scale = 40
        s.show_axis_lines = False
    shot3d = viewer.screenshot(size=[400, 300])
    with open("/tmp/ng_viewer_3d.png", "wb") as f:
        f.write(shot3d.screenshot.image)
    with viewer.txn() as s:
        s.layout = "xy"
    driver.save_screenshot("/tmp/ng_browser_screenshot.png")
    from PIL import Image
    im = np.asarray(Image.open("/tmp/ng_browser_screenshot.png").convert("RGB"))
    print("browser screenshot", im.shape, "std", float(im.std()),
          "unique colours", len(np.unique(im.reshape(-1, 3), axis=0)))
    print(f"TIMINGS server+viewer={t_server:.2f}s chrome start={t_browser:.2f}s "
          f"page+layers ready={t_layers:.2f}s first viewer.screenshot={t_shot:.2f}s "
          f"key->json={t_key:.2f}s")
    logs = driver.get_log("browser") if hasattr(driver, "get_log") else []
    for entry in logs[:20]:
        print("console:", entry)
finally:
    driver.quit()
im3 = np.asarray(__import__("PIL.Image").Image.open("/tmp/ng_viewer_3d.png").convert("RGB"))
cols, counts = np.unique(im3.reshape(-1, 3), axis=0, return_counts=True)
print("3d shot top colours:", [(tuple(int(x) for x in c), int(n)) for c, n in sorted(zip(cols, counts), key=lambda p: -p[1])[:8]])
