"""Image files in and out: PNG, JPEG, TIFF, BMP, WebP, AVIF (and HEIC/HEIF with pillow-heif),
8 and 16 bit, EXIF orientation applied, other colour spaces read as RGB; the ICC profile and
EXIF block can be carried from an input file to its output (read_metadata).

imageio (Pillow and tifffile plugins) does the work; 16-bit PNG goes through imagecodecs,
since Pillow reduces 16-bit RGB PNGs to 8 bits. Writes land through a temp file in the target
folder and an atomic rename, so a crash never leaves a half-written image behind.
"""

from __future__ import annotations

import os
import stat
import tempfile
import threading
from pathlib import Path

import numpy as np

from .errors import ConfigError, InputError, missing_path, not_a_file

SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".avif")
_EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".bmp", ".webp", ".avif", ".heic", ".heif")
_LOSSY = (".jpg", ".jpeg", ".webp", ".avif", ".heic", ".heif")  # written at `quality`
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION = 0x0112
_JPEG_APP1_LIMIT = 65533  # an EXIF block must fit one JPEG APP1 segment
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}


# HEIC/HEIF (iPhones' photos) through pillow-heif, an optional dependency (`pip install
# fastdeblur[heif]`): it bundles libheif with libde265 (LGPL) and the x265 encoder (GPL), which a
# core dependency should not impose. Without it these files are named, not read.
HEIF_SUFFIXES = (".heic", ".heif")
WRITTEN_SUFFIXES = SUFFIXES + HEIF_SUFFIXES  # the formats write_image knows (HEIC/HEIF with pillow-heif)
HEIF_HINT = "pip install pillow-heif (or fastdeblur[heif])"
_heif_state: list[bool] = []  # [available], once checked
# Videos are fastdeblur.video's (through PyAV); read_image names them instead of failing to decode.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")


def heif_available() -> bool:
    """pillow-heif is installed; its Pillow plugin is registered on the first call."""
    if not _heif_state:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
            _heif_state.append(True)
        except ImportError:
            _heif_state.append(False)
    return _heif_state[0]


def suffixes() -> tuple[str, ...]:
    """The file suffixes read and written here: SUFFIXES, and HEIC/HEIF where pillow-heif is installed."""
    return SUFFIXES + HEIF_SUFFIXES if heif_available() else SUFFIXES


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in suffixes()


def is_hidden(relative: Path) -> bool:
    """A path below a searched folder that is hidden or lies in a hidden folder (".cache/x.png",
    macOS's "._IMG.jpg" resource forks): folder searches leave these out."""
    return any(part.startswith(".") for part in relative.parts)


def cannot_write(suffix: str) -> str | None:
    """Why `suffix` files cannot be written here (Pillow's optional WebP and AVIF codecs, HEIC
    without pillow-heif), or None."""
    from PIL import features

    if suffix.lower() in HEIF_SUFFIXES and not heif_available():
        return f"{suffix} files need pillow-heif: {HEIF_HINT}"
    codec = {".webp": "webp", ".avif": "avif"}.get(suffix.lower())
    if codec and not features.check(codec):
        return (f"this Pillow build has no {codec.upper()} codec (pip install -U pillow), so {suffix} files "
                "cannot be written")
    return None


# Pillow modes deblurred as another (files and PIL images alike): other colour spaces through RGB
# (a CMYK JPEG's four channels would otherwise pass for RGBA), premultiplied alpha undone,
# bilevel as 8-bit gray. A palette ("P") becomes RGBA where it has a transparent index, else RGB.
PIL_WORK_MODES = {"CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "RGBX": "RGB", "1": "L",
                  "La": "LA", "RGBa": "RGBA", "PA": "RGBA"}
_TIFF_AS_STORED = (1, 2)  # photometric MINISBLACK, RGB: tifffile's array as it is (16-bit RGB included)


