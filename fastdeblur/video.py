"""Videos in and out: decode with FFmpeg (PyAV), deblur each frame, encode, carry the sound.

Frames go through `deblur()` one by one at their stored size (on a GPU, frames of one size replay
a captured graph). Decoding runs on a thread ahead of the network and encoding on one behind it,
so FFmpeg's work overlaps the forward. Timestamps (variable frame rates included), the rotation
tag, the colour tags and 10-bit depth are kept; every sound track is copied packet for packet, or
re-encoded where the output container cannot hold its codec. The output lands through a temp file
and a rename, so an error or Ctrl-C leaves no half-written video.

PyAV is optional (`pip install fastdeblur[video]`): its wheels bundle FFmpeg with x264 and x265,
which are GPL, and a core dependency should not impose them.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, missing_path, not_a_file
from .io import VIDEO_SUFFIXES, check_pixels, private_temp_path, publish

VIDEO_HINT = "pip install -U av (18 or newer; or fastdeblur[video])"
_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
# The encoder for each source codec re-encoded in kind; for anything else see _video_encoder.
_ENCODERS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1"}
# Constant-quality settings that look like the source at normal viewing (x264's "visually lossless"
# 18 and the others' equivalents); lower is better and bigger.
DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libvpx-vp9": 24, "libsvtav1": 28}
_CRF_RANGE = {"libx264": 51, "libx265": 51, "libvpx-vp9": 63, "libsvtav1": 63}
_QUEUE = 4  # decoded frames held ahead of the network, and deblurred ones behind it


_AV_MIN = 18  # VideoStream.set_display_rotation, to carry a phone video's rotation tag


def _av_too_old(av) -> bool:
    try:
        return int(av.__version__.split(".")[0]) < _AV_MIN
    except ValueError:  # a development build: take it
        return False


def video_available() -> bool:
    """PyAV is installed, recent enough."""
    try:
        import av
    except ImportError:
        return False
    return not _av_too_old(av)


def is_video_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _import_av():
    try:
        import av
    except ImportError:
        raise InputError(f"videos need PyAV, which is not installed: {VIDEO_HINT}") from None
    if _av_too_old(av):
        raise InputError(f"videos need PyAV {_AV_MIN} or newer, and {av.__version__} is installed: pip install -U av")
    return av


@dataclass
class VideoResult:
    """What `deblur_video` wrote."""

    path: Path
    frames: int
    width: int
    height: int
    codec: str  # the encoder used, e.g. "libx264"
    audio: str  # "copied", "re-encoded to aac", "copied and re-encoded to opus", or "none"
    expected: int | None = None  # the frames the container announces, or its duration implies


def deblur_video(src: str | os.PathLike, dst: str | os.PathLike, model: Any = "default", *,
                 overwrite: bool = False, crf: int | None = None, metadata: bool = True,
                 start: float | None = None, end: float | None = None,
                 progress: Callable[[int, int | None], None] | None = None, **deblur_kwargs: Any) -> VideoResult:
    """Deblur every frame of the video `src` into `dst` (.mp4, .m4v, .mov, .mkv, .webm, .avi).

    model and deblur_kwargs (device, dtype, backend, tile, ensemble): as for `deblur()`; a model
      from `load_model()` is loaded once, a name is cached after the first frame.
    crf: constant-quality setting of the encoder (lower: better, bigger); default DEFAULT_CRF's
      value for it. The encoder is the source's kind (H.264, HEVC, VP9, AV1) where the output
      container holds it, else 8-bit H.264 (VP9 for .webm), or 10-bit HEVC for deeper sources.
    metadata: carry the container's tags (creation time, title, a phone's location, ...) and the
      streams' language; False writes none.
    start, end: deblur only the part from `start` to `end` seconds (from the file's start; either
      may be None), e.g. to try a few seconds before hours of CPU time; the output starts at 0.
    progress: called as progress(frames_done, frames_total) after each frame; frames_total is the
      container's count or an estimate from its duration, None where it has neither.
    A file that ends before the frames its header announces (a copy cut short) is deblurred as far
    as it goes, with a RuntimeWarning.
    """
    from .api import deblur

    av = _import_av()
    given, src, dst = src, Path(src), Path(dst)
    if not src.is_file():
        raise InputError(missing_path(given) if not src.exists() else not_a_file(src))
    fmt = _CONTAINERS.get(dst.suffix.lower())
    if fmt is None:
        raise InputError(f"{dst}: unsupported video output {dst.suffix!r} (use one of {', '.join(VIDEO_SUFFIXES)})")
    if dst.exists() and os.path.samefile(src, dst):
        raise InputError(f"refusing to overwrite the input file {dst}")
    if dst.exists() and not overwrite:
        raise InputError(f"output {dst} exists (pass overwrite=True)")
    if progress is not None and not callable(progress):
        raise InputError(f"progress must be a function called with (frames done, frames in all), got "
                         f"{type(progress).__name__}")
    if crf is not None and (not isinstance(crf, int) or isinstance(crf, bool) or crf < 0):
        raise InputError(f"crf must be a non-negative integer, got {crf!r}")
    for name, t in (("start", start), ("end", end)):
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t < float("inf")):
            raise InputError(f"{name} must be a number of seconds >= 0, got {t!r}")
    if start is not None and end is not None and end <= start:
        raise InputError(f"end ({end} s) must come after start ({start} s)")
    trim = start is not None or end is not None
    inp, vin = open_video(av, src)
    with inp:
        # every sound track FFmpeg can read, in order (one in a codec it lacks has no context)
        sound = [a for a in inp.streams.audio if getattr(a.codec_context, "codec", None) is not None]
        total = _frame_count(vin, inp)
        if trim:
            origin = (inp.start_time or 0) / 1e6  # microseconds
            t0, t1 = origin + (start or 0), origin + end if end is not None else float("inf")
            rate = float(frame_rate(vin) or 0)
            if rate and end is not None:  # for the progress reports
                part = round((end - (start or 0)) * rate)
                total = part if total is None else min(total, part)
            elif rate and total is not None:
                total = max(0, total - round((start or 0) * rate))
            if start:
                inp.seek(round(t0 * 1e6))  # to the key frame at or before t0; decoding starts there
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = private_temp_path(dst)
        try:
            out = av.open(str(tmp), "w", format=fmt)
            with out:
                codec, pix_fmt = _video_encoder(av, out, vin.codec_context, fmt)
                decode = {a.index for a in sound if not _copies(out, a)}
                damaged = [0]  # packets the decoders refused (counted on the decode thread)
                items = _decoded(inp, vin, sound, _bits(av, pix_fmt), decode, damaged)
                if trim:
                    items = _trimmed(items, t0, t1)
                # The first frame's rotation and colour tags go into the header, which the first
                # packet muxed (often sound) writes: read up to that frame before muxing anything.
                ahead = list(_through_first_frame(items))
                if ahead[-1][0] != "video":
                    part = f"from {start or 0:g} s to " + ("the end" if end is None else f"{end:g} s")
                    long = f" (the video is {inp.duration / 1e6:.2f} s long)" if inp.duration else ""
                    raise InputError(f"{src}: no frames {part}{long}" if trim else
                                     f"{src}: its video stream holds no frames")
                enc = _Encoder(av, out, vin, sound, codec, pix_fmt, crf, ahead[-1][2])
                if metadata:
                    _copy_tags(inp, out, [(vin, enc.stream)] + [(a, enc.tracks[a.index].stream) for a in sound])
                frames = _pipeline(itertools.chain(ahead, items), lambda img: deblur(img, model, **deblur_kwargs),
                                   enc, progress, total)
                enc.flush()
            publish(tmp, dst)
        except av.FFmpegError as e:
            raise InputError(f"{src}: {e}") from e
        finally:
            tmp.unlink(missing_ok=True)
    if damaged[0]:
        n = damaged[0]
        warnings.warn(f"{src}: {n} damaged packet{'s' * (n != 1)} left out (the decoder refused "
                      f"{'them' if n != 1 else 'it'}); the output lacks their frames or sound", RuntimeWarning,
                      stacklevel=2)
    # Cut short: the frames read end well before the stream's announced duration (times, not frame
    # counts: some files count the ticks of a fine clock, e.g. an AVI at "600 fps" with gaps)
    announced = _stream_seconds(vin)
    if announced is not None and enc.span is not None and not trim:
        step = enc.span / (frames - 1) if frames > 1 else 1 / float(enc.rate)  # the frames' mean spacing
        read = enc.span + step
        if read < announced - max(2 * step, 0.01 * announced):
            warnings.warn(f"{src}: frames for {read:.2f} s of the {announced:.2f} s its header announces could be "
                          f"read ({frames} frame{'s' * (frames != 1)}); the file may be cut short", RuntimeWarning,
                          stacklevel=2)
    return VideoResult(dst, frames, vin.codec_context.width, vin.codec_context.height, codec, enc.audio, total)


_MUXER_TAGS = {"encoder", "major_brand", "minor_version", "compatible_brands", "duration"}  # the muxer writes its own
_STREAM_TAGS = ("language", "title", "handler_name")


def _copy_tags(inp, out, pairs) -> None:
    out.metadata.update({k: v for k, v in inp.metadata.items() if k.lower() not in _MUXER_TAGS})
    for src, dst in pairs:
        if src is not None and dst is not None:
            dst.metadata.update({k: v for k, v in src.metadata.items() if k.lower() in _STREAM_TAGS})


def open_video(av, path: Path):
    """(container, its first video stream), decoded with frame and slice threads; an InputError
    names a file that is not a video, holds no video stream, or has frames over
    FASTDEBLUR_MAX_PIXELS."""
    try:
        # tags that are not UTF-8 (older cameras write Latin-1 titles) are read with replacement
        # characters rather than refusing the video: PyAV's default raised UnicodeDecodeError
        inp = av.open(str(path), metadata_errors="replace")
    except (av.FFmpegError, OSError, ValueError) as e:
        raise InputError(f"{path}: cannot be read as a video: {e}") from e
    try:  # a file refused here is closed
        if not inp.streams.video:
            raise InputError(f"{path}: holds no video stream")
        vin = inp.streams.video[0]
        if vin.codec_context is None:  # a codec id FFmpeg lacks, or a damaged header
            raise InputError(f"{path}: its video stream's codec cannot be decoded here (not one this FFmpeg knows, "
                             "or the file's header is damaged)")
        demuxer, codec = inp.format.name, vin.codec_context.name
        if demuxer == "image2" or demuxer.endswith("_pipe"):  # FFmpeg's still-image readers: png_pipe, ...
            raise InputError(f"{path}: is a still image ({codec}), not a video: deblur() and the command take "
                             "images")
        w, h = vin.codec_context.width, vin.codec_context.height  # each frame is an image: the images' limit
        check_pixels(str(path), w * h, f"{w}x{h} frames")
    except InputError:
        inp.close()
        raise
    vin.thread_type = "AUTO"
    return inp, vin


def _through_first_frame(items: Iterator[tuple[str, Any, Any]]) -> Iterator[tuple[str, Any, Any]]:
    """The items up to and including the first video frame (all of them if there is none)."""
    for item in items:
        yield item
        if item[0] == "video":
            return
    yield ("end", None, None)


def _video_encoder(av, out, ctx, fmt: str) -> tuple[str, str]:
    """(encoder, pixel format): `_encoder_for`'s, with 4:4:4 chroma for frames of an odd width or
    height on x264 and x265, which refuse such sizes with subsampled chroma (an odd-sized FFV1,
    gray or RGB source failed as "Generic error in an external library")."""
    name, pix_fmt = _encoder_for(av, out, ctx, fmt)
    if name in ("libx264", "libx265") and (ctx.width % 2 or ctx.height % 2):
        full = pix_fmt.replace("420", "444").replace("422", "444")
        if full != pix_fmt and full in {f.name for f in av.codec.Codec(name, "w").video_formats}:
            return name, full
    return name, pix_fmt


def _encoder_for(av, out, ctx, fmt: str) -> tuple[str, str]:
    """(encoder, pixel format). H.264, HEVC, VP9 and AV1 are re-encoded in kind and format where
    the container and the encoder take them. Anything else (MJPEG, MPEG-4 Part 2, ProRes, DV)
    becomes what players play: 8-bit 4:2:0 H.264 (VP9 in WebM), or 10-bit 4:2:0 HEVC for sources
    deeper than 8 bits."""
    src_fmt = ctx.pix_fmt or "yuv420p"
    deep = _bits(av, src_fmt) > 8
    kind = _kind(ctx)
    name = _ENCODERS.get(kind)
    if name is not None and _holds(out, kind) and _has_encoder(av, name):
        formats = {f.name for f in av.codec.Codec(name, "w").video_formats}
        if src_fmt in formats:
            return name, src_fmt
        return name, "yuv420p10le" if deep and "yuv420p10le" in formats else "yuv420p"
    if fmt == "webm":
        return "libvpx-vp9", "yuv420p"
    if deep and _holds(out, "hevc") and _has_encoder(av, "libx265"):
        return "libx265", "yuv420p10le"
    return "libx264", "yuv420p"


def _bits(av, pix_fmt: str) -> int:
    """8, or 16 for formats deeper than 8 bits (deblurred as 16-bit RGB)."""
    return 16 if av.VideoFormat(pix_fmt).components[0].bits > 8 else 8


def _stream_seconds(stream) -> float | None:
    """The video stream's own duration (or its Matroska DURATION tag), in seconds."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if tag := stream.metadata.get("DURATION"):  # "00:01:02.500000000"
        try:
            h, m, sec = tag.split(":")
            return int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            return None
    return None


