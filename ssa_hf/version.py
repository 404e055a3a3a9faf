"""The package version, in its own module so that the command line reads it without importing torch."""

__version__ = "0.2.0"
