"""The fault matrix: every entry point against the faults users meet, one row each.

A row is a command as a user types it (placeholders in braces name files of the module's
``world``: a trained run, an export, broken and hostile files), the exit status it must end
with, and the one line it must print: ``error: …`` for a fault, ``interrupted: …`` for a
signal. Every row also asserts no ``Traceback``, an end within its timeout (a hang fails),
that no file of the world changed (what earlier commands wrote is intact), that a hostile
file ran nothing, and that the row's own output directory holds no half-written file.

Adding a row is one line in ROWS. ``send`` is the signal a row receives: after a number
of seconds, once a text appears on stdout, or, with ``tests/signal_at.py`` in front of the
script, at a chosen point inside it.
"""

import importlib.util
import json
import os
import pickle
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pytest

from conftest import FAST_SIZES, REPO_ROOT, run_script
from paddlevision import safe_pickle
from paddlevision.interrupts import Interrupts

FAST = " ".join(FAST_SIZES)
CPU = "--device cpu"
HOSTILE_GLOBAL = r"posix\.system"  # os.system, as pickle names it on Linux


@dataclass(frozen=True)
class Row:
    name: str
    command: str
    status: int
    line: str  # a regular expression the whole error/interrupted line must match
    send: tuple = None  # (signal name, seconds or stdout text)
    timeout: float = 120
    needs_torch: bool = False  # the row's hostile .pth is written with torch
    group: bool = False  # send to the whole process group (data-loading workers too), as a terminal or scheduler does


