"""End-to-end runs of train.py and tools/predict.py on the bundled lite data."""

import json
import re
import shutil

import numpy as np
import paddle
import pytest
from PIL import Image

import train
from conftest import FAST_SIZES, REPO_ROOT, SlowScalar, load_script, run_script
from paddlevision.models import AlexNet
from presets import ClassificationPresetEval

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
    out, result, written = trained_run
    assert len(TRAIN_LINE.findall(result.stdout)) == 2  # 16 images at batch 8, printed every iteration
    assert TEST_LINE.search(result.stdout)
    assert len(SUMMARY.findall(result.stdout)) == 1
    assert written == ["best_model.json", "best_model.pdparams", "latest.pdopt", "latest.pdparams", "metrics.jsonl",
                       "model_0.pdopt", "model_0.pdparams"]

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["train", "train", "eval"]
    assert records[-1]["num_samples"] == 16 and 0 <= records[-1]["top1"] <= 1
    acc1 = float(SUMMARY.search(result.stdout).group(1))
    assert round(records[-1]["top1"], 3) == acc1

    weights = paddle.load(str(out / "latest.pdparams"))
    meta = weights["__paddlevision_meta__"]
    assert meta == {"model": "alexnet", "num_classes": 4, "class_names": ["astronaut", "cat", "coffee", "rocket"],
                    "epoch": 0}
    assert json.loads((out / "best_model.json").read_text()) == {"epoch": 0, "acc1": records[-1]["top1"]}


def test_test_only_reproduces_the_final_evaluation(trained_run, lite_data):
    out, result, _ = trained_run
    evaluation = run_script("train.py", "--test-only", "--data-path", lite_data, "--pretrained", out / "latest.pdparams",
                            "--device", "cpu", "-b", "8", "-j", "0", "--output-dir", "", *FAST_SIZES)
    assert SUMMARY.findall(evaluation.stdout) == SUMMARY.findall(result.stdout)
    assert "[Epoch" not in evaluation.stdout


def test_predict_prints_class_of_demo_image(trained_run):
    out, _, _ = trained_run
    result = run_script("tools/predict.py", "--pretrained", out / "latest.pdparams", "--img-path", "images/demo.jpg",
                        "--device", "cpu", "--topk", "1")
    match = re.fullmatch(r"class_id: (\d), prob: (0\.\d+|1\.0), class_name: (\w+)\n", result.stdout)
    assert match, result.stdout

    # The model's own answer, from plain paddle calls on the evaluation preset's input.
    model = AlexNet(num_classes=4)
    weights = paddle.load(str(out / "latest.pdparams"))
    weights.pop("__paddlevision_meta__")
    model.set_state_dict(weights)
    model.eval()
    image = ClassificationPresetEval(crop_size=224, resize_size=256)(Image.open(REPO_ROOT / "images" / "demo.jpg"))
    probs = paddle.nn.functional.softmax(model(paddle.to_tensor(image[None])), axis=-1).numpy()[0]
    assert int(match.group(1)) == int(np.argmax(probs))
    assert float(match.group(2)) == pytest.approx(float(probs.max()), rel=1e-5)
    assert match.group(3) == ["astronaut", "cat", "coffee", "rocket"][int(np.argmax(probs))]


