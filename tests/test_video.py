"""Videos: frames, timestamps, rotation, colour tags, bit depth and sound survive; errors and
interruptions leave no file behind and no thread running."""

import os
import threading
import warnings
from fractions import Fraction

import numpy as np
import pytest

from fastdeblur import InputError, deblur, deblur_video
from fastdeblur.metrics import psnr
from fastdeblur.reference import DMPHN
from fastdeblur.train.init import identity_init
from fastdeblur.video import plausible_dts

av = pytest.importorskip("av", reason="PyAV is not installed (pip install fastdeblur[video])")


def make_video(path, *, codec="libx264", pix_fmt="yuv420p", size=(96, 64), frames=8, rate=25, sound="aac",
               sound_rate=48000, sound_tracks=1, rotation=0, gop=None, colorspace=None, color_range=None, vfr=False,
               tags=None):
    """A small smooth moving pattern (chroma subsampling loses little of it), encoded losslessly
    where the codec can, with a sine tone of the video's length."""
    if codec == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # errors only
    out = av.open(str(path), "w")
    if tags:
        out.metadata.update(tags)
    v = out.add_stream(codec, rate=rate)
    v.width, v.height, v.pix_fmt = size[0], size[1], pix_fmt
    v.options = {"libx264": {"crf": "0"}, "libx265": {"x265-params": "log-level=error:lossless=1"}}.get(codec, {})
    if gop:  # a key frame every `gop` frames (x264's default: 250)
        v.options = {**v.options, "g": str(gop), "keyint_min": str(gop)}
    tb = Fraction(1, rate * 100)
    v.time_base = v.codec_context.time_base = tb
    if rotation:
        v.set_display_rotation(rotation)
    if colorspace is not None:
        v.codec_context.colorspace = colorspace
    if color_range is not None:
        v.codec_context.color_range = color_range
    tracks = [out.add_stream(sound, rate=sound_rate, layout="mono") for _ in range(sound_tracks if sound else 0)]
    for a, language in zip(tracks, ["eng", "fra", "deu"], strict=False):
        a.metadata["language"] = language
    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    pts = 0
    for i in range(frames):
        img = np.stack([128 + 100 * np.sin(xx / 9 + i / 3), 128 + 100 * np.cos(yy / 7 - i / 5),
                        128 + 90 * np.sin((xx + yy) / 13)], -1).astype(np.uint8)
        f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=pix_fmt, dst_colorspace=colorspace,
                                                                      dst_color_range=color_range)
        f.pts, f.time_base = pts, tb
        pts += (50 if i % 2 else 150) if vfr else 100
        # x265 leaves garbage decode timestamps (-2^46) on some flushed packets of 2-frame clips, and
        # the Matroska muxer then refused this source clip with EINVAL (CI, once in many runs):
        # unset them as fastdeblur's encoder does (16 frames of at most 150 ticks before the first)
        out.mux(plausible_dts(v.encode(f), -16 * 150))
    out.mux(plausible_dts(v.encode(None), -16 * 150))
    for k, a in enumerate(tracks):
        t, pcm = 0, sound.startswith("pcm")
        while t < frames / rate * sound_rate:
            s = 0.3 * np.sin((t + np.arange(1024)) / (10 + k))
            af = av.AudioFrame.from_ndarray((s * 32767).astype(np.int16)[None] if pcm else s.astype(np.float32)[None],
                                            format="s16" if pcm else "fltp", layout="mono")
            af.sample_rate, af.pts = sound_rate, t
            t += 1024
            out.mux(a.encode(af))
        out.mux(a.encode(None))
    out.close()
    return path


