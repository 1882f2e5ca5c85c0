"""Reading and writing the formats labs use."""

from .swc import SwcParseError, format_swc, read_swc, write_swc

__all__ = ["SwcParseError", "read_swc", "write_swc", "format_swc", "read_apo", "write_apo", "read_marker", "write_marker"]

_LAZY = {"read_apo", "write_apo", "read_marker", "write_marker", "Point"}


def __getattr__(name):
    # Point files are rarely needed by a reader; importing them lazily keeps start-up short.
    if name in _LAZY:
        from . import points

        return getattr(points, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
