"""test_tipc/*.sh: config validation, failure reporting, the device decisions (on a
faked GPU count), and the reference repository's own config.

The shipped config's full lite chain runs in .ci/run; most tests here use stand-in
scripts and take seconds. The reference-config tests run the real chain (about 100 s each).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "test_tipc" / "configs" / "AlexNet" / "train_infer_python.txt"
TEST_SCRIPT = "test_tipc/test_train_inference_python.sh"
SUMMARY = re.compile(r"^(\d+) succeeded, (\d+) failed$", re.MULTILINE)

# Stand-ins: a trainer that writes the weights file train.py would, an exporter that
# writes a model directory, and an inference script that fails like a broken runner.
FAKE_TRAIN = """\
import os, sys
out = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--output-dir="))
os.makedirs(out, exist_ok=True)
open(os.path.join(out, "latest.pdparams"), "wb").close()
print("fake training done")
"""
FAKE_EXPORT = """\
import os, sys
out = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--save-inference-dir="))
os.makedirs(out, exist_ok=True)
"""
FAKE_INFER = """\
import sys
print("error: cannot load the model", file=sys.stderr)
sys.exit(1)
"""


def run_tipc(script, config, mode, tmp_path, timeout=300, python=None, env=None):
    """Run a TIPC script as a user would; PYTHON is PYTHON if given, else unset; ``env``
    adds to the environment."""
    python_dir = os.path.dirname(sys.executable)
    env = {
        **os.environ,
        "PATH": python_dir + os.pathsep + os.environ.get("PATH", ""),
        "TIPC_OUTPUT_DIR": str(tmp_path / "output"),
        **(env or {}),
    }
    env.pop("PYTHON", None)
    if python is not None:
        env["PYTHON"] = str(python)
    return subprocess.run(
        ["bash", script, str(config), mode], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def config_lines():
    return CONFIG.read_text().splitlines()


def write_config(tmp_path, lines):
    path = tmp_path / "config.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def set_value(lines, key, value, last=False):
    """Replace the value of the first (or last) line with KEY."""
    indices = [i for i, line in enumerate(lines) if line.split(":", 1)[0] == key]
    index = indices[-1] if last else indices[0]
    lines[index] = f"{key}:{value}"
    return index


@pytest.mark.parametrize("script", [TEST_SCRIPT, "test_tipc/prepare.sh"])
def test_unknown_mode_is_refused(script, tmp_path):
    result = run_tipc(script, CONFIG, "lite_train_quick_infer", tmp_path)
    assert result.returncode == 2
    assert "unknown mode 'lite_train_quick_infer'" in result.stderr
    assert "Run " not in result.stdout
    assert not (tmp_path / "output").exists()


def test_shipped_config_validates(tmp_path):
    result = run_tipc("test_tipc/prepare.sh", CONFIG, "lite_train_lite_infer", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lite data in ./lite_data" in result.stdout


def _no_colon(lines):
    lines[6] = "--epochs lite_train_lite_infer=1"
    return 7, "malformed line, expected key:value"


def _wrong_header(lines):
    lines[22] = "===========================eval==========================="
    return 23, "expected the section header"


def _shifted(lines):
    del lines[4]  # a config without the device line: everything below moves up
    lines.append("null:null")
    return 23, "expected the section header"


def _missing_script(lines):
    return set_value(lines, "norm_train", "no_such_train.py --seed=0") + 1, "script 'no_such_train.py' not found"


def _unknown_mode_key(lines):
    return set_value(lines, "--epochs", "lite_train_lite_infr=1|whole_train_whole_infer=90") + 1, "known mode"


def _empty_alternative(lines):
    return set_value(lines, "gpu_list", "0||0,1") + 1, "empty alternative"


def _mode_pairs_on_a_loop_line(lines):
    return set_value(lines, "--cpu-threads", "lite_train_lite_infer=2") + 1, "mode=value pairs are not read"


@pytest.mark.parametrize(
    "corrupt",
    [_no_colon, _wrong_header, _shifted, _missing_script, _unknown_mode_key, _empty_alternative, _mode_pairs_on_a_loop_line],
)
def test_bad_config_names_the_line(corrupt, tmp_path):
    lines = config_lines()
    line_number, message = corrupt(lines)
    config = write_config(tmp_path, lines)
    result = run_tipc(TEST_SCRIPT, config, "lite_train_lite_infer", tmp_path)
    assert result.returncode == 2
    assert f"{config}:{line_number}: " in result.stderr
    assert message in result.stderr
    # The message quotes the offending line itself.
    assert f"'{lines[line_number - 1]}'" in result.stderr
    assert "Run " not in result.stdout


def test_failed_inference_fails_the_run(tmp_path):
    for name, text in (("fake_train.py", FAKE_TRAIN), ("fake_export.py", FAKE_EXPORT), ("fake_infer.py", FAKE_INFER)):
        (tmp_path / name).write_text(text)
    lines = config_lines()
    set_value(lines, "gpu_list", "0|0,1")
    set_value(lines, "norm_train", tmp_path / "fake_train.py")
    set_value(lines, "eval", "null")
    set_value(lines, "norm_export", tmp_path / "fake_export.py")
    set_value(lines, "inference", tmp_path / "fake_infer.py")
    set_value(lines, "--use-gpu", "False")
    set_value(lines, "--use-mkldnn", "True")
    config = write_config(tmp_path, lines)

    result = run_tipc(TEST_SCRIPT, config, "lite_train_lite_infer", tmp_path)
    output = tmp_path / "output"
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"^Run successfully with command - python \S+fake_train\.py .*--epochs=1", result.stdout, re.M)
    assert re.search(r"^Run failed with command - python \S+fake_infer\.py --use-gpu=False .*!$", result.stdout, re.M)
    # The failing command's output is in its own log, and its end is shown right away.
    infer_log = output / "norm_train_gpus_0_autocast_null" / (
        "python_infer_cpu_usemkldnn_True_threads_2_precision_fp32_batchsize_1.log"
    )
    assert "cannot load the model" in infer_log.read_text()
    assert "cannot load the model" in result.stderr

    summary = SUMMARY.findall(result.stdout)
    assert len(summary) == 1 and int(summary[0][1]) > 0
    assert result.stdout.rstrip().splitlines()[-1] == f"{summary[0][0]} succeeded, {summary[0][1]} failed"
    status_lines = (output / "results_python.log").read_text().splitlines()
    assert status_lines[-1] == result.stdout.rstrip().splitlines()[-1]
    run_lines = [line for line in result.stdout.splitlines() if line.startswith("Run ")]
    assert run_lines == status_lines[:-1]
    assert sum(line.startswith("Run failed") for line in run_lines) == int(summary[0][1])

    gpu_check = "import paddle; print(paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0)"
    if subprocess.run([sys.executable, "-c", gpu_check], capture_output=True, text=True).stdout.strip() == "False":
        # Without a GPU: "0" is one CPU process, "0,1" two gloo processes on the CPU.
        assert re.search(r"^Run successfully with command - python \S+fake_train\.py --device=cpu ", result.stdout, re.M)
        assert re.search(
            r"^Run successfully with command - python -m paddle\.distributed\.launch --nproc_per_node 2 "
            r"--log_dir \S+/norm_train_gpus_0,1_autocast_null/dist_logs \S+fake_train\.py --device=cpu ",
            result.stdout,
            re.M,
        )


# Real (untrained) AlexNet weights, so that tools/predict.py runs, and an inference
# script that succeeds but disagrees with it about images/demo.jpg.
FAKE_TRAIN_REAL_WEIGHTS = """\
import os, sys
import paddle
from paddlevision.models import get_model
out = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--output-dir="))
os.makedirs(out, exist_ok=True)
paddle.seed(0)
paddle.save(get_model("alexnet", num_classes=4).state_dict(), os.path.join(out, "latest.pdparams"))
"""
FAKE_INFER_WRONG_CLASS = """\
import sys
img = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--img-path="))
print(f"image_name: {img}, class_id: 999, prob: 0.5")
"""


def fake_chain_lines(tmp_path, train, export, infer, gpu_list, use_gpu):
    """The shipped config with training, export and inference replaced by the given
    scripts' texts (written to tmp_path), evaluation off and inference at batch 1."""
    for name, text in (("fake_train.py", train), ("fake_export.py", export), ("fake_infer.py", infer)):
        (tmp_path / name).write_text(text)
    lines = config_lines()
    set_value(lines, "gpu_list", gpu_list)
    set_value(lines, "norm_train", tmp_path / "fake_train.py")
    set_value(lines, "eval", "null")
    set_value(lines, "norm_export", tmp_path / "fake_export.py")
    set_value(lines, "inference", tmp_path / "fake_infer.py")
    set_value(lines, "--use-gpu", use_gpu)
    set_value(lines, "--use-mkldnn", "True")
    set_value(lines, "--batch-size", "1", last=True)  # the inference batch size
    return lines


