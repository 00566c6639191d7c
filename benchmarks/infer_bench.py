"""CPU inference throughput of AlexNet — Paddle Inference (fp32 with and without oneDNN,
bf16 where the CPU has it), ONNX Runtime fp32 and int8 (one row per int8 weight range,
``--weight-ranges``), PyTorch eager — with every engine timed round-robin in the same run,
and the int8 models' top-1 agreement with fp32.

    python -m benchmarks.infer_bench --json bench.json \\
        --accuracy-model-dir ./fm_infer --calib-data ./fmnist/train --held-data ./fmnist/val

Speed: weights do not change it, so by default a randomly initialised 1000-class AlexNet
is exported to a temporary directory (``--model-dir`` reuses an fp32 export that has
``inference.onnx``) and quantised by ``tools/quantize_model.py``'s code. For each batch
size, one round times ``calls`` batches (at least ``--images-per-run`` images) of every
engine, in a new random order each round, so that load from other processes falls on all
engines alike; ``images_per_sec`` is the median over ``--repeats`` rounds, after
``--warmup`` untimed batches each.

Agreement (with ``--accuracy-model-dir``, a trained fp32 export with ``inference.onnx``):
that model is quantised (once per weight range) on ``--calib-count`` images of
``--calib-data`` and each runs on ``--held-data``, which calibration must not overlap; the
JSON records each one's mean total-variation distance from fp32's class probabilities, int8
rows carry ``top1_agreement``
(the fraction of held images whose int8 top-1 equals Paddle Inference fp32's), and, when
the held images sit in class folders (sorted folder names are class indices, as in
training), both top-1 accuracies.

The GEMM rate is numpy's (OpenBLAS) sgemm on 2048x2048 matrices, measured in a child
process with the same thread count; divided by AlexNet's 1.43 GFLOP per image it is a
reference rate, not a bound: oneDNN's convolutions run faster than that sgemm.
"""

import argparse
import datetime
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# paddlevision before paddle: the package quiets paddle's import-time warning.
from paddlevision.batch_predict import expand_image_paths
from paddlevision.device import VNNI_FLAGS, cpu_vendor_and_flags
from paddlevision.export import export_inference_model, export_onnx
from paddlevision.inference import PredictorOptions, cpu_supports_bf16, create_predictor
from paddlevision.model_dir import preprocess_sizes, read_metadata, write_metadata
from paddlevision.models import alexnet
from paddlevision.onnx_predictor import WEIGHT_RANGES, create_onnx_predictor
from paddlevision.pipeline import Preprocessor
from paddlevision.quantization import calibration_subset, quantize

import paddle

REPO_ROOT = Path(__file__).resolve().parents[1]
# AlexNet's forward pass on one 224x224 image: about 0.714 G multiply-accumulates.
ALEXNET_GFLOP_PER_IMAGE = 2 * 0.714
IMG_SIZE = 224
# The /proc/cpuinfo flags that decide the int8 and bf16 kernels, recorded with the results.
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", *VNNI_FLAGS, "avx512_bf16", "amx_bf16", "amx_tile")

# Run in a child process so that OpenBLAS starts with exactly the requested threads.
SGEMM_CODE = """
import sys, time, numpy as np
size, repeats = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a = rng.standard_normal((size, size), dtype=np.float32)
b = rng.standard_normal((size, size), dtype=np.float32)
a @ b
times = []
for _ in range(repeats):
    start = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - start)
times.sort()
print(2 * size**3 / times[len(times) // 2] / 1e9)
"""