def probe(path):
    """(frames as RGB arrays, their times, first frame's (rotation, colorspace, color_range), stream info)."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {"codec": v.codec_context.name, "pix_fmt": v.codec_context.pix_fmt, "time_base": v.time_base,
                "streams": [(s.type, s.codec_context.name) for s in c.streams], "tags": dict(c.metadata),
                "languages": [s.metadata.get("language") for s in c.streams.audio],
                "sound_rate": c.streams.audio[0].codec_context.sample_rate if c.streams.audio else None}
        deep = v.codec_context.pix_fmt.endswith("10le")
        frames, pts, first = [], [], None
        for f in c.decode(v):
            frames.append(f.to_ndarray(format="rgb48le" if deep else "rgb24", src_color_range=f.color_range or None))
            pts.append(f.pts * f.time_base)  # seconds, as a Fraction
            first = first or (f.rotation, f.colorspace, f.color_range)
    with av.open(str(path)) as c:  # every sound track's packets, track by track
        tracks = {a.index: [] for a in c.streams.audio}
        for p in c.demux(*c.streams.audio) if tracks else []:  # demux() with no stream reads them all
            if p.size:
                tracks[p.stream.index].append(bytes(p))
        sound = list(tracks.values())
    return frames, pts, first, info, sound


@pytest.fixture(scope="module")
def identity():
    """DMPHN(1-2-4) that returns its input: what comes out is what the video path did to the frames."""
    return identity_init(DMPHN((1, 2, 4))).eval().requires_grad_(False)


def _assert_same_frames(a, b, min_db):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape
        assert psnr(x, y) >= min_db  # on 8 bits, whatever the depths


def test_round_trip_keeps_frames_timestamps_rotation_colour_sound_and_tags(tmp_path, identity):
    tags = {"title": "hello", "location": "+48.8577+002.2950/", "creation_time": "2026-12-01T10:00:00.000000Z"}
    src = make_video(tmp_path / "in.mp4", rotation=90, colorspace=1, color_range=1, vfr=True, tags=tags, sound_tracks=2)
    seen = []
    r = deblur_video(src, tmp_path / "out.mp4", identity, crf=0, progress=lambda n, total: seen.append((n, total)))
    assert (r.frames, r.width, r.height, r.codec, r.audio) == (8, 96, 64, "libx264", "copied")
    assert seen == [(n, 8) for n in range(1, 9)]
    a, pts_a, first_a, info_a, sound_a = probe(src)
    b, pts_b, first_b, info_b, sound_b = probe(r.path)
    assert pts_b == pts_a and pts_a[:3] == [0, Fraction(6, 100), Fraction(8, 100)]  # a variable frame rate, kept
    assert first_b == first_a == (90, 1, 1)  # rotation tag, BT.709, limited range
    assert info_b["streams"] == info_a["streams"] == [("video", "h264"), ("audio", "aac"), ("audio", "aac")]
    assert sound_b == sound_a and len(sound_a) == 2 and len(sound_a[1]) > 5  # both tracks, copied packet for packet
    assert info_b["languages"] == info_a["languages"] == ["eng", "fra"]
    assert {k: info_b["tags"].get(k) for k in tags} == tags
    _assert_same_frames(a, b, 42)  # RGB -> 4:2:0 and back again, nothing else
    stripped = deblur_video(src, tmp_path / "bare.mp4", identity, metadata=False)
    assert not {"title", "location"} & set(probe(stripped.path)[3]["tags"])


def test_frames_are_deblurred_like_images(tmp_path):
    """The frames go through deblur() with the model and options given: the output matches
    deblur() of the decoded frames, up to the lossless encoder's colour conversion."""
    src = make_video(tmp_path / "in.mkv", sound=None, frames=3)
    r = deblur_video(src, tmp_path / "out.mkv", "fastdeblur-default", crf=0, ensemble=2)
    frames = probe(src)[0]
    want = [deblur(f, "fastdeblur-default", ensemble=2) for f in frames]
    assert max(psnr(f, w) for f, w in zip(frames, want, strict=True)) < 40  # the model changes the frames
    # what 4:2:0 keeps of the deblurred frames: the encoder itself is lossless here
    subsampled = [av.VideoFrame.from_ndarray(w, format="rgb24").reformat(format="yuv420p").to_ndarray(format="rgb24")
                  for w in want]
    _assert_same_frames(probe(r.path)[0], subsampled, 50)


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "gray"])
def test_odd_sized_frames_are_encoded_in_full_chroma(tmp_path, identity, pix_fmt):
    """An odd width or height (an FFV1, gray or RGB source) becomes 4:4:4 H.264: x264 refuses
    such sizes with 4:2:0 chroma ("Generic error in an external library")."""
    src = make_video(tmp_path / "in.mkv", codec="ffv1", pix_fmt=pix_fmt, size=(67, 49), frames=3, sound=None)
    r = deblur_video(src, tmp_path / "out.mp4", identity)
    a, _, _, _, _ = probe(src)
    b, _, _, info, _ = probe(r.path)
    assert (r.codec, info["pix_fmt"], r.width, r.height) == ("libx264", "yuv444p", 67, 49)
    _assert_same_frames(a, b, 35)


@pytest.mark.parametrize("codec,sound,want", [("libvpx-vp9", "aac", ("libx264", "copied")),
                                              ("libx264", "flac", ("libx264", "re-encoded to aac")),
                                              ("libx264", "libopus", ("libx264", "re-encoded to aac"))])
def test_mov_gets_what_quicktime_holds(tmp_path, identity, codec, sound, want):
    """FFmpeg lists VP9, AV1, FLAC and Opus as codecs of .mov but writes them only in experimental
    mode: a .mov output of such a source failed with "Invalid argument". Its video becomes H.264
    and its sound AAC."""
    src = make_video(tmp_path / "in.mkv", codec=codec, sound=sound, frames=3)
    r = deblur_video(src, tmp_path / "out.mov", identity)
    assert (r.codec, r.audio) == want
    assert len(probe(r.path)[0]) == 3


