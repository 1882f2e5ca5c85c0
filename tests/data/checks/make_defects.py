"""Derive the defect fixtures from ``clean.swc``: each is the clean neuron with one targeted edit.

Run from anywhere after ``make_clean.py``: ``python tests/data/checks/make_defects.py``. Every
edit below names the node ids it touches, so each fixture is the clean file plus a small,
reviewable change (the first comment lines of each file say what was changed). Node ids refer to
the structure of ``clean.swc``:

=============================  =========================================================
apical dendrite (type 4)       4-28 trunk, bifurcation 28; 29-43 (bifurcation 43) with
                               44-53 and 54-63; 64-81
axon (type 2)                  82-103 trunk, bifurcation 103; 104-118; 119-132
                               (bifurcation 132) with 133-142 and 143-152
basal dendrite (type 3)        153-162 trunk, bifurcation 162; 163-174; 175-186
basal dendrite (type 3)        187-202, unbranched
=============================  =========================================================
"""

from __future__ import annotations

import math
from pathlib import Path

HERE = Path(__file__).resolve().parent


class Swc:
    """The clean neuron as editable records [id, type, x, y, z, radius, parent]."""

    out = HERE  # where write() puts the fixture

    def __init__(self):
        self.rows = []
        for line in (HERE / "clean.swc").read_text().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            f = line.split()
            self.rows.append([int(f[0]), int(f[1]), float(f[2]), float(f[3]), float(f[4]), float(f[5]), int(f[6])])
        self.raw: dict[int, str] = {}  # id -> verbatim line that replaces the record
        self.extra_after: dict[int, list[str]] = {}  # id -> verbatim lines written after it

    def row(self, i):
        return next(r for r in self.rows if r[0] == i)

    def xyz(self, i):
        return self.row(i)[2:5]

    def set(self, i, **kw):
        r = self.row(i)
        for k, v in kw.items():
            r[["id", "type", "x", "y", "z", "radius", "parent"].index(k)] = v

    def drop(self, ids):
        ids = set(ids)
        self.rows = [r for r in self.rows if r[0] not in ids]

    def add(self, i, t, xyz, radius, parent, after=None):
        rec = [i, t, *map(lambda v: round(v, 4), xyz), round(radius, 4), parent]
        if after is None:
            self.rows.append(rec)
        else:
            k = next(k for k, r in enumerate(self.rows) if r[0] == after)
            self.rows.insert(k + 1, rec)

    @staticmethod
    def fmt(r):
        return f"{r[0]} {r[1]} {r[2]:g} {r[3]:g} {r[4]:g} {r[5]:g} {r[6]}"

    def write(self, name, *why):
        lines = [f"# {name}: clean.swc with one defect (make_defects.py)"] + [f"# {w}" for w in why]
        lines.append("# n type x y z radius parent")
        for r in self.rows:
            lines.append(self.raw.get(r[0], self.fmt(r)))
            lines += self.extra_after.get(r[0], [])
        (self.out / name).write_text("\n".join(lines) + "\n")


def unit(a, b):
    d = [y - x for x, y in zip(a, b)]
    n = math.sqrt(sum(v * v for v in d))
    return [v / n for v in d]


def along(p, d, s):
    return [x + s * v for x, v in zip(p, d)]


def perp_xy(d):
    """Unit vector in the xy plane perpendicular to d."""
    n = math.hypot(d[0], d[1])
    return [-d[1] / n, d[0] / n, 0.0]


def mid(a, b):
    return [(x + y) / 2 for x, y in zip(a, b)]


