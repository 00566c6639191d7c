import pathlib
import subprocess
import sys

from paddlevision.labels import class_names_for, imagenet_class_names


def test_imagenet_class_names_in_standard_order():
    names = imagenet_class_names()
    assert len(names) == 1000 == len(set(names))
    assert (names[0], names[1], names[8], names[999]) == ("tench", "goldfish", "hen", "toilet tissue")
    names.clear()  # callers get their own copy
    assert len(imagenet_class_names()) == 1000


def test_class_names_for():
    assert class_names_for(4, ("a", "b", "c", "d")) == ["a", "b", "c", "d"]
    assert class_names_for(1000)[8] == "hen"
    assert class_names_for(4) is None


def test_labels_does_not_import_paddle():
    code = "import sys, paddlevision.labels; assert 'paddle' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=pathlib.Path(__file__).resolve().parents[1])