def sniff(data: bytes) -> str | None:
    """The suffix of the format `data` is in, from its first bytes: .png, .jpg, .tif, .bmp,
    .webp, .gif, .avif, .heic, or a video's (.mp4, .mkv, .avi); None when unknown (Pillow may
    still read it: PPM, TGA, ICO, ...)."""
    head = bytes(data[:64])
    if head.startswith(_PNG_SIGNATURE):
        return ".png"
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if head[:4] in _TIFF_MAGIC:
        return ".tif"
    if head[:4] == b"RIFF":
        return {b"WEBP": ".webp", b"AVI ": ".avi"}.get(head[8:12])
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    if head.startswith(b"BM"):
        return ".bmp"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska and WebM
        return ".mkv"
    if head[4:8] == b"ftyp":  # ISO base media: AVIF and HEIF stills, or MP4 / MOV video
        size = int.from_bytes(head[:4], "big")
        brands = {head[i:i + 4] for i in range(8, min(size, len(head)) - 3, 4)} - {head[12:16]}  # less minor_version
        if brands & _AVIF_BRANDS:
            return ".avif"
        if brands & _HEIF_BRANDS:
            return ".heic"
        return ".mp4"
    return None


def output_format(data: bytes) -> str:
    """The suffix a deblurred copy of the encoded image `data` is written as: its own format where
    fastdeblur writes it (PNG, JPEG, TIFF, BMP, WebP, AVIF, HEIC), else PNG (GIF, PPM, ICO, ...:
    lossless, any depth)."""
    suffix = sniff(data)
    return suffix if suffix in WRITTEN_SUFFIXES and cannot_write(suffix) is None else ".png"