def get_args_parser():
    parser = argparse.ArgumentParser(description="AlexNet CPU inference benchmark, engines timed round-robin")
    parser.add_argument("--cpu-threads", default=2, type=int, help="threads for every engine and for sgemm")
    parser.add_argument("--batch-sizes", default=[1, 8, 32], type=int, nargs="+")
    parser.add_argument("--repeats", default=7, type=int, help="round-robin rounds per batch size (the median is kept)")
    parser.add_argument("--warmup", default=2, type=int, help="untimed runs per engine and batch size")
    parser.add_argument("--images-per-run", default=32, type=int, help="minimum images forwarded per timed run")
    parser.add_argument("--model-dir", default=None, help="an export with inference.onnx (default: export a fresh one)")
    parser.add_argument("--accuracy-model-dir", default=None, help="a trained fp32 export with inference.onnx")
    parser.add_argument("--calib-data", default=None,
                        help="calibration images (file, directory or glob; default for the speed model: images/)")
    parser.add_argument("--calib-count", default=320, type=int, help="calibration images used")
    parser.add_argument("--held-data", default=None, help="images calibration never sees, for the agreement")
    parser.add_argument("--weight-ranges", default=list(WEIGHT_RANGES), nargs="+", choices=WEIGHT_RANGES,
                        help="int8 weight ranges to quantise with, one int8 row each (tools/quantize_model.py "
                             "--weight-range)")
    parser.add_argument("--json", default=None, help="write the results to this file")
    return parser


def measure_sgemm_gflops(threads, size=2048, repeats=7):
    env = {"OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    result = subprocess.run(
        [sys.executable, "-c", SGEMM_CODE, str(size), str(repeats)],
        env=env, capture_output=True, text=True, check=True,
    )
    return float(result.stdout)


