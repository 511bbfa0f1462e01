"""CompressAI-format rANS streams (the official HPCM code's strings, and ``.hpcm`` versions 1 and 2).

Writing uses CompressAI 1.2.8's ``compressai.ans``, byte-identical to the coder bundled with the official HPCM
code; reading uses this project's bounds-checked decoder of the same format. Symbols and indexes are NumPy int32
buffers; the tables' list form is built once per table. The runtime's own payloads are lane payloads
(:mod:`.lanes`).
"""

from __future__ import annotations

import numpy as np

from .._compat import compressai_ans
from .ggm import CDFTable

_LANE_TABLES: dict[int, tuple] = {}  # id -> (CDFTable, LaneTable): each table kept alive beside its kernel form
SYMBOL_LIMIT = 1 << 26  # CompressAI's escape codes values up to about 2**27


class StreamWriter:
    """Accumulates ``(symbols, indexes)`` runs and produces one rANS stream."""

    def __init__(self) -> None:
        self._encoder = compressai_ans().BufferedRansEncoder()

    def write(self, symbols: np.ndarray, indexes: np.ndarray, table: CDFTable) -> None:
        symbols = np.ascontiguousarray(symbols, dtype=np.int32).reshape(-1)
        indexes = np.ascontiguousarray(indexes, dtype=np.int32).reshape(-1)
        if symbols.size and int(np.abs(symbols.astype(np.int64)).max()) >= SYMBOL_LIMIT:
            # CompressAI's encoder never returns on such values (it shifts a 32-bit word by 32 bits)
            raise ValueError(f"a symbol of magnitude {int(np.abs(symbols.astype(np.int64)).max())} cannot be "
                             f"written to a CompressAI stream (limit {SYMBOL_LIMIT}); use lane payloads")
        self._encoder.encode_with_indexes(symbols.tolist(), indexes.tolist(), *table.coder_args)

    def finish(self) -> bytes:
        return self._encoder.flush()


class StreamReader:
    """Decodes runs of symbols from one CompressAI stream, in the order they were written, with the
    bounds-checked kernel of :class:`~.lanes.LegacyDecoder` (CompressAI's own decoder reads past its buffer on
    hostile data). ``symbols``: how many the stream holds in all (checked when the last one is read)."""

    def __init__(self, data: bytes, table: CDFTable, symbols: int) -> None:
        from .lanes import LaneTable, LegacyDecoder  # numba: loaded when a stream is read, not with the model

        key = id(table)
        if key not in _LANE_TABLES:  # a reference model has two tables, built once
            if len(_LANE_TABLES) >= 64:
                _LANE_TABLES.clear()
            _LANE_TABLES[key] = (table, LaneTable.from_cdf_table(table))
        self._decoder = LegacyDecoder(data, _LANE_TABLES[key][1], symbols)

    def read(self, indexes: np.ndarray) -> np.ndarray:
        return self._decoder.read(indexes)
