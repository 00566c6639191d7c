"""Data-parallel training and evaluation with two CPU processes (gloo), started the way
users start them: ``python -m paddle.distributed.launch --nproc_per_node 2 train.py``."""

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import paddle
import pytest

import utils
from conftest import FAST_SIZES, REPO_ROOT, run_script
from paddlevision.device import DeviceError, device_for_process, distributed_backend
from paddlevision.models import AlexNet

SUMMARY = re.compile(r"^ \* Acc@1 \d\.\d{3} Acc@5 \d\.\d{3}$", re.M)


def launch(tmp_path, *train_args, nproc=2):
    return run_script("-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc), "--log_dir",
                      tmp_path / "launch_logs", "train.py", "--device", "cpu", *train_args, timeout=900)


def weights(path):
    return {k: v.numpy() for k, v in paddle.load(str(path)).items() if k != "__paddlevision_meta__"}


def test_two_process_training_epoch(lite_data, tmp_path):
    out = tmp_path / "out2"
    result = launch(tmp_path, "--data-path", lite_data, "--epochs", "1", "-b", "4", "-j", "0", "--output-dir", out,
                    *FAST_SIZES)
    rank0_log = (tmp_path / "launch_logs" / "workerlog.0").read_text()
    rank1_log = (tmp_path / "launch_logs" / "workerlog.1").read_text()
    assert len(SUMMARY.findall(rank0_log)) == 1
    assert not SUMMARY.search(rank1_log) and "[Epoch" not in rank1_log
    assert SUMMARY.search(result.stdout)  # the launcher echoes rank 0
    # 16 images, 4 per process: 2 global steps, both logged by rank 0 alone.
    assert len(re.findall(r"^\[Epoch 0, iter: \d\]", rank0_log, re.M)) == 2
    assert (out / "latest.pdparams").is_file()


def test_two_process_evaluation_equals_one_process_on_odd_sized_set(trained_run, lite_data, tmp_path):
    weights_file = trained_run[0] / "latest.pdparams"
    data = tmp_path / "data"
    shutil.copytree(lite_data, data)
    next((data / "val" / "rocket").iterdir()).unlink()  # 15 images: not a multiple of 2 (or of the batch)
    common = ["--test-only", "--data-path", data, "--pretrained", weights_file, "-b", "4", "-j", "0", *FAST_SIZES]
    single = run_script("train.py", "--device", "cpu", *common, "--output-dir", tmp_path / "one")
    launch(tmp_path, *common, "--output-dir", tmp_path / "two")
    rank0_log = (tmp_path / "launch_logs" / "workerlog.0").read_text()
    assert SUMMARY.findall(rank0_log) == SUMMARY.findall(single.stdout)
    assert len(SUMMARY.findall(single.stdout)) == 1 and "[Epoch" not in rank0_log
    # Beyond the printed digits: the gathered counts are the single process's, loss to rounding.
    one, two = [json.loads((tmp_path / run / "metrics.jsonl").read_text()) for run in ("one", "two")]
    assert one["num_samples"] == two["num_samples"] == 15
    assert (one["top1"], one["top5"]) == (two["top1"], two["top5"])
    assert abs(one["loss"] - two["loss"]) < 1e-6


def test_two_processes_train_to_the_same_weights_as_one(lite_data, tmp_path):
    """Same seed, dropout off, same global batch (2 x 4 against 1 x 8): the weights after
    the epoch's two SGD steps agree to float rounding."""
    common = ["--data-path", lite_data, "--epochs", "1", "-j", "0", "--seed", "7", "--dropout", "0", "--lr", "0.05",
              "--print-freq", "100", *FAST_SIZES]
    run_script("train.py", "--device", "cpu", *common, "-b", "8", "--output-dir", tmp_path / "one")
    launch(tmp_path, *common, "-b", "4", "--output-dir", tmp_path / "two")
    one, two = weights(tmp_path / "one" / "latest.pdparams"), weights(tmp_path / "two" / "latest.pdparams")
    assert set(one) == set(two)
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=0, atol=1e-5, err_msg=name)

    paddle.seed(7)
    initial = AlexNet(num_classes=4, dropout=0.0).state_dict()
    assert np.abs(one["classifier.6.weight"] - initial["classifier.6.weight"].numpy()).max() > 1e-4


