"""Pieces of the command line shared by its commands (cli.py keeps the commands themselves):
the choices of options, exit-code epilogs, the progress bar, the fast exit, argument help."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

import typer

#: Exit codes every command shares; each command's epilog says what 0 and 1 mean for it.
USAGE = "2 usage error (bad arguments, an unreadable input, an output that cannot be written)"


def exits(zero: str, one: str | None = None, *, served: bool = False) -> str:
    """A command's epilog: its exit codes, shown by --help and in docs/cli.md. A ``served``
    command (a viewer) is stopped by Ctrl-C: 130 is only for an interrupt before it is up."""
    one = f"; 1 {one}" if one else ""
    ctrl_c = "130 interrupted (Ctrl-C) before the viewer was up" if served else "130 interrupted (Ctrl-C)"
    return f"Exit codes: 0 {zero}{one}; {USAGE}; {ctrl_c}."


# Choices as enums, so that --help lists them and a wrong value is a usage error naming them.
class FailOn(str, Enum):
    error = "error"
    warning = "warning"
    info = "info"


class VolumeFormat(str, Enum):
    ome_zarr = "ome-zarr"
    precomputed = "precomputed"


class ImageFormat(str, Enum):
    tif = "tif"
    zarr = "zarr"


class Split(str, Enum):
    train = "train"
    heldout = "heldout"


def document_arguments(group):
    """Give every argument of the click ``group`` (built by typer) its help back.

    Click 8.5's Argument takes a ``help`` of its own and sets it, to None, after typer has set
    its one, so arguments would be listed without help: it is put back from the signatures.
    Click 8.5 then lists documented arguments itself, after typer has: that second list is dropped.
    """
    import inspect

    import click

    for cmd in group.commands.values():
        infos = inspect.signature(cmd.callback).parameters
        for param in cmd.params:
            info = infos[param.name].default if param.name in infos else None
            if isinstance(param, click.Argument) and not getattr(param, "help", None):
                param.help = getattr(info, "help", None)
        if hasattr(cmd, "format_arguments"):
            cmd.format_arguments = lambda ctx, formatter: None
    return group


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def progress(total: int, label: str):
    """A rich progress bar on stderr; returns (advance, stop). None where stderr is not a terminal
    (a pipe, a file, a job's log): rich would not draw it there, and its import, set-up and
    refresh thread still cost ~50 ms."""
    if not sys.stderr.isatty():
        return (lambda k=1: None), (lambda: None)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(label), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn(),
                   console=stderr_console(), transient=True)
    task = bar.add_task(label, total=total)
    bar.start()
    return (lambda k=1: bar.advance(task, k)), bar.stop


def print_detection(result, out: Path) -> None:
    """What `detect` found: counts by reason, and where the scores are."""
    from collections import Counter

    for w in result.warnings:
        typer.echo(f"warning: {w}", err=True)
    flagged = result.flagged
    by_reason = Counter(result.reason[flagged].tolist())
    n_fix = sum(f is not None for f in result.fixes)
    if result.coverage is not None:
        typer.echo(f"coverage: {result.coverage.summary()}")
    typer.echo(f"{int(result.scored.sum())} nodes scored, {int(flagged.sum())} flagged (p >= {result.threshold}), "
               f"{n_fix} with a proposed correction")
    for k, v in by_reason.most_common():
        typer.echo(f"  {k:16s} {v}")
    typer.echo(f"scores: {out}")


def exit_now(code) -> None:
    """End the process without tearing the interpreter down: freeing every module and object one
    by one (numpy, scipy, LightGBM and the pandas it imports) takes 0.1-0.3 s that a finished
    command has no use for. atexit handlers still run and the standard streams are flushed."""
    import atexit
    import os

    if code is not None and not isinstance(code, int):     # sys.exit("message"), as Python prints it
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):     # a closed pipe: nothing more can be said there
            pass
    os._exit(code or 0)
