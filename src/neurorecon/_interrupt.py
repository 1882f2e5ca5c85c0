"""Ctrl-C for the command line: one line on stderr and exit status 130, whenever it comes.

Python's own handling raises KeyboardInterrupt wherever the main thread happens to be: in the
middle of an import at start-up, inside a thread pool's shutdown, in a worker thread's wait.
Each of those prints a traceback (or several). The handler here instead removes the temporary
files of writes in progress and ends the process at once; outputs are written atomically, and a
conversion resumes from its journal, so nothing half-written is left behind. Stdlib only: it is
installed before anything heavy is imported.
"""

from __future__ import annotations

import os
import _signal as signal   # not `signal`: its enums take ~10 ms to import, a window without the handler
import sys

MESSAGE = b"neurorecon: interrupted\n"
_OWNER = None     # the process that installed the handler; the workers it forks inherit it


def install() -> None:
    """Handle SIGINT from here on (not where the shell started us with it ignored)."""
    global _OWNER
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        _OWNER = os.getpid()
        signal.signal(signal.SIGINT, _on_sigint)


def raise_keyboard_interrupt() -> None:
    """Back to KeyboardInterrupt: for code that waits for Ctrl-C to end cleanly (a server)."""
    if signal.getsignal(signal.SIGINT) is _on_sigint:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _on_sigint(signum, frame) -> None:
    if os.getpid() != _OWNER:     # a forked worker (Ctrl-C reaches the whole process group): the
        return                    # main process ends, and its workers with it, without a word each
    _stop_workers()
    atomic = sys.modules.get("neurorecon.io.atomic")
    if atomic is not None:
        atomic.remove_pending()
    try:
        sys.stdout.flush()
    except (OSError, ValueError, RuntimeError):   # a closed pipe, or a flush in progress
        pass
    prefix = b"\x1b[?25h\n" if os.isatty(2) else b""    # a progress bar hid the cursor mid-line
    os.write(2, prefix + MESSAGE)
    os._exit(130)


def _stop_workers() -> None:
    """Kill the worker processes of process pools: blocked on their task queue, they would
    outlive this process (and hold its stdout and stderr open)."""
    mp = sys.modules.get("multiprocessing")
    if mp is None:
        return
    children = mp.active_children()
    for child in children:
        try:
            child.kill()
        except (OSError, ValueError):    # gone already
            pass
    for child in children:
        child.join(timeout=1.0)
