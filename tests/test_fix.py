"""Conservative fixes: each fix on a small hand-made reconstruction, the edit log and the files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from neurorecon.io import read_apo, read_swc
from neurorecon.morphology import Neuron
from neurorecon.qc.config import CheckConfig
from neurorecon.qc.findings import Fix, Severity
from neurorecon.qc.fixes import FixError, fix_file, fix_neuron, is_sorted, parents_first
from neurorecon.qc.run import check_neuron

CHECKS_DATA = Path(__file__).resolve().parent / "data" / "checks"

# A soma and an unbranched basal dendrite along z, 2 um spacing: ids 1..7, z = 0, 5, 7, ..., 15.
BASE = "1 1 0 0 0 5 -1\n" + "".join(f"{k} 3 0 0 {5 + 2 * (k - 2)} 1 {k - 1}\n" for k in range(2, 8))


def fix(text: str, config: CheckConfig | None = None, **kw):
    n = read_swc(text.encode())
    return n, fix_neuron(n, config, **kw)


def actions(res):
    return [(e.action, e.check) for e in res.edits]


def node_set(neuron):
    """(type, xyz, radius) of every node: what a fix must keep apart from ids and parents."""
    return sorted((int(t), tuple(p), float(r)) for t, p, r in zip(neuron.types, neuron.xyz.tolist(), neuron.radius))


def edges(neuron):
    """Edges as (child xyz, parent xyz): independent of ids."""
    p = neuron.parent
    return {(tuple(neuron.xyz[c]), tuple(neuron.xyz[p[c]])) for c in np.flatnonzero(p >= 0)}


def assert_clean_tree(neuron):
    assert parents_first(neuron)
    assert len(set(neuron.ids.tolist())) == neuron.n_nodes
    assert len(neuron.roots) == 1
    assert not any(f.fix is not None for f in check_neuron(neuron))


def test_clean_neuron_needs_no_edit():
    n, res = fix(BASE)
    assert res.edits == []
    assert not res.changed and res.converged
    assert res.neuron is n


# ------------------------------------------------------------------------------ duplicate ids
def test_exact_duplicate_line_dropped():
    n, res = fix(BASE + "7 3 0 0 15 1 6\n")
    assert actions(res) == [("drop_duplicate", "duplicate_id")]
    e = res.edits[0]
    assert e.node_ids == [7]
    assert e.before == {"id": 7, "type": 3, "xyz": [0.0, 0.0, 15.0], "radius": 1.0, "parent_id": 6}
    assert e.after is None
    assert res.neuron.n_nodes == 7
    assert node_set(res.neuron) == node_set(read_swc(BASE.encode()))
    assert_clean_tree(res.neuron)


def test_different_duplicate_id_renumbered_without_losing_a_node():
    n, res = fix(BASE + "7 3 4 0 15 1 6\n")
    assert ("renumber", "duplicate_id") in actions(res)
    e = next(e for e in res.edits if e.action == "renumber")
    assert e.node_ids == [7]
    assert e.before == {"id": 7}
    assert e.after == {"id": 8}
    assert e.xyz == [[4.0, 0.0, 15.0]]
    assert res.neuron.n_nodes == n.n_nodes == 8
    assert node_set(res.neuron) == node_set(n)
    assert len(set(res.neuron.ids.tolist())) == 8
    # the renumbered copy still hangs from node 6
    out = res.neuron
    r = int(np.flatnonzero((out.xyz == [4, 0, 15]).all(axis=1))[0])
    assert out.xyz[out.parent[r]].tolist() == [0, 0, 13]
    assert_clean_tree(out)


# ------------------------------------------------------------------------------ missing parents, bridges
NEAR_FRAGMENT = "8 3 0 0 17 1 99\n9 3 0 0 19 1 8\n10 3 0 0 21 1 9\n"


def test_missing_parent_cut_then_bridged_when_close_and_aligned():
    n, res = fix(BASE + NEAR_FRAGMENT)
    assert actions(res) == [("cut", "missing_parent"), ("bridge", "fragment")]
    cut, bridge = res.edits
    assert cut.node_ids == [8] and cut.before == {"parent_id": 99} and cut.after == {"parent_id": -1}
    assert bridge.node_ids == [8, 7]
    assert bridge.after == {"parent_id": 7}
    out = res.neuron
    assert out.n_nodes == 10
    assert ((0, 0, 17), (0, 0, 15)) in {(tuple(map(int, a)), tuple(map(int, b))) for a, b in edges(out)}
    assert_clean_tree(out)


def test_missing_parent_not_bridged_beyond_distance_bound():
    far = NEAR_FRAGMENT.replace(" 17 ", " 47 ").replace(" 19 ", " 49 ").replace(" 21 ", " 51 ")
    n, res = fix(BASE + far)
    assert actions(res) == [("cut", "missing_parent")]
    assert len(res.neuron.roots) == 2
    assert res.neuron.n_nodes == 10
    # the distance bound is what stopped it: a wider reach bridges the same gap
    cfg = CheckConfig().with_overrides({"bridge_max_factor": 20})
    _, res2 = fix(BASE + far, cfg)
    assert actions(res2) == [("cut", "missing_parent"), ("bridge", "fragment")]
    assert len(res2.neuron.roots) == 1


def test_missing_parent_not_bridged_beyond_angle_bound():
    # 3 um beside the dendrite's end but running sideways (along y): continuing the fragment
    # past either end never points at the dendrite.
    side = "8 3 3 0 15 1 99\n9 3 3 2 15 1 8\n10 3 3 4 15 1 9\n"
    n, res = fix(BASE + side)
    assert actions(res) == [("cut", "missing_parent")]
    assert len(res.neuron.roots) == 2
    # the angle bound is what stopped it: allowing 95 degrees bridges it
    cfg = CheckConfig().with_overrides({"bridge_max_angle": 95})
    _, res2 = fix(BASE + side, cfg)
    assert ("bridge", "fragment") in actions(res2)
    assert len(res2.neuron.roots) == 1


def test_negative_parent_below_minus_one_is_cut():
    n, res = fix(BASE + "8 3 30 30 30 1 -5\n")
    assert ("cut", "missing_parent") in actions(res)
    out = res.neuron
    r = int(np.flatnonzero((out.xyz == [30, 30, 30]).all(axis=1))[0])
    assert out.parent_ids[r] == -1


def test_bridge_reroots_a_fragment_at_its_open_end():
    # The fragment's root (id 8, missing parent) is its far end; its tip (id 10) is the end
    # next to the dendrite, so the bridge has to reverse the fragment's parent pointers.
    rev = "8 3 0 0 21 1 99\n9 3 0 0 19 1 8\n10 3 0 0 17 1 9\n"
    n, res = fix(BASE + rev)
    bridge = next(e for e in res.edits if e.action == "bridge")
    assert bridge.node_ids == [10, 7]
    assert bridge.before["rerooted"] is True
    out = res.neuron
    assert_clean_tree(out)
    xyz_parent = {tuple(out.xyz[c].tolist()): tuple(out.xyz[out.parent[c]].tolist()) for c in range(len(out)) if out.parent[c] >= 0}
    assert xyz_parent[(0, 0, 17)] == (0, 0, 15)
    assert xyz_parent[(0, 0, 19)] == (0, 0, 17)
    assert xyz_parent[(0, 0, 21)] == (0, 0, 19)


# ------------------------------------------------------------------------------ cycles, self-parents
def test_cycle_broken_at_its_longest_edge():
    # 8 -> 10 -> 9 -> 8: edges 8-10 (4 um) is the longest, so node 8 loses its parent.
    cyc = "8 3 0 0 17 1 10\n9 3 0 0 19 1 8\n10 3 0 0 21 1 9\n"
    n, res = fix(BASE + cyc)
    cut = res.edits[0]
    assert (cut.action, cut.check) == ("cut", "cycle")
    assert cut.node_ids == [8]
    assert cut.before == {"parent_id": 10}
    out = res.neuron
    assert not out.in_cycle.any()
    assert out.n_nodes == 10
    # the edge 10 -> 8 is gone, the short ones stay
    e = {(a[2], b[2]) for a, b in edges(out)}
    assert (17.0, 21.0) not in e
    assert (19.0, 17.0) in e and (21.0, 19.0) in e
    assert_clean_tree(out)


def test_cycle_far_away_is_cut_and_left_unbridged():
    cyc = "8 3 100 0 0 1 10\n9 3 101 0 0 1 8\n10 3 105 0 0 1 9\n"
    n, res = fix(BASE + cyc)
    # edges: 8 -> 10 is 5 um, 10 -> 9 is 4 um, 9 -> 8 is 1 um
    assert [(e.action, e.check, e.node_ids) for e in res.edits if e.check == "cycle"] == [("cut", "cycle", [8])]
    assert not res.neuron.in_cycle.any()
    assert len(res.neuron.roots) == 2


def test_self_parent_cut():
    n, res = fix(BASE + "8 3 0 0 17 1 8\n9 3 0 0 19 1 8\n")
    assert res.edits[0].action == "cut" and res.edits[0].check == "self_parent"
    assert res.edits[0].node_ids == [8]
    assert res.edits[0].before == {"parent_id": 8}
    out = res.neuron
    assert not (out.parent == np.arange(len(out))).any()
    assert out.n_nodes == 9
    assert_clean_tree(out)


# ------------------------------------------------------------------------------ geometry
def test_zero_length_segment_removed_children_reattached():
    text = BASE.replace("5 3 0 0 11 1 4", "5 3 0 0 9 1 4")  # node 5 sits on node 4
    n, res = fix(text)
    assert actions(res)[0] == ("delete", "zero_length_segment")
    e = res.edits[0]
    assert e.node_ids == [5]
    assert e.before["id"] == 5 and e.before["parent_id"] == 4
    out = res.neuron
    assert out.n_nodes == 6
    # node 6 (z=13) now hangs from node 4 (z=9); every other node keeps its id
    zpar = {out.xyz[c, 2]: out.xyz[out.parent[c], 2] for c in range(len(out)) if out.parent[c] >= 0}
    assert zpar[13.0] == 9.0
    assert out.ids.tolist() == [1, 2, 3, 4, 6, 7]
    assert out.parent_ids.tolist() == [-1, 1, 2, 3, 4, 6]
    assert actions(res) == [("delete", "zero_length_segment")]
    assert_clean_tree(out)
    # with renumber the gap closes
    _, res2 = fix(text, renumber=True)
    assert actions(res2) == [("delete", "zero_length_segment"), ("reindex", "sort")]
    assert res2.neuron.ids.tolist() == [1, 2, 3, 4, 5, 6]


LOOP = """1 1 0 0 0 5 -1
2 3 5 0 0 1 1
3 3 7 0 0 1 2
4 3 9 0 0 1 3
5 3 11 0 0 1 4
6 3 13 0 0 1 5
7 3 15 0 0 1 6
8 3 0 5 0 1 1
9 3 2 7 0 1 8
10 3 5 8 0 1 9
11 3 8 7 0 1 10
12 3 11 5 0 1 11
13 3 12 2 0 1 12
14 3 13 0 0 1 13
"""


def test_loop_with_coincident_tip_removes_the_tip():
    n, res = fix(LOOP)
    assert actions(res) == [("delete", "loop")]
    e = res.edits[0]
    assert e.node_ids == [14]
    assert e.xyz == [[13.0, 0.0, 0.0]]
    out = res.neuron
    assert out.n_nodes == 13
    assert 14 not in out.ids.tolist()
    # the branch point on the other branch is untouched
    assert [13.0, 0.0, 0.0] in out.xyz.tolist()
    assert not [f for f in check_neuron(out) if f.check == "loop"]


def test_duplicate_sibling_point_merged():
    # Two children of node 4 at the same position (a double click).
    text = BASE + "8 3 0 0 11 1 4\n"
    n, res = fix(text)
    assert ("merge", "duplicate_point") in actions(res)
    e = next(e for e in res.edits if e.action == "merge")
    assert e.after["merged_into"] in (5, 8)
    out = res.neuron
    assert out.n_nodes == 7
    assert_clean_tree(out)


# ------------------------------------------------------------------------------ types
def test_sandwiched_wrong_type_run_relabelled():
    # dendrite, dendrite, axon, axon, dendrite ... on one unbranched path
    text = "1 1 0 0 0 5 -1\n" + "".join(f"{k} {2 if k in (5, 6) else 3} 0 0 {5 + 2 * (k - 2)} 1 {k - 1}\n" for k in range(2, 10))
    n, res = fix(text)
    assert actions(res) == [("relabel", "type_change")]
    e = res.edits[0]
    assert e.node_ids == [5, 6]
    assert e.before == {"types": [2, 2]}
    assert e.after == {"type": 3}
    assert res.neuron.types.tolist() == [1] + [3] * 8
    assert res.neuron.xyz.tolist() == n.xyz.tolist()


def test_long_wrong_type_run_not_relabelled():
    text = "1 1 0 0 0 5 -1\n" + "".join(f"{k} {2 if k in (5, 6) else 3} 0 0 {5 + 2 * (k - 2)} 1 {k - 1}\n" for k in range(2, 10))
    cfg = CheckConfig().with_overrides({"relabel_max_nodes": 1})
    n, res = fix(text, cfg)
    assert not [e for e in res.edits if e.action == "relabel"]
    assert res.neuron.types.tolist() == n.types.tolist()


AXON_WITH_BASAL = """1 1 0 0 0 5 -1
2 2 0 0 5 1 1
3 2 0 0 7 1 2
4 2 0 0 9 1 3
5 2 0 0 11 1 4
6 3 2 0 9 1 4
7 3 4 0 9 1 6
8 3 6 0 9 1 7
9 2 0 0 13 1 5
"""


def test_basal_subtree_off_the_axon_relabelled():
    n, res = fix(AXON_WITH_BASAL)
    assert actions(res) == [("relabel", "parent_type_violation")]
    e = res.edits[0]
    assert e.node_ids == [6, 7, 8]
    assert e.before == {"types": [3, 3, 3]}
    assert e.after == {"type": 2}
    assert res.neuron.types.tolist() == [1, 2, 2, 2, 2, 2, 2, 2, 2]
    assert res.neuron.parent_ids.tolist() == n.parent_ids.tolist()


def test_mixed_subtree_off_the_axon_left_alone():
    text = AXON_WITH_BASAL.replace("8 3 6 0 9 1 7", "8 4 6 0 9 1 7")
    n, res = fix(text)
    assert not [e for e in res.edits if e.check == "parent_type_violation"]


# ------------------------------------------------------------------------------ sorting
UNSORTED = "3 3 0 0 9 1 2\n5 3 2 0 7 1 4\n2 3 0 0 7 1 1\n1 1 0 0 0 5 -1\n4 3 0 0 5 1 1\n"


def test_ids_and_lines_kept_without_renumber():
    n, res = fix(UNSORTED)
    assert res.edits == []
    assert res.neuron is n
    n, res = fix("10 1 0 0 0 5 -1\n20 3 0 0 5 1 10\n30 3 0 0 7 1 20\n")
    assert res.edits == [] and res.neuron.ids.tolist() == [10, 20, 30]


def test_unsorted_file_reindexed_parents_first():
    text = UNSORTED
    n, res = fix(text, renumber=True)
    assert actions(res) == [("reindex", "sort")]
    assert res.edits[0].xyz == [] and res.edits[0].node_ids == []
    out = res.neuron
    assert out.ids.tolist() == [1, 2, 3, 4, 5]
    assert np.all(out.parent < np.arange(len(out)))
    assert out.types[0] == 1 and out.parent_ids[0] == -1
    assert edges(out) == edges(n)
    assert node_set(out) == node_set(n)


def test_id_gaps_reindexed():
    n, res = fix("10 1 0 0 0 5 -1\n20 3 0 0 5 1 10\n30 3 0 0 7 1 20\n", renumber=True)
    assert res.neuron.ids.tolist() == [1, 2, 3]
    assert res.neuron.parent_ids.tolist() == [-1, 1, 2]
    assert actions(res) == [("reindex", "sort")]


def test_reindex_puts_the_soma_tree_first():
    text = "1 3 50 50 50 1 -1\n2 3 50 50 52 1 1\n4 1 0 0 0 5 -1\n3 3 0 0 5 1 4\n"
    n, res = fix(text, renumber=True)
    out = res.neuron
    assert ("reindex", "sort") in actions(res)
    assert out.types.tolist() == [1, 3, 3, 3]
    assert out.xyz[:2].tolist() == [[0, 0, 0], [0, 0, 5]]
    assert np.all(out.parent < np.arange(len(out)))
    assert edges(out) == edges(n)


# ------------------------------------------------------------------------------ combined + idempotence
MESSY = (
    "# a messy reconstruction\n"
    + BASE.replace("5 3 0 0 11 1 4", "5 3 0 0 9 1 4")  # zero-length 5
    + "7 3 0 0 15 1 6\n"  # exact duplicate line
    + "8 3 0 0 17 1 99\n9 3 0 0 19 1 8\n10 3 0 0 21 1 9\n"  # missing parent, bridgeable
    + "20 3 100 0 0 1 22\n21 3 101 0 0 1 20\n22 3 105 0 0 1 21\n"  # far cycle
    + "30 2 0 0 -5 1 1\n31 3 0 0 -7 1 30\n32 2 0 0 -9 1 31\n33 2 0 0 -11 1 32\n"  # sandwiched run
)


def test_messy_file_is_fixed_completely_and_idempotently():
    n, res = fix(MESSY)
    assert res.converged
    kinds = {a for a, _ in actions(res)}
    assert {"drop_duplicate", "delete", "cut", "bridge", "relabel"} <= kinds
    removed = sum(e.action in ("delete", "drop_duplicate", "merge") for e in res.edits)
    assert n.n_nodes - res.neuron.n_nodes == removed
    # ids kept: every id of the output was an id of the input
    assert set(res.neuron.ids.tolist()) <= set(n.ids.tolist())
    assert parents_first(res.neuron)
    again = fix_neuron(res.neuron)
    assert again.edits == []
    assert again.neuron.ids.tolist() == res.neuron.ids.tolist()
    assert again.neuron.parent_ids.tolist() == res.neuron.parent_ids.tolist()
    # the same fixes with renumber, then one re-index; fixing that again changes nothing either
    _, numbered = fix(MESSY, renumber=True)
    assert actions(numbered) == actions(res) + [("reindex", "sort")]
    assert is_sorted(numbered.neuron)
    assert fix_neuron(numbered.neuron, renumber=True).edits == []


def test_disabled_check_is_not_fixed():
    cfg = replace(CheckConfig(), disabled=frozenset({"duplicate_id"}))
    n, res = fix(BASE + "7 3 0 0 15 1 6\n", cfg)
    assert not [e for e in res.edits if e.check == "duplicate_id"]
    assert res.neuron.n_nodes >= 7


# ------------------------------------------------------------------------------ files
def _write(tmp_path, text, name="in.swc"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_fix_file_writes_swc_log_and_apo(tmp_path):
    src = _write(tmp_path, MESSY)
    before = src.read_bytes()
    res, paths = fix_file(src, tmp_path / "out" / "fixed.swc")
    assert paths.swc == tmp_path / "out" / "fixed.swc"
    assert paths.log == tmp_path / "out" / "fixed.edits.json"
    assert paths.apo == tmp_path / "out" / "fixed.apo"
    assert src.read_bytes() == before  # input untouched

    out = read_swc(paths.swc)
    assert out.ids.tolist() == res.neuron.ids.tolist()
    assert np.array_equal(out.xyz, res.neuron.xyz)
    assert "# a messy reconstruction" in paths.swc.read_text()

    log = json.loads(paths.log.read_text())
    assert log["input"] == str(src)
    assert log["output"] == str(paths.swc)
    assert log["n_nodes_in"] == read_swc(src).n_nodes
    assert log["n_nodes_out"] == out.n_nodes
    assert log["converged"] is True
    assert len(log["edits"]) == len(res.edits) > 0
    for entry, edit in zip(log["edits"], res.edits):
        assert set(entry) == {"action", "check", "node_ids", "xyz", "why", "before", "after"}
        assert entry["action"] == edit.action and entry["check"] == edit.check
        assert entry["node_ids"] == edit.node_ids
        assert entry["why"] and isinstance(entry["why"], str)
        assert len(entry["xyz"]) == len(entry["node_ids"])
        for p in entry["xyz"]:
            assert len(p) == 3
    located = [e for e in log["edits"] if e["xyz"]]
    assert [e["action"] for e in log["edits"] if not e["xyz"]] == []  # ids kept: no re-index

    markers = read_apo(paths.apo)
    assert len(markers) == len(located)
    for m, e in zip(markers, located):
        assert [m.x, m.y, m.z] == pytest.approx(e["xyz"][0])
        assert m.name == f"{e['action']}:{e['check']}"
        assert m.comment  # the reason, for the reviewer


def test_fix_file_each_edit_located_at_its_node(tmp_path):
    src = _write(tmp_path, BASE + NEAR_FRAGMENT)
    res, paths = fix_file(src, tmp_path / "o.swc")
    log = json.loads(paths.log.read_text())
    cut = log["edits"][0]
    assert cut["action"] == "cut" and cut["node_ids"] == [8] and cut["xyz"] == [[0.0, 0.0, 17.0]]
    assert cut["before"] == {"parent_id": 99} and cut["after"] == {"parent_id": -1}
    m = read_apo(paths.apo)
    assert [(p.x, p.y, p.z) for p in m] == [(0.0, 0.0, 17.0), (0.0, 0.0, 17.0)]


def test_fix_file_clean_input_writes_empty_log(tmp_path):
    src = _write(tmp_path, BASE)
    res, paths = fix_file(src, tmp_path / "o.swc")
    assert res.edits == []
    assert json.loads(paths.log.read_text())["edits"] == []
    assert read_apo(paths.apo) == []
    assert read_swc(paths.swc).xyz.tolist() == read_swc(src).xyz.tolist()


def test_dry_run_writes_nothing(tmp_path):
    src = _write(tmp_path, MESSY)
    listing = sorted(tmp_path.iterdir())
    res, paths = fix_file(src, tmp_path / "o.swc", dry_run=True)
    assert res.edits
    assert sorted(tmp_path.iterdir()) == listing
    assert not paths.swc.exists() and not paths.log.exists() and not paths.apo.exists()


def test_input_never_overwritten_without_overwrite(tmp_path):
    src = _write(tmp_path, MESSY)
    before = src.read_bytes()
    with pytest.raises(FixError, match="input"):
        fix_file(src, src)
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.swc"]


def test_input_overwritten_with_overwrite(tmp_path):
    src = _write(tmp_path, MESSY)
    res, paths = fix_file(src, src, overwrite=True)
    assert paths.swc == src
    assert read_swc(src).n_nodes == res.neuron.n_nodes
    assert fix_neuron(read_swc(src)).edits == []


@pytest.mark.parametrize("existing", ["o.swc", "o.edits.json", "o.apo"])
def test_existing_output_refused_without_overwrite(tmp_path, existing):
    src = _write(tmp_path, MESSY)
    (tmp_path / existing).write_text("precious\n")
    with pytest.raises(FixError, match="existing"):
        fix_file(src, tmp_path / "o.swc")
    assert (tmp_path / existing).read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"in.swc", existing})
    fix_file(src, tmp_path / "o.swc", overwrite=True)
    assert (tmp_path / "o.swc").read_text() != "precious\n"


def test_fixing_the_output_again_gives_no_edit(tmp_path):
    src = _write(tmp_path, MESSY)
    res1, p1 = fix_file(src, tmp_path / "one.swc")
    res2, p2 = fix_file(p1.swc, tmp_path / "two.swc")
    assert res1.edits
    assert res2.edits == []
    assert json.loads(p2.log.read_text())["edits"] == []
    assert p2.swc.read_text().splitlines()[-res1.neuron.n_nodes:] == p1.swc.read_text().splitlines()[-res1.neuron.n_nodes:]


def test_fix_file_non_swc_suffix_output_names(tmp_path):
    src = _write(tmp_path, BASE + "7 3 0 0 15 1 6\n")
    res, paths = fix_file(src, tmp_path / "fixed")
    assert paths.swc == tmp_path / "fixed"
    assert paths.log == tmp_path / "fixed.edits.json"
    assert paths.apo == tmp_path / "fixed.apo"
    assert paths.swc.exists() and paths.log.exists() and paths.apo.exists()


# ------------------------------------------------------------------------------ safety
MORPHOLOGIES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "morphologies"
needs_real = pytest.mark.skipif(not MORPHOLOGIES.is_dir(), reason=f"{MORPHOLOGIES} does not exist")


def errors(neuron):
    return {(f.check, frozenset(f.node_ids)) for f in check_neuron(neuron) if f.severity == Severity.ERROR}


def test_bridge_between_different_types_declined():
    # The bridgeable fragment of test_missing_parent_cut_then_bridged..., typed axon: it lies at the
    # end of a basal dendrite, so joining them would make a dendrite turn into an axon mid-branch.
    axon = NEAR_FRAGMENT.replace(" 3 0 0 ", " 2 0 0 ")
    n, res = fix(BASE + axon)
    assert actions(res) == [("cut", "missing_parent")]
    assert len(res.neuron.roots) == 2
    [left] = res.declined
    assert left["action"] == "bridge" and left["check"] == "fragment"
    assert left["fix"] == {"node_id": 8, "parent_id": 7}
    assert "axon" in left["why"] and "basal dendrite" in left["why"]
    assert errors(res.neuron) <= errors(n) | {("fragment", frozenset({8}))}


def test_bridge_of_a_neurite_onto_the_soma_allowed_but_not_of_a_soma_onto_a_neurite():
    # A dendrite fragment below the soma, pointing at it: a neurite may grow from the soma.
    below = "8 3 0 0 -3 1 -1\n9 3 0 0 -5 1 8\n10 3 0 0 -7 1 9\n"
    n, res = fix(BASE + below)
    assert actions(res) == [("bridge", "fragment")]
    assert res.edits[0].node_ids == [8, 1]
    assert len(res.neuron.roots) == 1
    # A lone soma node 2 um past the dendrite's tip: hanging it from the dendrite would make a soma
    # with a neurite parent.
    n, res = fix(BASE + "8 1 0 0 17 3 -1\n")
    assert not [e for e in res.edits if e.action == "bridge"]
    assert [d["why"] for d in res.declined] == ["the bridge would join soma to basal dendrite"]


@needs_real
def test_real_dendrite_fragment_not_joined_to_the_axon():
    # NeuroM's disconnected_neurite.swc: basal node 10 is a root 5.7 um from axon node 9. The old fix
    # bridged them and added a type_change; now the bridge is declined and the fragment stays.
    path = MORPHOLOGIES / "edge_cases" / "disconnected_neurite.swc"
    n = read_swc(path)
    res = fix_neuron(n)
    assert not [e for e in res.edits if e.action == "bridge"]
    assert any(d["action"] == "bridge" and "basal dendrite to axon" in d["why"] for d in res.declined)
    assert errors(res.neuron) == errors(n) == {("fragment", frozenset({10}))}
    # and a second soma on the first one (multiple_soma.swc) is joined: soma to soma
    path = MORPHOLOGIES / "edge_cases" / "multiple_soma.swc"
    n = read_swc(path)
    res = fix_neuron(n)
    assert ("bridge", "fragment") in actions(res)
    assert errors(n) and errors(res.neuron) == set()


def test_a_fix_that_adds_an_error_is_declined():
    from neurorecon.qc.fixes import Baseline, Proposal

    n = read_swc(CHECKS_DATA / "clean.swc")
    guard = Baseline(n, check_neuron(n), CheckConfig())
    # Cutting node 192 off the unbranched basal dendrite would make a fragment the input lacked.
    cut = Proposal("test", Fix("cut", {"node_id": 192}), "a cut for the test")
    delete = Proposal("test", Fix("delete", {"node_id": 190}), "a harmless delete for the test")
    out, edits, declined = guard.apply(n, [cut, delete])
    assert [e.node_ids for e in edits] == [[190]]
    assert list(declined) == [cut.key]
    assert "fragment" in declined[cut.key]
    assert out.n_nodes == n.n_nodes - 1 and 192 in out.ids.tolist()


def _retraced(neuron: Neuron, k: int):
    """``neuron`` plus a new branch of ``k`` nodes that grows from a node of a long unbranched
    section and retraces its next k nodes 0.05 spacing to the side, the last exactly on one: a
    double-traced stretch whose tip closes a loop."""
    from neurorecon.qc.context import CheckContext

    ctx = CheckContext(neuron, CheckConfig())
    tips = np.flatnonzero(neuron.n_children == 0)
    sizes = np.bincount(ctx.section, minlength=len(neuron))
    tip = int(tips[np.argmax(sizes[ctx.section[tips]])])
    sec = np.flatnonzero(ctx.section == ctx.section[tip])
    sec = sec[np.argsort(ctx.path_length[sec])]
    assert len(sec) > k + 4
    base, along = sec[1], sec[2:k + 2]
    side = np.cross(neuron.xyz[sec[k + 2]] - neuron.xyz[base], [0.0, 0.0, 1.0])
    side /= np.linalg.norm(side)
    xyz = neuron.xyz[along] + 0.05 * ctx.spacing * side
    xyz[-1] = neuron.xyz[along[-1]]
    new_ids = np.arange(k) + neuron.ids.max() + 1
    parents = np.concatenate([[neuron.ids[base]], new_ids[:-1]])
    out = Neuron.from_arrays(np.concatenate([neuron.ids, new_ids]), np.concatenate([neuron.types, np.full(k, neuron.types[base])]),
                             np.vstack([neuron.xyz, xyz]), np.concatenate([neuron.radius, neuron.radius[along]]),
                             np.concatenate([neuron.parent_ids, parents]))
    return out, new_ids.tolist()


@needs_real
@pytest.mark.parametrize("k", [3, 6, 12])
def test_double_traced_stretch_removed_whole(k):
    n0 = read_swc(MORPHOLOGIES / "allen_v1" / "Pvalb_469628681_m.swc")
    n, stretch = _retraced(n0, k)
    assert any(f.check == "loop" and stretch[-1] in f.node_ids for f in check_neuron(n))
    res = fix_neuron(n)
    [prune] = [e for e in res.edits if e.check == "loop"]
    assert prune.action == "prune" and prune.node_ids == [stretch[0]]
    assert prune.before["removed_ids"] == stretch
    assert [r["xyz"] for r in prune.before["removed"]] == n.xyz[n.index_of(stretch)].tolist()
    out = res.neuron
    # no node of the stretch is left, every node of the real neuron is, with its id
    assert not set(stretch) & set(out.ids.tolist())
    assert set(n0.ids.tolist()) <= set(out.ids.tolist())
    assert errors(out) <= errors(n0)
    assert fix_neuron(out).edits == []


# ------------------------------------------------------------------------------ CLI
def _cli(*args):
    from typer.testing import CliRunner

    from neurorecon.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_cli_fix_keeps_ids_unless_renumber(tmp_path):
    # zero-length node 5 and a basal fragment that may not be bridged onto the axon end
    text = (BASE.replace("5 3 0 0 11 1 4", "5 3 0 0 9 1 4").replace(" 3 0 0 15 ", " 2 0 0 15 ")
            + NEAR_FRAGMENT)
    src = _write(tmp_path, text)
    r = _cli("fix", src, "-o", tmp_path / "kept.swc")
    assert r.exit_code == 0, r.output
    kept = read_swc(tmp_path / "kept.swc")
    assert kept.ids.tolist() == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    log = json.loads((tmp_path / "kept.edits.json").read_text())
    assert [e["action"] for e in log["edits"]] == ["cut", "delete"]
    assert [d["action"] for d in log["declined"]] == ["bridge"]
    r = _cli("fix", src, "-o", tmp_path / "numbered.swc", "--renumber")
    assert r.exit_code == 0, r.output
    numbered = read_swc(tmp_path / "numbered.swc")
    assert numbered.ids.tolist() == list(range(1, 10))
    assert np.array_equal(numbered.xyz, kept.xyz)
    assert [e["action"] for e in json.loads((tmp_path / "numbered.edits.json").read_text())["edits"]] == ["cut", "delete", "reindex"]
    # fixing either output again changes nothing
    for name, extra in (("kept", ()), ("numbered", ("--renumber",))):
        r = _cli("fix", tmp_path / f"{name}.swc", "-o", tmp_path / f"{name}.again.swc", *extra)
        assert r.exit_code == 0 and "nothing to fix" in r.output
        assert (tmp_path / f"{name}.again.swc").read_text() == (tmp_path / f"{name}.swc").read_text()
