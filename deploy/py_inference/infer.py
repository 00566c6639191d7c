"""Classify images with an exported model on Paddle Inference.

    python deploy/py_inference/infer.py --model-dir ./alexnet_infer --img-path ./images/demo.jpg
prints ``image_name: ./images/demo.jpg, class_id: N, prob: P`` per image on stdout, and on
stderr one line saying what engaged (device, threads, oneDNN, bf16, TensorRT). ``--img-path``
takes a file, a directory (searched recursively, so a class-folder data set works) or a
glob; boolean flags take ``True``/``False`` as TIPC passes them (``--use-gpu=False``). The
exit status is 1 if any image could not be read.
"""

import argparse
import sys


from paddlevision.batch_predict import BatchJob, add_batch_arguments, add_bool_argument
from paddlevision.inference import (
    PRECISIONS,
    ModelDirError,
    PredictorOptions,
    UnsupportedOptionError,
    create_predictor,
    gpu_available,
)


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description="AlexNet inference with Paddle Inference", add_help=add_help)
    add_batch_arguments(parser)
    add_bool_argument(parser, "--use-gpu", None, "run on the GPU (default: True when one is available)")
    parser.add_argument("--gpu-mem", default=8000, type=int, help="MB of GPU memory to reserve up front")
    add_bool_argument(parser, "--use-tensorrt", False, "run through TensorRT (GPU only)")
    parser.add_argument(
        "--precision",
        default=None,
        choices=PRECISIONS,
        help="default: the model's (fp32 for exported fp32 weights); fp16: TensorRT; bf16: CPU with oneDNN; "
        "int8: only a model quantised beforehand",
    )
    add_bool_argument(parser, "--use-mkldnn", True, "use oneDNN kernels on CPU")
    return parser


def main(args):
    job = BatchJob(args)
    use_gpu = gpu_available() if args.use_gpu is None else args.use_gpu
    options = PredictorOptions(
        use_gpu=use_gpu,
        gpu_mem=args.gpu_mem,
        use_tensorrt=args.use_tensorrt,
        precision=args.precision,
        use_mkldnn=args.use_mkldnn,
        cpu_threads=args.cpu_threads,
        max_batch_size=args.batch_size,
    )
    try:
        predictor = create_predictor(args.model_dir, options)
    except (ModelDirError, UnsupportedOptionError) as err:
        raise SystemExit(f"error: {err}")
    print(predictor.summary, file=sys.stderr, flush=True)
    return job.run(predictor.run)


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