def test_very_short_hevc_clips_mux_into_mp4(tmp_path, identity):
    """Two-frame HEVC clips (a few hundredths of a second cut with --start/--end): x265 sometimes
    left the flushed packets' decode timestamps unset (-2^46), and the MP4 muxer failed with "Not
    yet implemented in FFmpeg" in about half the runs; every run now writes both frames."""
    src = make_video(tmp_path / "in.mkv", codec="libx265", pix_fmt="yuv444p10le", frames=2, sound=None)
    for i in range(12):  # before: about half the runs failed
        r = deblur_video(src, tmp_path / f"out{i}.mp4", identity)
        frames, times, _, _, _ = probe(r.path)
        assert len(frames) == 2 and times == probe(src)[1]


def test_ten_bit_hevc_stays_ten_bit(tmp_path, identity):
    src = make_video(tmp_path / "in.mkv", codec="libx265", pix_fmt="yuv420p10le", sound="flac", frames=4)
    r = deblur_video(src, tmp_path / "out.mkv", identity, crf=0)
    a, _, _, _, sound_a = probe(src)
    b, _, _, info, sound_b = probe(r.path)
    assert (r.codec, info["pix_fmt"], b[0].dtype) == ("libx265", "yuv420p10le", np.uint16)
    assert sound_b == sound_a
    _assert_same_frames(a, b, 40)  # x265's crf 0 is not lossless


def test_sound_the_container_cannot_hold_is_re_encoded(tmp_path, identity):
    src = make_video(tmp_path / "in.mkv", sound="pcm_s16le", sound_rate=44100, frames=4)
    r = deblur_video(src, tmp_path / "out.webm", identity)
    info = probe(r.path)[3]
    assert (r.codec, r.audio) == ("libvpx-vp9", "re-encoded to opus")
    assert info["streams"] == [("video", "vp9"), ("audio", "opus")] and info["sound_rate"] == 48000  # Opus: no 44.1k


