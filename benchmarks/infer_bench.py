"""CPU inference throughput of AlexNet: Paddle Inference (fp32 with and without oneDNN,
bf16 where the CPU has it), ONNX Runtime and PyTorch eager, against the ceiling that the
machine's measured sgemm speed implies.

    python -m benchmarks.infer_bench --cpu-threads 2 --repeats 5 --json bench.json

Weights do not change the speed, so by default a randomly initialised 1000-class AlexNet
is exported to a temporary directory (``--model-dir`` reuses an export that has
``inference.onnx``). Every number is the median of ``--repeats`` timed runs after
``--warmup`` untimed ones; a timed run forwards at least ``--images-per-run`` images.
"""

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


import numpy as np

# paddlevision before paddle: the package quiets paddle's import-time warning.
from paddlevision.export import export_inference_model, export_onnx
from paddlevision.inference import PredictorOptions, cpu_supports_bf16, create_predictor
from paddlevision.models import alexnet
from paddlevision.onnx_predictor import create_onnx_predictor

import paddle

# AlexNet's forward pass on one 224x224 image: about 0.714 G multiply-accumulates.
ALEXNET_GFLOP_PER_IMAGE = 2 * 0.714
IMG_SIZE = 224

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
    parser = argparse.ArgumentParser(description="AlexNet CPU inference benchmark")
    parser.add_argument("--cpu-threads", default=2, type=int, help="threads for every engine and for sgemm")
    parser.add_argument("--batch-sizes", default=[1, 8, 32], type=int, nargs="+")
    parser.add_argument("--repeats", default=5, type=int, help="timed runs per measurement (the median is kept)")
    parser.add_argument("--warmup", default=2, type=int, help="untimed runs before timing")
    parser.add_argument("--images-per-run", default=32, type=int, help="minimum images forwarded per timed run")
    parser.add_argument("--model-dir", default=None, help="an export with inference.onnx (default: export a fresh one)")
    parser.add_argument("--json", default=None, help="write the results to this file")
    return parser


def measure_sgemm_gflops(threads, size=2048, repeats=7):
    env = {"OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    result = subprocess.run(
        [sys.executable, "-c", SGEMM_CODE, str(size), str(repeats)],
        env=env, capture_output=True, text=True, check=True,
    )
    return float(result.stdout)


def images_per_sec(run, batch_size, args):
    """Median throughput of ``run`` on a random batch of ``batch_size`` images."""
    batch = np.random.default_rng(0).standard_normal((batch_size, 3, IMG_SIZE, IMG_SIZE), dtype=np.float32)
    calls = max(1, -(-args.images_per_run // batch_size))
    for _ in range(args.warmup):
        run(batch)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(calls):
            run(batch)
        times.append(time.perf_counter() - start)
    return calls * batch_size / statistics.median(times)


def export_random_model(directory):
    paddle.seed(0)
    export_inference_model(alexnet(num_classes=1000), directory, IMG_SIZE)
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


def engines(model_dir, threads):
    """``(engine, precision, mkldnn, run)`` for everything this machine can run."""
    for mkldnn in (True, False):
        options = PredictorOptions(cpu_threads=threads, use_onednn=mkldnn)
        yield "paddle_inference", "fp32", mkldnn, create_predictor(model_dir, options).run
    if cpu_supports_bf16():
        options = PredictorOptions(cpu_threads=threads, precision="bf16")
        yield "paddle_inference", "bf16", True, create_predictor(model_dir, options).run
    else:
        print("paddle_inference bf16: skipped, this CPU has no native bf16", file=sys.stderr)
    yield "onnxruntime", "fp32", None, create_onnx_predictor(model_dir, cpu_threads=threads).run
    run = torch_runner(threads)
    if run is None:
        print("torch: skipped, torch/torchvision not importable", file=sys.stderr)
    else:
        yield "torch", "fp32", None, run


def format_table(results, ceiling):
    """One row per engine configuration, throughput per batch size, and the batch-32 (or
    largest batch) ratio to ONNX Runtime and to the sgemm ceiling."""
    batch_sizes = sorted({r["batch_size"] for r in results})
    largest = batch_sizes[-1]
    onnx = next(r["images_per_sec"] for r in results if r["engine"] == "onnxruntime" and r["batch_size"] == largest)
    header = ["engine", "precision", "mkldnn"] + [f"bs={b} img/s" for b in batch_sizes]
    header += [f"bs={largest} vs ORT", f"bs={largest} vs ceiling"]
    rows = []
    for key in dict.fromkeys((r["engine"], r["precision"], r["mkldnn"]) for r in results):
        by_batch = {r["batch_size"]: r["images_per_sec"] for r in results if (r["engine"], r["precision"], r["mkldnn"]) == key}
        row = [key[0], key[1], "-" if key[2] is None else str(key[2]).lower()]
        row += [f"{by_batch[b]:.1f}" for b in batch_sizes]
        row += [f"{by_batch[largest] / onnx:.2f}x", f"{by_batch[largest] / ceiling:.2f}x"]
        rows.append(row)
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in [header] + rows]
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
    sgemm = measure_sgemm_gflops(args.cpu_threads)
    ceiling = sgemm / ALEXNET_GFLOP_PER_IMAGE
    print(f"sgemm: {sgemm:.1f} GFLOP/s on {args.cpu_threads} threads -> ceiling {ceiling:.1f} images/s "
          f"({ALEXNET_GFLOP_PER_IMAGE:.2f} GFLOP per image)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or export_random_model(Path(tmp) / "alexnet_infer")
        results = []
        for engine, precision, mkldnn, run in engines(model_dir, args.cpu_threads):
            for batch_size in args.batch_sizes:
                throughput = images_per_sec(run, batch_size, args)
                results.append({"engine": engine, "precision": precision, "mkldnn": mkldnn,
                                "batch_size": batch_size, "images_per_sec": round(throughput, 2)})
                print(f"{engine} {precision} mkldnn={mkldnn} batch {batch_size}: {throughput:.1f} images/s", flush=True)
    print()
    print(format_table(results, ceiling))
    if args.json:
        report = {
            "sgemm_gflops": round(sgemm, 2),
            "ceiling_images_per_sec": round(ceiling, 2),
            "cpu_model": cpu_model(),
            "cpu_threads": args.cpu_threads,
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "paddle_version": paddle.__version__,
            "results": results,
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
