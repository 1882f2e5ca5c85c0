"""Minimal neuroglancer prototype for `neurorecon review` (research only).

Image (numpy uint8, z,y,x) + skeleton (SWC-like, µm, coloured by node type)
+ point annotations (flags, coloured/sized by priority) + key bindings that run
Python actions and write decisions atomically to a JSON file.

Run standalone:  python ng_proto.py /tmp/review.json   (prints URL, serves until Ctrl-C)
Import:          viewer, url = build_viewer(path)
"""

import json
import os
import sys
import tempfile
import threading
import time

import numpy as np
import neuroglancer
import neuroglancer.skeleton

UM = "um"
VOXEL_UM = (0.5, 0.5, 1.0)  # x, y, z voxel size in µm

# SWC-ish: id, type, x, y, z (µm), parent
SWC = [
    (1, 1, 10.0, 10.0, 5.0, -1),   # soma
    (2, 3, 20.0, 15.0, 8.0, 1),    # dendrite
    (3, 2, 30.0, 25.0, 12.0, 2),   # axon
]
FLAGS = [  # node id, priority (higher = first), proposed fix
    dict(node=3, priority=0.9, fix="connect to 2"),
    dict(node=2, priority=0.4, fix="delete"),
]

SKELETON_SHADER = """
void main() {
  // node_type: float32 vertex attribute (SWC type code). It is interpolated along
  // each edge, so compare the rounded value (each half-edge takes its node's colour).
  float t = floor(node_type + 0.5);
  vec3 c = vec3(0.8, 0.8, 0.8);
  if (t == 1.0) c = vec3(1.0, 1.0, 0.0);      // soma: yellow
  else if (t == 2.0) c = vec3(0.2, 0.6, 1.0); // axon: blue
  else if (t == 3.0) c = vec3(1.0, 0.3, 0.3); // basal dendrite: red
  else if (t == 4.0) c = vec3(1.0, 0.3, 1.0); // apical: magenta
  emitRGB(c);
}
"""

FLAG_SHADER = """
void main() {
  // priority in [0,1] -> green..red; current flag drawn bigger
  setColor(mix(vec3(0.0, 1.0, 0.0), vec3(1.0, 0.0, 0.0), prop_priority()));
  setPointMarkerSize(prop_current() > 0u ? 20.0 : 10.0);
}
"""


def atomic_write_json(path, obj):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".review.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class SwcSkeletonSource(neuroglancer.skeleton.SkeletonSource):
    """One skeleton (segment id 1); vertex positions directly in µm."""

    def __init__(self, dims, swc):
        super().__init__(dims)
        self.vertex_attributes["node_type"] = neuroglancer.skeleton.VertexAttributeInfo(
            data_type=np.float32, num_components=1)
        # Vertex attributes are interpolated along edges, so a categorical attribute
        # (SWC type) would blend (1 -> 3 passes through 2). Give every edge its own two
        # vertices carrying the child node's type: colour is constant per edge.
        by_id = {r[0]: r for r in swc}
        pos, types = [], []
        for r in swc:
            if r[5] == -1:
                pos += [r[2:5], r[2:5]]          # root: a zero-length edge, drawn as a point
            else:
                pos += [r[2:5], by_id[r[5]][2:5]]
            types += [r[1], r[1]]
        self._pos = np.array(pos, np.float32)
        self._edges = np.arange(len(pos), dtype=np.uint32).reshape(-1, 2)
        self._types = np.array(types, np.float32)

    def get_skeleton(self, object_id):
        if object_id != 1:
            return None
        return neuroglancer.skeleton.Skeleton(
            vertex_positions=self._pos, edges=self._edges,
            vertex_attributes=dict(node_type=self._types))


