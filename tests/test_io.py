"""Image files: PNG, JPEG, TIFF and NPY round trips, dtypes kept, clear errors with the path."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from napari_liif.io import ImageIOError, read_image, write_image


@pytest.fixture
def gen():
    return np.random.default_rng(11)


def _smooth(h=12, w=17, top=255, dtype=np.uint8):
    y, x = np.mgrid[0:h, 0:w]
    return (top * (0.5 + 0.25 * np.sin(y / 3) + 0.25 * np.cos(x / 4))).round().astype(dtype)


@pytest.mark.parametrize("name, dtype, shape, top", [
    ("g.png", np.uint8, (12, 17), 255), ("rgb.png", np.uint8, (12, 17, 3), 255),
    ("rgba.png", np.uint8, (12, 17, 4), 255), ("la.png", np.uint8, (12, 17, 2), 255),
    ("g16.png", np.uint16, (12, 17), 65535), ("rgb16.png", np.uint16, (12, 17, 3), 65535),
    ("rgba16.png", np.uint16, (12, 17, 4), 65535), ("la16.png", np.uint16, (12, 17, 2), 4095),
    ("g8.tif", np.uint8, (12, 17), 255), ("g16.tif", np.uint16, (12, 17), 4095),
    ("rgb16.tiff", np.uint16, (12, 17, 3), 65535), ("i16.tif", np.int16, (12, 17), 30000),
    ("f32.tif", np.float32, (12, 17), 1.0), ("f64.tif", np.float64, (12, 17), 1e-3),
    ("stack.tif", np.float32, (5, 12, 17), 100.0), ("i32.tif", np.int32, (12, 17), 2**30),
    ("a.npy", np.float16, (12, 17), 8.0), ("tzyx.npy", np.uint16, (2, 3, 12, 17), 60000),
    ("i64.npy", np.int64, (12, 17), 2**40),
])
def test_lossless_round_trips_keep_dtype_shape_and_values(tmp_path, gen, name, dtype, shape, top):
    a = (gen.random(shape) * top).astype(dtype)
    path = write_image(tmp_path / "sub" / name, a)  # parent folders are created
    assert path == tmp_path / "sub" / name and path.stat().st_size > 0
    b = read_image(path)
    assert b.dtype == a.dtype and b.shape == a.shape
    assert np.array_equal(b, a)


@pytest.mark.parametrize("name", ["mask.png", "mask.tif", "mask.npy"])
def test_bool_round_trips(tmp_path, name):
    a = np.zeros((12, 17), bool)
    a[2:7, 3:11] = True
    b = read_image(write_image(tmp_path / name, a))
    assert b.dtype == bool and int(b.sum()) == 40 and np.array_equal(b, a)


@pytest.mark.parametrize("shape", [(12, 17), (12, 17, 3)])
def test_jpeg_round_trip_is_close(tmp_path, shape):
    a = _smooth()
    a = np.stack([a, a[::-1], 255 - a], -1) if len(shape) == 3 else a
    b = read_image(write_image(tmp_path / "x.jpg", a))
    assert b.dtype == np.uint8 and b.shape == a.shape
    tol = 3 if a.ndim == 2 else 8  # lossy (colour: chroma subsampling), but close on a smooth image
    assert np.abs(b.astype(int) - a).mean() < tol
    b2 = read_image(write_image(tmp_path / "x.jpeg", a))
    assert np.abs(b2.astype(int) - a).mean() < tol


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.int32])
def test_png_refuses_other_dtypes_and_suggests_tif(tmp_path, dtype):
    path = tmp_path / "out.png"
    with pytest.raises(ImageIOError) as e:
        write_image(path, np.zeros((4, 5), dtype))
    msg = str(e.value)
    assert msg.startswith(str(path)) and np.dtype(dtype).name in msg and ".tif" in msg and "\n" not in msg
    assert not path.exists()


def test_jpeg_refuses_16_bit_and_alpha(tmp_path):
    with pytest.raises(ImageIOError, match="JPEG stores uint8, not uint16; write .tif"):
        write_image(tmp_path / "a.jpg", np.zeros((4, 5), np.uint16))
    with pytest.raises(ImageIOError, match=r"\(4, 5, 4\)"):
        write_image(tmp_path / "a.jpg", np.zeros((4, 5, 4), np.uint8))


@pytest.mark.parametrize("shape", [(3, 4, 5), (4, 5, 1), (2, 3, 4, 5), (7,)])
def test_png_refuses_stacks_and_odd_layouts(tmp_path, shape):
    with pytest.raises(ImageIOError, match=r"not shape \(" + ", ".join(map(str, shape))) as e:
        write_image(tmp_path / "s.png", np.zeros(shape, np.uint8))
    assert ".tif" in str(e.value)


def test_unsupported_suffixes(tmp_path):
    with pytest.raises(ImageIOError, match=r"a\.bmp: unsupported output type \.bmp"):
        write_image(tmp_path / "a.bmp", np.zeros((4, 5), np.uint8))
    (tmp_path / "b.bmp").write_bytes(b"BM")
    with pytest.raises(ImageIOError, match=r"b\.bmp: unsupported file type \.bmp; expected one of .png"):
        read_image(tmp_path / "b.bmp")
    (tmp_path / "noext").write_bytes(b"x")
    with pytest.raises(ImageIOError, match=r"unsupported file type \(none\)"):
        read_image(tmp_path / "noext")


@pytest.mark.parametrize("name, expected", [
    ("bad.png", "not a PNG file"), ("bad.jpg", "not a JPEG file"), ("bad.tif", "not a TIFF file"),
    ("bad.npy", "not an NPY file"), ("empty.png", "the file is empty (0 bytes), not a PNG file"),
    ("empty.tif", "the file is empty (0 bytes), not a TIFF file"),
])
def test_garbage_files_give_one_line_with_the_path(tmp_path, name, expected):
    path = tmp_path / name
    path.write_bytes(b"" if name.startswith("empty") else b"this is not an image\x00\x01\x02" * 10)
    with pytest.raises(ImageIOError) as e:
        read_image(path)
    assert str(e.value) == f"{path}: {expected}"


def test_truncated_png_and_pickled_npy(tmp_path, gen):
    good = write_image(tmp_path / "good.png", gen.integers(0, 255, (40, 50), dtype=np.uint8))
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:60])
    with pytest.raises(ImageIOError, match=r"cut\.png: corrupt or truncated PNG file$"):
        read_image(cut)
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageIOError, match=r"obj\.npy: the NPY file holds Python objects, which napari-liif never "
                                          r"loads \(that would unpickle them\)"):
        read_image(obj)  # a pickle is never loaded


def test_missing_file_folder_and_empty_array(tmp_path):
    with pytest.raises(ImageIOError, match=r"nope\.png: no such file"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageIOError, match=r"dir\.png: is a folder"):
        read_image(tmp_path / "dir.png")
    np.save(tmp_path / "zero.npy", np.zeros((0, 5), np.float32))
    with pytest.raises(ImageIOError, match=r"zero\.npy: the image is empty \(shape \(0, 5\)\)"):
        read_image(tmp_path / "zero.npy")
    with pytest.raises(ImageIOError, match="empty"):
        write_image(tmp_path / "zero.png", np.zeros((0, 5), np.uint8))


def test_palette_png_reads_as_rgb(tmp_path):
    from PIL import Image

    a = _smooth()
    Image.fromarray(a).convert("P").save(tmp_path / "p.png")
    b = read_image(tmp_path / "p.png")
    assert b.shape == (12, 17, 3) and b.dtype == np.uint8
    assert np.array_equal(b[..., 0], a) and np.array_equal(b[..., 1], a)


def _png16_with_every_filter(a: np.ndarray) -> bytes:
    """A 16-bit colour PNG of ``a`` (H, W, C) whose rows use filters 0, 1, 2, 3, 4 in turn,
    filtered here from the PNG specification (predictors from the raw bytes)."""
    h, w, ch = a.shape
    bpp = 2 * ch
    raw = np.ascontiguousarray(a, ">u2").reshape(h, -1).view(np.uint8).astype(np.int64)
    body = b""
    for y in range(h):
        x = raw[y]
        up = raw[y - 1] if y else np.zeros_like(x)
        left = np.concatenate([np.zeros(bpp, np.int64), x[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int64), up[:-bpp]])
        p = left + up - upleft
        pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        kind = y % 5
        pred = [np.zeros_like(x), left, up, (left + up) // 2, paeth][kind]
        body += bytes([kind]) + ((x - pred) % 256).astype(np.uint8).tobytes()

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, {2: 4, 3: 2, 4: 6}[ch], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"tEXt", b"Comment\x00made by a test")
            + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("ch", [2, 3, 4])
def test_16_bit_colour_png_keeps_16_bits_with_every_filter(tmp_path, gen, ch):
    a = gen.integers(0, 65536, (10, 7, ch)).astype(np.uint16)
    a[3:6] = np.arange(7 * ch).reshape(7, ch) * 9000  # smooth rows too
    path = tmp_path / "f.png"
    path.write_bytes(_png16_with_every_filter(a))
    b = read_image(path)
    assert b.dtype == np.uint16 and np.array_equal(b, a)


def test_16_bit_png_errors(tmp_path, gen):
    good = write_image(tmp_path / "g.png", gen.integers(0, 65536, (20, 9, 3)).astype(np.uint16))
    data = good.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(ImageIOError, match=r"cut\.png: corrupt or truncated PNG file$"):
        read_image(cut)
    inter = tmp_path / "interlaced.png"
    inter.write_bytes(data[:28] + b"\x01" + data[29:])  # interlace flag (CRC not checked here)
    with pytest.raises(ImageIOError, match="interlaced 16-bit colour PNG is not supported"):
        read_image(inter)
