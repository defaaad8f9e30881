"""Benchmark fixtures: the 720p frame, models, environment facts for `extra_info`, timing helper.

Benchmarks live outside the default test run (`testpaths = ["tests"]`); run them with
`python -m pytest benchmarks --benchmark-only`. GPU timings synchronize inside the timed
function, warm-up rounds are excluded, and pytest-benchmark reports medians.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("FASTDEBLUR_DATA") or REPO.parent / "shared" / "data")  # empty: unset
FRAME = DATA / "dmphn_official" / "samples" / "blur" / "000001.png"
MODELS = os.environ.get("FASTDEBLUR_BENCH_MODELS", "dmphn-1-2-4-gopro").split(",")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
if os.environ.get("FASTDEBLUR_BENCH_DEVICES"):
    DEVICES = os.environ["FASTDEBLUR_BENCH_DEVICES"].split(",")


@functools.cache
def frame() -> np.ndarray:
    """The first official GoPro test frame (1280x720), or a random one without the data."""
    if FRAME.is_file():
        from fastdeblur.io import read_image

        return read_image(FRAME)
    return np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)


@functools.cache
def environment(device: str) -> dict:
    import fastdeblur

    info = {"device": torch.cuda.get_device_name() if device == "cuda" else _cpu_name(),
            "torch": torch.__version__, "fastdeblur": fastdeblur.__version__,
            "threads": torch.get_num_threads()}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    # FASTDEBLUR_COMMIT first: a copied working tree (a device call) may carry no .git or a stale one
    info["commit"] = os.environ.get("FASTDEBLUR_COMMIT")
    if not info["commit"]:
        try:
            info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                            text=True, timeout=10).stdout.strip() or None
        except OSError:
            pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def graphed(m, static_x):
    """A function replaying `m(static_x)` captured as a CUDA graph (input fixed, as in a benchmark)."""
    for _ in range(3):  # compiles Triton kernels, lets cudnn.benchmark pick algorithms before capture
        m(static_x)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = m(static_x)

    def replay():
        graph.replay()
        return static_y
    return replay


def timed(benchmark, fn, device: str, *, flops: int | None = None, rounds: int | None = None, **info):
    """Run `fn` under pytest-benchmark: warm-up excluded, each round synchronized, median kept."""
    def run():
        out = fn()
        sync(device)
        return out

    if rounds is None:  # FASTDEBLUR_BENCH_ROUNDS: more rounds on a noisy shared machine
        rounds = int(os.environ.get("FASTDEBLUR_BENCH_ROUNDS", 20 if device == "cuda" else 3))
    result = benchmark.pedantic(run, rounds=rounds, warmup_rounds=2 if device == "cuda" else 1, iterations=1)
    benchmark.extra_info.update(environment(device))
    benchmark.extra_info.update(info)
    if flops:
        median = benchmark.stats.stats.median
        benchmark.extra_info["gflop"] = round(flops / 1e9, 1)
        benchmark.extra_info["gflop_per_s"] = round(flops / median / 1e9, 1)
    return result


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param
