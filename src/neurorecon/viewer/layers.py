"""Neuroglancer layers for neurorecon data: images, label volumes, SWC skeletons, flags.

Coordinates: the viewer's global space is x, y, z in µm (SWC units). Images are served lazily
from :class:`neurorecon.io.volume.Volume` (indexed [z, y, x]) through ``LocalVolume``; since
Neuroglancer draws voxel i over [i, i+1) while neurorecon puts its centre at i * voxel size,
every volume gets a -0.5 voxel translation, so that a node at a voxel's centre is drawn there.
"""

from __future__ import annotations

import numpy as np
import neuroglancer
import neuroglancer.skeleton

from ..io.volume import Volume
from ..morphology.neuron import Neuron
from .flags import Flag

__all__ = ["um_space", "image_layer", "segmentation_layer", "skeleton_layer", "flag_layer", "flag_props",
           "DECISION_CODES", "TYPE_COLORS", "FLAG_COLORS", "focus_point", "volume_bounds"]

#: The ``decision`` annotation property: 0 undecided.
DECISION_CODES = {"accept": 1, "reject": 2, "error": 3}

#: Skeleton colour per SWC type (1 soma, 2 axon, 3 basal, 4 apical; 0 undefined, 5+ other).
TYPE_COLORS = {0: (0.6, 0.6, 0.6), 1: (1.0, 1.0, 0.0), 2: (0.2, 0.45, 1.0), 3: (1.0, 0.3, 0.3), 4: (1.0, 0.3, 1.0),
               5: (0.3, 1.0, 0.6)}
#: Flag colour per decision: none of them is a type colour (at least 0.45 apart in RGB).
FLAG_COLORS = {None: (1.0, 1.0, 1.0), "accept": (0.0, 1.0, 1.0), "reject": (0.3, 0.3, 0.3),
               "error": (0.55, 0.0, 1.0)}


def _vec3(c) -> str:
    return "vec3(" + ", ".join(f"{v:.2f}" for v in c) + ")"


# The type is a float vertex attribute that the GPU interpolates along each edge: rounding keeps
# it categorical.
SKELETON_SHADER = f"""
void main() {{
  float t = floor(node_type + 0.5);
  vec3 c = {_vec3(TYPE_COLORS[0])};
  if (t == 1.0) c = {_vec3(TYPE_COLORS[1])};
  else if (t == 2.0) c = {_vec3(TYPE_COLORS[2])};
  else if (t == 3.0) c = {_vec3(TYPE_COLORS[3])};
  else if (t == 4.0) c = {_vec3(TYPE_COLORS[4])};
  else if (t >= 5.0) c = {_vec3(TYPE_COLORS[5])};
  emitRGB(c);
}}
"""

# Flags are rings (a translucent fill inside a solid border), a shape the trace's filled dots do
# not have, sized by priority; the flag on screen is a large hollow ring with a thick border, so
# the eye finds it at the centre of the view.
FLAG_SHADER = f"""
void main() {{
  uint d = prop_decision();
  vec3 c = {_vec3(FLAG_COLORS[None])};
  if (d == 1u) c = {_vec3(FLAG_COLORS["accept"])};
  else if (d == 2u) c = {_vec3(FLAG_COLORS["reject"])};
  else if (d == 3u) c = {_vec3(FLAG_COLORS["error"])};
  bool current = prop_current() > 0u;
  setPointMarkerColor(vec4(c, current ? 0.0 : 0.3));
  setPointMarkerBorderColor(vec4(c, 1.0));
  setPointMarkerBorderWidth(current ? 4.0 : 2.0);
  setPointMarkerSize(current ? 30.0 : 10.0 + 8.0 * prop_priority());
}}
"""


def um_space() -> neuroglancer.CoordinateSpace:
    """The global space: x, y, z in µm."""
    return neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="um", scales=[1, 1, 1])


class _VolumeArray:
    """What ``LocalVolume`` reads: ``shape``, ``dtype`` and ``[slices] -> ndarray``, over a lazy
    :class:`Volume`. Chunk requests arrive on the server's worker threads; every Volume reader is
    safe there (tensorstore, memory maps and per-call file reads; a compressed TIFF may be decoded
    twice by two first requests, which costs time, not correctness)."""

    def __init__(self, volume: Volume, dtype=None):
        self._volume = volume
        self.shape = tuple(volume.shape)
        self.dtype = np.dtype(dtype or volume.dtype)

    def __getitem__(self, box) -> np.ndarray:
        lo = [s.start for s in box]
        hi = [s.stop for s in box]
        # LocalVolume wraps the result with np.array(copy=False): give it an owned, contiguous array.
        return np.ascontiguousarray(self._volume.read(lo, hi), dtype=self.dtype)


def _source(volume: Volume, volume_type: str, dtype=None) -> neuroglancer.LayerDataSource:
    vx, vy, vz = volume.voxel_size
    zyx = neuroglancer.CoordinateSpace(names=["z", "y", "x"], units="um", scales=[vz, vy, vx])
    # volume_type is explicit: LocalVolume would take any 3-D uint16 image for a segmentation.
    local = neuroglancer.LocalVolume(_VolumeArray(volume, dtype), dimensions=zyx, volume_type=volume_type)
    shift = neuroglancer.CoordinateSpaceTransform(output_dimensions=zyx,
                                                  matrix=[[1, 0, 0, -0.5], [0, 1, 0, -0.5], [0, 0, 1, -0.5]])
    return neuroglancer.LayerDataSource(url=local, transform=shift)


