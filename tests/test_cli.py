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
WARNING = CLEAN + "8 3 0 0 100 1 7\n"  # a long edge and a z jump (85, beyond 30 x the own z step of 2): warnings only
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


def test_json_dash_prints_the_report_instead_of_the_tables(files, tmp_path):
    r = run("check", files / "clean.swc", files / "error.swc", "--json", "-")
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    _check_schema(doc)
    run("check", files / "clean.swc", files / "error.swc", "--json", tmp_path / "r.json")
    assert doc == _json(tmp_path / "r.json")
    assert not Path("-").exists()


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


# ------------------------------------------------------------------------------ write safety (subprocess runs)
def _one_line_error(p, *words):
    """Exit 2 with exactly one line on stderr, naming ``words``; nothing done (stdout empty)."""
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("neurorecon: error: "), p.stderr
    for w in words:
        assert w in p.stderr, p.stderr
    assert p.stdout == ""


def test_check_writable_cases(tmp_path, readonly):
    from neurorecon.io.atomic import WriteError, check_writable

    assert check_writable(tmp_path / "new" / "deeper" / "o.csv") == tmp_path / "new" / "deeper" / "o.csv"
    assert not (tmp_path / "new").exists()                     # checking creates nothing
    (tmp_path / "f").write_text("x")
    with pytest.raises(WriteError, match=r"f: exists; pass --overwrite"):
        check_writable(tmp_path / "f")
    assert check_writable(tmp_path / "f", overwrite=True)
    with pytest.raises(WriteError, match=r"is not a folder"):
        check_writable(tmp_path / "f" / "o.csv")
    with pytest.raises(WriteError, match=r"exists and is not a folder"):
        check_writable(tmp_path / "f", folder=True)
    assert check_writable(tmp_path, folder=True)               # an existing folder may be written into
    (tmp_path / "link").symlink_to(tmp_path / "f")
    with pytest.raises(WriteError, match="is an input"):       # the input, under another name
        check_writable(tmp_path / "link", overwrite=True, inputs=[tmp_path / "f"])
    with pytest.raises(WriteError, match=r"cannot write in .*\((Permission denied|Read-only file system)\)"):
        check_writable(readonly / "sub" / "o.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "link", "ro"]    # no probe file left


def test_temporary_files_are_removed_on_error_and_on_interrupt(tmp_path):
    from neurorecon.io import atomic

    with pytest.raises(RuntimeError):
        with atomic.temporary_beside(tmp_path / "a.txt") as tmp:
            assert tmp.exists() and tmp.parent == tmp_path
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    with atomic.temporary_beside(tmp_path / "b.zarr", folder=True) as tmp:
        (tmp / "0").mkdir()
        atomic.remove_pending()                                # what the Ctrl-C handler does
        assert not tmp.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    """Two benchmark crops of different neurons (real morphologies, rendered), crop 0 scored."""
    d = tmp_path_factory.mktemp("crops")
    p = _subprocess("synth", "-o", "bench", "-n", "2", "--seed", "5", cwd=d)
    assert p.returncode == 0, p.stderr
    p = _subprocess("detect", "bench/crop_0000.swc", "--image", "bench/crop_0000.tif", "-o", "s0.csv", cwd=d)
    assert p.returncode == 0, p.stderr
    return d


def test_unwritable_outputs_fail_before_the_work(files, crops, readonly, tmp_path):
    ro = readonly
    run_ = lambda *a: _subprocess(*a, cwd=tmp_path)  # noqa: E731
    _one_line_error(run_("check", files / "error.swc", "--json", ro / "r.json"), "cannot write in", str(ro))
    _one_line_error(run_("check", files / "error.swc", "--html", ro / "html"), "cannot write in")
    _one_line_error(run_("fix", files / "error.swc", "-o", ro / "f.swc"), "cannot write in")
    _one_line_error(run_("synth", "-o", ro / "bench", "-n", "1"), "cannot write in")
    _one_line_error(run_("detect", crops / "bench/crop_0000.swc", "--image", crops / "bench/crop_0000.tif",
                         "-o", ro / "s.csv"), "cannot write in")
    _one_line_error(run_("evaluate", crops / "s0.csv", crops / "bench/crop_0000.labels.csv", "--json", ro / "m.json"),
                    "cannot write in")
    _one_line_error(run_("convert", crops / "bench/crop_0000.tif", "-o", ro / "v.zarr"), "cannot write in")
    _one_line_error(run_("train", "-o", ro / "model", "--n-train", "4", "--n-valid", "2", "--n-heldout", "0"),
                    "cannot write in")
    _one_line_error(run_("apply", crops / "bench/crop_0000.swc", crops / "s0.csv", "-o", ro / "f.swc"), "cannot write in")
    _one_line_error(run_("review", crops / "bench/crop_0000.swc", "--image", crops / "bench/crop_0000.tif",
                         "--review", ro / "r.json"), "cannot write in")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "ro") == ["in"]      # nothing written anywhere
    assert not (ro / "r.json").exists() and not (ro / "bench").exists()


