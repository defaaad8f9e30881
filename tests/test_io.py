"""Image files: formats, bit depths, EXIF orientation, broken files, atomic writes."""

import contextlib
import functools
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastdeblur import InputError
from fastdeblur.io import encode_image, read_image, write_image


@pytest.mark.parametrize("suffix,channels", [(s, c) for s in (".png", ".tif", ".bmp") for c in (None, 1, 2, 3, 4)
                                              if s != ".bmp" or c in (None, 1, 3)])  # BMP: alpha composited
def test_lossless_8bit_round_trip(tmp_path, suffix, channels):
    """Every channel count: HxWx1 comes back HxW (imageio refused to write it), gray + alpha TIFFs
    are one page (tifffile wrote H pages of W x 2 pixels)."""
    shape = (13, 17) if channels is None else (13, 17, channels)
    img = np.random.randint(0, 256, shape, dtype=np.uint8)
    path = write_image(tmp_path / f"a{suffix}", img)
    back = read_image(path)
    assert back.dtype == np.uint8 and np.array_equal(back, img[..., 0] if channels == 1 else img)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("shape", [(13, 17), (13, 17, 2), (13, 17, 3), (13, 17, 4)])
def test_16bit_round_trip(tmp_path, suffix, shape):
    img = np.random.randint(0, 65536, shape, dtype=np.uint16)
    back = read_image(write_image(tmp_path / f"a{suffix}", img))
    assert back.dtype == np.uint16 and np.array_equal(back, img)
    back = read_image(write_image(tmp_path / f"f{suffix}", np.asfortranarray(img)))  # any memory order
    assert np.array_equal(back, img)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_level_trades_size_for_time_and_stays_lossless(tmp_path, dtype):
    top = np.iinfo(dtype).max
    ramp = np.linspace(0, top, 64 * 96 * 3).reshape(64, 96, 3)  # compressible, unlike noise
    img = (ramp + np.random.randint(0, 3, ramp.shape)).clip(0, top).astype(dtype)
    sizes = {}
    for level in (0, 1, 9):
        path = write_image(tmp_path / f"l{level}.png", img, png_level=level)
        assert np.array_equal(read_image(path), img)
        sizes[level] = path.stat().st_size
    assert sizes[0] > sizes[1] >= sizes[9]
    for bad in (-1, 10, 1.5):
        with pytest.raises(InputError, match="png_level must be an integer from 0 to 9"):
            write_image(tmp_path / "x.png", img, png_level=bad)


@pytest.mark.parametrize("suffix", [".jpg", ".webp", ".avif"])
def test_lossy_formats_are_close_and_16bit_is_reduced(tmp_path, suffix):
    img = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (24, 1))[..., None].repeat(3, -1)
    back = read_image(write_image(tmp_path / f"a{suffix}", img))
    assert back.shape == img.shape and np.abs(back.astype(int) - img).mean() < 2
    back16 = read_image(write_image(tmp_path / f"b{suffix}", img.astype(np.uint16) * 257))
    assert back16.dtype == np.uint8 and np.abs(back16.astype(int) - img).mean() < 2


