"""Check thresholds: defaults, TOML config files and ``--set key=value`` overrides.

Lengths are in the file's units (µm for SWC). Thresholds named ``*_factor`` are multiples of the
neuron's own median edge length, so that they hold for 0.1 µm and 5 µm node spacing alike (and
for FlyEM skeletons in 8 nm voxels). docs/checks.md documents every field in one table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Thresholds:
    long_edge_factor: float = 10.0
    long_edge_max_length: float = float("inf")
    local_edge_factor: float = 1.5
    z_jump_distance: float = 30.0
    z_jump_factor: float = 30.0
    loop_distance_factor: float = 0.1
    loop_min_hops: int = 4
    zero_length_tolerance: float = 0.0
    overlap_distance_factor: float = 0.5
    overlap_min_nodes: int = 3
    back_tracking_angle: float = 150.0
    near_bifurcation_distance: float = 1.5
    near_bifurcation_factor: float = 1.5
    min_radius: float = 0.0
    fat_end_multiple: float = 2.0
    fat_end_points: int = 5
    narrow_start_fraction: float = 0.9
    root_jump_multiplier: float = 2.0
    dangling_distance: float = 12.0
    abnormal_compartment_sd: float = 5.0
    abnormal_compartment_tail_factor: float = 1.5
    known_types: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)
    required_types: tuple[int, ...] = ()
    bridge_max_factor: float = 5.0
    bridge_max_angle: float = 60.0
    relabel_max_nodes: int = 50
    flood_share: float = 0.02
    flood_min_sites: int = 10


@dataclass(frozen=True)
class CheckConfig:
    """Which checks run, with what thresholds and severities."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    severity: dict[str, str] = field(default_factory=dict)
    disabled: frozenset[str] = frozenset()
    only: frozenset[str] = frozenset()

    def enabled(self, check_id: str) -> bool:
        if self.only and check_id not in self.only:
            return False
        return check_id not in self.disabled

    def with_overrides(self, settings: dict[str, Any]) -> "CheckConfig":
        return dataclasses.replace(self, thresholds=_apply(self.thresholds, settings))


class ConfigError(ValueError):
    """A config file or ``--set`` option that cannot be used."""


def _coerce(name: str, value: Any, current: Any) -> Any:
    try:
        if isinstance(current, tuple):
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            return tuple(int(v) for v in value)
        if isinstance(current, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        return type(current)(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: cannot use {value!r} (expected {type(current).__name__})") from None


def _apply(th: Thresholds, settings: dict[str, Any]) -> Thresholds:
    known = {f.name for f in dataclasses.fields(Thresholds)}
    changes = {}
    for key, value in settings.items():
        if key not in known:
            raise ConfigError(f"unknown threshold {key!r}; known: {', '.join(sorted(known))}")
        changes[key] = _coerce(key, value, getattr(th, key))
    return dataclasses.replace(th, **changes)


def parse_set_options(items: list[str]) -> dict[str, str]:
    """``["long_edge_factor=20", ...]`` -> dict; a clear error for anything else."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                disabled: list[str] | None = None, only: list[str] | None = None) -> CheckConfig:
    """Build a :class:`CheckConfig` from an optional TOML file plus overrides.

    The TOML file may contain ``[thresholds]`` (any field of :class:`Thresholds`), ``[severity]``
    (check id -> error/warning/info) and ``disable = ["check_id", ...]``.
    """
    from .checks import CHECKS
    from .findings import Severity

    data: dict[str, Any] = {}
    if path is not None:
        import tomllib   # only with a config file: not part of every check's start-up

        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        unknown = set(data) - {"thresholds", "severity", "disable"}
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}; use thresholds, severity, disable")
    severity = {k: str(v) for k, v in data.get("severity", {}).items()}
    dis = set(data.get("disable", [])) | set(disabled or [])
    for check_id in set(severity) | dis | set(only or []):
        if check_id not in CHECKS:
            raise ConfigError(f"unknown check id {check_id!r}")
    for check_id, level in severity.items():
        try:
            Severity.parse(level)
        except ValueError as e:
            raise ConfigError(f"severity of {check_id}: {e}") from None
    cfg = CheckConfig(severity=severity, disabled=frozenset(dis), only=frozenset(only or []))
    cfg = cfg.with_overrides(data.get("thresholds", {}))
    return cfg.with_overrides(overrides or {})
