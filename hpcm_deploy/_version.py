"""The package version (one home, imported by the package face and by what records it in artifacts)."""

__version__ = "0.1.0"
