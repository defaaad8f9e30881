"""Sweep the Triton kernels' tiles on DMPHN's layer shapes of a 1280x720 frame (GPU only).

    python benchmarks/tune_kernels.py [--dtype float16] [--budget-s 120] [--json out.json]

For every conv shape of DMPHN(1-2-4) at level 1 (the other levels have the same pixel count
split into patches), times each candidate tile (block sizes, warps, pipelined loop or unrolled)
with CUDA events (triton.testing.do_bench, median), checks it against cuDNN, and prints the
fastest next to cuDNN's time. The winners go into kernels/conv3x3.py's GPU_TILES by hand, with
the card and date in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = [  # (op, cin, cout, h, w) of the input; the most frequent first (24 of 36 convs a level)
    ("conv", 32, 32, 720, 1280), ("conv", 64, 64, 360, 640), ("conv", 128, 128, 180, 320),
    ("convT", 128, 64, 180, 320), ("convT", 64, 32, 360, 640), ("conv_s2", 32, 64, 720, 1280),
    ("conv_s2", 64, 128, 360, 640), ("conv", 3, 32, 720, 1280), ("conv", 32, 3, 720, 1280),
]


def candidates(op: str, cin: int, cout: int):
    from fastdeblur.kernels.conv3x3 import Tiles

    pow2 = lambda v: max(16, 1 << (v - 1).bit_length())  # noqa: E731
    bns = sorted({min(128, pow2(cout)), min(64, pow2(cout))})
    bks = sorted({min(64, pow2(cin)), min(32, pow2(cin))})
    loops = [(True, 1)] if op == "convT" else [(True, 1), (False, 3)]
    for (bm, warps), bn, bk, (unroll, stages) in itertools.product(((64, 4), (128, 4), (128, 8), (256, 8)), bns,
                                                                   bks, loops):
        if bm * bn > 4096 * warps:  # the fp32 accumulator would take over 128 registers a thread
            continue
        yield Tiles(bm, bn, bk, warps, stages, unroll)


def _providers(op: str, cin: int, cout: int, h: int, w: int, dt: torch.dtype):
    """(cuDNN's layer on channels_last tensors, tiles -> the Triton kernel on the same data)."""
    from fastdeblur.kernels.conv3x3 import conv3x3_nhwc, pack_conv3x3_weight
    from fastdeblur.kernels.conv_transpose import conv_transpose4x4s2_nhwc, pack_conv_transpose_weight

    x = torch.randn(1, h, w, cin, device="cuda", dtype=dt)
    xc = x.permute(0, 3, 1, 2)  # NCHW view of NHWC memory: channels_last for cuDNN
    b = torch.randn(cout, device="cuda", dtype=dt)
    if op == "convT":
        wt = torch.randn(cin, cout, 4, 4, device="cuda", dtype=dt) * 0.05
        wp = pack_conv_transpose_weight(wt)
        return (lambda: F.conv_transpose2d(xc, wt, b, stride=2, padding=1),
                lambda t: conv_transpose4x4s2_nhwc(x, wp, b, tiles=t))
    stride = 2 if op == "conv_s2" else 1
    wt = (torch.randn(cout, cin, 3, 3, device="cuda", dtype=dt) * 0.05).contiguous(memory_format=torch.channels_last)
    wp = pack_conv3x3_weight(wt)
    return (lambda: F.relu(F.conv2d(xc, wt, b, stride=stride, padding=1)),
            lambda t: conv3x3_nhwc(x, wp, b, stride=stride, relu=True, tiles=t))


def _warm(jobs: list[tuple]) -> int:
    """Compile (by launching once) each (shape, tiles) job: fills Triton's on-disk cache, so the
    timing loop finds every kernel compiled. Runs in worker processes, one compiler each."""
    from fastdeblur.kernels.conv3x3 import Tiles

    done = 0
    for shape, tiles in jobs:
        try:
            _providers(*shape)[1](Tiles(*tiles))
            done += 1
        except Exception:  # a tile that does not fit: the timing loop reports it
            continue
    torch.cuda.synchronize()
    return done


def precompile(shapes: list[tuple], dt: torch.dtype, workers: int) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    jobs = [((*sh[:5], dt), tuple(t)) for sh in shapes for t in candidates(*sh[:3])]
    chunks = [jobs[i::workers] for i in range(workers)]
    t0 = time.time()
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        n = sum(pool.map(_warm, chunks))
    print(f"compiled {n} of {len(jobs)} kernels in {time.time() - t0:.0f} s on {workers} processes", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--budget-s", type=float, default=150.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--write", action="store_true", help="write the winners to kernels/_gpu_tiles.py")
    ap.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1),
                    help="processes compiling the candidates first (0: compile while timing)")
    a = ap.parse_args()
    from fastdeblur.kernels.conv3x3 import tiles_for
    from triton.testing import do_bench

    dt = getattr(torch, a.dtype)
    if a.workers > 0:
        precompile(SHAPES, dt, a.workers)
    torch.backends.cudnn.benchmark = True
    t_start, results = time.time(), []
    print(f"{torch.cuda.get_device_name()}, {a.dtype}")
    print("| op | cin->cout | input | cuDNN ms | default ms | best ms | best tiles | tried |")
    print("|---|---|---|---|---|---|---|---|")
    for op, cin, cout, h, w in SHAPES:
        cudnn, mine = _providers(op, cin, cout, h, w, dt)
        ref = cudnn().permute(0, 2, 3, 1).float()
        t_cudnn = do_bench(cudnn, return_mode="median")
        default = tiles_for(op, cin, cout, False)
        timings = {}
        for t in [default, *candidates(op, cin, cout)]:
            if t in timings or time.time() - t_start > a.budget_s:
                continue
            try:
                got = mine(t).float()
                if not torch.allclose(got, ref, rtol=2e-2, atol=2e-2):
                    print(f"  {op} {cin}->{cout} {t}: WRONG (max diff {(got - ref).abs().max():.3g})")
                    continue
                timings[t] = do_bench(lambda: mine(t), return_mode="median")  # noqa: B023
            except Exception as e:  # out of shared memory / registers for this tile
                print(f"  {op} {cin}->{cout} {t}: {type(e).__name__}")
        if not timings:
            continue
        best = min(timings, key=timings.get)
        row = {"op": op, "cin": cin, "cout": cout, "h": h, "w": w, "cudnn_ms": t_cudnn,
               "default_ms": timings.get(default), "best_ms": timings[best], "best": best._asdict(),
               "tried": len(timings)}
        results.append(row)
        print(f"| {op} | {cin}->{cout} | {h}x{w} | {t_cudnn:.4f} | {timings.get(default, float('nan')):.4f} | "
              f"{timings[best]:.4f} | {tuple(best)} | {len(timings)} |", flush=True)
    print(f"sweep took {time.time() - t_start:.0f} s")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    if a.write and results:
        write_table(results, a.dtype)
    return 0


def write_table(results: list[dict], dtype: str) -> Path:
    import datetime

    import triton

    lines = [f'"""Tiles measured fastest by benchmarks/tune_kernels.py: {torch.cuda.get_device_name()}, '
             f'{datetime.date.today()},', f'triton {triton.__version__}, torch {torch.__version__}, {dtype}, '
             'DMPHN 720p shapes (ms: best / cuDNN)."""', "",
             "# (op, cin, cout): (block_m, block_n, block_k, warps, stages, unroll)", "TILES = {"]
    for r in results:
        b = r["best"]
        lines.append(f'    ("{r["op"]}", {r["cin"]}, {r["cout"]}): ({b["block_m"]}, {b["block_n"]}, {b["block_k"]}, '
                     f'{b["warps"]}, {b["stages"]}, {b["unroll"]}),  # {r["best_ms"]:.4f} / {r["cudnn_ms"]:.4f}')
    lines.append("}")
    path = Path(__file__).resolve().parents[1] / "kernels" / "_gpu_tiles.py"
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    raise SystemExit(main())
