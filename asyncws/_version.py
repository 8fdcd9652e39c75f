"""The package version, kept in this one place (read by pyproject and ``asyncws.__version__``)."""

__version__ = "0.2.0"
