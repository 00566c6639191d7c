"""PaddlePaddle reproduction of torchvision's AlexNet and its classification recipe.

Submodules load on first use (``paddlevision.models.alexnet()`` after ``import
paddlevision``), so importing the package does not import paddle: deployment code can
decode and preprocess images with only PIL and numpy.
"""

import importlib
import pkgutil
import warnings

__version__ = "0.1.0"

# paddle's import looks for ccache (for compiling custom operators) and warns on every
# start where there is none; paddlevision compiles nothing at import time.
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

_SUBMODULES = frozenset(module.name for module in pkgutil.iter_modules(__path__))


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_SUBMODULES])
