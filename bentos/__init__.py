"""Tabular models to production three ways: online (BentoML), batch (Kubernetes Jobs), edge (TFLite)."""

# The one place the version is written: pyproject.toml reads it, and the servers report it.
# Read from here rather than from the installed distribution's metadata, because the Bento
# image runs this package from its source folder without installing it.
__version__ = "0.1.0"
