"""What a user waits for on the first frames: deblur()'s first call per frame size, cold.

One fresh subprocess with an empty Triton cache (TRITON_CACHE_DIR in a temporary folder), so
the first call pays what a first run on a new machine pays: loading the weights, packing them,
and on a GPU compiling the Triton kernels. Each size is called twice: first (cold for that size)
and second (warm). On CUDA it also counts the Triton kernel variants compiled so far: a new frame
size should add none (the kernels do not specialize on sizes).
Usage: python benchmarks/first_call.py [--device cpu|cuda] [--sizes 720x1280,719x1279]
"""

from __future__ import annotations

import argparse
import os
import tempfile

from memory import run_child  # benchmarks/memory.py: a case in a fresh process

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np, torch, fastdeblur
rows = [("import fastdeblur", time.perf_counter() - t0, None)]
device, sizes = sys.argv[1], sys.argv[2].split(",")

def variants():
    if not device.startswith("cuda"):
        return None
    try:
        from fastdeblur.kernels import compiled_variants
    except ImportError:
        return None
    return compiled_variants()

for size in sizes:
    h, w = map(int, size.split("x"))
    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    for call in ("first", "second"):
        t = time.perf_counter()
        fastdeblur.deblur(img, device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        rows.append((f"{w}x{h}, {call} call", time.perf_counter() - t, variants()))
print(json.dumps(rows))
"""


def measure(device: str, sizes: str) -> list:
    with tempfile.TemporaryDirectory() as cache:
        return run_child(_CHILD, device, sizes, timeout=1800, env=dict(os.environ, TRITON_CACHE_DIR=cache))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", default="720x1280,719x1279")
    a = p.parse_args()
    print(f"| step ({a.device}, empty Triton cache) | s | Triton variants compiled |\n|---|---|---|")
    for step, secs, n in measure(a.device, a.sizes):
        print(f"| {step} | {secs:.2f} | {'-' if n is None else n} |", flush=True)


if __name__ == "__main__":
    main()