def _source(src: str | os.PathLike | bytes | bytearray | memoryview) -> tuple[str, bytes]:
    """(name for messages, the file's bytes) of a path or of encoded bytes; a path whose name says
    video, or HEIC without pillow-heif, is named here, before it is read."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        if not data:
            raise InputError("image data is empty (0 bytes)")
        return "image data", data
    path = Path(src)
    suffix = path.suffix.lower()
    # one open and one fstat: what is checked is what is read (a stat before the open could see
    # another file than the one opened), and O_NONBLOCK keeps a named pipe's open from waiting
    # for a writer that may never come (it changes nothing for a regular file)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(missing_path(src)) from None
    except OSError as e:  # Linux opens a folder (fstat tells below); Windows refuses it
        if path.is_dir():
            raise InputError(not_a_file(path)) from None
        raise InputError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(not_a_file(path))
        if suffix in HEIF_SUFFIXES and not heif_available():
            raise InputError(f"{path}: reading HEIC/HEIF needs pillow-heif: {HEIF_HINT}")
        if suffix in VIDEO_SUFFIXES:
            raise InputError(f"{path}: a video, not an image; use fastdeblur.deblur_video(src, dst), or the command "
                             f"`fastdeblur {path.name} -o OUT{path.suffix}`")
        _check_file_size(str(path), info.st_size)
        with open(fd, "rb", buffering=0, closefd=False) as f:
            data = f.read()
    finally:
        os.close(fd)
    if not data:
        raise InputError(f"{path}: empty file")
    return str(path), data


# Pillow refuses to decode an image of more than twice Image.MAX_IMAGE_PIXELS (179 MP by default)
# as a possible decompression bomb (a small file that decodes to a huge array), and warns from
# once that (89 MP), which real photos pass: a 102 MP medium-format frame warned of a "decompression
# bomb DOS attack", and a 190 MP panorama failed as "an unknown error ... initializing plugin".
# fastdeblur keeps one limit for every decoder (16-bit PNGs and TIFFs, decoded without Pillow,
# had none), Pillow's refusal point unless FASTDEBLUR_MAX_PIXELS says otherwise; it names the
# limit when a file is over it and does not warn below it.
def max_pixels() -> int | None:
    """The most pixels read_image decodes: FASTDEBLUR_MAX_PIXELS (a count such as 400000000 or
    4e8; 0: no limit), else Pillow's own refusal point (twice Image.MAX_IMAGE_PIXELS; none if a
    program has set that to None)."""
    raw = os.environ.get("FASTDEBLUR_MAX_PIXELS", "").strip()
    if not raw:
        from PIL import Image

        return None if Image.MAX_IMAGE_PIXELS is None else 2 * int(Image.MAX_IMAGE_PIXELS)
    try:
        limit = int(float(raw))
    except (ValueError, OverflowError):
        raise ConfigError(f"FASTDEBLUR_MAX_PIXELS must be a pixel count (0: no limit), got {raw!r}") from None
    return None if limit <= 0 else limit


def _check_file_size(name: str, size: int, stream: bool = False) -> None:
    """Refuse more bytes than an image within max_pixels() can take in a file (8 bytes a pixel,
    16-bit RGBA uncompressed, plus 64 MiB), before they are read into memory: a stream without an
    end (`cat /dev/zero |`) or a 100 GB file was read until memory ran out (a MemoryError
    traceback, or the OOM killer)."""
    limit = max_pixels()
    cap = None if limit is None else 8 * limit + 64 * 2**20
    if cap is not None and size > cap:
        amount = f"more than {cap / 2**30:.1f} GiB" if stream else f"{size / 2**30:.1f} GiB"
        raise InputError(f"{name}: {amount}, larger than any image file within the limit of "
                         f"{limit / 1e6:.1f} megapixels; set FASTDEBLUR_MAX_PIXELS to a larger pixel count (0: no "
                         "limit) if it is one")


def read_stream(f, name: str) -> bytes:
    """All of a stream's bytes (standard input), within _check_file_size's limit."""
    chunks, size = [], 0
    while chunk := f.read(16 * 2**20):
        chunks.append(chunk)
        size += len(chunk)
        _check_file_size(name, size, stream=True)
    return b"".join(chunks)


def check_pixels(name: str, pixels: int, size: str = "") -> None:
    limit = max_pixels()
    if limit is not None and pixels > limit:
        raise InputError(f"{name}: {size + ', ' if size else ''}{pixels / 1e6:.1f} megapixels, over the limit of "
                         f"{limit / 1e6:.1f} megapixels (a guard against decompression bombs: small files that decode "
                         "to huge images); set FASTDEBLUR_MAX_PIXELS to a larger pixel count (0: no limit) to read it")


class _PillowLimit:
    """Pillow's decompression-bomb guard as fastdeblur's limit for one read: its warning below the
    limit silenced, its refusal reported as the limit's InputError. A FASTDEBLUR_MAX_PIXELS above
    Pillow's refusal point raises Pillow's limit for the process (Image.MAX_IMAGE_PIXELS), which
    only that explicit setting does. (warnings.catch_warnings is process-wide: another thread's
    new warning filter may be dropped while a read runs.)"""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        import warnings

        from PIL import Image

        limit = max_pixels()  # above Pillow's refusal point only where FASTDEBLUR_MAX_PIXELS says so
        if Image.MAX_IMAGE_PIXELS is not None and (limit is None or limit > 2 * Image.MAX_IMAGE_PIXELS):
            Image.MAX_IMAGE_PIXELS = None if limit is None else (limit + 1) // 2
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return self

    def __exit__(self, kind, exc, tb):
        import re

        from PIL import Image

        self._warnings.__exit__(kind, exc, tb)
        cause = exc
        while cause is not None and not isinstance(cause, Image.DecompressionBombError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            found = re.search(r"\((\d+) pixels\)", str(cause))
            check_pixels(self.name, int(found.group(1)) if found else 2 ** 62)
        return False


def read_image(src: str | os.PathLike | bytes | bytearray | memoryview) -> np.ndarray:
    """HxW, HxWx2, HxWx3 or HxWx4 array (gray, gray + alpha, RGB, RGBA), uint8 or uint16 as
    stored, EXIF orientation applied; other colour spaces (CMYK, YCbCr, palette, ...) as RGB.
    `src` is a path or a whole encoded file's bytes (the format is told by its content)."""
    name, data = _source(src)
    kind = sniff(data)
    if kind in HEIF_SUFFIXES and not heif_available():
        raise InputError(f"{name}: HEIC/HEIF data, which needs pillow-heif: {HEIF_HINT}")
    if kind in VIDEO_SUFFIXES:
        raise InputError(f"{name}: a video ({kind[1:].upper()} container), not an image; use "
                         "fastdeblur.deblur_video(src, dst) with a file")
    try:
        if kind == ".png" and len(data) > 24:  # IHDR: width and height, before any decoder
            w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
            check_pixels(name, w * h, f"{w}x{h}")
        if kind == ".png" and len(data) > 24 and data[24] == 16:
            import imagecodecs

            img = _oriented(imagecodecs.png_decode(data), _png_orientation(data))
        elif kind == ".tif":
            img = _read_tiff(data, name)
        else:
            img = _read_pillow(data, name)
    except InputError:
        raise
    except Exception as e:  # decoders raise many types (OSError, ValueError, codec errors)
        if kind is None and "can not handle" in str(e):  # imageio: no plugin knows these bytes
            raise InputError(f"{name}: not a readable image (no image format starts with {data[:8]!r})") from e
        if kind is not None:  # the header says what it is, so the rest is damaged, cut short or a variant not read here
            fmt = _FORMAT_NAMES.get(kind, kind[1:].upper())
            raise InputError(f"{name}: not a readable image: {fmt} data that its decoder refused "
                             f"({_decoder_reason(e)}); the file may be damaged or incomplete") from e
        raise InputError(f"{name}: not a readable image ({type(e).__name__}: {e})") from e
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[0] == 1 and img.shape[-1] not in (1, 2, 3, 4):
        img = img[0]  # a single-page stack from a multi-page reader
    if img.dtype not in (np.uint8, np.uint16):
        kind_of = "floating-point (HDR or linear-light) data" if img.dtype.kind == "f" else f"{img.dtype} pixels"
        raise InputError(f"{name}: {kind_of} is not supported: fastdeblur reads 8- and 16-bit images (save it as "
                         "a 16-bit TIFF or PNG; from Python, deblur() takes float arrays in [0, 1])")
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] not in (1, 2, 3, 4)):
        raise InputError(f"{name}: holds an array of shape {img.shape}, not a gray, RGB or RGBA image")
    if img.shape[0] == 0 or img.shape[1] == 0:  # a damaged header that decodes to nothing
        raise InputError(f"{name}: holds no pixels ({img.shape[1]}x{img.shape[0]}); the file may be damaged")
    return img