def test_outputs_never_replace_inputs_or_existing_files(files, crops, tmp_path):
    trace, tif = crops / "bench/crop_0000.swc", crops / "bench/crop_0000.tif"
    before = trace.read_bytes()
    _one_line_error(_subprocess("detect", trace, "--image", tif, "-o", trace, "--overwrite", cwd=tmp_path),
                    "is an input of this command")
    assert trace.read_bytes() == before
    _one_line_error(_subprocess("check", files / "error.swc", "--json", files / "error.swc", cwd=tmp_path),
                    "is an input of this command")
    assert (files / "error.swc").read_text() == ERROR
    _one_line_error(_subprocess("review", trace, "--image", tif, "--review", trace, cwd=tmp_path),
                    "is an input of this command")
    assert trace.read_bytes() == before
    (tmp_path / "taken.csv").write_text("mine")
    _one_line_error(_subprocess("detect", trace, "--image", tif, "-o", tmp_path / "taken.csv", cwd=tmp_path),
                    "exists; pass --overwrite")
    assert (tmp_path / "taken.csv").read_text() == "mine"
    _one_line_error(_subprocess("detect", trace, "--image", tif, "-o", tmp_path, cwd=tmp_path), "is a folder")
    (tmp_path / "afile").write_text("")
    _one_line_error(_subprocess("synth", "-o", tmp_path / "afile", "-n", "1", cwd=tmp_path), "is not a folder")


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_follow_the_umask(files, umask, tmp_path):
    work = tmp_path / "work"
    work.mkdir()

    def sub(*args):
        cmd = ["sh", "-c", f'umask {umask:03o} && exec "$0" "$@"', sys.executable, "-m", "neurorecon", *map(str, args)]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=work, timeout=300)

    assert sub("synth", "-o", "b", "-n", "1", "--size", "40", "40", "24").returncode == 0
    assert sub("synth", "-o", "z", "-n", "1", "--size", "40", "40", "24", "--image-format", "zarr").returncode == 0
    assert sub("detect", "b/crop_0000.swc", "--image", "b/crop_0000.tif", "-o", "s.csv").returncode == 0
    assert sub("fix", files / "error.swc", "-o", "f.swc").returncode == 0
    assert sub("check", files, "--json", "r.json", "--html", "h").returncode == 1
    assert sub("convert", "b/crop_0000.tif", "-o", "v.zarr").returncode == 0
    written = [p for p in work.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"crop_0000.tif", "crop_0000.swc", "crop_0000.labels.csv", "crop_0000.json",
                                         "s.csv", "f.swc", "f.edits.json", "f.apo", "r.json", "index.html"}
    for p in written:
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p
    for p in (work / "z" / "crop_0000.zarr", work / "v.zarr"):
        assert p.stat().st_mode & 0o777 == 0o777 & ~umask, p
    assert not [p for p in work.rglob("*.tmp")]


