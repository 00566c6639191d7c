"""Classification presets at the repository root, where torchvision's reference scripts
expect them (``import presets``).

The definitions live in :mod:`paddlevision.transforms.presets` so that deployment code can
reuse the exact evaluation preprocessing by importing the package, without the repository
root on ``sys.path`` and without importing paddle.
"""

from paddlevision.transforms.presets import ClassificationPresetEval, ClassificationPresetTrain

__all__ = ["ClassificationPresetTrain", "ClassificationPresetEval"]
