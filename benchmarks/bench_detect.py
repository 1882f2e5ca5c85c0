"""Benchmark the AI error detector against its speed target.

Target: "Feature extraction plus inference at 20,000 nodes/s or more on 2 cores for a 100k-node
neuron whose image lies in a chunked zarr, memory bounded by the patches in flight".

Run from the repository root (``make bench-detect`` does this)::

    .venv/bin/python benchmarks/bench_detect.py --out docs/benchmarks.md

What it does:

1. Builds, once, a ~100,000-node neuron from the real mouse whole-brain axon reconstructions in
   ``../shared/data/morphologies/mouse_wholebrain_axons`` (µm, ~1 µm node spacing): the densest
   1024 x 1024 x 256 µm windows of those neurons are cut out (greedily, no node used twice), each
   turned by one of the 8 symmetries of the square in x-y, and stacked into one box of that size.
   Every connected piece of a window (>= ``--min-piece`` nodes) is joined to the tree built so far
   by a straight "bridge" branch from its root to the nearest node already in the tree, with nodes
   every <= 1 µm; the bridges are drawn in the image like any other fibre. So the result is one
   tree with one root. Written to ``WORK/trace.swc``.
2. Renders its image, once, into a chunked OME-Zarr (``WORK/volume_<voxel>.zarr``, zarr v2, uint8,
   64^3 chunks, Blosc/zstd, the layout :func:`neurorecon.io.volume.write_zarr` writes) box by box:
   every 128^3-voxel box is rendered with :func:`neurorecon.synth.render.render` from only the
   fibres near it, with its own fixed random generator, and written with tensorstore, so memory
   stays at a few boxes. Both are skipped when already present with the same parameters.
3. Times the detector the way a user runs it, as whole processes::

       neurorecon detect WORK/trace.swc --image WORK/volume_<voxel>.zarr --out WORK/scores.csv --overwrite [--model DIR]

   under ``/usr/bin/time -v`` (wall time, peak RSS, CPU share); and, in a child Python process,
   the same call path (:func:`neurorecon.detect.api.detect`) with timers wrapped around its stages
   (feature extraction, split into image reading / image measurement / the trace features of the
   worker thread / the image features; waiting for the model, which loads in a thread as in the
   CLI; inference; corrections). ``--reps`` repeats of each; best and range are reported.
4. Writes (or replaces) the section "## AI error detection speed" in ``--out`` and keeps the rest
   of that file.

When the target is not met (or with ``--profile yes``) one more in-process run under cProfile lists
the hot spots, each builtin attributed to the neurorecon function that calls it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import glob
import gzip
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from machine import REPO, cpu_model, git_state, loadavg, log, mem_total, nproc, replace_section

DATA = REPO.parent / "shared/data/morphologies/mouse_wholebrain_axons"
PY = sys.executable
BIN = Path(sys.executable).parent
SECTION = "## AI error detection speed"
TARGET_NODES_PER_S = 20_000
CELL_UM = (128.0, 128.0, 64.0)      # window search grid (x, y, z), µm
RENDER_BOX = 128                    # voxels per side of a render box
CHUNKS = (64, 64, 64)


def _key(d: dict) -> str:
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


# ============================================================================ 1. the neuron
def _window_counts(cells: np.ndarray, ncell: np.ndarray, win: np.ndarray) -> np.ndarray:
    """Node count of every window of ``win`` cells (start cells 0..max(ncell-win, 0))."""
    shape = np.maximum(ncell, win)
    h = np.zeros(shape, np.int64)
    np.add.at(h, tuple(cells.T), 1)
    for ax in range(3):
        c = np.cumsum(h, axis=ax)
        c = np.concatenate([np.zeros_like(np.take(c, [0], axis=ax)), c], axis=ax)
        n = c.shape[ax] - win[ax]
        h = np.take(c, np.arange(win[ax], win[ax] + n), axis=ax) - np.take(c, np.arange(0, n), axis=ax)
    return h


def _topo_order(parent: np.ndarray) -> np.ndarray:
    """Rows ordered so that every parent comes before its children (breadth first from the roots)."""
    from neurorecon.morphology import graph

    offsets, kids = graph.children_csr(parent)
    order = list(np.flatnonzero(parent < 0))
    i = 0
    while i < len(order):
        r = order[i]
        order.extend(kids[offsets[r]:offsets[r + 1]].tolist())
        i += 1
    return np.asarray(order, np.int64)


def build_neuron(path: Path, files: list[str], target: int, box: np.ndarray, seed: int, min_piece: int) -> dict:
    """Pack windows of real neurons into one ``box`` (µm) tree of exactly ``target`` nodes."""
    from scipy.spatial import cKDTree

    from neurorecon.io.swc import read_swc, write_swc
    from neurorecon.morphology import graph
    from neurorecon.morphology.neuron import Neuron

    rng = np.random.default_rng(seed)
    cell = np.asarray(CELL_UM)
    win = np.rint(box / cell).astype(int)
    srcs = []
    for f in files:
        n = read_swc(f, strict=False)
        lo = n.xyz.min(0)
        cells = np.floor((n.xyz - lo) / cell).astype(int)
        srcs.append(dict(name=Path(f).name, n=n, parent=n.parent.copy(), lo=lo, cells=cells,
                         ncell=cells.max(0) + 1, used=np.zeros(len(n), bool)))
    # Greedy: the densest window over all neurons (unused nodes only), until the target is reached.
    pieces, windows, total = [], [], 0
    while total < target:
        best = None
        for j, s in enumerate(srcs):
            free = ~s["used"]
            if free.sum() < min_piece:
                continue
            wc = _window_counts(s["cells"][free], s["ncell"], win)
            k = np.unravel_index(int(wc.argmax()), wc.shape)
            if best is None or wc[k] > best[0]:
                best = (int(wc[k]), j, np.array(k))
        if best is None or best[0] < min_piece:
            raise RuntimeError(f"ran out of source nodes at {total} nodes; lower --nodes or --min-piece")
        count, j, k = best
        s = srcs[j]
        wlo = s["lo"] + k * cell
        inside = np.all((s["n"].xyz >= wlo) & (s["n"].xyz < wlo + box), axis=1) & ~s["used"]
        s["used"] |= inside
        rows = np.flatnonzero(inside)
        new = np.full(len(s["n"]), -1)
        new[rows] = np.arange(len(rows))
        par = s["parent"][rows]
        par = np.where(par >= 0, new[np.maximum(par, 0)], -1)      # parent outside the window: a root
        comp, _, _ = graph.ancestor_sums(par)
        # One of the 8 symmetries of the square in x-y (keeps the window inside the box).
        local = s["n"].xyz[rows] - wlo
        if rng.random() < 0.5:
            local[:, [0, 1]] = local[:, [1, 0]]
        for ax in (0, 1):
            if rng.random() < 0.5:
                local[:, ax] = box[ax] - local[:, ax]
        local = np.clip(local, 0.0, box - 1e-3)
        sizes = np.bincount(comp, minlength=len(rows))
        kept = 0
        for c in np.argsort(-sizes, kind="stable"):
            if sizes[c] < min_piece or total >= target:
                break
            m = np.flatnonzero(comp == c)
            cnew = np.full(len(rows), -1)
            cnew[m] = np.arange(len(m))
            cp = np.where(par[m] >= 0, cnew[np.maximum(par[m], 0)], -1)
            order = _topo_order(cp)
            inv = np.empty_like(order)
            inv[order] = np.arange(len(order))
            cp = np.where(cp[order] >= 0, inv[np.maximum(cp[order], 0)], -1)
            m = m[order]
            pieces.append(dict(xyz=local[m], parent=cp, types=s["n"].types[rows][m], radius=s["n"].radius[rows][m]))
            total += len(m)
            kept += len(m)
        windows.append(dict(source=s["name"], window_lo_um=[round(float(v), 1) for v in wlo], nodes=count, kept=kept))
    # Assemble: the first piece holds the root; every further piece hangs from the nearest node
    # already placed, through a straight bridge with nodes every <= 1 µm.
    xyz, parent, types, radius = [], [], [], []      # per piece; parents are absolute rows
    trees, n_bridge_nodes, bridge_len = [], 0, []
    placed = 0

    def add(px, pp_abs, pt, pr):
        nonlocal placed
        xyz.append(px)
        parent.append(pp_abs)
        types.append(pt)
        radius.append(pr)
        placed += len(px)

    for i, p in enumerate(pieces):
        if placed >= target:
            break
        if i == 0:
            take = min(len(p["xyz"]), target)
            add(p["xyz"][:take], p["parent"][:take], p["types"][:take], p["radius"][:take])
            trees.append((cKDTree(p["xyz"][:take]), 0))
            continue
        root = p["xyz"][0]
        best_d, anchor = np.inf, -1
        for tree, off in trees:
            d, q = tree.query(root)
            if d < best_d:
                best_d, anchor = d, off + int(q)
        nb = max(int(np.ceil(best_d / 1.0)) - 1, 0)     # bridge nodes, so that no edge is longer than 1 µm
        if placed + nb + 1 > target:
            break
        attach = anchor
        if nb:
            a_xyz = np.concatenate(xyz)[anchor] if len(xyz) > 1 else xyz[0][anchor]
            t = np.arange(1, nb + 1)[:, None] / (nb + 1)
            bp = np.concatenate([[anchor], placed + np.arange(nb - 1)])
            add(a_xyz + t * (root - a_xyz), bp, np.full(nb, p["types"][0]), np.full(nb, p["radius"][0]))
            n_bridge_nodes += nb
            attach = placed - 1
        bridge_len.append(float(best_d))
        take = min(len(p["xyz"]), target - placed)
        off = placed
        pp = np.where(p["parent"][:take] >= 0, p["parent"][:take] + off, -1)
        pp[0] = attach
        add(p["xyz"][:take], pp, p["types"][:take], p["radius"][:take])
        trees.append((cKDTree(p["xyz"][:take]), off))
    n_bridges = len(bridge_len)
    xyz, parent = np.concatenate(xyz), np.concatenate(parent)
    types, radius = np.concatenate(types), np.concatenate(radius)
    n = len(xyz)
    assert np.all(parent < np.arange(n)), "parents must come first"
    assert (parent < 0).sum() == 1, "one root"
    ids = np.arange(1, n + 1)
    n_src = len({w["source"] for w in windows})
    header = (
        (f" bench_detect.py: {n} nodes packed from {len(windows)} windows of {n_src} mouse whole-brain axon "
         f"reconstructions into a {box[0]:g} x {box[1]:g} x {box[2]:g} µm box (seed {seed});"),
        f" {n_bridges} pieces joined by straight bridges ({n_bridge_nodes} bridge nodes).",
    )
    neuron = Neuron(ids=ids, types=types, xyz=np.round(xyz, 3), radius=radius,
                    parent_ids=np.where(parent >= 0, parent + 1, -1), header=header)
    write_swc(neuron, path)
    e = graph.edge_lengths(neuron.xyz, neuron.parent)
    return dict(nodes=n, windows=windows, n_windows=len(windows), sources=sorted({w["source"] for w in windows}),
                pieces=n_bridges + 1, bridges=n_bridges, bridge_nodes=n_bridge_nodes,
                bridge_len_um=dict(median=float(np.median(bridge_len)) if bridge_len else 0.0,
                                   max=float(np.max(bridge_len)) if bridge_len else 0.0),
                spacing_um=dict(median=float(np.median(e[1:])), p95=float(np.percentile(e[1:], 95))),
                cable_mm=float(e.sum() / 1000), tips=int(((neuron.n_children == 0)).sum()),
                branch_points=int((neuron.n_children > 1).sum()))


# ============================================================================ 2. the image
_W: dict = {}


def _render_init(seg_lo, seg_hi, a, b, radius, bright, store_path, imaging_kw, shape, seed):
    import tensorstore as ts

    from neurorecon.synth.render import Imaging

    _W.update(seg_lo=seg_lo, seg_hi=seg_hi, a=a, b=b, radius=radius, bright=bright, shape=shape, seed=seed,
              imaging=Imaging(**imaging_kw))
    spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": store_path}}
    _W["store"] = ts.open(spec, write=True).result()


def _render_box(k: tuple[int, int, int]) -> tuple[int, int]:
    from neurorecon.synth.render import Fibres, render

    im = _W["imaging"]
    vs = np.asarray(im.voxel_size)                           # x, y, z
    shape = np.asarray(_W["shape"])                          # z, y, x
    lo = np.asarray(k) * RENDER_BOX
    hi = np.minimum(lo + RENDER_BOX, shape)
    origin = lo[::-1] * vs                                   # µm of voxel [lo] centre (x, y, z)
    top = (hi - 1)[::-1] * vs
    pad = 4.0 * np.hypot(1.5, im.psf_sigma[1]) + 2.0
    near = np.all((_W["seg_hi"] >= origin - pad) & (_W["seg_lo"] <= top + pad), axis=1)
    f = Fibres(_W["a"][near], _W["b"][near], _W["radius"][near], _W["bright"][near])
    rng = np.random.default_rng([_W["seed"], *map(int, k)])
    img = render(f, origin, tuple(hi - lo), im, rng)
    _W["store"][lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].write(img).result()
    return int(near.sum()), int(img.max())


def build_volume(path: Path, swc: Path, box: np.ndarray, voxel: tuple, seed: int, jobs: int) -> dict:
    import tensorstore as ts

    from neurorecon.synth.render import Fibres, Imaging
    from neurorecon.io.swc import read_swc

    # Default fMOST-like settings, but a flat background: render() draws its smooth background
    # field per box, which would leave seams at the 128^3 box borders.
    imaging = Imaging(voxel_size=tuple(voxel), background_variation=0.0, bits=8, name="bench")
    vs = np.asarray(voxel, float)
    shape = tuple(int(v) for v in np.ceil(box[::-1] / vs[::-1]).astype(int))   # z, y, x
    n = read_swc(swc)
    f = Fibres.from_tree(n.xyz, n.parent, n.radius)
    seg_lo, seg_hi = np.minimum(f.a, f.b), np.maximum(f.a, f.b)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "0").mkdir(parents=True)
    meta = {"shape": list(shape), "chunks": list(CHUNKS), "dtype": "|u1",
            "compressor": {"id": "blosc", "cname": "zstd", "clevel": 5, "shuffle": 1},
            "fill_value": 0, "dimension_separator": "/"}
    ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(tmp / "0") + "/"}, "metadata": meta},
            create=True).result()
    boxes = [(z, y, x) for z in range(-(-shape[0] // RENDER_BOX)) for y in range(-(-shape[1] // RENDER_BOX))
             for x in range(-(-shape[2] // RENDER_BOX))]
    init = (seg_lo, seg_hi, f.a, f.b, f.radius, f.brightness, str(tmp / "0") + "/",
            {k: getattr(imaging, k) for k in imaging.__dataclass_fields__}, shape, seed)
    t0 = time.perf_counter()
    done, vmax = 0, 0
    if jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn: tensorstore (already used by this process) aborts in a forked child.
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_render_init, initargs=init) as ex:
            for _, mx in ex.map(_render_box, boxes, chunksize=4):
                done += 1
                vmax = max(vmax, mx)
                if done % 32 == 0:
                    log(f"  rendered {done}/{len(boxes)} boxes ({time.perf_counter() - t0:.0f} s)")
    else:
        _render_init(*init)
        for k in boxes:
            vmax = max(vmax, _render_box(k)[1])
            done += 1
            if done % 32 == 0:
                log(f"  rendered {done}/{len(boxes)} boxes ({time.perf_counter() - t0:.0f} s)")
    vx, vy, vz = map(float, vs)
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    ds = {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [vz, vy, vx]}]}
    (tmp / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    (tmp / ".zattrs").write_text(json.dumps({"multiscales": [{"version": "0.4", "name": path.stem, "axes": axes,
                                                              "datasets": [ds]}]}, indent=1))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return dict(shape_zyx=list(shape), voxel_um=list(voxel), chunks=list(CHUNKS), boxes=len(boxes),
                render_s=time.perf_counter() - t0, max_value=vmax, disk_bytes=_du(path),
                imaging={k: getattr(imaging, k) for k in ("psf_sigma", "fibre_sigma", "signal", "background",
                                                          "background_variation", "read_noise", "bead_rate",
                                                          "dim_rate", "bits")})


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def prepare(args) -> dict:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files = sorted(glob.glob(str(Path(args.data) / "*.swc")))
    if not files:
        raise SystemExit(f"no SWC files in {args.data}")
    box = np.asarray(args.box, float)
    manifest_path = work / "dataset.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    tkey = _key(dict(files=[Path(f).name for f in files], nodes=args.nodes, box=list(box), seed=args.seed,
                     min_piece=args.min_piece, cell=CELL_UM, v=1))
    swc = work / "trace.swc"
    if args.rebuild or manifest.get("trace", {}).get("key") != tkey or not swc.exists():
        log(f"building the {args.nodes:,}-node neuron -> {swc}")
        t = time.perf_counter()
        info = build_neuron(swc, files, args.nodes, box, args.seed, args.min_piece)
        info.update(key=tkey, build_s=time.perf_counter() - t, path=str(swc))
        manifest = {"trace": info}          # a new trace invalidates every volume
        manifest_path.write_text(json.dumps(manifest, indent=1))
    tag = "x".join(f"{v:g}" for v in args.voxel)
    vol = work / f"volume_{tag}.zarr"
    vkey = _key(dict(trace=tkey, voxel=list(args.voxel), seed=args.seed, box=RENDER_BOX, chunks=CHUNKS, v=2))
    vols = manifest.setdefault("volumes", {})
    if args.rebuild or vols.get(tag, {}).get("key") != vkey or not (vol / ".zattrs").exists():
        log(f"rendering the image -> {vol} ({args.jobs} processes)")
        info = build_volume(vol, swc, box, tuple(args.voxel), args.seed, args.jobs)
        info.update(key=vkey, path=str(vol))
        vols[tag] = info
        manifest_path.write_text(json.dumps(manifest, indent=1))
    return dict(swc=swc, vol=vol, trace=manifest["trace"], volume=vols[tag])


# ============================================================================ 3. timing
def _time_cmd(cmd: list[str]) -> dict:
    """Wall time, peak RSS and CPU of one whole process."""
    timev = Path("/usr/bin/time")
    if timev.exists():
        full = [str(timev), "-v", *cmd]
    else:  # a tiny launcher reports the peak RSS of its one child
        launcher = ("import resource,subprocess,sys\nr=subprocess.run(sys.argv[1:])\n"
                    "u=resource.getrusage(resource.RUSAGE_CHILDREN)\n"
                    "print(f'Maximum resident set size (kbytes): {u.ru_maxrss}', file=sys.stderr)\n"
                    "print(f'User time (seconds): {u.ru_utime}\\nSystem time (seconds): {u.ru_stime}', file=sys.stderr)\n"
                    "sys.exit(r.returncode)")
        full = [PY, "-c", launcher, *cmd]
    t = time.perf_counter()
    r = subprocess.run(full, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if r.returncode:
        own = r.stderr.split("\tCommand being timed:", 1)[0]      # the command's stderr without time -v's report
        raise RuntimeError(f"{shlex.join(cmd)} exited {r.returncode}:\n{own[-3000:]}")

    def grab(label):
        m = re.search(re.escape(label) + r":\s*([\d.]+)", r.stderr)
        return float(m.group(1)) if m else float("nan")

    user, sys_ = grab("User time (seconds)"), grab("System time (seconds)")
    return dict(wall=wall, rss=grab("Maximum resident set size (kbytes)") * 1024, user=user, sys=sys_,
                cpu=(user + sys_) / wall, stdout=r.stdout.strip())


# The in-process worker: the same call path as the CLI (load in a thread; read, open, detect, write)
# with timers wrapped around the stages of detect(). Nested timers: compute_features contains
# measure (which contains the volume reads and the per-block work), the trace features (in a worker
# thread, during measure; they contain the rule checks and the proximity search) and the image
# features.
_WORKER = r'''
import json, os, resource, sys, time
T0 = time.perf_counter()
trace, image, model, out_csv, prof = sys.argv[1:6]
import numpy as np
from neurorecon.detect import api, features, image_features, model as model_mod
from neurorecon.io.swc import read_swc
from neurorecon.io import volume as volume_mod
from neurorecon.io.volume import open_volume
T = {"import": time.perf_counter() - T0}
acc = {}
reads = {"calls": 0, "voxels": 0, "max_voxels": 0}

def rss_now():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
    return 0

def timed(name, fn):
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            acc[name] = acc.get(name, 0.0) + time.perf_counter() - t
    return wrapper

_read = volume_mod.Volume.read
def counting_read(self, lo, hi, fill=0):
    v = int(np.prod(np.maximum(np.asarray(hi) - np.asarray(lo), 0)))
    reads["calls"] += 1; reads["voxels"] += v; reads["max_voxels"] = max(reads["max_voxels"], v)
    return _read(self, lo, hi, fill)
volume_mod.Volume.read = timed("volume_read", counting_read)
api.compute_features = timed("features", api.compute_features)
features.measure = timed("image_measure", features.measure)
features._trace_features = timed("trace_features", features._trace_features)
features._image_features = timed("image_features", features._image_features)
features._check_hits = timed("rule_checks", features._check_hits)
features._proximity = timed("proximity", features._proximity)
image_features._Block = type("_Block", (image_features._Block,), {"__init__": timed("block_prepare", image_features._Block.__init__)})
image_features._measure_rows = timed("block_sample", image_features._measure_rows)
model_mod.Detector.predict = timed("inference", model_mod.Detector.predict)

t = time.perf_counter(); neuron = read_swc(trace); T["read_swc"] = time.perf_counter() - t
t = time.perf_counter(); vol = open_volume(image); T["open_volume"] = time.perf_counter() - t
# As the CLI does: the model loads in a thread while the features are computed; detect() waits for
# it ("model_wait") when it needs it.
import threading
from concurrent.futures import Future, ThreadPoolExecutor
class WaitTimed(Future):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
    def result(self, timeout=None):
        if threading.current_thread() is not threading.main_thread():    # detect()'s own worker
            return self.inner.result(timeout)
        return timed("model_wait", self.inner.result)(timeout)
det = WaitTimed(ThreadPoolExecutor(1).submit(timed("load_model", model_mod.load_detector), model or None))
rss_before = rss_now()
hwm_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
if prof:
    import cProfile
    pr = cProfile.Profile(); pr.enable()
t = time.perf_counter(); res = api.detect(neuron, vol, detector=det); T["detect"] = time.perf_counter() - t
if prof:
    pr.disable(); pr.dump_stats(prof)
t = time.perf_counter(); res.write_csv(out_csv, overwrite=True); T["write_csv"] = time.perf_counter() - t
T.update(acc)
T["total"] = time.perf_counter() - T0
print(json.dumps({"t": T, "reads": reads, "nodes": len(neuron), "flagged": int(res.flagged.sum()),
                  "n_features": len(res.features.names), "rss_before_detect": rss_before,
                  "peak_before_detect": hwm_before,
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "threads": os.cpu_count()}))
'''


def run_worker(swc: Path, vol: Path, model: str, out_csv: Path, prof: str = "") -> dict:
    r = subprocess.run([PY, "-c", _WORKER, str(swc), str(vol), model, str(out_csv), prof], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"in-process worker failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def profile_summary(prof: Path, top: int) -> list[dict]:
    import pstats

    st = pstats.Stats(str(prof))
    rows = []
    total = st.total_tt

    def name(key):
        file, line, fn = key
        return f"{_short(file)}:{line}({fn})"

    def caller(key):
        """The neurorecon function that spends most of this one's time (walking up through library code)."""
        seen = {key}
        for _ in range(20):
            callers = {c: v for c, v in st.stats[key][4].items() if c not in seen}
            if not callers:
                break
            key = max(callers, key=lambda c: callers[c][3])     # by cumulative time spent on the callee
            seen.add(key)
            if "neurorecon" in key[0]:
                return name(key)
        return name(key) if len(seen) > 1 else ""

    for key, (cc, nc, tt, ct, _) in st.stats.items():
        rows.append(dict(func=name(key), calls=nc, tottime=tt, cumtime=ct, share=tt / total,
                         caller="" if "neurorecon" in key[0] else caller(key)))
    rows.sort(key=lambda r: -r["tottime"])
    return rows[:top]


