"""Command-line options that several scripts share, and the batch runners' loop: the
argparse, printing and exit-status side of paddlevision, kept out of the library."""

import argparse
import re
import sys
import time
from collections import defaultdict

import numpy as np

from paddlevision.batch_predict import NoImagesError, expand_image_paths, image_batches, prediction_lines
from paddlevision.model_dir import ModelDirError, PreprocessSizeError, preprocess_sizes, read_metadata
from paddlevision.pipeline import Preprocessor
from paddlevision.transforms.presets import EVAL_CROP_SIZE, EVAL_RESIZE_SIZE

__all__ = ["ArgumentParser", "BatchJob", "add_batch_arguments", "add_bool_argument", "add_device_argument", "at_least",
           "number_in", "run_command", "str2bool"]

_TRUE = ("true", "1")
_FALSE = ("false", "0")
_DEVICE = re.compile(r"cpu|gpu(:\d+)?")


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


def add_bool_argument(parser, *flags, default, help):
    """``--flag`` alone means True; ``--flag=True``/``--flag False`` are explicit. Further
    flags are aliases."""
    parser.add_argument(*flags, default=default, type=str2bool, nargs="?", const=True, metavar="BOOL", help=help)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are one line, ``error: …``, exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (--help lists the options)\n")


def run_command(interrupts, command):
    """Release ``interrupts`` (a :class:`paddlevision.interrupts.Interrupts` installed at
    the top of the script) and return ``command()``'s exit status; Ctrl-C or SIGTERM end
    it with one ``interrupted: …`` line (the notes of the KeyboardInterrupt say what is
    kept) and status 128 + signal number."""
    try:
        interrupts.release()
        return command()
    except KeyboardInterrupt as err:
        kept = "; ".join(getattr(err, "__notes__", ())) or "stopped before the end"
        print(f"interrupted: {kept}", file=sys.stderr, flush=True)
        return interrupts.exit_status if interrupts.received else 130


def at_least(minimum):
    """An argparse ``type``: an integer of at least ``minimum``."""
    return number_in(int, minimum)


def number_in(kind, low=None, high=None, low_open=False, high_open=False):
    """An argparse ``type``: a number of ``kind`` (int or float) in the range, each bound
    inclusive unless its ``*_open`` is set; ``None`` leaves that side unbounded."""
    if low is not None and high is None and not low_open:
        expected = f"at least {low}"
    elif low is not None and high is None:
        expected = f"greater than {low}"
    else:
        expected = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def parse(text):
        value = kind(text)
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        if below or above or value != value:  # the last: NaN
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value"
    return parse


def device_name(text):
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected cpu, gpu or gpu:N, got {text!r}")
    return text


def _use_gpu_device(text):
    return "gpu" if str2bool(text) else "cpu"


def add_device_argument(parser, default=None, use_gpu_alias=False):
    """``--device cpu|gpu|gpu:N``; ``None`` means gpu when there is one. With
    ``use_gpu_alias``, the reference's ``--use-gpu True|False`` (TIPC passes it) sets the
    same value: True is ``gpu``, False ``cpu``; of the two flags, the last given wins."""
    help = "cpu, gpu or gpu:N " + (f"(default: {default})" if default else "(default: gpu when there is one)")
    parser.add_argument("--device", default=default, type=device_name, help=help)
    if use_gpu_alias:
        # argparse passes a string const through the type, as if typed: "--use-gpu" alone is True.
        parser.add_argument("--use-gpu", dest="device", default=default, type=_use_gpu_device, nargs="?",
                            const="True", metavar="BOOL", help="the reference's spelling: True is --device gpu, "
                            "False is --device cpu")


def add_batch_arguments(parser):
    """The options of both batch runners (deploy/py_inference and deploy/onnx)."""
    parser.add_argument("--model-dir", required=True, help="directory written by tools/export_model.py")
    parser.add_argument(
        "--img-path",
        default="./images/demo.jpg",
        help="an image, a directory (searched recursively) or a glob such as 'imgs/*.jpg'",
    )
    parser.add_argument("--batch-size", default=1, type=at_least(1), help="images per forward pass")
    parser.add_argument("--resize-size", default=None, type=at_least(1),
                        help=f"short-side resize (default: the export's, else {EVAL_RESIZE_SIZE})")
    parser.add_argument("--crop-size", default=None, type=at_least(1),
                        help=f"center crop (default: the export's, else {EVAL_CROP_SIZE})")
    parser.add_argument("--topk", default=1, type=at_least(1), help="print the k most likely classes")
    parser.add_argument("--warmup", default=0, type=at_least(0), help="untimed forward passes before the first image")
    add_bool_argument(parser, "--benchmark", default=False, help="print average times per image and throughput to stderr")
    parser.add_argument("--cpu-threads", default=None, type=at_least(1),
                        help="CPU threads for inference (default: all cores)")


class BatchJob:
    """A runner's images and preprocessing, checked before any predictor is created (bad
    arguments end the program with one line); :meth:`run` classifies them."""

    def __init__(self, args):
        try:
            metadata = read_metadata(args.model_dir)
        except ModelDirError as err:
            raise SystemExit(f"error: --model-dir: {err}")
        try:
            resize_size, self.crop_size = preprocess_sizes(args.model_dir, metadata, args.resize_size, args.crop_size)
            self.paths = expand_image_paths(args.img_path)
        except (PreprocessSizeError, NoImagesError) as err:
            raise SystemExit(f"error: {err}")
        self.preprocessor = Preprocessor(resize_size, self.crop_size)
        self.class_names = metadata.get("class_names")
        self.args = args

    def run(self, predict):
        """Print one line per image in input order, and each unreadable image's error on
        stderr. Returns the exit status: 1 if any image failed."""
        args = self.args
        dummy = np.zeros((args.batch_size, 3, self.crop_size, self.crop_size), dtype=np.float32)
        for _ in range(args.warmup):
            predict(dummy)
        seconds = defaultdict(float)
        failures = done = 0
        batches = image_batches(self.paths, self.preprocessor, args.batch_size)
        while True:
            start = time.perf_counter()
            batch = next(batches, None)
            seconds["preprocess"] += time.perf_counter() - start
            if batch is None:
                break
            for message in batch.errors:
                print(f"error: {message}", file=sys.stderr, flush=True)
            failures += len(batch.errors)
            if batch.images is None:
                continue
            start = time.perf_counter()
            probs = predict(batch.images)
            seconds["inference"] += time.perf_counter() - start
            start = time.perf_counter()
            lines = prediction_lines(batch.paths, probs, args.topk, self.class_names)
            seconds["postprocess"] += time.perf_counter() - start
            print("\n".join(lines), flush=True)
            done += len(lines)
        if args.benchmark and done:
            print(_benchmark_summary(seconds, done, args.batch_size), file=sys.stderr, flush=True)
        return 1 if failures else 0


def _benchmark_summary(seconds, num_images, batch_size):
    per_image = {stage: 1000.0 * seconds[stage] / num_images for stage in ("preprocess", "inference", "postprocess")}
    total = sum(seconds.values())
    return (
        f"benchmark: {num_images} images, batch size {batch_size}, ms per image: "
        f"preprocess {per_image['preprocess']:.2f}, inference {per_image['inference']:.2f}, "
        f"postprocess {per_image['postprocess']:.2f}; "
        f"{num_images / total:.1f} images/sec end to end, {num_images / seconds['inference']:.1f} images/sec inference"
    )
