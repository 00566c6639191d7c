import io
import pathlib
import pickle
import subprocess
import sys
import tracemalloc
import warnings

import numpy as np
import pytest
from PIL import Image

from hostile_images import png_header, zero_png
from paddlevision.image import IMG_EXTENSIONS, ImageDecodeError, ImageTooLargeError, has_image_extension, load_image
from paddlevision.pipeline import Preprocessor
from paddlevision.transforms import ClassificationPresetEval


def save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def encoded(image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def gradient_rgb(width=32, height=24):
    x = np.linspace(0, 255, width, dtype=np.uint8)
    y = np.linspace(0, 255, height, dtype=np.uint8)
    array = np.stack(np.broadcast_arrays(x[None, :], y[:, None], 128 * np.ones((height, width), np.uint8)), -1)
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def assert_rgb(image, size):
    assert isinstance(image, Image.Image)
    assert image.mode == "RGB"
    assert image.size == size


def test_does_not_import_paddle():
    # Deployment code relies on decoding images without the framework.
    code = "import sys, paddlevision.image; assert 'paddle' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=pathlib.Path(__file__).resolve().parents[1])


def test_rgb_png_roundtrip_is_exact(tmp_path):
    source = gradient_rgb()
    image = load_image(save(source, tmp_path / "a.png"))
    assert_rgb(image, source.size)
    np.testing.assert_array_equal(np.asarray(image), np.asarray(source))


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "CMYK", "YCbCr", "1"])
def test_8bit_modes_match_convert_rgb(mode):
    # Same result as torchvision's pil_loader, i.e. PIL's own convert("RGB").
    source = gradient_rgb().convert(mode)
    image = load_image(encoded(source, "TIFF"))
    assert_rgb(image, source.size)
    np.testing.assert_array_equal(np.asarray(image), np.asarray(source.convert("RGB")))


def test_grey_is_replicated_to_three_channels(tmp_path):
    grey = Image.fromarray(np.full((8, 8), 77, np.uint8), "L")
    image = load_image(save(grey, tmp_path / "g.png"))
    assert np.all(np.asarray(image) == 77)


def test_palette_with_and_without_transparency(tmp_path):
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 200, 10, 20] + [0] * 762)
    plain = load_image(save(palette, tmp_path / "p.png"))
    assert plain.getpixel((0, 0)) == (200, 10, 20)

    palette.info["transparency"] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        transparent = load_image(save(palette, tmp_path / "pt.png", transparency=1))
    assert_rgb(transparent, (4, 4))
    assert transparent.getpixel((0, 0)) == (200, 10, 20)


def test_16bit_png_is_scaled_not_clipped():
    values = np.array([[0, 257 * 100], [65535, 32768]], dtype=np.uint16)
    image = load_image(encoded(Image.fromarray(values), "PNG"))
    assert_rgb(image, (2, 2))
    np.testing.assert_array_equal(np.asarray(image)[..., 0], [[0, 100], [255, 128]])


def test_16bit_big_endian_tiff():
    values = np.array([[0, 257 * 100], [65535, 32768]], dtype=">u2")
    source = Image.frombytes("I;16B", (2, 2), values.tobytes())
    image = load_image(encoded(source, "TIFF"))
    np.testing.assert_array_equal(np.asarray(image)[..., 1], [[0, 100], [255, 128]])


def test_mode_I_with_16bit_data_is_scaled():
    values = np.array([[0, 65535], [-5, 70000]], dtype=np.int32)
    image = load_image(encoded(Image.fromarray(values, "I"), "TIFF"))
    np.testing.assert_array_equal(np.asarray(image)[..., 2], [[0, 255], [0, 255]])


def test_mode_I_with_8bit_data_keeps_values():
    values = np.array([[0, 100], [200, 255]], dtype=np.int32)
    image = load_image(encoded(Image.fromarray(values, "I"), "TIFF"))
    np.testing.assert_array_equal(np.asarray(image)[..., 0], values)


def test_mode_F_normalised_and_8bit_range():
    unit = np.array([[0.0, 0.5], [1.0, np.nan]], dtype=np.float32)
    image = load_image(encoded(Image.fromarray(unit, "F"), "TIFF"))
    np.testing.assert_array_equal(np.asarray(image)[..., 0], [[0, 128], [255, 0]])

    byte_range = np.array([[0.0, 100.0], [255.0, 300.0]], dtype=np.float32)
    image = load_image(encoded(Image.fromarray(byte_range, "F"), "TIFF"))
    # 300 exceeds 8 bit, so the data is read as 16-bit range.
    assert np.asarray(image)[1, 1, 0] == round(300 * 255 / 65535)


def test_bytes_input_and_name():
    data = encoded(gradient_rgb(), "JPEG")
    assert_rgb(load_image(data), (32, 24))
    assert_rgb(load_image(bytearray(data), name="upload.jpg"), (32, 24))
    with pytest.raises(ImageDecodeError, match="upload.bin"):
        load_image(b"not an image", name="upload.bin")
    with pytest.raises(ImageDecodeError, match="<bytes>"):
        load_image(b"")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty.jpg") as info:
        load_image(path)
    assert "0 bytes" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_non_image_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("definitely not a JPEG")
    with pytest.raises(ImageDecodeError, match="notes.jpg"):
        load_image(str(path))


