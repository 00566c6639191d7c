"""Inference pre- and postprocessing shared by tools/predict.py, both runners and the HTTP
service: the evaluation preset, top-k and the printed line. Paddle-free."""

import numpy as np

from paddlevision.image import load_image
from paddlevision.transforms.presets import EVAL_CROP_SIZE, EVAL_RESIZE_SIZE, ClassificationPresetEval


class Preprocessor:
    """Image (path or bytes) → float32 CHW array through the evaluation preset. An image
    with more pixels than ``max_pixels`` (default: PIL's decompression-bomb limit), as
    decoded or once resized to ``resize_size``, is refused before it is decoded.

    The whole image is resized, then cropped, as torchvision does: resampling only the crop
    (``Image.resize(box=...)``) differs from it by one level in most pixels with Pillow 13,
    whose box is float32 and whose order of the two resampling passes depends on the
    output size."""

    def __init__(self, resize_size=EVAL_RESIZE_SIZE, crop_size=EVAL_CROP_SIZE, max_pixels=None):
        self.transform = ClassificationPresetEval(crop_size=crop_size, resize_size=resize_size)
        self.resize_size = resize_size
        self.max_pixels = max_pixels

    def __call__(self, source, name=None):
        image = load_image(source, name=name, max_pixels=self.max_pixels, resize_size=self.resize_size)
        return self.transform(image)

    def batch(self, sources):
        return np.stack([self(source) for source in sources])


def topk(probs, k=1):
    """Indices and probabilities of the k most likely classes of one probability row."""
    k = min(k, probs.shape[-1])
    order = np.argsort(-probs, kind="stable")[:k]
    return order.tolist(), probs[order].tolist()


def format_prediction(class_ids, probs, class_names=None, image_name=None):
    """``[image_name: PATH, ]class_id: N, prob: P[, class_name: NAME]`` for top-1, with
    lists for top-k > 1, as the reference README prints them."""
    parts = [f"image_name: {image_name}"] if image_name is not None else []
    names = [class_names[i] for i in class_ids] if class_names else None
    if len(class_ids) == 1:
        parts += [f"class_id: {class_ids[0]}", f"prob: {probs[0]}"]
        if names:
            parts.append(f"class_name: {names[0]}")
    else:
        parts += [f"class_id: {class_ids}", f"prob: {probs}"]
        if names:
            parts.append(f"class_name: {names}")
    return ", ".join(parts)
