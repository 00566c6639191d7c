"""Train our AlexNet and torchvision's with the same recipe, the same budget and the same
data, and compare their validation accuracy: the end-to-end check of the reproduction.

    python tools/prepare_fashion_mnist.py --output data/fm200 --train-per-class 200 --val-per-class 100 --size 64
    python -m benchmarks.convergence --data-path data/fm200 --seeds 0 1 2 3 4 5 6 7 8 9 --json convergence.json

The defaults (64x64, batch 32, 4 epochs, LR 0.01 dropped 10x after epoch 3) keep each
framework's run to a few minutes on two CPU cores; docs/alignment.md has the results.

Each seed is a pair of runs that share everything but the framework, so the per-seed
top-1 differences are paired observations: the summary gives their mean with a 95 %
Student-t confidence interval, which says how far apart the two implementations may
really be, beside the spread of single runs.

What is shared, so that only the framework differs:

* initial weights: torchvision's ``alexnet(num_classes=...)`` seeded, copied into ours by
  the converter's functions;
* inputs: OUR preset pipeline (ClassificationPresetTrain / Eval, seeded per sample and
  epoch) makes one float32 array per batch, fed to both models in the same order;
* recipe: cross entropy, SGD with momentum and coupled weight decay, StepLR per epoch.
  The Paddle side runs train.py's own ``train_one_epoch`` and ``evaluate`` with the
  optimizer and schedule from ``paddlevision.optim``; the PyTorch side is
  torchvision's reference step (``torch.optim.SGD`` + ``StepLR``).

Dropout is off by default (``--dropout 0``): the frameworks cannot draw the same masks, and
without them the two runs differ only by float rounding. ``--dropout 0.5`` runs the
recipe's classifier as is. Wall times cover training and evaluation of each framework;
building the batches is timed separately, once for both.
"""

import argparse
import json
import math
import statistics
import time
from pathlib import Path


import numpy as np

# paddlevision before paddle: the package quiets paddle's import-time warning.
from paddlevision.datasets import ImageFolder
from paddlevision.device import setup_device
from paddlevision.models import AlexNet
from paddlevision.optim import build_lr_scheduler, build_optimizer
from paddlevision.transforms import ClassificationPresetEval, ClassificationPresetTrain
from paddlevision.transforms.presets import EVAL_CROP_SIZE, EVAL_RESIZE_SIZE
from paddlevision.weights import load_state_dict_checked, torch_to_paddle_state_dict

import paddle

import train  # train.py's training step and evaluation, so the Paddle side is exactly train.py's
import utils

try:
    import torch
    import torchvision
except ImportError:  # --help works without the reference; main() says what is missing
    torch = torchvision = None


def make_batches(dataset, indices, batch_size):
    """``dataset[i]`` for ``indices``, stacked into ``(images, labels)`` numpy batches."""
    batches = []
    for start in range(0, len(indices), batch_size):
        samples = [dataset[int(i)] for i in indices[start:start + batch_size]]
        batches.append((np.stack([image for image, _ in samples]), np.array([label for _, label in samples])))
    return batches


def train_batches(dataset, epoch, batch_size, seed):
    """One epoch of augmented batches: a seeded shuffle, and the dataset's augmentation
    seeded by (seed, epoch, index)."""
    dataset.set_epoch(epoch)
    return make_batches(dataset, np.random.default_rng([seed, epoch]).permutation(len(dataset)), batch_size)


class PaddleBatches:
    """The numpy batches as train.py's data loader yields them: ``(image, target)`` tensors."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for image, target in self.batches:
            yield paddle.to_tensor(image), paddle.to_tensor(target)


class PaddleRun:
    """train.py's model, criterion, optimizer and schedule for ``args``."""

    def __init__(self, initial_state, num_classes, args):
        self.model = AlexNet(num_classes=num_classes, dropout=args.dropout)
        load_state_dict_checked(self.model, torch_to_paddle_state_dict(initial_state))
        self.criterion = paddle.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
        self.lr_scheduler = build_lr_scheduler(args.lr, "steplr", args.epochs, args.lr_step_size, args.lr_gamma)
        self.optimizer = build_optimizer("sgd", self.model.parameters(), self.lr_scheduler, args.momentum,
                                         args.weight_decay)
        self.metrics = utils.MetricsWriter(None)
        self.args = args

    def epoch(self, epoch, batches, val_batches):
        train.train_one_epoch(self.model, self.criterion, self.optimizer, PaddleBatches(batches), epoch,
                              self.args.print_freq, self.metrics)
        self.lr_scheduler.step()
        top1, top5, _ = train.evaluate(self.model, self.criterion, PaddleBatches(val_batches), self.args.print_freq)
        return top1, top5


