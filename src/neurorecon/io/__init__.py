"""Reading and writing the formats labs use."""

from .points import read_apo, read_marker, write_apo, write_marker
from .swc import SwcParseError, format_swc, read_swc, write_swc

__all__ = ["SwcParseError", "read_swc", "write_swc", "format_swc", "read_apo", "write_apo", "read_marker", "write_marker"]