def test_predict_errors_name_the_file(trained_run, tmp_path):
    out, _, _ = trained_run
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
    straight = paddle.load(str(tmp_path / "straight" / "latest.pdparams"))
    best_model_record = (tmp_path / "straight" / "best_model.json").read_text()
    shutil.rmtree(tmp_path / "straight")  # 0.9 GB of checkpoints, not needed any more
    run_script("train.py", *common, "--epochs", "1", "--output-dir", tmp_path / "first")
    run_script("train.py", *common, "--epochs", "2", "--output-dir", tmp_path / "first", "--resume", tmp_path / "first")
    resumed = paddle.load(str(tmp_path / "first" / "latest.pdparams"))
    assert resumed["__paddlevision_meta__"]["epoch"] == 1
    assert (tmp_path / "first" / "best_model.json").read_text() == best_model_record
    # The resumed run continued the metrics file: one eval record per epoch, as the straight run.
    evals = [line for line in (tmp_path / "first" / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert len(evals) == 2
    for name, value in straight.items():
        if name != "__paddlevision_meta__":
            np.testing.assert_array_equal(value.numpy(), resumed[name].numpy(), err_msg=name)


@pytest.fixture
def data_copy(lite_data, tmp_path):
    shutil.copytree(lite_data, tmp_path / "data")
    return tmp_path / "data"


def corrupt(path):
    path.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return path


def bad_image_line(path):
    return re.compile(rf"error: cannot decode image {re.escape(str(path))}: .+ "
                      r"\(--skip-bad-images skips unreadable images\)")


@pytest.mark.parametrize("split", ["train", "val"])
def test_bad_image_is_one_error_line_with_default_workers(data_copy, split, trained_run):
    """Default -j: the unreadable image's line is all of stderr, within the timeout (before
    the fix: a traceback, then a hang at exit). A bad val image fails --test-only."""
    bad = corrupt(data_copy / split / "cat" / "corrupt.jpg")
    weights = trained_run[0] / "latest.pdparams"
    mode = ["--epochs", "1"] if split == "train" else ["--test-only", "--pretrained", weights]
    result = run_script("train.py", "--data-path", data_copy, *mode, "-b", "8", "--device", "cpu", "--output-dir", "",
                        *FAST_SIZES, check=False, timeout=120)
    assert result.returncode != 0
    assert bad_image_line(bad).fullmatch(result.stderr.strip()), result.stderr


def test_bad_images_skipped_with_default_workers(data_copy):
    bad = [corrupt(data_copy / split / "cat" / "corrupt.jpg") for split in ("train", "val")]
    result = run_script("train.py", "--data-path", data_copy, "--epochs", "1", "-b", "8", "--print-freq", "1",
                        "--device", "cpu", "--output-dir", "", "--skip-bad-images", *FAST_SIZES, timeout=300)
    assert "[Epoch 0] training: skipped 1 unreadable images (--skip-bad-images)" in result.stdout
    assert "Test: skipped 1 unreadable images (--skip-bad-images)" in result.stdout
    assert all(str(path) in result.stderr for path in bad) and "Traceback" not in result.stderr
    # 17 images in each split, one of them unreadable: 16 trained on (one step per line) and evaluated.
    assert sum(float(n) for n in re.findall(r"avg_samples: ([\d.]+)", result.stdout)) == 16
    assert re.search(r"^Test: Total time", result.stdout, re.M) and SUMMARY.search(result.stdout)


def test_bad_data_path_is_named(tmp_path):
    result = run_script("train.py", "--data-path", tmp_path, "--device", "cpu", check=False)
    assert result.returncode != 0
    assert result.stderr.strip() == (f"error: --data-path {tmp_path}: expected train/ class folders or a "
                                     "train_list.txt, found neither")
    result = run_script("train.py", "--data-path", tmp_path / "nowhere", "--device", "cpu", check=False)
    assert result.returncode != 0
    assert result.stderr.strip() == f"error: --data-path {tmp_path / 'nowhere'}: no such directory"


def test_bad_checkpoints_are_named_without_traceback(lite_data, tmp_path):
    for flag in ("--resume", "--pretrained"):
        result = run_script("train.py", "--data-path", lite_data, "--device", "cpu", "--output-dir", "", flag,
                            tmp_path / "none.pdparams", check=False)
        assert result.returncode != 0 and "none.pdparams" in result.stderr, flag
        assert "Traceback" not in result.stderr, flag


def test_plot_metrics(trained_run, tmp_path):
    out, _, _ = trained_run
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


def test_quick_start_as_written(quick_start):
    """README: `python train.py --epochs 1 -b 8 --print-freq 1 --device cpu --output-dir output`,
    with the default workers (shared memory), crop sizes and data (extracted on first use)."""
    repo, result, metrics, written = quick_start
    lines = result.stdout.splitlines()
    assert lines.count(f"no --data-path: extracting the bundled lite data into {repo / 'lite_data'}") == 1
    assert "Traceback" not in result.stderr
    assert len(TRAIN_LINE.findall(result.stdout)) == 2
    assert len(re.findall(r"^Test:  \[[01]/2\]", result.stdout, re.M)) == 2
    assert len(SUMMARY.findall(result.stdout)) == 1
    assert [json.loads(line)["type"] for line in metrics.splitlines()] == ["train", "train", "eval"]
    assert (repo / "lite_data" / "train" / "cat").is_dir()
    assert written == ["best_model.json", "best_model.pdparams", "latest.pdopt", "latest.pdparams", "metrics.jsonl",
                       "model_0.pdopt", "model_0.pdparams"]


def test_default_run_names_its_conv_engine(quick_start):
    """The quick start's first lines say which convolutions train: Paddle's own layers, on
    every machine (the oneDNN engine is opt-in; tests/test_onednn.py)."""
    _, result, _, _ = quick_start
    lines = result.stdout.splitlines()
    engine_lines = [index for index, line in enumerate(lines) if line.startswith("conv engine: ")]
    assert len(engine_lines) == 1 and engine_lines[0] < 3, lines[:5]
    assert lines[engine_lines[0]] == "conv engine: paddle (Paddle's own layers)"


def test_test_only_keeps_the_training_log_and_plots(quick_start):
    """The README's next steps in the same directory: evaluating the trained weights into the
    default --output-dir adds its record to metrics.jsonl; the plot still has the training."""
    repo, _, metrics, _ = quick_start
    result = run_script("train.py", "--test-only", "--pretrained", "output/latest.pdparams", "--device", "cpu",
                        cwd=repo)
    assert "extracting" not in result.stdout  # lite_data/ is reused
    assert SUMMARY.search(result.stdout)
    text = (repo / "output" / "metrics.jsonl").read_text()
    assert text.startswith(metrics)
    added = [json.loads(line) for line in text[len(metrics):].splitlines()]
    assert len(added) == 1
    assert added[0]["type"] == "eval" and added[0]["epoch"] is None and added[0]["num_samples"] == 16
    assert added[0]["weights"] == "output/latest.pdparams"

    plot = run_script("tools/plot_metrics.py", "output/metrics.jsonl", cwd=repo)
    assert re.search(r"^--test-only output/latest\.pdparams: top1 \d\.\d{3} top5 \d\.\d{3} loss [\d.]+$",
                     plot.stdout, re.M)
    assert (repo / "output" / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_metrics = load_script("tools/plot_metrics.py")

    train_records, epoch_evals, standalone = plot_metrics.read_records(repo / "output" / "metrics.jsonl")
    assert (len(train_records), len(epoch_evals), len(standalone)) == (2, 1, 1)


def test_logged_throughput_includes_waiting_for_the_device(monkeypatch):
    """On a GPU, the host queues the step and float() waits for the device at the log step.
    SlowScalar makes that wait 0.2 s: every logged window must count it."""
    delay = 0.2
    monkeypatch.setattr(train.utils, "correct_counts",
                        lambda output, target, topk: [SlowScalar(1.0, delay) for _ in topk])
    model = paddle.nn.Linear(4, 3)
    optimizer = paddle.optimizer.SGD(learning_rate=0.1, parameters=model.parameters())
    batches = [(paddle.rand([2, 4]), paddle.to_tensor([0, 1])) for _ in range(3)]

    class Records:
        def __init__(self):
            self.records = []

        def write(self, **record):
            self.records.append(record)

    metrics = Records()
    train.train_one_epoch(model, paddle.nn.CrossEntropyLoss(), optimizer, batches, 0, 1, metrics)
    assert len(metrics.records) == 3
    for record in metrics.records:
        assert record["avg_batch_cost"] >= 2 * delay  # correct1 and correct5 each wait
        assert record["avg_ips"] <= 2 / (2 * delay)
