"""Video throughput of `deblur_video`: frames per second, decoding and encoding included.

Makes an H.264 clip (with an AAC track) of N 1280x720 frames from the benchmarks' frame
(`conftest.frame()`: the first official GoPro test frame, else a random image), panned a pixel
a frame so the encoder sees motion, and times, in the same process after a warm-up:
- `deblur()` on the clip's decoded frames, one after another (the network alone);
- `deblur_video()` on the clip (decoding, network, encoding, sound).
With --stand-in MS the network is replaced by a sleep of MS milliseconds, to measure the video
pipeline alone (what a GPU forward of that length leaves). Medians of --repeat runs.
Usage: python benchmarks/video_throughput.py [--frames 30] [--device cuda] [--stand-in 9] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import frame  # noqa: E402  (the benchmarks' 720p frame)


def make_clip(path: Path, img: np.ndarray, frames: int, rate: int = 30) -> None:
    import av

    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=rate)
        v.height, v.width = img.shape[:2]
        v.pix_fmt, v.options = "yuv420p", {"crf": "18", "preset": "veryfast"}
        a = out.add_stream("aac", rate=48000, layout="stereo")
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.roll(img, i, axis=1)), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, rate)
            out.mux(v.encode(f))
        out.mux(v.encode(None))
        t = 0
        while t < frames / rate * 48000:
            s = (0.2 * np.sin((t + np.arange(1024)) / 20)).astype(np.float32)
            af = av.AudioFrame.from_ndarray(np.stack([s, s]), format="fltp", layout="stereo")
            af.sample_rate, af.pts = 48000, t
            t += 1024
            out.mux(a.encode(af))
        out.mux(a.encode(None))


def decoded(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--device", default=None)
    p.add_argument("--model", default="default")
    p.add_argument("--stand-in", type=float, default=None, metavar="MS",
                   help="replace the network by a sleep of MS milliseconds")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args(argv)

    from fastdeblur import api, load_model
    from fastdeblur.video import deblur_video

    if a.stand_in is not None:
        def network(img, model=None, **kw):
            time.sleep(a.stand_in / 1000)
            return img.copy()

        api.deblur = network  # deblur_video looks it up on each call
        model = None
    else:
        model = load_model(a.model, device=a.device)
        network = api.deblur
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip, frame(), a.frames)
        frames = decoded(clip)
        network(frames[0], model)  # warm-up: weights, Triton compiles, graph capture
        net_times, video_times = [], []
        for _ in range(a.repeat):
            t = time.perf_counter()
            for f in frames:
                network(f, model)
            net_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            deblur_video(clip, Path(tmp) / "out.mp4", model, overwrite=True)
            video_times.append(time.perf_counter() - t)
    net, vid = statistics.median(net_times), statistics.median(video_times)
    what = f"a {a.stand_in:g} ms stand-in for the network" if a.stand_in is not None else f"model {a.model}"
    n = len(frames)
    runs = ", ".join(f"{t:.2f}" for t in video_times)
    print(f"{n} frames of 1280x720 H.264 + AAC with {what}, {os.cpu_count()} cores: deblur_video {vid:.2f} s "
          f"({1000 * vid / n:.1f} ms a frame, {n / vid:.1f} frames/s; runs {runs}); the network alone "
          f"{1000 * net / n:.1f} ms a frame; video work not hidden: {1000 * (vid - net) / n:.1f} ms a frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