def test_bad_inputs_are_named(tmp_path, identity):
    src = make_video(tmp_path / "in.mp4", frames=2)
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 5000)
    with pytest.raises(InputError, match="junk.mp4: cannot be read as a video"):
        deblur_video(tmp_path / "junk.mp4", tmp_path / "o.mp4", identity)
    with pytest.raises(InputError, match="no such file$"):
        deblur_video(tmp_path / "missing.mp4", tmp_path / "o.mp4", identity)
    with pytest.raises(InputError, match="https://host/clip.mp4: no such file; URLs are not downloaded"):
        deblur_video("https://host/clip.mp4", tmp_path / "o.mp4", identity)
    sound_only = av.open(str(tmp_path / "tone.mkv"), "w")
    a = sound_only.add_stream("pcm_s16le", rate=8000, layout="mono")
    af = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
    af.sample_rate = 8000
    sound_only.mux(a.encode(af))
    sound_only.mux(a.encode(None))
    sound_only.close()
    with pytest.raises(InputError, match="holds no video stream"):
        deblur_video(tmp_path / "tone.mkv", tmp_path / "o.mp4", identity)
    with pytest.raises(InputError, match="unsupported video output '.png'"):
        deblur_video(src, tmp_path / "o.png", identity)
    (tmp_path / "exists.mp4").write_bytes(b"x")
    with pytest.raises(InputError, match="exists"):
        deblur_video(src, tmp_path / "exists.mp4", identity)
    for overwrite in (True, False):  # the input is never the output, and is named so either way
        with pytest.raises(InputError, match="refusing to overwrite the input file"):
            deblur_video(src, src, identity, overwrite=overwrite)
    from PIL import Image

    for name, codec in (("still.png", "png"), ("still.jpg", "mjpeg"), ("still.webp", "webp")):
        Image.new("RGB", (16, 8), (9, 99, 199)).save(tmp_path / name)
        with pytest.raises(InputError, match=rf"{name}: is a still image \({codec}\), not a video: deblur\(\)"):
            deblur_video(tmp_path / name, tmp_path / "o.mp4", identity)
        (tmp_path / name).unlink()
    with pytest.raises(InputError, match=r"progress must be a function called with \(frames done, frames in all\), "
                                         "got str"):
        deblur_video(src, tmp_path / "o.mp4", identity, progress="bar")
    for crf in (-1, 1.5, True):
        with pytest.raises(InputError, match="crf must be"):
            deblur_video(src, tmp_path / "o.mp4", identity, crf=crf)
    with pytest.raises(InputError, match="crf 60 is out of range for libx264"):
        deblur_video(src, tmp_path / "o.mp4", identity, crf=60)
    with pytest.raises(InputError, match=r"a video, not an image; use fastdeblur.deblur_video"):
        deblur(src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.mp4", "in.mp4", "junk.mp4", "tone.mkv"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["network", "encoder", "interrupt"])
def test_a_failure_midway_leaves_nothing_behind(tmp_path, identity, monkeypatch, where):
    """An error in the network, in the encoder's thread, or Ctrl-C after 3 frames: the error comes
    out, no output or temp file is left, and no thread keeps running."""
    from fastdeblur import video

    src = make_video(tmp_path / "in.mp4", frames=8)
    calls = []
    if where == "encoder":
        real = video._Encoder.video

        def failing(self, img, like):
            if len(calls) == 3:
                raise RuntimeError("encoder broke")
            calls.append(1)
            real(self, img, like)
        monkeypatch.setattr(video._Encoder, "video", failing)
    elif where == "network":
        from fastdeblur import api

        real = api.deblur

        def failing(img, *args, **kwargs):
            if len(calls) == 3:
                raise RuntimeError("network broke")
            calls.append(1)
            return real(img, *args, **kwargs)
        monkeypatch.setattr(api, "deblur", failing)

    def progress(n, total):
        if where == "interrupt" and n == 3:
            raise KeyboardInterrupt

    before = threading.active_count()
    with pytest.raises(KeyboardInterrupt if where == "interrupt" else RuntimeError):
        deblur_video(src, tmp_path / "out.mp4", identity, progress=progress)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
    assert threading.active_count() == before


def test_command_deblurs_videos_beside_images(tmp_path, capsys):
    from fastdeblur.cli import main
    from fastdeblur.io import write_image

    folder = tmp_path / "in"
    folder.mkdir()
    make_video(folder / "clip.mov", frames=3, tags={"title": "trip"})
    write_image(folder / "photo.png", np.random.randint(0, 256, (40, 56, 3), np.uint8))
    code = main([str(folder), "-o", str(tmp_path / "out") + "/", "--model", "fastdeblur-default", "--crf", "23"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.mov", "photo.png"]
    frames, _, _, info, _ = probe(tmp_path / "out" / "clip.mov")
    assert len(frames) == 3 and info["tags"].get("title") == "trip"
    assert main([str(folder / "clip.mov"), "-o", str(tmp_path / "bare.mkv"), "--model", "fastdeblur-default",
                 "--strip-metadata", "-q"]) == 0
    assert "title" not in probe(tmp_path / "bare.mkv")[3]["tags"]
    assert main([str(folder), "-o", str(tmp_path / "jpg"), "--format", "jpg", "--model", "fastdeblur-default",
                 "-q"]) == 0  # --format is for the images; a video keeps its name
    assert sorted(p.name for p in (tmp_path / "jpg").iterdir()) == ["clip.mov", "photo.jpg"]


def test_command_checks_video_outputs(tmp_path, capsys):
    from fastdeblur.cli import main
    from fastdeblur.io import write_image

    clip = make_video(tmp_path / "clip.mp4", frames=2)
    assert main([str(clip), "-o", str(tmp_path / "x.png")]) == 2
    assert "must be a video file (.mp4" in capsys.readouterr().err
    photo = write_image(tmp_path / "photo.png", np.zeros((8, 8, 3), np.uint8))
    assert main([str(photo), "-o", str(tmp_path / "x.mp4")]) == 2
    assert "is a video, but the input" in capsys.readouterr().err
    assert main([str(clip), str(photo), "-o", str(tmp_path / "x.mkv")]) == 2  # a folder is needed
    assert "looks like a file name" in capsys.readouterr().err
    assert main([str(clip), "-o", str(tmp_path / "x.mp4"), "--crf", "-1"]) == 2
    assert "--crf must be 0 or more" in capsys.readouterr().err
    assert main([str(clip), "-o", str(tmp_path / "x.mp4"), "--format", "png"]) == 2
    assert "--format names an image format" in capsys.readouterr().err


def test_command_without_pyav_names_the_videos_it_leaves(tmp_path, capsys, monkeypatch):
    from fastdeblur import cli
    from fastdeblur.io import write_image

    monkeypatch.setattr(cli, "video_available", lambda: False)
    (tmp_path / "only").mkdir()
    make_video(tmp_path / "only" / "a.mp4", frames=1)
    assert cli.main([str(tmp_path / "only"), "-o", str(tmp_path / "out") + "/"]) == 1
    err = capsys.readouterr().err
    assert "folder holds no images" in err
    assert "1 .mp4 file (pip install -U av (18 or newer; or fastdeblur[video]))" in err
    write_image(tmp_path / "only" / "b.png", np.zeros((8, 8, 3), np.uint8))
    assert cli.main([str(tmp_path / "only"), "-o", str(tmp_path / "out") + "/", "--model", "fastdeblur-default"]) == 0
    assert "left alone: 1 .mp4 file (pip install -U av" in capsys.readouterr().err
    assert cli.main([str(tmp_path / "only" / "a.mp4"), "-o", str(tmp_path / "o.mp4")]) == 1
    assert "videos need PyAV: pip install -U av" in capsys.readouterr().err


def test_a_part_of_the_video_can_be_deblurred(tmp_path, identity, capsys):
    """start/end: the frames from 0.4 s to 1.0 s (15 at 25 fps), the sound of those seconds, all
    moved to start at 0; the command's --start/--end say the same."""
    from fastdeblur.cli import main

    src = make_video(tmp_path / "in.mp4", frames=40)
    seen = []
    r = deblur_video(src, tmp_path / "part.mp4", identity, crf=0, start=0.4, end=1.0,
                     progress=lambda n, total: seen.append((n, total)))
    a, _, _, _, sound_a = probe(src)
    b, times, _, _, sound_b = probe(r.path)
    assert r.frames == 15 and seen[-1] == (15, 15)
    assert times == [Fraction(n, 25) for n in range(15)]
    _assert_same_frames(a[10:25], b, 42)
    assert 0.3 < len(sound_b[0]) / len(sound_a[0]) < 0.45  # 0.6 s of 1.6 s, at packet granularity
    assert set(sound_b[0]) <= set(sound_a[0])  # copied packets, not re-encoded ones
    assert deblur_video(src, tmp_path / "tail.mp4", identity, start=1.2).frames == 10
    keyed = make_video(tmp_path / "keyed.mp4", frames=40, gop=4)  # the seek lands on frame 28, 2 before the start
    _assert_same_frames(probe(keyed)[0][30:], probe(deblur_video(keyed, tmp_path / "k.mp4", identity, crf=0,
                                                                 start=1.2).path)[0], 42)
    assert deblur_video(src, tmp_path / "head.mp4", identity, end=0.2).frames == 5
    with pytest.raises(InputError, match=r"no frames from 5 s to the end \(the video is 1.\d\d s long\)"):
        deblur_video(src, tmp_path / "none.mp4", identity, start=5)
    for kw, msg in [({"start": -1}, "start must be"), ({"end": float("nan")}, "end must be"),
                    ({"start": 1, "end": 0.5}, "must come after start")]:
        with pytest.raises(InputError, match=msg):
            deblur_video(src, tmp_path / "bad.mp4", identity, **kw)
    assert main([str(src), "-o", str(tmp_path / "cli.mp4"), "--model", "fastdeblur-default", "--start", "1",
                 "--end", "1.2", "-q"]) == 0
    assert len(probe(tmp_path / "cli.mp4")[0]) == 5
    for times in (["--start", "1", "--end", "0.5"], ["--end", "inf"], ["--start", "inf"]):  # usage errors, at once
        assert main([str(src), "-o", str(tmp_path / "x.mp4"), *times]) == 2
        assert "--end after it" in capsys.readouterr().err


def test_an_old_pyav_is_named(tmp_path, identity, monkeypatch):
    from fastdeblur import video

    monkeypatch.setattr(av, "__version__", "16.0.1")
    assert not video.video_available()
    with pytest.raises(InputError, match="PyAV 18 or newer, and 16.0.1 is installed: pip install -U av"):
        deblur_video(tmp_path / "in.mp4", tmp_path / "out.mp4", identity)


def test_frames_without_timestamps_are_spaced_by_the_frame_rate(tmp_path, identity, monkeypatch):
    """Some containers (AVI, raw streams) leave frames without a pts: frame n goes at n / rate."""
    from fastdeblur import video

    real = video._decoded

    def untimed(*args, **kwargs):
        for kind, payload, frame in real(*args, **kwargs):
            if kind == "video":
                frame.pts = None
            yield kind, payload, frame
    monkeypatch.setattr(video, "_decoded", untimed)
    src = make_video(tmp_path / "in.mp4", vfr=True, frames=5, sound=None)
    r = deblur_video(src, tmp_path / "out.mp4", identity)
    assert probe(r.path)[1] == [Fraction(n, 25) for n in range(5)]


@pytest.mark.parametrize(("codec", "pix_fmt", "suffix", "want"), [
    ("mjpeg", "yuvj422p", ".avi", ("libx264", "yuv420p")),  # an old camera's MJPEG: played everywhere as 4:2:0
    ("prores_ks", "yuv422p10le", ".mov", ("libx265", "yuv420p10le")),  # 10 bits stay 10 bits
    ("prores_ks", "yuv422p10le", ".webm", ("libvpx-vp9", "yuv420p")),
    ("libx264", "yuv444p", ".mkv", ("libx264", "yuv444p")),  # in kind: the source's format, odd sizes too
    ("libsvtav1", "yuv420p", ".mkv", ("libsvtav1", "yuv420p")),  # decoded by libdav1d: kind, not decoder, counts
])
def test_codec_and_format_choice(tmp_path, identity, codec, pix_fmt, suffix, want):
    src = make_video(tmp_path / f"in{'.mov' if codec == 'prores_ks' else '.avi' if codec == 'mjpeg' else '.mkv'}",
                     codec=codec, pix_fmt=pix_fmt, size=(97, 65) if pix_fmt == "yuv444p" else (96, 64), frames=3,
                     sound="pcm_s16le")
    r = deblur_video(src, tmp_path / f"out{suffix}", identity)
    frames, _, _, info, _ = probe(r.path)
    # full-range 4:2:0 comes back from the decoder as yuvj420p
    assert (r.codec, info["pix_fmt"].replace("yuvj", "yuv")) == want and len(frames) == 3
    _assert_same_frames(probe(src)[0], frames, 33)


def test_a_file_cut_short_is_deblurred_as_far_as_it_goes_with_a_warning(tmp_path, identity, capsys):
    from fastdeblur.cli import main

    full = make_video(tmp_path / "full.mkv", size=(160, 96), frames=40)
    data = full.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match=r"cut.mkv: frames for 0\.\d+ s of the 1.60 s its header announces"):
        r = deblur_video(tmp_path / "cut.mkv", tmp_path / "out.mkv", identity)
    assert 5 < r.frames < 35 and r.expected == 40 and len(probe(r.path)[0]) == r.frames
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the whole file: no warning
        assert deblur_video(full, tmp_path / "whole.mkv", identity).frames == 40
    assert main([str(tmp_path / "cut.mkv"), "-o", str(tmp_path / "cli.mkv"), "--model", "fastdeblur-default"]) == 0
    assert "fastdeblur: warning: " in capsys.readouterr().err


class _Damaging:
    """A container whose video packet number `bad` (counting the video stream's packets) decodes as
    invalid data, as a corrupt packet does; everything else is the real container's."""

    def __init__(self, inp, bad: int):
        self._inp, self._bad = inp, bad

    def __getattr__(self, name):
        return getattr(self._inp, name)

    def __enter__(self):
        self._inp.__enter__()
        return self

    def __exit__(self, *exc):
        return self._inp.__exit__(*exc)

    def demux(self, streams):
        seen = 0
        for packet in self._inp.demux(streams):
            if packet.stream.type == "video" and packet.size:
                seen += 1
                if seen == self._bad:
                    yield _BadPacket(packet.stream)
                    continue
            yield packet


class _BadPacket:
    def __init__(self, stream):
        self.stream, self.dts, self.pts = stream, None, None

    def decode(self):
        raise av.InvalidDataError(1094995529, "Invalid data found when processing input", "avcodec_send_packet()")


def test_a_damaged_packet_is_left_out_with_a_warning(tmp_path, identity, monkeypatch):
    """One packet the decoder refuses no longer fails the whole video: it is left out, said once,
    and the other frames are deblurred (FFmpeg's own command and players go on too)."""
    from fastdeblur import video

    src = make_video(tmp_path / "in.mkv", frames=12, gop=1, sound=None)  # all key frames: only one frame is lost
    real = video.open_video
    monkeypatch.setattr(video, "open_video", lambda av_, path: (lambda inp, vin: (_Damaging(inp, 5), vin))(
        *real(av_, path)))
    with pytest.warns(RuntimeWarning, match=r"in.mkv: 1 damaged packet left out \(the decoder refused it\); the "
                                            r"output lacks their frames or sound"):
        r = deblur_video(src, tmp_path / "out.mkv", identity)
    assert r.frames == 11 and len(probe(r.path)[0]) == 11


def test_pairs_never_average_across_a_damaged_packet(tmp_path, monkeypatch):
    """A packet the decoder refuses in a slow-motion clip: the window it falls in is dropped, the
    next starts after it, and the clip's other pairs are written (with a warning), where the
    error stopped --make-pairs with a traceback."""
    from fastdeblur.io import read_image
    from fastdeblur.train import video_pairs
    from fastdeblur.train.video_pairs import make_video_pairs

    clip = make_video(tmp_path / "c.mkv", rate=240, frames=30, gop=1, sound=None)
    frames = probe(clip)[0]
    real = video_pairs.open_video
    monkeypatch.setattr(video_pairs, "open_video", lambda av_, path: (lambda inp, vin: (_Damaging(inp, 10), vin))(
        *real(av_, path)))
    with pytest.warns(RuntimeWarning, match=r"c.mkv: 1 damaged packet left out; no pair averages across"):
        n = make_video_pairs([clip], tmp_path / "pairs", frames=(7, 7))
    sharp = tmp_path / "pairs" / "train" / "c" / "sharp"
    assert n == 3  # frames 0-6, then 7-8 dropped at the gap (frame 9), 10-16 and 17-23; 24-29 too few
    assert [np.array_equal(read_image(sharp / f"{i:06d}.png"), frames[k]) for i, k in enumerate((3, 13, 20))] == [
        True] * 3


def test_tags_that_are_not_utf8_and_unknown_codecs_are_handled(tmp_path, identity, monkeypatch):
    """A title in Latin-1 (older cameras) was a UnicodeDecodeError from PyAV, refusing the video; a
    video stream whose codec FFmpeg lacks was an AttributeError traceback that ended the command."""
    from fastdeblur import video

    src = make_video(tmp_path / "in.mkv", frames=4, sound=None, tags={"title": "caf\u00e9"})
    data = src.read_bytes()
    at = data.index("café".encode())
    (tmp_path / "latin.mkv").write_bytes(data[:at] + "caf\u00e9 ".encode("latin-1") + data[at + 5:])  # same length
    assert deblur_video(tmp_path / "latin.mkv", tmp_path / "out.mkv", identity).frames == 4

    class NoCodec:
        def __init__(self, inp):
            self._inp = inp
            self.streams = type("S", (), {"video": [type("V", (), {"codec_context": None})()]})()

        def close(self):
            self._inp.close()

    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: NoCodec(real_open(*a, **k)))
    with pytest.raises(InputError, match=r"in.mkv: its video stream's codec cannot be decoded here"):
        video.open_video(av, src)


def _linear_mean(frames, white=255):
    """The reference for a linear-light average: float64, sRGB's formula both ways."""
    v = np.stack(frames).astype(np.float64) / white
    lin = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).mean(0)
    return np.round(np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055) * white)


