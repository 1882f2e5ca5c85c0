"""Vaa3D point files: ``.apo`` (point clouds, used for review markers) and ``.marker``.

APO rows are ``n,orderinfo,name,comment,z,x,y,pixmax,intensity,sdev,volsize,mass,,,,r,g,b``
(note z before x and y, as Vaa3D writes them); marker rows are
``x,y,z,radius,shape,name,comment,r,g,b``. Both are comma-separated with ``#`` comments.
Coordinates are kept as written: the same frame as the SWC they annotate.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_write_text

__all__ = ["Point", "PointFileError", "read_apo", "write_apo", "read_marker", "write_marker"]


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    z: float
    name: str = ""
    comment: str = ""
    color: tuple[int, int, int] = (255, 0, 0)
    radius: float = 1.0


class PointFileError(ValueError):
    pass


def _rows(path: Path):
    text = path.read_text(encoding="utf-8", errors="replace")
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        yield lineno, [c.strip() for c in row]


def _num(path, lineno, row, k, what):
    try:
        return float(row[k])
    except (IndexError, ValueError):
        raise PointFileError(f"{path}:{lineno}: {what} missing or not a number") from None


def _color(row, first) -> tuple[int, int, int]:
    try:
        return tuple(int(float(row[first + k])) for k in range(3))  # type: ignore[return-value]
    except (IndexError, ValueError):
        return (255, 0, 0)


def read_apo(path: str | os.PathLike) -> list[Point]:
    path = Path(path)
    out = []
    for lineno, row in _rows(path):
        z, x, y = (_num(path, lineno, row, k, c) for k, c in ((4, "z"), (5, "x"), (6, "y")))
        volsize = _num(path, lineno, row, 10, "volsize") if len(row) > 10 and row[10] else 0.0
        radius = (3 * volsize / (4 * 3.141592653589793)) ** (1 / 3) if volsize > 0 else 1.0
        out.append(Point(x, y, z, row[2].strip('"') if len(row) > 2 else "", row[3].strip('"') if len(row) > 3 else "", _color(row, 15), radius))
    return out


def _q(s: str) -> str:
    return s.replace(",", ";").replace('"', "'").replace("\n", " ")


def format_apo(points: list[Point]) -> str:
    lines = ["##n,orderinfo,name,comment,z,x,y, pixmax,intensity,sdev,volsize,mass,,,, color_r,color_g,color_b"]
    for k, p in enumerate(points, start=1):
        vol = 4 / 3 * 3.141592653589793 * p.radius**3
        r, g, b = p.color
        lines.append(f'{k},,"{_q(p.name)}","{_q(p.comment)}",{p.z!r},{p.x!r},{p.y!r},0,0,0,{vol:.3f},0,,,,{r},{g},{b}')
    return "\n".join(lines) + "\n"


def write_apo(points: list[Point], path: str | os.PathLike) -> Path:
    return atomic_write_text(path, format_apo(points))


def read_marker(path: str | os.PathLike) -> list[Point]:
    path = Path(path)
    out = []
    for lineno, row in _rows(path):
        x, y, z = (_num(path, lineno, row, k, c) for k, c in ((0, "x"), (1, "y"), (2, "z")))
        radius = float(row[3]) if len(row) > 3 and row[3] else 1.0
        out.append(Point(x, y, z, row[5] if len(row) > 5 else "", row[6] if len(row) > 6 else "", _color(row, 7), radius))
    return out


def write_marker(points: list[Point], path: str | os.PathLike) -> Path:
    lines = ["##x,y,z,radius,shape,name,comment, color_r,color_g,color_b"]
    for p in points:
        r, g, b = p.color
        lines.append(f"{p.x!r},{p.y!r},{p.z!r},{p.radius!r},0,{_q(p.name)},{_q(p.comment)},{r},{g},{b}")
    return atomic_write_text(path, "\n".join(lines) + "\n")
