"""train.py's defaults against the torchvision reference recipe for AlexNet:

    torchrun --nproc_per_node=8 train.py --model alexnet --lr 1e-2

(references/classification, 8 GPUs x 32 images = 256 per step). Everything else is
train.py's default there. Where we deliberately differ, the difference is listed below
and in the table of docs/alignment.md, which this test keeps in step with the code.
"""

import inspect
from pathlib import Path

import pytest

from paddlevision.transforms import ClassificationPresetEval, ClassificationPresetTrain
from train import get_args_parser

DOCS = Path(__file__).resolve().parents[2] / "docs" / "alignment.md"

# Our argument name -> the value the torchvision AlexNet recipe trains with.
RECIPE = {
    "model": "alexnet",
    "opt": "sgd",
    "lr": 1e-2,  # the recipe's --lr 1e-2
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "lr_scheduler": "steplr",
    "lr_step_size": 30,
    "lr_gamma": 0.1,
    "lr_warmup_epochs": 0,
    "lr_warmup_method": "constant",
    "lr_warmup_decay": 0.01,
    "lr_min": 0.0,
    "epochs": 90,
    "batch_size": 32,  # per GPU
    "label_smoothing": 0.0,
    "auto_augment": None,
    "random_erase": 0.0,
    "train_crop_size": 224,
    "val_resize_size": 256,
    "val_crop_size": 224,
    "dropout": 0.5,  # torchvision's AlexNet default
    "print_freq": 10,
    "start_epoch": 0,
}

# Our argument name -> (torchvision train.py's default, ours). Each has a row in the table.
DELIBERATE_DIFFERENCES = {
    "model": ("resnet18", "alexnet"),
    "lr": (0.1, 0.01),
    "workers": (16, 4),
    "output_dir": (".", "./output"),
    "data_path": ("/datasets01/imagenet_full_size/061417/", None),
}


@pytest.fixture(scope="module")
def defaults():
    return vars(get_args_parser().parse_args([]))


@pytest.mark.parametrize("name", RECIPE)
def test_default_is_the_recipe(defaults, name):
    assert defaults[name] == RECIPE[name]


@pytest.mark.parametrize("name", DELIBERATE_DIFFERENCES)
def test_deliberate_difference_is_as_documented(defaults, name):
    torchvision_default, ours = DELIBERATE_DIFFERENCES[name]
    assert defaults[name] == ours and ours != torchvision_default
    flag = "--" + name.replace("_", "-")
    rows = [line for line in DOCS.read_text().splitlines() if line.startswith("|") and f"`{flag}`" in line]
    assert rows, f"{flag} missing from the table of deliberate differences in {DOCS}"


def test_presets_use_the_recipe_interpolation_and_flip():
    """train.py has no --interpolation: the presets' defaults are the recipe's."""
    train_params = inspect.signature(ClassificationPresetTrain).parameters
    eval_params = inspect.signature(ClassificationPresetEval).parameters
    assert train_params["interpolation"].default == eval_params["interpolation"].default == "bilinear"
    assert train_params["hflip_prob"].default == 0.5
