"""Small files that decode into huge images, made without holding the image: a grey PNG of
zeros is a zlib stream of zeros, compressed as it is generated (40 Mpx cost ~40 KB)."""

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _ihdr(width, height, bit_depth):
    return PNG_SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0))


def png_header(width, height, bit_depth=8):
    """A grey PNG cut after the start of its image data: PIL opens it and reads its size,
    and there is nothing to decode."""
    return _ihdr(width, height, bit_depth) + struct.pack(">I", 1 << 20) + b"IDAT"


def zero_png(width, height, bit_depth=8):
    """A whole grey PNG of zeros (every row filter 0, every sample 0)."""
    compressor = zlib.compressobj(9)
    zeros = bytes(1 << 20)
    remaining = height * (1 + width * bit_depth // 8)
    parts = []
    while remaining:
        step = min(remaining, len(zeros))
        parts.append(compressor.compress(zeros[:step]))
        remaining -= step
    parts.append(compressor.flush())
    return _ihdr(width, height, bit_depth) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")