def main(out: Path = HERE) -> None:
    """Write every defect fixture into ``out`` (this folder by default)."""
    Swc.out = Path(out)
    # ---- structure ----------------------------------------------------------------------------
    s = Swc()
    r = s.row(118)
    assert 0 < r[5] < 1
    s.raw[118] = f"118 2 {r[2]:g} {r[3]:g} {r[4]:g} {r[5]:g} 117".replace(" 0.", " O.")
    s.write("parse_error.swc", "radius of tip 118 typed with a letter O instead of a zero")

    s = Swc()
    s.extra_after[63] = [Swc.fmt(s.row(63))]
    s.write("duplicate_id_copy.swc", "the line of tip 63 repeated verbatim")

    s = Swc()
    tip = s.xyz(81)
    s.add(40, 4, along(tip, unit(s.xyz(80), tip), 1.0), s.row(81)[5] * 0.985, 81)
    s.write("duplicate_id_renumber.swc", "apical tip 81 extended by one node that reuses id 40")

    s = Swc()
    s.set(152, id=-152)
    s.write("negative_id.swc", "tip 152 numbered -152")

    s = Swc()
    s.set(1, parent=-2)
    s.write("missing_parent.swc", "soma root 1 has parent id -2 instead of -1")

    s = Swc()
    s.set(192, parent=9999)
    s.write("missing_parent_gap.swc", "node 192 of the unbranched basal dendrite has parent id 9999 (no such node)")

    s = Swc()
    s.set(174, parent=174)
    s.write("self_parent.swc", "tip 174 is its own parent")

    s = Swc()
    s.set(80, parent=81)
    s.write("cycle.swc", "node 80's parent is 81 (its child): 80 -> 81 -> 80")

    # ---- gaps and geometry --------------------------------------------------------------------
    s = Swc()
    s.set(192, parent=-1)
    s.write("fragment.swc", "node 192 of the unbranched basal dendrite is a root (parent -1): a gap")

    s = Swc()
    s.set(186, **dict(zip("xyz", along(s.xyz(185), unit(s.xyz(185), s.xyz(186)), 15.0))))
    s.write("long_edge.swc", "basal tip 186 moved to 15 um from its parent 185")

    s = Swc()
    s.set(186, **dict(zip("xyz", along(s.xyz(185), unit(s.xyz(185), s.xyz(186)), 2.0))))
    s.write("abnormal_compartment.swc", "basal tip 186 moved to 2 um from its parent 185")

    s = Swc()
    s.set(142, z=round(s.xyz(142)[2] + 35.0, 4))
    s.write("z_jump.swc", "axon tip 142 moved 35 um along z")

    # loop: a new branch from 166 (on 163-174) that ends exactly on a node of the sister branch.
    s = Swc()
    a = s.xyz(166)
    target = min(range(175, 187), key=lambda i: abs(math.dist(a, s.xyz(i)) - 6.0))
    b = s.xyz(target)
    n = round(math.dist(a, b))
    for k in range(1, n + 1):
        p = b if k == n else [x + k / n * (y - x) for x, y in zip(a, b)]
        s.add(202 + k, 3, p, 0.5 * 0.985 ** k, 166 if k == 1 else 202 + k - 1)
    s.write("loop.swc", f"a new {n}-node branch 203-{202 + n} from 166 ends exactly on node {target} of the sister branch")

    s = Swc()
    s.add(203, 4, s.xyz(71), s.row(71)[5], 70, after=71)
    s.write("duplicate_point.swc", "node 203: a second child of 70 at the position of 71 (double click)")

    s = Swc()
    s.add(203, 4, s.xyz(70), s.row(71)[5] * 0.985, 71, after=71)
    s.write("duplicate_point_nonsibling.swc", "node 203: a child of 71 placed at the position of 70")

    s = Swc()
    s.add(203, 2, s.xyz(95), s.row(95)[5], 95, after=95)
    s.set(96, parent=203)
    s.write("zero_length_segment.swc", "node 203 inserted between 95 and 96 at the position of 95")

    # overlapping segments: a branch from 66 that retraces 67-72 at 0.3 um to the side.
    s = Swc()
    rad = s.row(66)[5]
    for k in range(1, 7):
        i = 66 + k
        off = perp_xy(unit(s.xyz(i - 1), s.xyz(i)))
        s.add(202 + k, 4, along(s.xyz(i), off, 0.3), rad * 0.985 ** k, 66 if k == 1 else 202 + k - 1)
    s.write("overlapping_segments.swc", "a new branch 203-208 from 66 retraces nodes 67-72 at 0.3 um to the side")

    # back-tracking: tip 53 extended by two nodes that run back along 51-53, 0.3 um to the side.
    s = Swc()
    off = perp_xy(unit(s.xyz(52), s.xyz(53)))
    s.add(203, 4, along(mid(s.xyz(52), s.xyz(53)), off, 0.3), s.row(53)[5] * 0.985, 53)
    s.add(204, 4, along(mid(s.xyz(51), s.xyz(52)), off, 0.3), s.row(53)[5] * 0.985 ** 2, 203)
    s.write("back_tracking.swc", "tip 53 extended by 203-204, which turn back along the segments 51-52-53")

    # ---- branching ----------------------------------------------------------------------------
    s = Swc()
    p = s.xyz(132)
    for k in range(1, 5):
        s.add(202 + k, 2, [p[0], p[1], p[2] + k], s.row(132)[5] * 0.8 * 0.985 ** k, 132 if k == 1 else 202 + k - 1)
    s.write("multifurcation.swc", "a third child branch 203-206 (along +z) at axon bifurcation 132")

    s = Swc()
    p = s.xyz(44)
    for k in range(1, 4):
        s.add(202 + k, 4, [p[0], p[1], p[2] + k], s.row(44)[5] * 0.8 * 0.985 ** k, 44 if k == 1 else 202 + k - 1)
    s.write("near_bifurcation.swc", "a side branch 203-205 (along +z) at node 44, 1 um after bifurcation 43")

    # ---- types --------------------------------------------------------------------------------
    s = Swc()
    s.set(151, type=0)
    s.set(152, type=0)
    s.write("undefined_type.swc", "axon nodes 151-152 typed 0 (undefined)")

    s = Swc()
    for i in (193, 194, 195):
        s.set(i, type=2)
    s.write("type_change.swc", "nodes 193-195 in the middle of the unbranched basal dendrite typed axon")

    s = Swc()
    for i in list(range(119, 133)) + list(range(133, 143)):
        s.set(i, type=3)
    s.write("type_change_twice.swc", "axon nodes 119-142 typed basal dendrite; 143-152 (from bifurcation 132) stay axon")

    s = Swc()
    for i in range(104, 119):
        s.set(i, type=3)
    s.write("parent_type_violation.swc", "axon branch 104-118 (from bifurcation 103) typed basal dendrite")

    s = Swc()
    s.rows = [r for r in s.rows if 4 <= r[0] <= 81]
    s.set(4, parent=-1)
    s.write("no_soma.swc", "only the apical dendrite 4-81, rooted at 4 (no soma)")

    s = Swc()
    s.add(203, 1, [60.0, 60.0, 0.0], 4.0, -1)
    s.write("multiple_somas.swc", "a second, separate one-node soma 203 at (60, 60, 0)")

    s = Swc()
    s.set(1, parent=82)
    s.set(82, parent=-1)
    s.write("soma_not_root.swc", "the file is rooted at axon node 82; soma node 1 hangs from it")

    s = Swc()
    s.drop(range(82, 153))
    s.write("no_axon.swc", "the axon 82-152 removed")

    # ---- radii and the soma -------------------------------------------------------------------
    s = Swc()
    s.set(10, radius=0.0)
    s.set(160, radius=-1.0)
    s.write("nonpositive_radius.swc", "node 10 has radius 0 and node 160 radius -1")

    s = Swc()
    s.set(174, radius=round(s.row(174)[5] * 4, 4))
    s.write("fat_end.swc", "tip 174 has 4x its clean radius")

    s = Swc()
    s.set(187, radius=0.2)
    s.write("narrow_start.swc", "first node 187 of a basal dendrite has radius 0.2")

    s = Swc()
    s.drop(range(187, 193))
    s.set(193, parent=1)
    s.write("root_node_jump.swc", "basal dendrite nodes 187-192 removed; 193 attached to the soma")

    s = Swc()
    s.drop(range(187, 200))
    s.set(200, parent=1)
    s.write("dangling_neurite.swc", "basal dendrite nodes 187-199 removed; 200 attached to the soma")

    # The exemption of dangling_neurite: an axon that starts on a dendrite does not dangle.
    s = Swc()
    shift = [a - b for a, b in zip(along(s.xyz(200), [0.0, -1.0, 0.0], 1.5), s.xyz(82))]
    for i in range(82, 153):
        s.set(i, **dict(zip("xyz", [round(v + d, 4) for v, d in zip(s.xyz(i), shift)])))
    s.set(82, parent=-1)
    s.write("axon_on_dendrite.swc", "the axon 82-152 is a separate tree, moved to start 1.5 um beside basal dendrite node 200")


if __name__ == "__main__":
    main()
