"""The review record, REVIEW.json: which flags, what was decided, in what order, how fast.

Every decision is appended to an event list and the whole file is rewritten atomically (temporary
file, fsync, rename) before the viewer moves on, so a crash loses nothing and a review started
again with the same file resumes at the first undecided flag. Undo is an event too: the record
says what was decided, taken back and decided again.

Format (``"format": "neurorecon-review", "version": 2``)::

    trace      {"path": ..., "sha256": ...}    the trace reviewed; a different file is refused
    image, scores, threshold, created, updated[, upgraded_from]
    flags      [{key, node_id, node_ids, xyz, source, check, reason, p, severity, fix, decision}]
               one per error site, in review order; ``decision`` is derived from the events
               (null: undecided); a site's move names all its nodes (``{"action": "move",
               "node_ids": [...], "xyz": [[x, y, z], ...]}``)
    events     [{seq, flag, node_id, decision, note, time, active_seconds, wall_seconds[, undoes]}]
               decision: accept | reject | error | undo; time: UTC ISO 8601; wall_seconds: time
               on the flag before the decision; active_seconds: the part of it with input (a
               pause of over IDLE_SECONDS counts IDLE_SECONDS); ``undoes``: the seq an undo takes back

Version 1 (one flag per node, events with ``seconds`` of wall time only) still loads: each of its
flags is a site of one node, its ``seconds`` are wall seconds and active time is unknown (null).
Saving writes version 2 with ``"upgraded_from": 1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..io.atomic import atomic_write_text
from .flags import Flag

__all__ = ["DECISIONS", "Event", "ReviewError", "ReviewSession", "sha256_file"]

FORMAT = "neurorecon-review"
VERSION = 2
#: Versions :meth:`ReviewSession.load` reads (1: one flag per node, wall seconds only).
READS = (1, 2)
#: A pause without input longer than this counts only this long towards a decision's active time.
IDLE_SECONDS = 20.0
DECISIONS = ("accept", "reject", "error")
DEFAULT_NOTE = "marked by reviewer"


class ReviewError(ValueError):
    """A REVIEW.json that is malformed or belongs to another trace; the message is one line."""


@dataclass(frozen=True)
class Event:
    """One entry of the decision log."""

    seq: int
    flag: str
    node_id: int
    decision: str
    note: str
    time: str
    active_seconds: float | None
    wall_seconds: float
    undoes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.undoes is None:
            del d["undoes"]
        return d


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (what ties a review to its trace)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _event(e: dict, version: int) -> Event:
    """An event as read from a file of ``version`` (1: ``seconds`` of wall time, no active time)."""
    if version == 1:
        active, wall = None, float(e["seconds"])
    else:
        active = None if e.get("active_seconds") is None else float(e["active_seconds"])
        wall = float(e["wall_seconds"])
    return Event(int(e["seq"]), str(e["flag"]), int(e["node_id"]), str(e["decision"]), str(e.get("note", "")),
                 str(e["time"]), active, wall, None if e.get("undoes") is None else int(e["undoes"]))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class ReviewSession:
    """A review in progress: the flags, the event log and the flag on screen.

    Thread-safe: the viewer calls it from its server thread while the main thread waits.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "t.swc").write_text("1 1 0 0 0 1 -1\\n2 3 0 0 5 1 1\\n")
    >>> flag = lambda n: Flag(f"detector:{n}", n, (0, 0, 0), "detector", "detector.spur", "", 0.9, "warning", None)
    >>> s = ReviewSession.start(d / "r.json", d / "t.swc", lambda: [flag(1), flag(2)])
    >>> _ = s.decide("reject"); s.current, s.counts()["reject"]
    (1, 1)
    >>> ReviewSession.start(d / "r.json", d / "t.swc", lambda: []).current   # resumes at flag 2
    1
    """

    def __init__(self, path: str | os.PathLike, trace: str, trace_sha256: str, flags: list[Flag],
                 events: list[Event] | None = None, meta: dict | None = None):
        self.path = Path(path)
        self.trace = trace
        self.trace_sha256 = trace_sha256
        self.flags = list(flags)
        self.events = list(events or [])
        self.meta = dict(meta or {})
        self.index = {f.key: k for k, f in enumerate(self.flags)}
        self.lock = threading.RLock()
        first = self.first_undecided()
        self.current = 0 if first is None else first
        #: The decision clock (monotonic seconds); tests give their own.
        self.clock: Callable[[], float] = time.monotonic
        self._shown = self._last_input = self.clock()
        self._active = 0.0

    # ------------------------------------------------------------------------ files
    @classmethod
    def start(cls, path: str | os.PathLike, trace: str | os.PathLike, make_flags: Callable[[], list[Flag]], *,
              meta: dict | None = None) -> "ReviewSession":
        """Resume ``path`` if it exists (it must belong to ``trace``), else begin a review of the
        flags ``make_flags()`` gives and write it at once."""
        if Path(path).exists():
            return cls.load(path, trace)
        s = cls(path, str(trace), sha256_file(trace), make_flags(), meta={**(meta or {}), "created": _now()})
        s.save()
        return s

    @classmethod
    def load(cls, path: str | os.PathLike, trace: str | os.PathLike | None = None) -> "ReviewSession":
        """Read a REVIEW.json; with ``trace``, check that it is the file that was reviewed.

        Raises
        ------
        ReviewError
            Unreadable or malformed, or ``trace``'s content differs from the reviewed one.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ReviewError(f"{path}: no such file") from None
        except (OSError, UnicodeError) as e:
            raise ReviewError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
        except json.JSONDecodeError as e:
            raise ReviewError(f"{path}: not a review file: invalid JSON at line {e.lineno} ({e.msg})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ReviewError(f"{path}: not a review file (no \"format\": \"{FORMAT}\")")
        version = data.get("version")
        if version not in READS:
            raise ReviewError(f"{path}: review file version {version!r}; this neurorecon reads versions "
                              f"{', '.join(map(str, READS))}: use the neurorecon that wrote it, or start a new "
                              "review with another --review file")
        try:
            t = data["trace"]
            flags = [Flag.from_dict(f) for f in data["flags"]]
            events = [_event(e, version) for e in data["events"]]
            meta = {k: data[k] for k in ("image", "scores", "threshold", "created", "upgraded_from") if k in data}
            if version != VERSION:
                meta["upgraded_from"] = version
            s = cls(path, str(t["path"]), str(t["sha256"]), flags, events, meta)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ReviewError(f"{path}: malformed review file: {type(e).__name__}: {e}") from None
        s._validate()
        if trace is not None:
            s.check_trace(trace)
        return s

    @property
    def upgraded_from(self) -> int | None:
        """The version of the file this review was read from, if older than :data:`VERSION`."""
        return self.meta.get("upgraded_from")

    def _validate(self) -> None:
        if len(self.index) != len(self.flags):
            raise ReviewError(f"{self.path}: malformed review file: two flags share a key")
        try:
            self._replay()
        except ValueError as e:
            raise ReviewError(f"{self.path}: malformed review file: {e}") from None

    def check_trace(self, trace: str | os.PathLike) -> None:
        """Raise :class:`ReviewError` unless ``trace`` has the content this review was made on."""
        digest = sha256_file(trace)
        if digest != self.trace_sha256:
            raise ReviewError(f"{self.path} is the review of {self.trace} (sha256 {self.trace_sha256[:12]}...), "
                              f"not of {trace} (sha256 {digest[:12]}...): the trace differs; give another --review file")

    def to_dict(self) -> dict[str, Any]:
        current = self.decisions()
        flags = [{**f.to_dict(), "decision": current[f.key].decision if f.key in current else None} for f in self.flags]
        return {"format": FORMAT, "version": VERSION, "trace": {"path": self.trace, "sha256": self.trace_sha256},
                **self.meta, "updated": _now(), "flags": flags, "events": [e.to_dict() for e in self.events]}

    def save(self) -> None:
        """Write the review atomically."""
        with self.lock:
            atomic_write_text(self.path, json.dumps(self.to_dict(), indent=1) + "\n")

    # ------------------------------------------------------------------------ state
    def _replay(self) -> list[Event]:
        """The decisions still in force, oldest first (undos applied)."""
        live: list[Event] = []
        for e in self.events:
            if e.flag not in self.index:
                raise ValueError(f"event {e.seq} names an unknown flag {e.flag!r}")
            if e.decision == "undo":
                if not live or live[-1].seq != e.undoes:
                    raise ValueError(f"event {e.seq} undoes {e.undoes}, which is not the last decision in force")
                live.pop()
            elif e.decision in DECISIONS:
                live.append(e)
            else:
                raise ValueError(f"event {e.seq}: unknown decision {e.decision!r}")
        return live

    def decisions(self) -> dict[str, Event]:
        """The decision in force per flag key (a later decision on a flag replaces an earlier one)."""
        with self.lock:
            return {e.flag: e for e in self._replay()}

    def decision(self, k: int) -> str | None:
        """What is decided about flag ``k`` (None: nothing yet)."""
        e = self.decisions().get(self.flags[k].key)
        return None if e is None else e.decision

    def first_undecided(self) -> int | None:
        done = self.decisions()
        return next((k for k, f in enumerate(self.flags) if f.key not in done), None)

    def next_undecided(self, after: int) -> int | None:
        """The first undecided flag after ``after`` in review order, wrapping round."""
        done = self.decisions()
        n = len(self.flags)
        return next(((after + d) % n for d in range(1, n + 1) if self.flags[(after + d) % n].key not in done), None)

    def counts(self) -> dict[str, int]:
        """Flags per decision in force, and ``undecided``."""
        done = self.decisions()
        out = {d: sum(e.decision == d for e in done.values()) for d in DECISIONS}
        out["undecided"] = len(self.flags) - len(done)
        return out

    def summary(self) -> dict[str, Any]:
        """Counts, the median and mean active seconds per decision in force (over those that
        recorded it: version-1 files did not), and the median wall seconds."""
        live = list(self.decisions().values())
        active = [e.active_seconds for e in live if e.active_seconds is not None]
        wall = [e.wall_seconds for e in live]
        return {"flags": len(self.flags), **self.counts(),
                "median_seconds": statistics.median(active) if active else None,
                "mean_seconds": statistics.fmean(active) if active else None,
                "total_active_seconds": round(sum(active), 3) if active else None,
                "median_wall_seconds": statistics.median(wall) if wall else None}

    # ------------------------------------------------------------------------ actions
    def go(self, k: int) -> Flag | None:
        """Show flag ``k`` (modulo the number of flags); the decision clocks restart."""
        with self.lock:
            if not self.flags:
                return None
            self.current = k % len(self.flags)
            self._shown = self._last_input = self.clock()
            self._active = 0.0
            return self.flags[self.current]

    def touch(self) -> None:
        """The reviewer did something (a key, a pan, a zoom): the time since the last input counts
        as active, up to :data:`IDLE_SECONDS` (a hidden page or an absent reviewer sends nothing)."""
        with self.lock:
            now = self.clock()
            self._active += min(max(now - self._last_input, 0.0), IDLE_SECONDS)
            self._last_input = now

    def decide(self, decision: str, note: str = "") -> Event:
        """Record ``decision`` on the current flag, save, and move to the next undecided one.

        Parameters
        ----------
        decision : {"accept", "reject", "error"}
        note : str
            Kept with the decision; an ``error`` without one gets ``"marked by reviewer"``.

        Returns
        -------
        Event
        """
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, not {decision!r}")
        with self.lock:
            if not self.flags:
                raise ReviewError("nothing to review: no flags")
            f = self.flags[self.current]
            note = note.strip() or (DEFAULT_NOTE if decision == "error" else "")
            self.touch()
            e = Event(self._seq(), f.key, f.node_id, decision, note, _now(), round(self._active, 3),
                      round(self.clock() - self._shown, 3))
            self.events.append(e)
            self.save()
            nxt = self.next_undecided(self.current)
            self.go(self.current if nxt is None else nxt)
            return e

    def undo(self) -> Event | None:
        """Take back the last decision in force (saved) and show its flag again; None if none."""
        with self.lock:
            live = self._replay()
            if not live:
                return None
            last = live[-1]
            e = Event(self._seq(), last.flag, last.node_id, "undo", "", _now(), 0.0, 0.0, undoes=last.seq)
            self.events.append(e)
            self.save()
            self.go(self.index[last.flag])
            return e

    def _seq(self) -> int:
        return self.events[-1].seq + 1 if self.events else 1
