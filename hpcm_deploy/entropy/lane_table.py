"""The coder's view of a CDF table (:class:`LaneTable`: rows, lengths, offsets, the decoder's lookup and the
encoder's reciprocals) and the scale indexer that picks a row for each scale."""

from __future__ import annotations

from typing import Any

import numpy as np

from .rans_kernels import LUT_BITS, PRECISION, _bucket_indexes


def _reciprocals(freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rcp, shift)`` with ``floor(x / f) = (x * rcp) >> (64 + shift)`` for all ``0 <= x < 2**63``, for each
    frequency ``f`` in ``[2, 2**16]`` (``f = 1``: the encoder uses ``x`` itself; ``f = 0``: unused, 0).

    Granlund and Montgomery's round-up method with ``N = 63``-bit dividends: ``l = ceil(log2 f)`` and
    ``rcp = floor(2**(63 + l) / f) + 1`` (under ``2**64``); then ``2**(63+l) < rcp * f <= 2**(63+l) + 2**l``,
    which makes ``floor(x * rcp / 2**(63 + l))`` exact, and ``shift = l - 1``.
    """
    values, inverse = np.unique(freq, return_inverse=True)
    bits = [(f - 1).bit_length() if f > 1 else 1 for f in values.tolist()]
    rcp = np.array([(1 << (63 + b)) // f + 1 if f > 1 else 0 for f, b in zip(values.tolist(), bits)], np.uint64)
    shift = np.array([b - 1 for b in bits], np.uint8)
    return rcp[inverse].reshape(freq.shape), shift[inverse].reshape(freq.shape)


class LaneTable:
    """A :class:`~.ggm.CDFTable` in the form the kernels read, validated once (build with :meth:`from_cdf_table`).

    ``lut[r, b]`` is the last symbol of row ``r`` whose CDF start is at or below ``b << (16 - LUT_BITS)``:
    the decoder starts its search there (on average within a step of the right symbol).
    """

    def __init__(self, cdf: np.ndarray, cdf_length: np.ndarray, offset: np.ndarray) -> None:
        cdf = np.ascontiguousarray(cdf, dtype=np.int32)
        cdf_length = np.ascontiguousarray(cdf_length, dtype=np.int32).reshape(-1)
        offset = np.ascontiguousarray(offset, dtype=np.int32).reshape(-1)
        if cdf.ndim != 2 or cdf.shape[0] < 1 or cdf_length.shape != (cdf.shape[0],) or offset.shape != (
                cdf.shape[0],):
            raise ValueError("CDF table: cdf must be [rows, width] with one cdf_length and offset per row")
        rows, width = cdf.shape
        if cdf_length.min() < 2 or cdf_length.max() > width:
            raise ValueError("CDF table: cdf_length outside 2 ... width")
        lut = np.empty((rows, 1 << LUT_BITS), dtype=np.uint16)
        buckets = np.arange(1 << LUT_BITS, dtype=np.int64) << (PRECISION - LUT_BITS)
        for r in range(rows):
            row = cdf[r, : cdf_length[r]].astype(np.int64)
            if row[0] != 0 or row[-1] != 1 << PRECISION or not (np.diff(row) > 0).all():
                raise ValueError(f"CDF table: row {r} is not a strictly increasing 0 ... {1 << PRECISION} CDF")
            lut[r] = np.searchsorted(row, buckets, side="right") - 1
        self.cdf, self.cdf_length, self.offset, self.lut = cdf, cdf_length, offset, lut
        self.lut_shift = PRECISION - LUT_BITS
        # per symbol (row, s < cdf_length - 1): the reciprocal of its frequency, for the encoder, and its cost
        freq = np.diff(cdf.astype(np.int64), axis=1)
        freq[np.arange(width - 1)[None, :] >= cdf_length[:, None] - 1] = 0
        self.rcp, self.rcp_shift = _reciprocals(freq)
        with np.errstate(divide="ignore"):
            self.cost = np.where(freq > 0, np.round(256 * (PRECISION - np.log2(np.maximum(freq, 1)))), 0).astype(
                np.int32)
        for a in (self.cdf, self.cdf_length, self.offset, self.lut, self.rcp, self.rcp_shift, self.cost):
            a.setflags(write=False)

    @classmethod
    def from_cdf_table(cls, table: Any) -> LaneTable:
        """From a :class:`~.ggm.CDFTable` (anything with ``cdf``, ``cdf_length`` and ``offset``)."""
        return cls(table.cdf, table.cdf_length, table.offset)

    @property
    def rows(self) -> int:
        return int(self.cdf.shape[0])


class ScaleIndexer:
    """:func:`scale_indexes` for one fixed table of edges, prepared once: the per-step path of a codec.

    Between two coding steps the network has evicted NumPy's and numba's dispatch code from the caches, so
    each NumPy call on the way to a kernel costs tens of microseconds there (checking the edges for NaN alone
    was 0.7 ms per HPCM-Base image); an indexer validates the edges and builds its lookup table once.
    """

    def __init__(self, edges: np.ndarray) -> None:
        edges = np.array(edges)  # a private copy: later changes to the caller's array must not matter
        self.edges = edges
        self._fast = edges.dtype == np.float32 and edges.ndim == 1 and not np.isnan(edges).any()
        if self._fast:
            top = np.arange(1 << 13, dtype=np.uint32) << np.uint32(19)
            lo = top.view(np.float32)
            hi = (top | np.uint32(0x7FFFF)).view(np.float32)
            least = np.where(np.arange(1 << 13) < (1 << 12), lo, hi)  # sign bit set: values fall as bits rise
            least = np.where(np.isnan(least), np.float32(-np.inf), least)
            self._lut = np.searchsorted(edges, least, side="left").astype(np.int32)
            self._padded = np.append(edges, np.float32(np.inf)).astype(np.float32)

    def __call__(self, scales: np.ndarray) -> np.ndarray:
        scales = np.asarray(scales)
        if not self._fast or scales.dtype != np.float32:
            return np.searchsorted(self.edges, scales, side="left").astype(np.int32)
        flat = scales.reshape(-1)  # a view where scales is contiguous (the backends' outputs are)
        if not (flat.flags.c_contiguous and flat.flags.writeable):
            flat = flat.copy()  # one kernel signature: numba types read-only and strided arrays apart
        out = np.empty(flat.shape, dtype=np.int32)
        _bucket_indexes(flat, flat.view(np.int32), self._lut, self._padded, out)
        return out.reshape(scales.shape)


_INDEXERS: dict[tuple, ScaleIndexer] = {}


def scale_indexes(scales: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Number of ``edges`` strictly below each scale: ``numpy.searchsorted(edges, scales, side="left")`` as
    int32 of the shape of ``scales`` (NaN sorts last: ``len(edges)``). ``edges`` must be sorted.

    float32 scales and edges (the codec's case) take a numba kernel: a 13-bit lookup on the float's bits, then
    at most a few comparisons; other dtypes fall back to numpy. A codec coding many steps with the same edges
    should hold a :class:`ScaleIndexer` instead.
    """
    edges = np.asarray(edges)
    key = (edges.dtype.str, edges.shape, edges.tobytes())
    indexer = _INDEXERS.get(key)
    if indexer is None:
        if len(_INDEXERS) >= 16:
            _INDEXERS.clear()
        indexer = _INDEXERS[key] = ScaleIndexer(edges)
    return indexer(scales)
