"""Train and evaluate AlexNet with torchvision's classification recipe on PaddlePaddle.

One device:      python train.py --data-path ./ILSVRC2012 --lr 0.00125 --batch-size 32
Several:         python -m paddle.distributed.launch --gpus 0,1,2,3 train.py --data-path ./ILSVRC2012 --lr 0.01 -b 64
Evaluation only: python train.py --test-only --data-path ./ILSVRC2012 --pretrained ./alexnet_paddle.pdparams
"""

from paddlevision.interrupts import Interrupts

if __name__ == "__main__":  # before the slow imports: Ctrl-C during them ends as cleanly as later
    INTERRUPTS = Interrupts().install()

import json
import os
import re
import sys
import time
from pathlib import Path

# paddlevision before paddle: the package quiets paddle's import-time warning.
from paddlevision import checkpoint
from paddlevision.datasets import ImageFolder, ImageLoader, ListDataset, extract_lite_data
from paddlevision.device import DeviceError, cpu_vendor_and_flags, setup_device
from paddlevision.image import ImageDecodeError
from paddlevision.models import MIN_INPUT_SIZE, get_model, list_models
from paddlevision.onednn import ENGINES, OneDNNUnavailable, accelerate
from paddlevision.optim import LR_SCHEDULERS, OPTIMIZERS, WARMUP_METHODS, build_lr_scheduler, build_optimizer
from paddlevision.transforms.presets import AUTO_AUGMENT_POLICIES, EVAL_CROP_SIZE, EVAL_RESIZE_SIZE, TRAIN_CROP_SIZE
from paddlevision.weights import WeightsError, atomic_write, load_pretrained, load_state_dict_checked, read_weights
from paddlevision_cli import ArgumentParser, at_least, number_in

import paddle

import utils
from presets import ClassificationPresetEval, ClassificationPresetTrain

REPO_ROOT = Path(__file__).resolve().parent
LITE_DATA_TAR = REPO_ROOT / "test_images" / "lite_data.tar"


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve_amp_dtype(amp, device):
    """``--amp`` is float16 on GPU. Paddle 3.3's dygraph ``auto_cast`` computes float32 on CPU
    (with a warning), so there ``--amp`` is refused rather than silently ignored; bf16 through
    the oneDNN convolutions is not built, as it could not be tested on a CPU without bf16."""
    if not amp:
        return None
    if device.startswith("gpu"):
        return "float16"
    bf16 = [flag for flag in BF16_CPU_FLAGS if flag in cpu_vendor_and_flags()[1]]
    this_cpu = f"this CPU has {', '.join(bf16)}" if bf16 else (
        f"this CPU has neither {' nor '.join(BF16_CPU_FLAGS)}, and oneDNN 3.6 has no bf16 convolution without them")
    raise SystemExit(f"error: --amp: no mixed precision on CPU: Paddle's dygraph auto_cast computes float32 there, "
                     f"and the oneDNN conv engine is float32 only ({this_cpu}); train without --amp, or use a GPU")


def forward_loss(model, criterion, image, target, amp_dtype=None):
    """Logits and loss of one batch: the model under autocast when ``amp_dtype`` is set, the
    loss on float32 logits (as torch's autocast computes cross entropy)."""
    with paddle.amp.auto_cast(enable=amp_dtype is not None, dtype=amp_dtype or "float16"):
        output = model(image)
    output = output.astype("float32")
    return output, criterion(output, target)


