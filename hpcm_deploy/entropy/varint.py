"""Unsigned LEB128 varints (7 bits a byte, least significant group first, high bit = more bytes follow): the one
writer and the one reader of the lane payload header and the side information."""

from __future__ import annotations

from ..errors import BitstreamError


def varint(value: int) -> bytes:
    """``value`` (>= 0) as an unsigned LEB128 varint: 7 bits a byte, low first, high bit = more follow."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(data: bytes, pos: int, what: str, max_bytes: int = 5, minimal: bool = True) -> tuple[int, int]:
    """The varint at ``data[pos:]`` and the position after it. A varint of more than ``max_bytes`` bytes, one cut
    off by the end of ``data``, or (``minimal``) one with a needless trailing zero group is a
    :class:`~hpcm_deploy.errors.BitstreamError` naming ``what`` was being read."""
    value = 0
    for k in range(max_bytes):
        if pos >= len(data):
            raise BitstreamError(f"truncated {what}")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * k)
        if not byte & 0x80:
            if minimal and byte == 0 and k > 0:
                raise BitstreamError(f"corrupted {what}: non-minimal varint")
            return value, pos
    raise BitstreamError(f"corrupted {what}: varint longer than {max_bytes} bytes")
