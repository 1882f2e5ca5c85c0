"""SWC node types and how neurorecon interprets them.

The SWC standard (Cannon et al. 1998) defines 0 undefined, 1 soma, 2 axon, 3 basal dendrite,
4 apical dendrite, 5 fork point, 6 end point, 7 custom. Fork/end points (used by the FlyEM
hemibrain and some MouseLight exports) describe topology, not compartment, so checks that
reason about compartments treat 0, 5 and 6 as "no compartment information".
"""

from __future__ import annotations

UNDEFINED = 0
SOMA = 1
AXON = 2
BASAL_DENDRITE = 3
APICAL_DENDRITE = 4
FORK_POINT = 5
END_POINT = 6
CUSTOM = 7

NAMES = {
    UNDEFINED: "undefined",
    SOMA: "soma",
    AXON: "axon",
    BASAL_DENDRITE: "basal dendrite",
    APICAL_DENDRITE: "apical dendrite",
    FORK_POINT: "fork point",
    END_POINT: "end point",
    CUSTOM: "custom",
}

#: Types that carry no compartment information.
UNINFORMATIVE = (UNDEFINED, FORK_POINT, END_POINT)


def type_name(t: int) -> str:
    return NAMES.get(int(t), f"type {int(t)}")
