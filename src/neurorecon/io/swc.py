"""Read and write SWC and Vaa3D/TeraFly ESWC files.

The reader takes what real files contain: comments anywhere (whole-line or trailing), blank lines,
CRLF, tabs or runs of spaces, float-formatted integers, unsorted ids, forward references, any node
type, several roots, extra ESWC columns, comma-delimited lines and comma decimals where
unambiguous. It reads the structure as written and never repairs it: a file with duplicate ids,
missing parents or cycles still loads, so that :mod:`neurorecon.qc` can report the problem.

Well-formed files take the compiled reader (:mod:`neurorecon.native`, about 0.35 s per million
nodes where numpy.loadtxt takes 1.2 s) or, without it, a vectorised path through
``numpy.loadtxt``; anything unusual falls back to a line-by-line reader that names the offending
line.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from .. import native
from ..morphology.neuron import Neuron, ParseProblem
from .atomic import atomic_write_text

__all__ = ["SwcParseError", "read_swc", "write_swc", "format_swc"]

STANDARD_COLUMNS = ("n", "type", "x", "y", "z", "radius", "parent")
_HEADER_WORDS = {"n", "id", "index", "pointno", "sample", "type", "t", "x", "y", "z", "radius", "r", "parent", "pid"}


class SwcParseError(ValueError):
    """A line of an SWC file that cannot be read; names the file and the line."""

    def __init__(self, source: str, line: int, message: str, text: str = ""):
        self.source, self.line, self.reason, self.text = source, line, message, text
        shown = f": {text.strip()[:80]!r}" if text.strip() else ""
        super().__init__(f"{source}:{line}: {message}{shown}")


def read_swc(source: str | os.PathLike | bytes, *, strict: bool = True, name: str | None = None) -> Neuron:
    """Read an SWC or ESWC file.

    Parameters
    ----------
    source : path, or the file's content as bytes
    strict : bool
        If True (default) the first unreadable line raises :class:`SwcParseError`. If False such
        lines are skipped and listed in ``Neuron.parse_problems``.
    name : label used in messages when ``source`` is bytes.

    Returns
    -------
    Neuron

    Raises
    ------
    SwcParseError
        For an unreadable line (``strict=True``), or a file that holds no node at all.
    OSError
        If the file cannot be opened.

    Examples
    --------
    >>> n = read_swc(b"1 1 0 0 0 5 -1\\n2 3 0 0 10 1 1\\n")
    >>> n.n_nodes, n.parent.tolist()
    (2, [-1, 0])
    """
    if isinstance(source, (bytes, bytearray)):
        data, label = bytes(source), name or "<bytes>"
    else:
        label = name or str(source)
        data = Path(source).read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark (Windows editors)
        data = data[3:]
    if b"\x00" in data[:4096]:
        raise SwcParseError(label, 1, "binary data, not a text SWC file")
    header = _header_lines(data)
    table, problems = _native_table(data)
    if table is None:
        table, problems = _numpy_table(data, label, strict)
    n_extra = table.shape[1] - 7
    return Neuron(
        ids=table[:, 0].astype(np.int64),
        types=table[:, 1].astype(np.int64),
        xyz=table[:, 2:5],
        radius=table[:, 5],
        parent_ids=table[:, 6].astype(np.int64),
        extra=table[:, 7:],
        extra_names=_extra_names(header, n_extra),
        header=tuple(header),
        source=label,
        parse_problems=tuple(problems),
    )


def _header_lines(data: bytes) -> list[str]:
    """Comment lines (text after a line's leading '#'), found by jumping from '#' to '#': a
    multi-line regex over the whole file costs a third of the read time of a large file."""
    out = []
    pos = data.find(b"#")
    while pos >= 0:
        start = max(data.rfind(b"\n", 0, pos), data.rfind(b"\r", 0, pos)) + 1
        end = len(data)
        for sep in (b"\n", b"\r"):
            k = data.find(sep, pos)
            if 0 <= k < end:
                end = k
        if not data[start:pos].strip(b" \t"):
            out.append(data[pos + 1 : end].decode("utf-8", "replace").rstrip())
        pos = data.find(b"#", end)
    return out


def _extra_names(header: list[str], n_extra: int) -> tuple[str, ...]:
    """Names of the ESWC columns, from a header line such as '##n,type,x,y,z,radius,parent,seg_id,level'."""
    if n_extra == 0:
        return ()
    for line in reversed(header):
        words = [w for w in re.split(r"[\s,]+", line.strip("# ")) if w]
        lower = [w.lower() for w in words]
        if len(words) >= 7 + n_extra and lower[0] in _HEADER_WORDS and "parent" in lower[:8]:
            return tuple(words[7 : 7 + n_extra])
    return tuple(f"extra{i + 1}" for i in range(n_extra))


def _numpy_table(data: bytes, label: str, strict: bool) -> tuple[np.ndarray, list[ParseProblem]]:
    lines = data.splitlines()
    table, problems = _fast_table(lines)
    if table is None:
        table, problems = _tolerant_table(lines, label)
        if strict and problems:
            p = problems[0]
            raise SwcParseError(label, p.line, p.message, p.text)
    if len(table) == 0:
        reason = problems[0].message if problems else "no node lines found"
        line = problems[0].line if problems else max(len(lines), 1)
        raise SwcParseError(label, line, f"no readable node: {reason}")
    return table, problems


def _native_table(data: bytes) -> tuple[np.ndarray | None, list[ParseProblem]]:
    """The compiled reader's table of a well-formed file (same numbers as numpy.loadtxt), or None
    (not built, or anything unusual in the file: the numpy readers then take it)."""
    if native.lib is None:
        return None, []
    out = native.lib.parse_table(data)
    if out is None:
        return None, []
    values, ncol = out
    table = np.frombuffer(values, np.float64).reshape(-1, ncol)
    if ncol < 7 or not _valid_rows(table).all():
        return None, []
    return table, []


def _fast_table(lines: list[bytes]) -> tuple[np.ndarray | None, list[ParseProblem]]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            table = np.loadtxt(lines, comments="#", ndmin=2, dtype=np.float64)
    except ValueError:
        return None, []
    if table.size == 0:
        return np.zeros((0, 7)), []
    if table.shape[1] < 7 or not _valid_rows(table).all():
        return None, []
    return table, []


def _valid_rows(table: np.ndarray) -> np.ndarray:
    core = table[:, :7]
    finite = np.isfinite(core).all(axis=1)
    ints = table[:, [0, 1, 6]]
    integral = np.all(ints == np.round(ints), axis=1) & np.all(np.abs(ints) < 2**53, axis=1)
    return finite & integral


_COMMA_DECIMAL = re.compile(rb"^[+-]?\d*,\d+(?:[eE][+-]?\d+)?$")


def _split_fields(body: bytes) -> tuple[list[bytes] | None, str]:
    fields = body.split()
    if any(b"," in f for f in fields):
        if len(fields) >= 7 and all(b"," not in f or _COMMA_DECIMAL.match(f) for f in fields):
            # Whitespace-delimited with comma decimals ("1 3 12,5 ..."): unambiguous.
            fields = [f.replace(b",", b".") for f in fields]
        elif _comma_delimited(body):
            # "1,1,0,0,0,5,-1" or "1, 1, 0, 0, 0, 5, -1": every piece between commas is one value.
            fields = [f.strip() for f in re.split(rb"[,;]", body)]
            while fields and not fields[-1]:
                fields.pop()
        else:
            return None, "commas in a whitespace-delimited line are ambiguous (decimal or delimiter?)"
    return fields, ""


def _comma_delimited(body: bytes) -> bool:
    """Commas are delimiters: no whitespace at all, or every comma ends a whitespace token."""
    tokens = body.split()
    if len(tokens) == 1:
        return True
    return all(b"," not in t.rstrip(b",;") and b";" not in t.rstrip(b",;") for t in tokens) and all(
        t.endswith((b",", b";")) for t in tokens[:-1])


def _tolerant_table(lines: list[bytes], label: str) -> tuple[np.ndarray, list[ParseProblem]]:
    rows: list[list[float]] = []
    problems: list[ParseProblem] = []
    for lineno, raw in enumerate(lines, start=1):
        body = raw.split(b"#", 1)[0].strip()
        if not body:
            continue
        text = raw.decode("utf-8", "replace")
        fields, why = _split_fields(body)
        if fields is None:
            problems.append(ParseProblem(lineno, why, text))
            continue
        if len(fields) < 7:
            problems.append(ParseProblem(lineno, f"expected 7 columns (n type x y z radius parent), found {len(fields)}", text))
            continue
        try:
            values = [float(f) for f in fields]
        except ValueError:
            bad = next(f for f in fields if not _is_float(f))
            col = STANDARD_COLUMNS[fields.index(bad)] if fields.index(bad) < 7 else f"column {fields.index(bad) + 1}"
            problems.append(ParseProblem(lineno, f"{col} is not a number: {bad.decode('utf-8', 'replace')!r}", text))
            continue
        row = np.array(values[:7])
        if not np.isfinite(row).all():
            problems.append(ParseProblem(lineno, "non-finite value (nan/inf) in the first 7 columns", text))
            continue
        ints = row[[0, 1, 6]]
        if not np.all(ints == np.round(ints)):
            which = [c for c, v in zip(("n", "type", "parent"), ints) if v != round(v)]
            problems.append(ParseProblem(lineno, f"{', '.join(which)} must be an integer", text))
            continue
        rows.append(values)
    width = max((len(r) for r in rows), default=7)
    table = np.full((len(rows), width), np.nan)
    for k, r in enumerate(rows):
        table[k, : len(r)] = r
    return table, problems


def _is_float(b: bytes) -> bool:
    try:
        float(b)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------- writing
def _fmt_float(values: np.ndarray) -> list[str]:
    # repr() of a Python float is the shortest string that reads back to the same double, so the
    # write-read round trip is exact.
    return list(map(repr, values.tolist()))


def format_swc(neuron: Neuron, *, header: bool = True) -> str:
    """The SWC text of ``neuron`` (ESWC when it has extra columns)."""
    cols = [
        list(map(str, neuron.ids.tolist())),
        list(map(str, neuron.types.tolist())),
        _fmt_float(neuron.xyz[:, 0]),
        _fmt_float(neuron.xyz[:, 1]),
        _fmt_float(neuron.xyz[:, 2]),
        _fmt_float(neuron.radius),
        list(map(str, neuron.parent_ids.tolist())),
    ]
    extra_cols = [_fmt_float(neuron.extra[:, k]) for k in range(neuron.extra.shape[1])]
    lines = []
    if header:
        kept = [h for h in neuron.header if not _is_column_header(h)]
        lines += [f"#{h}" for h in kept]
        lines.append("#" + " ".join(STANDARD_COLUMNS + neuron.extra_names))
    if extra_cols:
        # NaN marks a value missing from a short line: drop trailing NaNs only (an interior one is
        # written as "nan" so that the columns after it keep their place).
        present = ~np.isnan(neuron.extra)
        width = np.where(present.any(axis=1), present.shape[1] - np.argmax(present[:, ::-1], axis=1), 0)
        for k, row in enumerate(zip(*cols, *extra_cols)):
            lines.append(" ".join(row[: 7 + width[k]]))
    else:
        lines += [" ".join(row) for row in zip(*cols)]
    return "\n".join(lines) + "\n"


def _is_column_header(line: str) -> bool:
    words = [w for w in re.split(r"[\s,]+", line.strip("# ").lower()) if w]
    return len(words) >= 7 and words[0] in _HEADER_WORDS and "parent" in words


def write_swc(neuron: Neuron, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write ``neuron`` to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite it")
    return atomic_write_text(path, format_swc(neuron))
