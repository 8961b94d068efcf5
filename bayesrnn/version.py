"""The package's version, in a module of its own so every room can read it without importing
the package root (which sits above all of them)."""

__version__ = "0.1.0"