def _short(file: str) -> str:
    for marker in ("site-packages/", "src/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file if file.startswith(("<", "~")) else Path(file).name


# ============================================================================ 4. report
def _rel(p) -> str:
    """``p`` relative to the repository when it lies inside it (or beside it, like ../shared), else absolute."""
    for q in (Path(p).absolute(), Path(p).resolve()):     # unresolved first: .venv/bin/python is a symlink
        for base, prefix in ((REPO, ""), (REPO.parent / "shared", "../shared/")):
            try:
                return prefix + str(q.relative_to(base))
            except ValueError:
                pass
    return str(Path(p).resolve())


def mib(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB" if b < 2**30 else f"{b / 2**30:.2f} GiB"


def rng_s(xs) -> str:
    return f"{min(xs):.1f}–{max(xs):.1f} s" if len(xs) > 1 else f"{xs[0]:.1f} s"


def model_desc(model: str | None) -> str:
    from neurorecon.detect.model import MODEL_DIR

    folder = Path(model) if model else MODEL_DIR
    try:
        meta = json.loads((folder / "meta.json").read_text())
        gz = folder / "detector.txt.gz"
        text = gzip.decompress(gz.read_bytes()).decode() if gz.exists() else (folder / "detector.txt").read_text()
        trees = text.count("\nTree=")
    except OSError:
        return f"`{_rel(folder)}`"
    label = "the shipped model" if not model else "a model from"
    return f"{label} `{_rel(folder)}` ({len(meta.get('features', []))} features, {trees} trees in the p(error) model)"


def render_section(R: dict, args, command: str) -> str:
    tr, vo = R["trace"], R["volume"]
    nodes = tr["nodes"]
    proc, inp = R["proc"], R["inproc"]
    walls = [p["wall"] for p in proc]
    best = min(walls)
    rate = nodes / best
    rates = [nodes / w for w in walls]
    rss = [p["rss"] for p in proc]
    shape = vo["shape_zyx"]
    vol_bytes = int(np.prod(shape))              # uint8
    vs = vo["voxel_um"]
    L: list[str] = []
    w = L.append

    def tsum(key):
        xs = [r["t"].get(key, 0.0) for r in inp]
        return min(xs), xs

    b = min(inp, key=lambda r: r["t"]["detect"])   # the best in-process run, for the split
    bt = b["t"]
    fe, inf = bt["features"], bt["inference"]
    ipr = nodes / (fe + inf)
    ok_proc, ok_inp = rate >= TARGET_NODES_PER_S, ipr >= TARGET_NODES_PER_S

    def verdict(ok):
        return "**met**" if ok else "**not met**"

    w(SECTION)
    w("")
    w(f"Generated by `benchmarks/bench_detect.py` on {_dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} "
      f"({R['elapsed']:.0f} s for the timed runs; {R['prep']}). Re-run with `make bench-detect`:")
    w("")
    w("```")
    w(command)
    w("```")
    w("")
    w(f"Target: feature extraction plus inference at **{TARGET_NODES_PER_S:,} nodes/s** or more on 2 cores for a "
      "100k-node neuron whose image lies in a chunked zarr, memory bounded by the patches in flight.")
    w("")
    w("| measurement | result | verdict |")
    w("|---|---|---|")
    w(f"| whole process, `neurorecon detect` (best of {len(walls)}) | {best:.1f} s for {nodes:,} nodes = **{rate:,.0f} nodes/s** "
      f"(range {min(rates):,.0f}–{max(rates):,.0f}) | {verdict(ok_proc)} |")
    w(f"| in process, feature extraction + inference only (best of {len(inp)}) | {fe + inf:.1f} s = **{ipr:,.0f} nodes/s** | {verdict(ok_inp)} |")
    big = b["reads"]["max_voxels"]
    w(f"| memory | peak RSS {mib(max(rss))} (range {mib(min(rss))}–{mib(max(rss))}) = {max(rss) / vol_bytes:.2f}× the whole volume "
      f"as one uint8 array ({mib(vol_bytes)}); largest box read {mib(big)} ({big / vol_bytes * 100:.1f}% of the volume), "
      f"RSS before `detect` {mib(b['rss_before_detect'])} | "
      f"{'patches bounded' if big < 0.1 * vol_bytes else '**a box read is >= 10% of the volume**'}"
      f"{'' if max(rss) < vol_bytes else '; **peak RSS above the volume size**'} |")
    w("")
    w("### Machine")
    w("")
    w(f"- CPU: {cpu_model()}, `nproc` = {nproc()}; memory {mem_total()}; {platform.platform()}; Python {platform.python_version()}")
    w(f"- neurorecon source: {git_state()}")
    w(f"- Load average before / after the timed runs: {R['load_before']} / {R['load_after']}. "
      + (R["note"] + " " if R.get("note") else "")
      + "Anything else running on the 2 cores (a training job, a test run) slows these numbers down; "
      "compare the CPU share column below with the wall time.")
    w(f"- Detector: {R['model_desc']}.")
    w("")
    w("### Data")
    w("")
    w(f"- Trace `{_rel(R['swc'])}`: **{nodes:,} nodes**, one tree, {tr['cable_mm']:.1f} mm of cable, node spacing median "
      f"{tr['spacing_um']['median']:.2f} µm (95th percentile {tr['spacing_um']['p95']:.2f} µm), {tr['branch_points']:,} branch "
      f"points, {tr['tips']:,} tips. Built from {tr['n_windows']} windows of {len(tr['sources'])} real mouse whole-brain "
      f"axon reconstructions (`{_rel(args.data)}`): the densest {args.box[0]:g} × {args.box[1]:g} × {args.box[2]:g} µm windows "
      "(greedy, no node used twice), each turned by one of the 8 symmetries of the square in x-y and stacked into one box of "
      f"that size; the {tr['pieces']} connected pieces (≥ {args.min_piece} nodes) are joined into one tree by straight bridge "
      f"branches from each piece's root to the nearest node already placed ({tr['bridge_nodes']:,} bridge nodes, bridge length "
      f"median {tr['bridge_len_um']['median']:.1f} µm, max {tr['bridge_len_um']['max']:.1f} µm; bridges are imaged like any fibre).")
    w(f"- Image `{_rel(R['vol'])}`: OME-Zarr 0.4 (zarr v2), **{shape[2]} × {shape[1]} × {shape[0]} voxels** (x × y × z) of "
      f"{vs[0]:g} × {vs[1]:g} × {vs[2]:g} µm, uint8, **{CHUNKS[0]}³ chunks**, Blosc/zstd; {mib(vol_bytes)} as one array, "
      f"{mib(vo['disk_bytes'])} on disk. Rendered with `neurorecon.synth.render.render` (default `Imaging` settings: "
      f"signal {vo['imaging']['signal']:g}, background {vo['imaging']['background']:g} photons, PSF σ {tuple(vo['imaging']['psf_sigma'])} µm, "
      f"beads and dim stretches, Poisson + read noise; but a flat background, background_variation = "
      f"{vo['imaging']['background_variation']:g}, because `render` draws its smooth background field per box and would leave "
      f"seams) in {vo['boxes']} boxes of {RENDER_BOX}³ voxels, each from only the fibres near it with its own fixed random "
      f"generator, {args.jobs} processes, {vo['render_s']:.0f} s.")
    w("")
    w("### Whole process")
    w("")
    w("`/usr/bin/time -v` around the command a user runs (interpreter start-up, imports, reading the SWC, opening the zarr, "
      "loading the model, features, inference, proposed corrections, writing the CSV). No warm-up run; the zarr chunks were "
      "just written or read, so they are likely in the OS page cache.")
    w("")
    w("| run | wall | nodes/s | peak RSS | CPU time (user + sys) | CPU share |")
    w("|---|---|---|---|---|---|")
    for i, p in enumerate(proc, 1):
        w(f"| {i} | {p['wall']:.1f} s | {nodes / p['wall']:,.0f} | {mib(p['rss'])} | {p['user'] + p['sys']:.1f} s | {p['cpu'] * 100:.0f}% |")
    w("")
    said = [ln for ln in proc[-1]["stdout"].splitlines() if ln.startswith(("coverage:", "100", "nodes scored")) or " scored, " in ln]
    w(f"Output of the last run: {'; '.join(f'`{ln}`' for ln in said[:2])}.")
    w("")
    w("### In process: where the time goes")
    w("")
    w("A child Python process runs the CLI's call path (`read_swc`, `open_volume`, then `load_detector` in a thread "
      "while `neurorecon.detect.api.detect` runs, `Detection.write_csv`) with timers wrapped around the stages "
      "of `detect`. "
      f"Best of {len(inp)} runs by `detect` time (range in brackets); rates are {nodes:,} nodes ÷ that time.")
    w("")
    w("| stage | time | nodes/s | share of `detect` |")
    w("|---|---|---|---|")

    def row(label, key, indent=0, show_rate=True):
        _, xs = tsum(key)
        v = bt.get(key, 0.0)
        rr = f"{nodes / v:,.0f}" if show_rate and v > 0 else ""
        w(f"| {'&nbsp;' * 4 * indent}{label} | {v:.2f} s ({min(xs):.2f}–{max(xs):.2f}) | {rr} | {v / bt['detect'] * 100:.0f}% |")

    row("`detect` (all of the below)", "detect")
    row("feature extraction (`compute_features`)", "features", 1)
    row("image measurement (`image_features.measure`)", "image_measure", 2)
    row("brick preparation (`_Block`: wait for the read-ahead thread, smooth, trace-coverage mask)", "block_prepare", 3)
    row("reading and decoding bricks from the zarr (`Volume.read`, tensorstore; in the read-ahead thread, overlaps the rest)", "volume_read", 3)
    row("sampling disks, shells, edges, cones; background percentiles (`_measure_rows`)", "block_sample", 3)
    rest = bt["image_measure"] - bt.get("block_prepare", 0) - bt.get("block_sample", 0)
    w(f"| {'&nbsp;' * 12}rest of `measure` (frames, edge points, planning the bricks) | {rest:.2f} s | | {rest / bt['detect'] * 100:.0f}% |")
    row("trace features, in a worker thread during the image measurement (`_trace_features`: morphology, "
        "node types, rule checks)", "trace_features", 2)
    row("rule-check hits (`check_neuron`)", "rule_checks", 3)
    row("proximity (close pairs)", "proximity", 3)
    row("image features from the measurements (`_image_features`: contrast, normalisation, neighbourhood)",
        "image_features", 2)
    other = bt["features"] - bt.get("image_measure", 0) - bt.get("image_features", 0)
    w(f"| {'&nbsp;' * 8}rest (waiting for the trace features, assembling the table) | {other:.2f} s | | "
      f"{other / bt['detect'] * 100:.0f}% |")
    row("waiting for the model (`load_detector`, in a thread since `detect` began)", "model_wait", 1, show_rate=False)
    row("inference (`Detector.predict`: the LightGBM models, and the context features between them)", "inference", 1)
    corr = bt["detect"] - bt["features"] - bt.get("model_wait", 0) - bt["inference"]
    w(f"| {'&nbsp;' * 4}proposed corrections (`propose`) | {corr:.2f} s | | {corr / bt['detect'] * 100:.0f}% |")
    w("")
    w("Stages in worker threads overlap the others (the trace features run during the image measurement, the "
      "model loads while the features are computed), so their rows do not add up to `detect`.")
    w("")
    w(f"Outside `detect`: import {bt['import']:.2f} s, `read_swc` {bt['read_swc']:.2f} s, `open_volume` {bt['open_volume']:.2f} s, "
      f"`write_csv` {bt['write_csv']:.2f} s; `load_detector` {bt['load_model']:.2f} s in its thread; worker total "
      f"{bt['total']:.1f} s. {b['flagged']:,} nodes flagged, {b['n_features']} features per node.")
    rd = b["reads"]
    w("")
    w(f"Image reads: {rd['calls']:,} boxes, {rd['voxels'] / 1e6:,.0f} M voxels in all ({rd['voxels'] / vol_bytes:.2f}× the volume), "
      f"largest box {rd['max_voxels'] / 1e6:.1f} M voxels ({mib(rd['max_voxels'])} as uint8, {mib(4 * rd['max_voxels'])} as float32). "
      f"RSS in the worker: {mib(b['rss_before_detect'])} after the imports and the trace are loaded (the model is loading in its thread); peak {mib(b['peak_rss'])}.")
    if R.get("profile"):
        w("")
        w(f"### Hot spots (cProfile, one extra in-process run; profiling inflates the total to {R['profile_total']:.1f} s)")
        w("")
        w("| function | mostly called from | calls | own time | share | cumulative |")
        w("|---|---|---|---|---|---|")
        for r in R["profile"]:
            via = f"`{r['caller']}`" if r["caller"] else ""
            w(f"| `{r['func']}` | {via} | {r['calls']:,} | {r['tottime']:.2f} s | {r['share'] * 100:.0f}% | {r['cumtime']:.2f} s |")
    w("")
    w("Notes: nodes/s is nodes ÷ wall time of the whole `neurorecon detect` process (the user's view) or ÷ (feature extraction "
      "+ inference) in process (the target's wording). Peak RSS is the process's maximum resident set (`/usr/bin/time -v`), "
      "which includes the interpreter, numpy/scipy/LightGBM/tensorstore and the per-node feature arrays, not only image patches.")
    w("")
    return "\n".join(L)


# ============================================================================ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="markdown file whose '## AI error detection speed' section is written (default: print it)")
    ap.add_argument("--work", type=Path, default=REPO / "out/bench_detect", help="cache folder for the trace and the image (default: out/bench_detect)")
    ap.add_argument("--model", default=None, help="detector folder (default: the shipped model in src/neurorecon/detect/models)")
    ap.add_argument("--data", type=Path, default=DATA, help="folder of the source SWCs")
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--box", type=float, nargs=3, default=(1024.0, 1024.0, 256.0), metavar=("X", "Y", "Z"), help="µm")
    ap.add_argument("--voxel", type=float, nargs=3, default=(0.5, 0.5, 1.0), metavar=("VX", "VY", "VZ"), help="µm")
    ap.add_argument("--min-piece", type=int, default=100, help="smallest connected piece of a window kept (nodes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2, help="processes for rendering")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the trace and the image even if cached")
    ap.add_argument("--prepare-only", action="store_true")
    ap.add_argument("--profile", choices=("auto", "yes", "no"), default="auto",
                    help="add a cProfile run and list the hot spots (auto: only when the target is not met)")
    ap.add_argument("--profile-top", type=int, default=15)
    ap.add_argument("--note", default="", help="a sentence about the machine's state to put in the report")
    args = ap.parse_args(argv)
    if args.model is None:
        from neurorecon.detect.model import MODEL_DIR

        if not (MODEL_DIR / "meta.json").exists():
            raise SystemExit(f"no shipped model in {MODEL_DIR}; train one (`neurorecon train --out DIR`) and pass --model DIR")
    model = str(Path(args.model).resolve()) if args.model else ""

    t_prep = time.perf_counter()
    D = prepare(args)
    prep_s = time.perf_counter() - t_prep
    log(f"data ready in {time.perf_counter() - t_prep:.0f} s: {D['trace']['nodes']:,} nodes, volume {D['volume']['shape_zyx']} (z, y, x)")
    if args.prepare_only:
        return 0
    t0 = time.perf_counter()
    R = dict(D, load_before=loadavg(), note=args.note, model_desc=model_desc(args.model),
             prep=f"the trace and image were built in {prep_s:.0f} s" if prep_s > 20 else f"trace and image cached in `{_rel(args.work)}`")
    scores = Path(args.work) / "scores.csv"
    cmd = [str(BIN / "neurorecon"), "detect", str(D["swc"]), "--image", str(D["vol"]), "--out", str(scores), "--overwrite"]
    if model:
        cmd += ["--model", model]
    R["proc"] = []
    for i in range(args.reps):
        r = _time_cmd(cmd)
        log(f"whole process {i + 1}/{args.reps}: {r['wall']:.1f} s, {D['trace']['nodes'] / r['wall']:,.0f} nodes/s, "
            f"peak RSS {mib(r['rss'])}, CPU {r['cpu'] * 100:.0f}%")
        R["proc"].append(r)
    R["inproc"] = []
    for i in range(args.reps):
        r = run_worker(D["swc"], D["vol"], model, Path(args.work) / "scores_inproc.csv")
        t = r["t"]
        log(f"in process {i + 1}/{args.reps}: detect {t['detect']:.1f} s (features {t['features']:.1f} s, of which image "
            f"{t['image_measure']:.1f} s [read {t.get('volume_read', 0):.1f} s]; inference {t['inference']:.1f} s), "
            f"peak RSS {mib(r['peak_rss'])}")
        R["inproc"].append(r)
    best_inproc = min(r["t"]["features"] + r["t"]["inference"] for r in R["inproc"])
    below = D["trace"]["nodes"] / min(p["wall"] for p in R["proc"]) < TARGET_NODES_PER_S or \
        D["trace"]["nodes"] / best_inproc < TARGET_NODES_PER_S
    if args.profile == "yes" or (args.profile == "auto" and below):
        prof = Path(args.work) / "detect.prof"
        r = run_worker(D["swc"], D["vol"], model, Path(args.work) / "scores_inproc.csv", str(prof))
        R["profile"] = profile_summary(prof, args.profile_top)
        R["profile_total"] = r["t"]["detect"]
        log(f"profile: {prof} (detect {r['t']['detect']:.1f} s under cProfile)")
        for p in R["profile"]:
            log(f"  {p['tottime']:7.2f} s {p['share'] * 100:4.0f}% {p['cumtime']:7.2f} s cum  {p['calls']:>9,}  {p['func']}"
                + (f"  <- {p['caller']}" if p["caller"] else ""))
    R["load_after"] = loadavg()
    R["elapsed"] = time.perf_counter() - t0
    command = shlex.join([_rel(PY), _rel(__file__), *(argv if argv is not None else sys.argv[1:])])
    section = render_section(R, args, command)
    if args.out:
        replace_section(args.out, SECTION, section)
        log(f"wrote the '{SECTION[3:]}' section of {args.out}")
    else:
        print(section)
    (Path(args.work) / "results.json").write_text(json.dumps({k: v for k, v in R.items() if k not in ("swc", "vol")}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
