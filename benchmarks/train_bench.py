"""Training throughput of AlexNet: Paddle in each mode worth offering against PyTorch eager
on the identical architecture and against the machine's limit (its sgemm rate, measured
in the same run), the data pipeline against torchvision's, and an epoch on real JPEGs
through train.py's own loader against the synthetic-data step rate.

    python -m benchmarks.train_bench --threads 2 --steps 11 --passive --json benchmarks/results/train_bench.json

A training step is forward, cross entropy, backward and SGD with momentum 0.9 and weight
decay 1e-4 on a random batch (``--batch-size`` images of 224x224, 1000 classes).

Every configuration whose process-wide settings differ (Paddle as installed, Paddle as
train.py sets it up, PyTorch) runs in its own child process, and the parent times the
modes round-robin, one step each per round: on a shared machine a burst of load then
hits every mode alike, and each number is the median of ``--steps`` timed steps after
``--warmup`` untimed ones. Each step also reports the CPU seconds its process used (all
threads); with ``--passive`` idle OpenMP threads sleep at once instead of spinning, so that
this figure measures a step's work even on a loaded machine. Figures from one run are
comparable with each other only.
"""

import argparse
import datetime
import io
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

from PIL import Image  # noqa: E402

from paddlevision.device import cpu_vendor_and_flags  # noqa: E402
from paddlevision.image import load_image  # noqa: E402
from paddlevision.transforms.presets import IMAGENET_MEAN, IMAGENET_STD, ClassificationPresetTrain  # noqa: E402

IMG_SIZE = 224
NUM_CLASSES = 1000
# Forward 0.714 G multiply-adds (1.43 GFLOP) per 224x224 image; backward twice that.
GFLOP_PER_TRAIN_IMAGE = 4.3
LITE_DATA_TAR = REPO_ROOT / "test_images" / "lite_data.tar"
DEMO_IMAGE = REPO_ROOT / "images" / "demo.jpg"
# The vector extensions that decide these figures, recorded with them ("measured on <CPU, flags>").
REPORTED_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")

# Modes of each child process. "installed" is Paddle with no settings of ours; "train.py"
# is configured by paddlevision.device.setup_device, exactly as train.py configures itself,
# with each --conv-engine (paddlevision.onednn), and as it was before issue 13 (gradients
# zero-filled by clear_grad). In dygraph FLAGS_use_mkldnn changes nothing in Paddle 3.3
# (ONEDNN_VERBOSE shows no oneDNN primitive); it is measured to show that. The amp modes
# are float16 on GPU; on CPU train.py refuses --amp, because Paddle 3.3's dygraph auto_cast
# runs float32 there even on CPUs with AVX512_BF16. Static graphs with oneDNN fail in the
# backward pass (pool2d_grad raises dnnl::error), and a to_static step that includes the
# optimizer segfaults, so neither is offered.
PADDLE_MODES = {
    "installed": ["dygraph, as installed", "dygraph, FLAGS_use_mkldnn"],
    "train.py": ["dygraph, paddle conv, zero-filled grads", "dygraph, paddle conv", "dygraph, onednn conv",
                 "dygraph, amp", "to_static fwd+loss", "to_static fwd+loss, amp"],
}
TORCH_MODE = "eager"


