"""paddlevision as an installed package: importable from anywhere, paddle-free until a
submodule needs paddle, and entry points that start without noise or path edits."""

import os
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


# The flags through which the README's commands write files or directories.
_OUTPUT_FLAG = re.compile(r"(?:--output-dir|--output|--model-dir|--save-inference-dir|--dst|--json|--log_dir|--out)"
                          r"[ =](\S+)")


def test_what_the_readmes_commands_write_is_ignored_by_git():
    """Pasting the README's commands leaves `git status` clean: every relative output path
    of an export, quantisation, training, conversion or benchmark command is in .gitignore.
    (A --model-dir that a command only reads is ignored as well, which costs nothing.)"""
    written = set()
    for readme in ("README.md", "README_cn.md", "deploy/py_inference/README.md", "deploy/py_serving/README.md"):
        blocks = re.findall(r"```bash\n(.*?)```", (REPO_ROOT / readme).read_text(encoding="utf-8"), re.S)
        for block in blocks:
            written.update(os.path.normpath(path.strip("\"'")) for path in _OUTPUT_FLAG.findall(block))
    relative = sorted(p for p in written if not p.startswith(("/", "$", "<", "~")) and p not in ("", "''", "FILE"))
    assert relative, "no output paths found: the pattern no longer fits the README"
    # A path may be a file or a directory (whose patterns end in '/'): either form being ignored will do.
    candidates = [form for path in relative for form in (path, f"{path}/file")]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *candidates], cwd=REPO_ROOT, capture_output=True,
                             text=True).stdout.split()
    assert [p for p in relative if p not in ignored and f"{p}/file" not in ignored] == []
