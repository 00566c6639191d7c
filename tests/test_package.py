"""paddlevision as an installed package: importable from anywhere, paddle-free until a
submodule needs paddle, and entry points that start without noise or path edits."""

import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

ENTRY_POINTS = ["train.py", "tools/predict.py", "tools/export_model.py", "tools/convert_torch_weights.py",
                "tools/plot_metrics.py", "deploy/py_inference/infer.py", "deploy/onnx/infer.py",
                "deploy/py_serving/web_service.py", "deploy/py_serving/pipeline_http_client.py"]


def test_import_from_another_directory_is_paddle_free_until_models(tmp_path):
    code = ("import sys, paddlevision; assert 'paddle' not in sys.modules, 'import paddlevision imported paddle'; "
            "model = paddlevision.models.alexnet(); print(type(model).__name__, paddlevision.__file__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    name, location = result.stdout.split()
    assert name == "AlexNet" and location == str(REPO_ROOT / "paddlevision" / "__init__.py")


def test_unknown_attribute_is_an_attribute_error():
    import paddlevision

    with pytest.raises(AttributeError, match="no attribute 'modelz'"):
        paddlevision.modelz


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_entry_point_help_is_quiet(script, tmp_path):
    """--help from another directory: exit 0, the usage on stdout, nothing on stderr (no
    warning from paddle's import, no ModuleNotFoundError without the repository on sys.path)."""
    result = subprocess.run([sys.executable, str(REPO_ROOT / script), "--help"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith("usage:")


def test_no_python_file_edits_sys_path():
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    offenders = [name for name in tracked.split() if re.search(r"sys\.path\.(insert|append)|sys\.path\s*=",
                                                             (REPO_ROOT / name).read_text(encoding="utf-8"))]
    assert offenders == []
