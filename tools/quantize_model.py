"""Quantise an exported model to int8 (post-training, static), for ONNX Runtime.

    python tools/export_model.py --pretrained ./output/best_model.pdparams --model-dir ./alexnet_infer --onnx
    python tools/quantize_model.py --model-dir ./alexnet_infer --calib-data ./data/train --output ./alexnet_infer_int8
    python deploy/py_inference/infer.py --model-dir ./alexnet_infer_int8 --img-path ./images/demo.jpg

``--calib-data`` is an image, a directory (searched recursively) or a glob; ``--calib-count``
images spread evenly over it (so every class folder contributes) set the activation
ranges. Calibrate on training images, never on those that measure accuracy. The output
directory must be new; its inference_meta.json records ``"precision": "int8"``. Before it
appears, the int8 model is reloaded and compared with fp32 on the calibration images.
``--weight-range`` chooses int8 weights for the CPU that will run the model (default: this
one's): ``full`` (8-bit) for CPUs with VNNI or AMX, ``reduced`` (7-bit) for CPUs without.
"""

from paddlevision.interrupts import Interrupts

if __name__ == "__main__":  # before the slow imports: Ctrl-C during them ends in one line too
    INTERRUPTS = Interrupts().install()

import sys

from paddlevision.batch_predict import NoImagesError, expand_image_paths
from paddlevision.model_dir import ModelDirError, PreprocessSizeError, read_metadata
from paddlevision.onnx_predictor import WEIGHT_RANGES
from paddlevision.quantization import (
    AGREEMENT_TOLERANCE,
    CALIBRATION_METHODS,
    QuantizationError,
    calibration_subset,
    default_weight_range,
    quantize,
)
from paddlevision_cli import ArgumentParser, at_least, run_command


def get_args_parser(add_help=True):
    parser = ArgumentParser(description="Post-training int8 quantisation (ONNX Runtime)", add_help=add_help)
    parser.add_argument("--model-dir", required=True, help="fp32 export with inference.onnx (tools/export_model.py --onnx)")
    parser.add_argument("--calib-data", required=True, help="calibration images: a file, a directory or a glob")
    parser.add_argument("--calib-count", default=320, type=at_least(1), help="calibration images used (default: 320)")
    parser.add_argument("--output", required=True, help="new directory for the int8 model")
    parser.add_argument("--method", default="minmax", choices=list(CALIBRATION_METHODS),
                        help="how activation ranges are read from the calibration images")
    parser.add_argument("--weight-range", default="auto", choices=["auto", *WEIGHT_RANGES],
                        help="int8 weights for the CPU that will run the model: full (8-bit) needs VNNI or AMX "
                             "(avx512_vnni, avx_vnni, amx_int8), reduced (7-bit) avoids the saturation of CPUs "
                             f"without; auto: this CPU's ({default_weight_range()})")
    return parser


def main(args):
    try:
        images = calibration_subset(expand_image_paths(args.calib_data), args.calib_count)
    except NoImagesError:
        raise SystemExit(f"error: --calib-data {args.calib_data}: no image files found")
    try:
        onnx_file = quantize(args.model_dir, images, args.output, method=args.method,
                             weight_range=None if args.weight_range == "auto" else args.weight_range)
    except (ModelDirError, PreprocessSizeError) as err:
        raise SystemExit(f"error: --model-dir: {err}")
    except QuantizationError as err:
        raise SystemExit(f"error: {err}")
    quantization = read_metadata(args.output)["quantization"]
    agreement = quantization["fp32_agreement"]
    print(f"calibrated on {len(images)} images from {args.calib_data}")
    print(f"int8 weights: {quantization['weights']} ({quantization['weight_range_chosen']})")
    print(f"checked against fp32 on {agreement['images']} of them: mean total-variation distance "
          f"{agreement['mean_total_variation']:.4f} (at most {AGREEMENT_TOLERANCE})")
    print(f"saved int8 model to {onnx_file}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(INTERRUPTS, lambda: main(get_args_parser().parse_args())))
