"""False alerts on real confocal images: the detector run on the DIADEM stacks' gold traces.

The five DIADEM Olfactory Projection Fibers stacks (``lm_real/diadem_opf`` in the shared data:
OP_1, OP_2, OP_3, OP_5, OP_6, 0.3296 x 0.3296 x 1 µm, manual gold traces in µm) are real
microscopy that no renderer made. Their traces are a gold standard, so every node flagged on them
is a false alert. The split is fixed: OP_1 and OP_2 may be used to train or calibrate
(:data:`CALIBRATION_STACKS`), OP_3, OP_5 and OP_6 are only ever reported (:data:`REPORT_STACKS`).

Run ``python -m neurorecon.detect.benchmark_real`` (``make detection-real``): per stack, nodes
flagged at the threshold and their reasons, then the held-out synthetic numbers of the model's
``meta.json`` against the issue's targets.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIADEM_STACKS = ("OP_1", "OP_2", "OP_3", "OP_5", "OP_6")
#: Stacks that training and calibration may use (their gold nodes as correct examples).
CALIBRATION_STACKS = ("OP_1", "OP_2")
#: Stacks that are only ever reported.
REPORT_STACKS = ("OP_3", "OP_5", "OP_6")
DIADEM_VOXEL_UM = (0.3296, 0.3296, 1.0)


@dataclass
class StackResult:
    name: str
    n: int
    flagged: int
    reasons: dict          # reason -> flagged nodes
    p_median: float

    @property
    def share(self) -> float:
        return self.flagged / max(self.n, 1)


def diadem_dir(data_dir: Path | None = None) -> Path:
    from ..io.shared import shared_data_dir

    return Path(data_dir or shared_data_dir()) / "lm_real" / "diadem_opf"


def load_stack(name: str, data_dir: Path | None = None):
    """(gold trace, volume) of one stack; FileNotFoundError with the path if it is missing."""
    from ..io.swc import read_swc
    from ..io.volume import open_volume

    folder = diadem_dir(data_dir)
    swc, tif = folder / f"{name}.swc", folder / f"{name}.tif"
    for f in (swc, tif):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no such file (the DIADEM stacks live in ../shared/data/lm_real/diadem_opf)")
    return read_swc(swc), open_volume(tif, voxel_size=DIADEM_VOXEL_UM)


def run_stack(name: str, detector, threshold: float = 0.5, data_dir: Path | None = None) -> StackResult:
    """Detect on one stack's gold trace; every flag is a false alert."""
    from .api import detect

    neuron, volume = load_stack(name, data_dir)
    res = detect(neuron, volume, detector=detector, threshold=threshold)
    flagged = res.p_error >= threshold
    return StackResult(name, len(neuron), int(flagged.sum()), dict(Counter(res.reason[flagged].tolist()).most_common()),
                       float(np.nanmedian(res.p_error)) if np.isfinite(res.p_error).any() else float("nan"))


def run_real(detector, stacks=DIADEM_STACKS, threshold: float = 0.5, data_dir: Path | None = None) -> list[StackResult]:
    return [run_stack(s, detector, threshold, data_dir) for s in stacks]


def heldout_targets(meta: dict) -> dict:
    """The issue's held-out targets read from a model's ``meta.json`` (measured at training time):
    share of correct nodes flagged at 0.5, error recall at 0.5, recall at 1.4 % FPR overall and for
    jumps. Models trained before session 9 do not store the correct-node share; it follows from
    precision and recall."""
    m = meta.get("heldout", {}).get("all")
    if not m:
        return {}
    tp = m["recall"] * m["n_errors"]
    fpr = m.get("correct_flagged")
    if fpr is None:
        fpr = tp * (1.0 / m["precision"] - 1.0) / max(m["n"] - m["n_errors"], 1) if m["precision"] > 0 else float("nan")
    jump = m["per_type"].get("jump", (0, float("nan"), float("nan")))
    return {"n": m["n"], "n_errors": m["n_errors"], "correct_flagged": float(fpr), "error_recall": m["recall"],
            "recall_at_fpr": m["recall_at_fpr"], "jump_recall_at_fpr": jump[2], "auc": m["auc"]}


def markdown(results: list[StackResult], targets: dict, command: str) -> str:
    lines = [f"Command: `{command}`", "", "DIADEM gold traces (every flag is a false alert; calibration stacks "
             f"{', '.join(CALIBRATION_STACKS)}, report stacks {', '.join(REPORT_STACKS)}):", "",
             "| stack | role | nodes | flagged | share | median p | reasons |", "|---|---|---|---|---|---|---|"]
    for r in results:
        role = "calibration" if r.name in CALIBRATION_STACKS else "report"
        why = ", ".join(f"{k} {v}" for k, v in r.reasons.items()) or "-"
        lines.append(f"| {r.name} | {role} | {r.n} | {r.flagged} | {r.share:.1%} | {r.p_median:.3f} | {why} |")
    for role, names in (("report", REPORT_STACKS), ("calibration", CALIBRATION_STACKS), ("all", DIADEM_STACKS)):
        sel = [r for r in results if r.name in names]
        if sel:
            n, f = sum(r.n for r in sel), sum(r.flagged for r in sel)
            lines.append(f"| **{role} stacks** | | {n} | {f} | {f / max(n, 1):.1%} | | |")
    if targets:
        lines += ["", f"Held-out synthetic split at training time ({targets['n']} nodes, {targets['n_errors']} errors; "
                  "the model's meta.json):", "", "| target | goal | measured |", "|---|---|---|",
                  f"| correct nodes flagged at 0.5 | ≤ 3 % | {targets['correct_flagged']:.2%} |",
                  f"| error nodes flagged at 0.5 | ≥ 90 % | {targets['error_recall']:.1%} |",
                  f"| recall at 1.4 % FPR | ≥ 0.92 | {targets['recall_at_fpr']:.3f} |",
                  f"| jump recall at 1.4 % FPR | ≥ 0.6 | {targets['jump_recall_at_fpr']:.3f} |",
                  f"| AUC | | {targets['auc']:.4f} |"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import argparse
    import sys

    from .model import ModelError, load_detector

    ap = argparse.ArgumentParser(prog="python -m neurorecon.detect.benchmark_real",
                                 description="False alerts of the detector on the DIADEM gold traces.")
    ap.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    ap.add_argument("--stacks", nargs="+", default=list(DIADEM_STACKS), choices=DIADEM_STACKS)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("-o", "--out", default=None, help="write the markdown here")
    a = ap.parse_args(argv)
    try:
        det = load_detector(a.model)
        results = run_real(det, a.stacks, a.threshold)
    except (FileNotFoundError, ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    cmd = "python -m neurorecon.detect.benchmark_real" + (f" --model {a.model}" if a.model else "")
    md = markdown(results, heldout_targets(det.meta), cmd)
    print(md, end="")
    if a.out:
        from ..io.atomic import atomic_write_text

        atomic_write_text(a.out, md)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
