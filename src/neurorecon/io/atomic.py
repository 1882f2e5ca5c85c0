"""Atomic file writes and up-front output checks.

A crash or Ctrl-C mid-write must never leave a half-written file behind, and a command must find
out that it cannot write its outputs before it does its work, not after.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

__all__ = ["WriteError", "atomic_write_bytes", "atomic_write_text", "check_writable", "default_mode",
           "remove_pending", "temporary_beside"]

#: Temporary files and folders not yet renamed into place; removed by :func:`remove_pending`
#: when the process is interrupted (the CLI's Ctrl-C handler ends it without unwinding).
_PENDING: set[str] = set()


class WriteError(ValueError):
    """An output that cannot, or must not, be written. The message is one line for the user."""


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename), with the permissions a
    plain ``open()`` would give (``0o666`` less the umask)."""
    path = Path(path)
    with temporary_beside(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    return path


@contextmanager
def temporary_beside(path: str | os.PathLike, *, folder: bool = False) -> Iterator[Path]:
    """A temporary file (or folder) in ``path``'s folder, to be renamed onto ``path`` by the caller.

    It gets the mode a plain ``open()`` (or ``mkdir()``) would give, not the private 0600 (0700)
    of :mod:`tempfile`. It is removed if the block raises, or if the process is interrupted
    (see :func:`remove_pending`), unless it was renamed already. ``path``'s folder is created.
    """
    import tempfile  # imported here: it costs start-up time that readers never need

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        tmp = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    else:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    _PENDING.add(tmp)
    try:
        os.chmod(tmp, default_mode(folder=folder))
        yield Path(tmp)
    except BaseException:
        _remove(tmp)
        raise
    finally:
        _PENDING.discard(tmp)


def remove_pending() -> None:
    """Remove the temporary files of writes still in progress (for an interrupt handler)."""
    for tmp in list(_PENDING):
        _remove(tmp)


def _remove(tmp: str) -> None:
    if os.path.isdir(tmp) and not os.path.islink(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        Path(tmp).unlink(missing_ok=True)


def default_mode(*, folder: bool = False) -> int:
    """The mode a new file (``0o666``) or folder (``0o777``) gets under the process's umask."""
    return (0o777 if folder else 0o666) & ~_umask()


@lru_cache(maxsize=1)
def _umask() -> int:
    # Read from /proc where it is there: os.umask() can only be read by setting it, and a thread
    # creating a file in between would get the wrong mode.
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_writable(path: str | os.PathLike, *, overwrite: bool = False, inputs: Sequence[str | os.PathLike] = (),
                   folder: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written; raise :class:`WriteError` if not.

    Parameters
    ----------
    path : the output file (or, with ``folder``, the output folder).
    overwrite : allow replacing an existing file (folders may always exist).
    inputs : paths the command reads; the output must not be one of them.
    folder : ``path`` is a folder to write into.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    WriteError
        The output is an input, an existing file without ``overwrite``, a folder where a file is
        wanted (or the reverse), or its folder (the nearest that exists) cannot be written:
        checked by creating and removing a file there, which also catches read-only file
        systems and a process running as root, where permission bits say nothing.
    """
    path = Path(path)
    resolved = path.resolve()
    if any(_same_file(path, resolved, Path(src)) for src in inputs):
        raise WriteError(f"{path}: is an input of this command; choose another output")
    if folder:
        if path.exists() and not path.is_dir():
            raise WriteError(f"{path}: exists and is not a folder")
    elif path.is_dir():
        raise WriteError(f"{path}: is a folder; give a file name")
    elif (path.exists() or path.is_symlink()) and not overwrite:
        raise WriteError(f"{path}: exists; pass --overwrite to replace it")
    where = path if folder and path.is_dir() else _nearest_existing(path.parent)
    if not where.is_dir():
        raise WriteError(f"{path}: {where} is not a folder")
    _probe(path, where)
    return path


def _same_file(a: Path, a_resolved: Path, b: Path) -> bool:
    """Same path once resolved, or the same file under two names (a hard link)."""
    try:
        return a_resolved == b.resolve() or os.path.samefile(a, b)
    except OSError:       # one of them does not exist: not the same file
        return False


def _nearest_existing(folder: Path) -> Path:
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _probe(path: Path, where: Path) -> None:
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(prefix=".neurorecon-probe.", dir=where)
    except OSError as e:
        raise WriteError(f"{path}: cannot write in {where} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(tmp)
