"""Host-side rANS coding with CompressAI's coder and HPCM's GGM tables.

CompressAI 1.2.8's ``compressai.ans`` writes streams byte-identical to the coder bundled with the official
HPCM code. Symbols and indexes are NumPy int32 buffers; the tables' list form is built once per table.
"""

from __future__ import annotations

import numpy as np

from .._compat import compressai_ans
from .ggm import CDFTable


class StreamWriter:
    """Accumulates ``(symbols, indexes)`` runs and produces one rANS stream."""

    def __init__(self) -> None:
        self._encoder = compressai_ans().BufferedRansEncoder()
        self.count = 0

    def write(self, symbols: np.ndarray, indexes: np.ndarray, table: CDFTable) -> None:
        symbols = np.ascontiguousarray(symbols, dtype=np.int32).reshape(-1)
        indexes = np.ascontiguousarray(indexes, dtype=np.int32).reshape(-1)
        self._encoder.encode_with_indexes(symbols.tolist(), indexes.tolist(), *table.coder_args)
        self.count += symbols.size

    def finish(self) -> bytes:
        return self._encoder.flush()


class StreamReader:
    """Decodes runs of symbols from one rANS stream, in the order they were written.

    ``symbols`` (how many will be read) sizes a zero padding after the stream: CompressAI's decoder does not
    check the end of its buffer, and a decoder that has lost sync with the encoder (decoding with other CDFs)
    reads further than the encoder wrote. In sync it never reads the padding, so results are unchanged.
    """

    def __init__(self, data: bytes, symbols: int = 0) -> None:
        self._decoder = compressai_ans().RansDecoder()
        self._decoder.set_stream(bytes(data) + bytes(65536 + 8 * symbols))

    def read(self, indexes: np.ndarray, table: CDFTable) -> np.ndarray:
        flat = np.ascontiguousarray(indexes, dtype=np.int32).reshape(-1)
        values = self._decoder.decode_stream(flat.tolist(), *table.coder_args)
        return np.asarray(values, dtype=np.int32).reshape(indexes.shape)