def test_inconsistent_inference_fails_the_check(tmp_path):
    lines = fake_chain_lines(tmp_path, FAKE_TRAIN_REAL_WEIGHTS.format(repo=str(REPO_ROOT)), FAKE_EXPORT,
                             FAKE_INFER_WRONG_CLASS, gpu_list="-1", use_gpu="False")
    config = write_config(tmp_path, lines)

    result = run_tipc(TEST_SCRIPT, config, "lite_train_lite_infer", tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"^Run successfully with command - python tools/predict\.py ", result.stdout, re.M)
    failed = [line for line in result.stdout.splitlines() if line.startswith("Run failed")]
    assert len(failed) == 1 and failed[0].startswith("Run failed with command - consistency check: ")
    assert "gave '999 0.5'" in failed[0]
    assert result.stdout.rstrip().splitlines()[-1] == "4 succeeded, 1 failed"


@pytest.mark.parametrize(
    "not_a_config, message",
    [
        ("README.md", ":1: expected the section header '===========================train_params"),
        ("test_tipc/configs/AlexNet/model_linux_gpu_normal_normal_serving_python_linux_gpu_cpu.txt", " lines, expected 51"),
    ],
)
def test_a_file_that_is_not_a_tipc_config_is_refused(not_a_config, message, tmp_path):
    result = run_tipc(TEST_SCRIPT, REPO_ROOT / not_a_config, "lite_train_lite_infer", tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {REPO_ROOT / not_a_config}") and message in result.stderr
    assert "Run " not in result.stdout


def test_whole_infer_without_a_model_is_refused(tmp_path):
    lines = config_lines()
    line_number = set_value(lines, "infer_model", "null") + 1
    config = write_config(tmp_path, lines)
    result = run_tipc("test_tipc/prepare.sh", config, "whole_infer", tmp_path)
    assert result.returncode == 2
    assert f"{config}:{line_number}: whole_infer needs weights or an exported model" in result.stderr
    assert not (REPO_ROOT / "null").exists()


def test_missing_python_is_named(tmp_path):
    lines = config_lines()
    set_value(lines, "python", "python3.7-not-here")
    config = write_config(tmp_path, lines)
    result = run_tipc(TEST_SCRIPT, config, "lite_train_lite_infer", tmp_path)
    assert result.returncode == 2
    assert f"{config}:3: 'python3.7-not-here' is not a command here; set PYTHON" in result.stderr
    assert "Run " not in result.stdout


# --- device decisions: functions of their inputs, called with a faked GPU count -------


def shell_function(name, *args, cuda_visible_devices=None):
    """Call a function of test_tipc/common_func.sh in a fresh bash, with python as PYTHON_BIN
    and CUDA_VISIBLE_DEVICES set as given (unset for None)."""
    script = f'source test_tipc/common_func.sh; PYTHON_BIN=python; {name} "$@"'
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    if cuda_visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
    return subprocess.run(
        ["bash", "-c", script, "bash", *map(str, args)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30,
        env=env,
    )


@pytest.mark.parametrize(
    "entry, device_value, num_gpus, expected",
    [
        ("0", "gpu", 1, "gpu"),
        ("0,1", "gpu", 2, "gpu"),
        ("0", "True", 1, "gpu"),
        ("0,1", "gpu", 1, "cpu card 1 is not one of the 1 visible GPU(s)"),
        ("1", "gpu", 1, "cpu card 1 is not one of the 1 visible GPU(s)"),
        ("0,1,2,3", "gpu", 2, "cpu card 2 is not one of the 2 visible GPU(s)"),
        ("0", "gpu", 0, "cpu no GPU on this machine"),
        ("-1", "gpu", 2, "cpu"),
        ("0", "cpu", 2, "cpu"),
        ("0,1", "False", 2, "cpu"),
    ],
)
def test_gpu_list_entry_device(entry, device_value, num_gpus, expected):
    result = shell_function("entry_device", entry, device_value, num_gpus)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


@pytest.mark.parametrize(
    "device, entry, num_gpus, processes, mask, expected",
    [
        ("gpu", "0,1", 2, 2, None, "python -m paddle.distributed.launch --gpus 0,1 --log_dir D"),
        ("gpu", "0", 1, 1, None, "env CUDA_VISIBLE_DEVICES=0 python"),
        ("gpu", "2,3", 4, 1, None, "env CUDA_VISIBLE_DEVICES=2 python"),
        # Entries count the visible GPUs: through the user's mask to the cards CUDA names.
        ("gpu", "0,1", 2, 2, "2,3", "python -m paddle.distributed.launch --gpus 2,3 --log_dir D"),
        ("gpu", "1", 2, 1, "2,3", "env CUDA_VISIBLE_DEVICES=3 python"),
        ("gpu", "0", 2, 1, "GPU-5d1e,GPU-77a0", "env CUDA_VISIBLE_DEVICES=GPU-5d1e python"),
        ("gpu", "0,1", 2, 2, "all", "python -m paddle.distributed.launch --gpus 0,1 --log_dir D"),
        ("cpu", "0,1", 0, 2, None, "python -m paddle.distributed.launch --nproc_per_node 2 --log_dir D"),
        # Beside GPUs the launcher hands each process a GPU; train.py asks for gloo itself.
        ("cpu", "0,1", 2, 2, "2,3", "python -m paddle.distributed.launch --nproc_per_node 2 --log_dir D"),
        ("cpu", "-1", 2, 1, None, "python"),
        ("cpu", "0", 0, 1, None, "python"),
    ],
)
def test_entry_launcher(device, entry, num_gpus, processes, mask, expected):
    result = shell_function("entry_launcher", device, entry, num_gpus, processes, "D", cuda_visible_devices=mask)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected.split(" ")


SELECTED_BY_THE_LAUNCHER = """
import sys
from paddle.distributed.launch.context.device import Device
print(",".join(Device.parse_device().get_selected_devices(sys.argv[1])))
"""


@pytest.mark.parametrize("mask, entry", [("2,3", "0,1"), ("4,6,7", "1,2"), ("GPU-5d1e,GPU-77a0", "1")])
def test_launcher_reads_the_mapped_cards_as_the_entry(mask, entry):
    """Paddle's own launcher code (on CPU; it parses CUDA_VISIBLE_DEVICES without CUDA)
    turns the --gpus the script passes back into the entry's positions among the visible GPUs."""
    words = shell_function("entry_launcher", "gpu", entry, 8, 2, "D", cuda_visible_devices=mask).stdout.split()
    gpus = words[words.index("--gpus") + 1]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": mask}
    selected = subprocess.run([sys.executable, "-c", SELECTED_BY_THE_LAUNCHER, gpus], capture_output=True, text=True,
                              env=env, timeout=120)
    assert selected.returncode == 0, selected.stderr
    assert selected.stdout.strip() == entry


def test_entry_launcher_refuses_more_cpu_processes_than_gpus():
    # paddle.distributed.launch would index the one visible GPU by rank 1 (IndexError).
    result = shell_function("entry_launcher", "cpu", "0,1", 1, 2, "D")
    assert result.returncode == 1
    assert result.stdout.strip() == (
        "paddle.distributed.launch would give each of its 2 processes one of the 1 visible GPU(s)"
    )


@pytest.mark.parametrize(
    "device, precision, compared, env",
    [
        ("gpu", "fp32", True, "NVIDIA_TF32_OVERRIDE=0"),
        ("gpu", "null", True, "NVIDIA_TF32_OVERRIDE=0"),  # no --precision: infer.py's fp32
        ("cpu", "fp32", True, ""),
        ("cpu", "null", True, ""),
        ("gpu", "fp16", False, ""),
        ("gpu", "int8", False, ""),
        ("cpu", "bf16", False, ""),
    ],
)
def test_consistency_env(device, precision, compared, env):
    result = shell_function("consistency_env", device, precision)
    assert (result.returncode == 0) == compared
    assert result.stdout.strip() == env


# A python that tells the TIPC scripts' GPU count there is one GPU, and is the real
# interpreter for everything else.
FAKE_ONE_GPU_PYTHON = """\
#!/bin/bash
if [[ "$1" == -c && "$2" == *device_count* ]]; then
    echo 1
    exit 0
fi
exec {python} "$@"
"""
# Real (untrained) weights, written by rank 0 only under paddle.distributed.launch.
FAKE_TRAIN_RANK0_WEIGHTS = """\
import os, sys
out = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--output-dir="))
if os.environ.get("PADDLE_TRAINER_ID", "0") == "0":
    import paddle
    from paddlevision.models import get_model
    os.makedirs(out, exist_ok=True)
    paddle.seed(0)
    paddle.save(get_model("alexnet", num_classes=4).state_dict(), os.path.join(out, "latest.pdparams"))
"""
# The "exported model" is tools/predict.py's answer for images/demo.jpg.
FAKE_EXPORT_ANSWER = """\
import os, subprocess, sys
arg = lambda key: next(a.split("=", 1)[1] for a in sys.argv if a.startswith(key + "="))
out = arg("--save-inference-dir")
os.makedirs(out, exist_ok=True)
answer = subprocess.run([sys.executable, "tools/predict.py", "--pretrained=" + arg("--pretrained"),
                         "--img-path=images/demo.jpg", "--device=cpu"], capture_output=True, text=True, check=True)
with open(os.path.join(out, "answer.txt"), "w") as f:
    f.write(answer.stdout)
"""
# An inference engine that gives that answer, except on the GPU with TF32 on, where it is
# off by 1e-3, as TF32's rounding can be; NVIDIA_TF32_OVERRIDE=0 turns TF32 off.
FAKE_INFER_TF32 = """\
import os, re, sys
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
with open(os.path.join(args["--model-dir"], "answer.txt")) as f:
    class_id, prob = re.search(r"class_id: (\\d+), prob: ([^,\\s]+)", f.read()).groups()
prob = float(prob)
if args["--use-gpu"] == "True" and os.environ.get("NVIDIA_TF32_OVERRIDE") != "0":
    prob += 1e-3
print(f"image_name: {args['--img-path']}, class_id: {class_id}, prob: {prob!r}")
"""


def test_one_gpu_machine(tmp_path):
    """gpu_list 0|0,1 and GPU inference on a machine that shows one GPU (faked): entry 0
    trains on card 0, entry 0,1 is skipped with the reason, GPU inference is compared
    with TF32 off."""
    fake_python = tmp_path / "python"
    fake_python.write_text(FAKE_ONE_GPU_PYTHON.format(python=sys.executable))
    fake_python.chmod(0o755)
    lines = fake_chain_lines(tmp_path, FAKE_TRAIN_RANK0_WEIGHTS.format(repo=str(REPO_ROOT)), FAKE_EXPORT_ANSWER,
                             FAKE_INFER_TF32, gpu_list="0|0,1", use_gpu="True|False")
    config = write_config(tmp_path, lines)

    result = run_tipc(TEST_SCRIPT, config, "lite_train_lite_infer", tmp_path, python=fake_python)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    py = re.escape(str(fake_python))
    train = re.escape(str(tmp_path / "fake_train.py"))
    # Entry 0 trains on card 0.
    assert re.search(rf"^Run successfully with command - env CUDA_VISIBLE_DEVICES=0 {py} {train} --device=gpu ", out, re.M)
    # Entry 0,1 needs a second card, and cannot run as two CPU processes beside one GPU.
    assert (
        "note: skipping gpu_list entry 0,1: card 1 is not one of the 1 visible GPU(s); on the CPU, "
        "paddle.distributed.launch would give each of its 2 processes one of the 1 visible GPU(s)"
    ) in out
    assert "norm_train_gpus_0,1" not in out
    # GPU inference runs with TF32 off, CPU inference as it is; both compared.
    gpu_runs = re.findall(rf"^Run successfully with command - env NVIDIA_TF32_OVERRIDE=0 {py} \S+fake_infer\.py --use-gpu=True ", out, re.M)
    cpu_runs = re.findall(rf"^Run successfully with command - {py} \S+fake_infer\.py --use-gpu=False ", out, re.M)
    assert len(gpu_runs) == 1 and len(cpu_runs) == 1
    assert re.search(r"^Run successfully with command - consistency check: .* in 2 inference log\(s\)!$", out, re.M)
    assert out.rstrip().splitlines()[-1] == "6 succeeded, 0 failed"


FAKE_TWO_GPU_PYTHON = FAKE_ONE_GPU_PYTHON.replace("echo 1", "echo 2")
# Rank 0's real weights, and every process's view of its cards.
FAKE_TRAIN_RECORDING_CARDS = FAKE_TRAIN_RANK0_WEIGHTS + """
import json
rank = os.environ.get("PADDLE_TRAINER_ID", "0")
with open(os.path.join(out, f"cards.{rank}.json"), "w") as f:
    json.dump({k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "FLAGS_selected_gpus")}, f)
"""


def test_gpu_list_entries_count_the_gpus_the_user_left_visible(tmp_path):
    """CUDA_VISIBLE_DEVICES=2,3 on a (faked) machine whose Paddle sees those two GPUs:
    entry 0,1 launches on cards 2 and 3 (the real launcher, run on the CPU, hands out the
    cards), entry 1 trains on card 3 alone."""
    fake_python = tmp_path / "python"
    fake_python.write_text(FAKE_TWO_GPU_PYTHON.format(python=sys.executable))
    fake_python.chmod(0o755)
    lines = fake_chain_lines(tmp_path, FAKE_TRAIN_RECORDING_CARDS, FAKE_EXPORT_ANSWER, FAKE_INFER_TF32,
                             gpu_list="0,1|1", use_gpu="False")
    config = write_config(tmp_path, lines)
    result = run_tipc(TEST_SCRIPT, config, "lite_train_lite_infer", tmp_path, python=fake_python,
                      env={"CUDA_VISIBLE_DEVICES": "2,3"}, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    output = tmp_path / "output"
    cards = {path.relative_to(output).as_posix(): json.loads(path.read_text()) for path in output.glob("*/cards.*.json")}
    assert cards == {
        "norm_train_gpus_0,1_autocast_null/cards.0.json": {"CUDA_VISIBLE_DEVICES": "2,3", "FLAGS_selected_gpus": "0"},
        "norm_train_gpus_0,1_autocast_null/cards.1.json": {"CUDA_VISIBLE_DEVICES": "2,3", "FLAGS_selected_gpus": "1"},
        "norm_train_gpus_1_autocast_null/cards.0.json": {"CUDA_VISIBLE_DEVICES": "3", "FLAGS_selected_gpus": None},
    }


# --- the reference repository's own config ---------------------------------------------

REFERENCE_MIRROR = Path("/work/.mirror/littletomatodonkey+AlexNet-Prod/repo")
REFERENCE_CONFIG = "pipeline/Step5/AlexNet_paddle/test_tipc/configs/AlexNet/train_infer_python.txt"

# How the reference's config (AlexNet-Prod, Step 5) differs from the shipped one, line by
# line (1-based), as its scripts read it by position. Built from this description, not
# copied; the test below also runs the reference's own file when a mirror is at hand.
REFERENCE_PECULIARITIES = {
    3: "python:python3.7",  # an interpreter not on this machine: PYTHON overrides it
    5: "--device:gpu|cpu",  # one value per gpu_list entry
    6: "null:null",  # no AMP line
    7: "--epochs:lite_train_lite_infer=1",  # pairs for one mode only
    9: "--batch-size:lite_train_lite_infer=2",
    12: "null:null",  # no image flag for inference after training: infer.py's default
    13: "null:null",  # no extra training flag ...
    16: "norm_train:train.py --lr=0.001 --data-path=./lite_data",  # ... the data set is a fixed argument
    24: "eval:null",
    25: "null:null",
    28: "--save-inference-dir:",  # empty: the script's path is used
    30: "norm_export:tools/export_model.py --model=alexnet",
    36: "##",  # no inference_dir line: the model is the exported directory itself
    37: "infer_model:null",
    38: "infer_export:tools/export_model.py --model=alexnet",
    42: "null:null",  # no --use-mkldnn ...
    43: "null:null",  # ... no --cpu-threads
    44: "--batch-size:1",
    45: "null:null",  # no --use-tensorrt ...
    46: "null:null",  # ... no --precision
    47: "--model-dir:",  # empty: the script's path is used
    48: "--image_dir:./lite_data/test/demo.jpg",  # another key, read only in whole_infer
    49: "--save_log_path:null",
    51: "null:null",
}


def reference_config_text(source):
    if source == "described":
        lines = config_lines()
        for line_number, line in REFERENCE_PECULIARITIES.items():
            lines[line_number - 1] = line
        return "\n".join(lines) + "\n"
    if not REFERENCE_MIRROR.is_dir():
        pytest.skip(f"no mirror of the reference repository at {REFERENCE_MIRROR}")
    shown = subprocess.run(
        ["git", "-C", str(REFERENCE_MIRROR), "show", f"HEAD:{REFERENCE_CONFIG}"], capture_output=True, text=True
    )
    if shown.returncode != 0:
        pytest.skip(f"{REFERENCE_CONFIG} not in the mirror: {shown.stderr.strip()}")
    # The one path this project lays out differently (the reference README's py_inference).
    assert "inference:deploy/inference_python/infer.py\n" in shown.stdout
    return shown.stdout.replace("deploy/inference_python/infer.py", "deploy/py_inference/infer.py")


def test_reference_config_runs_the_lite_chain(tmp_path):
    # One chain run (about 100 s): the reference's own file where a mirror is at hand,
    # else the config built from its description.
    source = "mirror" if REFERENCE_MIRROR.is_dir() else "described"
    config = tmp_path / "train_infer_python.txt"
    config.write_text(reference_config_text(source))
    prepared = run_tipc("test_tipc/prepare.sh", config, "lite_train_lite_infer", tmp_path, python="python")
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    result = run_tipc(TEST_SCRIPT, config, "lite_train_lite_infer", tmp_path, timeout=900, python="python")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert re.search(r"^\d+ succeeded, 0 failed$", out.rstrip().splitlines()[-1])
    commands = [line for line in out.splitlines() if line.startswith("Run ")]
    assert not [line for line in commands if line.startswith("Run failed")]

    output = tmp_path / "output"
    for entry, device in (("0", None), ("0,1", "cpu")):
        run_dir = output / f"norm_train_gpus_{entry}_autocast_null"
        train = [c for c in commands if " train.py --lr=0.001 --data-path=./lite_data " in c and f"--output-dir={run_dir} " in c]
        assert len(train) == 1 and "--amp" not in train[0] and "--pretrained" not in train[0]
        if device:
            assert f"--device={device} " in train[0]
        assert (
            f" tools/export_model.py --model=alexnet --pretrained={run_dir}/latest.pdparams "
            f"--save-inference-dir={run_dir}/inference > " in out
        )
        infer = [c for c in commands if " deploy/py_inference/infer.py " in c and f"--model-dir={run_dir}/inference " in c]
        assert infer
        for command in infer:
            # null:null lines and lite mode's missing image leave their flags out.
            for absent in ("--image_dir", "--img-path", "--use-mkldnn", "--cpu-threads", "--precision", "--save_log_path"):
                assert absent not in command
        assert re.search(
            rf"^Run successfully with command - consistency check: .*{re.escape(str(run_dir))}/predict\.log\) == ", out, re.M
        )
    assert "--test-only" not in out  # eval:null
