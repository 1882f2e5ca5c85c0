"""Derived quantities shared by the checks, computed once per neuron and only when asked for."""

from __future__ import annotations

from functools import cached_property

import numpy as np

from ..morphology import graph, types as T
from ..morphology.neuron import Neuron
from .config import CheckConfig


def median(x: np.ndarray) -> float:
    """The median of a non-empty 1-d array, as ``np.median`` gives it. By partition: np.median
    imports numpy.ma on first use (its NaN check), 10 ms of a 0.2 s ``check`` process."""
    x = np.asarray(x, dtype=float)
    k = len(x) // 2
    if len(x) % 2:
        return float(np.partition(x, k)[k])
    part = np.partition(x, [k - 1, k])
    return float((part[k - 1] + part[k]) / 2)


def percentile(x: np.ndarray, q: float) -> float:
    """``np.percentile(x, q)`` (linear interpolation) of a non-empty 1-d array, by partition."""
    x = np.asarray(x, dtype=float)
    pos = (len(x) - 1) * q / 100.0
    lo = int(np.floor(pos))
    hi = min(lo + 1, len(x) - 1)
    part = np.partition(x, [lo, hi])
    return float(part[lo] + (part[hi] - part[lo]) * (pos - lo))


def unique(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a 1-d array (``np.unique`` without its masked-array check,
    which imports numpy.ma)."""
    s = np.sort(np.asarray(x).ravel())
    return s[np.concatenate(([True], s[1:] != s[:-1]))] if len(s) else s


def row_medians(vals: np.ndarray) -> np.ndarray:
    """Median of the non-NaN values of each row (NaN where a row has none), without np.nanmedian
    (which also imports numpy.ma)."""
    s = np.sort(vals, axis=1)                    # NaN sort last
    count = (~np.isnan(vals)).sum(axis=1)
    rows = np.arange(len(vals))
    lo = s[rows, np.maximum(count - 1, 0) // 2]
    hi = s[rows, np.maximum(count, 1) // 2 - (count == 0)]
    return np.where(count > 0, (lo + hi) / 2, np.nan)


class CheckContext:
    def __init__(self, neuron: Neuron, config: CheckConfig):
        self.neuron = neuron
        self.config = config
        self.th = config.thresholds
        self._cache: dict = {}

    def cached(self, key: str, compute):
        """A value several checks share (e.g. one close-pair search), computed on first use."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    # ---------------------------------------------------------------- basics
    @cached_property
    def parent(self) -> np.ndarray:
        return self.neuron.parent

    @cached_property
    def is_soma(self) -> np.ndarray:
        return self.neuron.types == T.SOMA

    @cached_property
    def neurite_edge(self) -> np.ndarray:
        """True for nodes whose edge to their parent lies outside the soma."""
        p = self.parent
        out = (p >= 0) & ~self.is_soma
        out[out] &= ~self.is_soma[p[out]]
        return out

    @cached_property
    def spacing(self) -> float:
        """The neuron's typical node spacing: median length of its non-zero neurite edges."""
        e = self.neuron.edge_length[self.neurite_edge]
        e = e[e > 0]
        if len(e) == 0:
            e = self.neuron.edge_length[self.neuron.edge_length > 0]
        return median(e) if len(e) else 1.0

    @cached_property
    def walk(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(root row, path length to root, reaches a root) for every node."""
        return graph.ancestor_sums(self.parent, self.neuron.edge_length)

    @property
    def root_of(self) -> np.ndarray:
        return self.walk[0]

    @property
    def path_length(self) -> np.ndarray:
        return self.walk[1]

    @property
    def rooted(self) -> np.ndarray:
        return self.walk[2]

    @cached_property
    def main_root(self) -> int:
        """Root of the soma tree: the tree holding most soma nodes, else the largest tree."""
        roots = self.root_of[self.rooted]
        if len(roots) == 0:
            return -1
        n = len(self.parent)
        size = np.bincount(roots, minlength=n)
        soma = np.bincount(self.root_of[self.rooted & self.is_soma], minlength=n)
        return int(np.lexsort((-np.arange(n), size, soma))[-1])

    @cached_property
    def in_main_tree(self) -> np.ndarray:
        return self.rooted & (self.root_of == self.main_root)

    @cached_property
    def section_start(self) -> np.ndarray:
        return graph.section_starts(self.parent, self.neuron.n_children)

    @cached_property
    def section(self) -> np.ndarray:
        return graph.nearest_marked_ancestor(self.parent, self.section_start)

    @cached_property
    def only_child(self) -> np.ndarray:
        """For nodes with exactly one child, that child's row (-1 otherwise)."""
        out = np.full(len(self.parent), -1, dtype=np.int64)
        has = np.flatnonzero(self.parent >= 0)
        out[self.parent[has]] = has
        out[self.neuron.n_children != 1] = -1
        return out

    # ---------------------------------------------------------------- soma
    @cached_property
    def soma_rows(self) -> np.ndarray:
        return np.flatnonzero(self.is_soma)

    @cached_property
    def soma_center(self) -> np.ndarray | None:
        if len(self.soma_rows) == 0:
            return None
        return self.neuron.xyz[self.soma_rows].mean(axis=0)

    @cached_property
    def soma_radius(self) -> float:
        """Radius of the soma: its largest node radius or the spread of its contour points."""
        rows = self.soma_rows
        if len(rows) == 0:
            return 0.0
        spread = np.linalg.norm(self.neuron.xyz[rows] - self.soma_center, axis=1).mean()
        return float(max(self.neuron.radius[rows].max(), spread))

    @cached_property
    def soma_is_marker(self) -> bool:
        """A single soma node no wider than the first nodes of its neurites marks where the soma
        is, not how big it is (MouseLight writes radius 1 for soma and neurites alike)."""
        roots = self.neurite_roots
        if len(self.soma_rows) != 1 or len(roots) == 0:
            return False
        return bool(self.neuron.radius[self.soma_rows[0]] <= self.neuron.radius[roots].max())

    @cached_property
    def soma_reach(self) -> float:
        """How far from the soma centre its neurites may start: the soma radius or, for a marker
        soma, the median distance at which the neurites attached to it start (the file's own
        layout; MouseLight connects dendrites traced from the soma surface to the marker)."""
        if not self.soma_is_marker:
            return self.soma_radius
        roots = self.neurite_roots
        roots = roots[self.parent[roots] >= 0]
        if len(roots) == 0:
            return self.soma_radius
        d = np.linalg.norm(self.neuron.xyz[roots] - self.soma_center, axis=1)
        return float(max(self.soma_radius, median(d)))

    @cached_property
    def neurite_roots(self) -> np.ndarray:
        """First node of every neurite: non-soma nodes whose parent is a soma node or missing."""
        p = self.parent
        rows = np.flatnonzero(~self.is_soma)
        pr = p[rows]
        first = (pr < 0) | self.is_soma[np.where(pr >= 0, pr, 0)]
        return rows[first]

    # ---------------------------------------------------------------- types
    @cached_property
    def informative(self) -> np.ndarray:
        """Nodes whose type names a neurite compartment (not soma, undefined, fork or end point)."""
        t = self.neuron.types
        return ~np.isin(t, T.UNINFORMATIVE) & (t != T.SOMA)
