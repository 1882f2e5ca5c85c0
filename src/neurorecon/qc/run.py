"""Running the checks: on one neuron, one file, or a batch of files in parallel."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..io.swc import SwcParseError, read_swc
from ..morphology.neuron import Neuron
from .checks import CHECKS
from .config import CheckConfig
from .context import CheckContext
from .findings import Finding, Severity

SWC_SUFFIXES = (".swc", ".eswc")


def check_neuron(neuron: Neuron, config: CheckConfig | None = None) -> list[Finding]:
    """Run every enabled check on ``neuron``; findings ordered by severity, then check.

    Examples
    --------
    >>> from neurorecon.io import read_swc
    >>> n = read_swc(b"1 1 0 0 0 5 -1\\n2 3 0 0 8 1 1\\n3 3 0 0 9 1 7\\n")
    >>> [f.check for f in check_neuron(n)]
    ['missing_parent', 'fragment']
    """
    config = config or CheckConfig()
    ctx = CheckContext(neuron, config)
    findings: list[Finding] = []
    for spec in CHECKS.values():
        if not config.enabled(spec.id):
            continue
        level = Severity.parse(config.severity[spec.id]) if spec.id in config.severity else None
        for f in spec.func(ctx):
            findings.append(f if level is None else _with_severity(f, level))
    order = {cid: k for k, cid in enumerate(CHECKS)}
    findings.sort(key=lambda f: (-f.severity, order[f.check]))
    return findings


def _with_severity(f: Finding, level: Severity) -> Finding:
    from dataclasses import replace

    return replace(f, severity=level)


@dataclass
class FileReport:
    """The result of checking one file."""

    path: str
    readable: bool
    error: str | None = None
    n_nodes: int = 0
    findings: list[Finding] = field(default_factory=list)

    def worst(self) -> Severity | None:
        if not self.readable:
            return Severity.ERROR
        return max((f.severity for f in self.findings), default=None)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "readable": self.readable,
            "error": self.error,
            "n_nodes": self.n_nodes,
            "findings": [f.to_dict() for f in self.findings],
        }


def check_file(path: str | os.PathLike, config: CheckConfig | None = None) -> FileReport:
    """Read and check one file; an unreadable file gives a report with its reason, never raises."""
    path = str(path)
    try:
        neuron = read_swc(path, strict=False)
    except SwcParseError as e:
        return FileReport(path, False, str(e))
    except (OSError, UnicodeError) as e:
        return FileReport(path, False, f"{path}: cannot read: {e.strerror if isinstance(e, OSError) and e.strerror else e}")
    return FileReport(path, True, None, neuron.n_nodes, check_neuron(neuron, config))


class PathError(ValueError):
    """A command-line path that names nothing to check."""


def expand_paths(items: Iterable[str]) -> list[str]:
    """Files, folders (searched recursively for .swc/.eswc) and glob patterns, in a stable order."""
    out: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in SWC_SUFFIXES and f.is_file())
            if not found:
                raise PathError(f"{item}: folder holds no .swc or .eswc file")
            out += found
        elif p.exists():
            out.append(str(p))
        elif any(ch in item for ch in "*?["):
            found = sorted(glob.glob(item, recursive=True))
            if not found:
                raise PathError(f"{item}: pattern matches no file")
            out += found
        else:
            raise PathError(f"{item}: no such file or folder")
    seen = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def check_paths(paths: list[str], config: CheckConfig | None = None, *, jobs: int = 1,
                on_done: Callable[[FileReport], None] | None = None) -> list[FileReport]:
    """Check many files, ``jobs`` at a time; reports come back in the order of ``paths``."""
    config = config or CheckConfig()
    if jobs <= 1 or len(paths) <= 1:
        reports = []
        for p in paths:
            reports.append(check_file(p, config))
            if on_done:
                on_done(reports[-1])
        return reports
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=jobs) as pool:
        reports = []
        for rep in pool.map(check_file, paths, [config] * len(paths), chunksize=max(1, len(paths) // (jobs * 8))):
            reports.append(rep)
            if on_done:
                on_done(rep)
    return reports
