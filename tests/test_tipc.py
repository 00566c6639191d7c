"""test_tipc/*.sh: config validation, failure reporting and the CPU mapping of gpu_list.

The full lite chain (real training, export and inference) runs in .ci/run; here the
commands are stand-in scripts, so each test takes seconds.
"""

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


def run_tipc(script, config, mode, tmp_path, timeout=300):
    python_dir = os.path.dirname(sys.executable)
    env = {
        **os.environ,
        "PATH": python_dir + os.pathsep + os.environ.get("PATH", ""),
        "TIPC_OUTPUT_DIR": str(tmp_path / "output"),
    }
    env.pop("PYTHON", None)
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
    # Nothing to extract or train for whole_train_whole_infer without ImageNet: prepare.sh
    # stops after validation with a data error (1), not a config error (2).
    result = run_tipc("test_tipc/prepare.sh", CONFIG, "whole_train_whole_infer", tmp_path)
    assert result.returncode in (0, 1), result.stderr
    if result.returncode == 1:
        assert "ILSVRC2012" in result.stderr


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
sys.path.insert(0, {repo!r})
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


def test_inconsistent_inference_fails_the_check(tmp_path):
    (tmp_path / "fake_train.py").write_text(FAKE_TRAIN_REAL_WEIGHTS.format(repo=str(REPO_ROOT)))
    (tmp_path / "fake_export.py").write_text(FAKE_EXPORT)
    (tmp_path / "fake_infer.py").write_text(FAKE_INFER_WRONG_CLASS)
    lines = config_lines()
    set_value(lines, "gpu_list", "-1")
    set_value(lines, "norm_train", tmp_path / "fake_train.py")
    set_value(lines, "eval", "null")
    set_value(lines, "norm_export", tmp_path / "fake_export.py")
    set_value(lines, "inference", tmp_path / "fake_infer.py")
    set_value(lines, "--use-gpu", "False")
    set_value(lines, "--use-mkldnn", "True")
    set_value(lines, "--batch-size", "1", last=True)  # the inference batch size
    config = write_config(tmp_path, lines)

    result = run_tipc(TEST_SCRIPT, config, "lite_train_lite_infer", tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"^Run successfully with command - python tools/predict\.py ", result.stdout, re.M)
    failed = [line for line in result.stdout.splitlines() if line.startswith("Run failed")]
    assert len(failed) == 1 and failed[0].startswith("Run failed with command - consistency check: ")
    assert "gave '999 0.5'" in failed[0]
    assert result.stdout.rstrip().splitlines()[-1] == "4 succeeded, 1 failed"
