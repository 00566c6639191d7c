"""Classify images with an exported model on Paddle Inference.

    python deploy/py_inference/infer.py --model-dir ./alexnet_infer --img-path ./images/demo.jpg
prints ``image_name: ./images/demo.jpg, class_id: N, prob: P`` per image on stdout, and on
stderr one line saying what engaged (and a ``warning:`` line for an int8 model quantised
for another kind of CPU). An int8 model from tools/quantize_model.py runs on
ONNX Runtime, which that line then names. ``--img-path`` takes a file, a directory (searched
recursively) or a glob. The exit status is 1 if any image could not be read.
"""

from paddlevision.interrupts import Interrupts

if __name__ == "__main__":  # before the slow imports: Ctrl-C during them ends in one line too
    INTERRUPTS = Interrupts().install()

import sys

from paddlevision.device import default_device
from paddlevision.inference import (
    PRECISIONS,
    ModelDirError,
    PredictorOptions,
    UnsupportedOptionError,
    create_predictor,
)
from paddlevision_cli import (
    ArgumentParser,
    BatchJob,
    add_batch_arguments,
    add_bool_argument,
    add_device_argument,
    at_least,
    run_command,
)


def get_args_parser(add_help=True):
    parser = ArgumentParser(description="AlexNet inference with Paddle Inference", add_help=add_help)
    add_batch_arguments(parser)
    add_device_argument(parser, use_gpu_alias=True)
    parser.add_argument("--gpu-mem", default=8000, type=at_least(1),
                        help="initial GPU memory pool in MB (Config.enable_use_gpu); read only by Paddle's "
                             "naive_best_fit allocator: under the default FLAGS_allocator_strategy=auto_growth "
                             "memory is taken as needed and this flag reserves nothing")
    add_bool_argument(parser, "--use-tensorrt", default=False, help="run through TensorRT (GPU only)")
    parser.add_argument(
        "--precision",
        default=None,
        choices=PRECISIONS,
        help="default: the model's (fp32 for exported fp32 weights); fp16: TensorRT; bf16: CPU with oneDNN; "
        "int8: only a model quantised beforehand",
    )
    add_bool_argument(parser, "--use-onednn", "--use-mkldnn", default=True, help="use oneDNN kernels on CPU")
    return parser


def predictor_options(args):
    device = args.device or default_device()
    kind, _, card = device.partition(":")
    return PredictorOptions(
        use_gpu=kind == "gpu",
        gpu_id=int(card or 0),
        gpu_mem=args.gpu_mem,
        use_tensorrt=args.use_tensorrt,
        precision=args.precision,
        use_onednn=args.use_onednn,
        cpu_threads=args.cpu_threads,
        max_batch_size=args.batch_size,
    )


def main(args):
    job = BatchJob(args)
    try:
        predictor = create_predictor(args.model_dir, predictor_options(args))
    except (ModelDirError, UnsupportedOptionError) as err:
        raise SystemExit(f"error: {err}")
    print(predictor.summary, file=sys.stderr, flush=True)
    for warning in predictor.warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    return job.run(predictor.run)


if __name__ == "__main__":
    sys.exit(run_command(INTERRUPTS, lambda: main(get_args_parser().parse_args())))