def frame_rate(stream):
    """Frames per second (a Fraction): the stream's mean rate, else FFmpeg's guess; None if neither."""
    return stream.average_rate or stream.guessed_rate


def _frame_count(stream, container) -> int | None:
    """The stream's frame count, or an estimate from its duration (its own, else the file's)."""
    if stream.frames:
        return int(stream.frames)
    rate = frame_rate(stream)
    seconds = _stream_seconds(stream) or (container.duration / 1e6 if container.duration else None)  # microseconds
    return max(1, round(seconds * float(rate))) if rate and seconds else None


class _Encoder:
    """The output streams: video encoded from deblurred RGB frames, sound copied or re-encoded."""

    def __init__(self, av, out, vin, sound: list, codec: str, pix_fmt: str, crf: int | None, first):
        limit = _CRF_RANGE[codec]
        if crf is not None and crf > limit:
            raise InputError(f"crf {crf} is out of range for {codec} (0-{limit})")
        self.av, self.out, self.pix_fmt = av, out, pix_fmt
        self.rate = frame_rate(vin) or 30
        self.encoded = 0
        self.earliest_dts: float | None = None  # 16 frames before the first, in the stream's time base
        self.first: float | None = None
        self.span: float | None = None
        self.stream = out.add_stream(codec, rate=self.rate)
        self.stream.width, self.stream.height = vin.codec_context.width, vin.codec_context.height
        self.stream.pix_fmt = pix_fmt
        # the source's timestamps are encoded and written as they are (a variable frame rate too)
        self.stream.time_base = self.stream.codec_context.time_base = vin.time_base
        if vin.sample_aspect_ratio:
            self.stream.sample_aspect_ratio = vin.sample_aspect_ratio
        opts = {"crf": str(DEFAULT_CRF[codec] if crf is None else crf)}
        if codec == "libx265":  # x265 prints its settings on stderr unless told not to
            opts["x265-params"] = "log-level=error"
        if codec == "libsvtav1":  # SVT-AV1 too, read from its environment (a user's own setting wins)
            os.environ.setdefault("SVT_LOG", "1")
        if codec == "libvpx-vp9":
            opts.update({"b": "0", "row-mt": "1", "deadline": "good", "cpu-used": "2"})
        self.stream.options = opts
        if first.rotation:  # a phone's portrait video: its frames are stored sideways, tagged
            self.stream.set_display_rotation(first.rotation)
        # the source's colour tags, so players show the same colours (0 or 2: unspecified)
        self.colour = {a: getattr(first, a) for a in ("colorspace", "color_range", "color_primaries", "color_trc")}
        ctx = self.stream.codec_context
        for attr, value in self.colour.items():
            setattr(ctx, attr, value)
        self.tracks = {a.index: _SoundTrack(av, out, a) for a in sound}
        hows = list(dict.fromkeys(t.how for t in self.tracks.values()))
        self.audio = " and ".join(hows) if hows else "none"

    def video(self, img: np.ndarray, like) -> None:
        """Encode deblurred pixels `img` [H, W, 3] with the timestamp and tags of source frame `like`."""
        rgb = self.av.VideoFrame.from_ndarray(img, format="rgb48le" if img.dtype == np.uint16 else "rgb24")
        frame = rgb.reformat(format=self.pix_fmt, dst_colorspace=self.colour["colorspace"] or None,
                             dst_color_range=self.colour["color_range"] or None)
        if like.time is not None:  # the time from the first frame to the last, for the check for cut files
            self.first = like.time if self.first is None else self.first
            self.span = like.time - self.first
        if like.pts is None:  # a stream without timestamps: frame n at n / rate
            tb = self.stream.time_base
            frame.pts, frame.time_base = round(self.encoded / (self.rate * tb)), tb
        else:
            frame.pts, frame.time_base = like.pts, like.time_base
        self.encoded += 1
        if self.earliest_dts is None and self.stream.time_base:
            self.earliest_dts = frame.pts - 16 / (float(self.rate) * float(self.stream.time_base))
        frame.color_primaries, frame.color_trc = self.colour["color_primaries"], self.colour["color_trc"]
        self._mux_video(self.stream.encode(frame))

    def _mux_video(self, packets) -> None:
        self.out.mux(plausible_dts(packets, self.earliest_dts))

    def sound(self, item, index: int) -> None:
        self.tracks[index].write(item)

    def flush(self) -> None:
        self._mux_video(self.stream.encode(None))
        for track in self.tracks.values():
            track.flush()