def build_viewer(review_path, bind_port=0):
    t0 = time.perf_counter()
    neuroglancer.set_server_bind_address("127.0.0.1", bind_port=bind_port)
    viewer = neuroglancer.Viewer()

    # Image: numpy axis order (z, y, x) -> name the dims in that order.
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 255, size=(16, 64, 64), dtype=np.uint8)
    img_dims = neuroglancer.CoordinateSpace(
        names=["z", "y", "x"], units=UM, scales=[VOXEL_UM[2], VOXEL_UM[1], VOXEL_UM[0]])
    # world-space dims for skeleton + annotations: 1 unit = 1 µm
    um_dims = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units=UM, scales=[1, 1, 1])
    swc_by_id = {r[0]: r for r in SWC}
    flags = sorted(FLAGS, key=lambda f: -f["priority"])
    state = dict(i=0, decisions=[])

    with viewer.txn() as s:
        s.dimensions = um_dims  # global display space in µm (x, y, z)
        s.layers["image"] = neuroglancer.ImageLayer(
            source=neuroglancer.LocalVolume(vol, dimensions=img_dims, volume_type="image"))
        s.layers["trace"] = neuroglancer.SegmentationLayer(
            source=[SwcSkeletonSource(um_dims, SWC)],
            segments=[1],
            skeleton_shader=SKELETON_SHADER,
        )
        s.layers["trace"].skeleton_rendering.line_width2d = 3
        s.layers["flags"] = neuroglancer.LocalAnnotationLayer(
            dimensions=um_dims,
            annotation_properties=[
                neuroglancer.AnnotationPropertySpec(id="priority", type="float32", default=0),
                neuroglancer.AnnotationPropertySpec(id="current", type="uint8", default=0),
            ],
            annotations=[
                neuroglancer.PointAnnotation(
                    id=str(f["node"]), point=list(swc_by_id[f["node"]][2:5]),
                    description=f"node {f['node']}: {f['fix']}",
                    props=[f["priority"], 1 if k == 0 else 0])
                for k, f in enumerate(flags)
            ],
            shader=FLAG_SHADER,
        )
        s.layout = "xy"
        s.position = list(swc_by_id[flags[0]["node"]][2:5])
        s.cross_section_scale = 0.05   # µm per screen pixel (smaller = more zoomed in)
        s.projection_scale = 64
        s.selected_layer.layer = "flags"
        s.selected_layer.visible = False

    lock = threading.Lock()

    def go_to(i):
        f = flags[i]
        with viewer.txn() as s:
            s.position = list(swc_by_id[f["node"]][2:5])
            s.cross_section_scale = 0.05
            for a in s.layers["flags"].annotations:
                a.props = [a.props[0], 1 if a.id == str(f["node"]) else 0]
        with viewer.config_state.txn() as cs:
            cs.status_messages["review"] = (
                f"flag {i + 1}/{len(flags)}: node {f['node']} -> {f['fix']} "
                "[n]ext [p]rev [a]ccept [r]eject")

    def record(decision, action_state):
        # runs in the neuroglancer server (tornado) thread: keep it short,
        # never call viewer.screenshot() here (deadlock).
        with lock:
            f = flags[state["i"]]
            state["decisions"].append(dict(
                node=f["node"], decision=decision, time=time.time(),
                mouse=None if action_state.mouse_voxel_coordinates is None
                else [float(v) for v in action_state.mouse_voxel_coordinates]))
            atomic_write_json(review_path, dict(version=1, decisions=state["decisions"]))

    def on_next(s):
        record("next", s)
        state["i"] = (state["i"] + 1) % len(flags)
        go_to(state["i"])

    def on_prev(s):
        state["i"] = (state["i"] - 1) % len(flags)
        go_to(state["i"])

    def on_accept(s):
        record("accept", s)

    def on_reject(s):
        record("reject", s)

    viewer.actions.add("nr-next", on_next)
    viewer.actions.add("nr-prev", on_prev)
    viewer.actions.add("nr-accept", on_accept)
    viewer.actions.add("nr-reject", on_reject)
    with viewer.config_state.txn() as cs:
        b = cs.input_event_bindings.viewer
        b["keyn"] = "nr-next"     # overrides neuroglancer's default keyn=add-layer
        b["keyp"] = "nr-prev"
        b["keya"] = "nr-accept"   # overrides default keya=toggle-axis-lines
        b["keyr"] = "nr-reject"
        # data panels have their own defaults (keyr/keye rotate, keyz snap, arrows, comma/period):
        # a viewer-level binding does NOT override them while a panel has focus. Bind there too.
        cs.input_event_bindings.data_view["keyr"] = "nr-reject"
        cs.status_messages["review"] = "review started"
        cs.show_help_button = True
    # Notes typed in the UI (annotation description of a flag) come back as state changes.
    def on_state_changed():
        st = viewer.state
        for a in st.layers["flags"].annotations:
            if a.description and a.description.startswith("NOTE:"):
                state.setdefault("notes", {})[a.id] = a.description
    viewer.shared_state.add_changed_callback(on_state_changed)
    viewer._nr_state = state
    go_to(0)
    url = viewer.get_viewer_url()
    print(f"server+viewer set up in {time.perf_counter() - t0:.3f}s", file=sys.stderr)
    return viewer, url


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "/tmp/review.json"
    viewer, url = build_viewer(path)
    print(url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
