"""Classify one image with trained weights on the training engine (dynamic graph).

    python tools/predict.py --pretrained ./output/latest.pdparams --img-path images/demo.jpg --device cpu
prints ``class_id: N, prob: P`` (and ``class_name: …`` when the checkpoint or ImageNet
names the class).
"""

from paddlevision.interrupts import Interrupts

if __name__ == "__main__":  # before the slow imports: Ctrl-C during them ends in one line too
    INTERRUPTS = Interrupts().install()

import sys

# paddlevision before paddle: the package quiets paddle's import-time warning.
from paddlevision.device import DeviceError, setup_device
from paddlevision.image import ImageDecodeError
from paddlevision.labels import class_names_for
from paddlevision.models import MIN_INPUT_SIZE, build_from_weights, list_models
from paddlevision.pipeline import Preprocessor, format_prediction, topk
from paddlevision.transforms.presets import EVAL_CROP_SIZE, EVAL_RESIZE_SIZE
from paddlevision.weights import WeightsError
from paddlevision_cli import ArgumentParser, add_device_argument, at_least, run_command

import paddle


def get_args_parser(add_help=True):
    parser = ArgumentParser(description="AlexNet prediction on one image", add_help=add_help)
    parser.add_argument("--pretrained", required=True, help="weights: .pdparams/.pth path, http(s) URL or 'alexnet'")
    parser.add_argument("--img-path", default="images/demo.jpg", help="image to classify")
    parser.add_argument("--model", default=None, choices=list_models(), help="model name (default: from the checkpoint)")
    add_device_argument(parser)
    parser.add_argument("--num-classes", default=None, type=at_least(1), help="only for checkpoints that do not record it")
    parser.add_argument("--resize-size", default=EVAL_RESIZE_SIZE, type=at_least(1), help="resize of the short side")
    parser.add_argument("--crop-size", default=EVAL_CROP_SIZE, type=at_least(MIN_INPUT_SIZE), help="center crop")
    parser.add_argument("--topk", default=1, type=at_least(1), help="print the k most likely classes")
    return parser


@paddle.no_grad()
def main(args):
    try:
        setup_device(args.device)
        model, meta = build_from_weights(args.pretrained, model_name=args.model, num_classes=args.num_classes)
        image = Preprocessor(args.resize_size, args.crop_size)(args.img_path)
    except (WeightsError, DeviceError, ImageDecodeError) as err:
        raise SystemExit(f"error: {err}")
    except OSError as err:
        raise SystemExit(f"error: --img-path {args.img_path}: {err.strerror or err}")
    model.eval()
    probs = paddle.nn.functional.softmax(model(paddle.to_tensor(image[None])), axis=-1).numpy()[0]
    class_ids, top_probs = topk(probs, args.topk)
    class_names = class_names_for(meta["num_classes"], meta.get("class_names"))
    print(format_prediction(class_ids, top_probs, class_names))


if __name__ == "__main__":
    sys.exit(run_command(INTERRUPTS, lambda: main(get_args_parser().parse_args())))