def test_two_nodes_with_a_rendezvous_master(lite_data, tmp_path):
    """The multi-node form, with both "nodes" on this machine: two launchers meeting at
    ``--master``, one process each."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "paddle.distributed.launch", "--master", f"127.0.0.1:{port}", "--nnodes", "2",
             "--rank", str(rank), "--nproc_per_node", "1", "--log_dir", str(tmp_path / f"node{rank}"), "train.py",
             "--device", "cpu", "--data-path", str(lite_data), "--epochs", "1", "-b", "4", "-j", "0",
             "--output-dir", str(tmp_path / "out"), *FAST_SIZES],
            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for rank in (0, 1)
    ]
    assert [node.wait(timeout=600) for node in nodes] == [0, 0]
    logs = [(tmp_path / f"node{rank}" / "workerlog.0").read_text() for rank in (0, 1)]
    assert len(SUMMARY.findall(logs[0])) == 1 and not SUMMARY.search(logs[1])
    assert (tmp_path / "out" / "latest.pdparams").is_file()


def test_two_process_resume_equals_uninterrupted_run(lite_data, tmp_path):
    """Each rank saves and restores its own random streams (dropout differs per rank)."""
    common = ["--data-path", lite_data, "-b", "4", "-j", "0", "--seed", "5", "--print-freq", "100", "--lr", "0.001",
              *FAST_SIZES]
    launch(tmp_path, *common, "--epochs", "2", "--output-dir", tmp_path / "straight")
    straight = weights(tmp_path / "straight" / "latest.pdparams")
    shutil.rmtree(tmp_path / "straight")  # 0.9 GB of checkpoints, not needed any more
    launch(tmp_path, *common, "--epochs", "1", "--output-dir", tmp_path / "resumed")
    launch(tmp_path, *common, "--epochs", "2", "--output-dir", tmp_path / "resumed", "--resume", tmp_path / "resumed")
    resumed = weights(tmp_path / "resumed" / "latest.pdparams")
    for name in straight:
        np.testing.assert_array_equal(resumed[name], straight[name], err_msg=name)


@pytest.mark.parametrize(("device", "world_size", "launcher_gpus", "expected"), [
    ("gpu", 4, "2", "gpu"),      # Paddle maps plain gpu to the launcher's card
    ("gpu:2", 4, "2", "gpu"),    # the card the launcher gave this process anyway
    ("gpu:1", 1, None, "gpu:1"),  # one process: any card
    ("cpu", 2, None, "cpu"),
])
def test_device_for_process(device, world_size, launcher_gpus, expected):
    assert device_for_process(device, world_size, launcher_gpus) == expected


def test_single_process_launch_keeps_the_launchers_card():
    """``launch --gpus 3 train.py --device gpu:0``: one process, FLAGS_selected_gpus=3 (the
    collective controller sets it for a single replica too)."""
    with pytest.raises(DeviceError, match=r"--device gpu:0: paddle.distributed.launch gave this process card 3 "):
        device_for_process("gpu:0", 1, "3")
    assert device_for_process("gpu:3", 1, "3") == "gpu"
    assert device_for_process("gpu", 1, "3") == "gpu"


def test_single_process_launch_refusal_through_train_py(lite_data):
    """The environment the launcher gives its one process on a GPU machine; the refusal
    comes before anything asks for the (absent) GPU."""
    env = {"FLAGS_selected_gpus": "3", "PADDLE_TRAINER_ID": "0", "PADDLE_TRAINERS_NUM": "1",
           "PADDLE_LOCAL_SIZE": "1", "PADDLE_GLOBAL_SIZE": "1"}
    result = run_script("train.py", "--device", "gpu:0", "--data-path", lite_data, env=env, check=False, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: --device gpu:0: paddle.distributed.launch gave this process card 3")


# What launch/controllers/collective.py gives rank 0 of two on a machine with GPUs: a
# card, and no PADDLE_DISTRI_BACKEND (it sets gloo only when it selected no devices).
LAUNCHER_ENV_WITH_GPUS = {
    "PADDLE_MASTER": "127.0.0.1:6070", "PADDLE_GLOBAL_SIZE": "2", "PADDLE_LOCAL_SIZE": "2", "PADDLE_GLOBAL_RANK": "0",
    "PADDLE_LOCAL_RANK": "0", "PADDLE_NNODES": "1", "PADDLE_CURRENT_ENDPOINT": "127.0.0.1:6071",
    "PADDLE_TRAINER_ID": "0", "PADDLE_TRAINERS_NUM": "2", "PADDLE_RANK_IN_NODE": "0",
    "PADDLE_TRAINER_ENDPOINTS": "127.0.0.1:6071,127.0.0.1:6072", "FLAGS_selected_gpus": "0",
}
LAUNCHER_ENV_WITHOUT_GPUS = {**{k: v for k, v in LAUNCHER_ENV_WITH_GPUS.items() if k != "FLAGS_selected_gpus"},
                             "PADDLE_DISTRI_BACKEND": "gloo"}


@pytest.mark.parametrize(("device", "environ", "backend"), [
    ("cpu", LAUNCHER_ENV_WITH_GPUS, "gloo"),  # Paddle's auto would pick NCCL and the launcher's GPU
    ("cpu", LAUNCHER_ENV_WITHOUT_GPUS, "gloo"),
    ("gpu", LAUNCHER_ENV_WITH_GPUS, None),  # Paddle's choice: NCCL
    ("gpu:0", LAUNCHER_ENV_WITH_GPUS, None),
])
def test_distributed_backend_follows_the_device(device, environ, backend):
    assert distributed_backend(device, environ) == backend


@pytest.mark.parametrize(("device", "requested"), [("cpu", "nccl"), ("gpu", "gloo")])
def test_distributed_backend_refuses_one_for_the_other_device(device, requested):
    with pytest.raises(DeviceError, match=f"PADDLE_DISTRI_BACKEND={requested}"):
        distributed_backend(device, {**LAUNCHER_ENV_WITH_GPUS, "PADDLE_DISTRI_BACKEND": requested})


def test_cpu_processes_beside_gpus_join_over_gloo_and_stay_on_the_cpu(monkeypatch):
    """init_parallel_env on a CUDA build sets the launcher's GPU as the expected place
    (distributed/parallel.py: _set_expected_place(CUDAPlace(device_id))) unless the
    backend is gloo; the device is set again after it."""
    calls = []
    for key, value in LAUNCHER_ENV_WITH_GPUS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PADDLE_DISTRI_BACKEND", raising=False)
    monkeypatch.setattr(utils, "get_world_size", lambda: 2)
    monkeypatch.setattr(utils, "get_rank", lambda: 0)
    monkeypatch.setattr(utils.dist, "init_parallel_env",
                        lambda: calls.append(("init_parallel_env", os.environ.get("PADDLE_DISTRI_BACKEND"))))
    monkeypatch.setattr(utils.paddle, "set_device", lambda device: calls.append(("set_device", device)))
    args = argparse.Namespace(device="cpu")
    utils.init_distributed_mode(args)
    assert calls == [("init_parallel_env", "gloo"), ("set_device", "cpu")]
    assert args.distributed and args.world_size == 2 and args.rank == 0


@pytest.mark.parametrize("launcher_gpus", ["2", None])
def test_device_for_process_refuses_one_card_for_all_ranks(launcher_gpus):
    with pytest.raises(ValueError, match="--device gpu:1: under paddle.distributed.launch every process would use "
                                         "card 1"):
        device_for_process("gpu:1", 4, launcher_gpus)


def test_launch_refuses_gpu_n(lite_data, tmp_path):
    """Through the launcher, whose environment says how many processes there are. The
    launcher stops the other process when the first one exits, maybe before it printed."""
    result = run_script("-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", tmp_path / "logs",
                        "train.py", "--device", "gpu:1", "--data-path", lite_data, timeout=300, check=False)
    assert result.returncode != 0
    logs = [(tmp_path / "logs" / f"workerlog.{rank}").read_text() for rank in (0, 1)]
    refusals = [log for log in logs
                if "error: --device gpu:1: under paddle.distributed.launch every process would use card 1" in log]
    assert refusals and all("Traceback" not in log for log in refusals)


# --- --skip-bad-images under DataParallel: every rank takes every step -------------------

def launch_within(tmp_path, script_args, timeout, nproc=2):
    """``paddle.distributed.launch`` under a timeout that counts as a failure: a hang in a
    collective is the bug these tests guard against. The launcher puts its workers in
    their own sessions, so on timeout they are found by a marker in their environment."""
    marker = f"{uuid.uuid4().hex}"
    command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc), "--log_dir",
               str(tmp_path / "launch_logs"), *map(str, script_args)]
    # PYTHONPATH: a script outside the repository (a test's driver) imports train.py and utils as the scripts do.
    launcher = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, "PADDLEVISION_TEST_RUN": marker,
                                                            "PYTHONPATH": str(REPO_ROOT)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = launcher.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stdout = stderr = None
    finally:
        # Also after a failure: a worker that aborted can leave its data loader's processes behind.
        for pid in processes_with_environment(f"PADDLEVISION_TEST_RUN={marker}"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if stdout is None:
        launcher.communicate()
        pytest.fail(f"{' '.join(command)} did not finish within {timeout} s")
    logs = [(tmp_path / "launch_logs" / f"workerlog.{rank}").read_text() for rank in range(nproc)]
    assert launcher.returncode == 0, "\n".join([stderr, *logs])
    return stdout, logs


def processes_with_environment(entry):
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if entry.encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
    return found


def corrupt(path):
    path.write_bytes(b"\xff\xd8\xff\xe0 truncated")


def distributed_batches(num_samples, batch_size, nproc, epoch=0):
    """Each rank's batches (sample indices) as train.py's DistributedBatchSampler gives them."""
    per_rank = []
    for rank in range(nproc):
        sampler = paddle.io.DistributedBatchSampler(range(num_samples), batch_size=batch_size, num_replicas=nproc,
                                                    rank=rank, shuffle=True)
        sampler.set_epoch(epoch)
        per_rank.append(list(sampler))
    return per_rank


def test_skipping_a_whole_batch_on_one_rank_does_not_hang_train_py(lite_data, tmp_path):
    """train.py as users launch it (default workers): in the first step rank 1 can read none of
    its images, and in the second rank 0 only one of its two."""
    data = tmp_path / "data"
    shutil.copytree(lite_data, data)
    from paddlevision.datasets import ImageFolder

    samples = ImageFolder(data / "train").samples
    rank0, rank1 = distributed_batches(len(samples), 2, 2)
    bad = [samples[i][0] for i in (*rank1[0], rank0[1][0])]
    for path in bad:
        corrupt(Path(path))
    stdout, logs = launch_within(tmp_path, ["train.py", "--device", "cpu", "--data-path", data, "--epochs", "1",
                                            "-b", "2", "--skip-bad-images", "--output-dir", tmp_path / "out",
                                            *FAST_SIZES], timeout=600)
    assert "[Epoch 0] training: skipped 3 unreadable images (--skip-bad-images)" in logs[0]
    assert len(SUMMARY.findall(logs[0])) == 1
    assert (tmp_path / "out" / "latest.pdparams").is_file()
    assert all("Traceback" not in log for log in logs)


LOCKSTEP_DRIVER = """
import argparse, json, sys
import numpy as np, paddle
import train, utils
from paddlevision.datasets import ImageFolder, ImageLoader
from paddlevision.models import AlexNet
from presets import ClassificationPresetEval