def _single_image(name: str, frames: int) -> None:
    if frames > 1:
        raise InputError(f"{name}: holds {frames} frames (an animation or a multi-page file); fastdeblur "
                         "reads single images: save the frame you want as its own file")


_FORMAT_NAMES = {".jpg": "JPEG", ".tif": "TIFF", ".heic": "HEIF"}


def _decoder_reason(e: BaseException) -> str:
    """What the decoder said, under imageio's own wrappers ("An unknown error occurred while
    initializing plugin `pillow`", "`pillow` can not handle the given uri")."""
    while ("plugin" in str(e) or "can not handle" in str(e)) and (e.__cause__ or e.__context__) is not None:
        e = e.__cause__ or e.__context__
    text = str(e)
    return "not a known variant of the format" if "<_io.BytesIO" in text or "bytes." in text else text


def _read_pillow(data: bytes, name: str) -> np.ndarray:
    import imageio.v3 as iio

    with _PillowLimit(name), iio.imopen(data, "r", plugin="pillow") as f:
        stack = f.properties(index=...)  # from the header: (frames, height, width[, channels])
        _single_image(name, stack.n_images)
        check_pixels(name, stack.shape[1] * stack.shape[2], f"{stack.shape[2]}x{stack.shape[1]}")
        meta = f.metadata(index=0, exclude_applied=False)
        mode = meta.get("mode")
        as_mode = "RGBA" if mode == "P" and "transparency" in meta else PIL_WORK_MODES.get(mode)
        return f.read(index=0, mode=as_mode, rotate=True)