@pytest.mark.parametrize("space", ["linear", "srgb"])
def test_pairs_from_slow_motion_video_are_gopro_style(tmp_path, space):
    """Windows of 7 frames, one in 2 kept: pair i averages frames 14i .. 14i+6 and its sharp frame
    is frame 14i+3, bit for bit; the output is GoPro's layout, which the GoPro loader reads."""
    from fastdeblur.io import read_image
    from fastdeblur.train.data import PairedImages
    from fastdeblur.train.video_pairs import make_video_pairs

    clip = make_video(tmp_path / "slowmo.mov", rate=240, frames=40, pix_fmt="yuv444p")
    n = make_video_pairs([clip], tmp_path / "pairs", frames=(7, 7), every=2, space=space)
    assert n == 3  # 5 whole windows of 7 in 40 frames, windows 0, 2 and 4 kept
    frames = probe(clip)[0]
    for i in range(n):
        window = frames[14 * i:14 * i + 7]
        blurry = read_image(tmp_path / "pairs" / "train" / "slowmo" / "blur" / f"{i:06d}.png")
        want = _linear_mean(window) if space == "linear" else np.round(np.stack(window).astype(np.float64).mean(0))
        assert np.abs(blurry.astype(float) - want).max() <= 1
        assert np.array_equal(read_image(tmp_path / "pairs" / "train" / "slowmo" / "sharp" / f"{i:06d}.png"),
                              window[3])
    assert len(PairedImages.from_gopro(tmp_path / "pairs", crop=32)) == 3


