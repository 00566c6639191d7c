"""Convert AlexNet weights between torchvision (``.pth``) and PaddlePaddle (``.pdparams``).

The direction follows the file suffixes:

    python tools/convert_torch_weights.py --src alexnet-owt-7be5be79.pth --dst alexnet.pdparams
    python tools/convert_torch_weights.py --src output/best_model.pdparams --dst alexnet.pth

Names are the same on both sides; only the Linear weights change layout (torch
``[out_features, in_features]``, Paddle ``[in_features, out_features]``). The ``.pth`` is
read with ``torch.load(weights_only=True)``, so converting a downloaded file runs no
pickled code. The state dict must be exactly AlexNet's (any class count); ``--num-classes``
additionally insists on a class count.
"""

from paddlevision.interrupts import Interrupts

if __name__ == "__main__":  # before the slow imports: Ctrl-C during them ends in one line too
    INTERRUPTS = Interrupts().install()

import sys
from pathlib import Path

import numpy as np

from paddlevision.checkpoint import atomic_save
from paddlevision.models import AlexNet
from paddlevision.weights import (
    META_KEY,
    TorchRequiredError,
    WeightsError,
    atomic_write,
    load_state_dict_checked,
    num_classes_of,
    paddle_to_torch_state_dict,
    read_weights,
)
from paddlevision_cli import ArgumentParser, run_command

TORCH_SUFFIXES = (".pth", ".pt")
PADDLE_SUFFIXES = (".pdparams",)


def conversion_direction(src, dst):
    """``"torch2paddle"`` or ``"paddle2torch"`` from the suffixes, else a usage error."""
    if src.suffix in TORCH_SUFFIXES and dst.suffix in PADDLE_SUFFIXES:
        return "torch2paddle"
    if src.suffix in PADDLE_SUFFIXES and dst.suffix in TORCH_SUFFIXES:
        return "paddle2torch"
    raise SystemExit(
        f"error: cannot tell the direction from {src.name} -> {dst.name}; use .pth/.pt -> .pdparams "
        "or .pdparams -> .pth/.pt"
    )


def check_alexnet_state_dict(state_dict, source, num_classes=None):
    """The class count of ``state_dict`` (Paddle layout) if it is exactly an AlexNet's."""
    classes = num_classes_of(state_dict)
    if classes is None or "classifier.6.bias" not in state_dict:
        raise WeightsError(f"{source} is not an AlexNet state dict; its keys are: {', '.join(state_dict) or '(none)'}")
    if num_classes is not None and classes != num_classes:
        raise WeightsError(f"{source} has {classes} classes, --num-classes asked for {num_classes}")
    try:
        load_state_dict_checked(AlexNet(num_classes=classes), state_dict, source=source)
    except WeightsError as err:
        raise WeightsError(f"{err}; not an AlexNet state dict, its keys are: {', '.join(state_dict)}") from None
    return classes


def save_torch(state_dict, path):
    try:
        import torch
    except ImportError as err:
        raise TorchRequiredError(f"writing {path} needs torch installed (pip install torch)") from err
    with atomic_write(path) as tmp:
        torch.save({name: torch.from_numpy(array) for name, array in paddle_to_torch_state_dict(state_dict).items()}, tmp)


def convert(src, dst, num_classes=None):
    """Convert ``src`` into ``dst``; returns ``(direction, num_classes, num_parameters)``."""
    src, dst = Path(src), Path(dst)
    direction = conversion_direction(src, dst)
    if not src.is_file():
        raise WeightsError(f"--src {src}: file not found")
    state_dict, _ = read_weights(src)
    classes = check_alexnet_state_dict(state_dict, src, num_classes)
    if direction == "torch2paddle":
        # The metadata lets predict/export/train build the right head without --num-classes.
        atomic_save(dict(state_dict, **{META_KEY: {"model": "alexnet", "num_classes": classes}}), dst)
    else:
        save_torch(state_dict, dst)
    num_parameters = sum(int(np.prod(np.shape(v))) for v in state_dict.values())
    return direction, classes, num_parameters


def get_args_parser(add_help=True):
    parser = ArgumentParser(description="Convert AlexNet weights between .pth and .pdparams",
                                     add_help=add_help)
    parser.add_argument("--src", required=True, help="weights to read: a torchvision .pth/.pt or a .pdparams")
    parser.add_argument("--dst", required=True, help="file to write: .pdparams (from .pth) or .pth (from .pdparams)")
    parser.add_argument("--num-classes", default=None, type=int, help="fail unless the weights have this many classes")
    return parser


def main(args):
    try:
        direction, classes, num_parameters = convert(args.src, args.dst, args.num_classes)
    except WeightsError as err:
        raise SystemExit(f"error: {err}")
    layout = "to [in, out]" if direction == "torch2paddle" else "to [out, in]"
    print(f"wrote {args.dst}: AlexNet, {classes} classes, {num_parameters:,} parameters "
          f"(from {args.src}; Linear weights transposed {layout})")


if __name__ == "__main__":
    sys.exit(run_command(INTERRUPTS, lambda: main(get_args_parser().parse_args())))
