"""SCORES.csv, the table ``neurorecon detect`` writes (:meth:`neurorecon.detect.api.Detection.to_csv`),
read back strictly: whoever reads it (the review viewer) gets clean arrays or one clear error."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SCORE_COLUMNS", "Scores", "ScoresError", "read_scores_csv"]

SCORE_COLUMNS = ("node_id", "p_error", "flag", "reason", "x", "y", "z", "fix")


class ScoresError(ValueError):
    """A SCORES.csv that cannot be read; the one-line message names the file and line."""


@dataclass(frozen=True)
class Scores:
    """The columns of a SCORES.csv, one entry per row in file order (``reason`` is "" and ``fix``
    None where the file has no such column or an empty cell)."""

    node_id: np.ndarray     # int64, unique
    p_error: np.ndarray     # float64 in [0, 1]; NaN where the cell is empty (a node the image does not cover)
    reason: list
    fix: list               # dict (a proposed correction) or None


def read_scores_csv(path: str | os.PathLike) -> Scores:
    """Read a SCORES.csv: ``node_id`` and ``p_error`` required, ``reason`` and ``fix`` (JSON) where
    present. An empty ``p_error`` is a node that was not scored (outside the image): NaN.

    Raises
    ------
    ScoresError
        Missing columns, short rows, values that are not numbers, p outside [0, 1], a node id twice,
        or a fix that is not a JSON object with an "action".
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeError) as e:
        raise ScoresError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if r and "".join(r).strip()]
    if not rows:
        raise ScoresError(f"{path}: empty file; expected a header {','.join(SCORE_COLUMNS)}")
    head = [h.strip().lower() for h in rows[0]]
    missing = [c for c in ("node_id", "p_error") if c not in head]
    if missing:
        raise ScoresError(f"{path}: line 1: missing column(s) {', '.join(missing)}; expected {','.join(SCORE_COLUMNS)}")
    col = {c: head.index(c) for c in SCORE_COLUMNS if c in head}
    body = rows[1:]
    short = next((k for k, r in enumerate(body) if len(r) < len(head)), None)
    if short is not None:
        raise ScoresError(f"{path}: line {short + 2}: {len(body[short])} fields, the header has {len(head)}")
    ids = _column(path, body, col["node_id"], "node_id", np.int64)
    p = _column(path, body, col["p_error"], "p_error", np.float64, empty_ok=True)
    bad = np.flatnonzero(~((p >= 0) & (p <= 1)) & ~_empty(body, col["p_error"]))
    if len(bad):
        raise ScoresError(f"{path}: line {bad[0] + 2}: p_error {body[bad[0]][col['p_error']]!r} is not in [0, 1]")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ScoresError(f"{path}: node id {uniq[counts > 1][0]} is scored twice")
    reason = [r[col["reason"]].strip() for r in body] if "reason" in col else [""] * len(body)
    fix = [_fix(path, k + 2, r[col["fix"]]) for k, r in enumerate(body)] if "fix" in col else [None] * len(body)
    return Scores(ids, p, reason, fix)


def _empty(body: list, k: int) -> np.ndarray:
    return np.array([not r[k].strip() for r in body], dtype=bool)


def _column(path: Path, body: list, k: int, name: str, dtype, empty_ok: bool = False) -> np.ndarray:
    """One column as numbers; with ``empty_ok``, empty cells are NaN (and ``nan`` text is not)."""
    values = [r[k].strip() for r in body]
    if empty_ok:
        values = [v or "nan" for v in values]
    try:
        arr = np.array(values, dtype=np.float64)
    except ValueError:
        bad = next(j for j, v in enumerate(values) if not _is_number(v))
        raise ScoresError(f"{path}: line {bad + 2}: {name} {values[bad]!r} is not a number") from None
    if dtype is np.int64:
        if not np.all(arr == np.round(arr)):
            bad = int(np.flatnonzero(arr != np.round(arr))[0])
            raise ScoresError(f"{path}: line {bad + 2}: node_id {values[bad]!r} is not an integer")
        return arr.astype(np.int64)
    return arr


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _fix(path: Path, line: int, text: str) -> dict | None:
    text = text.strip()
    if not text:
        return None
    try:
        fix = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScoresError(f"{path}: line {line}: the fix is not valid JSON ({e.msg})") from None
    if not isinstance(fix, dict) or not isinstance(fix.get("action"), str):
        raise ScoresError(f"{path}: line {line}: the fix must be a JSON object with an \"action\"")
    return fix