def test_pairs_from_ten_bit_video_stay_sixteen_bit(tmp_path):
    from fastdeblur.io import read_image
    from fastdeblur.train.video_pairs import make_video_pairs

    clip = make_video(tmp_path / "ten.mkv", codec="libx265", pix_fmt="yuv420p10le", rate=240, frames=14, sound=None)
    assert make_video_pairs([clip], tmp_path / "pairs", frames=(7, 7)) == 2
    frames = probe(clip)[0]
    folder = tmp_path / "pairs" / "train" / "ten"
    blurry, sharp = (read_image(folder / kind / "000001.png") for kind in ("blur", "sharp"))
    assert blurry.dtype == sharp.dtype == np.uint16 and np.array_equal(sharp, frames[10])
    assert np.abs(blurry.astype(float) - _linear_mean(frames[7:14], 65535)).max() <= 1


def test_pairs_are_the_same_for_the_same_seed_and_checked(tmp_path):
    from fastdeblur.train.video_pairs import make_video_pairs

    clip = make_video(tmp_path / "a.mp4", rate=240, frames=60, sound=None)
    counts = [make_video_pairs([clip], tmp_path / f"p{k}", seed=seed) for k, seed in enumerate((0, 0, 1))]
    files = [sorted((tmp_path / f"p{k}" / "train" / "a" / "blur").iterdir()) for k in range(3)]
    assert counts[0] == counts[1] and [f.read_bytes() for f in files[0]] == [f.read_bytes() for f in files[1]]
    assert 60 // 13 <= counts[0] <= 60 // 7
    with pytest.raises(InputError, match="is not empty"):
        make_video_pairs([clip], tmp_path / "p0")
    slow = make_video(tmp_path / "slow.mp4", rate=30, frames=20, sound=None)
    with pytest.raises(InputError, match="30 fps is too slow"):
        make_video_pairs([slow], tmp_path / "q")
    assert make_video_pairs([slow], tmp_path / "q", min_fps=0) >= 1
    short = make_video(tmp_path / "short.mp4", rate=240, frames=5, sound=None)
    with pytest.raises(InputError, match="every clip is too short"), pytest.warns(RuntimeWarning, match="too short"):
        make_video_pairs([short], tmp_path / "r")
    with pytest.warns(RuntimeWarning, match="short.mp4: too short for a pair"):  # the others go on
        assert 60 // 13 <= make_video_pairs([short, clip], tmp_path / "r2") <= 60 // 7
    with pytest.raises(InputError, match="30 fps is too slow"):  # checked before anything is written
        make_video_pairs([clip, slow], tmp_path / "r3")
    assert not (tmp_path / "r3").exists()
    for kw, msg in [({"frames": (8, 8)}, "no odd count"), ({"frames": (2, 5)}, "3 <= lo <= hi"),
                    ({"space": "log"}, "space must be"), ({"every": 0}, "every must be")]:
        with pytest.raises(InputError, match=msg):
            make_video_pairs([clip], tmp_path / "s", **kw)
    with pytest.raises(InputError, match="no videos"):
        make_video_pairs([tmp_path / "p0"], tmp_path / "s")


