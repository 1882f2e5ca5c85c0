"""The review viewer: image, trace and flags in Neuroglancer, keys that decide, REVIEW.json kept.

Keys (bound for the whole viewer and for the data panels, which have their own defaults for
some of them, e.g. r rotates and n adds a layer):

====  =====================================================================================
n, p  next / previous flag (the view centres on it, zoomed in, and selects it)
a     accept the proposed fix
r     reject: the node is fine
e     mark as an error; the note is the flag's description if it was edited in the
      selection panel, otherwise "marked by reviewer"
u     undo the last decision
====  =====================================================================================

Every state change the page sends (a key, a pan, a zoom, a note) keeps the decision clock's
active time running (:meth:`ReviewSession.touch`); a pause counts at most IDLE_SECONDS.

Key handlers run on Neuroglancer's server thread: they update the session (which writes
REVIEW.json before returning) and the view, and nothing else (no screenshots there: deadlock).
"""

from __future__ import annotations

import threading

import neuroglancer

from ..io.volume import Volume
from ..morphology.neuron import Neuron
from . import layers
from .session import DEFAULT_NOTE, ReviewSession

__all__ = ["KEYS", "ReviewViewer", "FOCUS_SCALE_UM_PER_PX"]

#: key -> (action name, what it does); the key names are Neuroglancer's.
KEYS = {
    "keyn": ("nr-next", "next flag"),
    "keyp": ("nr-previous", "previous flag"),
    "keya": ("nr-accept", "accept the proposed fix"),
    "keyr": ("nr-reject", "reject (the node is fine)"),
    "keye": ("nr-error", "mark as error (note: edit the flag's description)"),
    "keyu": ("nr-undo", "undo the last decision"),
}
#: Zoom at a flag: µm per screen pixel in the 2-D panels (about 40 µm across a panel).
FOCUS_SCALE_UM_PER_PX = 0.05
FOCUS_3D_UM = 60.0
HELP = "keys: n/p next/prev, a accept, r reject, e error (note: edit the flag's description), u undo"


def start_server(bind_port: int = 0) -> None:
    """Bind Neuroglancer's server to 127.0.0.1 (``bind_port`` 0: any free port); it starts with
    the first viewer."""
    neuroglancer.set_server_bind_address("127.0.0.1", bind_port=bind_port)