# ------------------------------------------------------------------------------ Ctrl-C (subprocess runs)
def _interrupt_after(seconds, *args, cwd, group=False):
    """Start the CLI and send SIGINT ``seconds`` after its handler is in place (if it still runs);
    returns (process, sent, stdout, stderr).

    The clock starts when the child has imported neurorecon._interrupt (``-X importtime`` says so
    on stderr; those lines are left out of the stderr returned), not at the exec: the
    interpreter's own start-up before any of the package runs takes 20 ms on an idle machine and
    more than 0.1 s on a loaded one, and no program can handle a signal that comes before it
    runs. 0 s is then during the CLI's imports (typer, click, rich)."""
    import signal
    import threading
    import time

    # SIGINT back to its default in the child: the test process may have it ignored at the fork
    # (see test_review_browser.default_sigint), and a command started so ignores Ctrl-C by design.
    p = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "neurorecon", *map(str, args)], cwd=cwd,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=group,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ready, lines = threading.Event(), []

    def read():      # all of stderr, always: a full pipe would stop the child
        for line in p.stderr:
            if line.startswith("import time:"):
                if line.rstrip().endswith("neurorecon._interrupt"):
                    ready.set()
            else:
                lines.append(line)
        ready.set()

    out = []
    readers = [threading.Thread(target=read, daemon=True),
               threading.Thread(target=lambda: out.append(p.stdout.read()), daemon=True)]
    for r in readers:
        r.start()
    try:
        assert ready.wait(60), "the child never imported neurorecon._interrupt"
        time.sleep(seconds)
        sent = p.poll() is None
        if sent:
            os.killpg(p.pid, signal.SIGINT) if group else p.send_signal(signal.SIGINT)
        p.wait(timeout=120)
        for r in readers:
            r.join(timeout=30)
        assert not any(r.is_alive() for r in readers), "stdout/stderr still open: a process outlived the command"
    except BaseException:       # never leave the child (or its workers) running
        try:
            os.killpg(p.pid, signal.SIGKILL) if group else p.kill()
        except ProcessLookupError:
            pass
        p.wait()
        raise
    return p, sent, out[0], "".join(lines)


def _check_interrupted(p, sent, err, complete_rc=0):
    """Either interrupted (130, one line) or, where it had finished (or was finishing) when the
    signal came (a loaded machine can oversleep the delay), a complete, clean run that exits as
    the command does when it finishes (``complete_rc``)."""
    if sent and p.returncode == 130:
        assert err == "neurorecon: interrupted\n", err
    else:
        assert p.returncode == complete_rc and "Traceback" not in err, (p.returncode, err)


@pytest.mark.parametrize("seconds", [0.0, 0.1, 0.5, 1.0, 2.0])
def test_ctrl_c_during_detect_exits_130_with_one_line(crops, seconds, tmp_path):
    p, sent, out, err = _interrupt_after(seconds, "detect", crops / "bench/crop_0000.swc", "--image",
                                         crops / "bench/crop_0000.tif", "-o", tmp_path / "s.csv", cwd=tmp_path)
    _check_interrupted(p, sent, err)
    if p.returncode == 130:
        assert sorted(x.name for x in tmp_path.iterdir()) == []      # no partial SCORES.csv, no temp file
    else:
        assert (tmp_path / "s.csv").read_text().startswith("node_id,p_error")


