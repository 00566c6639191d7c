"""Classify images with an exported model on ONNX Runtime (CPU); needs onnxruntime, not paddle.

    python tools/export_model.py --pretrained ./output/latest.pdparams --model-dir ./alexnet_infer --onnx
    python deploy/onnx/infer.py --model-dir ./alexnet_infer --img-path ./images/demo.jpg
prints the same lines as deploy/py_inference/infer.py (on stderr what engaged, then the
answers on stdout) and takes its image, batch and benchmark flags.
"""

from paddlevision.interrupts import Interrupts

if __name__ == "__main__":  # before the slow imports: Ctrl-C during them ends in one line too
    INTERRUPTS = Interrupts().install()

import sys

from paddlevision.model_dir import ModelDirError
from paddlevision.onnx_predictor import OnnxRuntimeMissingError, create_onnx_predictor
from paddlevision_cli import ArgumentParser, BatchJob, add_batch_arguments, run_command


def get_args_parser(add_help=True):
    parser = ArgumentParser(description="AlexNet inference with ONNX Runtime", add_help=add_help)
    add_batch_arguments(parser)
    return parser


def main(args):
    job = BatchJob(args)
    try:
        predictor = create_onnx_predictor(args.model_dir, cpu_threads=args.cpu_threads)
    except (ModelDirError, OnnxRuntimeMissingError) as err:
        raise SystemExit(f"error: {err}")
    print(predictor.summary, file=sys.stderr, flush=True)
    for warning in predictor.warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    return job.run(predictor.run)


if __name__ == "__main__":
    sys.exit(run_command(INTERRUPTS, lambda: main(get_args_parser().parse_args())))