def get_args_parser():
    parser = argparse.ArgumentParser(description="AlexNet training-step benchmark", add_help=True)
    parser.add_argument("--steps", default=5, type=int, help="timed steps per mode (the median is kept)")
    parser.add_argument("--warmup", default=2, type=int, help="untimed steps per mode before timing")
    parser.add_argument("--threads", default=None, type=int,
                        help="compute threads for Paddle (train.py modes) and PyTorch (default: usable cores)")
    parser.add_argument("-b", "--batch-size", default=32, type=int)
    parser.add_argument("--device", default=None, help="gpu or cpu (default: gpu when there is one)")
    parser.add_argument("--data-repeats", default=5, type=int, help="timed passes over the JPEGs per pipeline")
    parser.add_argument("--epoch-batches", default=8, type=int, help="batches in the end-to-end epoch")
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument("--passive", action="store_true",
                        help="idle OpenMP threads sleep at once (OMP_WAIT_POLICY=PASSIVE, KMP_BLOCKTIME=0), so that "
                             "the CPU seconds of a step measure its work on a loaded machine")
    parser.add_argument("--gap", default=0.2, type=float,
                        help="untimed pause (s) before each timed step: the previous mode's threads go idle")
    parser.add_argument("--json", default=None, help="write the results to this file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # child process: "installed"/"train.py"/"torch"
    return parser


# ------------------------------------------------------------------------ child processes


def paddle_worker(args, channel):
    """Answer the parent's commands (one JSON object a line) for one Paddle configuration."""
    from paddlevision.device import configure_cpu_math, default_device, setup_device
    from paddlevision.models import alexnet
    from paddlevision.onednn import accelerate

    import paddle

    import train

    threads = None
    if args.worker == "train.py":
        device = setup_device(args.device)
        threads = configure_cpu_math(args.threads) if device == "cpu" else None
    else:
        device = args.device or default_device()
        paddle.set_device(device)
    train_args = train.get_args_parser().parse_args([] if args.device is None else ["--device", device])
    train_args.device = device
    default_engine = train_args.conv_engine if args.worker == "train.py" else None

    criterion = paddle.nn.CrossEntropyLoss()
    image = paddle.randn([args.batch_size, 3, IMG_SIZE, IMG_SIZE])
    target = paddle.randint(0, NUM_CLASSES, [args.batch_size])
    trainees = {}  # conv engine -> (model, optimizer): the same initial weights for each engine
    steps = {}

    def trainee(engine):
        if engine not in trainees:
            paddle.seed(0)
            model = alexnet(num_classes=NUM_CLASSES)
            model.train()
            if args.worker == "train.py":
                accelerate(model, device, engine)
            optimizer = paddle.optimizer.Momentum(learning_rate=0.01, momentum=0.9, parameters=model.parameters(),
                                                  weight_decay=1e-4)
            trainees[engine] = model, optimizer
        return trainees[engine]

    def make_step(mode):
        amp_dtype = None
        if "amp" in mode:
            try:
                amp_dtype = train.resolve_amp_dtype(True, device)
            except SystemExit as exc:
                raise RuntimeError(exc) from None
        paddle.set_flags({"FLAGS_use_mkldnn": "FLAGS_use_mkldnn" in mode})
        model, optimizer = trainee("onednn" if "onednn" in mode else "paddle")

        # train.py's own step: its forward_loss (compiled as a whole in the to_static
        # mode) and its optimizer_step.
        def batch_loss(image, target):
            return train.forward_loss(model, criterion, image, target, amp_dtype)[1]

        if mode.startswith("to_static"):
            batch_loss = paddle.jit.to_static(batch_loss, full_graph=True)
        scaler = paddle.amp.GradScaler() if amp_dtype == "float16" else None

        def step():
            loss = batch_loss(image, target)
            if "zero-filled grads" in mode:  # train.py's step before issue 13
                optimizer.clear_grad(set_to_zero=True)
                loss.backward()
                optimizer.step()
            else:
                train.optimizer_step(loss, optimizer, scaler)
            return float(loss)  # waits for the device

        return step

    def handle(request):
        if request["cmd"] == "info":
            amp = train.resolve_amp_dtype(train_args.amp, device)
            return {"device": device, "default_amp": amp, "default_engine": default_engine,
                    "modes": PADDLE_MODES[args.worker]}
        if request["cmd"] == "end_to_end":
            return run_end_to_end(request["data_path"], args, *trainee(default_engine), criterion, train_args)
        if request["cmd"] == "sgemm":
            a, b = paddle.randn([SGEMM_SIZE, SGEMM_SIZE]), paddle.randn([SGEMM_SIZE, SGEMM_SIZE])
            return sgemm_rate(lambda: float(paddle.matmul(a, b)[0, 0]), threads or 1)
        mode = request["mode"]
        if mode not in steps:
            steps[mode] = make_step(mode)
        paddle.set_flags({"FLAGS_use_mkldnn": "FLAGS_use_mkldnn" in mode})
        return timed(steps[mode])

    serve(handle, channel)


SGEMM_SIZE = 2048


def timed(step):
    start, cpu_start = time.perf_counter(), time.process_time()
    loss = step()
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start, "loss": loss}


def sgemm_rate(multiply, threads, repeats=5):
    """GFLOP/s of a 2048x2048 float32 matrix product through the framework's own matmul, best
    of ``repeats``: by the wall clock, and per CPU-second times the threads (what the cores
    give when this process has them to itself)."""
    multiply()
    wall, cpu = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        multiply()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    gflop = 2 * SGEMM_SIZE**3 / 1e9
    return {"gflops_wall": gflop / min(wall), "gflops_per_cpu_second_x_threads": gflop / min(cpu) * threads}


