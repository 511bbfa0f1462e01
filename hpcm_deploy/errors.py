"""Errors a user can cause. The CLI prints their message as one line on stderr and exits non-zero."""

from __future__ import annotations


class HPCMError(Exception):
    """Base class: something the user asked for cannot be done; the message says what and what to do."""

    exit_code = 1


class ConfigError(HPCMError):
    """An invalid configuration, preset name or override."""


class CheckpointError(HPCMError):
    """A checkpoint that does not fit the model it is loaded into."""


class InputError(HPCMError):
    """An input file or array that cannot be coded (missing, not an image, unsupported mode)."""


class BitstreamError(HPCMError):
    """A stream that cannot be decoded: not ours, truncated, corrupted, or from another model."""


class ExportError(HPCMError):
    """An export directory that is missing, incomplete, or does not match its manifest."""


class BackendError(HPCMError):
    """A backend that is unavailable or cannot run the requested export on the requested device."""
