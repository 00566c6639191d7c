"""Image decoding shared by the datasets, the inference tools and deployment code;
PIL and numpy only, so deployment decodes exactly as training did without paddle."""

import io
import os

import numpy as np
from PIL import Image

from paddlevision.transforms.functional import resized_output_size

__all__ = ["IMG_EXTENSIONS", "IMAGE_FORMATS", "ImageDecodeError", "ImageTooLargeError", "load_image",
           "has_image_extension"]

# torchvision.datasets.folder.IMG_EXTENSIONS; compared against lower-cased names.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# The PIL decoders of those extensions (PPM also reads PGM and PBM; JPEG also camera MPO files),
# and the only ones tried: the content decides the decoder, and Pillow registers 43 of them
# (EPS through Ghostscript, JPEG 2000, FITS, ...) that no file here should reach.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "PPM", "TIFF", "WEBP")

# Modes whose samples are wider than 8 bit. PIL's convert("RGB") clips them to 0..255
# instead of scaling, which turns an ordinary 16-bit photograph white, so they are
# rescaled with numpy instead.
_HIGH_BIT_DEPTH_MODES = ("I", "F")

# rint(v * 255 / 65535) for every 16-bit value v: the 8-bit grey of 16-bit data, one lookup per
# pixel instead of float64 arithmetic over the image.
_SIXTEEN_TO_EIGHT_BIT = np.rint(np.arange(65536) * (255.0 / 65535.0)).astype(np.uint8)
_FLOAT_ROWS_PER_STEP = 256


def has_image_extension(filename):
    return filename.lower().endswith(IMG_EXTENSIONS)


class ImageDecodeError(ValueError):
    """An image that exists but cannot be decoded (empty, not an image, truncated, too
    large); ``name`` is its path or the caller's name for bytes input."""

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
    """An image refused for its pixel count before decoding: it may be valid, just more
    than the caller accepts."""


def load_image(source, name=None, max_pixels=None, resize_size=None):
    """A path or encoded bytes as a fully loaded RGB ``PIL.Image``, with torchvision's
    ``pil_loader`` pixels for 8-bit modes; wider modes are rescaled, not clipped.

    Only :data:`IMAGE_FORMATS` are decoded. From the header, before decoding, an image is
    refused (:class:`ImageTooLargeError`) with more pixels than ``max_pixels`` or PIL's
    decompression-bomb limit; with ``resize_size`` (the shorter side it will be resized to,
    as the evaluation preset does) also if the resized image would have more, which bounds
    the aspect ratio. Raises :class:`ImageDecodeError` for anything wrong with the data,
    and ``OSError`` for a file that cannot be opened (a problem with the file list, not
    with the image). EXIF orientation is not applied: torchvision does not either, and the
    model must see the same pixels.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        display_name = name if name is not None else "<bytes>"
        data = bytes(source)
        if not data:
            raise ImageDecodeError(display_name, "empty input (0 bytes)")
        return _decode(io.BytesIO(data), display_name, max_pixels, resize_size)

    path = os.fspath(source)
    display_name = name if name is not None else path
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ImageDecodeError(display_name, "empty file (0 bytes)")
        return _decode(f, display_name, max_pixels, resize_size)


def _decode(fp, display_name, max_pixels, resize_size):
    try:
        with Image.open(fp, formats=IMAGE_FORMATS) as img:
            _check_pixel_count(img, display_name, max_pixels, resize_size)
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


def _check_pixel_count(img, display_name, max_pixels, resize_size):
    # PIL only warns between MAX_IMAGE_PIXELS and twice that, and turning the warning into
    # an error through the warnings module is not thread-safe: compare here.
    width, height = img.size
    limits = [(limit, what) for limit, what in [(max_pixels, f"max_pixels={max_pixels}"),
                                                (Image.MAX_IMAGE_PIXELS, "PIL's decompression-bomb limit")]
              if limit is not None]
    sizes = [(width, height, f"{width}x{height}")]
    if resize_size is not None:
        resized_height, resized_width = resized_output_size(height, width, resize_size)
        sizes.append((resized_width, resized_height, f"{width}x{height} resized to {resized_width}x{resized_height}"))
    for size_width, size_height, described in sizes:
        for limit, what in limits:
            if size_width * size_height > limit:
                pixels = size_width * size_height
                raise ImageTooLargeError(display_name, f"{described} = {pixels} pixels exceeds {what}")


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
    """Grey wider than 8 bit → 8-bit RGB: ``rint(clip(v, 0, full_scale) * 255 / full_scale)``.
    ``I`` and ``F`` do not say their range, so the smallest usual full scale that holds the
    data is used: 1.0 (normalised floats), 255, else 65535 (16-bit PNG/TIFF, which older
    Pillow opens as ``I``). Integer data goes through a 16-bit lookup table; floats through
    float64 a few rows at a time, so no mode costs more than a small multiple of the
    decoded image."""
    values = np.array(img)
    if img.mode.startswith("I;16"):
        grey = _SIXTEEN_TO_EIGHT_BIT[values]
    elif img.mode == "I":
        full_scale = 255 if values.max(initial=0) <= 255 else 65535
        np.clip(values, 0, full_scale, out=values)
        grey = values.astype(np.uint8) if full_scale == 255 else _SIXTEEN_TO_EIGHT_BIT[values]
    else:
        grey = _float_to_uint8(values)
    del values
    return Image.fromarray(grey, mode="L").convert("RGB")


def _float_to_uint8(values):
    """NaN and infinities read as 0."""
    steps = range(0, values.shape[0], _FLOAT_ROWS_PER_STEP)
    peak = 0.0
    for start in steps:
        rows = np.nan_to_num(values[start : start + _FLOAT_ROWS_PER_STEP].astype(np.float64), nan=0.0, posinf=0.0,
                             neginf=0.0)
        peak = max(peak, rows.max(initial=0.0))
    full_scale = 1.0 if peak <= 1.0 else 255.0 if peak <= 255.0 else 65535.0
    grey = np.empty(values.shape, dtype=np.uint8)
    for start in steps:
        rows = np.nan_to_num(values[start : start + _FLOAT_ROWS_PER_STEP].astype(np.float64), nan=0.0, posinf=0.0,
                             neginf=0.0)
        grey[start : start + _FLOAT_ROWS_PER_STEP] = np.rint(np.clip(rows, 0.0, full_scale) * (255.0 / full_scale))
    return grey