def run_end_to_end(data_path, args, model, optimizer, criterion, train_args):
    """One epoch of train.py's own loop and loader (default workers, shared memory)."""
    import train
    import utils

    train_args.data_path = data_path
    train_args.batch_size = args.batch_size
    dataset, dataset_test = train.load_data(data_path, train_args)
    _, loader, _ = train.make_loaders(dataset, dataset_test, args.batch_size, train_args.workers,
                                      train_args.skip_bad_images)
    metrics = utils.MetricsWriter(None)
    amp_dtype = train.resolve_amp_dtype(train_args.amp, train_args.device)
    first_batch = {}

    class TimedLoader:
        """The loader, noting when its first batch arrives: the rest of the epoch is the
        steady state that a long epoch consists of."""

        def __len__(self):
            return len(loader)

        def __iter__(self):
            for index, batch in enumerate(loader):
                if index == 1:
                    first_batch["done"] = time.perf_counter()
                yield batch

    start = time.perf_counter()
    train.train_one_epoch(model, criterion, optimizer, TimedLoader(), 0, 10**9, metrics, amp_dtype)
    end = time.perf_counter()
    steady_images = len(dataset) - args.batch_size
    return {"images": len(dataset), "workers": train_args.workers, "epoch_images_per_sec": len(dataset) / (end - start),
            "steady_images_per_sec": steady_images / (end - first_batch["done"])}


def torch_worker(args, channel):
    import torch
    import torchvision

    device = "cuda" if (args.device or "gpu").startswith("gpu") and torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None, num_classes=NUM_CLASSES).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    criterion = torch.nn.CrossEntropyLoss()
    image = torch.randn(args.batch_size, 3, IMG_SIZE, IMG_SIZE, device=device)
    target = torch.randint(0, NUM_CLASSES, (args.batch_size,), device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(image), target)
        loss.backward()
        optimizer.step()
        return loss.item()  # waits for the device

    def handle(request):
        if request["cmd"] == "info":
            return {"device": device, "threads": torch.get_num_threads(), "modes": [TORCH_MODE]}
        if request["cmd"] == "sgemm":
            a, b = torch.randn(SGEMM_SIZE, SGEMM_SIZE), torch.randn(SGEMM_SIZE, SGEMM_SIZE)
            return sgemm_rate(lambda: torch.mm(a, b), torch.get_num_threads())
        return timed(step)

    serve(handle, channel)


def answer_channel():
    """The original stdout, for the answers; from now on everything else the process prints
    (train.py's log lines, Paddle's C++ messages, a compiler) goes to stderr, so that it
    cannot garble an answer."""
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return channel


def serve(handle, channel):
    for line in sys.stdin:
        try:
            answer = handle(json.loads(line))
        except Exception as exc:  # reported to the parent, which skips the mode
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        channel.write(json.dumps(answer) + "\n")
        channel.flush()


