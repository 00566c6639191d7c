"""Load test of the HTTP service (deploy/py_serving) against offline Paddle Inference.

    python -m benchmarks.serve_load --model-dir ./alexnet_infer --json serve_load.json

Offline, with the service's predictor settings (threads, and idle OpenMP threads sleeping):
each of 32 distinct images' reference (class_id, prob), batch-32 throughput and batch-1
latency, of the predictor alone and end to end (decode + preprocess + predictor, as infer.py
runs), and the CPU time per image of the end-to-end batch-32 run (time.process_time(): all
threads of this process). Then, with dynamic batching on and off, web_service.py (its
shipped config.yml) on a free port is driven by 1, 4 and 16 concurrent clients (one image
per request, one keep-alive connection each) and every answer is checked against its image's
reference (class_id equal, |prob difference| <= 1e-4); the service's CPU time per image
over each run comes from /proc. The check only sees an answer handed to the wrong image if
the two images' answers differ, so the images the model tells apart are counted and
recorded. Clients and service share this machine's cores.
"""

import argparse
import asyncio
import datetime
import hashlib
import io
import itertools
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import h11
import numpy as np
from PIL import Image

from benchmarks.infer_bench import cpu_model
from benchmarks.service_process import ServiceProcess
from paddlevision.batch_predict import expand_image_paths
from paddlevision.datasets import extract_lite_data
from paddlevision.device import cpu_vendor_and_flags, usable_cpu_count
from paddlevision.inference import PredictorOptions, create_predictor
from paddlevision.model_dir import find_paddle_model_files, preprocess_sizes, read_metadata
from paddlevision.pipeline import Preprocessor
from paddlevision.serving.app import prefer_passive_openmp
from paddlevision.serving.protocol import build_request, parse_prediction

REPO_ROOT = Path(__file__).resolve().parents[1]
NUM_IMAGES = 32
PROB_TOLERANCE = 1e-4
WARMUP_REQUESTS = 64
CLIENT_TIMEOUT_S = 120.0
RECORDED_CPU_FLAGS = frozenset({"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"})


def get_args_parser():
    parser = argparse.ArgumentParser(description="Load test of the AlexNet HTTP service")
    parser.add_argument("--model-dir", required=True, help="directory written by tools/export_model.py")
    parser.add_argument("--cpu-threads", default=2, type=int, help="math threads of the service and offline runs")
    parser.add_argument("--concurrency", default=[1, 4, 16], type=int, nargs="+", help="clients per run")
    parser.add_argument("--requests", default=2000, type=int, help="requests of the runs at the highest concurrency")
    parser.add_argument("--small-run-requests", default=300, type=int, help="requests of the other runs")
    parser.add_argument("--repeats", default=5, type=int, help="timed offline runs (the median is kept)")
    parser.add_argument("--json", default=None, help="write the results to this file")
    return parser


