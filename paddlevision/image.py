"""Image decoding shared by the datasets, the inference tools and deployment code;
PIL and numpy only, so deployment decodes exactly as training did without paddle."""

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


def load_image(source, name=None, max_pixels=None):
    """A path or encoded bytes as a fully loaded RGB ``PIL.Image``, with torchvision's
    ``pil_loader`` pixels for 8-bit modes; wider modes are rescaled, not clipped.

    ``max_pixels`` refuses larger images from their header. Raises
    :class:`ImageDecodeError` for anything wrong with the data, and ``OSError`` for a file
    that cannot be opened (a problem with the file list, not with the image). EXIF
    orientation is not applied: torchvision does not either, and the model must see the
    same pixels.
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
    # PIL only warns between MAX_IMAGE_PIXELS and twice that, and turning the warning into
    # an error through the warnings module is not thread-safe: compare here.
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
    """Grey wider than 8 bit → 8-bit RGB. ``I`` and ``F`` do not say their range, so the
    smallest usual full scale that holds the data is used: 1.0 (normalised floats), 255,
    else 65535 (16-bit PNG/TIFF, which older Pillow opens as ``I``)."""
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