def optimizer_step(loss, optimizer, scaler=None, reduce_gradients=None):
    """``reduce_gradients``, when given, is called between backward and the update."""
    # Gradients are dropped, not zero-filled (torch's zero_grad(set_to_none=True)): backward
    # then writes them instead of adding to 61 M zeros.
    optimizer.clear_grad(set_to_zero=False)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if reduce_gradients is not None:
        reduce_gradients()
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def lockstep_step(model, criterion, optimizer, image, target, amp_dtype=None, scaler=None):
    """One DataParallel step with --skip-bad-images, taken by every process even when its whole
    batch was unreadable (``image`` None): a process that skipped it would leave the others
    waiting in the gradient all-reduce for ever. The gradients are all-reduced after backward
    (``no_sync``), from losses weighted so that the step follows the mean loss over the
    readable images of all processes. ``(output, loss)``, both None for an empty batch."""
    readable = 0 if target is None else target.shape[0]
    share = utils.global_share(readable)
    output = loss = None
    with model.no_sync():
        objective = utils.zero_gradient_loss(model)
        if readable:
            output, loss = forward_loss(model, criterion, image, target, amp_dtype)
            objective = objective + loss * share
        optimizer_step(objective, optimizer, scaler, reduce_gradients=lambda: utils.all_reduce_gradients(model))
    return output, loss


def train_one_epoch(model, criterion, optimizer, data_loader, epoch, print_freq, metrics, amp_dtype=None, scaler=None):
    """Loss and accuracy stay on the device, summed over the window between two log lines,
    so that the host waits for the device only when it prints."""
    model.train()
    # Unreadable images skipped under DataParallel: every process takes every step (lockstep_step).
    lockstep = isinstance(model, paddle.DataParallel) and getattr(data_loader, "skip_bad_images", False)
    batches = data_loader.batches(keep_unreadable=True) if lockstep else data_loader
    window = new_window()
    end = window_start = time.time()
    for step, (image, target) in enumerate(batches):
        window["reader"] += time.time() - end
        if lockstep:
            output, loss = lockstep_step(model, criterion, optimizer, image, target, amp_dtype, scaler)
        else:
            output, loss = forward_loss(model, criterion, image, target, amp_dtype)
            optimizer_step(loss, optimizer, scaler)
        if output is None:  # none of this process's images could be read; it took the step with the others
            end = time.time()
            continue

        batch_size = target.shape[0]
        correct1, correct5 = utils.correct_counts(output.detach(), target, topk=(1, 5))
        window["loss"] = window["loss"] + loss.detach() * batch_size
        window["correct1"] = window["correct1"] + correct1
        window["correct5"] = window["correct5"] + correct5
        window["samples"] += batch_size
        window["steps"] += 1
        if step % print_freq == 0:
            log_train_window(window, window_start, epoch, step, optimizer.get_lr(), metrics)
            window = new_window()
            window_start = time.time()
        end = time.time()
    if window["steps"]:
        log_train_window(window, window_start, epoch, step, optimizer.get_lr(), metrics)


def new_window():
    return {"loss": 0.0, "correct1": 0.0, "correct5": 0.0, "samples": 0, "steps": 0, "reader": 0.0}


def log_train_window(window, window_start, epoch, step, lr, metrics):
    samples, steps = window["samples"], window["steps"]
    # float() waits for the device; the window's time is taken after it, so that the
    # throughput counts the device's work, not only its queueing.
    sums = {name: float(window[name]) for name in ("loss", "correct1", "correct5")}
    elapsed = time.time() - window_start
    record = {
        "top1": sums["correct1"] / samples,
        "top5": sums["correct5"] / samples,
        "lr": lr,
        "loss": sums["loss"] / samples,
        "avg_reader_cost": window["reader"] / steps,
        "avg_batch_cost": elapsed / steps,
        "avg_samples": samples / steps,
        "avg_ips": samples / elapsed,
    }
    utils.print_main(
        f"[Epoch {epoch}, iter: {step}] top1: {record['top1']:.5f}, top5: {record['top5']:.5f}, "
        f"lr: {lr:.5f}, loss: {record['loss']:.5f}, avg_reader_cost: {record['avg_reader_cost']:.5f} sec, "
        f"avg_batch_cost: {record['avg_batch_cost']:.5f} sec, avg_samples: {record['avg_samples']:.1f}, "
        f"avg_ips: {record['avg_ips']:.5f} images/sec."
    )
    metrics.write(type="train", epoch=epoch, iter=step, **record)