@pytest.mark.parametrize("suffix", [".jpg", ".bmp"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_alpha_is_composited_over_white_for_jpeg_and_bmp(tmp_path, dtype, suffix):
    """JPEG and BMP hold no alpha (Pillow refused gray + alpha, and wrote RGBA BMPs whose alpha
    readers ignore): as image editors do, the colour is composited over white, and gray + alpha
    becomes gray."""
    top = np.iinfo(dtype).max
    rgba = np.zeros((16, 24, 4), dtype)
    rgba[..., :3] = top // 5  # a dark colour ...
    rgba[:, :8, 3] = top  # ... opaque on the left, half transparent in the middle, transparent on the right
    rgba[:, 8:16, 3] = top // 2
    for img, shape in ((rgba, (16, 24, 3)), (rgba[..., [0, 3]], (16, 24))):
        back = read_image(write_image(tmp_path / f"a{suffix}", img, quality=100)).astype(int)
        assert back.shape == shape
        assert np.abs(back[:, 1:7] - 51).max() <= 2 and np.abs(back[:, 9:15] - 153).max() <= 2
        assert np.abs(back[:, 17:] - 255).max() <= 2


def test_exif_orientation_is_applied(tmp_path):
    img = np.zeros((10, 20, 3), np.uint8)
    img[:, :5] = 255  # bright left band
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    path = tmp_path / "rot.jpg"
    Image.fromarray(img).save(path, exif=exif, quality=100)
    shown = read_image(path)
    assert shown.shape == (20, 10, 3)
    assert shown[:5].mean() > 200 and shown[-5:].mean() < 50  # left band is now on top


@pytest.mark.parametrize("suffix,says", [(".png", "PNG"), (".jpg", "JPEG"), (".tif", "TIFF"), (".webp", "WEBP")])
@pytest.mark.parametrize("keep", [16, 0.5])
def test_truncated_file(tmp_path, suffix, says, keep):
    """A file cut short names its format and what the decoder said, not imageio's wrapper ("An
    unknown error occurred while initializing plugin `pillow`", "can not handle the given uri")."""
    path = write_image(tmp_path / f"t{suffix}", np.random.randint(0, 256, (64, 64, 3), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[:keep if isinstance(keep, int) else int(len(data) * keep)])
    with pytest.raises(InputError, match=rf"t\{suffix}: not a readable image: {says} data that its decoder refused "
                                         r"\(.+\); the file may be damaged or incomplete") as e:
        read_image(path)
    assert "plugin" not in str(e.value) and "uri" not in str(e.value)


@pytest.mark.filterwarnings("ignore:Tag data larger than file")  # Pillow's, trying the same file after tifffile
def test_a_damaged_tiff_is_one_error_without_tifffiles_log(caplog):
    """tifffile logs what it finds wrong ("<TiffTag.fromfile> raised TiffFileError(...)"), which
    printed a raw line to stderr before the file's error; while fastdeblur reads, it is dropped,
    and tifffile's other users keep their records."""
    import logging

    import tifffile

    data = bytearray(encode_image(np.zeros((37, 53, 3), np.uint8), ".tif"))
    data[63] = 102  # the PhotometricInterpretation tag's count: its value now lies past the file's end
    with caplog.at_level(logging.DEBUG), pytest.raises(InputError, match="TIFF data that its decoder refused"):
        read_image(bytes(data))
    assert not [r for r in caplog.records if r.name.startswith("tifffile")]
    with caplog.at_level(logging.DEBUG), contextlib.suppress(Exception), \
            tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        tif.pages[0].asarray()
    assert [r for r in caplog.records if r.name.startswith("tifffile")]  # outside a read: as before


def test_non_image_file(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture")
    with pytest.raises(InputError, match="notes.png: not a readable image"):
        read_image(path)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        read_image(tmp_path / "empty.jpg")
    with pytest.raises(InputError, match="not a file"):
        read_image(tmp_path)
    with pytest.raises(InputError, match="notes.png/x.png: no such file"):  # a file taken for a folder
        read_image(tmp_path / "notes.png" / "x.png")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="unsupported output format"):
        write_image(tmp_path / "x.gif", np.zeros((8, 8, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
    old = write_image(tmp_path / "keep.png", np.full((8, 8, 3), 7, np.uint8))

    def crash(path, data):  # the disk fills up halfway through the file
        open(path, "wb").write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", crash)
    with pytest.raises(OSError, match="disk full"):
        write_image(old, np.zeros((8, 8, 3), np.uint8))
    monkeypatch.undo()

    def broken(*args, **kwargs):  # the encoder fails
        raise ValueError("encoder error")

    import imageio.v3 as iio

    monkeypatch.setattr(iio, "imwrite", broken)
    with pytest.raises(ValueError, match="encoder error"):
        write_image(old, np.zeros((8, 8, 3), np.uint8))
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]
    assert read_image(old).max() == 7  # the previous file is intact


def test_write_replaces_atomically(tmp_path):
    path = tmp_path / "x.png"
    write_image(path, np.zeros((8, 8, 3), np.uint8))
    write_image(path, np.full((8, 8, 3), 9, np.uint8))
    assert read_image(path).max() == 9 and [p.name for p in tmp_path.iterdir()] == ["x.png"]


@functools.cache  # one profile per space: a new one has a new creation time (seconds) in its header
def _profile(space: str = "sRGB") -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile(space)).tobytes()


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"  # Make
    return exif


@pytest.mark.parametrize("src", [".jpg", ".png", ".png16", ".tif16", ".webp", ".avif"])
@pytest.mark.parametrize("dst", [".jpg", ".png", ".png16", ".tif", ".bmp", ".webp", ".avif"])
def test_metadata_is_carried_where_the_format_holds_it(tmp_path, src, dst):
    """The ICC profile (PNG, JPEG, WebP, AVIF, TIFF) and EXIF (PNG, JPEG, WebP, AVIF; orientation
    reset to 1, since it is applied on reading) of an input reach its output, including the 16-bit
    PNG path."""
    from fastdeblur.io import read_metadata

    icc = _profile()
    img = np.random.randint(0, 256, (12, 20, 3), dtype=np.uint8)
    path = tmp_path / f"in{src.removesuffix('16')}"
    if src == ".tif16":
        write_image(path, img.astype(np.uint16) * 257, metadata={"icc_profile": icc})
    elif src == ".png16":  # through our own 16-bit writer: what it writes must read back
        write_image(path, img.astype(np.uint16) * 257, metadata={"icc_profile": icc, "exif": _exif(6).tobytes()})
    else:
        Image.fromarray(img).save(path, icc_profile=icc, exif=_exif(6))
    meta = read_metadata(path)
    assert meta["icc_profile"] == icc
    has_exif = src != ".tif16"
    assert ("exif" in meta) == has_exif
    pixels = read_image(path)
    if has_exif:
        assert pixels.shape[:2] == (20, 12)  # orientation 6 applied
    out = write_image(tmp_path / f"out{dst.removesuffix('16')}",
                      pixels.astype(np.uint16) * 257 if dst == ".png16" else pixels, metadata=meta)
    with Image.open(out) as im:
        assert (im.info.get("icc_profile") == icc) == (dst != ".bmp")
        exif = im.getexif()
        if has_exif and dst in (".jpg", ".png", ".png16", ".webp", ".avif"):
            assert exif[0x010F] == "TestCam" and exif.get(0x0112, 1) == 1  # AVIF drops a tag of 1
        else:
            assert 0x010F not in exif
    assert read_image(out).shape == pixels.shape  # displayed as written: no second rotation


def test_metadata_that_does_not_fit_is_left_out(tmp_path):
    """A profile of another colour space than the output's (a CMYK photo comes back RGB), or a
    damaged file's metadata, is dropped, never written wrong or failing the image."""
    from fastdeblur.io import read_metadata

    rgb, gray = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)
    lab = _profile("LAB")
    with Image.open(write_image(tmp_path / "a.png", rgb, metadata={"icc_profile": lab})) as im:
        assert "icc_profile" not in im.info
    with Image.open(write_image(tmp_path / "b.png", gray, metadata={"icc_profile": _profile()})) as im:
        assert "icc_profile" not in im.info  # an RGB profile on a gray image
    with Image.open(write_image(tmp_path / "c.jpg", rgb, metadata={"exif": b"Exif\x00\x00" + b"x" * 70000})) as im:
        assert not im.getexif()  # beyond one JPEG APP1 segment
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00garbage!")
    assert read_metadata(tmp_path / "bad.jpg") == {}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_16bit_png_orientation_matches_pillow(tmp_path, orientation):
    """16-bit PNGs (decoded by imagecodecs) are turned as Pillow turns 8-bit images."""
    from PIL import ImageOps

    img = np.random.randint(0, 256, (6, 11, 3), dtype=np.uint8)
    path = write_image(tmp_path / "a.png", img.astype(np.uint16) * 257, metadata={"exif": _exif(orientation).tobytes()})
    want = np.asarray(ImageOps.exif_transpose(_with_orientation(img, orientation)))
    got = read_image(path)
    assert got.dtype == np.uint16 and np.array_equal(got, want.astype(np.uint16) * 257)


def _with_orientation(img: np.ndarray, orientation: int) -> Image.Image:
    im = Image.fromarray(img)
    im.getexif()[0x0112] = orientation
    return im


def test_a_missing_codec_is_named_before_anything_is_written(tmp_path, monkeypatch):
    """A Pillow built without AVIF (or WebP): the write is refused with the reason, no file left."""
    from PIL import features

    from fastdeblur.io import cannot_write

    real = features.check
    monkeypatch.setattr(features, "check", lambda name: False if name == "avif" else real(name))
    assert "no AVIF codec" in cannot_write(".AVIF") and cannot_write(".webp") is None
    with pytest.raises(InputError, match=r"a\.avif: this Pillow build has no AVIF codec"):
        write_image(tmp_path / "a.avif", np.zeros((8, 8, 3), np.uint8))
    assert not list(tmp_path.iterdir())


def _rgb(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (13, 17, 3), dtype=np.uint8)


@pytest.mark.parametrize("name,mode", [("cmyk.jpg", "CMYK"), ("cmyk.tif", "CMYK"), ("ycc.tif", "YCbCr"),
                                       ("palette.png", "P"), ("palette.tif", "P"), ("palette.gif", "P")])
def test_other_colour_spaces_are_read_as_rgb(tmp_path, name, mode):
    """A CMYK file's four channels were taken for RGBA and a YCbCr TIFF's for RGB: wrong colours
    out, silently. Now they are read as Pillow converts them to RGB."""
    im = Image.fromarray(_rgb()).convert(mode)
    im.save(tmp_path / name)
    with Image.open(tmp_path / name) as stored:
        want = np.asarray(stored.convert("RGB"))
    back = read_image(tmp_path / name)
    assert back.shape == (13, 17, 3) and back.dtype == np.uint8
    assert np.array_equal(back, want)
    if mode == "YCbCr":  # and close to the RGB it was made from (YCbCr rounding: a few levels)
        assert np.abs(back.astype(int) - _rgb()).max() <= 4


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_matches_pillow(tmp_path, orientation):
    """A TIFF's orientation tag (274; scanners and editors write it) was ignored on the tifffile
    path, so a portrait scan came out on its side. 16-bit too, which Pillow cannot read as RGB."""
    import tifffile
    from PIL import ImageOps

    tag = [(274, "H", 1, orientation, True)]
    tifffile.imwrite(tmp_path / "o.tif", _rgb(), photometric="rgb", extratags=tag)
    tifffile.imwrite(tmp_path / "o16.tif", _rgb().astype(np.uint16) * 257, photometric="rgb", extratags=tag)
    with Image.open(tmp_path / "o.tif") as im:
        upright = np.asarray(ImageOps.exif_transpose(im))
    assert np.array_equal(read_image(tmp_path / "o.tif"), upright)
    assert np.array_equal(read_image(tmp_path / "o16.tif"), upright.astype(np.uint16) * 257)


def test_white_is_zero_tiff_is_read_as_gray(tmp_path):
    import tifffile

    gray = _rgb()[..., 0]
    tifffile.imwrite(tmp_path / "mw.tif", 255 - gray, photometric="miniswhite")
    assert np.array_equal(read_image(tmp_path / "mw.tif"), gray)


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_transparency_is_read_as_alpha(tmp_path, suffix):
    im = Image.fromarray(_rgb()).convert("P")
    im.save(tmp_path / f"t{suffix}", transparency=int(np.asarray(im)[0, 0]))
    back = read_image(tmp_path / f"t{suffix}")
    assert back.shape == (13, 17, 4) and back[0, 0, 3] == 0 and back[..., 3].max() == 255


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_bilevel_images_are_read_as_8bit_gray(tmp_path, suffix):
    """1-bit PNGs and TIFFs (scans of text, fax) as 0 / 255 gray: tifffile gives a TIFF's bits as
    booleans, which were refused as a pixel type."""
    import tifffile

    bits = _rgb()[..., 0] > 127
    if suffix == ".png":
        Image.fromarray(bits).save(tmp_path / "b.png")
    else:
        tifffile.imwrite(tmp_path / "b.tif", bits, photometric="minisblack")
    back = read_image(tmp_path / f"b{suffix}")
    assert back.dtype == np.uint8 and np.array_equal(back, bits.astype(np.uint8) * 255)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.int32])
def test_pixel_types_not_read_are_named_with_a_way_out(tmp_path, dtype):
    import tifffile

    tifffile.imwrite(tmp_path / "x.tif", np.zeros((13, 17, 3), dtype), photometric="rgb")
    says = "floating-point (HDR or linear-light) data" if np.dtype(dtype).kind == "f" else "int32 pixels"
    with pytest.raises(InputError, match=rf"x.tif: {re.escape(says)} is not supported: fastdeblur reads 8- and "
                                         r"16-bit images \(save it as a 16-bit TIFF or PNG"):
        read_image(tmp_path / "x.tif")


def test_a_single_frame_gif_is_an_image(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "one.gif")
    assert read_image(tmp_path / "one.gif").shape == (13, 17, 3)


def test_animations_and_multi_page_files_are_named(tmp_path):
    frames = [Image.fromarray(_rgb(s)) for s in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    for name in ("anim.gif", "pages.tif"):
        with pytest.raises(InputError, match=f"{name}: holds 3 frames"):
            read_image(tmp_path / name)


def test_arrays_that_are_not_images_are_named(tmp_path):
    import tifffile

    with pytest.warns(UserWarning, match="zero-size"):  # tifffile writes it, saying it is not conformant
        tifffile.imwrite(tmp_path / "none.tif", np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(InputError, match=r"none.tif: holds no pixels \(5x0\); the file may be damaged"):
        read_image(tmp_path / "none.tif")  # was "image is empty" from deblur(), after the read

    tifffile.imwrite(tmp_path / "five.tif", np.zeros((13, 17, 5), np.uint8), photometric="minisblack",
                     planarconfig="contig")
    with pytest.raises(InputError, match=r"five.tif: holds an array of shape \(13, 17, 5\)"):
        read_image(tmp_path / "five.tif")


@pytest.fixture
def no_heif(monkeypatch):
    """A machine without pillow-heif."""
    import fastdeblur.io as fio

    monkeypatch.setattr(fio, "_heif_state", [False])


def test_heic_photos_are_read_and_written_with_their_metadata(tmp_path):
    """iPhones' HEIC: read as displayed (the file's rotation applied), EXIF carried to the output
    (HEIC, JPEG, PNG), 8-bit lossy at `quality` like JPEG."""
    pytest.importorskip("pillow_heif", reason="pillow-heif is not installed (pip install fastdeblur[heif])")
    from fastdeblur.io import heif_available, read_metadata

    assert heif_available()
    rgb = np.repeat(np.repeat(_rgb(), 4, axis=0), 4, axis=1)  # smooth enough to compress well: 52x68
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "TestCam"  # shown turned by 90 degrees
    Image.fromarray(rgb).save(tmp_path / "in.heic", quality=95, exif=exif.tobytes())
    back = read_image(tmp_path / "in.heic")
    assert back.shape == (68, 52, 3)  # upright: rows and columns swapped
    upright = np.rot90(rgb, -1)
    assert 10 * np.log10(255**2 / np.mean((back.astype(float) - upright) ** 2)) > 30
    meta = read_metadata(tmp_path / "in.heic") | {"icc_profile": _profile()}
    for suffix in (".heic", ".jpg", ".png"):
        out = write_image(tmp_path / f"out{suffix}", back, metadata=meta)
        with Image.open(out) as im:
            assert im.getexif().get(0x010F) == "TestCam" and im.getexif().get(0x0112, 1) == 1
        assert read_metadata(out)["icc_profile"] == _profile()
        assert read_image(out).shape == (68, 52, 3)
    out16 = write_image(tmp_path / "16.heic", back.astype(np.uint16) * 257)
    assert read_image(out16).dtype == np.uint8


def test_heic_without_pillow_heif_is_named(tmp_path, no_heif):
    from fastdeblur.io import cannot_write, is_image_path

    (tmp_path / "x.heic").write_bytes(b"\0\0\0\x18ftypheic")
    with pytest.raises(InputError, match="x.heic: reading HEIC/HEIF needs pillow-heif: pip install pillow-heif"):
        read_image(tmp_path / "x.heic")
    assert not is_image_path(tmp_path / "x.heic")
    assert "pip install pillow-heif" in cannot_write(".heic")
    with pytest.raises(InputError, match="y.heic: .heic files need pillow-heif"):
        write_image(tmp_path / "y.heic", _rgb())
    assert not (tmp_path / "y.heic").exists()


@pytest.mark.parametrize("bad", [0, 101, 95.0, True, "95"])
def test_a_bad_quality_is_named(tmp_path, bad):
    with pytest.raises(InputError, match="quality must be an integer from 1 to 100"):
        write_image(tmp_path / "a.jpg", _rgb(), quality=bad)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".bmp", ".webp", ".avif", ".heic"])
def test_formats_are_told_by_content(suffix):
    """sniff() names each format written here by its first bytes (so bytes in can go back out in
    their own format), and the videos read_image refuses."""
    from fastdeblur.io import encode_image, heif_available, sniff

    if suffix == ".heic" and not heif_available():
        pytest.skip("pillow-heif is not installed (pip install fastdeblur[heif])")
    assert sniff(encode_image(_rgb(), suffix)) == suffix
    assert sniff(encode_image(_rgb().astype(np.uint16) * 257, suffix)) == suffix


def test_videos_and_unknown_data_are_told_by_content():
    from fastdeblur.io import sniff

    assert sniff(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2") == ".mp4"
    assert sniff(b"\x00\x00\x00\x14ftypqt  \x20\x05\x03\x00qt  ") == ".mp4"  # QuickTime .mov
    assert sniff(b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1heic") == ".heic"  # HEIF by a compatible brand
    assert sniff(b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avif") == ".avif"
    assert sniff(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01") == ".mkv"
    assert sniff(b"RIFF\x24\x00\x00\x00AVI LIST") == ".avi"
    assert sniff(b"GIF89a\x01\x00") == ".gif"
    assert sniff(b"P6 4 4 255") is None and sniff(b"") is None


def test_files_are_decoded_by_content_not_name(tmp_path):
    """A 16-bit RGB TIFF named .png (Pillow cannot hold 16-bit RGB) and a JPEG named .tif
    (tifffile cannot read it) are read as what they hold."""
    from fastdeblur.io import encode_image

    deep = _rgb().astype(np.uint16) * 257
    (tmp_path / "tiff.png").write_bytes(encode_image(deep, ".tif"))
    back = read_image(tmp_path / "tiff.png")
    assert back.dtype == np.uint16 and np.array_equal(back, deep)
    (tmp_path / "jpeg.tif").write_bytes(encode_image(_rgb(), ".jpg"))
    assert read_image(tmp_path / "jpeg.tif").shape == (13, 17, 3)
    assert np.array_equal(read_image(encode_image(deep, ".tif")), deep)  # and bytes like files
    from fastdeblur.io import heif_available

    if heif_available():  # an iPhone's HEIC under a .jpg name
        (tmp_path / "heic.jpg").write_bytes(encode_image(_rgb(), ".heic"))
        assert read_image(tmp_path / "heic.jpg").shape == (13, 17, 3)


@pytest.mark.parametrize("suffix,dtype", [(".jpg", np.uint8), (".png", np.uint8), (".png", np.uint16),
                                          (".tif", np.uint16), (".webp", np.uint8)])
def test_one_pixel_limit_for_every_decoder(tmp_path, monkeypatch, suffix, dtype):
    """Pillow's decompression-bomb guard made fastdeblur's limit: below it no warning (Pillow warns
    from half its refusal point, which 100 MP photos pass), above it a named error, for the
    decoders without Pillow too (16-bit PNG, TIFF); FASTDEBLUR_MAX_PIXELS moves it."""
    import warnings

    import fastdeblur.io as fio

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's scale shrunk: refuses above 2000
    monkeypatch.delenv("FASTDEBLUR_MAX_PIXELS", raising=False)
    assert fio.max_pixels() == 2000
    small, big = tmp_path / f"small{suffix}", tmp_path / f"big{suffix}"
    write_image(small, np.full((30, 50, 3), 100, dtype))  # 1500 px: Pillow would warn
    write_image(big, np.full((40, 60, 3), 100, dtype))  # 2400 px
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(small).shape == (30, 50, 3)
        fio.read_metadata(small)
    with pytest.raises(InputError, match=r"big\S*: (60x40, )?0\.0 megapixels, over the limit of 0\.0 .*"
                                         r"FASTDEBLUR_MAX_PIXELS"):
        read_image(big)
    monkeypatch.setenv("FASTDEBLUR_MAX_PIXELS", "1e4")  # above Pillow's refusal: raises Pillow's for the process
    assert read_image(big).shape == (40, 60, 3)
    if dtype == np.uint8:  # decoded by Pillow (16-bit PNGs and TIFFs are not)
        assert Image.MAX_IMAGE_PIXELS >= 5000
    monkeypatch.setenv("FASTDEBLUR_MAX_PIXELS", "1000")  # below: a server's tighter guard
    with pytest.raises(InputError, match="small.*over the limit"):
        read_image(small)
    monkeypatch.setenv("FASTDEBLUR_MAX_PIXELS", "0")
    assert fio.max_pixels() is None and read_image(big).shape == (40, 60, 3)
    monkeypatch.setenv("FASTDEBLUR_MAX_PIXELS", "lots")
    with pytest.raises(InputError, match="FASTDEBLUR_MAX_PIXELS must be a pixel count"):
        read_image(small)


def test_a_bomb_header_is_refused_before_decoding(tmp_path):
    """A PNG whose header claims 30000x30000 pixels (900 MP) in a few bytes: named, not decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    for depth in (8, 16):
        data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, depth, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(b"\x00" * 7)) + chunk(b"IEND", b""))
        with pytest.raises(InputError, match="30000x30000, 900.0 megapixels, over the limit of 179.0 megapixels"):
            read_image(data)


@pytest.mark.parametrize("shape,dtype,photometric", [((20, 30, 3), np.uint8, "rgb"), ((20, 30, 4), np.uint16, "rgb"),
                                                     ((20, 30, 2), np.uint8, "minisblack")])
def test_planar_tiffs_are_read_as_pixels(tmp_path, shape, dtype, photometric):
    """TIFFs that store each channel as its own plane (planar configuration 2, as some scanners
    and scientific tools write them) read as HxWxC; they were refused as a CxHxW array."""
    import tifffile

    img = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, shape).astype(dtype)
    extra = {"extrasamples": ["unassalpha"]} if shape[-1] in (2, 4) else {}
    tifffile.imwrite(tmp_path / "p.tif", np.moveaxis(img, -1, 0), planarconfig="separate", photometric=photometric,
                     **extra)
    back = read_image(tmp_path / "p.tif")
    assert back.dtype == dtype and np.array_equal(back, img)
