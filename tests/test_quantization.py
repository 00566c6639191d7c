"""int8: tools/quantize_model.py on an exported model, and every runner accepting what it
writes. One export of a model whose answers differ clearly from image to image
(tests/peaked_model.py) is quantised once for the module, calibrated on other images; its
int8 answers are compared with the classes the model was built to give. Which engine runs
a directory is tested as the small function it is."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.service_process import ServiceProcess
from conftest import REPO_ROOT, load_script, make_image, run_script
from paddlevision.inference import (
    ENGINE_ONNXRUNTIME,
    ENGINE_PADDLE,
    PredictorOptions,
    UnsupportedOptionError,
    check_model_dir,
    select_engine,
)
from paddlevision.device import cpu_has_vnni
from paddlevision.onnx_predictor import weight_range_warning
from paddlevision.quantization import (
    AGREEMENT_TOLERANCE,
    QuantizationError,
    calibration_subset,
    default_weight_range,
    quantize,
)
from paddlevision.serving.protocol import build_request, parse_prediction
from peaked_model import save_peaked_weights

LINE = re.compile(r"^image_name: (?P<name>.+), class_id: (?P<class_id>\d+), prob: (?P<prob>[0-9.e-]+)$")
NUM_HELD = 6
NUM_CALIBRATION = 8
# int8 rounding moved these probabilities by up to 0.063 (measured). Images of one class
# (i % 4) were built to get probabilities 0.44 apart, images of other classes another
# class, so 0.15 still tells rounding from another image's answer.
INT8_PROB_TOLERANCE = 0.15

quantize_model = load_script("tools/quantize_model.py")
paddle_infer = load_script("deploy/py_inference/infer.py")


def write_images(directory, count, seed):
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        make_image(48 + 8 * i, 40 + 6 * i, seed=seed + i).save(directory / f"img_{i}.png")
    return sorted(str(p) for p in directory.glob("img_*.png"))


@pytest.fixture(scope="module")
def held(module_tmp):
    """Images that measure the answers; calibration never sees them."""
    return write_images(module_tmp / "held", NUM_HELD, seed=100)


@pytest.fixture(scope="module")
def calibration_dir(module_tmp):
    directory = module_tmp / "calibration"
    write_images(directory / "class_a", NUM_CALIBRATION // 2, seed=0)
    write_images(directory / "class_b", NUM_CALIBRATION // 2, seed=50)
    return directory


@pytest.fixture(scope="module")
def expected(held, module_tmp):
    """(fp32 export directory, {image name: constructed (class_id, prob)})."""
    weights = module_tmp / "alexnet4.pdparams"
    answers = save_peaked_weights(weights, held)
    out = module_tmp / "alexnet_infer"
    run_script("tools/export_model.py", "--pretrained", weights, "--model-dir", out, "--onnx", "--device", "cpu")
    weights.unlink()
    return out, dict(zip((Path(p).name for p in held), answers))


@pytest.fixture(scope="module")
def fp32_dir(expected):
    return expected[0]


@pytest.fixture(scope="module")
def int8_dir(fp32_dir, calibration_dir, module_tmp):
    out = module_tmp / "alexnet_infer_int8"
    result = run_script("tools/quantize_model.py", "--model-dir", fp32_dir, "--calib-data", calibration_dir,
                        "--output", out)
    lines = result.stdout.splitlines()
    bits = {"full": "8-bit", "reduced": "7-bit"}[default_weight_range()]
    assert lines[:2] == [
        f"calibrated on {NUM_CALIBRATION} images from {calibration_dir}",
        f"int8 weights: int8 ({bits} range), per output channel (the default for this CPU, which has "
        f"{'' if cpu_has_vnni() else 'no '}VNNI)",
    ]
    assert re.fullmatch(rf"checked against fp32 on {NUM_CALIBRATION} of them: mean total-variation distance "
                        r"0\.\d{4} \(at most 0\.1\)", lines[2])
    assert lines[3:] == [f"saved int8 model to {out / 'inference.onnx'}"]
    return out


def parse_lines(stdout):
    matches = [LINE.match(line) for line in stdout.splitlines()]
    assert matches and all(matches), stdout
    return [(m["name"], int(m["class_id"]), float(m["prob"])) for m in matches]


@pytest.mark.parametrize(
    "precision, device, use_tensorrt, has_paddle_graph, has_onnx, engine",
    [
        ("fp32", "cpu", False, True, True, ENGINE_PADDLE),
        ("bf16", "cpu", False, True, False, ENGINE_PADDLE),
        ("fp16", "gpu", True, True, False, ENGINE_PADDLE),
        ("int8", "cpu", False, False, True, ENGINE_ONNXRUNTIME),
        ("int8", "cpu", False, True, True, ENGINE_ONNXRUNTIME),
        ("int8", "gpu", True, True, False, ENGINE_PADDLE),
    ],
)
def test_engine_for_each_directory_and_device(precision, device, use_tensorrt, has_paddle_graph, has_onnx, engine):
    assert select_engine(precision, device, use_tensorrt, has_paddle_graph, has_onnx) == engine


@pytest.mark.parametrize(
    "device, use_tensorrt, has_paddle_graph, has_onnx, message",
    [
        # Paddle's CPU passes delete quantize/dequantize ops: the graph would run in fp32.
        ("cpu", False, True, False, "this directory has none"),
        ("gpu", True, False, True, "use --device cpu"),
        ("gpu", False, True, True, "use --device cpu"),
    ],
)
def test_int8_without_an_engine_that_runs_it_is_refused(device, use_tensorrt, has_paddle_graph, has_onnx, message):
    with pytest.raises(UnsupportedOptionError, match=message):
        select_engine("int8", device, use_tensorrt, has_paddle_graph, has_onnx)


def test_calibration_subset_spreads_over_every_class_folder():
    paths = [f"{folder}/{i}.png" for folder in "abcde" for i in range(4)]
    subset = calibration_subset(paths, 5)
    assert len(subset) == 5 and subset[0] == paths[0] and subset[-1] == paths[-1]
    assert {path.split("/")[0] for path in subset} == set("abcde")
    assert calibration_subset(paths[:3], 5) == paths[:3]


def test_int8_directory_records_its_precision_and_holds_only_the_onnx_graph(int8_dir, fp32_dir):
    import onnx

    assert sorted(p.name for p in int8_dir.iterdir()) == ["inference.onnx", "inference_meta.json"]
    metadata = json.loads((int8_dir / "inference_meta.json").read_text())
    fp32_metadata = json.loads((fp32_dir / "inference_meta.json").read_text())
    assert metadata["precision"] == "int8" and fp32_metadata["precision"] == "fp32"
    assert metadata["quantization"]["calibration_images"] == NUM_CALIBRATION
    assert {k: metadata[k] for k in fp32_metadata if k != "precision"} == {
        k: v for k, v in fp32_metadata.items() if k != "precision"
    }
    model = onnx.load(str(int8_dir / "inference.onnx"), load_external_data=False)
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weight_types = {init.data_type for init in model.graph.initializer if len(init.dims) >= 2}
    assert onnx.TensorProto.INT8 in weight_types
    assert (fp32_dir / "inference.json").is_file()  # the source is left as it was


def test_infer_py_runs_the_int8_directory_with_the_fp32_answers(int8_dir, held, expected):
    """As the README runs it (default flags), on images calibration did not see."""
    result = run_script("deploy/py_inference/infer.py", "--model-dir", int8_dir, "--img-path", Path(held[0]).parent,
                        timeout=300)
    lines = parse_lines(result.stdout)
    assert [name for name, _, _ in lines] == held
    answers = expected[1]
    for name, class_id, prob in lines:
        expected_class, expected_prob = answers[Path(name).name]
        assert class_id == expected_class, (name, class_id, prob)
        assert abs(prob - expected_prob) <= INT8_PROB_TOLERANCE, (name, prob, expected_prob)
    [summary] = result.stderr.splitlines()
    assert summary.startswith("int8 engaged via ONNX Runtime ") and str(int8_dir / "inference.onnx") in summary


def test_int8_directory_is_routed_to_onnx_runtime_and_refuses_fp32(int8_dir):
    assert check_model_dir(int8_dir, PredictorOptions()) == (ENGINE_ONNXRUNTIME, "int8")
    with pytest.raises(UnsupportedOptionError, match="runs as int8 only"):
        check_model_dir(int8_dir, PredictorOptions(precision="fp32"))
    # infer.py's default on a GPU machine: one answer, naming the flag that works (not a
    # TensorRT hint that would only lead to it).
    for use_tensorrt in (False, True):
        with pytest.raises(UnsupportedOptionError, match="use --device cpu"):
            check_model_dir(int8_dir, PredictorOptions(use_gpu=True, use_tensorrt=use_tensorrt))


def test_service_answers_from_the_int8_directory(int8_dir, held, expected, tmp_path):
    server = ServiceProcess("--model-dir", int8_dir, "--cpu-threads", "1", "--max-batch-size", "4",
                            log_path=tmp_path / "service.log")
    try:
        server.wait_healthy()
        import httpx

        images = [Path(p).read_bytes() for p in held]
        with httpx.Client(base_url=server.base_url, timeout=60.0) as client:
            answer = client.post("/alexnet/prediction", json=build_request(images)).json()
    finally:
        server.stop()
    class_ids, probs = parse_prediction(answer)
    answers = [expected[1][Path(p).name] for p in held]
    assert class_ids == [class_id for class_id, _ in answers]
    np.testing.assert_allclose(probs, [prob for _, prob in answers], atol=INT8_PROB_TOLERANCE)
    assert "int8 engaged via ONNX Runtime" in (tmp_path / "service.log").read_text()


def test_int8_label_on_an_fp32_graph_is_refused(fp32_dir, tmp_path):
    """Never run fp32 under an int8 label: the ONNX file itself must say it was quantised."""
    fake = tmp_path / "fake_int8"
    fake.mkdir()
    (fake / "inference.onnx").symlink_to(fp32_dir / "inference.onnx")
    metadata = json.loads((fp32_dir / "inference_meta.json").read_text())
    (fake / "inference_meta.json").write_text(json.dumps({**metadata, "precision": "int8"}))
    with pytest.raises(SystemExit, match=r"^error: .*records int8 but .*inference\.onnx is not a model quantised"):
        paddle_infer.main(paddle_infer.get_args_parser().parse_args(
            ["--model-dir", str(fake), "--img-path", str(REPO_ROOT / "images" / "demo.jpg")]))


def quantize_args(*flags):
    return quantize_model.get_args_parser().parse_args([str(f) for f in flags])


def test_missing_onnx_export_names_the_flag_and_the_file(fp32_dir, calibration_dir, tmp_path):
    no_onnx = tmp_path / "no_onnx"
    no_onnx.mkdir()
    shutil.copy(fp32_dir / "inference_meta.json", no_onnx)
    with pytest.raises(SystemExit, match=r"^error: --model-dir: .*missing inference\.onnx \(export with --onnx\)$"):
        quantize_model.main(quantize_args("--model-dir", no_onnx, "--calib-data", calibration_dir,
                                          "--output", tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_no_calibration_images_names_the_flag(fp32_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(SystemExit, match=rf"^error: --calib-data {re.escape(str(empty))}: no image files found$"):
        quantize_model.main(quantize_args("--model-dir", fp32_dir, "--calib-data", empty, "--output", tmp_path / "o"))


def test_unreadable_calibration_image_names_the_file(fp32_dir, calibration_dir, tmp_path):
    data = tmp_path / "calib"
    shutil.copytree(calibration_dir, data)
    bad = data / "class_a" / "img_0b.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(SystemExit, match=rf"^error: calibration image: cannot decode image {re.escape(str(bad))}"):
        quantize_model.main(quantize_args("--model-dir", fp32_dir, "--calib-data", data, "--output", tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_existing_output_is_never_overwritten(fp32_dir, calibration_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    with pytest.raises(SystemExit, match=rf"^error: output {re.escape(str(out))} already exists and is not empty"):
        quantize_model.main(quantize_args("--model-dir", fp32_dir, "--calib-data", calibration_dir, "--output", out))
    with pytest.raises(QuantizationError, match="fp32 model's own directory"):
        quantize(fp32_dir, [str(REPO_ROOT / "images" / "demo.jpg")], fp32_dir)
    assert (out / "keep.txt").read_text() == "earlier work"


def test_quantizing_an_int8_model_again_is_refused(int8_dir, calibration_dir, tmp_path):
    with pytest.raises(QuantizationError, match="already holds an int8 model"):
        quantize(int8_dir, [str(REPO_ROOT / "images" / "demo.jpg")], tmp_path / "again")


def test_quantization_module_does_not_import_paddle():
    """It runs beside ONNX Runtime alone, like the ONNX runner."""
    code = ("import sys, paddlevision.quantization; "
            "assert not any(m == 'paddle' or m.startswith('paddle.') for m in sys.modules), 'paddle imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


# --- the weight range, and the check of what was written --------------------------------

ZEN3_FLAGS = frozenset("fpu sse sse2 avx avx2 fma f16c bmi2".split())  # AVX2, no VNNI
XEON_SPR_FLAGS = ZEN3_FLAGS | {"avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"}
ALDER_LAKE_FLAGS = ZEN3_FLAGS | {"avx_vnni"}


@pytest.mark.parametrize("flags, weight_range", [(ZEN3_FLAGS, "reduced"), (XEON_SPR_FLAGS, "full"),
                                                 (ALDER_LAKE_FLAGS, "full"), (frozenset(), "reduced")])
def test_default_weight_range_follows_the_cpu(flags, weight_range):
    """ONNX Runtime's advice: full-range weights with VNNI, reduce_range without."""
    assert default_weight_range(flags) == weight_range


