"""nclab: neural collapse, measured exactly, modelled, and reproduced."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nclab")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
