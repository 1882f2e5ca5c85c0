"""Synthetic training arbors: valid trees, deterministic, spanning sparse to very dense branching."""

from __future__ import annotations

import numpy as np
import pytest

from neurorecon.synth.arbors import ArborStyle, grow_arbor, random_style, synthetic_arbors
from neurorecon.detect.dataset import N_SYNTHETIC_ARBORS, TRAIN_SOURCES, load_sources
from neurorecon.synth.samples import make_sample
from neurorecon.synth.render import Imaging
from neurorecon.morphology import graph


def _branch_density(n) -> float:
    cable = graph.edge_lengths(n.xyz, n.parent).sum()
    return 100.0 * (graph.child_counts(n.parent) >= 2).sum() / cable


def _style(**kw) -> ArborStyle:
    base = dict(branch_per_100um=2.0, twig_fraction=0.3, twig_um=2.0, tortuosity=0.1, extent_um=100.0,
                cable_um=1500.0, n_stems=3, root_radius=1.0, tip_radius=0.15, typed=True)
    return ArborStyle(**{**base, **kw})


def test_arbor_is_one_tree_rooted_at_a_soma():
    n = grow_arbor(_style(), np.random.default_rng(1))
    assert len(n.roots) == 1 and n.types[n.roots[0]] == 1
    assert not n.in_cycle.any()
    edges = graph.edge_lengths(n.xyz, n.parent)[n.parent >= 0]
    assert edges.max() <= 0.81          # points every <= 0.8 µm, as a gold skeleton should be
    assert set(np.unique(n.types[n.parent >= 0])) <= {2, 3, 4}
    assert (n.radius >= 0.15 - 1e-9).all() and n.radius.max() <= 1.0 + 1e-9


def test_same_seed_same_arbors():
    a, b = synthetic_arbors(3, seed=7), synthetic_arbors(3, seed=7)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.xyz, y.xyz)
        np.testing.assert_array_equal(x.parent_ids, y.parent_ids)
    assert not np.array_equal(synthetic_arbors(1, seed=8)[0].xyz[:50], a[0].xyz[:50])


@pytest.mark.parametrize("bp", [1.0, 10.0, 30.0])
def test_branch_density_follows_the_style(bp):
    n = grow_arbor(_style(branch_per_100um=bp, cable_um=2000.0), np.random.default_rng(3))
    assert bp / 2.5 < _branch_density(n) < bp * 2.5


def test_dense_style_grows_inside_its_ball():
    st = _style(branch_per_100um=25.0, extent_um=40.0, cable_um=2500.0)
    n = grow_arbor(st, np.random.default_rng(4))
    r = np.linalg.norm(n.xyz, axis=1)
    assert np.percentile(r, 95) < 1.6 * st.extent_um


def test_untyped_style_uses_type_zero_like_em_skeletons():
    n = grow_arbor(_style(typed=False), np.random.default_rng(5))
    assert set(np.unique(n.types[n.parent >= 0])) == {0}


def test_random_styles_span_sparse_to_dense():
    bps = [random_style(np.random.default_rng([0, i])).branch_per_100um for i in range(200)]
    assert min(bps) < 1.0 and max(bps) > 25.0
    dens = [_branch_density(a) for a in synthetic_arbors(12)]
    assert min(dens) < 1.5 and max(dens) > 10.0


def test_training_sources_include_the_arbors():
    assert "synthetic:arbors" in TRAIN_SOURCES
    golds = load_sources(["synthetic:arbors"])
    assert len(golds) == N_SYNTHETIC_ARBORS


def test_arbor_gives_a_labelled_sample():
    gold = grow_arbor(_style(branch_per_100um=20.0, extent_um=35.0, cable_um=1200.0), np.random.default_rng(6))
    rng = np.random.default_rng(9)
    s = None
    for _ in range(10):
        s = make_sample(gold, [gold], Imaging(voxel_size=(1.0, 1.0, 2.0)), rng, size_um=(64.0, 64.0, 32.0))
        if s is not None:
            break
    assert s is not None
    assert len(s.label) == len(s.trace) and s.label.sum() > 0
    assert (graph.child_counts(s.trace.parent) >= 2).sum() >= 5      # the crop really is branched


def test_missing_data_folder_is_an_error_not_fewer_neurons(tmp_path, monkeypatch):
    # Run from the wrong folder, `train` used to go on with the synthetic arbors alone.
    monkeypatch.setenv("NEURORECON_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="mouse_wholebrain_axons"):
        load_sources(TRAIN_SOURCES)


def test_synth_cli_reports_missing_data_folder(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from neurorecon.cli import app

    monkeypatch.setenv("NEURORECON_DATA", str(tmp_path / "nowhere"))
    res = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "crops"), "-n", "1", "--split", "train"])
    assert res.exit_code == 1
    assert "no such folder" in res.output and "Traceback" not in res.output