def plausible_dts(packets: list, earliest: float | None) -> list:
    """The encoder's packets with a decode timestamp that cannot be one unset (after its
    presentation time, or before `earliest`: 16 frames before the first frame): x265 sometimes
    leaves it unset on very short clips (2 frames: -2^46 in half the runs), and the MP4 muxer then
    failed with "Not yet implemented in FFmpeg"; without one the muxer derives it."""
    for packet in packets:
        if packet.dts is not None and packet.pts is not None and (
                packet.dts > packet.pts or (earliest is not None and packet.dts < earliest)):
            packet.dts = None
    return packets


def _copies(out, stream) -> bool:
    """A sound stream is copied where the output container holds its codec, else re-encoded."""
    return _holds(out, _kind(stream.codec_context))


# Codecs that FFmpeg's muxers list as supported but write only with -strict experimental: its
# QuickTime muxer refuses VP9, AV1, FLAC and Opus with EINVAL when the header is written.
_EXPERIMENTAL = {"mov": {"vp9", "av1", "flac", "opus"}}


def _holds(out, kind: str) -> bool:
    """The output container holds the format `kind` ("vp9", "flac", ...) without experimental mode."""
    return kind in out.supported_codecs and kind not in _EXPERIMENTAL.get(out.format.name, ())


def _kind(ctx) -> str:
    """The format's name ("av1"), not the decoder's ("libdav1d"), which containers know formats by."""
    return ctx.codec.canonical_name


