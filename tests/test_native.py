"""The compiled helpers (neurorecon/_native.c) against the numpy paths they stand in for.

Both paths must give the same results bit for bit: the helpers only make `check` (and the
detector's close-pair features) faster. ``NEURORECON_NATIVE=0`` turns them off in a process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neurorecon import native
from neurorecon.io import read_swc
from neurorecon.morphology import spatial

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MORPHOLOGIES = SHARED / "morphologies"
WHOLE_BRAIN = MORPHOLOGIES / "mouse_wholebrain_axons"


def test_the_helpers_are_built_by_the_install():
    # `make test` installs with `pip install -e .`, which compiles them (setup.py; a C compiler
    # and Python's headers are on every machine of this project). Without them check is 2-3x
    # slower on large files, which is what docs/benchmarks.md measures.
    assert native.lib is not None, "neurorecon._native was not built: is a C compiler installed?"


def _numpy_only(monkeypatch):
    monkeypatch.setattr(native, "lib", None)


def _fields(n):
    return (n.ids, n.types, n.xyz, n.radius, n.parent_ids, n.extra, n.extra_names, n.header, n.parse_problems)


def _same_neuron(a, b):
    for x, y in zip(_fields(a), _fields(b)):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
            assert x.dtype == y.dtype
        else:
            assert x == y


@pytest.mark.parametrize("path", sorted(MORPHOLOGIES.rglob("*.swc")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_real_files_read_the_same_with_and_without_the_helper(path, monkeypatch):
    a = read_swc(path, strict=False)
    _numpy_only(monkeypatch)
    _same_neuron(a, read_swc(path, strict=False))


def _formatted(rng, k):
    """Numbers in the ways SWC writers print them."""
    v = rng.normal(0, 10.0 ** rng.integers(-3, 5, k), k)
    forms = ["%.17g", "%.3f", "%.9f", "%g", "%e", "%.0f", "%.1E", "%+.4f", "%.12f"]
    out = [forms[i % len(forms)] % x for i, x in enumerate(v)]
    out += ["-0", "0.", ".5", "-.25", "1e5", "1E-7", "+3", "123456789012345678", "0.1234567890123456789",
            "4.9e-324", "1.7976931348623157e308", "2.2250738585072014e-308", "9007199254740993"]
    return out


def test_numbers_parse_as_numpy_reads_them():
    rng = np.random.default_rng(7)
    tokens = _formatted(rng, 4000)
    tokens += ["0"] * (-len(tokens) % 7)
    rows = [" ".join(tokens[k:k + 7]) for k in range(0, len(tokens), 7)]
    data = ("# header\n" + "\n".join(rows) + "\n").encode()
    values, ncol = native.lib.parse_table(data)
    ours = np.frombuffer(values, np.float64).reshape(-1, ncol)
    ref = np.loadtxt(data.splitlines(), comments="#", ndmin=2)
    assert ncol == 7 and ours.shape == ref.shape
    assert ours.tobytes() == ref.tobytes()          # bit for bit, -0.0 and subnormals included


@pytest.mark.parametrize("body", [
    b"1 1 0 0 0 5 -1\n2 3 0,5 0 0 1 1\n",          # a comma decimal
    b"1 1 0 0 0 5 -1\n2 3 0x10 0 0 1 1\n",         # hex
    b"1 1 0 0 0 5 -1\n2 3 nan 0 0 1 1\n",          # not a number
    b"1 1 0 0 0 5 -1\n2 3 0 0 0 1\n",              # a missing column
    b"1 1 0 0 0 5 -1\n2 3 1e 0 0 1 1\n",           # a broken exponent
    b"1 1 0 0 0 5 -1\n2 3 1-2 0 0 1 1\n",
    b"1 1 0 0 0 5 -1 2 3 0 0 9 1 1",               # one line where two were meant
])
def test_unusual_files_are_left_to_the_python_reader(body, monkeypatch):
    """The helper declines anything it does not read exactly as numpy would; read_swc then gives the
    same result (or the same error) as without it."""
    if body.count(b"\n") > 0:
        assert native.lib.parse_table(body) is None
    got = _read_or_error(body)
    _numpy_only(monkeypatch)
    assert _read_or_error(body) == got


def _read_or_error(body):
    try:
        n = read_swc(body, strict=False)
    except Exception as e:  # noqa: BLE001 - the same failure is what is compared
        return type(e).__name__, str(e)
    return n.ids.tolist(), n.xyz.tolist(), n.parent_ids.tolist(), [p.line for p in n.parse_problems]


def test_line_endings_and_comments_read_as_numpy_does(monkeypatch):
    bodies = [b"1 1 0 0 0 5 -1\r\n2 3 1 2 3 1 1\r\n", b"1 1 0 0 0 5 -1\r2 3 1 2 3 1 1\r",
              b"  # lead\n1\t1 0 0 0 5 -1 # tail\n\n2 3 1 2 3 1 1", b"1 1 0 0 0 5 -1\n2 3 1 2 3 1 1 7 8\n"]
    got = [_read_or_error(b) for b in bodies]
    _numpy_only(monkeypatch)
    assert [_read_or_error(b) for b in bodies] == got
    assert got[0][0] == got[1][0] == got[2][0] == [1, 2]


def _canon(i, j, d):
    o = np.lexsort((j, i))
    return i[o], j[o], d[o]


def _both(monkeypatch, f, *args):
    a = _canon(*f(*args))
    monkeypatch.setattr(native, "lib", None)
    b = _canon(*f(*args))
    monkeypatch.undo()
    return a, b


@pytest.mark.parametrize("seed", range(6))
def test_pair_searches_match_the_numpy_grid(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    a = rng.random((2500, 3)) * rng.uniform(1, 80, 3)
    a[::50] = a[1::50]                              # duplicates: distance 0
    b = np.vstack([rng.random((1500, 3)) * 40, a[:20]])
    for r in (0.0, rng.uniform(0.1, 1), rng.uniform(1, 6)):
        for f, args in ((spatial.close_pairs_by_rows, (a, r)), (spatial.cross_pairs_by_rows, (a, b, r))):
            x, y = _both(monkeypatch, f, *args)
            for u, v in zip(x, y):
                np.testing.assert_array_equal(u, v)
            assert x[2].tobytes() == y[2].tobytes()


def test_pair_searches_on_a_whole_brain_neuron(monkeypatch):
    xyz = read_swc(WHOLE_BRAIN / "121987.swc").xyz
    x, y = _both(monkeypatch, spatial.close_pairs_by_rows, xyz, 3.0)
    assert len(x[0]) > 10_000
    assert all(np.array_equal(u, v) for u, v in zip(x, y))
    x, y = _both(monkeypatch, spatial.cross_pairs_by_rows, xyz[:9000], xyz[6000:], 2.0)
    assert all(np.array_equal(u, v) for u, v in zip(x, y))


def _cli(*args, native_on=True, cwd=None):
    env = dict(os.environ, NEURORECON_NATIVE="1" if native_on else "0")
    return subprocess.run([sys.executable, "-m", "neurorecon", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd)


def test_check_reports_the_same_findings_without_the_helper(tmp_path):
    files = [WHOLE_BRAIN / "121987.swc", *sorted((MORPHOLOGIES / "edge_cases").glob("*.swc"))[:12]]
    for on in (True, False):
        r = _cli("check", *files, "-q", "--json", tmp_path / f"{on}.json", native_on=on)
        assert r.returncode in (0, 1), r.stderr
    a, b = (json.loads((tmp_path / f"{on}.json").read_text()) for on in (True, False))
    assert [f["findings"] for f in a["files"]] == [f["findings"] for f in b["files"]]
    assert sum(len(f["findings"]) for f in a["files"]) > 0


def test_detect_scores_the_same_without_the_helper(tmp_path):
    """The detector's features use the close-pair search too: its scores must not move."""
    r = _cli("synth", "-o", tmp_path / "bench", "-n", "1", "--seed", "5", "--split", "heldout", "--size", "60", "60", "32")
    assert r.returncode == 0, r.stderr
    swc = next((tmp_path / "bench").glob("*.swc"))
    tif = swc.with_suffix(".tif")
    for on in (True, False):
        r = _cli("detect", swc, "--image", tif, "-o", tmp_path / f"{on}.csv", native_on=on)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "True.csv").read_text() == (tmp_path / "False.csv").read_text()
