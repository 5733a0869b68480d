"""The one version string of the package (pyproject reads it; the package and every writer import it)."""

__version__ = "0.1.0"
