"""Measuring codecs: quality metrics, bits from real streams, JPEG anchors, BD-rate, benchmarks."""