def test_train_command_makes_pairs(tmp_path, capsys):
    from fastdeblur.train.cli import main

    (tmp_path / "clips").mkdir()
    make_video(tmp_path / "clips" / "x.mkv", rate=240, frames=30, sound=None)
    assert main(["--make-pairs", str(tmp_path / "clips"), "--pairs-out", str(tmp_path / "pairs"),
                 "--pair-frames", "9,9"]) == 0
    assert "3 pairs in" in capsys.readouterr().out
    assert len(list((tmp_path / "pairs" / "train" / "x" / "sharp").iterdir())) == 3
    assert main(["--make-pairs", str(tmp_path / "clips")]) == 2
    assert "needs --pairs-out" in capsys.readouterr().err
    bad = ["--pair-frames", "5,3", "--pair-every", "0"]  # named by their flags, before any clip is read
    assert main(["--make-pairs", str(tmp_path / "clips"), "--pairs-out", str(tmp_path / "bad"), *bad]) == 2
    assert capsys.readouterr().err == ("fastdeblur-train: error: --pair-frames takes LO,HI with 3 <= LO <= HI, got "
                                       "'5,3'; --pair-every must be 1 or more, got 0\n")
    assert not (tmp_path / "bad").exists()
    make_video(tmp_path / "clips" / "short.mkv", rate=240, frames=4, sound=None)
    assert main(["--make-pairs", str(tmp_path / "clips"), "--pairs-out", str(tmp_path / "more")]) == 0
    assert "fastdeblur-train: warning: " in (err := capsys.readouterr().err) and "short.mkv: too short" in err