class TorchRun:
    """The same recipe as torchvision's references/classification/train.py runs it."""

    def __init__(self, initial_state, num_classes, args):
        self.model = torchvision.models.alexnet(num_classes=num_classes, dropout=args.dropout)
        self.model.load_state_dict(initial_state)
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=args.lr, momentum=args.momentum,
                                         weight_decay=args.weight_decay)
        self.lr_scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=args.lr_step_size,
                                                            gamma=args.lr_gamma)

    def epoch(self, epoch, batches, val_batches):
        self.model.train()
        for image, target in batches:
            loss = self.criterion(self.model(torch.from_numpy(image)), torch.from_numpy(target))
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        self.lr_scheduler.step()
        self.model.eval()
        correct1 = correct5 = samples = 0
        with torch.inference_mode():
            for image, target in val_batches:
                _, pred = self.model(torch.from_numpy(image)).topk(5, 1, True, True)
                hits = pred.eq(torch.from_numpy(target)[:, None])
                correct1 += int(hits[:, :1].sum())
                correct5 += int(hits.sum())
                samples += len(target)
        print(f"[torch epoch {epoch}] last loss {loss.item():.4f}, val Acc@1 {correct1 / samples:.3f} "
              f"Acc@5 {correct5 / samples:.3f}", flush=True)
        return correct1 / samples, correct5 / samples


def run_seed(args, seed):
    """One pair of runs, Paddle and PyTorch, from the weights, batches and augmentation of ``seed``."""
    # Dropout masks (if any) come from each framework's own generator.
    paddle.seed(seed)
    torch.manual_seed(seed)
    resize_size = round(args.resolution * EVAL_RESIZE_SIZE / EVAL_CROP_SIZE)  # the recipe's ratio
    dataset = ImageFolder(Path(args.data_path) / "train", ClassificationPresetTrain(crop_size=args.resolution),
                          seed=seed)
    dataset_val = ImageFolder(Path(args.data_path) / "val",
                              ClassificationPresetEval(crop_size=args.resolution, resize_size=resize_size))
    num_classes = len(dataset.classes)
    val_batches = make_batches(dataset_val, np.arange(len(dataset_val)), args.batch_size)

    initial_state = torchvision.models.alexnet(num_classes=num_classes, dropout=args.dropout).state_dict()
    runs = {"paddle": PaddleRun(initial_state, num_classes, args), "torch": TorchRun(initial_state, num_classes, args)}
    seconds = dict.fromkeys(runs, 0.0)
    seconds["data"] = 0.0
    history = []
    for epoch in range(args.epochs):
        start = time.perf_counter()
        batches = train_batches(dataset, epoch, args.batch_size, seed)
        seconds["data"] += time.perf_counter() - start
        record = {"epoch": epoch}
        for name, run in runs.items():
            start = time.perf_counter()
            record[f"{name}_top1"], record[f"{name}_top5"] = run.epoch(epoch, batches, val_batches)
            seconds[name] += time.perf_counter() - start
        history.append(record)
        print(f"epoch {epoch}: val top-1 paddle {record['paddle_top1']:.4f} torch {record['torch_top1']:.4f}, "
              f"top-5 paddle {record['paddle_top5']:.4f} torch {record['torch_top5']:.4f}", flush=True)

    final = history[-1]
    result = {
        "seed": seed,
        "paddle_top1": final["paddle_top1"], "torch_top1": final["torch_top1"],
        "paddle_top5": final["paddle_top5"], "torch_top5": final["torch_top5"],
        "top1_gap_points": round(100 * (final["paddle_top1"] - final["torch_top1"]), 2),
        "train_images": len(dataset), "val_images": len(dataset_val), "num_classes": num_classes,
        "paddle_seconds": round(seconds["paddle"], 1), "torch_seconds": round(seconds["torch"], 1),
        "data_seconds": round(seconds["data"], 1), "history": history,
    }
    print(f"seed {seed}: top-1 paddle {100 * result['paddle_top1']:.2f} torch {100 * result['torch_top1']:.2f} "
          f"gap {result['top1_gap_points']:+.2f} points", flush=True)
    return result


