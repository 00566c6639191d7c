"""Turn Fashion-MNIST, as Debian's ``dataset-fashion-mnist`` installs it, into the
ImageFolder layout train.py reads: ``OUTPUT/{train,val}/<label>_<class>/*.png``.

    apt-get install -y dataset-fashion-mnist
    python tools/prepare_fashion_mnist.py --output data/fashion_mnist --train-per-class 500 --val-per-class 100 --size 64

train/ comes from the 60,000 training images, val/ from the 10,000 test images. The
selection is deterministic: the first N images of each class in file order (the files
are already shuffled across classes). The 28x28 grey images are upscaled with bilinear
interpolation and saved as RGB, because AlexNet needs at least 63x63 three-channel input.

Fashion-MNIST: Zalando Research (Xiao, Rasul, Vollgraf, 2017), MIT licence
("Copyright 2017 Zalando SE"), packaged by Debian under the same terms.
"""

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from paddlevision_cli import ArgumentParser

DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "apt-get update && apt-get install -y dataset-fashion-mnist"
# Fashion-MNIST's classes in label order. Folders are named "<label>_<name>" so that
# ImageFolder's sorted class list gives back the dataset's own label numbers.
CLASS_NAMES = ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
FOLDERS = [f"{label}_{name}" for label, name in enumerate(CLASS_NAMES)]
SPLITS = {"train": "train", "val": "t10k"}  # our split -> file prefix
IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}
FORMATS = {"png": ("PNG", {}), "jpeg": ("JPEG", {"quality": 95})}

PROVENANCE = """Fashion-MNIST subset made by tools/prepare_fashion_mnist.py
source: {source} (Debian package dataset-fashion-mnist)
upstream: Zalando Research, Fashion-MNIST (Xiao, Rasul, Vollgraf 2017), MIT licence, Copyright 2017 Zalando SE
train: first {train_per_class} images per class of train-*; val: first {val_per_class} per class of t10k-*
images: 28x28 grey upscaled to {size}x{size} with bilinear interpolation, saved as RGB {format}
"""


def find_idx_file(source, name):
    for candidate in (source / f"{name}.gz", source / name):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"error: Fashion-MNIST file {source / name}(.gz) not found; install it with: {INSTALL_HINT}")


def read_idx(path, kind):
    """An IDX file (gzipped or not) as a uint8 array: images ``[N, rows, cols]``, labels ``[N]``."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic != IDX_MAGIC[kind]:
        raise SystemExit(f"error: {path} is not an IDX {kind} file (magic {magic:#010x})")
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def first_per_class(labels, per_class):
    chosen = []
    for label in range(len(CLASS_NAMES)):
        indices = np.flatnonzero(labels == label)
        if len(indices) < per_class:
            raise SystemExit(f"error: only {len(indices)} images of class {CLASS_NAMES[label]} available, "
                             f"{per_class} asked for")
        chosen.extend(indices[:per_class].tolist())
    return sorted(chosen)


def write_split(images, labels, indices, directory, size, image_format):
    pil_format, options = FORMATS[image_format]
    extension = "png" if image_format == "png" else "jpg"
    for folder in FOLDERS:
        (directory / folder).mkdir(parents=True)
    for index in indices:
        image = Image.fromarray(images[index], mode="L").resize((size, size), Image.BILINEAR).convert("RGB")
        image.save(directory / FOLDERS[labels[index]] / f"{index:05d}.{extension}", pil_format, **options)


def prepare(source, output, train_per_class, val_per_class, size, image_format="png"):
    source, output = Path(source), Path(output)
    for split in SPLITS:
        if (output / split).exists():
            raise SystemExit(f"error: {output / split} already exists; choose another --output or remove it")
    per_class = {"train": train_per_class, "val": val_per_class}
    counts = {}
    for split, prefix in SPLITS.items():
        images = read_idx(find_idx_file(source, f"{prefix}-images-idx3-ubyte"), "images")
        labels = read_idx(find_idx_file(source, f"{prefix}-labels-idx1-ubyte"), "labels")
        indices = first_per_class(labels, per_class[split])
        write_split(images, labels, indices, output / split, size, image_format)
        counts[split] = len(indices)
    (output / "PROVENANCE.txt").write_text(PROVENANCE.format(
        source=source, train_per_class=train_per_class, val_per_class=val_per_class, size=size, format=image_format))
    return counts


def get_args_parser(add_help=True):
    parser = ArgumentParser(description="Fashion-MNIST subset in the ImageFolder layout", add_help=add_help)
    parser.add_argument("--source", default=str(DEFAULT_SOURCE), help="directory with the (gzipped) IDX files")
    parser.add_argument("--output", required=True, help="dataset root to create (train/ and val/ go inside)")
    parser.add_argument("--train-per-class", default=500, type=int, help="training images per class (max 6000)")
    parser.add_argument("--val-per-class", default=100, type=int, help="validation images per class (max 1000)")
    parser.add_argument("--size", default=64, type=int, help="side of the upscaled square images")
    parser.add_argument("--format", default="png", choices=sorted(FORMATS), help="image file format")
    return parser


def main(args):
    counts = prepare(args.source, args.output, args.train_per_class, args.val_per_class, args.size, args.format)
    print(f"wrote {counts['train']} train and {counts['val']} val images of {args.size}x{args.size} "
          f"({len(CLASS_NAMES)} classes) under {args.output}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
