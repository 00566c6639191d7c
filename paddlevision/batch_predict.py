"""Batch prediction over many images: the command-line logic shared by the Paddle
Inference runner (``deploy/py_inference/infer.py``) and the ONNX Runtime runner
(``deploy/onnx/infer.py``). The runners only create their predictor; everything else —
which images, batching, bad images, warm-up, timing and the printed lines — is here.

Paddle-free: the engine comes in as ``predict(batch NCHW float32) -> probabilities``.
"""

import argparse
import glob
import os
import sys
import time
from collections import defaultdict

import numpy as np

from paddlevision.image import ImageDecodeError, has_image_extension
from paddlevision.labels import class_names_for
from paddlevision.model_dir import ModelDirError, read_metadata
from paddlevision.pipeline import Preprocessor, format_prediction, topk

__all__ = ["BatchJob", "add_batch_arguments", "expand_image_paths", "str2bool"]

# The evaluation preset's sizes, for model directories exported without metadata.
DEFAULT_RESIZE_SIZE = 256
DEFAULT_CROP_SIZE = 224

_TRUE = ("true", "1")
_FALSE = ("false", "0")


def str2bool(value):
    """An argparse ``type`` for booleans written as TIPC writes them (``--flag=True``)."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected True or False (or 1/0), got {value!r}")


def add_bool_argument(parser, flag, default, help):
    """``--flag`` alone means True; ``--flag=True``/``--flag False`` are explicit."""
    parser.add_argument(flag, default=default, type=str2bool, nargs="?", const=True, metavar="BOOL", help=help)


def add_batch_arguments(parser):
    parser.add_argument("--model-dir", required=True, help="directory written by tools/export_model.py")
    parser.add_argument(
        "--img-path",
        default="./images/demo.jpg",
        help="an image, a directory (searched recursively) or a glob such as 'imgs/*.jpg'",
    )
    parser.add_argument("--batch-size", default=1, type=int, help="images per forward pass")
    parser.add_argument(
        "--resize-size", default=None, type=int, help=f"short-side resize (default: the export's, else {DEFAULT_RESIZE_SIZE})"
    )
    parser.add_argument(
        "--crop-size", default=None, type=int, help=f"center crop (default: the export's, else {DEFAULT_CROP_SIZE})"
    )
    parser.add_argument("--topk", default=1, type=int, help="print the k most likely classes")
    parser.add_argument("--warmup", default=0, type=int, help="untimed forward passes before the first image")
    add_bool_argument(parser, "--benchmark", False, "print average times per image and throughput to stderr")
    parser.add_argument("--cpu-threads", default=None, type=int, help="CPU threads for inference (default: all cores)")


def expand_image_paths(img_path):
    """``img_path`` as a sorted list of files: a file is itself, a directory gives the
    images (by extension) in it and every folder below it, so a class-folder data set
    (``val/<class>/<image>``) works; anything else is a glob pattern."""
    if os.path.isfile(img_path):
        return [img_path]
    if os.path.isdir(img_path):
        paths = sorted(
            os.path.join(folder, name)
            for folder, _, names in os.walk(img_path)
            for name in names
            if has_image_extension(name)
        )
    else:
        paths = sorted(glob.glob(img_path))
    paths = [path for path in paths if os.path.isfile(path)]
    if not paths:
        raise FileNotFoundError(f"--img-path {img_path}: no image files found")
    return paths


def _check_counts(args):
    for flag, value, minimum in (("--batch-size", args.batch_size, 1), ("--topk", args.topk, 1), ("--warmup", args.warmup, 0)):
        if value < minimum:
            raise SystemExit(f"error: {flag} must be at least {minimum}, got {value}")


def _preprocess_sizes(args, metadata):
    """``(resize, crop)``: the flags where given, else the export's. The crop must be the
    exported input size, since the graph was traced for it."""
    exported_size = metadata.get("img_size")
    crop_size = args.crop_size or exported_size or DEFAULT_CROP_SIZE
    resize_size = args.resize_size or metadata.get("resize_size", DEFAULT_RESIZE_SIZE)
    if exported_size is not None and crop_size != exported_size:
        raise SystemExit(
            f"error: --crop-size {crop_size}: the model in {args.model_dir} was exported for "
            f"{exported_size}x{exported_size} inputs"
        )
    if resize_size < crop_size:
        raise SystemExit(f"error: --resize-size ({resize_size}) must be at least the crop size ({crop_size})")
    return resize_size, crop_size


class BatchJob:
    """Checked arguments and the preprocessing of one runner invocation; :meth:`run`
    classifies every image with a given ``predict``. Bad arguments end the program
    (``SystemExit`` with a message) before any predictor is created."""

    def __init__(self, args):
        _check_counts(args)
        try:
            metadata = read_metadata(args.model_dir)
        except ModelDirError as err:
            raise SystemExit(f"error: --model-dir: {err}")
        resize_size, self.crop_size = _preprocess_sizes(args, metadata)
        try:
            self.paths = expand_image_paths(args.img_path)
        except FileNotFoundError as err:
            raise SystemExit(f"error: {err}")
        self.preprocessor = Preprocessor(resize_size, self.crop_size)
        self.recorded_class_names = metadata.get("class_names")
        self.batch_size = args.batch_size
        self.k = args.topk
        self.warmup = args.warmup
        self.benchmark = args.benchmark

    def run(self, predict):
        """Print one line per image in input order; an image that cannot be read is
        reported on stderr and skipped. Returns the exit status: 1 if any image failed."""
        dummy = np.zeros((self.batch_size, 3, self.crop_size, self.crop_size), dtype=np.float32)
        for _ in range(self.warmup):
            predict(dummy)
        seconds = defaultdict(float)  # wall-clock time per stage
        names, arrays, failures, done = [], [], 0, 0
        for index, path in enumerate(self.paths):
            start = time.perf_counter()
            array = self._preprocess(path)
            seconds["preprocess"] += time.perf_counter() - start
            if array is None:
                failures += 1
            else:
                names.append(path)
                arrays.append(array)
            # Batches fill up across bad images; the last one may be partial.
            if arrays and (len(arrays) == self.batch_size or index == len(self.paths) - 1):
                self._predict_batch(predict, names, arrays, seconds)
                done += len(names)
                names, arrays = [], []
        if self.benchmark and done:
            print(_benchmark_summary(seconds, done, self.batch_size), file=sys.stderr, flush=True)
        return 1 if failures else 0

    def _preprocess(self, path):
        """The image as a CHW array, or ``None`` after reporting why it cannot be read."""
        try:
            return self.preprocessor(path)
        except ImageDecodeError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
        except OSError as error:
            print(f"error: cannot read image {path}: {error.strerror or error}", file=sys.stderr, flush=True)
        return None

    def _predict_batch(self, predict, names, arrays, seconds):
        start = time.perf_counter()
        batch = np.stack(arrays)
        seconds["preprocess"] += time.perf_counter() - start
        start = time.perf_counter()
        probs = predict(batch)
        seconds["inference"] += time.perf_counter() - start
        start = time.perf_counter()
        class_names = class_names_for(probs.shape[-1], self.recorded_class_names)
        lines = []
        for name, row in zip(names, probs):
            class_ids, top_probs = topk(row, self.k)
            lines.append(format_prediction(class_ids, top_probs, class_names, image_name=name))
        seconds["postprocess"] += time.perf_counter() - start
        print("\n".join(lines), flush=True)


def _benchmark_summary(seconds, num_images, batch_size):
    per_image = {stage: 1000.0 * seconds[stage] / num_images for stage in ("preprocess", "inference", "postprocess")}
    total = sum(seconds.values())
    return (
        f"benchmark: {num_images} images, batch size {batch_size}, ms per image: "
        f"preprocess {per_image['preprocess']:.2f}, inference {per_image['inference']:.2f}, "
        f"postprocess {per_image['postprocess']:.2f}; "
        f"{num_images / total:.1f} images/sec end to end, {num_images / seconds['inference']:.1f} images/sec inference"
    )