def test_frames_over_the_pixel_limit_are_refused(tmp_path, identity, monkeypatch):
    """A video's frames are images: FASTDEBLUR_MAX_PIXELS (Pillow's decompression-bomb limit by
    default) holds for them too, before any frame is decoded or any output made (until
    2026-12-06 frames were decoded at any size FFmpeg takes, up to about 268 megapixels)."""
    src = make_video(tmp_path / "in.mp4")  # 96x64
    monkeypatch.setenv("FASTDEBLUR_MAX_PIXELS", "6000")
    with pytest.raises(InputError, match=r"in\.mp4: 96x64 frames, 0\.0 megapixels, over the limit of 0\.0 "
                                         r"megapixels \(a guard against decompression bombs"):
        deblur_video(src, tmp_path / "out.mp4", identity)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
    from fastdeblur.train.video_pairs import make_video_pairs

    clip = make_video(tmp_path / "slowmo.mov", rate=240, frames=16)  # training pairs from clips: the same
    with pytest.raises(InputError, match=r"slowmo\.mov: 96x64 frames, 0\.0 megapixels, over the limit"):
        make_video_pairs([clip], tmp_path / "pairs", frames=(7, 7))
    assert not (tmp_path / "pairs").exists() or not any((tmp_path / "pairs").rglob("*.png"))
    monkeypatch.setenv("FASTDEBLUR_MAX_PIXELS", str(96 * 64))
    assert deblur_video(src, tmp_path / "out.mp4", identity).frames == 8
