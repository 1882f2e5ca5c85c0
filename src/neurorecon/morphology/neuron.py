"""The array-based neuron: one numpy array per SWC column, never one Python object per node."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from . import graph


@dataclass(frozen=True)
class ParseProblem:
    """A line of the source file that could not be read."""

    line: int
    message: str
    text: str = ""


@dataclass(frozen=True, eq=False)
class Neuron:
    """A reconstruction as parallel arrays, in file order.

    Parameters
    ----------
    ids, types, parent_ids : (N,) int arrays
        The SWC id, type and parent id columns exactly as read (parent id -1 marks a root).
    xyz : (N, 3) float64
        Node positions in the file's units (µm by SWC convention).
    radius : (N,) float64
    extra : (N, K) float64
        Columns after the seventh (Vaa3D/TeraFly ESWC), kept for round trips; NaN where a
        line had fewer columns than the widest one.
    extra_names : names of the extra columns.
    header : comment lines (without the leading ``#``) kept for round trips.
    source : where the neuron was read from, for messages.
    parse_problems : lines that could not be read (only when read with ``strict=False``).

    The structure may be broken (duplicate ids, missing parents, cycles): a neuron that parses
    always loads, so that it can be checked. Derived arrays such as :attr:`parent` resolve ids to
    row indices and are computed once, on first use.
    """

    ids: np.ndarray
    types: np.ndarray
    xyz: np.ndarray
    radius: np.ndarray
    parent_ids: np.ndarray
    extra: np.ndarray = None  # type: ignore[assignment]
    extra_names: tuple[str, ...] = ()
    header: tuple[str, ...] = ()
    source: str | None = None
    parse_problems: tuple[ParseProblem, ...] = field(default=())

    def __post_init__(self) -> None:
        n = len(self.ids)
        coerce = {
            "ids": np.int64,
            "types": np.int64,
            "parent_ids": np.int64,
            "radius": np.float64,
        }
        for name, dtype in coerce.items():
            arr = np.ascontiguousarray(getattr(self, name), dtype=dtype)
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
            object.__setattr__(self, name, arr)
        xyz = np.ascontiguousarray(self.xyz, dtype=np.float64).reshape(-1, 3) if n else np.zeros((0, 3))
        if xyz.shape != (n, 3):
            raise ValueError(f"xyz must have shape ({n}, 3), got {xyz.shape}")
        object.__setattr__(self, "xyz", xyz)
        extra = np.zeros((n, 0)) if self.extra is None else np.asarray(self.extra, dtype=np.float64)
        if extra.ndim != 2 or extra.shape[0] != n:
            raise ValueError(f"extra must have shape ({n}, K), got {extra.shape}")
        names = tuple(self.extra_names) or tuple(f"extra{i + 1}" for i in range(extra.shape[1]))
        if len(names) != extra.shape[1]:
            raise ValueError(f"{len(names)} extra column names for {extra.shape[1]} extra columns")
        object.__setattr__(self, "extra", extra)
        object.__setattr__(self, "extra_names", names)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_arrays(cls, ids, types, xyz, radius, parent_ids, **kwargs) -> "Neuron":
        return cls(ids=ids, types=types, xyz=xyz, radius=radius, parent_ids=parent_ids, **kwargs)

    def with_changes(self, **changes) -> "Neuron":
        """A copy with some columns replaced (derived arrays are recomputed)."""
        return replace(self, **changes)

    def take(self, rows: np.ndarray) -> "Neuron":
        """A neuron made of the given rows (indices or boolean mask), ids unchanged."""
        rows = np.asarray(rows)
        return replace(
            self,
            ids=self.ids[rows],
            types=self.types[rows],
            xyz=self.xyz[rows],
            radius=self.radius[rows],
            parent_ids=self.parent_ids[rows],
            extra=self.extra[rows],
        )

    # ----------------------------------------------------------------- basic facts
    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_nodes(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        src = f", source={self.source!r}" if self.source else ""
        return f"Neuron(n_nodes={self.n_nodes}, n_roots={len(self.roots)}{src})"

    # ----------------------------------------------------------------- derived structure
    @cached_property
    def parent(self) -> np.ndarray:
        """Row index of each node's parent; -1 for roots and for parents that do not exist."""
        return graph.resolve_parents(self.ids, self.parent_ids)

    @cached_property
    def roots(self) -> np.ndarray:
        return np.flatnonzero(self.parent < 0)

    @cached_property
    def n_children(self) -> np.ndarray:
        return graph.child_counts(self.parent)

    @cached_property
    def edge_length(self) -> np.ndarray:
        """Distance from each node to its parent (0 for roots)."""
        return graph.edge_lengths(self.xyz, self.parent)

    @cached_property
    def in_cycle(self) -> np.ndarray:
        """True for nodes whose parent chain loops back on itself."""
        return graph.cycle_mask(self.parent)

    def index_of(self, ids) -> np.ndarray:
        """Row indices of the given ids (-1 where absent)."""
        return graph.lookup(self.ids, np.asarray(ids, dtype=np.int64))
