"""SWC/ESWC reading and writing, Vaa3D point files and atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from neurorecon.io import (
    SwcParseError,
    format_swc,
    read_apo,
    read_marker,
    read_swc,
    write_apo,
    write_marker,
    write_swc,
)
from neurorecon.io.points import Point

MORPHOLOGIES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "morphologies"

SIMPLE = b"1 1 0 0 0 5 -1\n2 3 1.5 2 3 1 1\n3 3 2.5 2 3 0.5 2\n"


def _arrays(n):
    return n.ids.tolist(), n.types.tolist(), n.xyz.tolist(), n.radius.tolist(), n.parent_ids.tolist()


def _same(a, b):
    assert _arrays(a) == _arrays(b)


# ------------------------------------------------------------------------------ tolerant reading
def test_reads_simple_bytes_and_path(tmp_path):
    n = read_swc(SIMPLE)
    assert n.ids.tolist() == [1, 2, 3]
    assert n.types.tolist() == [1, 3, 3]
    assert n.xyz.tolist() == [[0, 0, 0], [1.5, 2, 3], [2.5, 2, 3]]
    assert n.radius.tolist() == [5, 1, 0.5]
    assert n.parent_ids.tolist() == [-1, 1, 2]
    assert n.parent.tolist() == [-1, 0, 1]
    p = tmp_path / "a.swc"
    p.write_bytes(SIMPLE)
    m = read_swc(p)
    _same(n, m)
    assert m.source == str(p)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(b"# header\n1 1 0 0 0 5 -1\n# middle comment\n2 3 1.5 2 3 1 1\n3 3 2.5 2 3 0.5 2\n# end\n", id="whole-line-comments"),
        pytest.param(b"1 1 0 0 0 5 -1 # soma\n2 3 1.5 2 3 1 1#no space\n3 3 2.5 2 3 0.5 2   # tip\n", id="trailing-comments"),
        pytest.param(b"\n\n1 1 0 0 0 5 -1\n\n   \n2 3 1.5 2 3 1 1\n\t\n3 3 2.5 2 3 0.5 2\n\n", id="blank-lines"),
        pytest.param(b"1 1 0 0 0 5 -1\r\n2 3 1.5 2 3 1 1\r\n3 3 2.5 2 3 0.5 2\r\n", id="crlf"),
        pytest.param(b"1\t1\t0\t0\t0\t5\t-1\n2  3\t 1.5   2    3 1 1\n3 \t3 2.5 2 3 0.5 2\n", id="tabs-and-spaces"),
        pytest.param(b"  1 1 0 0 0 5 -1   \n2 3 1.5 2 3 1 1 \t \n3 3 2.5 2 3 0.5 2  \n", id="leading-trailing-space"),
        pytest.param(b"1.0 1.0 0.0 0.0 0.0 5.0 -1.0\n2.0 3.0 1.5 2 3 1 1.0\n3.00 3.0 2.5 2 3 0.5 2.0\n", id="float-integers"),
        pytest.param(b"1,1,0,0,0,5,-1\n2,3,1.5,2,3,1,1\n3,3,2.5,2,3,0.5,2\n", id="comma-delimited"),
        pytest.param(b"1, 1, 0, 0, 0, 5, -1\n2, 3, 1.5, 2, 3, 1, 1\n3,3,2.5,2,3,0.5,2,\n", id="comma-space-delimited"),
        pytest.param(b"1 1 0 0 0 5 -1\n2 3 1,5 2 3 1 1\n3 3 2,5 2,0 3 0,5 2\n", id="comma-decimals"),
        pytest.param(b"\xef\xbb\xbf1 1 0 0 0 5 -1\n2 3 1.5 2 3 1 1\n3 3 2.5 2 3 0.5 2\n", id="utf8-bom"),
        pytest.param(b"1 1 0 0 0 5 -1\n2 3 1.5 2 3 1 1\n3 3 2.5 2 3 0.5 2", id="no-final-newline"),
    ],
)
def test_tolerant_formats_read_the_same(text):
    n = read_swc(text)
    _same(n, read_swc(SIMPLE))
    assert n.parse_problems == ()


def test_mixed_quirks_in_one_file():
    text = (
        b"# traced by hand\r\n"
        b"\r\n"
        b"1\t1 0 0 0 5 -1.0   # soma\r\n"
        b"  2 3 1,5 2 3 1 1\r\n"
        b"3,3,2.5,2,3,0.5,2\r\n"
    )
    _same(read_swc(text), read_swc(SIMPLE))


def test_comma_decimal_example_from_docs():
    n = read_swc(b"1 3 12,5 3,0 0,5 1,0 -1\n")
    assert n.xyz.tolist() == [[12.5, 3.0, 0.5]]
    assert n.radius.tolist() == [1.0]
    assert n.types.tolist() == [3]
    assert n.parent_ids.tolist() == [-1]


def test_unsorted_ids_and_forward_references_are_kept_in_file_order():
    text = b"5 3 0 0 4 1 4\n3 3 0 0 2 1 1\n1 1 0 0 0 5 -1\n4 3 0 0 3 1 3\n"
    n = read_swc(text)
    assert n.ids.tolist() == [5, 3, 1, 4]
    assert n.parent_ids.tolist() == [4, 1, -1, 3]
    # Parent pointers resolve to rows whatever the order: 5 -> row of 4, 3 -> row of 1 ...
    assert n.parent.tolist() == [3, 2, -1, 1]
    assert n.roots.tolist() == [2]


def test_nonstandard_types_are_kept():
    text = b"1 0 0 0 0 1 -1\n2 5 1 0 0 1 1\n3 6 2 0 0 1 2\n4 7 3 0 0 1 3\n5 12 4 0 0 1 4\n6 255 5 0 0 1 5\n"
    assert read_swc(text).types.tolist() == [0, 5, 6, 7, 12, 255]


def test_several_roots():
    text = b"1 1 0 0 0 5 -1\n2 3 0 0 1 1 1\n10 2 9 9 9 1 -1\n11 2 9 9 10 1 10\n20 3 -5 0 0 1 -1\n"
    n = read_swc(text)
    assert n.roots.tolist() == [0, 2, 4]
    assert n.parent.tolist() == [-1, 0, -1, 2, -1]


def test_negative_and_exponent_coordinates():
    n = read_swc(b"1 1 -1.5e2 2E-3 -0 0.25 -1\n")
    assert n.xyz.tolist() == [[-150.0, 0.002, 0.0]]
    assert n.radius.tolist() == [0.25]


# ------------------------------------------------------------------------------ ESWC
ESWC = (
    b"##n,type,x,y,z,radius,parent,seg_id,level,mode,timestamp,feature_value\n"
    b"1 1 0 0 0 5 -1 0 1 0 1700000000 0.5\n"
    b"2 3 1 2 3 1 1 1 2 0 1700000001 1.25\n"
    b"3 3 2 2 3 1 2 1 2 0 1700000002 -3\n"
)


def test_eswc_extra_columns_and_names():
    n = read_swc(ESWC)
    assert n.extra_names == ("seg_id", "level", "mode", "timestamp", "feature_value")
    assert n.extra.shape == (3, 5)
    assert n.extra[:, 3].tolist() == [1700000000, 1700000001, 1700000002]
    assert n.extra[:, 4].tolist() == [0.5, 1.25, -3]
    assert n.xyz[1].tolist() == [1, 2, 3]


def test_eswc_round_trip_keeps_extra_columns_and_names(tmp_path):
    n = read_swc(ESWC)
    out = write_swc(n, tmp_path / "out.eswc")
    text = out.read_text()
    assert "seg_id" in text and "feature_value" in text
    m = read_swc(out)
    _same(n, m)
    assert m.extra_names == n.extra_names
    assert np.array_equal(m.extra, n.extra)
    # and once more: the header is not duplicated on repeated round trips
    m2 = read_swc(format_swc(m).encode())
    assert np.array_equal(m2.extra, n.extra)
    assert m2.extra_names == n.extra_names
    assert format_swc(m2) == format_swc(m)


def test_extra_column_names_keep_their_case():
    n = read_swc(b"#n type x y z radius parent Seg_ID\n1 1 0 0 0 5 -1 3\n")
    assert n.extra_names == ("Seg_ID",)
    assert read_swc(format_swc(n).encode()).extra_names == ("Seg_ID",)


def test_eswc_without_header_gets_default_names():
    n = read_swc(b"1 1 0 0 0 5 -1 7 8\n2 3 1 0 0 1 1 9 10\n")
    assert n.extra_names == ("extra1", "extra2")
    assert n.extra.tolist() == [[7, 8], [9, 10]]


def test_ragged_extra_columns_round_trip():
    text = b"1 1 0 0 0 5 -1\n2 3 1 0 0 1 1 4 5\n3 3 2 0 0 1 2 6\n"
    n = read_swc(text)
    assert n.extra.shape == (3, 2)
    assert np.isnan(n.extra[0]).all() and np.isnan(n.extra[2, 1])
    m = read_swc(format_swc(n).encode())
    assert np.array_equal(m.extra, n.extra, equal_nan=True)


def test_interior_nan_extra_keeps_column_positions():
    from neurorecon.morphology import Neuron

    n = Neuron.from_arrays([1, 2], [1, 3], [[0, 0, 0], [1, 0, 0]], [1, 1], [-1, 1],
                           extra=[[np.nan, 2.0], [3.0, 4.0]], extra_names=("a", "b"))
    m = read_swc(format_swc(n).encode())
    assert np.array_equal(m.extra, n.extra, equal_nan=True)
    assert m.extra_names == ("a", "b")


def test_header_comments_survive_round_trip():
    n = read_swc(b"# ORIGINAL_SOURCE my tracer\n# SCALE 1 1 1\n1 1 0 0 0 5 -1\n")
    text = format_swc(n)
    assert "# ORIGINAL_SOURCE my tracer" in text
    assert "# SCALE 1 1 1" in text
    assert read_swc(text.encode()).header[:2] == n.header[:2]


# ------------------------------------------------------------------------------ strict errors
@pytest.mark.parametrize(
    "bad_line, words",
    [
        pytest.param(b"2 3 1 1 1 1", ["expected 7 columns", "found 6"], id="too-few-columns"),
        pytest.param(b"2 3 1 abc 1 1 1", ["y", "not a number", "abc"], id="non-number"),
        pytest.param(b"2.5 3 1 1 1 1 1", ["n", "integer"], id="non-integral-id"),
        pytest.param(b"2 3 1 1 1 1 1.5", ["parent", "integer"], id="non-integral-parent"),
        pytest.param(b"2 3.2 1 1 1 1 1", ["type", "integer"], id="non-integral-type"),
        pytest.param(b"2 3 nan 1 1 1 1", ["non-finite"], id="nan-coordinate"),
        pytest.param(b"2 3 1 inf 1 1 1", ["non-finite"], id="inf-coordinate"),
        pytest.param(b"2 3 1,5,2 1 1 1 1", ["ambiguous"], id="ambiguous-commas"),
        pytest.param(b"2 3 12,5 3,0 0,5 1,0", ["ambiguous"], id="ambiguous-comma-decimals-short"),
        pytest.param(b"2, 3, 12,5, 3,0, 0,5, 1,0, 1", ["ambiguous"], id="comma-decimal-and-delimiter"),
    ],
)
def test_strict_mode_names_file_and_line(tmp_path, bad_line, words):
    text = b"# comment\n1 1 0 0 0 5 -1\n" + bad_line + b"\n3 3 0 0 2 1 1\n"
    path = tmp_path / "bad.swc"
    path.write_bytes(text)
    with pytest.raises(SwcParseError) as ei:
        read_swc(path)
    err = ei.value
    assert err.line == 3
    assert err.source == str(path)
    msg = str(err)
    assert msg.startswith(f"{path}:3:")
    for w in words:
        assert w in msg
    # non-strict: the rest loads and the problem is listed
    n = read_swc(path, strict=False)
    assert n.ids.tolist() == [1, 3]
    assert len(n.parse_problems) == 1
    assert n.parse_problems[0].line == 3
    assert n.parse_problems[0].text.strip() == bad_line.decode()


def test_strict_error_on_first_bad_line_and_non_strict_lists_all():
    text = b"1 1 0 0 0 5 -1\nfoo bar\n2 3 0 0 1 1 1\n3 3 x 0 1 1 2\n4 3 0 0 2 1 2\n"
    with pytest.raises(SwcParseError) as ei:
        read_swc(text, name="mine.swc")
    assert ei.value.line == 2
    assert str(ei.value).startswith("mine.swc:2:")
    n = read_swc(text, strict=False)
    assert n.ids.tolist() == [1, 2, 4]
    assert [p.line for p in n.parse_problems] == [2, 4]
    assert all(p.message for p in n.parse_problems)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\n\n   \n", id="blank"),
        pytest.param(b"# only comments\n# here\n", id="comments-only"),
        pytest.param(b"\x00\x01\x02\x03binary\xff\xfe" * 20, id="binary-with-nul"),
        pytest.param(bytes(range(1, 256)) * 4, id="binary-no-nul"),
        pytest.param(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", id="jpeg-magic"),
    ],
)
def test_files_without_nodes_raise_parse_error(tmp_path, data, recwarn):
    path = tmp_path / "x.swc"
    path.write_bytes(data)
    with pytest.raises(SwcParseError) as ei:
        read_swc(path)
    assert str(path) in str(ei.value)
    assert ei.value.line >= 1
    with pytest.raises(SwcParseError):
        read_swc(path, strict=False)
    # no stray numpy warnings either (they would leak into CLI output)
    assert not [w for w in recwarn if "loadtxt" in str(w.message)]


def test_missing_file_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        read_swc(tmp_path / "nope.swc")


def test_structurally_broken_files_still_load():
    dup = read_swc(b"1 1 0 0 0 5 -1\n2 3 0 0 1 1 1\n2 3 0 0 9 1 1\n")
    assert dup.ids.tolist() == [1, 2, 2]
    missing = read_swc(b"1 1 0 0 0 5 -1\n2 3 0 0 1 1 77\n")
    assert missing.parent_ids.tolist() == [-1, 77]
    assert missing.parent.tolist() == [-1, -1]
    cyc = read_swc(b"1 1 0 0 0 5 -1\n2 3 0 0 1 1 4\n3 3 0 0 2 1 2\n4 3 0 0 3 1 3\n5 3 0 0 4 1 5\n")
    assert cyc.in_cycle.tolist() == [False, True, True, True, True]
    for n in (dup, missing, cyc):
        assert n.parse_problems == ()


# ------------------------------------------------------------------------------ writing
def test_write_read_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    from neurorecon.morphology import Neuron

    k = 50
    n = Neuron.from_arrays(
        ids=rng.permutation(np.arange(1, 200))[:k],
        types=rng.integers(0, 11, k),
        xyz=rng.normal(scale=1e3, size=(k, 3)) * rng.choice([1, 1e-9, 1e9], size=(k, 1)),
        radius=rng.random(k) / 7,
        parent_ids=rng.integers(-1, 200, k),
    )
    m = read_swc(write_swc(n, tmp_path / "r.swc"))
    assert m.ids.tolist() == n.ids.tolist()
    assert m.types.tolist() == n.types.tolist()
    assert m.parent_ids.tolist() == n.parent_ids.tolist()
    assert np.array_equal(m.xyz, n.xyz)
    assert np.array_equal(m.radius, n.radius)


def test_write_swc_refuses_to_overwrite_when_asked(tmp_path):
    p = tmp_path / "a.swc"
    p.write_text("keep me\n")
    with pytest.raises(FileExistsError):
        write_swc(read_swc(SIMPLE), p, overwrite=False)
    assert p.read_text() == "keep me\n"
    write_swc(read_swc(SIMPLE), p)
    _same(read_swc(p), read_swc(SIMPLE))


def test_write_is_atomic_when_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "t.swc"
    target.write_bytes(SIMPLE)
    bigger = read_swc(ESWC)

    def boom(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        write_swc(bigger, target)
    assert target.read_bytes() == SIMPLE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.swc"]


def test_write_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "t.swc"
    target.write_bytes(SIMPLE)

    def boom(fd):
        raise OSError("fsync failed")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="fsync failed"):
        write_swc(read_swc(ESWC), target)
    assert target.read_bytes() == SIMPLE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.swc"]


def test_write_creates_missing_folders(tmp_path):
    out = write_swc(read_swc(SIMPLE), tmp_path / "a" / "b" / "c.swc")
    _same(read_swc(out), read_swc(SIMPLE))


# ------------------------------------------------------------------------------ APO / marker
POINTS = [
    Point(1.5, -2.25, 3.0, name="cut:missing_parent", comment="node 8, parent id 99", color=(255, 0, 255), radius=2.0),
    Point(0.1, 0.2, 1e-7, name="", comment="", color=(0, 128, 255), radius=1.0),
    Point(-1234.5678, 9e5, -0.0, name='say "hi"', comment="multi\nline", color=(1, 2, 3), radius=0.5),
]


def test_apo_round_trip(tmp_path):
    path = write_apo(POINTS, tmp_path / "m.apo")
    back = read_apo(path)
    assert len(back) == len(POINTS)
    for a, b in zip(POINTS, back):
        assert (b.x, b.y, b.z) == (a.x, a.y, a.z)
        assert b.color == a.color
        assert b.radius == pytest.approx(a.radius, rel=1e-3)
    assert back[0].name == "cut:missing_parent"
    assert back[0].comment == "node 8; parent id 99"  # commas cannot survive inside a CSV field
    assert "\n" not in back[2].comment


def test_apo_column_order_is_z_x_y(tmp_path):
    path = write_apo([Point(1.0, 2.0, 3.0)], tmp_path / "one.apo")
    row = [l for l in path.read_text().splitlines() if not l.startswith("#")][0].split(",")
    assert [float(v) for v in row[4:7]] == [3.0, 1.0, 2.0]


def test_marker_round_trip(tmp_path):
    path = write_marker(POINTS, tmp_path / "m.marker")
    back = read_marker(path)
    assert len(back) == len(POINTS)
    for a, b in zip(POINTS, back):
        assert (b.x, b.y, b.z, b.radius) == (a.x, a.y, a.z, a.radius)
        assert b.color == a.color
    assert back[0].name == "cut:missing_parent"


def test_read_vaa3d_written_apo(tmp_path):
    text = (
        "##n,orderinfo,name,comment,z,x,y, pixmax,intensity,sdev,volsize,mass,,,, color_r,color_g,color_b\n"
        "1, 0,  , , 44.000,123.000,456.000,0.000,0.000,0.000,314.159,0.000,,,,255,0,0\n"
        "2, 0, soma,note, 1,2,3,0,0,0,0,0,,,,0,255,0\n"
    )
    p = tmp_path / "v.apo"
    p.write_text(text)
    pts = read_apo(p)
    assert [(q.x, q.y, q.z) for q in pts] == [(123.0, 456.0, 44.0), (2.0, 3.0, 1.0)]
    assert pts[0].radius == pytest.approx(4.2172, rel=1e-3)
    assert pts[1].name == "soma" and pts[1].color == (0, 255, 0)


def test_bad_point_file_names_line(tmp_path):
    from neurorecon.io.points import PointFileError

    p = tmp_path / "bad.marker"
    p.write_text("##x,y,z\n1,2,3\nfoo,2,3\n")
    with pytest.raises(PointFileError, match=r"bad.marker:3"):
        read_marker(p)


# ------------------------------------------------------------------------------ MorphIO agreement
def _real_files():
    if not MORPHOLOGIES.is_dir():
        return []
    wanted = ["allen_v1/Pvalb_469628681_m.swc", "cortical_cng/DS3_100101_wL.CNG.swc",
              "neuromorpho_varied/granule.swc", "neuromorpho_varied/bipolar.swc", "edge_cases/simple.swc",
              "edge_cases/three_point_soma.swc"]
    return [MORPHOLOGIES / w for w in wanted if (MORPHOLOGIES / w).is_file()]


def _key(p):
    return tuple(np.asarray(p, dtype=np.float32).tolist())


@pytest.mark.parametrize("path", _real_files() or [None], ids=lambda p: p.name if p else "absent")
def test_agrees_with_morphio(path):
    if path is None:
        pytest.skip(f"{MORPHOLOGIES} not present")
    morphio = pytest.importorskip("morphio")
    morphio.set_maximum_warnings(0)
    n = read_swc(path)
    m = morphio.Morphology(str(path))
    soma = n.types == 1
    # Soma points
    assert sorted(map(_key, m.soma.points)) == sorted(map(_key, n.xyz[soma]))
    # Every non-soma point with its radius (MorphIO stores float32 diameters and repeats each
    # section's first point from its parent section, hence the sets).
    theirs = {(_key(p), float(d) / 2) for s in m.iter() for p, d in zip(s.points, s.diameters)}
    ours = {(_key(n.xyz[i]), float(np.float32(n.radius[i]))) for i in np.flatnonzero(~soma)}
    assert theirs == ours
    # Parent relations between non-soma points, as (child xyz, parent xyz) edges.
    medges = {(_key(b), _key(a)) for s in m.iter() for a, b in zip(s.points[:-1], s.points[1:]) if _key(a) != _key(b)}
    has = (n.parent >= 0) & ~soma
    has &= ~soma[np.maximum(n.parent, 0)]
    oedges = {(_key(n.xyz[c]), _key(n.xyz[n.parent[c]])) for c in np.flatnonzero(has)}
    oedges = {e for e in oedges if e[0] != e[1]}
    assert medges == oedges
    # Neurites attached to the soma: MorphIO root sections start where our soma children are.
    starts = {_key(s.points[0]) for s in m.root_sections}
    first = {_key(n.xyz[c]) for c in np.flatnonzero(~soma & (n.parent >= 0)) if soma[n.parent[c]]}
    first |= {_key(n.xyz[c]) for c in np.flatnonzero(~soma & (n.parent < 0))}
    assert starts == first


@pytest.mark.parametrize("path", _real_files()[:3] or [None], ids=lambda p: p.name if p else "absent")
def test_real_files_round_trip(tmp_path, path):
    if path is None:
        pytest.skip(f"{MORPHOLOGIES} not present")
    n = read_swc(path)
    m = read_swc(write_swc(n, tmp_path / path.name))
    _same(n, m)
    assert np.array_equal(m.extra, n.extra)