class Worker:
    """A child process that runs commands sent as JSON lines."""

    def __init__(self, kind, args):
        command = [sys.executable, "-m", "benchmarks.train_bench", "--worker", kind, "-b", str(args.batch_size)]
        command += ["--threads", str(args.threads)] if args.threads else []
        command += ["--device", args.device] if args.device else []
        self.kind = kind
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", KMP_BLOCKTIME="0") if args.passive else None
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        cwd=REPO_ROOT, env=env)

    def ask(self, **request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            return {"error": f"{self.kind} worker exited with code {self.process.wait()}"}
        return json.loads(line)

    def close(self):
        self.process.stdin.close()
        self.process.wait()


# ------------------------------------------------------------------------------ parent


def time_training_steps(workers, args):
    """Round-robin over every (worker, mode): warm-up, then ``--steps`` rounds of one timed step."""
    modes = [(worker, mode) for worker in workers for mode in worker.info["modes"]]
    failed = {}
    for worker, mode in modes:
        for _ in range(args.warmup):
            answer = worker.ask(cmd="step", mode=mode)
            if "error" in answer:
                failed[(worker.kind, mode)] = answer["error"]
                print(f"{worker.kind} / {mode}: skipped, {answer['error']}", file=sys.stderr)
                break
    timings = {key: [] for key in modes if (key[0].kind, key[1]) not in failed}
    for _ in range(args.steps):
        for worker, mode in timings:
            time.sleep(args.gap)
            timings[(worker, mode)].append(worker.ask(cmd="step", mode=mode))
    return [
        {"impl": "torch" if worker.kind == "torch" else "paddle", "config": worker.kind, "mode": mode,
         "batch_size": args.batch_size,
         "images_per_sec": args.batch_size / statistics.median(a["seconds"] for a in answers),
         "cpu_seconds_per_step": statistics.median(a["cpu_seconds"] for a in answers),
         "step_seconds": [round(a["seconds"], 4) for a in answers],
         "losses": [round(a["loss"], 5) for a in answers]}
        for (worker, mode), answers in timings.items()
    ]


def physical_limit(workers, args):
    """The step rate the measured sgemm rate allows at 4.3 GFLOP per training image: by the
    wall clock, and in CPU seconds per step (from the rate per CPU-second)."""
    rates = {worker.kind: worker.ask(cmd="sgemm") for worker in workers if worker.kind in ("train.py", "torch")}
    rates = {kind: rate for kind, rate in rates.items() if "error" not in rate}
    if not rates:
        return None
    wall = max(rate["gflops_wall"] for rate in rates.values())
    per_cpu = max(rate["gflops_per_cpu_second_x_threads"] for rate in rates.values())
    threads = args.threads or len(os.sched_getaffinity(0))
    return {"sgemm": rates, "images_per_sec": wall / GFLOP_PER_TRAIN_IMAGE,
            "cpu_seconds_per_step": args.batch_size * GFLOP_PER_TRAIN_IMAGE / per_cpu * threads}


def sample_jpegs():
    """The encoded bytes of the bundled lite-data JPEGs and images/demo.jpg."""
    blobs = []
    with tarfile.open(LITE_DATA_TAR) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.lower().endswith((".jpg", ".jpeg")):
                blobs.append(tar.extractfile(member).read())
    blobs.append(DEMO_IMAGE.read_bytes())
    return blobs


def time_data_pipelines(blobs, args):
    """JPEG bytes -> normalised CHW float32 array, one image at a time in this process
    (what one loader worker does), for ours and for torchvision's PIL pipeline."""
    pipelines = {"paddle": paddle_pipeline()}
    torchvision_pipeline = make_torchvision_pipeline()
    if torchvision_pipeline is not None:
        pipelines["torchvision"] = torchvision_pipeline
    for run in pipelines.values():
        for blob in blobs:
            run(blob)
    timings = {name: [] for name in pipelines}
    random.seed(0)
    for _ in range(args.data_repeats):
        for name, run in pipelines.items():
            start = time.perf_counter()
            for blob in blobs:
                run(blob)
            timings[name].append(time.perf_counter() - start)
    return [{"impl": name, "images_per_sec_per_worker": len(blobs) / statistics.median(seconds)}
            for name, seconds in timings.items()]


def paddle_pipeline():
    preset = ClassificationPresetTrain(crop_size=IMG_SIZE)
    return lambda blob: preset(load_image(blob))


def make_torchvision_pipeline():
    try:
        import torch
        import torchvision.transforms as T
    except ImportError:
        print("torchvision pipeline: skipped, torch/torchvision not importable", file=sys.stderr)
        return None
    torch.set_num_threads(1)  # one loader worker
    transform = T.Compose([
        T.RandomResizedCrop(IMG_SIZE),
        T.RandomHorizontalFlip(),
        T.PILToTensor(),
        T.ConvertImageDtype(torch.float),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])

    def run(blob):
        with Image.open(io.BytesIO(blob)) as img:  # torchvision's pil_loader
            return transform(img.convert("RGB")).numpy()

    return run


def build_jpeg_tree(root, blobs, num_images):
    """train/ and val/ class folders holding ``num_images`` real JPEGs (the samples, repeated)."""
    for split in ("train", "val"):
        for index in range(num_images if split == "train" else 4):
            folder = root / split / f"class_{index % 4}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{index:05d}.jpg").write_bytes(blobs[index % len(blobs)])
    return root


def end_to_end(worker, blobs, synthetic_rate, args):
    tmp = Path(tempfile.mkdtemp(prefix="train_bench-"))
    try:
        data_path = build_jpeg_tree(tmp, blobs, args.epoch_batches * args.batch_size)
        answer = worker.ask(cmd="end_to_end", data_path=str(data_path))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if "error" in answer:
        print(f"end-to-end epoch: skipped, {answer['error']}", file=sys.stderr)
        return None
    answer["synthetic_images_per_sec"] = synthetic_rate
    answer["epoch_ratio_vs_synthetic"] = answer["epoch_images_per_sec"] / synthetic_rate
    answer["steady_ratio_vs_synthetic"] = answer["steady_images_per_sec"] / synthetic_rate
    answer["note"] = ("epoch: wall time of the whole epoch, including starting the loader workers and filling their "
                      "prefetch queues; steady: from the second batch on")
    return answer


