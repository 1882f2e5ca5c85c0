"""The review loop without a browser: flags and their order, the REVIEW.json model (decisions,
undo, resume, atomic writes, trace check), `apply`, and the CLI's answers to bad input."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neurorecon.cli import app
from neurorecon.io import read_apo, read_swc
from neurorecon.viewer.apply import apply_review
from neurorecon.viewer.flags import Flag, ScoresError, collect_flags, order_flags, read_scores
from neurorecon.viewer.session import IDLE_SECONDS, ReviewError, ReviewSession

runner = CliRunner()


def start(sample, path=None):
    neuron = read_swc(sample.trace)
    return ReviewSession.start(path or sample.folder / "review.json", sample.trace,
                               lambda: collect_flags(neuron, sample.scores))


def scripted_review(session):
    """accept, accept, accept, reject, mark (with a note): the order of FLAG_KEYS."""
    for d in ("accept", "accept", "accept", "reject"):
        session.decide(d)
    session.decide("error", "fibre continues: trace on")


# ------------------------------------------------------------------------------ flags
def test_flags_in_review_order(review_sample):
    flags = collect_flags(read_swc(review_sample.trace), review_sample.scores)
    assert [f.key for f in flags] == list(review_sample.flag_keys)
    assert [f.source for f in flags] == ["rule"] + ["detector"] * 4
    assert [f.p for f in flags[1:]] == [0.95, 0.9, 0.7, 0.6]
    assert flags[0].fix == {"action": "relabel", "node_ids": [17], "type": 3}
    assert flags[0].node_ids == (17, 16, 18)            # both type_change findings and the detector: one site
    assert flags[0].p == 0.97 and "detector: p(error) = 0.97" in flags[0].reason
    assert flags[1].fix == {"action": "move", "node_ids": [9, 10, 11],
                            "xyz": [[24.0, 20.0, 10.0], [26.0, 20.0, 10.0], [28.0, 20.0, 10.0]]}
    assert flags[1].xyz == (26.0, 23.5, 10.0)          # where the node is, from the trace
    assert flags[2].fix == {"action": "prune", "node_id": 20} and flags[2].node_ids == (20, 21, 22)
    assert flags[4].fix is None and "trace stops" in flags[4].reason


def test_threshold_and_rules_switch(review_sample):
    n = read_swc(review_sample.trace)
    high = collect_flags(n, review_sample.scores, threshold=0.9, rules=False)
    # Without the rule findings the detector's wrong type at 17 is a site of its own.
    assert [(f.key, f.node_ids) for f in high] == [("detector:17", (17,)), ("detector:10", (10,)), ("detector:20", (20,))]
    assert high[1].fix == {"action": "move", "node_id": 10, "xyz": [26.0, 20.0, 10.0]}   # one node: a plain move
    assert [f.key for f in collect_flags(n, review_sample.scores, threshold=0.2, rules=False)][-1] == "detector:8"


# ------------------------------------------------------------------------------ error sites
def _assert_partition(node_flags, sites):
    """Every node flag lies in exactly one site, and each site's fix stays on its own nodes."""
    count = {}
    for f in sites:
        for i in set(f.node_ids):
            count[i] = count.get(i, 0) + 1
    det = [f.node_id for f in node_flags if f.source == "detector"]
    assert all(count.get(i) == 1 for i in det), [i for i in det if count.get(i) != 1]
    for f in sites:
        if f.source == "detector" and f.fix:
            named = f.fix["node_ids"] if "node_ids" in f.fix else [f.fix["node_id"]]
            assert set(named) <= set(f.node_ids), (f.key, f.fix)


def test_sites_group_the_sample_node_flags(review_sample):
    n = read_swc(review_sample.trace)
    nodes = collect_flags(n, review_sample.scores, sites=False)
    sites = collect_flags(n, review_sample.scores)
    assert len(nodes) == review_sample.n_node_flags and len(sites) == len(review_sample.flag_keys)
    _assert_partition(nodes, sites)
    spur = sites[2]
    # The spur's tip had a move of its own: the site proposes one prune at the base, never both.
    assert {f.fix["action"] for f in nodes if f.node_id in spur.node_ids} == {"prune", "move"}
    assert spur.fix["action"] == "prune" and "off_signal_xy below it" in spur.reason