def round_robin(runs, batch_size, args):
    """``{name: images/sec}``, the median over rounds that each time every run in ``runs``
    once, in a new random order, on the same random batch of ``batch_size`` images."""
    batch = np.random.default_rng(0).standard_normal((batch_size, 3, IMG_SIZE, IMG_SIZE), dtype=np.float32)
    calls = max(1, -(-args.images_per_run // batch_size))
    for run in runs.values():
        for _ in range(args.warmup):
            run(batch)
    seconds = {name: [] for name in runs}
    order = list(runs)
    shuffle = random.Random(batch_size).shuffle
    for _ in range(args.repeats):
        shuffle(order)
        for name in order:
            start = time.perf_counter()
            for _ in range(calls):
                runs[name](batch)
            seconds[name].append(time.perf_counter() - start)
    return {name: calls * batch_size / statistics.median(times) for name, times in seconds.items()}


def export_random_model(directory):
    paddle.seed(0)
    export_inference_model(alexnet(num_classes=1000), directory, IMG_SIZE)
    write_metadata(directory, model_name="alexnet", num_classes=1000, crop_size=IMG_SIZE, resize_size=256)
    export_onnx(directory)
    return directory


def torch_runner(threads):
    """PyTorch eager AlexNet (same architecture, random weights), or None without torch."""
    try:
        import torch
        import torchvision
    except ImportError:
        return None
    torch.set_num_threads(threads)
    model = torchvision.models.alexnet(weights=None).eval()

    def run(batch):
        with torch.inference_mode():
            return torch.softmax(model(torch.from_numpy(batch)), dim=-1).numpy()

    return run


def engines(model_dir, int8_dirs, threads, batch_size):
    """``{(engine, precision, mkldnn): run}`` for everything this machine can run, made for
    ``batch_size`` as infer.py makes them; ``int8_dirs``: ``{weight range: int8 model}``,
    whose rows have the precision ``int8/<weight range>``."""
    runs = {}
    for mkldnn in (True, False):
        options = PredictorOptions(cpu_threads=threads, use_onednn=mkldnn, max_batch_size=batch_size)
        runs["paddle_inference", "fp32", mkldnn] = create_predictor(model_dir, options).run
    if cpu_supports_bf16():
        options = PredictorOptions(cpu_threads=threads, precision="bf16", max_batch_size=batch_size)
        runs["paddle_inference", "bf16", True] = create_predictor(model_dir, options).run
    runs["onnxruntime", "fp32", None] = create_onnx_predictor(model_dir, cpu_threads=threads).run
    for weight_range, int8_dir in int8_dirs.items():
        runs["onnxruntime", f"int8/{weight_range}", None] = create_onnx_predictor(int8_dir, cpu_threads=threads).run
    run = torch_runner(threads)
    if run is not None:
        runs["torch", "fp32", None] = run
    return runs


def class_folder_labels(paths, root):
    """Class index of each path from its top folder under ``root`` (sorted folder names, as
    the training data sets number classes); None unless every image sits in a class folder."""
    root = Path(root)
    if not root.is_dir():
        return None
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    parts = [Path(path).relative_to(root).parts for path in paths]
    if not classes or any(len(part) < 2 for part in parts):
        return None
    return np.array([classes.index(part[0]) for part in parts])


def probabilities(run, preprocessor, paths, batch_size=32):
    return np.concatenate([run(preprocessor.batch(paths[i:i + batch_size])) for i in range(0, len(paths), batch_size)])


def measure_agreement(args, work_dir):
    """int8 against fp32 on the held images, for each weight range: a dict for the JSON."""
    model_dir = args.accuracy_model_dir
    held = expand_image_paths(args.held_data)
    calibration = calibration_subset(expand_image_paths(args.calib_data), args.calib_count)
    overlap = {str(Path(p).resolve()) for p in held} & {str(Path(p).resolve()) for p in calibration}
    if overlap:
        raise SystemExit(f"error: --held-data and --calib-data share {len(overlap)} images; hold them apart")
    preprocessor = Preprocessor(*preprocess_sizes(model_dir, read_metadata(model_dir)))
    fp32_probs = probabilities(
        create_predictor(model_dir, PredictorOptions(cpu_threads=args.cpu_threads, max_batch_size=32)).run,
        preprocessor, held)
    fp32 = fp32_probs.argmax(1)
    labels = class_folder_labels(held, args.held_data)
    result = {
        "model_dir": str(Path(model_dir).resolve()),
        "calibration_images": len(calibration),
        "held_images": len(held),
    }
    if labels is not None:
        result["fp32_top1_accuracy"] = round(float((fp32 == labels).mean()), 4)
    for weight_range in args.weight_ranges:
        int8_dir = Path(work_dir) / f"accuracy_int8_{weight_range}"
        quantize(model_dir, calibration, int8_dir, weight_range=weight_range)
        int8_probs = probabilities(create_onnx_predictor(int8_dir, cpu_threads=args.cpu_threads).run, preprocessor,
                                   held)
        int8 = int8_probs.argmax(1)
        result[weight_range] = {
            "top1_agreement": round(float((fp32 == int8).mean()), 4),
            # half the L1 distance of the class probabilities, as tools/quantize_model.py checks it
            "mean_total_variation": round(float(0.5 * np.abs(int8_probs - fp32_probs).sum(1).mean()), 5),
        }
        if labels is not None:
            result[weight_range]["int8_top1_accuracy"] = round(float((int8 == labels).mean()), 4)
    return result


def format_table(results, gemm_rate):
    """One row per engine configuration, throughput per batch size, ratios to ONNX Runtime
    fp32 at batch 1 and at the largest batch, and the agreement of int8 rows."""
    batch_sizes = sorted({r["batch_size"] for r in results})
    smallest, largest = batch_sizes[0], batch_sizes[-1]

    def ort_fp32(batch_size):
        return next(r["images_per_sec"] for r in results
                    if (r["engine"], r["precision"], r["batch_size"]) == ("onnxruntime", "fp32", batch_size))

    def config(r):
        precision = f"{r['precision']}/{r['weight_range']}" if "weight_range" in r else r["precision"]
        return r["engine"], precision, r["mkldnn"]

    header = ["engine", "precision", "mkldnn"] + [f"bs={b} img/s" for b in batch_sizes]
    header += [f"bs={smallest} vs ORT", f"bs={largest} vs ORT", f"bs={largest} vs GEMM rate", "top-1 agreement"]
    rows = []
    for key in dict.fromkeys(config(r) for r in results):
        mine = [r for r in results if config(r) == key]
        by_batch = {r["batch_size"]: r["images_per_sec"] for r in mine}
        row = [key[0], key[1], "-" if key[2] is None else str(key[2]).lower()]
        row += [f"{by_batch[b]:.1f}" for b in batch_sizes]
        row += [f"{by_batch[b] / ort_fp32(b):.2f}x" for b in (smallest, largest)]
        row += [f"{by_batch[largest] / gemm_rate:.2f}x"]
        agreement = mine[0].get("top1_agreement")
        row.append("-" if agreement is None else f"{agreement:.4f}")
        rows.append(row)
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header] + rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(args):
    if args.accuracy_model_dir and not (args.calib_data and args.held_data):
        raise SystemExit("error: --accuracy-model-dir needs --calib-data and --held-data")
    gemm = measure_sgemm_gflops(args.cpu_threads)
    gemm_rate = gemm / ALEXNET_GFLOP_PER_IMAGE
    print(f"measured GEMM rate: numpy sgemm {gemm:.1f} GFLOP/s on {args.cpu_threads} threads = "
          f"{gemm_rate:.1f} AlexNet images/s at {ALEXNET_GFLOP_PER_IMAGE:.2f} GFLOP per image "
          "(a reference rate, not a bound: oneDNN's convolutions exceed it)", flush=True)
    flags = [flag for flag in KERNEL_FLAGS if flag in cpu_vendor_and_flags()[1]]
    print(f"CPU: {cpu_model()}; flags: {', '.join(flags) or 'none of ' + ', '.join(KERNEL_FLAGS)}", flush=True)
    if not cpu_supports_bf16():
        print("paddle_inference bf16: skipped, this CPU has no native bf16", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="infer-bench-") as tmp:
        agreement = None
        if not args.accuracy_model_dir:
            print("int8 top1_agreement: not measured (pass --accuracy-model-dir, --calib-data and --held-data)",
                  file=sys.stderr)
        else:
            agreement = measure_agreement(args, tmp)
            print(f"int8 vs fp32 on {agreement['held_images']} held images: {json.dumps(agreement)}", flush=True)
        model_dir = args.model_dir or export_random_model(Path(tmp) / "alexnet_infer")
        calibration = calibration_subset(expand_image_paths(args.calib_data or str(REPO_ROOT / "images")), 32)
        int8_dirs = {}
        for weight_range in args.weight_ranges:
            int8_dirs[weight_range] = Path(tmp) / f"speed_int8_{weight_range}"
            quantize(model_dir, calibration, int8_dirs[weight_range], weight_range=weight_range)
        results = []
        for batch_size in args.batch_sizes:
            runs = engines(model_dir, int8_dirs, args.cpu_threads, batch_size)
            for (engine, precision, mkldnn), throughput in round_robin(runs, batch_size, args).items():
                row = {"engine": engine, "precision": precision, "mkldnn": mkldnn,
                       "batch_size": batch_size, "images_per_sec": round(throughput, 2)}
                if precision.startswith("int8/"):
                    row["precision"], row["weight_range"] = precision.split("/")
                    row["top1_agreement"] = agreement[row["weight_range"]]["top1_agreement"] if agreement else None
                results.append(row)
                print(f"{engine} {precision} mkldnn={mkldnn} batch {batch_size}: {throughput:.1f} images/s", flush=True)
            del runs
    print()
    print(format_table(results, gemm_rate))
    if args.json:
        report = {
            "gemm_gflops_measured": round(gemm, 2),
            "gemm_rate_images_per_sec": round(gemm_rate, 2),
            "cpu_model": cpu_model(),
            "cpu_flags": flags,
            "cpu_threads": args.cpu_threads,
            "rounds": args.repeats,
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "paddle_version": paddle.__version__,
            "int8_agreement": agreement,
            "results": results,
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
