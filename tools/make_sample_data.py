"""Build the project's own sample data from the photographs shipped in scikit-image.

Writes:
  test_images/lite_data.tar  lite_data/{train,val}/<class>/*.jpg, 4 classes x 4 images each
  images/demo.jpg            the cat photograph, for the inference demo
  test_images/README.md      contents, the command that made them, and provenance

Every image is a different random crop / rescale / flip / colour jitter of its class's
source photograph, drawn from a seeded RNG, so re-running gives the same pictures; the
tar has sorted members and fixed metadata, so with the same Pillow/libjpeg it is
byte-identical.

Usage (from the repository root):
    python tools/make_sample_data.py
"""

import importlib.metadata
import importlib.util
import io
import os
import tarfile

import numpy as np
import PIL
from PIL import Image, ImageEnhance

from paddlevision_cli import ArgumentParser

# class folder name -> source file in skimage/data, and its provenance as stated in the
# docstrings of skimage/data/_fetchers.py (scikit-image 0.26).
SOURCES = {
    "astronaut": (
        "astronaut.png",
        "Eileen Collins, NASA astronaut; from the NASA Great Images database",
        "public domain (NASA; \"No known copyright restrictions, released into the public domain\")",
    ),
    "cat": (
        "chelsea.png",
        "Chelsea the cat, photographed by Stefan van der Walt",
        "CC0 by the photographer (\"No copyright restrictions\")",
    ),
    "coffee": (
        "coffee.png",
        "coffee cup, photographed by Rachel Michetti, courtesy of Pikolo Espresso Bar",
        "CC0 by the photographer (\"No copyright restrictions\")",
    ),
    "rocket": (
        "rocket.jpg",
        "launch of DSCOVR on Falcon 9, photographed by SpaceX",
        "public domain (released into the public domain by SpaceX)",
    ),
}
SPLITS = ("train", "val")
IMAGES_PER_CLASS = 4
JPEG_QUALITY = 90
# Fixed tar metadata so the archive does not depend on when or by whom it was built.
TAR_MTIME = 1_700_000_000


def skimage_data_dir():
    # Located without importing skimage, which pulls in scipy and more.
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-image is not installed; pass --skimage-data-dir")
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def random_view(photo, rng):
    """A random crop, resized, maybe mirrored, colour-jittered (test_images/README.md gives the ranges)."""
    width, height = photo.size
    area = rng.uniform(0.35, 1.0) * width * height
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    crop_w = min(width, int(round(np.sqrt(area * aspect))))
    crop_h = min(height, int(round(np.sqrt(area / aspect))))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    view = photo.crop((left, top, left + crop_w, top + crop_h))

    scale = int(rng.integers(300, 381)) / min(crop_w, crop_h)
    view = view.resize((round(crop_w * scale), round(crop_h * scale)), Image.Resampling.BICUBIC)

    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        view = enhancer(view).enhance(rng.uniform(0.75, 1.25))
    return view


def encode_jpeg(image, quality):
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def build_lite_data(data_dir, seed):
    """{archive member path: JPEG bytes}"""
    files = {}
    for class_index, (class_name, (filename, _, _)) in enumerate(sorted(SOURCES.items())):
        with Image.open(os.path.join(data_dir, filename)) as source:
            photo = source.convert("RGB")
        for split_index, split in enumerate(SPLITS):
            # A separate stream per (class, split): val views never repeat train views,
            # and adding a class does not change the others' images.
            rng = np.random.default_rng([seed, class_index, split_index])
            for i in range(IMAGES_PER_CLASS):
                member = f"lite_data/{split}/{class_name}/{class_name}_{split}_{i}.jpg"
                files[member] = encode_jpeg(random_view(photo, rng), JPEG_QUALITY)
    return files


def write_reproducible_tar(path, files):
    directories = set()
    for member in files:
        parent = os.path.dirname(member)
        while parent:
            directories.add(parent)
            parent = os.path.dirname(parent)

    def tar_info(name, is_dir, size=0):
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
        info.mode = 0o755 if is_dir else 0o644
        info.size = size
        info.mtime = TAR_MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(directories | set(files)):
            if name in directories:
                tar.addfile(tar_info(name, is_dir=True))
            else:
                tar.addfile(tar_info(name, is_dir=False, size=len(files[name])), io.BytesIO(files[name]))


