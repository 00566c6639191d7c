"""``import presets``, as torchvision's reference scripts do. The definitions live in the
package, where deployment code uses them without paddle."""

from paddlevision.transforms.presets import ClassificationPresetEval, ClassificationPresetTrain

__all__ = ["ClassificationPresetTrain", "ClassificationPresetEval"]