@paddle.no_grad()
def evaluate(model, criterion, data_loader, print_freq, amp_dtype=None, metrics=None, epoch=None, weights=None):
    """Evaluate this process's shard and sum the meters over all processes: the result is a
    single-process evaluation of the whole set. The metrics record names the training's
    ``epoch``, or for ``--test-only`` the ``weights`` evaluated."""
    model.eval()
    metric_logger = utils.MetricLogger(delimiter="  ")
    for name in ("loss", "acc1", "acc5"):  # a process without a batch still joins the sum
        metric_logger.add_meter(name, utils.SmoothedValue())
    for image, target in metric_logger.log_every(data_loader, print_freq, "Test:"):
        output, loss = forward_loss(model, criterion, image, target, amp_dtype)
        batch_size = target.shape[0]
        correct1, correct5 = utils.correct_counts(output, target, topk=(1, 5))
        # Sums, not batch means: counts add up exactly, however the set was split into batches.
        metric_logger.loss.add(loss.astype("float64") * batch_size, batch_size)
        metric_logger.acc1.add(correct1, batch_size)
        metric_logger.acc5.add(correct5, batch_size)

    metric_logger.synchronize_between_processes()
    samples = metric_logger.acc1.count
    if samples == 0:
        raise EvaluationError("evaluation saw no readable image")
    acc1, acc5, loss = (metric_logger.meters[name].global_avg for name in ("acc1", "acc5", "loss"))
    utils.print_main(f" * Acc@1 {acc1:.3f} Acc@5 {acc5:.3f}")
    if metrics is not None:
        metrics.write(type="eval", epoch=epoch, loss=loss, top1=acc1, top5=acc5, num_samples=samples,
                      **({"weights": weights} if weights else {}))
    return acc1, acc5, loss


class EvaluationError(RuntimeError):
    """An evaluation that has nothing to measure."""


def report_skipped(data_loader, what):
    """How many unreadable images the last pass skipped, over all processes."""
    skipped = int(utils.reduce_across_processes([data_loader.num_skipped])[0])
    if skipped:
        utils.print_main(f"{what}: skipped {skipped} unreadable images (--skip-bad-images)")


def split_source(data_path, split):
    """Where a split's images are listed: PaddleClas's ``{split}_list.txt`` when the data
    root has one, else the ``{split}/`` class folders; ``None`` when neither exists."""
    list_file = Path(data_path) / f"{split}_list.txt"
    if list_file.is_file():
        return list_file
    folder = Path(data_path) / split
    return folder if folder.is_dir() else None


def resolve_data_path(data_path, test_only=False):
    if data_path is None:
        if not (REPO_ROOT / "lite_data").is_dir():
            utils.print_main(f"no --data-path: extracting the bundled lite data into {REPO_ROOT / 'lite_data'}")
        return Path(extract_lite_data(LITE_DATA_TAR, REPO_ROOT))
    if not Path(data_path).is_dir():
        problem = "not a directory" if Path(data_path).exists() else "no such directory"
        raise SystemExit(f"error: --data-path {data_path}: {problem}")
    for split in ("val",) if test_only else ("train", "val"):
        if split_source(data_path, split) is None:
            raise SystemExit(f"error: --data-path {data_path}: expected {split}/ class folders or a {split}_list.txt, "
                             "found neither")
    return Path(data_path)


def make_dataset(data_path, split, transform, seed=None):
    source = split_source(data_path, split)
    if source.is_file():
        return ListDataset(data_path, source, transform, seed=seed)
    return ImageFolder(source, transform, seed=seed)


