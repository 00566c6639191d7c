"""End-to-end runs of train.py and tools/predict.py on the bundled lite data."""

import json
import re
import shutil

import numpy as np
import paddle
import pytest

from conftest import FAST_SIZES, run_script

TRAIN_LINE = re.compile(
    r"^\[Epoch 0, iter: \d+\] top1: \d\.\d{5}, top5: \d\.\d{5}, lr: 0\.01000, loss: \d+\.\d{5}, "
    r"avg_reader_cost: \d+\.\d{5} sec, avg_batch_cost: \d+\.\d{5} sec, avg_samples: 8\.0, "
    r"avg_ips: \d+\.\d{5} images/sec\.$",
    re.M,
)
TEST_LINE = re.compile(r"^Test:  \[0/2\]  eta: \d+:\d\d:\d\d  loss: [\d.]+ \([\d.]+\)  acc1: [\d.]+ \([\d.]+\)  "
                       r"acc5: [\d.]+ \([\d.]+\)  time: [\d.]+  data: [\d.]+$", re.M)
SUMMARY = re.compile(r"^ \* Acc@1 (\d\.\d{3}) Acc@5 (\d\.\d{3})$", re.M)


def test_one_epoch_logs_metrics_and_checkpoints(trained_run):
    out, result = trained_run
    assert len(TRAIN_LINE.findall(result.stdout)) == 2  # 16 images at batch 8, printed every iteration
    assert TEST_LINE.search(result.stdout)
    assert len(SUMMARY.findall(result.stdout)) == 1
    for name in ("model_0.pdparams", "model_0.pdopt", "latest.pdparams", "latest.pdopt", "best_model.pdparams"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.tmp"))

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["train", "train", "eval"]
    assert records[-1]["num_samples"] == 16 and 0 <= records[-1]["top1"] <= 1
    acc1 = float(SUMMARY.search(result.stdout).group(1))
    assert round(records[-1]["top1"], 3) == acc1

    weights = paddle.load(str(out / "latest.pdparams"))
    meta = weights["__paddlevision_meta__"]
    assert meta == {"model": "alexnet", "num_classes": 4, "class_names": ["astronaut", "cat", "coffee", "rocket"],
                    "epoch": 0, "best_acc1": records[-1]["top1"]}


def test_test_only_reproduces_the_final_evaluation(trained_run, lite_data):
    out, result = trained_run
    evaluation = run_script("train.py", "--test-only", "--data-path", lite_data, "--pretrained", out / "latest.pdparams",
                            "--device", "cpu", "-b", "8", "-j", "0", "--output-dir", "", *FAST_SIZES)
    assert SUMMARY.findall(evaluation.stdout) == SUMMARY.findall(result.stdout)
    assert "[Epoch" not in evaluation.stdout


def test_predict_prints_class_of_demo_image(trained_run):
    out, _ = trained_run
    result = run_script("tools/predict.py", "--pretrained", out / "latest.pdparams", "--img-path", "images/demo.jpg",
                        "--device", "cpu", "--topk", "1")
    match = re.fullmatch(r"class_id: (\d), prob: (0\.\d+|1\.0), class_name: (\w+)\n", result.stdout)
    assert match, result.stdout
    assert match.group(3) == ["astronaut", "cat", "coffee", "rocket"][int(match.group(1))]


def test_predict_errors_name_the_file(trained_run, tmp_path):
    out, _ = trained_run
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = run_script("tools/predict.py", "--pretrained", out / "latest.pdparams", "--img-path",
                        tmp_path / "broken.jpg", "--device", "cpu", check=False)
    assert result.returncode != 0 and "broken.jpg" in result.stderr
    result = run_script("tools/predict.py", "--pretrained", tmp_path / "none.pdparams", "--device", "cpu", check=False)
    assert result.returncode != 0 and "none.pdparams" in result.stderr


def test_resume_equals_uninterrupted_run(lite_data, tmp_path):
    common = ["--data-path", lite_data, "-b", "8", "--device", "cpu", "-j", "0", "--seed", "3", "--print-freq", "100",
              "--lr", "0.001", *FAST_SIZES]
    run_script("train.py", *common, "--epochs", "2", "--output-dir", tmp_path / "straight")
    run_script("train.py", *common, "--epochs", "1", "--output-dir", tmp_path / "first")
    run_script("train.py", *common, "--epochs", "2", "--output-dir", tmp_path / "first", "--resume", tmp_path / "first")
    straight = paddle.load(str(tmp_path / "straight" / "latest.pdparams"))
    resumed = paddle.load(str(tmp_path / "first" / "latest.pdparams"))
    assert resumed["__paddlevision_meta__"]["epoch"] == 1
    assert resumed["__paddlevision_meta__"]["best_acc1"] == straight["__paddlevision_meta__"]["best_acc1"]
    # The resumed run continued the metrics file: one eval record per epoch, as the straight run.
    evals = [line for line in (tmp_path / "first" / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert len(evals) == 2
    for name, value in straight.items():
        if name != "__paddlevision_meta__":
            np.testing.assert_array_equal(value.numpy(), resumed[name].numpy(), err_msg=name)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_bad_image_named_then_skipped(lite_data, tmp_path, workers):
    data = tmp_path / "data"
    shutil.copytree(lite_data, data)
    (data / "train" / "cat" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    common = ["train.py", "--data-path", data, "--epochs", "1", "-b", "8", "--device", "cpu", "-j", workers,
              "--output-dir", "", *FAST_SIZES]
    failed = run_script(*common, check=False)
    assert failed.returncode != 0 and "corrupt.jpg" in failed.stderr
    skipped = run_script(*common, "--skip-bad-images")
    assert "skipped 1 unreadable training images" in skipped.stdout
    assert SUMMARY.search(skipped.stdout)


def test_bad_data_path_is_named(tmp_path):
    result = run_script("train.py", "--data-path", tmp_path, "--device", "cpu", check=False)
    assert result.returncode != 0 and "train/" in result.stderr and str(tmp_path) in result.stderr


def test_bad_checkpoints_are_named_without_traceback(lite_data, tmp_path):
    for flag in ("--resume", "--pretrained"):
        result = run_script("train.py", "--data-path", lite_data, "--device", "cpu", "--output-dir", "", flag,
                            tmp_path / "none.pdparams", check=False)
        assert result.returncode != 0 and "none.pdparams" in result.stderr, flag
        assert "Traceback" not in result.stderr, flag


def test_plot_metrics(trained_run, tmp_path):
    out, _ = trained_run
    run_script("tools/plot_metrics.py", out / "metrics.jsonl", "--out", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_test_only_needs_only_val(trained_run, lite_data, tmp_path):
    shutil.copytree(lite_data / "val", tmp_path / "val")
    result = run_script("train.py", "--test-only", "--data-path", tmp_path, "--pretrained",
                        trained_run[0] / "latest.pdparams", "--device", "cpu", "-j", "0", "--output-dir", "",
                        *FAST_SIZES)
    assert SUMMARY.search(result.stdout)


def test_paddleclas_list_files(lite_data, tmp_path):
    """A data root with train_list.txt / val_list.txt (``relative/path.jpg label``) instead
    of class folders."""
    classes = sorted(p.name for p in (lite_data / "train").iterdir())
    for split in ("train", "val"):
        lines = [f"{split}/{image.parent.name}/{image.name} {classes.index(image.parent.name)}"
                 for image in sorted((lite_data / split).glob("*/*.jpg"))]
        (tmp_path / f"{split}_list.txt").write_text("\n".join(lines) + "\n")
        shutil.copytree(lite_data / split, tmp_path / split)
    result = run_script("train.py", "--data-path", tmp_path, "--epochs", "1", "-b", "8", "--device", "cpu", "-j", "0",
                        "--output-dir", tmp_path / "out", *FAST_SIZES)
    assert len(SUMMARY.findall(result.stdout)) == 1
    # Class names are the lists' labels, not the folder names: the lists were read.
    meta = paddle.load(str(tmp_path / "out" / "latest.pdparams"))["__paddlevision_meta__"]
    assert meta["num_classes"] == 4 and meta["class_names"] == ["0", "1", "2", "3"]