@pytest.mark.parametrize("weight_range, flags, warned", [("full", ZEN3_FLAGS, True), ("full", XEON_SPR_FLAGS, False),
                                                         ("reduced", ZEN3_FLAGS, False),
                                                         ("reduced", XEON_SPR_FLAGS, False)])
def test_full_range_weights_warn_only_without_vnni(weight_range, flags, warned):
    assert (weight_range_warning(weight_range, flags) is not None) == warned


def largest_int8_weight(model_dir):
    """The largest |value| among the int8 weight tensors of an int8 ``inference.onnx``."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_dir / "inference.onnx"))
    return max(int(np.abs(numpy_helper.to_array(init).astype(np.int32)).max()) for init in model.graph.initializer
               if init.data_type == onnx.TensorProto.INT8 and len(init.dims) >= 2)


# Per-channel symmetric int8: each channel's largest weight becomes 127, or 64 with
# ONNX Runtime's reduce_range (get_qmin_qmax_for_qType).
LARGEST_INT8_WEIGHT = {"full": 127, "reduced": 64}


def test_int8_directory_records_the_weight_range_of_this_cpu(int8_dir):
    import onnx

    quantization = json.loads((int8_dir / "inference_meta.json").read_text())["quantization"]
    assert quantization["weight_range"] == default_weight_range()
    assert largest_int8_weight(int8_dir) == LARGEST_INT8_WEIGHT[default_weight_range()]
    assert quantization["fp32_agreement"]["images"] == NUM_CALIBRATION
    assert quantization["fp32_agreement"]["mean_total_variation"] <= AGREEMENT_TOLERANCE
    properties = {p.key: p.value for p in onnx.load(str(int8_dir / "inference.onnx"),
                                                    load_external_data=False).metadata_props}
    assert properties["paddlevision_weight_range"] == default_weight_range()


@pytest.fixture(scope="module")
def int8_other_range_dir(fp32_dir, calibration_dir, module_tmp):
    """The weight range this CPU would not choose, asked for by name (another deployment target)."""
    other = {"full": "reduced", "reduced": "full"}[default_weight_range()]
    out = module_tmp / f"alexnet_infer_int8_{other}"
    run_script("tools/quantize_model.py", "--model-dir", fp32_dir, "--calib-data", calibration_dir, "--output", out,
               "--weight-range", other)
    return out, other


def test_weight_range_for_another_cpu_is_recorded_and_runs(int8_other_range_dir, held, expected):
    out, weight_range = int8_other_range_dir
    quantization = json.loads((out / "inference_meta.json").read_text())["quantization"]
    assert (quantization["weight_range"], quantization["weight_range_chosen"]) == (weight_range, "requested")
    assert largest_int8_weight(out) == LARGEST_INT8_WEIGHT[weight_range]
    result = run_script("deploy/py_inference/infer.py", "--model-dir", out, "--img-path", Path(held[0]).parent,
                        timeout=300)
    for name, class_id, prob in parse_lines(result.stdout):
        expected_class, expected_prob = expected[1][Path(name).name]
        assert class_id == expected_class and abs(prob - expected_prob) <= INT8_PROB_TOLERANCE, (name, prob)
    bits = "8-bit" if weight_range == "full" else "7-bit"
    assert f"(QDQ graph: int8 weights per channel, {bits} range, uint8 activations)" in result.stderr


def test_full_range_model_on_a_cpu_without_vnni_is_warned_about(int8_dir, int8_other_range_dir, monkeypatch, capsys):
    from paddlevision import device

    full = int8_dir if default_weight_range() == "full" else int8_other_range_dir[0]
    monkeypatch.setattr(device, "cpu_vendor_and_flags", lambda: ("AuthenticAMD", ZEN3_FLAGS))
    paddle_infer.main(paddle_infer.get_args_parser().parse_args(
        ["--model-dir", str(full), "--img-path", str(REPO_ROOT / "images" / "demo.jpg")]))
    summary, warning = capsys.readouterr().err.splitlines()
    assert summary.startswith("int8 engaged via ONNX Runtime")
    assert warning.startswith("warning: this int8 model has full-range (8-bit) weights and this CPU has no VNNI")


def test_int8_model_that_disagrees_with_fp32_is_not_written(fp32_dir, calibration_dir, tmp_path, monkeypatch):
    """A quantiser that writes a wrong model (here: the sign of every weight scale flipped
    after ONNX Runtime's quantize_static) is caught by the check before the directory appears."""
    import onnx
    from onnxruntime import quantization as ort_quantization

    real_quantize_static = ort_quantization.quantize_static

    def quantize_static_then_break(model_input, model_output, *args, **kwargs):
        real_quantize_static(model_input, model_output, *args, **kwargs)
        model = onnx.load(str(model_output))
        weights = {node.input[1] for node in model.graph.node if node.op_type == "DequantizeLinear"
                   and any(i.name == node.input[0] and i.data_type == onnx.TensorProto.INT8
                           for i in model.graph.initializer)}
        for init in model.graph.initializer:
            if init.name in weights:
                scale = onnx.numpy_helper.to_array(init)
                init.CopyFrom(onnx.numpy_helper.from_array(-scale, init.name))
        onnx.save(model, str(model_output))

    monkeypatch.setattr(ort_quantization, "quantize_static", quantize_static_then_break)
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match=r"^error: the int8 model of .* disagrees with fp32 on 8 calibration images: "
                                         r"mean total-variation distance"):
        quantize_model.main(quantize_args("--model-dir", fp32_dir, "--calib-data", calibration_dir, "--output", out))
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the output nor a staging directory


def test_int8_model_that_onnx_runtime_cannot_load_is_not_written(fp32_dir, calibration_dir, tmp_path, monkeypatch):
    from onnxruntime import quantization as ort_quantization

    def quantize_static_garbage(model_input, model_output, *args, **kwargs):
        Path(model_output).write_bytes(b"not an onnx model")

    monkeypatch.setattr(ort_quantization, "quantize_static", quantize_static_garbage)
    with pytest.raises(SystemExit, match=r"^error: ONNX Runtime could not quantise "):
        quantize_model.main(quantize_args("--model-dir", fp32_dir, "--calib-data", calibration_dir, "--output",
                                          tmp_path / "out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
