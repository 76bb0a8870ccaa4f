"""spgkit: weakly-supervised object localization with pluggable guidance heads.

The declarations of a study are importable from here (they load without torch)::

    from spgkit import Arm, Data, Evaluation, HeadSpec, LocalData, Param, Search, Study, Training
"""

from spgkit.config import Arm, Data, Evaluation, HeadSpec, LocalData, Param, Search, Study, Training
from spgkit.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["Arm", "Data", "Evaluation", "HeadSpec", "LocalData", "Param", "Search", "Study", "Training", "hookimpl", "__version__"]