class ReviewViewer:
    """A Neuroglancer viewer driving a :class:`ReviewSession`.

    Parameters
    ----------
    session : ReviewSession
    neuron : Neuron
        The trace under review.
    volume : Volume, optional
        Its image.
    token : str, optional
        Fixed viewer token (a stable URL across restarts on a fixed port).
    """

    def __init__(self, session: ReviewSession, neuron: Neuron, volume: Volume | None = None, *, token: str | None = None):
        self.session = session
        self.volume = volume
        self.viewer = neuroglancer.Viewer(token=token) if token else neuroglancer.Viewer()
        self._lock = threading.RLock()
        self._build(neuron, volume)
        self._bind()
        self.show()
        # Every state change the page sends (pan, zoom, slice, selection, an edited note) is input:
        # it keeps the decision clock running; without any, a pause counts as idle.
        self.viewer.shared_state.add_changed_callback(self.session.touch)

    @property
    def url(self) -> str:
        return self.viewer.get_viewer_url()

    # ------------------------------------------------------------------ set-up
    def _build(self, neuron: Neuron, volume: Volume | None) -> None:
        s = self.session
        decisions = [s.decision(k) for k in range(len(s.flags))]
        with self.viewer.txn() as st:
            st.dimensions = layers.um_space()   # else the first layer's z, y, x order would rule the panels
            if volume is not None:
                st.layers["image"] = layers.image_layer(volume)
            st.layers["trace"] = layers.skeleton_layer(neuron)
            st.layers["flags"] = layers.flag_layer(s.flags, decisions, s.current)
            st.layout = "xy-3d"
            st.show_axis_lines = False
            # Outside the volume is black, like the image's background: the default grey reads
            # as data beside a flag near the crop's border.
            st.cross_section_background_color = "#000000"
            if not s.flags and len(neuron):
                st.position = neuron.xyz.mean(axis=0).tolist()

    def _bind(self) -> None:
        handlers = {"nr-next": lambda _: self.next(), "nr-previous": lambda _: self.previous(),
                    "nr-accept": lambda _: self.decide("accept"), "nr-reject": lambda _: self.decide("reject"),
                    "nr-error": self._on_error, "nr-undo": lambda _: self.undo()}
        for name, fn in handlers.items():
            self.viewer.actions.add(name, fn)
        with self.viewer.config_state.txn() as cs:
            for key, (name, _) in KEYS.items():
                cs.input_event_bindings.viewer[key] = name
                cs.input_event_bindings.data_view[key] = name
            cs.status_messages["keys"] = HELP

    # ------------------------------------------------------------------ actions (any thread)
    def next(self) -> None:
        with self._lock:
            self.session.go(self.session.current + 1)
            self.show()

    def previous(self) -> None:
        with self._lock:
            self.session.go(self.session.current - 1)
            self.show()

    def decide(self, decision: str, note: str = "") -> None:
        with self._lock:
            if not self.session.flags:
                return
            f = self.session.flags[self.session.current]
            if decision == "accept" and not f.fix:
                self._message(f"flag {self.session.current + 1}: no proposed fix to accept; press e to mark it as "
                              "an error or r to reject it")
                return
            k = self.session.current
            self.session.decide(decision, note)
            self.show(changed=k)

    def undo(self) -> None:
        with self._lock:
            e = self.session.undo()
            self.show(changed=self.session.current if e else None)
            if e is None:
                self._message("nothing to undo")

    def _on_error(self, action_state) -> None:
        self.decide("error", self._note(action_state.viewer_state))

    def _note(self, state) -> str:
        """The current flag's description if the reviewer edited it in the selection panel."""
        k = self.session.current
        try:
            ann = next(a for a in state.layers["flags"].annotations if a.id == layers.flag_id(k))
        except (KeyError, StopIteration, AttributeError, TypeError):
            return DEFAULT_NOTE
        text = (ann.description or "").strip()
        return text if text and text != layers.flag_description(self.session.flags[k]) else DEFAULT_NOTE

    # ------------------------------------------------------------------ display
    def show(self, changed: int | None = None) -> None:
        """Centre the view on the current flag, highlight and select it, update the status."""
        s = self.session
        if not s.flags:
            self._message("nothing to review: no rule findings and no detector flags")
            return
        k = s.current
        f = s.flags[k]
        with self.viewer.txn() as st:
            anns = st.layers["flags"].annotations
            for j, a in enumerate(anns):
                if j == k or j == changed or a.props[1]:
                    a.props = layers.flag_props(s.flags[j], s.decision(j), j == k)
            st.position = layers.focus_point(f.xyz, self.volume)
            st.cross_section_scale = FOCUS_SCALE_UM_PER_PX
            st.projection_scale = FOCUS_3D_UM
            st.selected_layer.layer = "flags"
            # 2.41.2's Python state has no `selection` property; the client reads this JSON key.
            st._json_data["selection"] = {"layers": {"flags": {"annotationId": layers.flag_id(k),
                                                               "annotationSource": 0}}, "visible": True}
        self._message(self.status_text())

    def status_text(self) -> str:
        s = self.session
        k = s.current
        f = s.flags[k]
        c = s.counts()
        p = "" if f.p is None else f" p={f.p:.2f}"
        head = (f"all {len(s.flags)} flags decided (Ctrl-C in the terminal ends the review) | " if c["undecided"] == 0
                else "")
        return (f"{head}flag {k + 1}/{len(s.flags)} [{s.decision(k) or 'undecided'}] node {f.node_id} "
                f"{f.check}{p}: {f.reason} | fix: {f.describe_fix()} | decided {len(s.flags) - c['undecided']}"
                f"/{len(s.flags)}")

    def _message(self, text: str) -> None:
        with self.viewer.config_state.txn() as cs:
            cs.status_messages["review"] = text


def open_review(trace: str, volume: Volume | None, review_path: str, *, scores: str | None = None,
                threshold: float = 0.5, token: str | None = None, config=None, uncovered=()) -> ReviewViewer:
    """Start or resume the review of ``trace`` in a new viewer (the server must be bound first,
    :func:`start_server`).

    Parameters
    ----------
    trace : str
        SWC path.
    volume : Volume, optional
        Its image.
    review_path : str
        REVIEW.json; resumed if it exists (it must belong to ``trace``).
    scores : str, optional
        SCORES.csv of ``neurorecon detect``.
    threshold : float
        Detector flags: p_error at or above it.
    token : str, optional
        Fixed viewer token.
    config : CheckConfig, optional
    uncovered : collection of int
        Ids of nodes the image does not cover: their detector flags are not opened.

    Returns
    -------
    ReviewViewer
    """
    from ..io.swc import read_swc
    from .flags import collect_flags

    neuron = read_swc(trace)
    meta = {"image": volume.path if volume is not None else None, "scores": scores, "threshold": threshold}
    session = ReviewSession.start(review_path, trace,
                                  lambda: collect_flags(neuron, scores, threshold=threshold, config=config,
                                                        uncovered=uncovered), meta=meta)
    return ReviewViewer(session, neuron, volume, token=token)
