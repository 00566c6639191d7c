"""Train our AlexNet and torchvision's with the same recipe, the same budget and the same
data, and compare their validation accuracy: the end-to-end check of the reproduction.

    python tools/prepare_fashion_mnist.py --output data/fm200 --train-per-class 200 --val-per-class 100 --size 64
    python benchmarks/convergence.py --data-path data/fm200 --json convergence.json

The defaults (64x64, batch 32, 4 epochs, LR 0.01 dropped 10x after epoch 3) keep each
framework's run to a few minutes on two CPU cores; docs/alignment.md has the results.

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
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore", message="No ccache found")

import numpy as np
import paddle
import torch
import torchvision

import train  # train.py's training step and evaluation, so the Paddle side is exactly train.py's
import utils
from paddlevision.checkpoint import load_state_dict_checked, torch_to_paddle_state_dict
from paddlevision.datasets import ImageFolder
from paddlevision.models import AlexNet
from paddlevision.optim import build_lr_scheduler, build_optimizer
from paddlevision.transforms import ClassificationPresetEval, ClassificationPresetTrain


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
    """The numpy batches as train.py's data loader yields them: ``(image, target, num_skipped)``."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for image, target in self.batches:
            yield paddle.to_tensor(image), paddle.to_tensor(target), paddle.zeros([], dtype="int64")


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
        train.train_one_epoch(self.model, self.criterion, self.optimizer, PaddleBatches(batches), epoch, self.args,
                              None, None, self.metrics)
        self.lr_scheduler.step()
        top1, top5, _ = train.evaluate(self.model, self.criterion, PaddleBatches(val_batches), self.args, None)
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


def main(args):
    paddle.set_device("cpu")
    # Dropout masks (if any) come from each framework's own generator.
    paddle.seed(args.seed)
    torch.manual_seed(args.seed)
    resize_size = round(args.resolution * 256 / 224)  # the recipe's 256/224 ratio
    dataset = ImageFolder(Path(args.data_path) / "train", ClassificationPresetTrain(crop_size=args.resolution),
                          seed=args.seed)
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
        batches = train_batches(dataset, epoch, args.batch_size, args.seed)
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
        "paddle_top1": final["paddle_top1"], "torch_top1": final["torch_top1"],
        "paddle_top5": final["paddle_top5"], "torch_top5": final["torch_top5"],
        "top1_gap_points": round(100 * (final["paddle_top1"] - final["torch_top1"]), 2),
        "epochs": args.epochs, "train_images": len(dataset), "val_images": len(dataset_val),
        "num_classes": num_classes, "resolution": args.resolution, "batch_size": args.batch_size, "lr": args.lr,
        "momentum": args.momentum, "weight_decay": args.weight_decay, "lr_step_size": args.lr_step_size,
        "lr_gamma": args.lr_gamma, "dropout": args.dropout, "seed": args.seed,
        "paddle_seconds": round(seconds["paddle"], 1), "torch_seconds": round(seconds["torch"], 1),
        "data_seconds": round(seconds["data"], 1), "history": history,
        "versions": {"paddle": paddle.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__},
    }
    print(f"\n{'':8}{'top-1':>8}{'top-5':>8}{'seconds':>9}")
    for name in runs:
        print(f"{name:8}{100 * result[f'{name}_top1']:8.2f}{100 * result[f'{name}_top5']:8.2f}"
              f"{result[f'{name}_seconds']:9.1f}")
    print(f"top-1 gap (paddle - torch): {result['top1_gap_points']:+.2f} points; "
          f"{len(dataset)} train / {len(dataset_val)} val images at {args.resolution}px, {args.epochs} epochs")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
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
    parser.add_argument("--seed", default=0, type=int, help="initial weights, shuffling and augmentation")
    parser.add_argument("--print-freq", default=50, type=int, help="Paddle side: log every N steps, as train.py")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