class _SoundTrack:
    """One sound stream of the output: the source's packets copied, or its frames re-encoded."""

    def __init__(self, av, out, ain):
        self.out, self.resampler = out, None
        if _copies(out, ain):
            self.stream, self.how = out.add_stream_from_template(ain), "copied"
            return
        actx = ain.codec_context  # e.g. PCM sound into WebM
        codec = out.default_audio_codec
        spec = av.codec.Codec(codec, "w")
        rates = spec.audio_rates  # Opus takes 48 kHz and a few lower rates, not 44.1 kHz
        rate = actx.sample_rate if not rates or actx.sample_rate in rates else max(rates)
        self.stream = out.add_stream(codec, rate=rate, layout=actx.layout)
        fmts = spec.audio_formats
        self.resampler = av.AudioResampler(format=fmts[0].name if fmts else None, layout=actx.layout, rate=rate)
        self.how = f"re-encoded to {codec}"

    def write(self, item) -> None:
        """Copy a demuxed packet, or re-encode a decoded frame."""
        if self.resampler is None:
            item.stream = self.stream
            self.out.mux(item)
            return
        for frame in self.resampler.resample(item):
            self.out.mux(self.stream.encode(frame))

    def flush(self) -> None:
        if self.resampler is not None:
            for frame in self.resampler.resample(None):
                self.out.mux(self.stream.encode(frame))
            self.out.mux(self.stream.encode(None))