def load_data(data_path, args):
    eval_transform = ClassificationPresetEval(crop_size=args.val_crop_size, resize_size=args.val_resize_size)
    dataset_test = make_dataset(data_path, "val", eval_transform)
    if args.test_only:
        return None, dataset_test
    train_transform = ClassificationPresetTrain(
        crop_size=args.train_crop_size, auto_augment_policy=args.auto_augment, random_erase_prob=args.random_erase
    )
    dataset = make_dataset(data_path, "train", train_transform, seed=args.seed)
    shorter, longer = sorted((dataset.classes, dataset_test.classes), key=len)
    # A list file's classes are its labels, so val may simply not reach the highest one.
    if longer[: len(shorter)] != shorter or isinstance(dataset, ImageFolder) and shorter != longer:
        raise SystemExit(f"error: the train and val splits under {data_path} have different classes")
    return dataset, dataset_test


def make_loaders(dataset, dataset_test, batch_size, workers, skip_bad_images):
    options = {"num_workers": workers, "skip_bad_images": skip_bad_images}
    test_sampler = paddle.io.BatchSampler(sampler=utils.ShardedEvalSampler(dataset_test), batch_size=batch_size)
    loader_test = ImageLoader(dataset_test, test_sampler, **options)
    if dataset is None:
        return None, None, loader_test
    # Rank r takes the r-th slice of every global batch, so the global batches, and with
    # them the averaged gradients, are those of one process with world_size * batch_size.
    train_sampler = paddle.io.DistributedBatchSampler(dataset, batch_size=batch_size, shuffle=True)
    return train_sampler, ImageLoader(dataset, train_sampler, **options), loader_test


# The names train.py writes into --output-dir; a new training never writes over another's.
RUN_FILES = re.compile(r"(model_\d+|latest)\.(pdparams|pdopt)|best_model\.(pdparams|json)|metrics\.jsonl")
EPOCH_CHECKPOINT = re.compile(r"model_(\d+)\.(pdparams|pdopt)")