ROWS = [
    # train.py: numbers, at parse time
    Row("train -b 0", "train.py -b 0", 2, r"error: argument -b/--batch-size: must be at least 1, got 0 \(.*--help.*\)"),
    Row("train -b -4", "train.py -b -4", 2, r"error: argument -b/--batch-size: must be at least 1, got -4 .*"),
    Row("train -b abc", "train.py -b abc", 2, r"error: argument -b/--batch-size: invalid int value: 'abc' .*"),
    Row("train -j -1", "train.py -j -1", 2, r"error: argument -j/--workers: must be at least 0, got -1 .*"),
    Row("train --lr -1", "train.py --lr -1", 2, r"error: argument --lr: must be greater than 0, got -1 .*"),
    Row("train --lr 0", "train.py --lr 0", 2, r"error: argument --lr: must be greater than 0, got 0 .*"),
    Row("train --lr nan", "train.py --lr nan", 2, r"error: argument --lr: must be greater than 0, got nan .*"),
    Row("train --print-freq 0", "train.py --print-freq 0", 2, r"error: argument --print-freq: must be at least 1, .*"),
    Row("train --epochs 0", "train.py --epochs 0", 2, r"error: argument --epochs: must be at least 1, got 0 .*"),
    Row("train --momentum -0.5", "train.py --momentum -0.5", 2, r"error: argument --momentum: must be at least 0, .*"),
    Row("train --wd -1", "train.py --wd -1", 2, r"error: argument --wd/--weight-decay: must be at least 0, .*"),
    Row("train --dropout 1", "train.py --dropout 1", 2, r"error: argument --dropout: must be in \[0, 1\), got 1 .*"),
    Row("train --label-smoothing 1", "train.py --label-smoothing 1", 2, r"error: argument --label-smoothing: .*"),
    Row("train --random-erase 1.5", "train.py --random-erase 1.5", 2, r"error: argument --random-erase: .*"),
    Row("train --lr-step-size 0", "train.py --lr-step-size 0", 2, r"error: argument --lr-step-size: .*"),
    Row("train --lr-gamma 0", "train.py --lr-gamma 0", 2, r"error: argument --lr-gamma: .*"),
    Row("train --lr-warmup-decay 0", "train.py --lr-warmup-decay 0", 2, r"error: argument --lr-warmup-decay: .*"),
    Row("train --train-crop-size 32", "train.py --train-crop-size 32", 2,
        r"error: argument --train-crop-size: must be at least 63, got 32 .*"),
    Row("train --val-crop-size 0", "train.py --val-crop-size 0", 2, r"error: argument --val-crop-size: .*"),
    Row("train --val-resize-size 0", "train.py --val-resize-size 0", 2, r"error: argument --val-resize-size: .*"),
    Row("train --num-classes 0", "train.py --num-classes 0", 2, r"error: argument --num-classes: .*"),
    Row("train --num-classes 2", f"train.py --data-path {{data}} --num-classes 2 {CPU} --output-dir {{scratch}}/out",
        1, r"error: --num-classes 2 is smaller than the 4 class folders in .*"),
    Row("train --start-epoch -1", "train.py --start-epoch -1", 2, r"error: argument --start-epoch: .*"),
    Row("train --keep-checkpoints -1", "train.py --keep-checkpoints -1", 2, r"error: argument --keep-checkpoints: .*"),
    Row("train --keep-checkpoints 0", "train.py --keep-checkpoints 0", 2,
        r"error: argument --keep-checkpoints: must be at least 1, got 0 .*"),
    Row("train --seed -1", "train.py --seed -1", 2, r"error: argument --seed: must be in \[0, 2147483647\], .*"),
    Row("train --device tpu", "train.py --device tpu", 1, r"error: .*tpu.*"),
    Row("train --model vgg", "train.py --model vgg", 2, r"error: argument --model: invalid choice: 'vgg' .*"),
    Row("train --auto-augment x", "train.py --auto-augment x", 2, r"error: argument --auto-augment: invalid choice.*"),
    Row("train --conv-engine auto", "train.py --conv-engine auto", 2,
        r"error: argument --conv-engine: invalid choice: 'auto' \(choose from '?paddle'?, '?onednn'?\) .*"),
    Row("train unknown flag", "train.py --epoks 3", 2, r"error: unrecognized arguments: --epoks 3 .*"),
    # train.py: files and directories
    Row("train missing --data-path", f"train.py --data-path {{scratch}}/nowhere {CPU}", 1,
        r"error: --data-path .*nowhere: no such directory"),
    Row("train --data-path a file", f"train.py --data-path {{a_file}} {CPU}", 1,
        r"error: --data-path .*: not a directory"),
    Row("train --data-path empty", f"train.py --data-path {{empty_dir}} {CPU} --output-dir {{scratch}}/out", 1,
        r"error: --data-path .*: expected train/ class folders or a train_list.txt, found neither"),
    Row("train --pretrained missing", f"train.py --data-path {{data}} --pretrained {{scratch}}/none.pdparams {CPU} "
        "--output-dir {scratch}/out", 1, r"error: weights file not found: .*none\.pdparams"),
    Row("train --pretrained empty", f"train.py --data-path {{data}} --pretrained {{empty_weights}} {CPU} "
        "--output-dir {scratch}/out", 1, r"error: cannot read .*empty\.pdparams: truncated .*"),
    Row("train --pretrained truncated", f"train.py --data-path {{data}} --pretrained {{truncated_weights}} {CPU} "
        "--output-dir {scratch}/out", 1, r"error: cannot read .*truncated\.pdparams: truncated .*"),
    Row("train --pretrained an image", f"train.py --data-path {{data}} --pretrained {{image_weights}} {CPU} "
        "--output-dir {scratch}/out", 1, r"error: cannot read .*image\.pdparams: not a paddle\.save file .*"),
    Row("train --pretrained hostile", f"train.py --data-path {{data}} --pretrained {{evil_weights}} {CPU} "
        "--output-dir {scratch}/out", 1, rf"error: .*evil\.pdparams: it asks to run {HOSTILE_GLOBAL} while loading: "
        "refused.*"),
    Row("train --resume missing", f"train.py --data-path {{data}} --resume {{scratch}}/none {CPU} "
        "--output-dir {scratch}/out", 1, r"error: --resume .*none: .*not found"),
    Row("train --resume truncated .pdopt", f"train.py --data-path {{data}} --resume {{truncated_run}} {CPU} "
        "--output-dir {scratch}/out", 1, r"error: cannot read .*latest\.pdopt: truncated .*"),
    Row("train --resume hostile .pdopt", f"train.py --data-path {{data}} --resume {{evil_run}} {CPU} "
        "--output-dir {scratch}/out", 1, rf"error: .*latest\.pdopt: it asks to run {HOSTILE_GLOBAL} while loading.*"),
    Row("train into another run's directory", f"train.py --data-path {{data}} --epochs 1 {CPU} --output-dir {{run}}", 1,
        r"error: --output-dir .*run holds another run \(.*\): continue it with --resume .*run, or choose another "
        r"--output-dir"),
    Row("train --output-dir a file", f"train.py --data-path {{data}} {CPU} --output-dir {{a_file}}/out", 1,
        r"error: --output-dir .*: cannot create it \(.*\)"),
    Row("train corrupt train image", f"train.py --data-path {{bad_train_data}} --epochs 1 -b 8 {CPU} {FAST} "
        "--output-dir {scratch}/out", 1,
        r"error: cannot decode image .*bad_train_data/train/cat/broken\.jpg: .* \(--skip-bad-images skips unreadable "
        r"images\)"),
    Row("train corrupt val image", f"train.py --data-path {{bad_val_data}} --epochs 1 -b 8 {CPU} {FAST} "
        "--output-dir {scratch}/out", 1,
        r"error: cannot decode image .*bad_val_data/val/cat/broken\.jpg: .* \(--skip-bad-images skips unreadable "
        r"images\); epoch 0 is saved in .*out/model_0: run the command again with --resume .*out/model_0 to continue"),
    # train.py --test-only
    Row("test-only without weights", f"train.py --test-only --data-path {{data}} {CPU}", 1,
        r"error: --test-only needs the weights to evaluate: --pretrained FILE or --resume CHECKPOINT"),
    Row("test-only hostile weights", f"train.py --test-only --data-path {{data}} --pretrained {{evil_weights}} {CPU} "
        "--output-dir {scratch}/out", 1, rf"error: .*evil\.pdparams: it asks to run {HOSTILE_GLOBAL}.*"),
    Row("test-only corrupt val image", f"train.py --test-only --data-path {{bad_val_data}} --pretrained {{weights}} "
        f"{CPU} {FAST} --output-dir {{scratch}}/out", 1, r"error: cannot decode image .*broken\.jpg: .*"),
    Row("test-only missing --data-path", f"train.py --test-only --data-path {{scratch}}/nowhere --pretrained "
        f"{{weights}} {CPU}", 1, r"error: --data-path .*nowhere: no such directory"),
    # train.py interrupted: at start-up, as the loader starts, mid-step, at the epoch boundary, during a save
    Row("train SIGINT during start-up", f"tests/signal_at.py startup SIGINT train.py --data-path {{data}} {CPU} "
        "--output-dir {scratch}/out", 130, r"interrupted: nothing was saved"),
    Row("train SIGINT after 1 s", f"train.py --data-path {{data}} --epochs 2 -b 8 {CPU} {FAST} --output-dir "
        "{scratch}/out", 130, r"interrupted: (nothing was saved|no epoch finished, so no checkpoint was saved)",
        send=("SIGINT", 1.0)),
    Row("train SIGINT as the loader starts", f"tests/signal_at.py loader-start SIGINT train.py --data-path {{data}} "
        f"--epochs 2 -b 8 {CPU} {FAST} --output-dir {{scratch}}/out", 130,
        r"interrupted: no epoch finished, so no checkpoint was saved"),
    Row("train SIGINT mid-step", f"train.py --data-path {{data}} --epochs 2 -b 8 --print-freq 1 {CPU} {FAST} "
        "--output-dir {scratch}/out", 130, r"interrupted: no epoch finished, so no checkpoint was saved",
        send=("SIGINT", "[Epoch 0, iter: 0]")),
    Row("train SIGTERM mid-step", f"train.py --data-path {{data}} --epochs 2 -b 8 --print-freq 1 {CPU} {FAST} "
        "--output-dir {scratch}/out", 143, r"interrupted: no epoch finished, so no checkpoint was saved",
        send=("SIGTERM", "[Epoch 0, iter: 0]")),
    Row("train SIGTERM to the process group mid-step", f"train.py --data-path {{data}} --epochs 2 -b 8 --print-freq 1 "
        f"{CPU} {FAST} --output-dir {{scratch}}/out", 143,
        r"interrupted: no epoch finished, so no checkpoint was saved",
        send=("SIGTERM", "[Epoch 0, iter: 0]"), group=True),
    Row("train SIGINT to the process group mid-step", f"train.py --data-path {{data}} --epochs 2 -b 8 --print-freq 1 "
        f"{CPU} {FAST} --output-dir {{scratch}}/out", 130,
        r"interrupted: no epoch finished, so no checkpoint was saved",
        send=("SIGINT", "[Epoch 0, iter: 0]"), group=True),
    Row("train SIGINT at the epoch boundary", f"tests/signal_at.py epoch-end SIGINT train.py --data-path {{data}} "
        f"--epochs 2 -b 8 {CPU} {FAST} --output-dir {{scratch}}/out", 130,
        r"interrupted: epoch 0 is saved in .*out/model_0: run the command again with --resume .*out/model_0 to "
        r"continue"),
    Row("train SIGINT during a save", f"tests/signal_at.py save SIGINT train.py --data-path {{data}} --epochs 2 -b 8 "
        f"{CPU} {FAST} --output-dir {{scratch}}/out", 130,
        r"interrupted: epoch 0 is saved in .*out/model_0: run the command again with --resume .*out/model_0 to "
        r"continue"),
    # tools/predict.py
    Row("predict hostile weights", f"tools/predict.py --pretrained {{evil_weights}} {CPU}", 1,
        rf"error: .*evil\.pdparams: it asks to run {HOSTILE_GLOBAL} while loading: refused.*"),
    Row("predict missing weights", f"tools/predict.py --pretrained {{scratch}}/none.pdparams {CPU}", 1,
        r"error: weights file not found: .*none\.pdparams"),
    Row("predict truncated weights", f"tools/predict.py --pretrained {{truncated_weights}} {CPU}", 1,
        r"error: cannot read .*truncated\.pdparams: truncated .*"),
    Row("predict an image as weights", f"tools/predict.py --pretrained {{image_weights}} {CPU}", 1,
        r"error: cannot read .*image\.pdparams: not a paddle\.save file .*"),
    Row("predict missing image", f"tools/predict.py --pretrained {{weights}} --img-path {{scratch}}/none.jpg {CPU}", 1,
        r"error: --img-path .*none\.jpg: No such file or directory"),
    Row("predict corrupt image", f"tools/predict.py --pretrained {{weights}} --img-path {{corrupt_image}} {CPU}", 1,
        r"error: cannot decode image .*broken\.jpg: .*"),
    Row("predict --topk 0", f"tools/predict.py --pretrained {{weights}} --topk 0 {CPU}", 2,
        r"error: argument --topk: .*"),
    Row("predict --crop-size 10", "tools/predict.py --pretrained {weights} --crop-size 10", 2,
        r"error: argument --crop-size: must be at least 63, got 10 .*"),
    Row("predict --device tpu", "tools/predict.py --pretrained {weights} --device tpu", 2,
        r"error: argument --device: expected cpu, gpu or gpu:N, got 'tpu' .*"),
    Row("predict SIGINT during start-up", f"tests/signal_at.py startup SIGINT tools/predict.py --pretrained "
        f"{{weights}} "
        f"{CPU}", 130, r"interrupted: stopped before the end"),
    # tools/export_model.py
    Row("export SIGINT during start-up", "tests/signal_at.py startup SIGINT tools/export_model.py --pretrained "
        "{weights} --model-dir {scratch}/m", 130, r"interrupted: stopped before the end"),
    Row("export SIGTERM after 2 s", "tools/export_model.py --pretrained {weights} --model-dir {scratch}/m --onnx",
        143, r"interrupted: (stopped before the end|nothing was written, .*/m is as it was)", send=("SIGTERM", 2.0)),
    Row("export hostile weights", "tools/export_model.py --pretrained {evil_weights} --model-dir {scratch}/m", 1,
        rf"error: .*evil\.pdparams: it asks to run {HOSTILE_GLOBAL}.*"),
    Row("export truncated weights", "tools/export_model.py --pretrained {truncated_weights} --model-dir "
        "{scratch}/m", 1, r"error: --pretrained: cannot read .*truncated\.pdparams: truncated .*"),
    Row("export over a directory that is not an export", "tools/export_model.py --pretrained {weights} "
        "--model-dir {precious_dir}", 1,
        r"error: --model-dir: .*precious holds files an export does not write \(notes\.txt\); .*"),
    Row("export --crop-size 10", "tools/export_model.py --pretrained {weights} --crop-size 10 --model-dir "
        "{scratch}/m", 2, r"error: argument --crop-size/--img-size: must be at least 63, got 10 .*"),
    # tools/quantize_model.py
    Row("quantize missing model dir", "tools/quantize_model.py --model-dir {scratch}/none --calib-data {data}/val "
        "--output {scratch}/int8", 1, r"error: --model-dir.*none.*"),
    Row("quantize truncated onnx", "tools/quantize_model.py --model-dir {truncated_model} --calib-data {data}/val "
        "--output {scratch}/int8", 1, r"error: .*inference\.onnx.*"),
    Row("quantize --calib-count 0", "tools/quantize_model.py --model-dir {model} --calib-data {data}/val "
        "--calib-count 0 --output {scratch}/int8", 2, r"error: argument --calib-count: .*"),
    # the batch runners
    Row("infer missing model dir", f"deploy/py_inference/infer.py --model-dir {{scratch}}/none {CPU}", 1,
        r"error: --model-dir.*none.*"),
    Row("infer truncated weights", f"deploy/py_inference/infer.py --model-dir {{truncated_model}} {CPU}", 1,
        r"error: .*inference\.pdiparams.*"),
    Row("infer --batch-size 0", "deploy/py_inference/infer.py --model-dir {model} --batch-size 0", 2,
        r"error: argument --batch-size: .*"),
    Row("infer no images", f"deploy/py_inference/infer.py --model-dir {{model}} --img-path {{empty_dir}} {CPU}", 1,
        r"error: .*no image.*"),
    Row("infer corrupt image", f"deploy/py_inference/infer.py --model-dir {{model}} --img-path {{corrupt_image}} {CPU}",
        1, r"error: cannot decode image .*broken\.jpg: .*"),
    Row("infer SIGINT during start-up", f"tests/signal_at.py startup SIGINT deploy/py_inference/infer.py --model-dir "
        f"{{model}} {CPU}", 130, r"interrupted: stopped before the end"),
    Row("onnx infer missing model dir", "deploy/onnx/infer.py --model-dir {scratch}/none", 1,
        r"error: --model-dir.*none.*"),
    Row("onnx infer truncated onnx", "deploy/onnx/infer.py --model-dir {truncated_model}", 1,
        r"error: .*inference\.onnx.*"),
    Row("onnx infer --topk 0", "deploy/onnx/infer.py --model-dir {model} --topk 0", 2,
        r"error: argument --topk: .*"),
    # the service and its client
    Row("serve missing model dir", "deploy/py_serving/web_service.py --model-dir {scratch}/none --port 18999", 1,
        r"error: .*none.*"),
    Row("serve --port 0", "deploy/py_serving/web_service.py --model-dir {model} --port 0", 1,
        r"error: --port: input should be greater than or equal to 1, got 0"),
    Row("client without a service", "deploy/py_serving/pipeline_http_client.py --url http://127.0.0.1:9/prediction "
        "--wait 1", 1, r"error: .*127\.0\.0\.1:9.*"),
    Row("client missing image", "deploy/py_serving/pipeline_http_client.py --img-path {scratch}/none.jpg --wait 1", 1,
        r"error: .*none\.jpg.*"),
    # tools/convert_torch_weights.py
    Row("convert missing --src", "tools/convert_torch_weights.py --src {scratch}/none.pth --dst {scratch}/w.pdparams",
        1, r"error: --src .*none\.pth: file not found"),
    Row("convert hostile .pdparams", "tools/convert_torch_weights.py --src {evil_weights} --dst {scratch}/w.pth", 1,
        rf"error: .*evil\.pdparams: it asks to run {HOSTILE_GLOBAL}.*"),
    Row("convert hostile .pth", "tools/convert_torch_weights.py --src {evil_pth} --dst {scratch}/w.pdparams", 1,
        rf"error: .*evil\.pth: it asks to run {HOSTILE_GLOBAL} while loading: refused.*", needs_torch=True),
    Row("predict hostile .pth", f"tools/predict.py --pretrained {{evil_pth}} {CPU}", 1,
        rf"error: .*evil\.pth: it asks to run {HOSTILE_GLOBAL} while loading: refused.*", needs_torch=True),
    Row("convert truncated .pdparams", "tools/convert_torch_weights.py --src {truncated_weights} --dst "
        "{scratch}/w.pth", 1, r"error: cannot read .*truncated\.pdparams: truncated .*"),
    # tools/plot_metrics.py
    Row("plot missing metrics", "tools/plot_metrics.py {scratch}/none.jsonl", 1,
        r"error: metrics file not found: .*none\.jsonl"),
    Row("plot empty metrics", "tools/plot_metrics.py {empty_metrics}", 1, r"error: .*empty\.jsonl: no records"),
    Row("plot truncated metrics", "tools/plot_metrics.py {truncated_metrics} --out {scratch}/m.png", 1,
        r"error: .*truncated\.jsonl:\d+: not a JSON record .*"),
    Row("plot binary metrics", "tools/plot_metrics.py {image_metrics} --out {scratch}/m.png", 1,
        r"error: .*image\.jsonl.*"),
    Row("plot records without fields", "tools/plot_metrics.py {odd_metrics} --out {scratch}/m.png", 1,
        r"error: .*odd\.jsonl:1: not a record of train\.py .*"),
    Row("plot into a missing directory", "tools/plot_metrics.py {run}/metrics.jsonl --out {scratch}/none/m.png", 1,
        r"error: --out .*none/m\.png: cannot write it \(No such file or directory\)"),
    # TIPC
    Row("tipc missing config", "bash test_tipc/test_train_inference_python.sh {scratch}/none.txt lite_train_lite_infer",
        2, r"error: .*none\.txt.*"),
    Row("tipc unknown mode", "bash test_tipc/test_train_inference_python.sh "
        "test_tipc/configs/AlexNet/train_infer_python.txt fast_mode", 2, r"error: .*fast_mode.*"),
]


