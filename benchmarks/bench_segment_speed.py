"""Whole-process speed of `neurorecon segment`, per method, on a 64 x 256 x 256 synth-em volume.

    .venv/bin/python benchmarks/bench_segment_speed.py

Renders one volume from the held-out pinky40 block (the held-back `sem` style) into a temporary
folder, then times `python -m neurorecon segment IMG -o SEG.tif --method M` as whole processes
(start-up, imports, reading, segmenting, writing), best of 3 after one warm-up, with wall time,
CPU time (user + system, all threads) and peak memory (max RSS). Prints a markdown table.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(cmd: list[str]) -> tuple[float, float, float]:
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> int:
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="neurorecon-segbench-") as tmp:
        tmp = Path(tmp)
        subprocess.run([py, "-m", "neurorecon", "synth-em", "-o", str(tmp / "v"), "-n", "1", "--seed", "1",
                        "--split", "heldout", "--size", "256", "256", "64", "--style", "sem"], check=True,
                       stdout=subprocess.DEVNULL)
        image = next((tmp / "v").glob("em_0000.tif"))
        voxels = 64 * 256 * 256
        rows = []
        for method in ("watershed", "affinities"):
            cmd = [py, "-m", "neurorecon", "segment", str(image), "-o", str(tmp / "seg.tif"), "--method", method, "--overwrite"]
            run(cmd)
            runs = [run(cmd) for _ in range(3)]
            wall, cpu, rss = min(r[0] for r in runs), min(r[1] for r in runs), max(r[2] for r in runs)
            rows.append(f"| `{method}` | {wall:.2f} s | {cpu:.2f} s | {voxels / wall:,.0f} | {rss:,.0f} MiB |")
    print(f"Volume: 64 x 256 x 256 = {voxels:,} voxels (16 x 16 x 40 nm), rendered by `synth-em` from the held-out block.\n")
    print("| method | wall (best of 3) | CPU | voxels/s (wall) | peak RSS |\n|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