def check_output_dir(output_dir, resume):
    """Create ``--output-dir``; refuse one that holds another run's files, unless this run
    resumes from it (a new training would overwrite its metrics and checkpoints)."""
    if not output_dir:
        return
    path = Path(output_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SystemExit(f"error: --output-dir {output_dir}: cannot create it ({err.strerror or err})")
    if not os.access(path, os.W_OK | os.X_OK):
        raise SystemExit(f"error: --output-dir {output_dir}: not writable")
    earlier = sorted(p.name for p in path.iterdir() if RUN_FILES.fullmatch(p.name))
    if earlier and not (resume and Path(checkpoint.resolve_resume_prefix(resume)).parent.resolve() == path.resolve()):
        raise SystemExit(f"error: --output-dir {output_dir} holds another run ({', '.join(earlier[:3])}"
                         f"{', …' if len(earlier) > 3 else ''}): continue it with --resume {output_dir}, "
                         "or choose another --output-dir")


def save_epoch_checkpoint(args, model, optimizer, lr_scheduler, scaler, epoch, meta):
    """``model_{epoch}``, then ``latest`` as an atomic copy of it (hard links where
    possible); only the last ``--keep-checkpoints`` epochs' files stay. ``latest.pdopt`` is
    replaced before ``latest.pdparams``; both record the epoch, so a crash between the two
    is detected on resume (and ``model_{epoch}`` is complete). Returns the prefix written."""
    rng_states = utils.gather_objects(checkpoint.rng_state())
    prefix = os.path.join(args.output_dir, f"model_{epoch}")
    if not utils.is_main_process():
        return prefix
    try:
        checkpoint.save_training_checkpoint(prefix, model, optimizer, lr_scheduler, epoch, args, scaler, meta,
                                            rng_states)
        for suffix in (".pdopt", ".pdparams"):
            checkpoint.atomic_copy(prefix + suffix, os.path.join(args.output_dir, "latest" + suffix))
    except OSError as err:  # a full disk, a quota, a directory removed under the run
        raise checkpoint.CheckpointError(f"cannot write the checkpoint {prefix}: {err.strerror or err}") from None
    if args.keep_checkpoints is not None:
        for path in Path(args.output_dir).iterdir():
            match = EPOCH_CHECKPOINT.fullmatch(path.name)
            if match and int(match.group(1)) <= epoch - args.keep_checkpoints:
                path.unlink()
    return prefix


def record_best_model(output_dir, prefix, epoch, acc1):
    """``best_model.pdparams`` (a link to the epoch's weights) and ``best_model.json``
    saying which epoch it is and its top-1."""
    if not (output_dir and utils.is_main_process()):
        return
    checkpoint.atomic_copy(prefix + ".pdparams", os.path.join(output_dir, "best_model.pdparams"))
    with atomic_write(os.path.join(output_dir, "best_model.json")) as tmp:
        Path(tmp).write_text(json.dumps({"epoch": epoch, "acc1": acc1}) + "\n")


def recorded_evaluations(run_dir, last_epoch):
    """``{epoch: top-1}`` of the evaluations that ``metrics.jsonl`` in ``run_dir`` records for
    the epochs up to ``last_epoch``; of an epoch trained again (a run resumed from an earlier
    checkpoint) the last. The log, not ``best_model.json``: an interruption can come between
    an evaluation and the best model's update, and a resumed earlier epoch makes later bests
    another timeline's."""
    evaluations = {}
    try:
        with open(Path(run_dir) / "metrics.jsonl", encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if (isinstance(record, dict) and record.get("type") == "eval" and type(record.get("epoch")) is int
                        and record["epoch"] <= last_epoch and isinstance(record.get("top1"), (int, float))):
                    evaluations[record["epoch"]] = float(record["top1"])
    except OSError:
        pass  # a checkpoint without its run's log: what this run evaluates is all there is
    return evaluations


def resumed_best_acc1(args, model, criterion, data_loader_test, amp_dtype, metrics, interrupts):
    """The best top-1 up to the resumed epoch, from the run's log; the resumed epoch is
    evaluated first if its evaluation never finished, and ``best_model`` is pointed at the
    best epoch, so that a resumed run ends as an uninterrupted one would."""
    resume_prefix, resumed_epoch = checkpoint.resolve_resume_prefix(args.resume), args.start_epoch - 1
    evaluations = recorded_evaluations(Path(resume_prefix).parent, resumed_epoch)
    # Decided by all ranks together: the log is rank 0's, and an evaluation that only some
    # ranks entered would wait for the others for ever.
    if utils.reduce_across_processes([resumed_epoch not in evaluations])[0]:
        evaluations[resumed_epoch], _, _ = evaluate(model, criterion, data_loader_test, args.print_freq, amp_dtype,
                                                    metrics, epoch=resumed_epoch)
    best_acc1 = max(evaluations.values())
    best_epoch = min(epoch for epoch, acc1 in evaluations.items() if acc1 == best_acc1)  # the first to reach it
    best_prefix = (resume_prefix if best_epoch == resumed_epoch  # the resumed files may have another name
                   else str(Path(resume_prefix).parent / f"model_{best_epoch}"))
    if Path(best_prefix + ".pdparams").is_file():  # else pruned by --keep-checkpoints after it was recorded
        with interrupts.deferred():
            record_best_model(args.output_dir, best_prefix, best_epoch, best_acc1)
    return best_acc1


def resume_hint(saved, args):
    """What a failed or interrupted run leaves to continue from, for its last line."""
    if saved:
        prefix, epoch = saved
        return f"epoch {epoch} is saved in {prefix}: run the command again with --resume {prefix} to continue"
    if not args.output_dir:
        return "no checkpoint is written with --output-dir ''"
    if args.resume:
        return f"no epoch finished since --resume {args.resume}, which still holds the last checkpoint"
    return "no epoch finished, so no checkpoint was saved"


def main(args, interrupts=None):
    interrupts = interrupts or Interrupts()
    if args.test_only and not (args.pretrained or args.resume):
        raise SystemExit("error: --test-only needs the weights to evaluate: --pretrained FILE or --resume CHECKPOINT")
    if not args.test_only and utils.is_main_process():  # the rank is the launcher's, known before init
        check_output_dir(args.output_dir, args.resume)
    args.device = setup_device(args.device)
    utils.init_distributed_mode(args)
    if args.seed is not None:
        utils.set_seed(args.seed + args.rank)
    amp_dtype = resolve_amp_dtype(args.amp, args.device)
    utils.print_main(args)

    data_path = resolve_data_path(args.data_path, args.test_only)
    dataset, dataset_test = load_data(data_path, args)
    train_sampler, data_loader, data_loader_test = make_loaders(
        dataset, dataset_test, args.batch_size, args.workers, args.skip_bad_images
    )
    class_names = max((d.classes for d in (dataset, dataset_test) if d is not None), key=len)
    num_classes = args.num_classes or len(class_names)
    if num_classes < len(class_names):
        raise SystemExit(f"error: --num-classes {num_classes} is smaller than the {len(class_names)} class folders "
                         f"in {data_path}")

    model = get_model(args.model, num_classes=num_classes, dropout=args.dropout)
    # Before DataParallel wraps the model; parameter names are kept, so checkpoints and
    # --pretrained/--resume weights are those of the stock model.
    acceleration = accelerate(model, args.device, args.conv_engine)
    utils.print_main(acceleration.log_line())
    meta = {"model": args.model, "num_classes": num_classes, "class_names": list(class_names)}
    if args.pretrained:
        # Starting a training from weights with another head is fine-tuning; evaluating
        # such weights would measure a random head.
        load_pretrained(model, args.pretrained, allow_head_mismatch=not args.test_only)
    criterion = paddle.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    # An evaluation adds its record to the training's, so that both stay; a new training starts afresh.
    metrics = utils.MetricsWriter(os.path.join(args.output_dir, "metrics.jsonl") if args.output_dir else None,
                                  append=bool(args.resume) or args.test_only)

    if args.test_only:
        weights = args.pretrained
        if args.resume:
            weights = checkpoint.resolve_resume_prefix(args.resume) + ".pdparams"
            state_dict, _ = read_weights(weights)
            load_state_dict_checked(model, state_dict, source=args.resume)
        evaluate(model, criterion, data_loader_test, args.print_freq, amp_dtype, metrics,
                 weights=str(weights) if weights else None)
        report_skipped(data_loader_test, "Test")
        metrics.close()
        return

    lr_scheduler = build_lr_scheduler(
        args.lr, args.lr_scheduler, args.epochs, args.lr_step_size, args.lr_gamma, args.lr_warmup_epochs,
        args.lr_warmup_method, args.lr_warmup_decay, args.lr_min,
    )
    optimizer = build_optimizer(args.opt, model.parameters(), lr_scheduler, args.momentum, args.weight_decay)
    scaler = paddle.amp.GradScaler() if amp_dtype == "float16" else None
    best_acc1 = -1.0
    if args.resume:
        args.start_epoch, _ = checkpoint.load_training_checkpoint(
            args.resume, model, optimizer, lr_scheduler, scaler, rank=args.rank
        )
        best_acc1 = resumed_best_acc1(args, model, criterion, data_loader_test, amp_dtype, metrics, interrupts)
    elif args.start_epoch:
        lr_scheduler.step(args.start_epoch)
    if args.start_epoch >= args.epochs:
        utils.print_main(f"nothing left to train: epochs {args.start_epoch} of --epochs {args.epochs} are done "
                         f"(raise --epochs to train further)")
        metrics.close()
        return
    train_model = paddle.DataParallel(model) if args.distributed else model

    start_time = time.time()
    saved = None  # (prefix, epoch) of the last checkpoint this run wrote
    try:
        for epoch in range(args.start_epoch, args.epochs):
            train_sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            train_one_epoch(train_model, criterion, optimizer, data_loader, epoch, args.print_freq, metrics,
                            amp_dtype, scaler)
            report_skipped(data_loader, f"[Epoch {epoch}] training")
            lr_scheduler.step()
            # Saved before the evaluation, which can fail on a bad image or be interrupted.
            if args.output_dir:
                with interrupts.deferred():
                    saved = save_epoch_checkpoint(args, model, optimizer, lr_scheduler, scaler, epoch, meta), epoch
            acc1, _, _ = evaluate(model, criterion, data_loader_test, args.print_freq, amp_dtype, metrics,
                                  epoch=epoch)
            report_skipped(data_loader_test, "Test")
            if acc1 > best_acc1:
                best_acc1 = acc1
                if saved:
                    with interrupts.deferred():
                        record_best_model(args.output_dir, saved[0], epoch, acc1)
    except BaseException as err:
        if saved or isinstance(err, KeyboardInterrupt):
            err.add_note(resume_hint(saved, args))
        raise
    finally:
        metrics.close()
    utils.print_main(f"Training time {time.strftime('%H:%M:%S', time.gmtime(time.time() - start_time))}")


def get_args_parser(add_help=True):
    parser = ArgumentParser(description="PaddlePaddle AlexNet classification training", add_help=add_help)
    parser.add_argument("--data-path", default=None,
                        help="dataset root with train/ and val/ class folders, or with PaddleClas-style "
                             "train_list.txt and val_list.txt (default: the bundled lite data, extracted from "
                             "test_images/lite_data.tar on first use)")
    parser.add_argument("--model", default="alexnet", choices=list_models(), help="model name")
    parser.add_argument("--device", default=None,
                        help="gpu, gpu:N or cpu (default: gpu when available, else cpu); under "
                             "paddle.distributed.launch, gpu is each process's card (choose them with --gpus)")
    parser.add_argument("-b", "--batch-size", default=32, type=at_least(1), help="images per device per step")
    parser.add_argument("--epochs", default=90, type=at_least(1), help="number of total epochs to run")
    parser.add_argument("-j", "--workers", default=4, type=at_least(0),
                        help="data loading worker processes per device; 0 reads in the main process, a batch at a "
                             "time with no prefetch (for debugging: on GPU each batch is then copied synchronously)")
    parser.add_argument("--opt", default="sgd", choices=OPTIMIZERS, help="optimizer")
    parser.add_argument("--lr", default=0.01, type=number_in(float, 0, low_open=True),
                        help="initial learning rate, for the global batch (scale it linearly: 0.01 at 256 images)")
    parser.add_argument("--momentum", default=0.9, type=number_in(float, 0), help="momentum")
    parser.add_argument("--wd", "--weight-decay", default=1e-4, type=number_in(float, 0), dest="weight_decay",
                        help="weight decay")
    parser.add_argument("--label-smoothing", default=0.0, type=number_in(float, 0, 1, high_open=True),
                        help="label smoothing")
    parser.add_argument("--lr-scheduler", default="steplr", choices=LR_SCHEDULERS, help="LR schedule, per epoch")
    parser.add_argument("--lr-warmup-epochs", default=0, type=at_least(0), help="epochs of LR warm-up")
    parser.add_argument("--lr-warmup-method", default="constant", choices=WARMUP_METHODS, help="warm-up shape")
    parser.add_argument("--lr-warmup-decay", default=0.01, type=number_in(float, 0, 1, low_open=True),
                        help="LR factor at the start of warm-up")
    parser.add_argument("--lr-step-size", default=30, type=at_least(1), help="steplr: epochs between LR decays")
    parser.add_argument("--lr-gamma", default=0.1, type=number_in(float, 0, low_open=True),
                        help="steplr: LR decay factor")
    parser.add_argument("--lr-min", default=0.0, type=number_in(float, 0), help="cosineannealinglr: final LR")
    parser.add_argument("--dropout", default=0.5, type=number_in(float, 0, 1, high_open=True),
                        help="dropout probability of the classifier (0 makes training deterministic)")
    parser.add_argument("--print-freq", default=10, type=at_least(1), help="print every N iterations")
    parser.add_argument("--output-dir", default="./output",
                        help="where checkpoints and metrics.jsonl go ('' for none); a new training refuses a "
                             "directory holding another run's files")
    parser.add_argument("--keep-checkpoints", default=None, type=at_least(1), metavar="N",
                        help="keep the per-epoch model_{epoch} files of the last N epochs only (default: all, "
                             "456 MB per epoch for AlexNet); latest and best_model are always kept")
    parser.add_argument("--resume", default="", help="checkpoint to resume from: a directory, prefix or file")
    parser.add_argument("--start-epoch", default=0, type=at_least(0),
                        help="start epoch (set from the checkpoint on --resume)")
    parser.add_argument("--test-only", action="store_true", help="only evaluate the model on val/")
    parser.add_argument("--pretrained", default=None,
                        help="initial weights: a .pdparams/.pth path, an http(s) URL or 'alexnet' for the published "
                             "ones")
    parser.add_argument("--num-classes", default=None, type=at_least(1),
                        help="number of classes (default: class folders)")
    parser.add_argument("--auto-augment", default=None, choices=AUTO_AUGMENT_POLICIES, help="auto augment policy")
    parser.add_argument("--random-erase", default=0.0, type=number_in(float, 0, 1),
                        help="random erasing probability")
    parser.add_argument("--amp", action="store_true",
                        help="float16 mixed precision (GPU only: Paddle's dygraph AMP does nothing on CPU)")
    parser.add_argument("--conv-engine", default="paddle", choices=ENGINES,
                        help="convolutions on Paddle's own layers (paddle), or on oneDNN for CPU training on Linux "
                             "x86-64 (onednn: needs requirements-onednn.txt and a C++ compiler, compiles once; "
                             "README section 10)")
    parser.add_argument("--seed", default=None, type=number_in(int, 0, 2**31 - 1), help="seed for reproducible runs")
    parser.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images instead of failing")
    parser.add_argument("--val-resize-size", default=EVAL_RESIZE_SIZE, type=at_least(1),
                        help="evaluation resize (short side)")
    parser.add_argument("--val-crop-size", default=EVAL_CROP_SIZE, type=at_least(MIN_INPUT_SIZE),
                        help="evaluation center crop")
    parser.add_argument("--train-crop-size", default=TRAIN_CROP_SIZE, type=at_least(MIN_INPUT_SIZE),
                        help="training random crop")
    return parser


def failure(err, interrupts):
    """The last line and exit status of a run that ``err`` ended; ``None`` for an error
    that is a bug here (its traceback is what helps then)."""
    notes = "; ".join(getattr(err, "__notes__", ()))
    if interrupts.received:  # whatever the signal interrupted
        return f"interrupted: {notes or 'nothing was saved'}", interrupts.exit_status
    if isinstance(err, ImageDecodeError):
        line = f"error: {err} (--skip-bad-images skips unreadable images)"
    elif isinstance(err, OneDNNUnavailable):
        line = f"error: --conv-engine onednn: {err}"
    elif isinstance(err, (WeightsError, DeviceError, EvaluationError)):  # the message names the file or flag
        line = f"error: {err}"
    else:
        return None
    return f"{line}; {notes}" if notes else line, 1


if __name__ == "__main__":
    try:
        INTERRUPTS.release()
        main(get_args_parser().parse_args(), INTERRUPTS)
        ending = None
    except Exception as err:
        ending = failure(err, INTERRUPTS)
        if ending is None:
            raise
    except KeyboardInterrupt as err:
        ending = failure(err, INTERRUPTS) or ("interrupted", 130)
    # Outside the except blocks, so that the traceback and the data-loading workers it holds are released first.
    if ending:
        line, status = ending
        utils.print_main(line, file=sys.stderr)
        sys.exit(status)
