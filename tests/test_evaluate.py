"""Scoring a detector: AUC, the threshold at a false-positive rate, per-type recall, CSV input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurorecon.detect.evaluate import (
    REFERENCE_FPR,
    EvaluationError,
    auc,
    evaluate,
    evaluate_files,
    format_metrics,
    threshold_at_fpr,
    youden_threshold,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def brute_auc(y, p):
    """P(error node outranks a correct one), ties counted half, by counting every pair."""
    y = np.asarray(y, bool)
    p = np.asarray(p, float)
    pos, neg = p[y], p[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


# Scores from a handful of values make ties common; labels with at least one of each class.
labelled_scores = st.integers(2, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.booleans(), min_size=n, max_size=n).filter(lambda y: 0 < sum(y) < len(y)),
        st.one_of(
            st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0]), min_size=n, max_size=n),
            st.lists(st.floats(0, 1, allow_nan=False), min_size=n, max_size=n),
        ),
    )
)


# ------------------------------------------------------------------------------------- AUC
@SETTINGS
@given(labelled_scores)
def test_auc_equals_pairwise_count(data):
    y, p = data
    assert auc(np.array(y), np.array(p)) == pytest.approx(brute_auc(y, p), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_pairwise_count_large_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 2000
    y = rng.random(n) < 0.1
    p = np.round(rng.beta(2, 5, n) + 0.3 * y, 2).clip(0, 1)  # two decimals: many ties
    assert len(np.unique(p)) < n / 5
    assert auc(y, p) == pytest.approx(brute_auc(y, p), abs=1e-12)
    # Labels as ints or bools, scores as lists: same answer.
    assert auc(y.astype(int).tolist(), p.tolist()) == pytest.approx(auc(y, p), abs=1e-12)


def test_auc_extremes_and_degenerate_cases():
    y = np.array([0, 0, 1, 0, 1, 1, 0])
    p = np.array([0.1, 0.2, 0.8, 0.3, 0.9, 0.7, 0.4])
    assert auc(y, p) == 1.0
    assert auc(y, 1 - p) == 0.0
    assert auc(y, np.full(len(y), 0.3)) == 0.5  # all tied
    assert auc(y, p * 0.1) == 1.0  # depends on ranks only
    assert np.isnan(auc(np.zeros(4), np.arange(4) / 4))
    assert np.isnan(auc(np.ones(4), np.arange(4) / 4))


@SETTINGS
@given(labelled_scores)
def test_auc_complement(data):
    y, p = data
    y, p = np.array(y), np.array(p)
    assert auc(y, p) + auc(y, -p) == pytest.approx(1.0, abs=1e-9)  # -p: exact, 1-p may merge floats
    assert auc(y, p) + auc(~y, p) == pytest.approx(1.0, abs=1e-9)


# ---------------------------------------------------------------------------- FPR threshold
@SETTINGS
@given(labelled_scores, st.sampled_from([0.0, 0.014, 0.05, 0.1, 0.29, 0.5, 0.99]))
def test_threshold_keeps_false_positives_within_rate(data, fpr):
    y, p = data
    y, p = np.array(y), np.array(p)
    t = threshold_at_fpr(y, p, fpr)
    neg = p[~y]
    assert (neg > t).sum() <= fpr * len(neg) + 1e-9
    # ... and it is the lowest such threshold among the scores: one step lower breaks the rate.
    lower = neg[neg < t]
    if len(lower):
        assert (neg > lower.max()).sum() > fpr * len(neg)
    assert t in neg


def test_threshold_examples():
    y = np.zeros(100, bool)
    p = np.arange(100) / 100.0
    assert threshold_at_fpr(y, p, 0.0) == 0.99  # nothing above the largest negative
    assert threshold_at_fpr(y, p, 0.05) == 0.94  # exactly 5 negatives above
    assert threshold_at_fpr(y, p, REFERENCE_FPR) == 0.98  # floor(1.4) = 1 above
    # Positives do not move it.
    y2 = np.concatenate([y, np.ones(10, bool)])
    p2 = np.concatenate([p, np.full(10, 0.999)])
    assert threshold_at_fpr(y2, p2, 0.05) == 0.94
    # No negatives at all: the plain 0.5 cut.
    assert threshold_at_fpr(np.ones(3, bool), np.array([0.1, 0.2, 0.3]), 0.05) == 0.5


# ---------------------------------------------------------------------------------- evaluate
@given(st.lists(st.tuples(st.booleans(), st.floats(0, 1)), min_size=2, max_size=60))
@SETTINGS
def test_youden_threshold_maximises_recall_minus_false_positive_rate(data):
    y = np.array([d[0] for d in data])
    p = np.array([d[1] for d in data])
    if y.all() or not y.any():
        with pytest.raises(EvaluationError, match="both"):
            youden_threshold(y, p)
        return
    t = youden_threshold(y, p)

    def j(s):
        return (p[y] >= s).mean() - (p[~y] >= s).mean()

    grid = np.round(np.arange(1, 100) / 100, 2)
    best = max(j(s) for s in grid)
    assert t in grid and j(t) == pytest.approx(best)
    assert all(j(s) < best - 1e-12 for s in grid if s > t)     # the highest of equal maxima


def test_youden_threshold_example():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0], bool)
    p = np.array([0.3, 0.5, 0.7, 0.9, 0.05, 0.1, 0.15, 0.2, 0.35])
    # From 0.21 to 0.30 every error is caught and one correct node of five is flagged (J = 0.8);
    # above 0.35 the 0.3 error is missed and none flagged (J = 0.75). The highest of the best: 0.30.
    assert youden_threshold(y, p) == 0.3


def test_evaluate_per_type_recall():
    names = np.array(["", "", "", "", "", "", "", "", "", "gap", "gap", "spur", "spur", "spur", "loop"], dtype=object)
    y = names != ""
    p = np.array([0.1, 0.2, 0.3, 0.3, 0.4, 0.45, 0.5, 0.6, 0.95,   # negatives: three at >= 0.5
                  0.9, 0.2,                                        # gap: one of two
                  0.7, 0.97, 0.55,                                 # spur: all three at 0.5
                  0.3])                                            # loop: missed
    m = evaluate(y, p, names, fpr=0.12)
    assert m.n == 15 and m.n_errors == 6
    # fpr 0.12 of 9 negatives: floor(1.08) = 1 may exceed, so the threshold is the 2nd largest, 0.6.
    assert m.threshold_at_fpr == 0.6
    assert set(m.per_type) == {"gap", "spur", "loop"}
    assert m.per_type["gap"] == (2, 0.5, 0.5)
    assert m.per_type["spur"] == (3, 1.0, pytest.approx(2 / 3))
    assert m.per_type["loop"] == (1, 0.0, 0.0)
    assert m.recall_at_fpr == pytest.approx(3 / 6)
    assert m.recall == pytest.approx(4 / 6)
    assert m.precision == pytest.approx(4 / 7)  # flagged: 0.5, 0.6, 0.95 (wrong) and 4 errors
    assert m.accuracy == pytest.approx((6 + 4) / 15)
    assert m.auc == pytest.approx(brute_auc(y, p))
    d = m.to_dict()
    assert d["per_type"]["gap"] == (2, 0.5, 0.5) and d["auc"] == m.auc
    text = format_metrics(m, 0.12)
    assert "spur" in text and "12.0% FPR" in text


def test_evaluate_without_types_and_length_mismatch():
    m = evaluate([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8])
    assert m.per_type == {} and m.auc == 1.0 and m.accuracy == 1.0
    with pytest.raises(EvaluationError, match="3 scores but 4 labels"):
        evaluate([0, 1, 0, 1], [0.1, 0.9, 0.2])


# ------------------------------------------------------------------------------ evaluate_files
def _write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def labels(tmp_path):
    return _write(tmp_path / "labels.csv",
                  "node_id,label,error_type\n1,0,\n2,1,gap\n3,0,\n4,1,spur\n5,0,\n7,1,spur\n")


def test_evaluate_files_matches_ids_in_any_order(tmp_path, labels):
    ids = [1, 2, 3, 4, 5, 7]
    p = {1: 0.1, 2: 0.8, 3: 0.3, 4: 0.2, 5: 0.6, 7: 0.9}
    ref = evaluate([0, 1, 0, 1, 0, 1], [p[i] for i in ids], ["", "gap", "", "spur", "", "spur"])
    rng = np.random.default_rng(0)
    for _ in range(5):
        order = rng.permutation(ids).tolist()
        text = "p_error,node_id,other\n" + "".join(f"{p[i]},{i},x\n" for i in order)
        m = evaluate_files(_write(tmp_path / "s.csv", text), labels)
        assert m.to_dict() == ref.to_dict()
    # Threshold = the largest negative, 0.6: gap 0.8 is above it, spurs 0.2 and 0.9 split.
    assert m.threshold_at_fpr == 0.6
    assert m.per_type == {"gap": (1, 1.0, 1.0), "spur": (2, 0.5, 0.5)}


def test_evaluate_files_refuses_extra_scored_nodes_unless_labels_are_partial(tmp_path, labels):
    # Scores of a bigger neuron numbered 1..N cover every labelled id: only the extra ids
    # tell that the two files are not of the same trace.
    text = "node_id,p_error\n" + "".join(f"{i},{0.9 if i in (2, 4, 7) else 0.1}\n" for i in range(1, 12))
    s = _write(tmp_path / "s.csv", text)
    with pytest.raises(EvaluationError, match=r"do not name the same nodes: 6 node id\(s\) in both, 5 only in the "
                                              r"scores, 0 only in the labels; .*--partial-labels"):
        evaluate_files(s, labels)
    m = evaluate_files(s, labels, partial_labels=True)
    assert m.n == 6 and m.auc == 1.0


def test_evaluate_files_without_error_type_column(tmp_path):
    lab = _write(tmp_path / "l.csv", "node_id,label\n10,1\n20,0\n")
    s = _write(tmp_path / "s.csv", "node_id,p_error\n20,0.3\n10,0.7\n")
    m = evaluate_files(s, lab)
    assert m.auc == 1.0 and m.n == 2 and m.n_errors == 1


@pytest.mark.parametrize("which", ["scores", "labels"])
def test_evaluate_files_missing_file(tmp_path, labels, which):
    s = _write(tmp_path / "s.csv", "node_id,p_error\n1,0.5\n")
    args = (tmp_path / "nope.csv", labels) if which == "scores" else (s, tmp_path / "nope.csv")
    with pytest.raises(EvaluationError, match=r"nope\.csv: no such file"):
        evaluate_files(*args)


@pytest.mark.parametrize("header, missing", [("id,p_error", "node_id"), ("node_id,score", "p_error"),
                                             ("node_id;p_error", "node_id, p_error")])
def test_evaluate_files_missing_score_columns(tmp_path, labels, header, missing):
    sep = ";" if ";" in header else ","
    s = _write(tmp_path / "s.csv", f"{header}\n1{sep}0.5\n")
    with pytest.raises(EvaluationError, match=rf"s\.csv: missing column\(s\) {missing}; has "):
        evaluate_files(s, labels)


def test_evaluate_files_missing_label_column(tmp_path):
    s = _write(tmp_path / "s.csv", "node_id,p_error\n1,0.5\n")
    lab = _write(tmp_path / "l.csv", "node_id,error_type\n1,gap\n")
    with pytest.raises(EvaluationError, match=r"l\.csv: missing column\(s\) label; has node_id, error_type"):
        evaluate_files(s, lab)


@pytest.mark.parametrize("text", ["", "node_id,p_error\n"])
def test_evaluate_files_empty(tmp_path, labels, text):
    with pytest.raises(EvaluationError, match="no rows"):
        evaluate_files(_write(tmp_path / "s.csv", text), labels)


@pytest.mark.parametrize("bad", ["1.5", "-0.01", "nan", "inf", "-inf"])
def test_evaluate_files_p_outside_unit_interval(tmp_path, labels, bad):
    rows = [(1, 0.1), (2, bad), (3, 0.3), (4, 0.2), (5, 0.6), (7, 0.9)]
    s = _write(tmp_path / "s.csv", "node_id,p_error\n" + "".join(f"{i},{v}\n" for i, v in rows))
    with pytest.raises(EvaluationError, match=r"s\.csv: p_error must lie in \[0, 1\]"):
        evaluate_files(s, labels)


def test_evaluate_files_p_at_bounds_is_fine(tmp_path, labels):
    rows = [(1, 0), (2, 1), (3, 0.0), (4, 1.0), (5, 0), (7, 1)]
    s = _write(tmp_path / "s.csv", "node_id,p_error\n" + "".join(f"{i},{v}\n" for i, v in rows))
    assert evaluate_files(s, labels).auc == 1.0


def test_evaluate_files_labelled_nodes_without_score(tmp_path, labels):
    # Nodes 4 and 7 have no score; 6 is scored but not labelled (fine).
    s = _write(tmp_path / "s.csv", "node_id,p_error\n1,0.1\n2,0.8\n3,0.3\n5,0.6\n6,0.5\n")
    with pytest.raises(EvaluationError, match=r"4 node id\(s\) in both, 1 only in the scores, 2 only in the labels, "
                                              r"e\.g\. node 4 has no score"):
        evaluate_files(s, labels)
    with pytest.raises(EvaluationError, match="e\\.g\\. node 4 has no score"):    # partial labels, but not partial scores
        evaluate_files(s, labels, partial_labels=True)
    # Above the largest scored id, too.
    s2 = _write(tmp_path / "s2.csv", "node_id,p_error\n1,0.1\n2,0.8\n3,0.3\n4,0.2\n5,0.6\n")
    with pytest.raises(EvaluationError, match=r"5 node id\(s\) in both, 0 only in the scores, 1 only in the labels, "
                                              r"e\.g\. node 7 has no score"):
        evaluate_files(s2, labels)


@pytest.mark.parametrize("scores, labels_text, value", [
    ("node_id,p_error\n1,high\n", "node_id,label\n1,1\n", "high"),
    ("node_id,p_error\nabc,0.5\n", "node_id,label\n1,1\n", "abc"),
    ("node_id,p_error\n1.5,0.5\n", "node_id,label\n1,1\n", "1.5"),
    ("node_id,p_error\n1,0.5\n", "node_id,label\n1,yes\n", "yes"),
    ("node_id,p_error\n1,0.5\n", "node_id,label\nx1,1\n", "x1"),
])
def test_evaluate_files_non_numeric(tmp_path, scores, labels_text, value):
    s = _write(tmp_path / "s.csv", scores)
    lab = _write(tmp_path / "l.csv", labels_text)
    with pytest.raises(EvaluationError, match="non-numeric node_id, p_error or label") as e:
        evaluate_files(s, lab)
    assert value in str(e.value)


def test_evaluate_files_undecodable(tmp_path, labels):
    s = tmp_path / "s.csv"
    s.write_bytes(b"\xff\xfe\x00\x01node_id")
    with pytest.raises(EvaluationError, match=r"s\.csv: not a readable CSV"):
        evaluate_files(s, labels)


def test_evaluate_files_short_label_row(tmp_path):
    s = _write(tmp_path / "s.csv", "node_id,p_error\n1,0.5\n2,0.5\n")
    lab = _write(tmp_path / "l.csv", "node_id,label\n1,1\n2\n")
    with pytest.raises(EvaluationError):
        evaluate_files(s, lab)


@pytest.mark.parametrize("text", ["node_id,p_error\n1,0.5,extra\n2,0.5\n", "node_id;p_error\n1,0.5\n"])
def test_evaluate_files_long_first_row(tmp_path, labels, text):
    s = _write(tmp_path / "s.csv", text)
    with pytest.raises(EvaluationError):
        evaluate_files(s, labels)
