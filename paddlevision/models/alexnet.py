"""AlexNet, layer for layer torchvision's ``torchvision.models.alexnet``.

Parameter names (``features.0.weight`` ... ``classifier.6.bias``) and initial
distributions match torchvision, so weights convert one to one (Linear weights are
stored transposed in Paddle: ``[in_features, out_features]``).
"""

import math

import paddle
from paddle import nn

from paddlevision.weights import load_pretrained

__all__ = ["AlexNet", "alexnet", "MIN_INPUT_SIZE"]

# The smallest spatial size for which every pooling stage still has an output pixel.
MIN_INPUT_SIZE = 63


def _torch_default_init(fan_in):
    """PyTorch's default for Conv2d/Linear: kaiming_uniform(a=sqrt(5)) for weights and
    uniform(+-1/sqrt(fan_in)) for biases, which are the same bound."""
    bound = 1.0 / math.sqrt(fan_in)
    return (
        paddle.ParamAttr(initializer=nn.initializer.Uniform(-bound, bound)),
        paddle.ParamAttr(initializer=nn.initializer.Uniform(-bound, bound)),
    )


def _conv(in_channels, out_channels, kernel_size, stride=1, padding=0):
    weight_attr, bias_attr = _torch_default_init(in_channels * kernel_size * kernel_size)
    return nn.Conv2D(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=padding,
        weight_attr=weight_attr,
        bias_attr=bias_attr,
    )


def _linear(in_features, out_features):
    weight_attr, bias_attr = _torch_default_init(in_features)
    return nn.Linear(in_features, out_features, weight_attr=weight_attr, bias_attr=bias_attr)


class AlexNet(nn.Layer):
    def __init__(self, num_classes=1000, dropout=0.5):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
        self.num_classes = num_classes
        self.features = nn.Sequential(
            _conv(3, 64, 11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2D(kernel_size=3, stride=2),
            _conv(64, 192, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2D(kernel_size=3, stride=2),
            _conv(192, 384, 3, padding=1),
            nn.ReLU(),
            _conv(384, 256, 3, padding=1),
            nn.ReLU(),
            _conv(256, 256, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2D(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2D((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            _linear(256 * 6 * 6, 4096),
            nn.ReLU(),
            nn.Dropout(p=dropout),
            _linear(4096, 4096),
            nn.ReLU(),
            _linear(4096, num_classes),
        )

    def forward(self, x):
        height, width = x.shape[-2:]
        # -1 marks a dimension left dynamic in a static graph; it is checked at run time.
        if 0 <= min(height, width) < MIN_INPUT_SIZE:
            raise ValueError(f"AlexNet needs inputs of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}, got {height}x{width}")
        x = self.features(x)
        x = self.avgpool(x)
        x = paddle.flatten(x, 1)
        return self.classifier(x)


def alexnet(pretrained=None, **kwargs):
    """Build AlexNet; ``pretrained`` is anything :func:`paddlevision.weights.resolve_weights`
    takes, or ``True`` for the reproduction's published weights."""
    model = AlexNet(**kwargs)
    if pretrained:
        load_pretrained(model, "alexnet" if pretrained is True else pretrained)
    return model
