"""The tables of docs/segmentation.md: neurorecon's skeleton metrics against the results that
segmentation-skeleton-metrics 5.9.14 published with its demo data, and the time VOI and the
adapted Rand error take on a real 512^3 segmentation.

Run from the repository root::

    PYTHONPATH=src .venv/bin/python benchmarks/em_metrics_report.py > /tmp/tables.md

Data: ../shared/data/skeleton_metrics (the reference's demo: segmentation, 14 ground-truth
skeletons, 15 fragments, results.csv, results_overview.txt) and ../shared/data/em/pinky40_labels_512.npy.gz.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import math
import time
from pathlib import Path

import numpy as np

from neurorecon.em import adapted_rand_error, contingency_table, read_skeletons, skeleton_metrics, summarize, voi
from neurorecon.em.skeleton_metrics import COLUMNS
from neurorecon.io.npy import load_npy

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# Decimals the reference rounds each column to (None: not rounded).
ROUNDING = {"ERL": 2, "Normalized ERL": 4, "Edge Accuracy": 2, "Split Rate": 2, "Merge Rate": 2}


def as_reference(s) -> dict:
    """Our unrounded scores, rounded the way the reference rounds them (normalized ERL from the
    rounded ERL)."""
    row = {c: getattr(s, a) for a, c in COLUMNS.items()}
    row = {c: (math.nan if v is None else float(v)) for c, v in row.items()}
    for c, d in ROUNDING.items():
        if not math.isnan(row[c]):
            row[c] = round(row[c], d)
    row["Normalized ERL"] = round(row["ERL"] / row["SWC Run Length"], 4)
    return row


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


def fmt(v: float, col: str) -> str:
    if math.isnan(v):
        return "-"
    if col in ("# Splits", "# Merges"):
        return str(int(v))
    return f"{v:.{ROUNDING.get(col) or 2}f}"


def skeleton_tables(folder: Path) -> str:
    seg = load_npy(folder / "pred_segmentation.npy.gz")
    t0 = time.perf_counter()
    scores = skeleton_metrics(seg, read_skeletons(folder / "target_swcs.zip"),
                              fragments=read_skeletons(folder / "pred_swcs.zip"))
    seconds = time.perf_counter() - t0
    with open(folder / "results.csv", newline="") as f:
        rows = list(csv.reader(f))
    ref = {r[0]: {c: (float(v) if v else math.nan) for c, v in zip(rows[0][1:], r[1:])} for r in rows[1:]}
    cols = list(COLUMNS.values())
    out = [f"Skeleton metrics of the demo ({len(scores)} skeletons, 15 fragments; {seconds:.2f} s including reading):",
           "ours, rounded as the reference rounds; the last column says whether all 11 cells equal results.csv.", "",
           "| skeleton | " + " | ".join(cols) + " | = results.csv |", "|---" * (len(cols) + 2) + "|"]
    n_equal = 0
    worst = dict.fromkeys(cols, 0.0)
    for s in scores:
        ours, want = as_reference(s), ref[s.name]
        ok = all(same(ours[c], want[c]) for c in cols)
        n_equal += ok
        out.append(f"| {s.name} | " + " | ".join(fmt(ours[c], c) for c in cols) + f" | {'yes' if ok else 'NO'} |")
        for a, c in COLUMNS.items():
            raw = getattr(s, a)
            raw = math.nan if raw is None else float(raw)
            if not (math.isnan(raw) and math.isnan(want[c])):
                worst[c] = max(worst[c], abs(raw - want[c]))
    out += ["", f"{n_equal} of {len(scores)} rows equal results.csv in every column.", "",
            "Largest difference between our unrounded value and the reference's cell, per column:", "",
            "| " + " | ".join(cols) + " |", "|---" * len(cols) + "|",
            "| " + " | ".join(f"{worst[c]:.2g}" for c in cols) + " |", ""]
    # The overview: run-length-weighted averages (NaN left out) and totals.
    text = (folder / "results_overview.txt").read_text()
    want = {k.strip(): float(v) for k, v in (ln.split(":") for ln in text.split("Total")[0].splitlines() if ":" in ln)}
    summary = summarize(scores)
    w = np.array([s.run_length for s in scores])
    rounded = [as_reference(s) for s in scores]
    out += ["Averages weighted by run length (results_overview.txt):", "",
            "| metric | ours | ours from rounded rows | reference |", "|---|---|---|---|"]
    by_col = {c: a for a, c in COLUMNS.items()}
    for col, value in want.items():
        v = np.array([r[col] for r in rounded])
        ok = ~np.isnan(v)
        from_rounded = float(np.dot(v[ok], w[ok]) / w[ok].sum()) if ok.any() else math.nan
        out.append(f"| {col} | {summary['average'][by_col[col]]:.4f} | {from_rounded:.4f} | {value:.4f} |")
    t = summary["total"]
    out += ["", f"Totals: {t['n_splits']} splits, {t['n_merges']} merges (reference: "
            + ", ".join(ln.strip() for ln in text.split("Total Results...")[1].strip().splitlines()) + ")."]
    return "\n".join(out)


def timing_table(path: Path, repeats: int) -> str:
    gt = np.load(gzip.open(path))
    labels, counts = np.unique(gt, return_counts=True)
    big = labels[np.argsort(counts)[::-1]]
    seg = gt.copy(order="K")            # same memory order as gt: no copy when walking both
    seg[np.isin(gt, big[:3])] = big[0]                          # a merge of the 3 largest objects
    seg[(gt == big[3]) & (np.arange(gt.shape[0])[:, None, None] > gt.shape[0] // 2)] = 2**31   # a split
    out = [f"VOI and adapted Rand error on {path.name} ({'x'.join(map(str, gt.shape))}, {len(labels)} labels, "
           f"real neurons; one merge and one split added), best of {repeats}:", "",
           "| dtype | runs | contingency table (s) | VOI + ARE from it (s) | VOI split | VOI merge | ARE |",
           "|---|---|---|---|---|---|---|"]
    for dtype in (np.uint32, np.uint64):
        s, g = seg.astype(dtype, order="K"), gt.astype(dtype, order="K")
        best_t = best_m = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            table = contingency_table(s, g)
            t1 = time.perf_counter()
            split, merge = voi(table=table)
            are = adapted_rand_error(table=table)
            t2 = time.perf_counter()
            best_t, best_m = min(best_t, t1 - t0), min(best_m, t2 - t1)
        flat_s, flat_g = s.ravel("K"), g.ravel("K")
        runs = 1 + int(np.count_nonzero((flat_s[1:] != flat_s[:-1]) | (flat_g[1:] != flat_g[:-1])))
        out.append(f"| {np.dtype(dtype).name} | {runs:,} | {best_t:.2f} | {best_m:.4f} | {split:.4f} | {merge:.4f} | "
                   f"{are.error:.5f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="The shared data folder.")
    ap.add_argument("--repeats", type=int, default=3, help="Timing runs (the best is kept).")
    args = ap.parse_args()
    print(skeleton_tables(args.data / "skeleton_metrics"))
    print()
    print(timing_table(args.data / "em" / "pinky40_labels_512.npy.gz", args.repeats))


if __name__ == "__main__":
    main()
