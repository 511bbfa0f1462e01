"""The ``.hpcm`` container: one compressed image. Specified byte by byte in docs/bitstream.md.

All integers are big-endian. Layout (version 1 has no side information; version 2 adds it)::

    offset  size  field
    0       4     magic "HPCM"
    4       1     format version (1, or 2 when flag bit 0 is set)
    5       1     flags (bit 0: coding decisions are signalled, see docs/bitstream.md; other bits 0)
    6       8     model fingerprint: the first 8 bytes of the export's sha256 fingerprint
    14      4     original height (pixels)
    18      4     original width (pixels)
    22      1     channels of the original (1 = greyscale, 3 = RGB)
    23      1     samples of the original: 8 or 16 (bits per integer sample) or 32 (floats in [0, 1])
    24      4     z payload length Lz
    28      4     y payload length Ly
    32      4     side-information payload length Ls (0 unless flag bit 0)
    36      Lz    z payload (rANS)
    ..      Ly    y payload (rANS, the 11 coding steps in order)
    ..      Ls    side information
    end-4   4     CRC-32 of every byte before it
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ..errors import BitstreamError

MAGIC = b"HPCM"
VERSION = 1  # plain streams
VERSION_SIGNALLED = 2  # streams with signalled decisions (side information)
FLAG_SIGNALLED = 0x01
_HEADER = struct.Struct(">4sBB8sIIBBIII")
HEADER_SIZE = _HEADER.size  # 36
MAX_SIDE = 1 << 14  # the largest side the export's dynamic range covers (64 tiles of 256)


@dataclass(frozen=True)
class Container:
    fingerprint: bytes  # 8 bytes
    height: int
    width: int
    channels: int
    bit_depth: int
    z: bytes
    y: bytes
    side: bytes = b""

    @property
    def flags(self) -> int:
        return FLAG_SIGNALLED if self.side else 0

    @property
    def version(self) -> int:
        return VERSION_SIGNALLED if self.side else VERSION

    def to_bytes(self) -> bytes:
        head = _HEADER.pack(MAGIC, self.version, self.flags, self.fingerprint, self.height, self.width, self.channels,
                            self.bit_depth, len(self.z), len(self.y), len(self.side))
        body = head + self.z + self.y + self.side
        return body + struct.pack(">I", zlib.crc32(body))


def fingerprint_bytes(fingerprint_hex: str) -> bytes:
    return bytes.fromhex(fingerprint_hex)[:8]


def parse(data: bytes, expected_fingerprint: bytes | None = None) -> Container:
    """Parse and check a stream; every way it can be wrong is a :class:`BitstreamError` with its reason."""
    if not data:
        raise BitstreamError("empty stream")
    if len(data) < 4 or data[:4] != MAGIC:
        raise BitstreamError("not an hpcm-deploy stream (bad magic)")
    if len(data) < HEADER_SIZE + 4:
        raise BitstreamError(f"truncated stream: {len(data)} bytes is shorter than a header")
    magic, version, flags, fp, height, width, channels, depth, lz, ly, ls = _HEADER.unpack_from(data)
    if version not in (VERSION, VERSION_SIGNALLED):
        raise BitstreamError(f"stream format version {version} is not supported (this hpcm-deploy reads "
                             f"{VERSION} and {VERSION_SIGNALLED})")
    expected_len = HEADER_SIZE + lz + ly + ls + 4
    if len(data) < expected_len:
        raise BitstreamError(f"truncated stream: {len(data)} bytes, the header announces {expected_len}")
    if len(data) > expected_len:
        raise BitstreamError(f"stream has {len(data) - expected_len} unexpected trailing bytes")
    (crc,) = struct.unpack_from(">I", data, expected_len - 4)
    if zlib.crc32(data[: expected_len - 4]) != crc:
        raise BitstreamError("corrupted stream: checksum mismatch")
    if flags & ~FLAG_SIGNALLED:
        raise BitstreamError(f"stream uses unknown flags 0x{flags:02x}")
    if bool(flags & FLAG_SIGNALLED) != bool(ls) or bool(ls) != (version == VERSION_SIGNALLED):
        raise BitstreamError("corrupted stream: version, side-information flag and length disagree")
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE) or channels not in (1, 3) or depth not in (8, 16, 32):
        raise BitstreamError(f"corrupted stream: impossible image {height}x{width}, {channels} channels, {depth} bit")
    if lz == 0 or ly == 0:
        raise BitstreamError("corrupted stream: empty payload")
    if expected_fingerprint is not None and fp != expected_fingerprint:
        raise BitstreamError(f"stream was written by another model (fingerprint {fp.hex()}, this export has "
                             f"{expected_fingerprint.hex()}); decode it with the export that wrote it")
    z_start = HEADER_SIZE
    y_start = z_start + lz
    s_start = y_start + ly
    return Container(fp, height, width, channels, depth, data[z_start:y_start], data[y_start:s_start],
                     data[s_start:s_start + ls])