def default_mode_name(info):
    """The train.py mode that a run with no extra flags uses, from the train.py worker's own
    setup (setup_device, train.resolve_amp_dtype and the conv engine choice on train.py's
    default args)."""
    return "dygraph, amp" if info.get("default_amp") else f"dygraph, {info['default_engine']} conv"


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def format_tables(report):
    torch_row = next((r for r in report["results"] if r["impl"] == "torch"), None)
    lines = [f"{'impl':<7} {'config':<10} {'mode':<40} {'img/s':>7} {'vs torch':>9} {'CPU s':>6} {'vs torch':>9}"]
    for r in report["results"]:
        ratio = f"{r['images_per_sec'] / torch_row['images_per_sec']:.2f}x" if torch_row else "-"
        cpu_ratio = f"{torch_row['cpu_seconds_per_step'] / r['cpu_seconds_per_step']:.2f}x" if torch_row else "-"
        marker = " <- train.py default" if r["config"] == "train.py" and r["mode"] == report["default_mode"] else ""
        lines.append(f"{r['impl']:<7} {r['config']:<10} {r['mode']:<40} {r['images_per_sec']:>7.1f} {ratio:>9} "
                     f"{r['cpu_seconds_per_step']:>6.2f} {cpu_ratio:>9}{marker}")
    limit = report.get("limit")
    if limit:
        lines.append(f"{'limit':<7} {'sgemm':<10} {f'{GFLOP_PER_TRAIN_IMAGE} GFLOP/image at the sgemm rate':<40} "
                     f"{limit['images_per_sec']:>7.1f} {'':>9} {limit['cpu_seconds_per_step']:>6.2f}")
    lines.append("CPU s: median CPU seconds of the process per step, all threads"
                 + (" (idle OpenMP threads passive)" if report.get("passive") else ""))
    lines.append("")
    tv = next((p["images_per_sec_per_worker"] for p in report["data_pipeline"] if p["impl"] == "torchvision"), None)
    lines.append(f"{'data pipeline':<20} {'img/s/worker':>12} {'vs torchvision':>15}")
    for p in report["data_pipeline"]:
        ratio = f"{p['images_per_sec_per_worker'] / tv:.2f}x" if tv else "-"
        lines.append(f"{p['impl']:<20} {p['images_per_sec_per_worker']:>12.1f} {ratio:>15}")
    e2e = report.get("end_to_end")
    if e2e:
        lines.append("")
        lines.append(f"end-to-end, {e2e['images']} JPEGs, {e2e['workers']} workers, vs {e2e['synthetic_images_per_sec']:.1f} "
                     f"img/s on synthetic data:")
        lines.append(f"  whole epoch   {e2e['epoch_images_per_sec']:>7.1f} img/s  {e2e['epoch_ratio_vs_synthetic']:.2f}x")
        lines.append(f"  steady state  {e2e['steady_images_per_sec']:>7.1f} img/s  {e2e['steady_ratio_vs_synthetic']:.2f}x")
    return "\n".join(lines)


def main(args):
    if args.worker == "torch":
        return torch_worker(args, answer_channel())
    if args.worker:
        return paddle_worker(args, answer_channel())

    workers = [Worker(kind, args) for kind in PADDLE_MODES]
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401

        workers.append(Worker("torch", args))
    except ImportError:
        print("torch: skipped, torch/torchvision not importable", file=sys.stderr)
    try:
        for worker in workers:
            worker.info = worker.ask(cmd="info")
        train_worker = next(w for w in workers if w.kind == "train.py")
        report = {"results": time_training_steps(workers, args), "limit": physical_limit(workers, args)}
        report["default_mode"] = default_mode_name(train_worker.info)
        blobs = sample_jpegs()
        report["data_pipeline"] = time_data_pipelines(blobs, args)
        synthetic = next((r["images_per_sec"] for r in report["results"]
                          if r["config"] == "train.py" and r["mode"] == report["default_mode"]), None)
        if not args.skip_end_to_end and synthetic:
            report["end_to_end"] = end_to_end(train_worker, blobs, synthetic, args)
    finally:
        for worker in workers:
            worker.close()
    flags = cpu_vendor_and_flags()[1]
    report.update(cpu=cpu_model(), cpu_flags=[flag for flag in REPORTED_CPU_FLAGS if flag in flags],
                  threads=args.threads or len(os.sched_getaffinity(0)),
                  device=train_worker.info["device"], date=datetime.date.today().isoformat(), passive=args.passive,
                  load_average=os.getloadavg())
    print(format_tables(report))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
