"""Image decoding shared by the datasets, the inference tools and deployment code.

This module depends only on PIL and numpy (never paddle), so that deployment code can
decode images exactly as training and evaluation did without importing the framework.
"""

import io
import os

import numpy as np
from PIL import Image

__all__ = ["IMG_EXTENSIONS", "ImageDecodeError", "load_image", "has_image_extension"]

# torchvision.datasets.folder.IMG_EXTENSIONS; compared against lower-cased names.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# Modes whose samples are wider than 8 bit. PIL's convert("RGB") clips them to 0..255
# instead of scaling, which turns an ordinary 16-bit photograph white, so they are
# rescaled with numpy instead.
_HIGH_BIT_DEPTH_MODES = ("I", "F")


def has_image_extension(filename):
    """Whether ``filename`` ends with one of :data:`IMG_EXTENSIONS`, ignoring case."""
    return filename.lower().endswith(IMG_EXTENSIONS)


class ImageDecodeError(ValueError):
    """An image that exists but cannot be decoded (empty, not an image, truncated, too large).

    ``name`` is the file path, or the caller-given name for ``bytes`` input, so that a
    failing sample deep inside a data loader can be found on disk.
    """

    def __init__(self, name, reason=None):
        # Paddle's DataLoader re-raises a worker's exception in the main process as
        # ``type(err)(formatted_message)``: a lone argument is that message, kept verbatim.
        super().__init__(str(name) if reason is None else f"cannot decode image {name}: {reason}")
        self.name = name
        self.reason = reason

    def __reduce__(self):
        # DataLoader workers send exceptions to the main process by pickling them; the
        # default reduction would call __init__ with the formatted message only.
        return type(self), (self.name, self.reason)


class ImageTooLargeError(ImageDecodeError):
    """An image refused for its pixel count before decoding (``max_pixels`` or PIL's
    decompression-bomb limit): the input may be valid, just more than the caller accepts."""


def load_image(source, name=None, max_pixels=None):
    """Decode an image file or encoded bytes into a fully loaded RGB ``PIL.Image``.

    Args:
        source: a path (``str`` or ``os.PathLike``) or the encoded image as ``bytes``.
        name: how error messages refer to the image; defaults to the path, or to
            ``"<bytes>"`` for bytes input.
        max_pixels: if given, images with ``width * height > max_pixels`` are refused
            from their header, before any pixel data is decoded.

    Raises:
        ImageDecodeError: empty input, data that is not an image, a truncated file, an
            image over ``max_pixels`` or over PIL's own decompression-bomb limit, or a
            mode that cannot be converted to RGB.
        OSError: the file cannot be opened at all (missing, no permission); that is a
            problem with the dataset's file list, not with the image.

    The conversion matches torchvision's ``pil_loader`` (``img.convert("RGB")``) for
    all 8-bit modes, so decoded pixels are identical to torchvision's. 16-bit and 32-bit
    integer and float images are rescaled to 8 bit rather than clipped (see
    :func:`_to_rgb`). EXIF orientation is deliberately not applied: torchvision does not
    transpose either, and a model reproduced from torchvision must see the same pixels.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        display_name = name if name is not None else "<bytes>"
        data = bytes(source)
        if not data:
            raise ImageDecodeError(display_name, "empty input (0 bytes)")
        return _decode(io.BytesIO(data), display_name, max_pixels)

    path = os.fspath(source)
    display_name = name if name is not None else path
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ImageDecodeError(display_name, "empty file (0 bytes)")
        return _decode(f, display_name, max_pixels)


def _decode(fp, display_name, max_pixels):
    try:
        with Image.open(fp) as img:
            _check_pixel_count(img, display_name, max_pixels)
            # Decode now so that truncated or corrupt data fails here, naming the
            # file, instead of inside a later transform.
            img.load()
            return _to_rgb(img, display_name)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(display_name, f"decompression bomb guard: {exc}") from exc
    except ImageDecodeError:
        raise
    except Image.UnidentifiedImageError as exc:
        # PIL's own message repeats the file object's repr; the name is already ours.
        raise ImageDecodeError(display_name, "not an image in a format PIL can read") from exc
    except (OSError, SyntaxError, EOFError, ValueError) as exc:
        # PIL reports bad data as UnidentifiedImageError (an OSError), OSError for
        # truncation, and SyntaxError/EOFError/ValueError from some format plugins.
        raise ImageDecodeError(display_name, f"{type(exc).__name__}: {exc}") from exc


def _check_pixel_count(img, display_name, max_pixels):
    """Refuse from the header what would be too large to decode. PIL itself only warns
    between its MAX_IMAGE_PIXELS and twice that, and turning that warning into an error
    with the warnings module is not thread-safe, so the limit is compared here."""
    width, height = img.size
    limits = [(max_pixels, f"max_pixels={max_pixels}"), (Image.MAX_IMAGE_PIXELS, "PIL's decompression-bomb limit")]
    for limit, what in limits:
        if limit is not None and width * height > limit:
            raise ImageTooLargeError(display_name, f"{width}x{height} = {width * height} pixels exceeds {what}")


def _to_rgb(img, display_name):
    if img.mode == "RGB":
        return img.copy()
    if img.mode.startswith("I;16") or img.mode in _HIGH_BIT_DEPTH_MODES:
        return _high_bit_depth_to_rgb(img)
    try:
        # Same call as torchvision's pil_loader: P (with or without transparency), L, LA,
        # RGBA, CMYK, YCbCr, ... all map to RGB exactly as they do there.
        return img.convert("RGB")
    except ValueError as exc:
        raise ImageDecodeError(display_name, f"cannot convert mode {img.mode} to RGB: {exc}") from exc


def _high_bit_depth_to_rgb(img):
    """Scale a single-channel image wider than 8 bit to 8-bit grey, then to RGB.

    ``I;16*`` modes are 16-bit by definition and map 0..65535 to 0..255. Mode ``I``
    (32-bit int) and ``F`` (float) do not say their range, so the smallest of the usual
    full scales that holds the data is used: 1.0 for floats in [0, 1] (normalised data),
    255 for 8-bit data, otherwise 65535 (16-bit PNG/TIFF, which older Pillow versions
    open as ``I``). Negative values, NaN and values above the full scale are clipped.
    """
    values = np.asarray(img).astype(np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    if img.mode.startswith("I;16"):
        full_scale = 65535.0
    else:
        peak = values.max(initial=0.0)
        if img.mode == "F" and peak <= 1.0:
            full_scale = 1.0
        elif peak <= 255.0:
            full_scale = 255.0
        else:
            full_scale = 65535.0
    grey = np.rint(np.clip(values, 0.0, full_scale) * (255.0 / full_scale)).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")
