"""The detector on real confocal images (DIADEM gold traces: every flag is a false alert)."""

from pathlib import Path

import numpy as np
import pytest

from neurorecon.detect import benchmark_real as br
from neurorecon.detect.model import load_detector

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HAVE_DIADEM = (DATA / "lm_real" / "diadem_opf" / "OP_3.tif").is_file()
needs_diadem = pytest.mark.skipif(not HAVE_DIADEM, reason="the shared DIADEM stacks are not on this machine")


def test_calibration_and_report_stacks_are_disjoint_and_cover_all():
    assert not set(br.CALIBRATION_STACKS) & set(br.REPORT_STACKS)
    assert set(br.CALIBRATION_STACKS) | set(br.REPORT_STACKS) == set(br.DIADEM_STACKS)


@needs_diadem
def test_one_stack_reports_a_flag_rate_over_all_its_gold_nodes():
    from neurorecon.io.swc import read_swc

    det = load_detector()
    r = br.run_stack("OP_3", det, data_dir=DATA)
    assert r.n == len(read_swc(DATA / "lm_real" / "diadem_opf" / "OP_3.swc"))
    assert 0 <= r.flagged <= r.n and sum(r.reasons.values()) == r.flagged
    # A stricter threshold can only flag fewer of the same nodes.
    strict = br.run_stack("OP_3", det, threshold=0.9, data_dir=DATA)
    assert strict.flagged <= r.flagged
    md = br.markdown([r], br.heldout_targets(det.meta), "cmd")
    assert f"| OP_3 | report | {r.n} | {r.flagged} |" in md


def test_heldout_targets_from_precision_and_recall_match_the_confusion_counts():
    # 100 error nodes, 80 found; 20 false alerts among 900 correct nodes -> precision 0.8, 2.22 % flagged.
    meta = {"heldout": {"all": {"n": 1000, "n_errors": 100, "recall": 0.8, "precision": 0.8, "auc": 0.9,
                                "recall_at_fpr": 0.7, "per_type": {"jump": [10, 0.5, 0.4]}}}}
    t = br.heldout_targets(meta)
    assert t["correct_flagged"] == pytest.approx(20 / 900)
    assert t["jump_recall_at_fpr"] == 0.4
    assert br.heldout_targets({}) == {}


def test_missing_data_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NEURORECON_DATA", str(tmp_path))
    assert br.main(["--stacks", "OP_3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "OP_3" in err


# ----------------------------------------------------------------------------- the jump features
def _jump_crops(n=12):
    """Rendered crops with jumps only (each a trace that leaves its fibre for a crossing neighbour)."""
    from neurorecon.detect.dataset import TRAIN_SOURCES, load_sources, train_imaging
    from neurorecon.detect.features import compute_features
    from neurorecon.synth.samples import make_sample
    from neurorecon.io.volume import open_volume

    golds = load_sources(TRAIN_SOURCES[:1], DATA)
    X, etype = [], []
    for i in range(n):
        rng = np.random.default_rng([7, i])
        s = make_sample(golds[i % len(golds)], golds[:5], train_imaging(rng), rng, size_um=(80, 80, 48), spacing=2.0,
                        error_weights={"jump": 1.0})
        if s is None:
            continue
        ft = compute_features(s.trace, open_volume(s.image, voxel_size=s.imaging.voxel_size))
        X.append(ft.X)
        etype.append(s.etype)
    return np.concatenate(X), np.concatenate(etype), ft.names


def test_parent_direction_feature_separates_jump_nodes_better_than_the_turn_evidence():
    from neurorecon.synth.errors import ERROR_CODE
    from neurorecon.detect.evaluate import auc

    X, etype, names = _jump_crops()
    jump, ok = etype == ERROR_CODE["jump"], etype == 0
    assert jump.sum() >= 50 and ok.sum() >= 200
    sel = jump | ok

    def sep(name):
        return auc(jump[sel], np.nan_to_num(X[sel, names.index(name)]))

    # "The fibre the trace came along goes straight on, untraced" carried down from the turn.
    assert sep("up_fwd_parent") >= 0.75
    assert sep("up_fwd_parent") > sep("up_turn_off") + 0.05


def test_bend_is_the_angle_between_the_ways_in_and_out():
    from neurorecon.detect.features import BEND_UM, _continuity
    from neurorecon.detect.image_features import RawImage  # noqa: F401  (the raw shells below mimic it)
    from neurorecon.morphology import graph

    # A straight run of 1 µm edges that turns by 50 degrees at node 10.
    d1, a = np.array([1.0, 0, 0]), np.radians(50)
    d2 = np.array([np.cos(a), np.sin(a), 0])
    xyz = np.concatenate([np.arange(11)[:, None] * d1, 10 * d1 + np.arange(1, 11)[:, None] * d2])
    parent = np.arange(-1, len(xyz) - 1)

    class Raw:   # no untraced signal anywhere: only the geometry matters
        shell = np.zeros((len(xyz), 2, 40), np.float32)
        shell_cov = np.ones((len(xyz), 2, 40), bool)
        background = np.zeros(len(xyz))

    out = _continuity(Raw, np.ones(len(xyz)), xyz, parent, graph.first_child(parent))
    assert out["bend6"][10] == pytest.approx(50.0, abs=1e-6)
    assert out["bend6"][3] == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(out["bend6"][0]) and np.isnan(out["bend6"][-1])    # no way in / out at the ends
    # Within BEND_UM of the turn both ways still straddle it, partly.
    assert 0 < out["bend6"][10 + int(BEND_UM) - 1] < 50
    assert (out["fwd_parent7"] == 0).all() and (out["up_fwd_parent"] <= 0).all()   # -1: no node above


# ------------------------------------------------------------------- real negatives and threshold
@needs_diadem
def test_real_negatives_are_correct_nodes_of_one_group_per_stack():
    from neurorecon.detect.dataset import real_negatives

    s = real_negatives(("OP_2", "OP_3"), 0, DATA)
    assert not s.y.any() and not s.etype.any()
    assert set(s.crop.tolist()) == {0, 1}
    assert (s.parent < len(s.y)).all() and (s.parent[s.parent >= 0] != np.flatnonzero(s.parent >= 0)).all()
    # As traced plus resampled variants: several times the stacks' node count.
    assert len(s.y) > 2 * (235 + 171)


def test_decision_point_is_raised_to_the_validation_fpr_cap():
    from neurorecon.detect.model import fit

    rng = np.random.default_rng(0)

    def data(n):
        y = (rng.random(n) < 0.2).astype(np.int8)
        X = np.stack([y + rng.normal(0, 0.8, n), rng.normal(size=n)], 1).astype(np.float32)
        return X, y

    X, y = data(4000)
    Xv, yv = data(2000)
    free = fit(X, y, y.astype(np.int8), ("a", "b"), rounds=20, reason_rounds=2, valid=(Xv, yv), max_valid_fpr=None)
    capped = fit(X, y, y.astype(np.int8), ("a", "b"), rounds=20, reason_rounds=2, valid=(Xv, yv), max_valid_fpr=0.01)
    assert capped.decision_point > free.decision_point
    p, _ = capped.predict(Xv, capped.names, reason_threshold=np.inf)
    assert ((p >= 0.5) & (yv == 0)).sum() / (yv == 0).sum() <= 0.011
    pf, _ = free.predict(Xv, free.names, reason_threshold=np.inf)
    assert ((pf >= 0.5) & (yv == 0)).sum() / (yv == 0).sum() > 0.02
