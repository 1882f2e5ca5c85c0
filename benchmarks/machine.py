"""What the benchmark scripts share: describing the machine, logging, and owning sections of
docs/benchmarks.md (each script rewrites only what it produced)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def nproc() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def git_state() -> str:
    """Commit and whether src/ differs from it (read-only git commands)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"commit {head or 'unknown'}" + (f" plus uncommitted changes in {', '.join(changed)}" if changed else " (src/ clean)")


def _split_sections(text: str) -> list[str]:
    """The text before the first '## ' heading, then one chunk per '## ' section."""
    return re.split(r"(?m)^(?=## )", text)


def replace_section(path: Path, heading: str, section: str) -> None:
    """Put ``section`` (which starts with ``heading``) in place of that section of ``path``, or at
    its end; everything else stays as it was. Atomic."""
    parts = _split_sections(path.read_text()) if path.exists() else [""]
    body = section.rstrip("\n") + "\n\n"
    hit = [k for k, p in enumerate(parts) if p.startswith(heading)]
    if hit:
        parts[hit[0]] = body
    else:
        parts[-1] = parts[-1].rstrip("\n") + ("\n\n" if parts[-1].strip() else "")
        parts.append(body)
    _write(path, "".join(parts).rstrip("\n") + "\n")


def kept_sections(path: Path, headings: tuple[str, ...]) -> str:
    """The sections of ``path`` under ``headings`` (owned by other scripts), to carry over."""
    if not path.exists():
        return ""
    return "".join("\n" + p.rstrip("\n") + "\n" for p in _split_sections(path.read_text()) if p.startswith(headings))


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
