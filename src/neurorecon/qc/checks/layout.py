"""How a file was made, where that changes what a finding means.

Skeletons made from segmentations (FlyEM's hemibrain, as navis writes them) label nodes by their
place in the tree, not by compartment: 0 undefined, 5 fork point, 6 end point, and 1 the soma.
Their root is wherever the skeletonisation started, so the soma sits inside the tree; their radii
are measured from the mask, which swells at boutons and cut ends, so tips are often the fattest
nodes of their branch. Those are the format's conventions, not an error at each place: the checks
that would fire on them say so once per file, as information.
"""

from __future__ import annotations

import numpy as np

from ...morphology import types as T

#: The labels of a tree-position labelling: undefined, soma, fork point, end point.
TREE_POSITION_TYPES = (T.UNDEFINED, T.SOMA, T.FORK_POINT, T.END_POINT)
LAYOUT = "a skeleton made from a segmentation: FlyEM/navis types 0, 5 = fork, 6 = end"


def tree_position_labels(ctx) -> bool:
    """True when the types label tree positions, not compartments: only 0, 1, 5 and 6, type 0 on
    most nodes, and the 5s and 6s where they say (forks and tips, nine in ten at least)."""
    return ctx.cached("tree_position_labels", lambda: _tree_position_labels(ctx.neuron))


def _tree_position_labels(n) -> bool:
    t = n.types
    if len(t) == 0 or not np.isin(t, TREE_POSITION_TYPES).all() or (t == 0).mean() < 0.5:
        return False
    fork, end = t == T.FORK_POINT, t == T.END_POINT
    if not (fork.any() and end.any()):
        return False
    kids = n.n_children
    return bool((kids[fork] >= 2).mean() >= 0.9 and (kids[end] == 0).mean() >= 0.9)