def test_truncated_jpeg_fails_at_load_naming_file(tmp_path):
    data = encoded(gradient_rgb(256, 256), "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="cut.jpg"):
        load_image(path)


def test_missing_file_is_not_a_decode_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.jpg")


def test_max_pixels_refuses_before_decoding(tmp_path):
    path = save(gradient_rgb(40, 30), tmp_path / "big.png")
    assert_rgb(load_image(path, max_pixels=1200), (40, 30))
    with pytest.raises(ImageTooLargeError, match="big.png.*max_pixels=1199"):
        load_image(path, max_pixels=1199)
    # Only the header is needed: a file cut after its header is refused for its size,
    # not reported as truncated.
    header_only = tmp_path / "header.png"
    header_only.write_bytes(path.read_bytes()[:64])
    with pytest.raises(ImageDecodeError, match="max_pixels"):
        load_image(header_only, max_pixels=100)


def test_pil_decompression_bomb_becomes_decode_error(tmp_path, monkeypatch):
    path = save(gradient_rgb(40, 30), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # warning zone: 1000 < 1200 <= 2000
    with pytest.raises(ImageDecodeError, match="bomb.png.*decompression"):
        load_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # error zone: 1200 > 2 * 500
    with pytest.raises(ImageDecodeError, match="bomb.png.*decompression"):
        load_image(path)


def test_decode_error_survives_pickling():
    error = pickle.loads(pickle.dumps(ImageDecodeError("a/b.jpg", "broken")))
    assert (error.name, error.reason) == ("a/b.jpg", "broken")
    assert "a/b.jpg" in str(error)


def test_extensions_match_case_insensitively():
    assert ".jpeg" in IMG_EXTENSIONS and ".webp" in IMG_EXTENSIONS
    assert has_image_extension("n01440764_10026.JPEG")
    assert has_image_extension("scan.TiF")
    assert not has_image_extension("labels.txt")


@pytest.mark.parametrize(
    "fmt, kwargs",
    [("JPEG", {}), ("PNG", {}), ("BMP", {}), ("PPM", {}), ("TIFF", {}), ("WEBP", {"lossless": True}),
     ("MPO", {"save_all": True})],  # MPO: what cameras write in .jpg files, read by PIL's JPEG decoder
)
def test_the_formats_of_the_image_extensions_are_decoded(fmt, kwargs):
    image = load_image(encoded(gradient_rgb(), fmt, **kwargs))
    assert_rgb(image, (32, 24))


@pytest.mark.parametrize("mode", ["L", "1"])
def test_pgm_and_pbm_are_decoded(mode):
    assert_rgb(load_image(encoded(gradient_rgb().convert(mode), "PPM")), (32, 24))


@pytest.mark.parametrize("fmt", ["GIF", "ICO", "TGA", "PCX", "SGI", "JPEG2000", "EPS"])
def test_other_formats_pil_knows_are_not_decoded(fmt):
    """PIL registers 43 formats (EPS through Ghostscript among them); only those of
    IMG_EXTENSIONS are tried, whatever the content."""
    data = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 24\n" if fmt == "EPS" else encoded(gradient_rgb(), fmt)
    with pytest.raises(ImageDecodeError, match="upload: not an image in a format PIL can read"):
        load_image(data, name="upload")


@pytest.mark.parametrize("width, height", [(400_000, 100), (100, 400_000), (40_000_000, 1), (2_000_000, 20)])
def test_refused_from_the_header_by_its_size_once_resized(width, height):
    """Within 40 Mpx decoded, but 262 Mpx and more once the shorter side is 256: refused
    before decoding (the header is all there is, so decoding would fail otherwise)."""
    header = png_header(width, height)
    resized = rf"{width}x{height} resized to \d+x\d+ = \d+ pixels exceeds max_pixels"
    with pytest.raises(ImageTooLargeError, match=resized):
        load_image(header, max_pixels=40_000_000, resize_size=256)
    with pytest.raises(ImageDecodeError) as info:
        load_image(header, max_pixels=40_000_000)  # decoded size alone: allowed, so it gets to decoding
    assert not isinstance(info.value, ImageTooLargeError)
    with pytest.raises(ImageTooLargeError, match="PIL's decompression-bomb limit"):
        Preprocessor(256, 224)(header)  # the runners' default bound


def test_a_wide_image_within_the_bound_is_preprocessed_as_the_preset_does():
    image = gradient_rgb(2000, 100)  # resized to 5120x256
    expected = ClassificationPresetEval(crop_size=224, resize_size=256)(image)
    np.testing.assert_array_equal(Preprocessor(256, 224, max_pixels=40_000_000)(encoded(image, "PNG")), expected)


def test_16bit_values_map_to_8bit_as_rint_of_v_times_255_over_65535():
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    image = load_image(encoded(Image.fromarray(values), "PNG"))
    np.testing.assert_array_equal(np.asarray(image)[..., 0], np.rint(values * (255 / 65535)).astype(np.uint8))


def numpy_peak_bytes(function):
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_16bit_and_float_images_convert_without_float64_copies_of_the_image():
    """A 2-Mpx 16-bit PNG: a copy of its samples and the 8-bit result, not float64 arrays
    of the whole image (8 bytes per pixel each); float images go through float64 a few rows
    at a time."""
    sixteen_bit = zero_png(2000, 1000, bit_depth=16)
    assert numpy_peak_bytes(lambda: load_image(sixteen_bit)) < 6 * 2_000_000
    floats = encoded(Image.fromarray(np.full((4000, 1000), 0.5, np.float32), "F"), "TIFF")
    assert numpy_peak_bytes(lambda: load_image(floats)) < 12 * 4_000_000