class _QuietTifffile:
    """tifffile logs what it finds wrong in a damaged file ("<tifffile.TiffPage 0 @8> incorrect
    StripByteCounts count") through the `logging` module, which prints it to stderr beside the
    error the file gets here. While this thread reads a TIFF, its records are dropped; other
    threads' (a program's own tifffile use) pass as before."""

    _local = threading.local()
    _installed: list[bool] = []

    def __enter__(self):
        if not self._installed:  # once per process: a filter on tifffile's logger
            import logging

            logging.getLogger("tifffile").addFilter(lambda record: not getattr(self._local, "quiet", False))
            self._installed.append(True)
        self._local.quiet = True
        return self

    def __exit__(self, *exc):
        self._local.quiet = False
        return False


def _read_tiff(data: bytes, name: str) -> np.ndarray:
    """Gray and RGB TIFFs (8 or 16 bit) through tifffile, turned upright as their orientation
    tag says; other photometric interpretations (CMYK, YCbCr, palette, white-is-zero) through
    Pillow, which converts them to RGB or gray."""
    import io

    import tifffile

    with _QuietTifffile(), tifffile.TiffFile(io.BytesIO(data)) as tif:
        series = tif.series[0]
        _single_image(name, len(series.pages))
        page = tif.pages[0]
        check_pixels(name, int(page.imagewidth) * int(page.imagelength), f"{page.imagewidth}x{page.imagelength}")
        if page.photometric in _TIFF_AS_STORED:
            orientation = page.tags.get(_EXIF_ORIENTATION)  # TIFF's own tag 274, which EXIF took over
            img = series.asarray()
            if img.dtype == bool:  # 1-bit (fax, scans of text): 0 black, 255 white, as Pillow gives a 1-bit PNG
                img = img.astype(np.uint8) * np.uint8(255)
            if page.planarconfig == 2 and img.ndim == 3 and img.shape[0] == page.samplesperpixel:
                img = np.moveaxis(img, 0, -1)  # planar (each channel a plane, as some scanners write): HxWxC
            return _oriented(img, int(orientation.value) if orientation is not None else 1)
    return _read_pillow(data, name)


def _png_orientation(data: bytes) -> int:
    """The EXIF orientation of a PNG whose eXIf chunk precedes its pixels (1 if none)."""
    import io

    from PIL import Image

    try:
        with _PillowLimit("PNG"), Image.open(io.BytesIO(data)) as im:
            return int(im.getexif().get(_EXIF_ORIENTATION, 1)) if "exif" in im.info else 1
    except Exception:  # a damaged EXIF block: the pixels as stored
        return 1