def student_t_quantile(p, df):
    """Quantile of Student's t: exact for 1 and 2 degrees of freedom, else from the normal
    one by the Cornish-Fisher expansion (Abramowitz & Stegun 26.7.5), within 0.2 % of the
    exact value from 3 degrees of freedom and 0.01 % from 9."""
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = statistics.NormalDist().inv_cdf(p)
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
            + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * df**4))


def summarize(gaps, confidence=0.95):
    """Mean of the paired top-1 differences (points) with its Student-t interval."""
    mean = statistics.fmean(gaps)
    if len(gaps) < 2:
        return {"seeds": len(gaps), "mean_gap_points": round(mean, 2)}
    sd = statistics.stdev(gaps)
    half_width = student_t_quantile((1 + confidence) / 2, len(gaps) - 1) * sd / len(gaps) ** 0.5
    return {
        "seeds": len(gaps), "mean_gap_points": round(mean, 2), "sd_points": round(sd, 2),
        "confidence": confidence, "ci_points": [round(mean - half_width, 2), round(mean + half_width, 2)],
        "min_gap_points": min(gaps), "max_gap_points": max(gaps),
    }


def collect(args, runs):
    """The JSON record of the seeds run so far."""
    return {
        "summary": summarize([run["top1_gap_points"] for run in runs]),
        "recipe": {
            "epochs": args.epochs, "resolution": args.resolution, "batch_size": args.batch_size, "lr": args.lr,
            "momentum": args.momentum, "weight_decay": args.weight_decay, "lr_step_size": args.lr_step_size,
            "lr_gamma": args.lr_gamma, "label_smoothing": args.label_smoothing, "dropout": args.dropout,
        },
        "runs": runs,
        "versions": {"paddle": paddle.__version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__},
    }


def main(args):
    if torch is None:
        raise SystemExit("error: benchmarks/convergence.py compares against PyTorch: "
                         "pip install torch==2.14.1 torchvision==0.29.1")
    setup_device("cpu")  # Paddle configured as train.py configures itself
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(args, seed))
        result = collect(args, runs)
        if args.json:  # after every seed, so that an interrupted run keeps the seeds it finished
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    summary = result["summary"]
    print(f"\n{'seed':>4}{'paddle top-1':>14}{'torch top-1':>13}{'gap':>8}")
    for run in runs:
        print(f"{run['seed']:>4}{100 * run['paddle_top1']:14.2f}{100 * run['torch_top1']:13.2f}"
              f"{run['top1_gap_points']:+8.2f}")
    line = f"mean gap (paddle - torch) over {summary['seeds']} seed(s): {summary['mean_gap_points']:+.2f} points"
    if "ci_points" in summary:
        low, high = summary["ci_points"]
        line += f", 95% CI [{low:+.2f}, {high:+.2f}], sd {summary['sd_points']:.2f}"
    print(line)
    return result


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description="AlexNet convergence: PaddlePaddle vs PyTorch", add_help=add_help)
    parser.add_argument("--data-path", required=True, help="ImageFolder root with train/ and val/")
    parser.add_argument("--resolution", default=64, type=int, help="train crop and val crop size")
    parser.add_argument("--epochs", default=4, type=int)
    parser.add_argument("-b", "--batch-size", default=32, type=int)
    parser.add_argument("--lr", default=0.01, type=float)
    parser.add_argument("--momentum", default=0.9, type=float)
    parser.add_argument("--wd", "--weight-decay", default=1e-4, type=float, dest="weight_decay")
    parser.add_argument("--lr-step-size", default=3, type=int, help="StepLR period in epochs")
    parser.add_argument("--lr-gamma", default=0.1, type=float)
    parser.add_argument("--label-smoothing", default=0.0, type=float)
    parser.add_argument("--dropout", default=0.0, type=float, help="classifier dropout (0: deterministic runs)")
    parser.add_argument("--seeds", default=[0], type=int, nargs="+",
                        help="one pair of runs per seed (initial weights, shuffling and augmentation)")
    parser.add_argument("--print-freq", default=50, type=int, help="Paddle side: log every N steps, as train.py")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
