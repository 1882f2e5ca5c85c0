"""The context model's features: first scores gathered up and down the tree."""

from __future__ import annotations

import numpy as np
import pytest

from neurorecon.detect.context import NAMES, context_features, logit

# 0-1-2-3-4 a line; 5-6-7 a branch leaving node 2; 8-9 a second piece.
PARENT = np.array([-1, 0, 1, 2, 3, 2, 5, 6, -1, 8])
P = np.array([0.1, 0.2, 0.3, 0.9, 0.2, 0.1, 0.1, 0.6, 0.05, 0.5])
SEC_POS = np.arange(10) * 1.5          # passed through (the feature table's µm columns)
SEC_LEN = np.full(10, 40.0)


@pytest.fixture(scope="module")
def table():
    C = context_features(PARENT, P, SEC_POS, SEC_LEN)
    return {name: C[:, k] for k, name in enumerate(NAMES)}


def test_shape_and_own_score(table):
    assert len(table) == len(NAMES)
    np.testing.assert_allclose(table["logit"], logit(P), rtol=1e-6)


def test_strongest_score_below_within_reach(table):
    lp = logit(P)
    # Node 0 sees node 3 (3 hops down) at 5 hops but not at 2; node 5 sees its tip 7 at 2 hops.
    assert table["down2"][0] == pytest.approx(lp[2])
    assert table["down5"][0] == pytest.approx(lp[3])
    assert table["down2"][5] == pytest.approx(lp[7])
    # Nothing below a tip but itself; pieces do not see each other.
    assert table["down20"][4] == pytest.approx(lp[4])
    assert table["down20"][8] == pytest.approx(lp[9])


def test_strongest_score_above_and_its_distance(table):
    lp = logit(P)
    assert table["up2"][4] == pytest.approx(lp[3])
    assert table["up20"][7] == pytest.approx(lp[7])          # itself is the strongest on its way up
    assert table["up10_hops"][4] == 1                        # node 3 is its parent
    assert table["up5"][9] == pytest.approx(lp[9])           # a root has nothing above


def test_section_columns(table):
    lp = logit(P)
    # Node 6's section is 5-6-7 (after the branch point 2): it ends in tip 7 and leaves from 2.
    assert table["sec_tip"][6] == pytest.approx(lp[7])
    assert table["sec_start_parent"][6] == pytest.approx(lp[2])
    assert table["sec_pos"][6] == pytest.approx(9.0) and table["sec_len"][6] == pytest.approx(40.0)
    assert table["sec_max"][6] == pytest.approx(lp[7])
    assert table["sec_mean"][6] == pytest.approx((lp[5] + lp[6] + lp[7]) / 3)


def test_empty_and_single_node():
    assert context_features(np.zeros(0, int), np.zeros(0), np.zeros(0), np.zeros(0)).shape == (0, len(NAMES))
    one = context_features(np.array([-1]), np.array([0.7]), np.zeros(1), np.zeros(1))
    assert one.shape == (1, len(NAMES)) and np.isfinite(one).all()