def _oriented(img: np.ndarray, orientation: int) -> np.ndarray:
    """`img` (HxW[xC]) as EXIF `orientation` (1-8) says to display it, as Pillow's exif_transpose."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, -1)[::-1],
           8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(ops[orientation](img)) if orientation in ops else img


# PNG's zlib level: 1 writes a 720p frame in 80 ms and 6 (the libraries' default) in 350 ms, for
# files 13% smaller (measured on our 2-core Xeon): next to a 1 s CPU forward or a 9 ms GPU one,
# level 6 would make the encoder the bottleneck. OpenCV defaults to 1 for the same reason.
PNG_LEVEL = 1


def read_metadata(src: str | os.PathLike | bytes | bytearray | memoryview) -> dict[str, bytes]:
    """What of a file's metadata its deblurred copy keeps: the ICC colour profile (`icc_profile`)
    and, from JPEG, WebP, AVIF, HEIC and PNG files, the EXIF block (`exif`: camera, time, GPS), its
    orientation tag set to 1 because read_image has applied it. Empty when there is none or
    Pillow cannot parse it: metadata never fails a file. `src`: a path or a file's bytes."""
    import io

    from PIL import Image

    meta: dict[str, bytes] = {}
    encoded = isinstance(src, (bytes, bytearray, memoryview))
    if (sniff(src) if encoded else Path(src).suffix.lower()) in HEIF_SUFFIXES:
        heif_available()  # registers the plugin that opens them
    try:
        with _PillowLimit("metadata"), Image.open(io.BytesIO(src) if encoded else src) as im:
            if im.info.get("icc_profile"):
                meta["icc_profile"] = bytes(im.info["icc_profile"])
            # a TIFF's "EXIF" is its own layout tags; a PNG's EXIF stored after the pixels would
            # need a full decode, so only one stored before them (as cameras and editors do) is kept
            if im.format in ("JPEG", "WEBP", "AVIF", "HEIF") or (im.format == "PNG" and "exif" in im.info):
                exif = im.getexif()
                if len(exif):
                    if _EXIF_ORIENTATION in exif:
                        exif[_EXIF_ORIENTATION] = 1
                    meta["exif"] = exif.tobytes()
    except Exception:  # a damaged profile or EXIF block: deblur the pixels without it
        return {}
    return meta


def _usable_metadata(meta: dict[str, bytes] | None, img: np.ndarray, suffix: str) -> dict[str, bytes]:
    """The part of `meta` that `suffix` can hold and that describes `img`: an ICC profile only if
    its colour space (header bytes 16-20) matches the image's channels (a CMYK photo comes back
    RGB, a gray one may come back gray), EXIF only in JPEG, WebP, AVIF and PNG."""
    out: dict[str, bytes] = {}
    if not meta or suffix == ".bmp":
        return out
    icc = meta.get("icc_profile")
    channels = 1 if img.ndim == 2 else img.shape[-1]
    if icc and len(icc) >= 128 and icc[16:20] == (b"RGB " if channels >= 3 else b"GRAY"):
        out["icc_profile"] = icc
    exif = meta.get("exif")
    jpeg = suffix in (".jpg", ".jpeg")
    if exif and (suffix in (".png", ".webp", ".avif", *HEIF_SUFFIXES) or (jpeg and len(exif) <= _JPEG_APP1_LIMIT)):
        out["exif"] = exif
    return out