@pytest.mark.parametrize("seconds", [0.5, 1.5])
def test_ctrl_c_during_convert_exits_130_and_the_rerun_resumes(seconds, tmp_path):
    from neurorecon.io.volume import open_volume, write_tiff

    import numpy as np

    image = np.random.default_rng(3).integers(0, 250, (96, 256, 256)).astype(np.uint8)
    write_tiff(tmp_path / "a.tif", image, (0.5, 0.5, 1.0))
    args = ("convert", tmp_path / "a.tif", "-o", tmp_path / "o.zarr", "--chunks", "16", "32", "32")
    p, sent, out, err = _interrupt_after(seconds, *args, cwd=tmp_path)
    _check_interrupted(p, sent, err)
    again = _subprocess(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert np.array_equal(open_volume(tmp_path / "o.zarr").read((0, 0, 0), image.shape), image)


# ------------------------------------------------------------------------------ evaluate (subprocess runs)
def test_evaluate_refuses_labels_of_another_neuron(crops):
    import csv

    ids = {name: {int(r["node_id"]) for r in csv.DictReader(open(crops / name))}
           for name in ("s0.csv", "bench/crop_0001.labels.csv")}
    shared = len(ids["s0.csv"] & ids["bench/crop_0001.labels.csv"])
    only_s = len(ids["s0.csv"] - ids["bench/crop_0001.labels.csv"])
    only_l = len(ids["bench/crop_0001.labels.csv"] - ids["s0.csv"])
    assert only_s + only_l > 0          # two neurons: their node ids differ
    p = _subprocess("evaluate", "s0.csv", "bench/crop_0001.labels.csv", cwd=crops)
    _one_line_error(p, f"{shared} node id(s) in both, {only_s} only in the scores, {only_l} only in the labels",
                    "same trace")


def test_evaluate_json_writes_a_file_or_prints(crops, tmp_path):
    p = _subprocess("evaluate", crops / "s0.csv", crops / "bench/crop_0000.labels.csv", "--json", tmp_path / "m.json",
                    cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    m = _json(tmp_path / "m.json")
    assert "AUC" in p.stdout and f"{m['auc']:.4f}" in p.stdout
    assert m["n"] == len((crops / "bench/crop_0000.labels.csv").read_text().splitlines()) - 1
    p = _subprocess("evaluate", crops / "s0.csv", crops / "bench/crop_0000.labels.csv", "--json", "-", cwd=tmp_path)
    assert p.returncode == 0 and json.loads(p.stdout) == m


# ------------------------------------------------------------------------------ one vocabulary
def test_version():
    from neurorecon import __version__

    p = _subprocess("--version", cwd=".")
    assert p.returncode == 0 and p.stdout == f"neurorecon {__version__}\n"


def test_every_argument_and_option_has_help_and_required_ones_say_so():
    import click

    from neurorecon.cli import command

    group = command()
    for name, cmd in group.commands.items():
        ctx = click.Context(cmd, info_name=name)
        assert cmd.help and cmd.epilog and cmd.epilog.startswith("Exit codes: 0 "), name
        for param in cmd.params:
            record = param.get_help_record(ctx)
            assert record is not None and record[1].strip(), f"{name} {param.name}: no help"
            if param.required:
                assert "[required]" in record[1], f"{name} {param.name}"
            if isinstance(param.type, click.Choice):   # choices are listed
                assert all(c in record[0] for c in param.type.choices), f"{name} {param.name}"
    p = _subprocess("fix", "--help", cwd=".")
    assert "SWC/ESWC file to fix" in p.stdout and "required unless --dry-run" in p.stdout


def test_main_outputs_are_dash_o_everywhere():
    from neurorecon.cli import command

    for name, cmd in command().commands.items():
        opts = {o for param in cmd.params for o in getattr(param, "opts", [])}
        if name in ("check", "evaluate", "review", "view", "checks"):
            assert "-o" not in opts, name          # reports and viewers: --json/--html/--review
        else:
            assert {"-o", "--out"} <= opts, name


def test_docs_cli_md_is_up_to_date():
    from neurorecon.clidoc import render

    doc = Path(__file__).parent.parent / "docs" / "cli.md"
    assert doc.read_text() == render(), "docs/cli.md is stale: run python -m neurorecon.clidoc > docs/cli.md"


def test_readme_examples_use_options_that_exist():
    """Every `neurorecon CMD ...` line in the README parses as that command's arguments."""
    import shlex

    import click

    from neurorecon.cli import command

    group = command()
    lines = [ln.split("#")[0] for ln in (Path(__file__).parent.parent / "README.md").read_text().splitlines()
             if ln.startswith(".venv/bin/neurorecon ")]
    assert len(lines) >= 8
    for line in lines:
        words = shlex.split(line)[1:]
        cmd = group.commands[words[0]]
        try:
            cmd.make_context(words[0], words[1:], resilient_parsing=False)
        except click.UsageError as e:
            pytest.fail(f"README: {line.strip()}: {e}")


def test_ctrl_c_to_the_process_group_stops_check_and_its_workers(tmp_path):
    """A terminal's Ctrl-C reaches every process of the group: the worker processes of `check -j 2`
    say nothing, and none outlives the command."""
    import signal
    import time

    real = Path(__file__).parent.parent.parent / "shared" / "data" / "morphologies"
    assert len(list(real.rglob("*.swc"))) >= 30, real
    p, sent, out, err = _interrupt_after(1.0, "check", real, "-j", "2", "-q", "--json", tmp_path / "r.json",
                                         cwd=tmp_path, group=True)
    try:
        # Finished, `check` exits 1 here: edge_cases/ holds files with error-level defects.
        _check_interrupted(p, sent, err, complete_rc=1)
        if p.returncode == 1:
            assert len(json.loads((tmp_path / "r.json").read_text())["files"]) == len(list(real.rglob("*.swc")))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _group_alive(p.pid):
            time.sleep(0.1)
        assert not _group_alive(p.pid), "a worker outlived the command"
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _group_alive(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":     # a zombie has exited; only its reaping is left
            return True
    return False