def test_sites_on_injected_errors(tmp_path):
    """A synthetic crop with injected errors, scored by the shipped detector: the node flags of an
    error become one site, every node flag is in exactly one, and each site has one kind of fix."""
    import csv

    r = runner.invoke(app, ["synth", "--out", str(tmp_path), "-n", "2", "--seed", "3"])
    assert r.exit_code == 0, r.output
    crop = tmp_path / "crop_0001"
    r = runner.invoke(app, ["detect", f"{crop}.swc", "--image", f"{crop}.tif", "--out", f"{crop}.scores.csv"])
    assert r.exit_code == 0, r.output
    n = read_swc(f"{crop}.swc")
    nodes = collect_flags(n, f"{crop}.scores.csv", rules=False, sites=False)
    sites = collect_flags(n, f"{crop}.scores.csv", rules=False)
    errors = json.loads(crop.with_suffix(".json").read_text())["errors"]
    assert len(errors) >= 20 and len(nodes) >= 3 * len(errors)         # many node flags per error ...
    assert len(sites) <= 1.5 * len(errors)                              # ... about one site each
    _assert_partition(nodes, sites)
    bad = {int(row["node_id"]) for row in csv.DictReader(open(f"{crop}.labels.csv")) if row["label"] == "1"}
    on_errors = [f for f in sites if bad & set(f.node_ids)]
    assert len(on_errors) >= 0.75 * len(sites)
    moves = [f for f in sites if f.fix and f.fix["action"] == "move"]
    assert all(f.check.endswith(("off_signal_z", "off_signal_xy")) for f in moves)


def test_order_rule_errors_detector_by_p_then_warnings():
    mk = lambda key, src, sev, p=None: Flag(key, 1, (0.0, 0.0, 0.0), src, "c", "", p, sev, None)  # noqa: E731
    flags = [mk("info", "rule", "info"), mk("warn", "rule", "warning"), mk("d.5", "detector", "warning", 0.5),
             mk("err", "rule", "error"), mk("d.9", "detector", "warning", 0.9), mk("err2", "rule", "error")]
    assert [f.key for f in order_flags(flags)] == ["err", "err2", "d.9", "d.5", "warn", "info"]


def test_flag_round_trips_through_json(review_sample):
    for f in collect_flags(read_swc(review_sample.trace), review_sample.scores):
        assert Flag.from_dict(json.loads(json.dumps(f.to_dict()))) == f


@pytest.mark.parametrize("text, message", [
    ("", "empty file"),
    ("node,p\n1,0.5\n", "missing column(s) node_id, p_error"),
    ("node_id,p_error\n1,high\n", "line 2: p_error 'high' is not a number"),
    ("node_id,p_error\n1,0.5\n2,1.5\n", "line 3: p_error '1.5' is not in [0, 1]"),
    ("node_id,p_error\n1.5,0.5\n", "node_id '1.5' is not an integer"),
    ("node_id,p_error\n1,0.5\n1,0.6\n", "node id 1 is scored twice"),
    ("node_id,p_error\n99,0.5\n", "line 2: node 99 is not in the trace"),
    ("node_id,p_error,fix\n1,0.9,{oops\n", "line 2: the fix is not valid JSON"),
    ('node_id,p_error,fix\n1,0.9,"[1,2]"\n', 'line 2: the fix must be a JSON object with an "action"'),
    ("node_id,p_error,reason\n1,0.9\n", "line 2: 2 fields, the header has 3"),
])
def test_malformed_scores_are_refused_clearly(review_sample, tmp_path, text, message):
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    with pytest.raises(ScoresError) as e:
        read_scores(bad, read_swc(review_sample.trace))
    assert message in str(e.value) and str(bad) in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------ REVIEW.json
def test_new_review_written_at_once_with_trace_hash_and_flags(review_sample):
    s = start(review_sample)
    data = json.loads(s.path.read_text())
    assert data["format"] == "neurorecon-review" and data["version"] == 2
    assert data["trace"]["path"] == str(review_sample.trace) and len(data["trace"]["sha256"]) == 64
    assert [f["key"] for f in data["flags"]] == list(review_sample.flag_keys)
    assert {"node_id", "xyz", "source", "check", "reason", "p", "fix", "decision"} <= set(data["flags"][2])
    assert data["events"] == [] and s.current == 0


