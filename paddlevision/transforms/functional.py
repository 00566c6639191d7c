"""The image operations behind the transforms, each with the semantics of its
``torchvision.transforms.functional`` counterpart on PIL input, so that a model trained with
torchvision's recipe sees the same pixels. No paddle: deployment shares the preprocessing."""

import math
import numbers

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

# Names accepted for ``interpolation`` and the PIL filter torchvision uses for each on PIL
# input (torchvision's NEAREST_EXACT also maps to PIL's NEAREST for PIL images).
INTERPOLATION_MODES = {
    "nearest": Image.Resampling.NEAREST,
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}


def pil_interpolation(interpolation):
    try:
        return INTERPOLATION_MODES[interpolation]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown interpolation {interpolation!r}; expected one of {sorted(INTERPOLATION_MODES)}"
        ) from None


def _check_pil(img):
    if not isinstance(img, Image.Image):
        raise TypeError(f"Expected a PIL image, got {type(img).__name__}")


def as_height_width(size, name):
    if isinstance(size, numbers.Integral):
        return int(size), int(size)
    if isinstance(size, (list, tuple)) and len(size) in (1, 2):
        return (int(size[0]), int(size[0])) if len(size) == 1 else (int(size[0]), int(size[1]))
    raise ValueError(f"{name} must be an int or a sequence of 1 or 2 ints, got {size!r}")


def resized_output_size(image_height, image_width, size):
    """Output ``(height, width)`` of :func:`resize`; the longer side is truncated, not
    rounded, as torchvision does."""
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    if isinstance(size, (list, tuple)) and len(size) == 1:
        size = size[0]
    if not isinstance(size, numbers.Integral):
        raise ValueError(f"size must be an int or a sequence of 1 or 2 ints, got {size!r}")
    short, long = sorted((image_height, image_width))
    new_short, new_long = int(size), int(size * long / short)
    if image_width <= image_height:
        return new_long, new_short
    return new_short, new_long


def resize(img, size, interpolation="bilinear"):
    """Resize a PIL image; an int ``size`` is the target length of the shorter side."""
    _check_pil(img)
    resample = pil_interpolation(interpolation)
    height, width = resized_output_size(img.height, img.width, size)
    if (height, width) == (img.height, img.width):
        # torchvision hands back the input untouched in this case rather than resampling it.
        return img
    return img.resize((width, height), resample)


def crop(img, top, left, height, width):
    """Crop a ``height x width`` box at ``(top, left)``; pixels outside the image are zero."""
    _check_pil(img)
    return img.crop((left, top, left + width, top + height))


