"""PaddlePaddle reproduction of torchvision's AlexNet and its classification recipe.

Submodules are imported explicitly (``paddlevision.models``, ``paddlevision.datasets``,
``paddlevision.transforms``, ...) so that the paddle-free parts — image decoding and the
evaluation preprocessing — can be used by deployment code without importing paddle.
"""

__version__ = "0.1.0"
