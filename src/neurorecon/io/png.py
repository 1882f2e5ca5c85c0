"""A small PNG encoder (numpy + zlib) for the reports' pictures.

The HTML reports draw projections and image snippets themselves instead of through matplotlib,
whose import alone costs about as much as checking a large reconstruction. Only what the reports
need: 8-bit grey, and indexed colour at 1, 2, 4 or 8 bits per pixel (a palette of at most 2**bits
colours), no interlacing, filter 0 on every row.
"""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

__all__ = ["encode_png", "png_data_uri"]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _pack_rows(index: np.ndarray, bits: int) -> np.ndarray:
    """Rows of ``bits``-bit values packed into bytes, most significant first (PNG's order)."""
    if bits == 8:
        return index
    per = 8 // bits
    h, w = index.shape
    padded = np.zeros((h, -(-w // per) * per), np.uint8)
    padded[:, :w] = index
    groups = padded.reshape(h, -1, per).astype(np.uint16)
    shifts = (bits * np.arange(per - 1, -1, -1)).astype(np.uint16)
    return (groups << shifts).sum(axis=2).astype(np.uint8)


def encode_png(pixels: np.ndarray, palette: np.ndarray | None = None, bits: int = 8, level: int = 9) -> bytes:
    """PNG bytes of a 2-D uint8 array (row 0 is the top of the picture).

    Parameters
    ----------
    pixels : ndarray of uint8, shape (h, w)
        Grey levels, or indices into ``palette``.
    palette : ndarray, shape (n, 3), optional
        RGB colours (0-255) of an indexed image; without it the image is 8-bit grey.
    bits : {1, 2, 4, 8}
        Bits per index of an indexed image (``2**bits >= len(palette)``); fewer bits, smaller file.
    level : int
        zlib compression level.

    Returns
    -------
    bytes

    Examples
    --------
    >>> png = encode_png(np.zeros((2, 3), np.uint8))
    >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n", len(png) < 100
    (True, True)
    """
    pix = np.asarray(pixels)
    if pix.ndim != 2 or pix.dtype != np.uint8 or 0 in pix.shape:
        raise ValueError("pixels must be a non-empty 2-D uint8 array")
    if palette is None:
        bits, colour_type, extra = 8, 0, b""
    else:
        pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
        if bits not in (1, 2, 4, 8) or len(pal) > 2 ** bits or int(pix.max()) >= len(pal):
            raise ValueError(f"a palette of {len(pal)} colours with indices up to {int(pix.max())} does not fit {bits} bits")
        colour_type, extra = 3, _chunk(b"PLTE", pal.tobytes())
    rows = _pack_rows(pix, bits)
    raw = np.zeros((rows.shape[0], rows.shape[1] + 1), np.uint8)   # a 0 (no filter) byte starts each row
    raw[:, 1:] = rows
    h, w = pix.shape
    header = struct.pack(">IIBBBBB", w, h, bits, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra
            + _chunk(b"IDAT", zlib.compress(raw.tobytes(), level)) + _chunk(b"IEND", b""))


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for an ``<img>`` or an SVG ``<image>``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