def display_range(volume: Volume, max_side: int = 128) -> tuple[float, float]:
    """A contrast range from a central box of at most ``max_side`` voxels a side (0.5 and 99.9
    percentiles, so that faint fibres show and a few bright beads do not set the scale)."""
    shape = np.asarray(volume.shape)
    lo = np.maximum(shape // 2 - max_side // 2, 0)
    hi = np.minimum(lo + max_side, shape)
    sample = volume.read(lo.tolist(), hi.tolist()).astype(np.float64, copy=False)
    a, b = np.percentile(sample, [0.5, 99.9]) if sample.size else (0.0, 1.0)
    return float(a), float(max(b, a + 1))


def image_layer(volume: Volume) -> neuroglancer.ImageLayer:
    """A grey-scale image layer, read lazily, contrast from :func:`display_range`."""
    a, b = display_range(volume)
    shader = (f"#uicontrol invlerp normalized(range=[{a:g}, {b:g}])\n"
              "void main() { emitGrayscale(normalized()); }\n")
    return neuroglancer.ImageLayer(source=_source(volume, "image"), shader=shader)


def segmentation_layer(volume: Volume) -> neuroglancer.SegmentationLayer:
    """A label volume (0 background); signed or float labels are served as uint32/uint64."""
    dt = np.dtype(volume.dtype)
    if dt.kind != "u" or dt.itemsize not in (1, 2, 4, 8):
        dt = np.dtype(np.uint64 if dt.itemsize > 4 else np.uint32)
    return neuroglancer.SegmentationLayer(source=_source(volume, "segmentation", dt))


class SwcSkeletonSource(neuroglancer.skeleton.SkeletonSource):
    """One SWC trace as skeleton 1, vertices in µm, with the node type as a vertex attribute.

    Each edge gets its own two vertices, both with the child's type, so that an edge is one
    colour (a shared vertex would blend the types of two branches); a root is a zero-length edge.
    """

    def __init__(self, neuron: Neuron):
        super().__init__(um_space())
        self.vertex_attributes["node_type"] = neuroglancer.skeleton.VertexAttributeInfo(
            data_type=np.float32, num_components=1)
        parent = neuron.parent
        other = np.where(parent >= 0, parent, np.arange(len(neuron)))
        self._pos = np.stack([neuron.xyz, neuron.xyz[other]], axis=1).reshape(-1, 3).astype(np.float32)
        self._types = np.repeat(neuron.types.astype(np.float32), 2)
        self._edges = np.arange(len(self._pos), dtype=np.uint32).reshape(-1, 2)

    def get_skeleton(self, object_id):
        if int(object_id) != 1:
            return None
        return neuroglancer.skeleton.Skeleton(vertex_positions=self._pos, edges=self._edges,
                                              vertex_attributes={"node_type": self._types})


def skeleton_layer(neuron: Neuron) -> neuroglancer.SegmentationLayer:
    """The trace as a skeleton coloured by SWC type (drawn whole in 3-D, near the slice in 2-D)."""
    layer = neuroglancer.SegmentationLayer(source=[SwcSkeletonSource(neuron)], segments=[1],
                                           skeleton_shader=SKELETON_SHADER)
    layer.skeleton_rendering.line_width2d = 3
    layer.skeleton_rendering.mode2d = "lines_and_points"
    return layer


def flag_props(flag: Flag, decision: str | None, current: bool) -> list:
    """The annotation properties of one flag: priority, current, decision (in :func:`flag_layer` order)."""
    return [flag.priority, int(current), DECISION_CODES.get(decision, 0)]


def flag_id(k: int) -> str:
    """The annotation id of flag ``k`` (review order)."""
    return f"flag{k}"


def flag_description(flag: Flag) -> str:
    p = "" if flag.p is None else f" p={flag.p:.2f}"
    return f"node {flag.node_id} {flag.check}{p}: {flag.reason} | fix: {flag.describe_fix()}"


def flag_layer(flags: list[Flag], decisions: list[str | None], current: int | None) -> neuroglancer.LocalAnnotationLayer:
    """The flags as points, in review order, coloured by priority and decision."""
    props = [neuroglancer.AnnotationPropertySpec(id="priority", type="float32", default=0),
             neuroglancer.AnnotationPropertySpec(id="current", type="uint8", default=0),
             neuroglancer.AnnotationPropertySpec(id="decision", type="uint8", default=0)]
    anns = [neuroglancer.PointAnnotation(id=flag_id(k), point=list(f.xyz), description=flag_description(f),
                                         props=flag_props(f, d, k == current))
            for k, (f, d) in enumerate(zip(flags, decisions))]
    return neuroglancer.LocalAnnotationLayer(dimensions=um_space(), annotation_properties=props, annotations=anns,
                                             shader=FLAG_SHADER)


def volume_bounds(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """The volume's extent in µm (x, y, z): voxel i covers [i - 0.5, i + 0.5) voxels."""
    vs = np.asarray(volume.voxel_size, float)
    return -0.5 * vs, (np.asarray(volume.shape[::-1], float) - 0.5) * vs


def focus_point(xyz, volume: Volume | None) -> list[float]:
    """Where the view centres for a flag at ``xyz``: the node itself, pulled into the volume where
    it lies outside (a trace may run past its crop), so that the slice always cuts the image.

    Examples
    --------
    >>> from neurorecon.io.volume import open_volume
    >>> v = open_volume(np.zeros((4, 10, 10), np.uint8), voxel_size=(1, 1, 2))
    >>> focus_point([3.0, -2.0, 9.0], v)
    [3.0, -0.499, 6.999]
    """
    p = np.asarray(xyz, float)
    if volume is None:
        return p.tolist()
    lo, hi = volume_bounds(volume)
    eps = 1e-3      # strictly inside: on the far face the slice would show the next, absent voxel
    return np.clip(p, lo + eps, hi - eps).round(4).tolist()
