"""Rule-based reconstruction QC: checks with node-level findings, and conservative fixes."""

from .checks import CHECKS
from .config import CheckConfig, ConfigError, Thresholds, load_config
from .findings import Finding, Fix, Severity
from .run import FileReport, check_file, check_neuron, check_paths, expand_paths

__all__ = [
    "CHECKS", "CheckConfig", "ConfigError", "Thresholds", "load_config", "Finding", "Fix",
    "Severity", "FileReport", "check_file", "check_neuron", "check_paths", "expand_paths",
]