def make_images(workdir):
    """32 distinct JPEGs: images/demo.jpg and the lite data, alternately mirrored, every
    third cropped to its central 80%."""
    lite = extract_lite_data(REPO_ROOT / "test_images" / "lite_data.tar", workdir)
    sources = [REPO_ROOT / "images" / "demo.jpg"] + [Path(p) for p in expand_image_paths(f"{lite}/*/*/*.jpg")]
    images = []
    for index, source in enumerate(sources[:NUM_IMAGES]):
        image = Image.open(source).convert("RGB")
        if index % 2:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if index % 3 == 0:
            width, height = image.size
            image = image.crop((width // 10, height // 10, width - width // 10, height - height // 10))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def model_record(model_dir):
    """Which model was measured: its directory, the sha256 of its graph and weights, its metadata."""
    digests = {}
    for path in find_paddle_model_files(model_dir):
        with open(path, "rb") as f:
            digests[Path(path).name] = hashlib.file_digest(f, "sha256").hexdigest()
    return {"model_dir": str(Path(model_dir).resolve()), "sha256": digests, "metadata": read_metadata(model_dir)}


def images_told_apart(references, tolerance=PROB_TOLERANCE):
    """How many images have an answer no other image shares (another class_id, or a
    probability more than ``tolerance`` away): only for those is a swapped answer a mismatch."""
    shared = set()
    for (i, (class_i, prob_i)), (j, (class_j, prob_j)) in itertools.combinations(enumerate(references), 2):
        if class_i == class_j and abs(prob_i - prob_j) <= tolerance:
            shared.update((i, j))
    return len(references) - len(shared)


def offline_measurements(model_dir, images, args):
    """Reference (class_id, prob) per image; batch-32 images/s and batch-1 ms per image, of
    the predictor alone and end to end (from encoded image to probabilities)."""
    metadata = read_metadata(model_dir)
    preprocess = Preprocessor(*preprocess_sizes(model_dir, metadata))
    prefer_passive_openmp()  # as the service does, before the first OpenMP code of the process
    predictor = create_predictor(model_dir, PredictorOptions(cpu_threads=args.cpu_threads))
    arrays = np.stack([preprocess(data) for data in images])
    references = []
    for array in arrays:
        probs = predictor.run(array[None])[0]
        references.append((int(np.argmax(probs)), float(np.max(probs))))
    batch32 = np.resize(arrays, (32, *arrays.shape[1:]))
    encoded32 = [images[i % len(images)] for i in range(32)]

    def medians(run):
        """Median seconds and median CPU seconds (this process, all threads) of ``run``."""
        run()  # warm-up: oneDNN prepares its kernels per input shape
        times, cpu_times = [], []
        for _ in range(args.repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            run()
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        return statistics.median(times), statistics.median(cpu_times)

    end_to_end32, end_to_end32_cpu = medians(lambda: predictor.run(preprocess.batch(encoded32)))
    # batch 1: 10 images one by one, so 100 x their seconds is ms per image
    return references, {
        "offline_batch32_images_per_sec": 32 / medians(lambda: predictor.run(batch32))[0],
        "offline_batch1_latency_ms": 100 * medians(lambda: [predictor.run(array[None]) for array in arrays[:10]])[0],
        "offline_end_to_end_batch32_images_per_sec": 32 / end_to_end32,
        "offline_cpu_per_image_ms": 1000 * end_to_end32_cpu / 32,
        "offline_end_to_end_batch1_latency_ms": 100 * medians(
            lambda: [predictor.run(preprocess.batch([data])) for data in images[:10]]
        )[0],
    }


class KeepAliveConnection:
    """One keep-alive HTTP/1.1 connection, spoken through h11 (the parser uvicorn serves
    with). The load clients share the service's cores, and this costs a fraction of the CPU
    per request that httpx does."""

    def __init__(self, url):
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path
        self._streams = self._http = None

    async def post(self, body):
        """``(status, answer bytes)``; ``OSError`` or ``h11.ProtocolError`` if the connection fails."""
        try:
            if self._streams is None:
                self._streams = await asyncio.open_connection(self.host, self.port)
                self._http = h11.Connection(h11.CLIENT)
            reader, writer = self._streams
            http = self._http
            headers = [("Host", f"{self.host}:{self.port}"), ("Content-Type", "application/json"),
                       ("Content-Length", str(len(body)))]
            writer.write(http.send(h11.Request(method="POST", target=self.path, headers=headers))
                         + http.send(h11.Data(data=body)) + http.send(h11.EndOfMessage()))
            status, chunks = None, []
            while not isinstance(event := http.next_event(), h11.EndOfMessage):
                if event is h11.NEED_DATA:
                    http.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    chunks.append(event.data)
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionResetError("the service closed the connection")
            if http.our_state is h11.DONE and http.their_state is h11.DONE:
                http.start_next_cycle()
            else:
                self.close()
            return status, b"".join(chunks)
        except BaseException:
            self.close()
            raise

    def close(self):
        if self._streams is not None:
            self._streams[1].close()
        self._streams = self._http = None


async def drive(url, bodies, references, concurrency, num_requests):
    """Send ``num_requests`` requests from ``concurrency`` clients, each on a keep-alive
    connection of its own; per-run statistics."""
    latencies, counts = [], {"errors": 0, "mismatches": 0}
    next_request = iter(range(num_requests))

    async def client():
        connection = KeepAliveConnection(url)
        for index in next_request:
            image = index % len(bodies)
            start = time.perf_counter()
            try:
                status, body = await asyncio.wait_for(connection.post(bodies[image]), CLIENT_TIMEOUT_S)
                answer = json.loads(body)
            except (OSError, asyncio.TimeoutError, h11.ProtocolError, ValueError):
                counts["errors"] += 1
                continue
            latencies.append(time.perf_counter() - start)
            if status != 200 or answer.get("err_no") != 0:
                counts["errors"] += 1
                continue
            [class_id], [prob] = parse_prediction(answer)
            expected_class, expected_prob = references[image]
            if class_id != expected_class or abs(prob - expected_prob) > PROB_TOLERANCE:
                counts["mismatches"] += 1
        connection.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    seconds = time.perf_counter() - start
    answered = num_requests - counts["errors"]
    percentiles = np.percentile(np.array(latencies) * 1000, [50, 95, 99]) if latencies else [float("nan")] * 3
    return {
        "concurrency": concurrency,
        "requests": num_requests,
        **counts,
        "images_per_sec": answered / seconds,  # one image per request
        "requests_per_sec": num_requests / seconds,
        "p50_ms": float(percentiles[0]),
        "p95_ms": float(percentiles[1]),
        "p99_ms": float(percentiles[2]),
    }


def service_runs(model_dir, bodies, references, batching, args, workdir):
    flags = ["--model-dir", model_dir, "--cpu-threads", args.cpu_threads] + ([] if batching else ["--no-batching"])
    server = ServiceProcess(*flags, log_path=Path(workdir) / f"service_batching_{batching}.log")
    runs = []
    try:
        server.wait_healthy()
        asyncio.run(drive(server.prediction_url, bodies, references, max(args.concurrency), WARMUP_REQUESTS))
        for concurrency in args.concurrency:
            num_requests = args.requests if concurrency == max(args.concurrency) else args.small_run_requests
            service_cpu, client_cpu = server.cpu_seconds(), time.process_time()
            run = asyncio.run(drive(server.prediction_url, bodies, references, concurrency, num_requests))
            service_cpu, client_cpu = server.cpu_seconds() - service_cpu, time.process_time() - client_cpu
            answered = max(1, run["requests"] - run["errors"])
            runs.append({**run, "batching": batching, "service_cpu_per_image_ms": 1000 * service_cpu / answered,
                         "client_cpu_per_request_ms": 1000 * client_cpu / run["requests"]})
            print(format_run(runs[-1]), flush=True)
    finally:
        exit_status = server.stop()
    if exit_status != 0:
        raise SystemExit(f"error: the service exited with {exit_status} after SIGTERM:\n{server.log()}")
    return runs


def format_run(run):
    return (
        f"{run['concurrency']:>11} | {str(run['batching']).lower():>8} | {run['requests']:>8} | {run['errors']:>6} | "
        f"{run['mismatches']:>10} | {run['images_per_sec']:>10.1f} | {run['requests_per_sec']:>8.1f} | "
        f"{run['p50_ms']:>7.1f} | {run['p95_ms']:>7.1f} | {run['p99_ms']:>7.1f} | "
        f"{run['service_cpu_per_image_ms']:>10.1f}"
    )


TABLE_HEADER = (
    "concurrency | batching | requests | errors | mismatches |   images/s |  req/s   | p50 ms  | p95 ms  | p99 ms  "
    "| CPU ms/img\n"
    "------------+----------+----------+--------+------------+------------+----------+---------+---------+---------"
    "+-----------"
)


def print_targets(offline, runs):
    """The serving targets, against the offline path end to end (decode + preprocess +
    predictor at batch 32 in one process, as infer.py runs); the predictor alone is shown
    beside it, not judged."""
    batched = {run["concurrency"]: run for run in runs if run["batching"]}
    busiest = batched.get(max(batched, default=None))
    if busiest is None:
        return
    clients = busiest["concurrency"]
    ips = busiest["images_per_sec"]
    print(f"target: {clients} clients with batching >= 0.8x offline end to end at batch 32: "
          f"{ips / offline['offline_end_to_end_batch32_images_per_sec']:.2f}x "
          f"(beside it: {ips / offline['offline_batch32_images_per_sec']:.2f}x the predictor alone)")
    cpu_ratio = busiest["service_cpu_per_image_ms"] / offline["offline_cpu_per_image_ms"]
    print(f"target: service CPU per image at {clients} clients <= 1.15x offline end to end: "
          f"{busiest['service_cpu_per_image_ms']:.1f} / {offline['offline_cpu_per_image_ms']:.1f} ms = "
          f"{cpu_ratio:.2f}x")
    if 1 in batched:
        p50 = batched[1]["p50_ms"]
        print(f"1 client p50 against offline batch 1: {p50 - offline['offline_end_to_end_batch1_latency_ms']:+.1f} ms "
              f"end to end, {p50 - offline['offline_batch1_latency_ms']:+.1f} ms against the predictor alone")


def machine_record():
    """The CPU measured on, its vector extensions, and the load average (the machine is shared)."""
    flags = cpu_vendor_and_flags()[1]
    return {"cpu": cpu_model(), "cpu_flags": sorted(flags & RECORDED_CPU_FLAGS), "usable_cpus": usable_cpu_count(),
            "load_average_at_start": os.getloadavg(), "date": datetime.date.today().isoformat()}


def main(args):
    # Paddle turns on INFO logging; httpx would then log every /health poll of ServiceProcess.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    machine = machine_record()
    with tempfile.TemporaryDirectory(prefix="serve_load-") as workdir:
        images = make_images(workdir)
        bodies = [json.dumps(build_request([data])).encode() for data in images]
        references, offline = offline_measurements(args.model_dir, images, args)
        told_apart = images_told_apart(references)
        if told_apart < len(references):
            print(
                f"warning: the model's answers tell only {told_apart} of the {len(references)} benchmark images "
                f"apart (the others share class_id and prob within {PROB_TOLERANCE} with another image), so an "
                "answer given to the wrong image among those would not count as a mismatch; a trained model "
                "separates them",
                file=sys.stderr,
                flush=True,
            )
        print(
            f"offline Paddle Inference, {args.cpu_threads} threads: predictor only: batch 32 "
            f"{offline['offline_batch32_images_per_sec']:.1f} images/s, batch 1 "
            f"{offline['offline_batch1_latency_ms']:.2f} ms; end to end (decode + preprocess + predictor): "
            f"batch 32 {offline['offline_end_to_end_batch32_images_per_sec']:.1f} images/s "
            f"({offline['offline_cpu_per_image_ms']:.1f} ms CPU per image), batch 1 "
            f"{offline['offline_end_to_end_batch1_latency_ms']:.2f} ms",
            flush=True,
        )
        print(TABLE_HEADER, flush=True)
        runs = []
        for batching in (True, False):
            runs += service_runs(args.model_dir, bodies, references, batching, args, workdir)
    print_targets(offline, runs)
    results = {
        "machine": {**machine, "load_average_at_end": os.getloadavg()},
        "model": model_record(args.model_dir),
        "images": len(references),
        "images_told_apart": told_apart,
        **offline,
        "runs": runs,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    failed = sum(run["errors"] + run["mismatches"] for run in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
