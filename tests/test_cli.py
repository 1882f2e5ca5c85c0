"""The command line: exit codes, messages, JSON/HTML reports and the fix command."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurorecon.cli import app
from neurorecon.io import read_apo, read_swc

CLEAN = "1 1 0 0 0 5 -1\n" + "".join(f"{k} 3 0 0 {5 + 2 * (k - 2)} 1 {k - 1}\n" for k in range(2, 8))
ERROR = CLEAN + "8 3 0 0 17 1 99\n"  # missing parent: an error
WARNING = CLEAN + "8 3 0 0 57 1 7\n"  # a long edge and a z jump: warnings only
GARBAGE = bytes(range(256)) * 4

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "clean.swc").write_text(CLEAN)
    (d / "error.swc").write_text(ERROR)
    (d / "warning.swc").write_text(WARNING)
    return d


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _check_schema(doc: dict):
    assert set(doc) == {"files"}
    for f in doc["files"]:
        assert set(f) == {"path", "readable", "error", "n_nodes", "findings"}
        assert isinstance(f["path"], str)
        assert isinstance(f["readable"], bool)
        assert f["error"] is None or isinstance(f["error"], str)
        assert isinstance(f["n_nodes"], int)
        for g in f["findings"]:
            assert set(g) == {"check", "severity", "node_ids", "xyz", "message", "fix", "fix_text"}
            assert g["severity"] in ("error", "warning", "info")
            assert all(isinstance(i, int) for i in g["node_ids"])
            assert all(len(p) == 3 for p in g["xyz"])
            assert isinstance(g["message"], str) and g["message"]
            assert g["fix"] is None or isinstance(g["fix"], dict) and "action" in g["fix"]
            assert (g["fix_text"] is None) == (g["fix"] is None) and (g["fix"] is None or isinstance(g["fix_text"], str))


# ------------------------------------------------------------------------------ check: exit codes
def test_check_clean_file_exits_0(files):
    r = run("check", files / "clean.swc")
    assert r.exit_code == 0, r.output
    assert "clean.swc" in r.output


def test_check_file_with_error_exits_1(files):
    r = run("check", files / "error.swc")
    assert r.exit_code == 1
    assert "missing_parent" in r.output


def test_fail_on_warning_changes_exit_code(files):
    assert run("check", files / "warning.swc").exit_code == 0
    assert run("check", files / "warning.swc", "--fail-on", "warning").exit_code == 1
    assert run("check", files / "clean.swc", "--fail-on", "warning").exit_code == 0
    assert run("check", files / "clean.swc", "--fail-on", "info").exit_code == 0


def test_severity_override_in_config_changes_exit_code(files, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[severity]\nlong_edge = "error"\n')
    assert run("check", files / "warning.swc", "--config", cfg).exit_code == 1
    cfg.write_text('disable = ["missing_parent", "fragment"]\n')
    assert run("check", files / "error.swc", "--config", cfg).exit_code == 0


def test_set_threshold_changes_findings(files, tmp_path):
    out = tmp_path / "r.json"
    assert run("check", files / "warning.swc", "--json", out).exit_code == 0
    assert "z_jump" in {g["check"] for g in _json(out)["files"][0]["findings"]}
    run("check", files / "warning.swc", "--json", out, "--set", "z_jump_distance=100")
    assert "z_jump" not in {g["check"] for g in _json(out)["files"][0]["findings"]}


def test_only_and_disable(files, tmp_path):
    out = tmp_path / "r.json"
    assert run("check", files / "error.swc", "--only", "z_jump", "--json", out).exit_code == 0
    assert _json(out)["files"][0]["findings"] == []
    r = run("check", files / "error.swc", "--disable", "missing_parent", "--json", out)
    assert "missing_parent" not in {g["check"] for g in _json(out)["files"][0]["findings"]}
    assert r.exit_code == 1  # the fragment is still an error


# ------------------------------------------------------------------------------ check: usage errors
def _usage_error(r, *words):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    for w in words:
        assert w in r.output


def test_missing_path_is_a_usage_error(tmp_path):
    _usage_error(run("check", tmp_path / "nope.swc"), "nope.swc", "no such file")


def test_empty_folder_and_unmatched_glob(tmp_path):
    (tmp_path / "empty").mkdir()
    _usage_error(run("check", tmp_path / "empty"), "no .swc")
    _usage_error(run("check", str(tmp_path / "*.swc")), "matches no file")


def test_bad_set_key(files):
    _usage_error(run("check", files / "clean.swc", "--set", "no_such_threshold=3"), "no_such_threshold")
    _usage_error(run("check", files / "clean.swc", "--set", "z_jump_distance=abc"), "z_jump_distance")
    _usage_error(run("check", files / "clean.swc", "--set", "novalue"), "KEY=VALUE")


def test_bad_toml_config(files, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[thresholds\nlong_edge_factor = ")
    _usage_error(run("check", files / "clean.swc", "--config", cfg), "bad.toml", "TOML")
    cfg.write_text("[thresholds]\nnot_a_threshold = 3\n")
    _usage_error(run("check", files / "clean.swc", "--config", cfg), "not_a_threshold")
    cfg.write_text("[oops]\n")
    _usage_error(run("check", files / "clean.swc", "--config", cfg), "oops")
    _usage_error(run("check", files / "clean.swc", "--config", tmp_path / "absent.toml"), "absent.toml")


def test_bad_check_id_and_severity(files):
    _usage_error(run("check", files / "clean.swc", "--disable", "no_such_check"), "no_such_check")
    _usage_error(run("check", files / "clean.swc", "--fail-on", "catastrophe"), "catastrophe")


# ------------------------------------------------------------------------------ check: JSON
def test_json_schema_and_content(files, tmp_path):
    out = tmp_path / "rep" / "report.json"
    r = run("check", files / "clean.swc", files / "error.swc", "--json", out)
    assert r.exit_code == 1
    doc = _json(out)
    _check_schema(doc)
    by_name = {Path(f["path"]).name: f for f in doc["files"]}
    assert [Path(f["path"]).name for f in doc["files"]] == ["clean.swc", "error.swc"]
    assert by_name["clean.swc"] == {"path": str(files / "clean.swc"), "readable": True, "error": None, "n_nodes": 7, "findings": []}
    err = by_name["error.swc"]
    assert err["n_nodes"] == 8
    mp = [g for g in err["findings"] if g["check"] == "missing_parent"]
    assert len(mp) == 1
    assert mp[0]["severity"] == "error"
    assert mp[0]["node_ids"] == [8]
    assert mp[0]["xyz"] == [[0.0, 0.0, 17.0]]
    assert mp[0]["fix"] == {"action": "cut", "node_id": 8}


def test_unreadable_file_reported_and_batch_continues(files, tmp_path):
    (files / "garbage.swc").write_bytes(GARBAGE)
    (files / "zeros.swc").write_bytes(b"\x00" * 100)
    out = tmp_path / "r.json"
    r = run("check", files, "--json", out)
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    doc = _json(out)
    _check_schema(doc)
    by_name = {Path(f["path"]).name: f for f in doc["files"]}
    assert set(by_name) == {"clean.swc", "error.swc", "warning.swc", "garbage.swc", "zeros.swc"}
    for bad in ("garbage.swc", "zeros.swc"):
        assert by_name[bad]["readable"] is False
        assert bad in by_name[bad]["error"]
        assert by_name[bad]["findings"] == [] and by_name[bad]["n_nodes"] == 0
    assert by_name["clean.swc"]["readable"] is True and by_name["clean.swc"]["n_nodes"] == 7
    assert by_name["warning.swc"]["findings"]


def test_unreadable_file_alone_exits_1(tmp_path):
    p = tmp_path / "g.swc"
    p.write_bytes(GARBAGE)
    r = run("check", p)
    assert r.exit_code == 1
    assert "unreadable" in r.output


def test_parse_problems_reported_as_findings(tmp_path):
    p = tmp_path / "p.swc"
    p.write_text(CLEAN + "9 3 oops 0 0 1 7\n")
    out = tmp_path / "r.json"
    r = run("check", p, "--json", out)
    assert r.exit_code == 1
    f = _json(out)["files"][0]
    assert f["readable"] is True and f["n_nodes"] == 7
    pe = [g for g in f["findings"] if g["check"] == "parse_error"]
    assert len(pe) == 1 and "line 8" in pe[0]["message"] and "oops" in pe[0]["message"]


def test_folders_and_globs_expand(files, tmp_path):
    sub = files / "deeper" / "still"
    sub.mkdir(parents=True)
    (sub / "nested.SWC").write_text(CLEAN)
    (sub / "notes.txt").write_text("not a neuron")
    out = tmp_path / "r.json"
    run("check", files, "--json", out)
    names = [Path(f["path"]).name for f in _json(out)["files"]]
    assert sorted(names) == ["clean.swc", "error.swc", "nested.SWC", "warning.swc"]

    run("check", str(files / "*r*.swc"), "--json", out)
    assert sorted(Path(f["path"]).name for f in _json(out)["files"]) == ["error.swc", "warning.swc"]

    run("check", str(files / "**" / "*.SWC"), "--json", out)
    assert [Path(f["path"]).name for f in _json(out)["files"]] == ["nested.SWC"]

    # a file named twice (directly and through its folder) is checked once
    run("check", files / "clean.swc", files, "--json", out)
    paths = [f["path"] for f in _json(out)["files"]]
    assert len(paths) == len(set(paths)) == 4


def test_parallel_jobs_give_the_same_json(files, tmp_path):
    for k in range(4):
        (files / f"extra{k}.swc").write_text(ERROR if k % 2 else CLEAN)
    (files / "garbage.swc").write_bytes(GARBAGE)
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    r1 = run("check", files, "-j", "1", "--json", one, "-q")
    r2 = run("check", files, "-j", "2", "--json", two, "-q")
    assert r1.exit_code == r2.exit_code == 1
    assert len(_json(one)["files"]) == 8
    assert one.read_text() == two.read_text()


def test_quiet_prints_only_the_summary(files):
    loud = run("check", files / "error.swc")
    quiet = run("check", files / "error.swc", "-q")
    assert "names no node" in loud.output
    assert "names no node" not in quiet.output
    assert "summary" in quiet.output


# ------------------------------------------------------------------------------ check: HTML
def test_html_report(files, tmp_path):
    (files / "garbage.swc").write_bytes(GARBAGE)
    out = tmp_path / "html"
    r = run("check", files, "--html", out)
    assert r.exit_code == 1
    index = (out / "index.html").read_text()
    pages = sorted(p.name for p in out.glob("*.html") if p.name != "index.html")
    assert pages == ["clean.swc.html", "error.swc.html", "garbage.swc.html", "warning.swc.html"]
    for name in pages:
        assert f"href='{name}'" in index
    for name in ("clean.swc.html", "error.swc.html", "warning.swc.html"):
        page = (out / name).read_text()
        m = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
        assert m, name
        assert base64.b64decode(m.group(1)).startswith(b"\x89PNG\r\n\x1a\n")
    err = (out / "error.swc.html").read_text()
    assert "missing_parent" in err and "names no node" in err
    assert "unreadable" in (out / "garbage.swc.html").read_text()
    assert "unreadable" in index


def test_html_pages_for_same_named_files_do_not_collide(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "n.swc").write_text(CLEAN)
    out = tmp_path / "html"
    assert run("check", tmp_path / "a", tmp_path / "b", "--html", out).exit_code == 0
    pages = sorted(p.name for p in out.glob("*.html"))
    assert pages == ["index.html", "n.swc.2.html", "n.swc.html"]


# ------------------------------------------------------------------------------ fix
MESSY = ERROR + "7 3 0 0 15 1 6\n"


def test_fix_writes_swc_log_and_apo(tmp_path):
    src = tmp_path / "m.swc"
    src.write_text(MESSY)
    out = tmp_path / "out" / "fixed.swc"
    r = run("fix", src, "-o", out)
    assert r.exit_code == 0, r.output
    assert src.read_text() == MESSY
    log = json.loads((tmp_path / "out" / "fixed.edits.json").read_text())
    assert [e["action"] for e in log["edits"]] == ["drop_duplicate", "cut", "bridge"]
    assert log["n_nodes_in"] == 9 and log["n_nodes_out"] == 8
    apo = read_apo(tmp_path / "out" / "fixed.apo")
    assert len(apo) == 3
    fixed = read_swc(out)
    assert fixed.n_nodes == 8 and len(fixed.roots) == 1
    for word in ("drop_duplicate", "bridge", "edit log", "review markers"):
        assert word in r.output
    # the fixed file checks clean
    assert run("check", out).exit_code == 0


def test_fix_dry_run_writes_nothing(tmp_path):
    src = tmp_path / "m.swc"
    src.write_text(MESSY)
    r = run("fix", src, "--dry-run", "-o", tmp_path / "o.swc")
    assert r.exit_code == 0
    assert "planned" in r.output and "bridge" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.swc"]
    r = run("fix", src, "--dry-run")
    assert r.exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.swc"]
    assert src.read_text() == MESSY


def test_fix_refuses_to_overwrite_input(tmp_path):
    src = tmp_path / "m.swc"
    src.write_text(MESSY)
    r = run("fix", src, "-o", src)
    _usage_error(r, "overwrite")
    assert src.read_text() == MESSY
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.swc"]
    r = run("fix", src, "-o", src, "--overwrite")
    assert r.exit_code == 0
    assert read_swc(src).n_nodes == 8


def test_fix_refuses_existing_output(tmp_path):
    src = tmp_path / "m.swc"
    src.write_text(MESSY)
    (tmp_path / "o.apo").write_text("keep")
    _usage_error(run("fix", src, "-o", tmp_path / "o.swc"), "o.apo")
    assert (tmp_path / "o.apo").read_text() == "keep"
    assert not (tmp_path / "o.swc").exists()


def test_fix_usage_errors(tmp_path):
    src = tmp_path / "m.swc"
    src.write_text(MESSY)
    _usage_error(run("fix", src), "-o")
    _usage_error(run("fix", tmp_path / "nope.swc", "-o", tmp_path / "o.swc"), "nope.swc")
    bad = tmp_path / "bad.swc"
    bad.write_bytes(GARBAGE)
    _usage_error(run("fix", bad, "-o", tmp_path / "o.swc"), "bad.swc")
    _usage_error(run("fix", src, "-o", tmp_path / "o.swc", "--set", "bogus=1"), "bogus")
    assert not (tmp_path / "o.swc").exists()


def test_fix_clean_file_says_nothing_to_fix(tmp_path):
    src = tmp_path / "c.swc"
    src.write_text(CLEAN)
    r = run("fix", src, "-o", tmp_path / "o.swc")
    assert r.exit_code == 0
    assert "nothing to fix" in r.output
    assert json.loads((tmp_path / "o.edits.json").read_text())["edits"] == []


def test_checks_lists_every_check():
    from neurorecon.qc.checks import CHECKS

    r = run("checks")
    assert r.exit_code == 0
    for cid in CHECKS:
        assert cid in r.output


# ------------------------------------------------------------------------------ real subprocess
def _subprocess(*args, cwd):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "neurorecon", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_subprocess_check_and_fix(files, tmp_path):
    (files / "garbage.swc").write_bytes(GARBAGE)
    out = tmp_path / "r.json"
    p = _subprocess("check", "in", "--json", out, "-j", "2", "-q", cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    doc = _json(out)
    _check_schema(doc)
    assert [Path(f["path"]).name for f in doc["files"]] == ["clean.swc", "error.swc", "garbage.swc", "warning.swc"]
    assert [f["readable"] for f in doc["files"]] == [True, True, False, True]

    p = _subprocess("check", "in/clean.swc", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Warning" not in p.stderr and "Traceback" not in p.stderr

    p = _subprocess("check", "in/missing.swc", cwd=tmp_path)
    assert p.returncode == 2
    assert "no such file" in p.stderr and "Traceback" not in p.stderr

    p = _subprocess("fix", "in/error.swc", "-o", "in/error.swc", cwd=tmp_path)
    assert p.returncode == 2
    assert "overwrite" in p.stderr and "Traceback" not in p.stderr

    p = _subprocess("fix", "in/error.swc", "-o", "fixed.swc", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "fixed.swc").exists() and (tmp_path / "fixed.edits.json").exists() and (tmp_path / "fixed.apo").exists()
    assert _subprocess("check", "fixed.swc", cwd=tmp_path).returncode == 0


def test_subprocess_empty_file_has_clean_stderr(tmp_path):
    (tmp_path / "empty.swc").write_text("")
    p = _subprocess("check", "empty.swc", cwd=tmp_path)
    assert p.returncode == 1
    assert "unreadable" in p.stdout
    assert "Warning" not in p.stderr and "Traceback" not in p.stderr
