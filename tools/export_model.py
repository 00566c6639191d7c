"""Export trained weights for deployment (Paddle Inference, and ONNX with --onnx).

    python tools/export_model.py --pretrained ./output/latest.pdparams --save-inference-dir ./alexnet_infer --onnx

writes ``inference.json`` + ``inference.pdiparams`` (``inference.pdmodel`` on Paddle
2.x), ``inference_meta.json`` (input and preprocessing sizes, class names) and, with
``--onnx``, ``inference.onnx``. The graph ends in a softmax and takes a float32 batch
``x`` of shape ``[N, 3, img_size, img_size]``, any N.
"""

import argparse

from paddlevision.batch_predict import str2bool
from paddlevision.device import DeviceError, setup_device
from paddlevision.export import ExportError, export_inference_model, export_onnx
from paddlevision.model_dir import write_metadata
from paddlevision.models import MIN_INPUT_SIZE, build_from_weights, list_models
from paddlevision.weights import WeightsError


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description="Export AlexNet for inference", add_help=add_help)
    parser.add_argument("--pretrained", required=True, help="weights: .pdparams/.pth path, http(s) URL or 'alexnet'")
    parser.add_argument("--model", default=None, choices=list_models(), help="model name (default: from the checkpoint)")
    parser.add_argument("--num-classes", default=None, type=int, help="only for checkpoints that do not record it")
    parser.add_argument("--img-size", default=224, type=int, help="input height and width of the exported model")
    parser.add_argument("--resize-size", default=256, type=int, help="short-side resize the runners apply before cropping")
    parser.add_argument("--save-inference-dir", default="./alexnet_infer", help="output directory")
    parser.add_argument(
        "--onnx", default=False, type=str2bool, nargs="?", const=True, help="also write inference.onnx (paddle2onnx)"
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"], help="device to trace the model on")
    return parser


def check_args(args):
    if args.img_size < MIN_INPUT_SIZE:
        raise SystemExit(f"error: --img-size must be at least {MIN_INPUT_SIZE} for AlexNet, got {args.img_size}")
    if args.resize_size < args.img_size:
        raise SystemExit(
            f"error: --resize-size ({args.resize_size}) must be at least --img-size ({args.img_size}): "
            "the runners center-crop img-size pixels out of the resized image"
        )
    if args.num_classes is not None and args.num_classes < 1:
        raise SystemExit(f"error: --num-classes must be a positive integer, got {args.num_classes}")


def main(args):
    check_args(args)
    try:
        setup_device(args.device)
    except DeviceError as err:
        raise SystemExit(f"error: {err}")
    try:
        model, meta = build_from_weights(args.pretrained, model_name=args.model, num_classes=args.num_classes)
    except WeightsError as err:
        raise SystemExit(f"error: --pretrained: {err}")
    files = export_inference_model(model, args.save_inference_dir, args.img_size)
    metadata_file = write_metadata(
        args.save_inference_dir,
        model_name=args.model or meta.get("model", "alexnet"),
        num_classes=meta["num_classes"],
        img_size=args.img_size,
        resize_size=args.resize_size,
        class_names=meta.get("class_names"),
    )
    print(f"saved inference model to {files.model_file} and {files.params_file}")
    print(f"saved metadata to {metadata_file}")
    if args.onnx:
        try:
            onnx_file = export_onnx(args.save_inference_dir)
        except ExportError as err:
            raise SystemExit(f"error: --onnx: {err}")
        print(f"saved ONNX model to {onnx_file}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
