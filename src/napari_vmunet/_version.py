"""The package version: one place, read by the build, the CLI and checkpoints."""

__version__ = '0.1.0'