def _png_with_chunks(png: bytes, meta: dict[str, bytes]) -> bytes:
    """`png` with an iCCP and an eXIf chunk for `meta` inserted after its IHDR (both must come
    before the pixel data); for 16-bit PNGs, whose encoder writes no metadata."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    extra = b""
    if "icc_profile" in meta:
        extra += chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(meta["icc_profile"]))
    if "exif" in meta:
        exif = meta["exif"]
        extra += chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    end_of_ihdr = len(_PNG_SIGNATURE) + 8 + 13 + 4  # length, type, 13 data bytes, CRC
    return png[:end_of_ihdr] + extra + png[end_of_ihdr:]


def _check_options(quality: int, png_level: int) -> None:
    if not (isinstance(png_level, int) and 0 <= png_level <= 9):
        raise InputError(f"png_level must be an integer from 0 to 9, got {png_level!r}")
    if not (isinstance(quality, int) and not isinstance(quality, bool) and 1 <= quality <= 100):
        raise InputError(f"quality must be an integer from 1 to 100, got {quality!r}")


def encode_image(img: np.ndarray, suffix: str, *, quality: int = 95, png_level: int = PNG_LEVEL,
                 metadata: dict[str, bytes] | None = None) -> bytes:
    """`img` as the bytes of a `suffix` file (".png", ".jpg", ...); see write_image."""
    suffix = suffix.lower()
    if suffix not in WRITTEN_SUFFIXES:
        raise InputError(f"unsupported output format {suffix!r} (use one of {', '.join(suffixes())})")
    if (why := cannot_write(suffix)) is not None:
        raise InputError(why)
    _check_options(quality, png_level)
    if img.ndim == 3 and img.shape[-1] == 1:  # HxWx1: the encoders take gray as HxW
        img = img[..., 0]
    if img.dtype == np.uint16 and suffix in _EIGHT_BIT_ONLY:
        img = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if suffix in (".jpg", ".jpeg", ".bmp") and img.ndim == 3 and img.shape[-1] in (2, 4):
        img = _flattened_on_white(img)
    meta = _usable_metadata(metadata, img, suffix)
    if suffix == ".png" and img.dtype == np.uint16:
        import imagecodecs

        return _png_with_chunks(imagecodecs.png_encode(np.ascontiguousarray(img), level=png_level), meta)
    import imageio.v3 as iio

    kwargs: dict = ({"quality": quality} if suffix in _LOSSY else
                    {"compress_level": png_level} if suffix == ".png" else {})
    if suffix in (".tif", ".tiff"):  # tifffile: the profile only
        kwargs.update({"iccprofile": meta["icc_profile"]} if "icc_profile" in meta else {})
        if img.ndim == 3 and img.shape[-1] == 2:  # gray + alpha: left to guess, tifffile wrote H pages of Wx2
            kwargs.update(photometric="minisblack", planarconfig="contig", extrasamples=["unassalpha"])
    else:  # Pillow
        kwargs.update(meta)
    return iio.imwrite("<bytes>", img, extension=suffix, **kwargs)


def _flattened_on_white(img: np.ndarray) -> np.ndarray:
    """Gray + alpha or RGBA (uint8) composited over white, as image editors save a transparent
    image as JPEG or BMP, which hold no alpha (Pillow refuses gray + alpha, and writes RGBA BMPs
    whose alpha readers ignore)."""
    alpha = img[..., -1:].astype(np.float32) / 255.0
    out = img[..., :-1].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    out = np.round(out).astype(np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out


def write_image(path: str | os.PathLike, img: np.ndarray, *, quality: int = 95, png_level: int = PNG_LEVEL,
                metadata: dict[str, bytes] | None = None) -> Path:
    """Write atomically; 16-bit data is reduced to 8 bits only for the formats that hold no more
    (JPEG, BMP, WebP, AVIF, HEIC), and alpha is composited over white for JPEG and BMP.

    quality: JPEG, WebP, AVIF and HEIC quality (1-100); png_level: PNG compression (0 = none ... 9 = smallest, slowest);
    metadata: `read_metadata`'s dict, written where the format holds it (ICC profile: PNG, JPEG,
    WebP, AVIF, TIFF; EXIF: PNG, JPEG, WebP, AVIF). JPEG, WebP and AVIF are written lossy at
    `quality`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITTEN_SUFFIXES:
        raise InputError(f"{path}: unsupported output format {path.suffix!r} (use one of {', '.join(suffixes())})")
    if (why := cannot_write(suffix)) is not None:
        raise InputError(f"{path}: {why}")
    data = encode_image(img, suffix, quality=quality, png_level=png_level, metadata=metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = private_temp_path(path)
    try:
        tmp.write_bytes(data)
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def private_temp_path(dest: Path) -> Path:
    """An empty temp file beside `dest` (same folder, so the final rename is atomic)."""
    fd, name = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=dest.suffix + ".part", dir=dest.parent)
    os.close(fd)
    return Path(name)


def publish(tmp: Path, dest: Path) -> None:
    """Give `tmp` the permissions a normal new file gets (mkstemp makes it 0600), rename it over `dest`."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, dest)