def center_crop(img, size):
    """Crop the centre of a PIL image, zero-padding the dimensions smaller than the crop.

    The offset is ``round((image - crop) / 2)`` (Python's round-half-to-even) when the image
    is larger; when it is smaller, the image is padded by ``(crop - image) // 2`` on the
    top/left and the rest on the bottom/right, as torchvision's pad-then-crop does.
    """
    _check_pil(img)
    crop_height, crop_width = as_height_width(size, "size")

    def offset(image_len, crop_len):
        if crop_len > image_len:
            return -((crop_len - image_len) // 2)
        return int(round((image_len - crop_len) / 2.0))

    top = offset(img.height, crop_height)
    left = offset(img.width, crop_width)
    return crop(img, top, left, crop_height, crop_width)


def resized_crop(img, top, left, height, width, size, interpolation="bilinear"):
    return resize(crop(img, top, left, height, width), size, interpolation)


def hflip(img):
    _check_pil(img)
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def to_normalized_array(img, mean, std):
    """PIL image -> float32 CHW ``(pixel / 255 - mean) / std``, in the float32 order of
    torchvision's ``ToTensor`` + ``Normalize``, so that both agree to rounding."""
    _check_pil(img)
    pixels = np.asarray(img)
    if pixels.dtype != np.uint8:
        raise TypeError(f"Expected an 8-bit image, got PIL mode {img.mode!r}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    channels = pixels.shape[2]
    if mean.shape[0] != channels or std.shape[0] != channels:
        raise ValueError(
            f"mean and std need one value per channel ({channels}), got {mean.size} and {std.size}"
        )
    if np.any(std == 0):
        raise ValueError(f"std must not contain zeros, got {std.ravel().tolist()}")
    # In place after the one copy: no three more temporaries per image in every loader worker.
    chw = pixels.transpose(2, 0, 1).astype(np.float32)
    chw /= np.float32(255)
    chw -= mean
    chw /= std
    return chw


def erase(array, top, left, height, width, value):
    """A copy with the box replaced by ``value``: a scalar, one per channel, or ``(C, height, width)``."""
    erased = np.array(array, copy=True)
    value = np.asarray(value, dtype=erased.dtype)
    if value.ndim == 1:
        value = value[:, None, None]
    erased[..., top : top + height, left : left + width] = value
    return erased


# --- Photometric and geometric ops used by AutoAugment --------------------------------------


def _fill_color(img, fill):
    """PIL ``fillcolor`` for ``fill``: torchvision treats None as 0 and repeats a scalar per band."""
    bands = len(img.getbands())
    if fill is None:
        fill = 0
    if isinstance(fill, numbers.Number):
        fill = [fill] * bands
    fill = list(fill)
    if len(fill) == 1:
        fill = fill * bands
    if len(fill) != bands:
        raise ValueError(f"fill needs 1 or {bands} values for this image, got {len(fill)}")
    if img.mode == "F":
        return fill[0]
    fill = tuple(int(v) for v in fill)
    return fill if bands > 1 else fill[0]


def _affine(img, inverse_matrix, interpolation, fill):
    """PIL takes the inverse map: output -> input coordinates."""
    return img.transform(
        img.size,
        Image.Transform.AFFINE,
        inverse_matrix,
        pil_interpolation(interpolation),
        fillcolor=_fill_color(img, fill),
    )


def shear_x(img, angle, interpolation="nearest", fill=None):
    """Shear about the top-left corner: output ``(x, y)`` samples input ``(x + tan(angle) * y, y)``.
    An angle in degrees, as torchvision's affine takes it."""
    _check_pil(img)
    factor = math.tan(math.radians(angle))
    return _affine(img, (1.0, factor, 0.0, 0.0, 1.0, 0.0), interpolation, fill)


def shear_y(img, angle, interpolation="nearest", fill=None):
    """Shear about the top-left corner. sin/cos, not tan, because torchvision's general
    rotation-and-shear matrix reduces to it: the two differ in the last bit for about a third
    of the angles, enough to move a nearest-neighbour sample now and then."""
    _check_pil(img)
    radians = math.radians(angle)
    factor = math.sin(radians) / math.cos(radians)
    return _affine(img, (1.0, 0.0, 0.0, factor, 1.0, 0.0), interpolation, fill)


def translate(img, dx, dy, interpolation="nearest", fill=None):
    _check_pil(img)
    return _affine(img, (1.0, 0.0, -dx, 0.0, 1.0, -dy), interpolation, fill)


def rotate(img, angle, interpolation="nearest", fill=None):
    """Counter-clockwise, about the centre, keeping the size."""
    _check_pil(img)
    return img.rotate(angle, pil_interpolation(interpolation), fillcolor=_fill_color(img, fill))


def adjust_brightness(img, factor):
    return ImageEnhance.Brightness(img).enhance(factor)


def adjust_saturation(img, factor):
    return ImageEnhance.Color(img).enhance(factor)


def adjust_contrast(img, factor):
    return ImageEnhance.Contrast(img).enhance(factor)


def adjust_sharpness(img, factor):
    return ImageEnhance.Sharpness(img).enhance(factor)


def posterize(img, bits):
    return ImageOps.posterize(img, bits)


def solarize(img, threshold):
    return ImageOps.solarize(img, threshold)


def autocontrast(img):
    return ImageOps.autocontrast(img)


def equalize(img):
    return ImageOps.equalize(img)


def invert(img):
    return ImageOps.invert(img)
