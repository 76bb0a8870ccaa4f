"""spgkit: weakly-supervised object localization with pluggable guidance heads."""

from spgkit.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
