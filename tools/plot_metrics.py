"""Draw training loss and top-1/top-5 curves from a run's metrics.jsonl into a PNG.

    python tools/plot_metrics.py output/metrics.jsonl --out output/metrics.png

Evaluations of ``train.py --test-only`` (records without an epoch) are drawn as points after
the training curves, and listed on stdout with the weights they evaluated.
"""

from paddlevision.interrupts import Interrupts

if __name__ == "__main__":  # before the slow imports: Ctrl-C during them ends in one line too
    INTERRUPTS = Interrupts().install()

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt

from paddlevision_cli import ArgumentParser, run_command


NUMBER_FIELDS = ("loss", "top1", "top5")  # what every train and eval record of train.py has


def is_record(record):
    return isinstance(record, dict) and "type" in record and all(
        isinstance(record.get(key), (int, float)) for key in NUMBER_FIELDS)


def read_records(path):
    """``(train, epoch_evals, standalone_evals)`` records of a metrics file."""
    train, evals, standalone = [], [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise SystemExit(f"error: {path}:{line_number}: not a JSON record ({err.msg})")
            if not is_record(record):
                raise SystemExit(f"error: {path}:{line_number}: not a record of train.py (one with a type and "
                                 f"numbers for {', '.join(NUMBER_FIELDS)})")
            if record.get("type") == "train":
                train.append(record)
            elif record.get("epoch") is None:
                standalone.append(record)
            else:
                evals.append(record)
    if not (train or evals or standalone):
        raise SystemExit(f"error: {path}: no records")
    return train, evals, standalone


def plot(train, evals, standalone, out):
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(11, 4))
    steps = list(range(len(train)))
    loss_axis.plot(steps, [r["loss"] for r in train], label="train loss")
    loss_axis.set_xlabel("logged iteration")
    loss_axis.set_ylabel("loss")
    acc_axis.plot(steps, [r["top1"] for r in train], label="train top-1", alpha=0.6)
    acc_axis.plot(steps, [r["top5"] for r in train], label="train top-5", alpha=0.6)
    if evals:
        # An evaluation closes its epoch: draw it at the epoch's last logged iteration.
        ends = {r["epoch"]: i for i, r in enumerate(train)}
        xs = [ends.get(r["epoch"], len(train) - 1) for r in evals]
        loss_axis.plot(xs, [r["loss"] for r in evals], "o-", label="val loss")
        acc_axis.plot(xs, [r["top1"] for r in evals], "o-", label="val top-1")
        acc_axis.plot(xs, [r["top5"] for r in evals], "o-", label="val top-5")
    if standalone:
        # --test-only evaluations belong to no epoch: one point each, after the training.
        xs = [len(train) + i for i in range(len(standalone))]
        loss_axis.plot(xs, [r["loss"] for r in standalone], "*", markersize=10, label="--test-only loss")
        acc_axis.plot(xs, [r["top1"] for r in standalone], "*", markersize=10, label="--test-only top-1")
        acc_axis.plot(xs, [r["top5"] for r in standalone], "*", markersize=10, label="--test-only top-5")
    acc_axis.set_xlabel("logged iteration")
    acc_axis.set_ylabel("accuracy")
    acc_axis.set_ylim(0, 1)
    for axis in (loss_axis, acc_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


def main(argv=None):
    parser = ArgumentParser(description="Plot loss and accuracy curves from metrics.jsonl")
    parser.add_argument("metrics", help="metrics.jsonl written by train.py into --output-dir")
    parser.add_argument("--out", default=None, help="PNG to write (default: beside the metrics file)")
    args = parser.parse_args(argv)
    path = Path(args.metrics)
    if not path.is_file():
        raise SystemExit(f"error: metrics file not found: {path}")
    out = Path(args.out) if args.out else path.with_suffix(".png")
    train, evals, standalone = read_records(path)
    try:
        plot(train, evals, standalone, out)
    except OSError as err:
        raise SystemExit(f"error: --out {out}: cannot write it ({err.strerror or err})")
    for record in standalone:
        print(f"--test-only {record.get('weights', '(weights not recorded)')}: "
              f"top1 {record['top1']:.3f} top5 {record['top5']:.3f} loss {record['loss']:.4f}")
    print(f"saved {out}")


if __name__ == "__main__":
    sys.exit(run_command(INTERRUPTS, main))
