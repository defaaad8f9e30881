"""Peak memory of deblur(): resident set size on CPU, allocator peak on CUDA.

Each case runs in a fresh subprocess (peak RSS is a per-process high-water mark), on a random
image (memory does not depend on content), with the model loaded as deblur() loads it.
Usage: python benchmarks/memory.py [--device cpu|cuda] [--sizes 720x1280,4000x6000] [--dtype ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_CHILD = r"""
import json, resource, sys, time
import numpy as np, torch, fastdeblur
h, w, device, dtype, tile = sys.argv[1:6]
tile = None if tile == "auto" else int(tile)
dtype = None if dtype == "auto" else dtype
img = np.random.default_rng(0).integers(0, 256, (int(h), int(w), 3), dtype=np.uint8)
fastdeblur.deblur(img[:64, :64], device=device, dtype=dtype)  # load the model first
if device.startswith("cuda"):
    torch.cuda.reset_peak_memory_stats()
t = time.perf_counter()
out = fastdeblur.deblur(img, device=device, dtype=dtype, tile=tile)
secs = time.perf_counter() - t
res = {"seconds": secs, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
if device.startswith("cuda"):
    res["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
from fastdeblur.api import _resolve_backend, _resolve_dtype, auto_tile, memory_budget
from fastdeblur.models.onednn import whole_bytes_per_px
dt = _resolve_dtype(dtype, torch.device(device))
per_px = whole_bytes_per_px(dt) if _resolve_backend(None, torch.device(device), dt)[0] == "onednn" else None
res["tile"] = tile if tile is not None else auto_tile(int(h) * int(w), dt, memory_budget(torch.device(device)), per_px)
res["dtype"] = str(dt)
print(json.dumps(res))
"""


def run_child(code: str, *args: str, timeout: float = 3600, env: dict | None = None):
    """Run `code` in a fresh Python process with `args` (its sys.argv[1:]); return the JSON value it
    prints last. Its stderr's end is the error when it fails."""
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                       env=env)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure(h: int, w: int, device: str = "cpu", dtype: str = "auto", tile: str = "auto") -> dict:
    return run_child(_CHILD, str(h), str(w), device, dtype, tile)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", default="720x1280,4000x6000")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--tile", default="auto")
    a = p.parse_args()
    print("| size | device | dtype | tile | s | peak RSS MiB | peak GPU MiB |\n|---|---|---|---|---|---|---|")
    for size in a.sizes.split(","):
        h, w = map(int, size.split("x"))
        r = measure(h, w, a.device, a.dtype, a.tile)
        gpu = f"{r['peak_gpu_mib']:.0f}" if "peak_gpu_mib" in r else "-"
        row = [f"{w}x{h}", a.device, r["dtype"], r["tile"], f"{r['seconds']:.1f}", f"{r['peak_rss_mib']:.0f}", gpu]
        print("| " + " | ".join(map(str, row)) + " |", flush=True)


if __name__ == "__main__":
    main()