def _has_encoder(av, name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except (av.FFmpegError, ValueError):
        return False
    return True


def _decoded(inp, vin, sound: list, bits: int, decode: set[int],
             damaged: list[int] | None = None) -> Iterator[tuple[str, Any, Any]]:
    """("video", pixels [H, W, 3], source frame) and ("sound", packet, or decoded frame for the
    stream indices in `decode`, stream index), in file order. With `damaged`, a packet its decoder
    refuses as invalid data is left out and counted in damaged[0], as players and FFmpeg's own
    command go on past one: a glitch in a long recording no longer fails the whole video (training
    pairs, which must not average across the gap, tell it by the frames' times). Without it the
    decoder's error stands."""
    import av

    def frames(packet):
        try:
            return packet.decode()
        except av.InvalidDataError:
            if damaged is None:
                raise
            damaged[0] += 1
            return []

    fmt = "rgb48le" if bits == 16 else "rgb24"
    for packet in inp.demux([vin, *sound]):
        index = packet.stream.index
        if packet.stream is vin:
            for frame in frames(packet):
                yield "video", frame.to_ndarray(format=fmt, src_color_range=frame.color_range or None), frame
        elif index in decode:
            for frame in frames(packet):
                yield "sound", frame, index
        elif packet.dts is not None:  # a copy takes real packets, not the demuxer's final empty one
            yield "sound", packet, index


def _trimmed(items: Iterator[tuple[str, Any, Any]], t0: float, t1: float) -> Iterator[tuple[str, Any, Any]]:
    """The items whose time lies in [t0, t1), their timestamps moved back by t0 (the output starts
    at 0); stops at the first video frame at or after t1. Untimed items pass unchanged."""
    eps = 1e-6
    for kind, payload, extra in items:
        thing = extra if kind == "video" else payload  # the frame, packet or sound frame with the times
        pts = thing.pts if thing.pts is not None else getattr(thing, "dts", None)
        if pts is None or thing.time_base is None:
            yield kind, payload, extra
            continue
        t = float(pts * thing.time_base)
        if kind == "video" and t >= t1 - eps:
            return
        if t < t0 - eps or t >= t1 - eps:
            continue
        shift = round(t0 / thing.time_base)
        if thing.pts is not None:
            thing.pts -= shift
        if getattr(thing, "dts", None) is not None:
            thing.dts -= shift
        yield kind, payload, extra


class _Stop(Exception):
    """Raised in a worker thread when the other side gave up."""


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stop
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event):
    while True:
        if stop.is_set():
            raise _Stop
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue


