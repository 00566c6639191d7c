"""Data-parallel training and evaluation with two CPU processes (gloo), started the way
users start them: ``python -m paddle.distributed.launch --nproc_per_node 2 train.py``."""

import json
import re
import shutil
import socket
import subprocess
import sys

import numpy as np
import paddle
import pytest

from conftest import FAST_SIZES, REPO_ROOT, run_script
from paddlevision.device import device_for_process
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
