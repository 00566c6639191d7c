"""A test model whose answers tell images apart, for the inference and serving tests.

An untrained AlexNet gives nearly the same answer for every image (top-1 0.255 for all of
them, differing in the sixth decimal), so a runner or batcher that handed one image's
answer to another would pass any comparison. :func:`save_peaked_weights` keeps a seeded
random AlexNet's layers up to the last one and replaces the last linear layer: image ``i``
of the given list comes out as class ``i % num_classes`` with top-1 probability
``peaked_probs(len(images))[i]`` — probabilities between 0.95 and 0.4, at least 0.05 apart
from image to image, against tolerances of 1e-5 to 1e-4 in the tests.

The new layer is the minimum-norm solution mapping the images' penultimate features (the
images prepared as every runner prepares them, the evaluation preset) to the logits of
those probabilities. The expected answers are therefore set by construction, not read from
the code under test; Paddle Inference and ONNX Runtime reproduce them within 1e-6.
"""

import numpy as np
import paddle

from paddlevision.models import alexnet
from paddlevision.pipeline import Preprocessor

__all__ = ["peaked_probs", "save_peaked_weights"]


def peaked_probs(count):
    return np.linspace(0.95, 0.4, count)


def save_peaked_weights(path, images, num_classes=4, seed=0):
    """Save the weights (a plain state dict, the reference's format) to ``path``; returns
    the expected ``(class_id, prob)`` of each image (path or encoded bytes) in order."""
    count = len(images)
    if count > 4096:
        raise ValueError("at most 4096 images: one per dimension of the penultimate features")
    paddle.seed(seed)
    model = alexnet(num_classes=num_classes)
    model.eval()
    batch = paddle.to_tensor(Preprocessor(256, 224).batch(images))
    with paddle.no_grad():
        features = model.classifier[:-1](paddle.flatten(model.avgpool(model.features(batch)), 1))
    features = features.numpy().astype(np.float64)

    classes = np.arange(count) % num_classes
    probs = peaked_probs(count)
    # With the other logits at 0, softmax gives the class logit b probability p when
    # e^b / (e^b + num_classes - 1) = p.
    logits = np.zeros((count, num_classes))
    logits[np.arange(count), classes] = np.log(probs * (num_classes - 1) / (1 - probs))
    mean_features, mean_logits = features.mean(0), logits.mean(0)
    weight = np.linalg.pinv(features - mean_features) @ (logits - mean_logits)
    head = model.classifier[-1]
    head.weight.set_value(weight.astype("float32"))  # Paddle's Linear weight is [in, out]
    head.bias.set_value((mean_logits - mean_features @ weight).astype("float32"))
    paddle.save(model.state_dict(), str(path))
    return [(int(c), float(p)) for c, p in zip(classes, probs)]