class _Reduce:
    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _truncated_copy(source, target, size=4096):
    target.write_bytes(source.read_bytes()[:size])


@pytest.fixture(scope="module")
def world(module_tmp, lite_data, trained_run, exported_model):
    """Files that earlier commands wrote, and files a user or a stranger might pass."""
    w = module_tmp / "world"
    shutil.copytree(lite_data, w / "data")
    for split in ("train", "val"):
        shutil.copytree(lite_data, w / f"bad_{split}_data")
        (w / f"bad_{split}_data" / split / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    run = w / "run"  # a finished training run: hard links, no copies of 230 MB
    run.mkdir()
    for name in ("latest.pdparams", "latest.pdopt", "metrics.jsonl"):
        os.link(trained_run[0] / name, run / name)
    files = w / "files"
    files.mkdir()
    marker = module_tmp / "hostile-file-ran"  # outside the world, so that only the row that made it fails
    hostile = pickle.dumps(_Reduce(os.system, f"touch {marker}"), protocol=4)
    (files / "evil.pdparams").write_bytes(hostile)
    (files / "empty.pdparams").write_bytes(b"")
    if HAVE_TORCH:
        import torch

        torch.save({"features.0.weight": _Reduce(os.system, f"touch {marker}")}, files / "evil.pth")
    _truncated_copy(run / "latest.pdparams", files / "truncated.pdparams")
    shutil.copy(REPO_ROOT / "images" / "demo.jpg", files / "image.pdparams")
    for name, pdopt in (("evil_run", hostile), ("truncated_run", (run / "latest.pdopt").read_bytes()[:4096])):
        (w / name).mkdir()
        os.link(run / "latest.pdparams", w / name / "latest.pdparams")
        (w / name / "latest.pdopt").write_bytes(pdopt)
    (files / "a_file").write_text("not a directory\n")
    (w / "empty_dir").mkdir()
    (w / "precious").mkdir()
    (w / "precious" / "notes.txt").write_text("a user's file, not an export\n")
    (files / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (files / "empty.jsonl").write_text("")
    (files / "truncated.jsonl").write_text('{"type": "train", "loss": 1.0, "top1": 0.5, "top5": 1.0}\n{"type": "tr')
    shutil.copy(REPO_ROOT / "images" / "demo.jpg", files / "image.jsonl")
    (files / "odd.jsonl").write_text('["a list, not a record"]\n')
    shutil.copytree(exported_model, w / "model")
    shutil.copytree(exported_model, w / "truncated_model")
    for name in ("inference.pdiparams", "inference.onnx"):
        _truncated_copy(exported_model / name, w / "truncated_model" / name)
    places = {
        "data": w / "data", "bad_train_data": w / "bad_train_data", "bad_val_data": w / "bad_val_data",
        "run": run, "weights": run / "latest.pdparams", "evil_weights": files / "evil.pdparams",
        "empty_weights": files / "empty.pdparams", "truncated_weights": files / "truncated.pdparams",
        "image_weights": files / "image.pdparams", "evil_pth": files / "evil.pth", "evil_run": w / "evil_run",
        "truncated_run": w / "truncated_run",
        "a_file": files / "a_file", "empty_dir": w / "empty_dir", "precious_dir": w / "precious",
        "corrupt_image": files / "broken.jpg", "empty_metrics": files / "empty.jsonl",
        "truncated_metrics": files / "truncated.jsonl", "image_metrics": files / "image.jsonl",
        "odd_metrics": files / "odd.jsonl", "model": w / "model", "truncated_model": w / "truncated_model",
    }
    return w, marker, places


@pytest.fixture(scope="module")
def exported_model(trained_run, module_tmp):
    target = module_tmp / "export"
    run_script("tools/export_model.py", "--pretrained", trained_run[0] / "latest.pdparams", "--model-dir", target,
               "--onnx", "--device", "cpu")
    return target


def snapshot(root):
    """What a later command must leave as it is: each file's size, inode and mtime."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_row(row, places, scratch):
    """Run ``row``'s command from the repository root; returns (status, stdout, stderr)."""
    argv = shlex.split(row.command.format(scratch=scratch, **places))
    command = ["bash", *argv[1:]] if argv[0] == "bash" else [sys.executable, *argv]
    # This checkout's modules, not the editable install's: tools/ and deploy/ scripts otherwise import paddlevision
    # from wherever `pip install -e` pointed (/work/main), which makes a worktree's rows test another tree.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    # A session of its own: a group signal reaches the row's workers only, and a hang kills them all.
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, start_new_session=True)
    output = {"stdout": [], "stderr": []}
    trigger = row.send[1] if row.send and isinstance(row.send[1], str) else None
    seen = threading.Event()

    def read(stream, lines):
        for line in stream:
            lines.append(line)
            if trigger is not None and trigger in line:
                seen.set()
        seen.set()  # the end of the output: the trigger will not come, the row's assertions say why

    readers = [threading.Thread(target=read, args=(getattr(process, name), lines), daemon=True)
               for name, lines in output.items()]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + row.timeout
    if row.send:
        if trigger is not None:
            seen.wait(row.timeout)
        else:
            time.sleep(row.send[1])
        if process.poll() is None:
            if row.group:
                os.killpg(process.pid, getattr(signal, row.send[0]))
            else:
                process.send_signal(getattr(signal, row.send[0]))
    try:
        process.wait(max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"{row.name}: no end within {row.timeout} s\nstdout:\n{''.join(output['stdout'])}\n"
                    f"stderr:\n{''.join(output['stderr'])}")
    for reader in readers:
        reader.join(30)
    # As a shell reports it: a process ended by signal N (Python re-raises an unhandled SIGINT) gives 128 + N.
    status = 128 - process.returncode if process.returncode < 0 else process.returncode
    return status, "".join(output["stdout"]), "".join(output["stderr"])


HAVE_TORCH = importlib.util.find_spec("torch") is not None


@pytest.mark.parametrize("row", [
    pytest.param(row, marks=pytest.mark.skipif(row.needs_torch and not HAVE_TORCH, reason="writing a .pth needs torch"))
    for row in ROWS], ids=[row.name for row in ROWS])
def test_fault(row, world, tmp_path):
    w, marker, places = world
    marker.unlink(missing_ok=True)
    before = snapshot(w)
    status, out, err = run_row(row, places, tmp_path)
    shown = f"\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"
    assert "Traceback" not in out + err, shown
    lines = [line for line in err.splitlines() if line.startswith(("error:", "interrupted:"))]
    assert len(lines) == 1, f"expected one error or interrupted line{shown}"
    assert re.fullmatch(row.line, lines[0]), f"{lines[0]!r} does not match {row.line!r}{shown}"
    assert status == row.status, shown
    assert snapshot(w) == before, "a file that earlier commands wrote changed"
    assert not marker.exists(), "a hostile file ran its command"
    for path in tmp_path.rglob("*"):  # what the row wrote is whole or absent
        assert not path.name.startswith("."), f"half-written file left: {path}"
        if path.suffix in (".pdparams", ".pdopt"):
            safe_pickle.load(path)


def test_a_checkpoint_kept_after_a_failed_evaluation_resumes(world, tmp_path):
    """A truncated val image: the epoch's checkpoint exists, and --resume from it, with the
    image fixed, finishes the training."""
    _, _, places = world
    data = tmp_path / "data"
    shutil.copytree(places["bad_val_data"], data)
    out = tmp_path / "out"
    first = run_script("train.py", "--data-path", data, "--epochs", "2", "-b", "8", *CPU.split(), *FAST_SIZES,
                       "--output-dir", out, check=False, timeout=300)
    assert first.returncode == 1 and "epoch 0 is saved in" in first.stderr
    (data / "val" / "cat" / "broken.jpg").unlink()
    resumed = run_script("train.py", "--data-path", data, "--epochs", "2", "-b", "8", *CPU.split(), *FAST_SIZES,
                         "--output-dir", out, "--resume", out / "model_0", timeout=300)
    assert "[Epoch 1," in resumed.stdout and "[Epoch 0," not in resumed.stdout
    assert sorted(p.name for p in out.glob("model_*.pdparams")) == ["model_0.pdparams", "model_1.pdparams"]


def test_an_interrupted_run_resumes_from_what_it_named(world, tmp_path):
    _, _, places = world
    out = tmp_path / "out"
    row = Row("interrupted at the epoch boundary", f"tests/signal_at.py epoch-end SIGINT train.py --data-path "
              f"{{data}} --epochs 2 -b 8 {CPU} {FAST} --output-dir {out}", 130, "")
    status, _, err = run_row(row, places, tmp_path)
    assert status == 130
    resume = re.search(r"again with --resume (\S+) to continue", err).group(1)
    resumed = run_script("train.py", "--data-path", places["data"], "--epochs", "2", "-b", "8", *CPU.split(),
                         *FAST_SIZES, "--output-dir", out, "--resume", resume, timeout=300)
    assert "[Epoch 1," in resumed.stdout


def test_a_failed_checkpoint_write_is_one_line(world, tmp_path):
    """A full disk or a quota (here: a 100 MB file-size limit, under one weights file) ends
    the run with one line naming the checkpoint, not an OSError traceback."""
    _, _, places = world
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (10**8, 10**8))  # noqa: E731
    result = subprocess.run([sys.executable, "train.py", "--data-path", str(places["data"]), "--epochs", "1", "-b", "8",
                             *CPU.split(), *FAST_SIZES, "--output-dir", str(tmp_path / "out")], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert re.search(r"^error: cannot write the checkpoint .*out/model_0: File too large$", result.stderr, re.M)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["metrics.jsonl"]


def test_an_epoch_interrupted_in_its_evaluation_is_evaluated_on_resume(world, tmp_path):
    """Interrupted after its checkpoint, before its evaluation: --resume evaluates that
    epoch first, so the log has every epoch and best_model is that of an uninterrupted run."""
    _, _, places = world
    out = tmp_path / "out"
    row = Row("interrupted as the evaluation starts", f"tests/signal_at.py evaluation SIGINT train.py --data-path "
              f"{{data}} --epochs 2 -b 8 {CPU} {FAST} --output-dir {out}", 130, "")
    status, _, err = run_row(row, places, tmp_path)
    assert status == 130 and "epoch 0 is saved" in err, err[-3000:]
    run_script("train.py", "--data-path", places["data"], "--epochs", "2", "-b", "8", *CPU.split(), *FAST_SIZES,
               "--output-dir", out, "--resume", out, timeout=300)
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert [record["epoch"] for record in evals] == [0, 1]
    best = max(evals, key=lambda record: record["top1"])  # the first of equals, as train.py's strict ">" keeps
    assert json.loads((out / "best_model.json").read_text()) == {"epoch": best["epoch"], "acc1": best["top1"]}


def test_a_second_ctrl_c_does_not_cut_the_clean_up_short():
    """People press Ctrl-C again when the first seems slow. The second came as another
    KeyboardInterrupt inside the clean-up of the first (the loader's workers being joined):
    a traceback, and workers left behind."""
    interrupts = Interrupts().install()
    try:
        interrupts.release()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        try:
            os.kill(os.getpid(), signal.SIGINT)  # during the clean-up
            time.sleep(0.1)  # the handler has run by now
        except KeyboardInterrupt:
            pytest.fail("the second Ctrl-C raised inside the clean-up of the first")
        assert interrupts.exit_status == 130
    finally:
        for signum in Interrupts.SIGNALS:
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
