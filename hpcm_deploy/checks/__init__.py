"""Checks of exports and engines: against the PyTorch stages, against TensorRT's importer, and lint."""
