"""Blurry/sharp training pairs from high-frame-rate video, made the way GoPro's were.

GoPro's dataset averaged 7-13 consecutive frames of a 240 fps camera into one blurry frame and
kept the middle one as its sharp twin: real camera shake and real moving objects, with no model
of either. `make_video_pairs` does the same with a user's own slow-motion clips (phones film 120
or 240 fps) and writes GoPro's layout, `OUT/train/<clip>/{blur,sharp}/NNNNNN.png`, which
`fastdeblur-train --gopro OUT` reads. Each clip is decoded once, front to back (no seeking), and
only the current window of frames is held, as a running sum. Frames are averaged in linear light
by default (what a sensor integrates over a longer exposure) or on their sRGB values (GoPro's
`blur` set). Below ~120 fps the gaps between frames show as ghost copies rather than streaks, so
slower clips are refused unless `min_fps` is lowered.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io import write_image
from ..video import VIDEO_SUFFIXES, _bits, _decoded, _import_av, frame_rate, open_video
from .blur import linear_to_srgb, srgb_to_linear


def _window_sizes(frames: tuple[int, int]) -> np.ndarray:
    lo, hi = frames
    if not (isinstance(lo, int) and isinstance(hi, int) and 3 <= lo <= hi):
        raise InputError(f"frames must be two integers 3 <= lo <= hi, got {frames!r}")
    sizes = np.arange(lo, hi + 1)
    sizes = sizes[sizes % 2 == 1]  # odd: the sharp frame is the middle one
    if not sizes.size:
        raise InputError(f"frames {lo}-{hi} holds no odd count (the sharp frame is the window's middle one)")
    return sizes


def _clips(videos: Sequence[str | os.PathLike]) -> list[Path]:
    clips: list[Path] = []
    for v in map(Path, videos):
        if v.is_dir():
            clips += sorted(p for p in v.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
                            and not any(part.startswith(".") for part in p.relative_to(v).parts))
        elif v.is_file():
            clips.append(v)
        else:
            raise InputError(f"{v}: no such file or folder")
    if not clips:
        raise InputError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) in {', '.join(map(str, videos))}")
    return clips


def make_video_pairs(videos: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                     frames: tuple[int, int] = (7, 13), every: int = 1, space: str = "linear", seed: int = 0,
                     min_fps: float = 120.0, progress: Callable[[Path, int], None] | None = None) -> int:
    """Write (blurry, sharp) pairs from the clips in `videos` (files, or folders searched with
    their subfolders) into `out`/train/<clip name>/{blur,sharp}/; returns the number of pairs.

    frames: the range of window lengths, drawn per pair among its odd values (GoPro: 7-13).
    every: keep one window in `every` (1: back to back), fewer near-duplicate pairs.
    space: "linear" (average in linear light) or "srgb" (on the stored values).
    seed: the window lengths are drawn from it, the same for the same clip every time.
    progress: called as progress(clip, pairs written from it so far) after each pair.
    Every clip is opened and its frame rate checked before any pair is written; a clip too short
    for a window is left out with a RuntimeWarning (an error if every clip is).
    """
    av = _import_av()
    sizes = _window_sizes(tuple(frames))
    if space not in ("linear", "srgb"):
        raise InputError(f"space must be 'linear' or 'srgb', got {space!r}")
    if not (isinstance(every, int) and every >= 1):
        raise InputError(f"every must be a positive integer, got {every!r}")
    clips = _clips(videos)
    root = Path(out) / "train"
    names = [c.stem for c in clips]
    folders = [root / (c.stem if names.count(c.stem) == 1 else f"{c.stem}-{k}")  # one name in two folders
               for k, c in enumerate(clips)]
    for clip, folder in zip(clips, folders, strict=True):  # fail before writing, not after hours of it
        if folder.exists() and any(folder.iterdir()):
            raise InputError(f"{folder} exists and is not empty: remove it or choose another output folder")
        inp, vin = open_video(av, clip)
        with inp:
            _check_fps(clip, vin, min_fps)
    total = 0
    for k, (clip, folder) in enumerate(zip(clips, folders, strict=True)):
        n = _pairs_from_clip(av, clip, folder, sizes, every, space, np.random.default_rng([seed, k]),
                             (lambda n, clip=clip: progress(clip, n)) if progress else None)
        if n == 0:
            warnings.warn(f"{clip}: too short for a pair ({min(sizes)} frames or more needed); left out",
                          RuntimeWarning, stacklevel=2)
        total += n
    if total == 0:
        raise InputError(f"no pairs: every clip is too short ({min(sizes)} frames or more needed)")
    return total


def _check_fps(clip: Path, vin, min_fps: float) -> None:
    fps = float(frame_rate(vin) or 0)
    if fps < min_fps:
        raise InputError(f"{clip}: {fps:g} fps is too slow to average into motion blur (below {min_fps:g} fps "
                         "the gaps between frames show as ghost copies); film slow motion (120 or 240 fps), "
                         "or lower min_fps (--min-fps) to take it anyway")


def _pairs_from_clip(av, clip: Path, folder: Path, sizes: np.ndarray, every: int, space: str,
                     rng: np.random.Generator, progress: Callable[[int], None] | None) -> int:
    inp, vin = open_video(av, clip)
    with inp:
        bits = _bits(av, vin.codec_context.pix_fmt or "yuv420p")
        scale = 65535.0 if bits == 16 else 255.0
        # each stored value -> linear light (or itself), as a table: no per-pixel power function
        levels = torch.arange(int(scale) + 1, dtype=torch.float64) / scale
        table = (srgb_to_linear(levels) if space == "linear" else levels).to(torch.float32).numpy()
        written, windows = 0, 0
        size, keep = int(rng.choice(sizes)), True
        count, acc, middle = 0, None, None  # frames in the current window, their sum, its middle frame
        # A window must not average across missing frames (a packet the decoder refused, a frame the
        # camera dropped): where the time from one frame to the next is over 1.5 frame periods, the
        # window so far is dropped and the next starts there. (Times, not the count of refused
        # packets: a threaded decoder returns the frames before a gap after it has seen the gap.)
        damaged, period, last = [0], 1 / float(frame_rate(vin) or 1e9), None
        for _, img, frame in _decoded(inp, vin, [], bits, set(), damaged):
            t = frame.time
            if t is not None and last is not None and t - last > 1.5 * period:
                count, acc, middle = 0, None, None
            last = t if t is not None else last
            if keep:
                acc = table[img] if acc is None else acc + table[img]
                if count == size // 2:
                    middle = img
            count += 1
            if count < size:
                continue
            if keep:
                mean = torch.from_numpy(acc / size)
                blurry = linear_to_srgb(mean) if space == "linear" else mean
                blurry = np.round(blurry.numpy() * scale).astype(np.uint16 if bits == 16 else np.uint8)
                write_image(folder / "blur" / f"{written:06d}.png", blurry)
                write_image(folder / "sharp" / f"{written:06d}.png", middle)
                written += 1
                if progress is not None:
                    progress(written)
            count, acc, middle, windows = 0, None, None, windows + 1
            size, keep = int(rng.choice(sizes)), windows % every == 0
    if damaged[0]:
        warnings.warn(f"{clip}: {damaged[0]} damaged packet{'s' * (damaged[0] != 1)} left out; no pair averages "
                      "across the frames they held", RuntimeWarning, stacklevel=3)
    return written