def readme_text(files, tar_path, seed):
    sizes = {}
    for member, data in sorted(files.items()):
        with Image.open(io.BytesIO(data)) as image:
            sizes[member] = image.size
    widths = [w for w, _ in sizes.values()]
    heights = [h for _, h in sizes.values()]
    per_split = {split: sum(member.split("/")[1] == split for member in files) for split in SPLITS}
    lines = [
        "# Sample data",
        "",
        "Made by `tools/make_sample_data.py` from openly licensed photographs that ship inside",
        f"the scikit-image wheel (`skimage/data/`; made with scikit-image {importlib.metadata.version('scikit-image')}",
        f"and Pillow {PIL.__version__}). Regenerate (deterministic) from the repository root, with scikit-image",
        "installed (`pip install scikit-image`, needed only for this), with:",
        "",
        "```",
        f"python tools/make_sample_data.py --seed {seed}",
        "```",
        "",
        "## `lite_data.tar`",
        "",
        f"{len(files)} JPEG images (quality {JPEG_QUALITY}), {os.path.getsize(tar_path)} bytes, laid out as",
        "`lite_data/train/<class>/*.jpg` and `lite_data/val/<class>/*.jpg`:",
        f"{per_split['train']} train and {per_split['val']} val images, {IMAGES_PER_CLASS} per class and split,",
        f"classes (sorted, so label 0..{len(SOURCES) - 1}): {', '.join(sorted(SOURCES))}.",
        "",
        "Each image is a different random view of its class's source photograph: a crop of",
        "35-100% of the area with aspect (width/height) 3:4 to 4:3, resized so the short side is 300-380 px,",
        "mirrored with probability 1/2, and brightness/contrast/saturation jittered by up to",
        f"25%. Image sizes range from {min(widths)}x{min(heights)} to {max(widths)}x{max(heights)} (width x height, per axis).",
        "Train and val views come from different random streams. Members are sorted and have",
        "fixed mtime/uid/gid, so the archive is reproducible with the same Pillow/libjpeg.",
        "",
        "It is meant for smoke tests and the lite training/eval run, not for measuring accuracy:",
        "every class is one photograph.",
        "",
        "## `../images/demo.jpg`",
        "",
        "The cat photograph (`chelsea.png`) unchanged except for JPEG encoding (quality 95).",
        "",
        "## Sources and licences",
        "",
        "As stated in the docstrings of `skimage/data/_fetchers.py` (scikit-image 0.26):",
        "",
        "| class | source file | what | licence |",
        "| --- | --- | --- | --- |",
    ]
    for class_name, (filename, description, licence) in sorted(SOURCES.items()):
        lines.append(f"| {class_name} | `{filename}` | {description} | {licence} |")
    lines.append("")
    return "\n".join(lines)


def main():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skimage-data-dir", default=None, help="default: skimage/data of the installed package")
    parser.add_argument("--output-dir", default=".", help="repository root to write into (default: .)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data_dir = args.skimage_data_dir or skimage_data_dir()
    test_images_dir = os.path.join(args.output_dir, "test_images")
    images_dir = os.path.join(args.output_dir, "images")
    os.makedirs(test_images_dir, exist_ok=True)
    os.makedirs(images_dir, exist_ok=True)

    files = build_lite_data(data_dir, args.seed)
    tar_path = os.path.join(test_images_dir, "lite_data.tar")
    write_reproducible_tar(tar_path, files)

    with Image.open(os.path.join(data_dir, SOURCES["cat"][0])) as cat:
        cat.convert("RGB").save(os.path.join(images_dir, "demo.jpg"), format="JPEG", quality=95)

    with open(os.path.join(test_images_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write(readme_text(files, tar_path, args.seed))
    print(f"wrote {tar_path} ({len(files)} images), {os.path.join(images_dir, 'demo.jpg')}")


if __name__ == "__main__":
    main()