root, out, plan = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
args = argparse.Namespace(device="cpu")
paddle.set_device("cpu")
utils.init_distributed_mode(args)
# plan: per step, per rank, sample indices; one process takes each step's whole global batch.
batches = [sum(step, []) for step in plan] if args.world_size == 1 else [step[args.rank] for step in plan]
dataset = ImageFolder(root, ClassificationPresetEval(crop_size=64, resize_size=72))
loader = ImageLoader(dataset, batches, num_workers=0, skip_bad_images=True)
paddle.seed(0)
model = AlexNet(num_classes=4, dropout=0.0)
optimizer = paddle.optimizer.Momentum(learning_rate=0.02, momentum=0.9, weight_decay=1e-4,
                                      parameters=model.parameters())
train.train_one_epoch(paddle.DataParallel(model) if args.distributed else model, paddle.nn.CrossEntropyLoss(),
                      optimizer, loader, 0, 100, utils.MetricsWriter(None))
np.savez(f"{out}/rank{args.rank}_of_{args.world_size}.npz", **{k: v.numpy() for k, v in model.state_dict().items()})
"""


def test_ranks_with_unreadable_batches_stay_equal_and_step_as_one_process(lite_data, tmp_path):
    """Step 0: rank 1's whole batch is unreadable; step 1: one of rank 0's two images. Both
    ranks end with equal weights, and with those of one process taking each step's readable
    images as one batch (the mean loss over 2, then over 3 images)."""
    data = tmp_path / "data"
    shutil.copytree(lite_data / "train", data)
    from paddlevision.datasets import ImageFolder

    samples = ImageFolder(data).samples
    plan = [[[0, 1], [4, 5]], [[2, 3], [8, 9]], [[12, 13], [6, 14]]]
    for index in (4, 5, 3):
        corrupt(Path(samples[index][0]))
    driver = tmp_path / "driver.py"
    driver.write_text(LOCKSTEP_DRIVER)
    args = [data, tmp_path, json.dumps(plan)]
    run_script(driver, *args, timeout=300, env={"PYTHONPATH": str(REPO_ROOT)})
    launch_within(tmp_path, [driver, *args], timeout=300)
    one, rank0, rank1 = (np.load(tmp_path / name) for name in ("rank0_of_1.npz", "rank0_of_2.npz", "rank1_of_2.npz"))
    for name in one.files:
        np.testing.assert_array_equal(rank1[name], rank0[name], err_msg=name)
        np.testing.assert_allclose(rank0[name], one[name], rtol=0, atol=1e-5, err_msg=name)
    paddle.seed(0)
    initial = AlexNet(num_classes=4, dropout=0.0).state_dict()["classifier.6.weight"].numpy()
    assert np.abs(one["classifier.6.weight"] - initial).max() > 1e-4  # the steps moved the weights
