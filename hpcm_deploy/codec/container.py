"""The ``.hpcm`` container: one compressed image. Specified byte by byte in docs/bitstream.md.

All integers are big-endian. Header (36 bytes), then the payloads, then a CRC-32 of everything before it::

    offset  size  field
    0       4     magic "HPCM"
    4       1     format version: 1 (plain), 2 (signalled decisions), 3 (lane payloads)
    5       1     flags: bit 0 signalled decisions (side information); bit 1 lane payloads (version 3 only)
    6       8     model fingerprint: the first 8 bytes of the export's sha256 fingerprint
    14      4     original height (pixels)
    18      4     original width (pixels)
    22      1     channels of the original (1 = greyscale, 3 = RGB)
    23      1     samples of the original: 8 or 16 (bits per integer sample) or 32 (floats in [0, 1])
    24      4     z payload length Lz
    28      4     y payload length Ly
    32      4     side-information payload length Ls (0 unless flag bit 0)

Versions 1 and 2 (CompressAI rANS payloads) continue with z, y, side information; version 3 (interleaved rANS
lanes, :mod:`hpcm_deploy.entropy.lanes`) with z, side information, y, so that a prefix of the file holds
everything but the end of y: a truncated version 3 stream still decodes its first coding steps
(:func:`parse` with ``partial=True``).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ..config import MAX_SIDE
from ..errors import BitstreamError

SUFFIX = ".hpcm"  # file name suffix of a stream
MAGIC = b"HPCM"
VERSION = 1  # CompressAI payloads, nothing signalled
VERSION_SIGNALLED = 2  # CompressAI payloads with signalled decisions
VERSION_LANES = 3  # lane payloads; signalled decisions optional
VERSIONS = (VERSION, VERSION_SIGNALLED, VERSION_LANES)
FLAG_SIGNALLED = 0x01
FLAG_LANES = 0x02
_HEADER = struct.Struct(">4sBB8sIIBBIII")
HEADER_SIZE = _HEADER.size  # 36
CRC_SIZE = 4


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
    lanes: bool = True  # lane payloads (version 3); False: CompressAI payloads (versions 1 and 2)
    complete: bool = True  # False for the prefix of a truncated stream parsed with partial=True

    @property
    def flags(self) -> int:
        return (FLAG_SIGNALLED if self.side else 0) | (FLAG_LANES if self.lanes else 0)

    @property
    def version(self) -> int:
        if self.lanes:
            return VERSION_LANES
        return VERSION_SIGNALLED if self.side else VERSION

    def to_bytes(self) -> bytes:
        head = _HEADER.pack(MAGIC, self.version, self.flags, self.fingerprint, self.height, self.width, self.channels,
                            self.bit_depth, len(self.z), len(self.y), len(self.side))
        body = head + b"".join(self._payloads())
        return body + struct.pack(">I", zlib.crc32(body))

    def _payloads(self) -> tuple[bytes, bytes, bytes]:
        return (self.z, self.side, self.y) if self.lanes else (self.z, self.y, self.side)


def fingerprint_bytes(fingerprint_hex: str) -> bytes:
    return bytes.fromhex(fingerprint_hex)[:8]


def _header(data: bytes) -> tuple:
    if not data:
        raise BitstreamError("empty stream")
    if len(data) < 4 or data[:4] != MAGIC:
        raise BitstreamError("not an hpcm-deploy stream (bad magic)")
    if len(data) < HEADER_SIZE:
        raise BitstreamError(f"truncated stream: {len(data)} bytes is shorter than a header")
    fields = _HEADER.unpack_from(data)
    _, version, flags, _, height, width, channels, depth, lz, ly, ls = fields
    if version not in VERSIONS:
        raise BitstreamError(f"stream format version {version} is not supported (this hpcm-deploy reads "
                             f"{', '.join(map(str, VERSIONS))})")
    known = FLAG_SIGNALLED | (FLAG_LANES if version == VERSION_LANES else 0)
    if flags & ~known:
        raise BitstreamError(f"stream uses unknown flags 0x{flags:02x}")
    if version == VERSION_LANES:
        if not flags & FLAG_LANES:
            raise BitstreamError("corrupted stream: version 3 without its lane flag")
        if bool(flags & FLAG_SIGNALLED) != bool(ls):
            raise BitstreamError("corrupted stream: side-information flag and length disagree")
    elif bool(flags & FLAG_SIGNALLED) != bool(ls) or bool(ls) != (version == VERSION_SIGNALLED):
        raise BitstreamError("corrupted stream: version, side-information flag and length disagree")
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE) or channels not in (1, 3) or depth not in (8, 16, 32):
        raise BitstreamError(f"corrupted stream: impossible image {height}x{width}, {channels} channels, {depth} bit")
    if lz == 0 or ly == 0:
        raise BitstreamError("corrupted stream: empty payload")
    return fields


def parse(data: bytes, expected_fingerprint: bytes | None = None, partial: bool = False) -> Container:
    """Parse and check a stream; every way it can be wrong is a :class:`BitstreamError` with its reason.

    ``partial``: ``data`` may be the beginning of a version 3 stream (a truncated file, the first bytes of a
    download): the header, the z payload and the side information must be whole, the y payload may stop
    anywhere (the checksum cannot be checked then; the result has ``complete=False``). A whole stream is
    checked as usual.
    """
    fields = _header(data)
    _, version, flags, fp, height, width, channels, depth, lz, ly, ls = fields
    expected_len = HEADER_SIZE + lz + ly + ls + CRC_SIZE
    lanes = version == VERSION_LANES

    def check_model() -> None:
        if expected_fingerprint is not None and fp != expected_fingerprint:
            raise BitstreamError(f"stream was written by another model (fingerprint {fp.hex()}, this export has "
                                 f"{expected_fingerprint.hex()}); decode it with the export that wrote it")

    if len(data) > expected_len:
        extra = len(data) - expected_len
        raise BitstreamError(f"stream has {extra} unexpected trailing byte{'s' if extra > 1 else ''}")
    if len(data) < expected_len:
        if not partial:
            raise BitstreamError(f"truncated stream: {len(data)} bytes, the header announces {expected_len}")
        if not lanes:
            raise BitstreamError(f"a truncated version {version} stream cannot be decoded in part (only version 3)")
        if len(data) < HEADER_SIZE + lz + ls:
            raise BitstreamError(f"truncated stream: {len(data)} bytes do not reach the y payload (it starts at "
                                 f"byte {HEADER_SIZE + lz + ls})")
        check_model()
        z, side = data[HEADER_SIZE:HEADER_SIZE + lz], data[HEADER_SIZE + lz:HEADER_SIZE + lz + ls]
        y = data[HEADER_SIZE + lz + ls:HEADER_SIZE + lz + ls + ly]
        return Container(fp, height, width, channels, depth, z, y, side, True, complete=False)
    (crc,) = struct.unpack_from(">I", data, expected_len - CRC_SIZE)
    if zlib.crc32(data[: expected_len - CRC_SIZE]) != crc:
        raise BitstreamError("corrupted stream: checksum mismatch")
    check_model()
    lengths = (lz, ls, ly) if lanes else (lz, ly, ls)
    bounds = [HEADER_SIZE]
    for n in lengths:
        bounds.append(bounds[-1] + n)
    parts = [data[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    z, side, y = (parts[0], parts[1], parts[2]) if lanes else (parts[0], parts[2], parts[1])
    return Container(fp, height, width, channels, depth, z, y, side, lanes)
