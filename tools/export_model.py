"""Export trained weights for deployment (Paddle Inference, and ONNX with --onnx).

    python tools/export_model.py --pretrained ./output/latest.pdparams --model-dir ./alexnet_infer --onnx

writes the graph (ending in a softmax, input ``x`` of shape ``[N, 3, crop, crop]``), its
weights, ``inference_meta.json`` (preprocessing sizes, class names) and, with ``--onnx``,
``inference.onnx``; each model is loaded back and compared with the trained one before the
directory replaces an earlier export.
"""

from paddlevision.interrupts import Interrupts

if __name__ == "__main__":  # before the slow imports: Ctrl-C during them ends in one line too
    INTERRUPTS = Interrupts().install()

import sys

from paddlevision.device import DeviceError, setup_device
from paddlevision.export import (
    CHECK_BATCH_SIZE,
    CHECK_TOLERANCE,
    ExportError,
    check_export_target,
    export_inference_model,
)
from paddlevision.models import MIN_INPUT_SIZE, build_from_weights, list_models
from paddlevision.transforms.presets import EVAL_CROP_SIZE, EVAL_RESIZE_SIZE
from paddlevision.weights import WeightsError
from paddlevision_cli import ArgumentParser, add_bool_argument, add_device_argument, at_least, run_command


def get_args_parser(add_help=True):
    parser = ArgumentParser(description="Export AlexNet for inference", add_help=add_help)
    parser.add_argument("--pretrained", required=True, help="weights: .pdparams/.pth path, http(s) URL or 'alexnet'")
    parser.add_argument("--model", default=None, choices=list_models(), help="model name (default: from the checkpoint)")
    parser.add_argument("--num-classes", default=None, type=at_least(1), help="only for checkpoints that do not record it")
    parser.add_argument("--crop-size", "--img-size", default=EVAL_CROP_SIZE, type=at_least(MIN_INPUT_SIZE),
                        help="input height and width of the exported model")
    parser.add_argument("--resize-size", default=EVAL_RESIZE_SIZE, type=int,
                        help="short-side resize the runners apply before cropping")
    parser.add_argument("--model-dir", "--save-inference-dir", default="./alexnet_infer", help="output directory")
    add_bool_argument(parser, "--onnx", default=False, help="also write inference.onnx (paddle2onnx)")
    add_device_argument(parser, default="cpu")
    return parser


def main(args):
    if args.resize_size < args.crop_size:
        raise SystemExit(
            f"error: --resize-size ({args.resize_size}) must be at least --crop-size ({args.crop_size}): "
            "the runners center-crop the crop size out of the resized image"
        )
    try:
        check_export_target(args.model_dir)
    except ExportError as err:
        raise SystemExit(f"error: --model-dir: {err}")
    try:
        result = export(args)
    except KeyboardInterrupt as err:
        err.add_note(f"nothing was written, {args.model_dir} is as it was")
        raise
    print(f"saved inference model to {result.files.model_file} and {result.files.params_file}")
    print(f"saved metadata to {result.metadata_file}")
    if result.onnx_file:
        print(f"saved ONNX model to {result.onnx_file}")
    diffs = ", ".join(f"{engine} max |diff| {diff:.1e}" for engine, diff in result.max_diffs.items())
    print(f"checked: {diffs} from the model's probabilities on a random batch of {CHECK_BATCH_SIZE} "
          f"(tolerance {CHECK_TOLERANCE:.0e})")
    return 0


def export(args):
    try:
        setup_device(args.device)
    except DeviceError as err:
        raise SystemExit(f"error: {err}")
    try:
        model, meta = build_from_weights(args.pretrained, model_name=args.model, num_classes=args.num_classes)
    except WeightsError as err:
        raise SystemExit(f"error: --pretrained: {err}")
    try:
        return export_inference_model(
            model, args.model_dir, args.crop_size, resize_size=args.resize_size,
            model_name=args.model or meta.get("model", "alexnet"), class_names=meta.get("class_names"), onnx=args.onnx,
        )
    except ExportError as err:
        raise SystemExit(f"error: {err}")


if __name__ == "__main__":
    sys.exit(run_command(INTERRUPTS, lambda: main(get_args_parser().parse_args())))