class Clock:
    """A hand-wound clock for the decision timer: tests that do not depend on the machine's speed."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_decisions_undo_and_timing_recorded_in_order(review_sample):
    s = start(review_sample)
    s.clock = clock = Clock()
    s.go(0)
    clock.t += 4.0
    s.decide("accept")
    s.decide("reject")
    e = s.decide("error")
    assert e.note == "marked by reviewer"
    assert s.current == 3
    u = s.undo()
    assert (u.decision, u.undoes, u.flag) == ("undo", 3, "detector:20") and s.current == 2
    s.decide("accept", "looks right")
    data = json.loads(s.path.read_text())       # on disk after every step
    ev = data["events"]
    assert [(x["seq"], x["flag"], x["decision"]) for x in ev] == [
        (1, "type_change:17", "accept"), (2, "detector:10", "reject"), (3, "detector:20", "error"),
        (4, "detector:20", "undo"), (5, "detector:20", "accept")]
    assert ev[0]["active_seconds"] == ev[0]["wall_seconds"] == 4.0
    assert ev[4]["note"] == "looks right" and "T" in ev[0]["time"]
    assert [f["decision"] for f in data["flags"]] == ["accept", "reject", "accept", None, None]
    assert s.counts() == {"accept": 2, "reject": 1, "error": 0, "undecided": 2}


def test_idle_time_does_not_count_as_active(review_sample):
    """Input keeps the clock running; a pause of more than IDLE_SECONDS (a hidden page, a coffee)
    counts IDLE_SECONDS. Wall time counts everything."""
    s = start(review_sample)
    s.clock = clock = Clock()
    s.go(0)
    for step in (3.0, 2.0, 600.0, 1.5):          # pan, zoom, away for 10 minutes, back: a key
        clock.t += step
        s.touch()
    e = s.decide("accept")
    assert (e.active_seconds, e.wall_seconds) == (3.0 + 2.0 + IDLE_SECONDS + 1.5, 606.5)
    clock.t += 7.0                                 # the next flag's clock starts at the move
    e = s.decide("reject")
    assert (e.active_seconds, e.wall_seconds) == (7.0, 7.0)
    summary = s.summary()
    assert summary["median_seconds"] == (26.5 + 7.0) / 2 and summary["total_active_seconds"] == 33.5
    assert summary["median_wall_seconds"] == (606.5 + 7.0) / 2


def test_undo_with_nothing_decided_and_redecide_replaces(review_sample):
    s = start(review_sample)
    assert s.undo() is None
    s.decide("reject")
    s.go(0)
    s.decide("accept")                # a later decision on the same flag replaces the earlier one
    assert s.decision(0) == "accept" and s.counts()["undecided"] == 4
    s.undo()
    assert s.decision(0) == "reject"


def test_resume_at_first_undecided_keeps_decisions(review_sample):
    s = start(review_sample)
    for d in ("accept", "reject", "accept"):
        s.decide(d)
    s.go(4)
    s.decide("reject")              # flag 5 decided, flag 4 not
    again = start(review_sample)
    assert again.current == 3
    assert [again.decision(k) for k in range(5)] == ["accept", "reject", "accept", None, "reject"]
    assert again.events == s.events


def test_decide_moves_on_and_wraps_to_skipped_flags(review_sample):
    s = start(review_sample)
    s.go(4)
    s.decide("reject")
    assert s.current == 0
    for _ in range(4):
        s.decide("reject")
    assert s.counts()["undecided"] == 0 and s.first_undecided() is None


def test_write_is_atomic(review_sample, monkeypatch):
    s = start(review_sample)
    s.decide("accept")
    before = s.path.read_text()

    def crash(*a):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        s.decide("reject")
    assert s.path.read_text() == before                      # old content intact
    assert sorted(p.name for p in s.path.parent.glob(".*")) == []   # no temporary file left


def test_review_of_another_trace_is_refused(review_sample):
    s = start(review_sample)
    s.decide("accept")
    review_sample.trace.write_text(review_sample.trace.read_text().replace("34.0 20.0", "34.0 21.0"))
    with pytest.raises(ReviewError, match="the trace differs"):
        start(review_sample)
    assert json.loads(s.path.read_text())["events"][0]["decision"] == "accept"   # untouched


@pytest.mark.parametrize("content, message", [
    ("{not json", "invalid JSON"),
    ('{"format": "other"}', "not a review file"),
    ('{"format": "neurorecon-review", "version": 7}', "version 7; this neurorecon reads versions 1, 2"),
    ('{"format": "neurorecon-review", "version": 1, "trace": {}}', "malformed review file"),
    ('{"format": "neurorecon-review", "version": 2, "trace": {}}', "malformed review file"),
])
def test_malformed_review_file(review_sample, content, message):
    p = review_sample.folder / "bad.json"
    p.write_text(content)
    with pytest.raises(ReviewError, match=message):
        ReviewSession.load(p, review_sample.trace)


def test_inconsistent_events_are_malformed(review_sample):
    s = start(review_sample)
    s.decide("accept")
    data = json.loads(s.path.read_text())
    data["events"].append({"seq": 2, "flag": "nope", "node_id": 1, "decision": "accept", "note": "", "time": "t",
                           "active_seconds": 1, "wall_seconds": 1})
    s.path.write_text(json.dumps(data))
    with pytest.raises(ReviewError, match="unknown flag"):
        ReviewSession.load(s.path)


# ------------------------------------------------------------------------------ apply
def test_apply_carries_out_accepted_fixes_only(review_sample, tmp_path):
    s = start(review_sample)
    scripted_review(s)
    res = apply_review(review_sample.trace, s.path, tmp_path / "fixed.swc")
    assert (tmp_path / "fixed.swc").read_text() == review_sample.expected_fixed()
    assert [(e.action, e.check) for e in res.edits] == [("relabel", "type_change")] + [
        ("move", "detector.off_signal_xy")] * 3 + [("prune", "detector.spur")]
    assert res.summary["flags"] == 5
    assert (res.summary["accept"], res.summary["reject"], res.summary["error"]) == (3, 1, 1)
    log = json.loads((tmp_path / "fixed.edits.json").read_text())
    assert log["review"] == str(s.path) and log["n_nodes_in"] == 22 and log["n_nodes_out"] == 19
    assert log["marked"][0]["node_id"] == 19 and log["marked"][0]["note"] == "fibre continues: trace on"
    apo = read_apo(tmp_path / "fixed.apo")
    assert [p.name for p in apo] == ["relabel:type_change"] + ["move:detector.off_signal_xy"] * 3 + [
        "prune:detector.spur", "error:detector.early_stop"]
    assert (apo[-1].x, apo[-1].y, apo[-1].z) == (18.0, 30.0, 10.0) and "trace on" in apo[-1].comment


def test_apply_refuses_contradictory_decisions(review_sample, tmp_path):
    """Node flags (as version 1 made them): the spur's prune and its tip's move both accepted."""
    n = read_swc(review_sample.trace)
    flags = [f for f in collect_flags(n, review_sample.scores, rules=False, sites=False)
             if f.key in ("detector:20", "detector:22")]
    s = ReviewSession.start(review_sample.folder / "r.json", review_sample.trace, lambda: flags)
    s.decide("accept")
    s.decide("accept")
    with pytest.raises(ReviewError) as e:
        apply_review(review_sample.trace, s.path, tmp_path / "out.swc")
    assert "detector:20" in str(e.value) and "detector:22" in str(e.value) and "node 22" in str(e.value)
    assert not (tmp_path / "out.swc").exists()
    r = runner.invoke(app, ["apply", str(review_sample.trace), str(s.path), "-o", str(tmp_path / "out.swc")])
    assert r.exit_code == 2 and "contradict each other" in r.output and r.output.count("\n") == 1, r.output
    s.go(1)
    s.decide("reject")                                 # one of them taken back: apply goes through
    res = apply_review(review_sample.trace, s.path, tmp_path / "out.swc")
    assert [e.action for e in res.edits] == ["prune"] and 22 not in res.neuron.ids


def test_apply_reports_a_fix_whose_nodes_are_gone(review_sample, tmp_path):
    """Two prunes of one branch agree (both remove the nodes): the inner one is skipped, and said."""
    n = read_swc(review_sample.trace)
    prune21 = Flag("spur:21", 21, (30.0, 15.0, 10.0), "rule", "spur", "", None, "warning",
                   {"action": "prune", "node_id": 21})
    flags = [f for f in collect_flags(n, review_sample.scores, rules=False) if f.key == "detector:20"] + [prune21]
    s = ReviewSession.start(review_sample.folder / "r.json", review_sample.trace, lambda: flags)
    s.decide("accept")
    s.decide("accept")
    res = apply_review(review_sample.trace, s.path, tmp_path / "out.swc")
    assert [e.action for e in res.edits] == ["prune"] and [f.key for f, _ in res.skipped] == ["spur:21"]
    r = runner.invoke(app, ["apply", str(review_sample.trace), str(s.path), "-o", str(tmp_path / "o2.swc")])
    assert r.exit_code == 0 and "skipped: spur:21: the nodes it names are gone" in r.output, r.output


# ------------------------------------------------------------------------------ version 1 files
def _v1(tmp_path, name):
    """A copy of a version-1 fixture (tests/data/review) with its trace."""
    import shutil

    src = Path(__file__).parent / "data" / "review"
    for f in ("v1_trace.swc", name):
        shutil.copy(src / f, tmp_path / f)
    return tmp_path / "v1_trace.swc", tmp_path / name


def test_version_1_review_loads_and_applies(tmp_path):
    trace, review = _v1(tmp_path, "v1_review.json")
    s = ReviewSession.load(review, trace)
    assert s.upgraded_from == 1 and len(s.flags) == 6 and s.counts()["undecided"] == 0
    assert all(e.active_seconds is None and e.wall_seconds >= 0 for e in s.events)
    out = tmp_path / "fixed.swc"
    r = runner.invoke(app, ["apply", str(trace), str(review), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "flags seen: 6; accepted 3, rejected 2, marked as error 1" in r.output
    assert "no active time in this version-1 review" in r.output
    n = read_swc(trace)
    fixed = read_swc(out)
    assert fixed.ids.tolist() == [i for i in n.ids.tolist() if i < 20]          # the spur pruned
    assert fixed.types[fixed.index_of([17])][0] == 3
    assert fixed.xyz[fixed.index_of([10])][0].tolist() == [26.0, 20.0, 10.0]
    s.go(0)
    s.decide("reject")                                 # resumed and saved: written as version 2
    data = json.loads(review.read_text())
    assert data["version"] == 2 and data["upgraded_from"] == 1
    assert data["events"][0]["active_seconds"] is None and data["events"][0]["wall_seconds"] >= 0
    assert data["events"][-1]["active_seconds"] >= 0 and "wall_seconds" in data["events"][-1]
    assert ReviewSession.load(review, trace).upgraded_from == 1


def test_version_1_contradiction_is_refused(tmp_path):
    """The review of issue 14: version-1 apply moved node 21 and then pruned it, silently."""
    trace, review = _v1(tmp_path, "v1_conflict_review.json")
    r = runner.invoke(app, ["apply", str(trace), str(review), "-o", str(tmp_path / "out.swc")])
    assert r.exit_code == 2, r.output
    assert "detector:20" in r.output and "detector:21" in r.output and "node 21" in r.output
    assert r.output.startswith("neurorecon: error: ") and r.output.count("\n") == 1


# ------------------------------------------------------------------------------ CLI
def test_cli_apply_prints_summary(review_sample, tmp_path):
    s = start(review_sample)
    scripted_review(s)
    out = tmp_path / "fixed.swc"
    r = runner.invoke(app, ["apply", str(review_sample.trace), str(s.path), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "flags seen: 5; accepted 3, rejected 1, marked as error 1, undecided 0" in r.output
    assert "active time per decision: median" in r.output and "5 edit(s) applied" in r.output
    assert out.read_text() == review_sample.expected_fixed()
    r = runner.invoke(app, ["apply", str(review_sample.trace), str(s.path), "-o", str(out)])
    assert r.exit_code == 2 and "pass --overwrite" in r.output
    r = runner.invoke(app, ["apply", str(review_sample.trace), str(s.path), "-o", str(out), "--overwrite"])
    assert r.exit_code == 0


def test_cli_apply_bad_input(review_sample, tmp_path):
    s = start(review_sample)
    t, out = str(review_sample.trace), str(tmp_path / "o.swc")
    cases = [([t, str(tmp_path / "none.json")], "no such review file"),
             ([str(tmp_path / "none.swc"), str(s.path)], "no such trace")]
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    cases.append(([t, str(bad)], "not a review file"))
    other = tmp_path / "other.swc"
    other.write_text("1 1 0 0 0 1 -1\n")
    cases.append(([str(other), str(s.path)], "the trace differs"))
    cases.append(([t, str(s.path)], "is the input"))          # -o names the trace itself
    for args, message in cases:
        r = runner.invoke(app, ["apply", *args, "-o", t if message == "is the input" else out])
        assert r.exit_code == 2, (args, r.output)
        assert message in r.output and "Traceback" not in r.output, r.output
        assert r.output.startswith("neurorecon: error: ") and r.output.count("\n") == 1


def test_cli_review_bad_input_exits_cleanly(review_sample, tmp_path):
    base = ["review", str(review_sample.trace), "--image", str(review_sample.image)]
    bad = tmp_path / "bad.csv"
    bad.write_text("node_id,p_error\n1,nan?\n")
    r = runner.invoke(app, base + ["--scores", str(bad), "--review", str(tmp_path / "r.json")])
    assert r.exit_code == 2 and "is not a number" in r.output and not (tmp_path / "r.json").exists()
    r = runner.invoke(app, base + ["--scores", str(tmp_path / "none.csv")])
    assert r.exit_code == 2 and "no such scores file" in r.output
    r = runner.invoke(app, ["review", str(tmp_path / "none.swc"), "--image", str(review_sample.image)])
    assert r.exit_code == 2 and "no such trace" in r.output
    other = tmp_path / "other.swc"
    other.write_text("1 1 0 0 0 1 -1\n")
    start(review_sample)
    r = runner.invoke(app, ["review", str(other), "--image", str(review_sample.image),
                            "--review", str(review_sample.folder / "review.json")])
    assert r.exit_code == 2 and "the trace differs" in r.output, r.output


# ------------------------------------------------------------------------------ layers
def test_big_trace_layers_are_quick():
    """A 100k-node trace: skeleton vertices and encoding are vectorised (well under a second)."""
    from neurorecon.morphology.neuron import Neuron
    from neurorecon.viewer import layers

    m = 100_000
    rng = np.random.default_rng(0)
    parent_ids = np.concatenate([[-1], rng.integers(1, np.arange(2, m + 1))])
    n = Neuron.from_arrays(np.arange(1, m + 1), rng.integers(1, 5, m), rng.uniform(0, 500, (m, 3)), np.ones(m), parent_ids)
    t0 = time.perf_counter()
    src = layers.SwcSkeletonSource(n)
    data = src.get_skeleton(1).encode(src)
    assert time.perf_counter() - t0 < 2.0
    assert len(data) > m * 2 * 12 and src.get_skeleton(2) is None
    pos = src._pos.reshape(m, 2, 3)
    assert np.allclose(pos[5, 0], n.xyz[5]) and np.allclose(pos[5, 1], n.xyz[n.parent[5]])
    assert np.allclose(pos[0, 0], pos[0, 1])                  # the root: a zero-length edge


def test_view_builds_every_layer(review_sample, tmp_path):
    from neurorecon.io.volume import open_volume
    from neurorecon.viewer.review import start_server
    from neurorecon.viewer.view import open_view

    start_server(0)
    labels = np.zeros((4, 5, 6), np.int16)
    labels[1:3, 1:4, 2:5] = 7
    img = open_volume(str(review_sample.image))
    viewer = open_view([img], [review_sample.trace], open_volume(labels, voxel_size=(1, 1, 1)))
    st = viewer.state
    assert [(layer.name, layer.type) for layer in st.layers] == [
        ("image.tif", "image"), ("<array>", "segmentation"), ("trace.swc", "segmentation")]
    assert list(st.dimensions.names) == ["x", "y", "z"]
    assert st.layers["image.tif"].source[0].url.startswith("python://")        # served by this process
    from neurorecon.viewer import layers

    local = layers.image_layer(img).source[0].url
    assert local.volume_type == "image" and local.data_type == "uint8"
    seg = layers.segmentation_layer(open_volume(labels, voxel_size=(1, 1, 1))).source[0].url
    assert seg.volume_type == "segmentation" and seg.data_type == "uint32"   # int16 labels served unsigned
    assert seg.data[1:3, 1:4, 2:5].tolist() == labels[1:3, 1:4, 2:5].tolist()
    assert list(local.dimensions.names) == ["z", "y", "x"] and np.allclose(local.dimensions.scales, [1e-6, 0.5e-6, 0.5e-6])  # SI metres


def test_flag_colours_are_not_type_colours():
    """A flag must not look like a node of some type (basal dendrites were the flags' red)."""
    from neurorecon.viewer import layers

    types = np.array(list(layers.TYPE_COLORS.values()))
    for decision, colour in layers.FLAG_COLORS.items():
        gap = np.linalg.norm(types - np.array(colour), axis=1).min()
        assert gap >= 0.45, (decision, colour, gap)
        assert layers._vec3(colour) in layers.FLAG_SHADER
    assert all(layers._vec3(c) in layers.SKELETON_SHADER for c in layers.TYPE_COLORS.values())
    assert len(set(layers.FLAG_COLORS.values())) == len(layers.FLAG_COLORS)


def test_focus_point_stays_inside_the_volume(review_sample):
    from neurorecon.io.volume import open_volume
    from neurorecon.viewer import layers

    v = open_volume(str(review_sample.image))
    lo, hi = layers.volume_bounds(v)
    assert np.allclose(lo, [-0.25, -0.25, -0.5]) and np.allclose(hi, [44.25, 40.25, 20.5])   # 89 x 81 x 21 voxels
    inside = [18.0, 26.0, 10.0]
    assert layers.focus_point(inside, v) == inside                  # a flag inside: exactly at it
    out = layers.focus_point([50.0, -3.0, 30.0], v)
    assert np.all(np.asarray(out) > lo) and np.all(np.asarray(out) < hi) and out[0] > 44 and out[2] > 20
    assert layers.focus_point(inside, None) == inside


def test_sites_pair_gap_ends_and_nest_prunes():
    """A bridge between two flagged gap ends makes one site; a spur inside an over-extension is
    cut with it (the topmost base), and a flagged node elsewhere stays its own site."""
    from neurorecon.morphology.neuron import Neuron
    from neurorecon.viewer.sites import group_sites

    #   1-2-3-4-5-6 (5, 6 over-extension; 6's child 7 a spur)   8-9 a fragment whose root 8 is a gap end
    ids = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    parents = [-1, 1, 2, 3, 4, 5, 6, -1, 8]
    n = Neuron.from_arrays(ids, [3] * 9, [[float(i), 0.0, 0.0] for i in ids], [1.0] * 9, parents)

    def det(i, reason, fix, p=0.9):
        return Flag(f"detector:{i}", i, (float(i), 0.0, 0.0), "detector", f"detector.{reason}", f"p(error) = {p}: x",
                    p, "warning", fix, (i,))

    flags = [det(5, "overextension", {"action": "prune", "node_id": 5}), det(6, "overextension", None),
             det(7, "spur", {"action": "prune", "node_id": 7}, 0.95),
             det(8, "gap", {"action": "bridge", "node_id": 8, "parent_id": 4}), det(4, "gap", None, 0.6),
             det(2, "jump", None, 0.55)]
    sites = {f.key: f for f in group_sites(n, flags)}
    assert set(sites) == {"detector:5", "detector:8", "detector:2"}
    assert sites["detector:5"].fix == {"action": "prune", "node_id": 5} and set(sites["detector:5"].node_ids) == {5, 6, 7}
    assert sites["detector:5"].p == 0.95                      # the spur's p, the highest in the site
    assert sites["detector:8"].fix["action"] == "bridge" and set(sites["detector:8"].node_ids) == {8, 4}
    assert sites["detector:2"].fix is None