_END = object()


def _pipeline(items: Iterator, deblur_frame: Callable[[np.ndarray], np.ndarray], enc: _Encoder,
              progress: Callable[[int, int | None], None] | None, total: int | None) -> int:
    """Decode on one thread, deblur here, encode on another; the first error anywhere stops all
    three and is raised here. Returns the number of frames encoded."""
    stop = threading.Event()
    decoded: queue.Queue = queue.Queue(_QUEUE)
    deblurred: queue.Queue = queue.Queue(_QUEUE)
    errors: list[BaseException] = []

    def run(work: Callable[[], None]) -> Callable[[], None]:
        def body() -> None:
            try:
                work()
            except _Stop:
                pass
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                errors.append(e)
                stop.set()
        return body

    def decode() -> None:
        for item in items:
            _put(decoded, item, stop)
        _put(decoded, _END, stop)

    def encode() -> None:
        while (item := _get(deblurred, stop)) is not _END:
            kind, payload, extra = item
            if kind == "video":
                enc.video(payload, extra)
            else:
                enc.sound(payload, extra)

    threads = [threading.Thread(target=run(decode), name="fastdeblur-decode", daemon=True),
               threading.Thread(target=run(encode), name="fastdeblur-encode", daemon=True)]
    for t in threads:
        t.start()
    frames = 0
    try:
        while (item := _get(decoded, stop)) is not _END:
            kind, payload, extra = item
            if kind == "video":
                payload = deblur_frame(payload)
                frames += 1
            _put(deblurred, (kind, payload, extra), stop)
            if kind == "video" and progress is not None:
                progress(frames, total if total is None else max(total, frames))
        _put(deblurred, _END, stop)
    except _Stop:  # a worker failed: its error is raised below
        pass
    except BaseException:
        stop.set()
        raise
    finally:
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return frames
