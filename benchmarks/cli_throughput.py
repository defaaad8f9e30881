"""Folder throughput of the `fastdeblur` command: files per second, reading and writing included.

Copies one 720p frame (the benchmarks' `conftest.frame()`: the first official GoPro test frame,
else a random image) N times into a temp folder, runs the command's main() once on a few
copies to load the model and warm the device up (Triton compiles, CUDA-graph capture), then
times it on all N, in the same process. With --stand-in MS the network is replaced by a sleep of
MS milliseconds, to measure the file pipeline alone (what a GPU forward of that length leaves).
Usage: python benchmarks/cli_throughput.py [--frames 24] [--device cuda] [--stand-in 9] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import frame  # noqa: E402  (the benchmarks' 720p frame)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--device", default=None)
    p.add_argument("--stand-in", type=float, default=None, metavar="MS",
                   help="replace the network by a sleep of MS milliseconds")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args(argv)

    from fastdeblur import api, cli
    from fastdeblur.io import write_image

    if a.stand_in is not None:
        def stand_in(img, model, **kw):
            time.sleep(a.stand_in / 1000)
            return img.copy()

        api.deblur = stand_in
        api.load_model = lambda *args, **kw: torch.nn.Linear(1, 1)  # the command prepares a module
    device = [] if a.device is None else ["--device", a.device]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        write_image(src / "f0000.png", frame())
        for i in range(1, a.frames):
            shutil.copyfile(src / "f0000.png", src / f"f{i:04d}.png")
        warm = Path(tmp) / "warm"
        warm.mkdir()
        for i in range(3):
            shutil.copyfile(src / "f0000.png", warm / f"w{i}.png")
        if cli.main([str(warm), "-o", str(Path(tmp) / "warm_out"), "-q", *device]) != 0:
            return 1
        times = []
        for _ in range(a.repeat):
            shutil.rmtree(Path(tmp) / "out", ignore_errors=True)
            t = time.perf_counter()
            if cli.main([str(src), "-o", str(Path(tmp) / "out"), "-q", *device]) != 0:
                return 1
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    what = f"a {a.stand_in:g} ms stand-in for the network" if a.stand_in is not None else "the default model"
    print(f"{a.frames} frames of 1280x720 with {what}, {os.cpu_count()} cores, I/O threads {cli._io_threads()}: "
          f"median {med:.2f} s ({1000 * med / a.frames:.1f} ms a frame; runs {', '.join(f'{t:.2f}' for t in times)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
