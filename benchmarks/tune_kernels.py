"""Sweep the Triton kernels' tiles on DMPHN's layer shapes of a 1280x720 frame (GPU only).

    python benchmarks/tune_kernels.py [--dtype float16] [--budget-s 150] [--rb-budget-s 90] [--json out.json]

For every conv shape of DMPHN(1-2-4) at level 1 (the other levels have the same pixel count
split into patches), times each candidate tile (block sizes, warps, pipelined loop or unrolled)
with CUDA events (triton.testing.do_bench, median), checks it against cuDNN, and prints the
fastest next to cuDNN's time. Then the same for the one-kernel residual block
(kernels/conv_relu_residual.py) at 32, 64 and 128 channels, next to cuDNN's block and the
two-kernel Triton block it would replace. `--write` puts the winners in kernels/_gpu_tiles.py
(TILES for conv3x3 and convT, BLOCK_TILES for the block); record the card and date in
benchmarks/RESULTS.md.
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


RB_SHAPES = [(32, 720, 1280), (64, 360, 640), (128, 180, 320)]  # (channels, h, w): the blocks at each scale


def _pow2(v: int) -> int:
    return max(16, 1 << (v - 1).bit_length())


MAX_CONV1_STEPS = 12  # halo chunks x K slices: the kernel unrolls conv1 over both (times 9 taps)


def conv1_steps(th: int, tw: int, chunk: int, c: int, block_k: int) -> int:
    """How many (halo chunk, K slice) GEMMs the one-kernel block's unrolled conv1 makes."""
    return -(-(th + 2) * (tw + 2) // chunk) * -(-c // block_k)


def block_candidates(c: int):
    """Tiles for the one-kernel block: output tile (TH*TW a power of two), halo rows per conv1
    GEMM, K slice, warps; none whose fp32 accumulators would take over 128 registers a thread,
    nor any whose fully unrolled conv1 (chunks x K slices x 9 taps) would take minutes to compile."""
    from fastdeblur.kernels.conv_relu_residual import BlockTiles

    block_c = _pow2(c)
    for (th, tw), chunk, bk, warps in itertools.product(((4, 32), (8, 16), (8, 32), (16, 16), (16, 32)), (32, 64, 128),
                                                         sorted({min(64, block_c), min(32, block_c)}), (4, 8)):
        if max(th * tw, chunk) * block_c > 4096 * warps or conv1_steps(th, tw, chunk, c, bk) > MAX_CONV1_STEPS:
            continue
        yield BlockTiles(th, tw, chunk, bk, warps)


def candidates(op: str, cin: int, cout: int):
    from fastdeblur.kernels.conv3x3 import Tiles

    bns = sorted({min(128, _pow2(cout)), min(64, _pow2(cout))})
    bks = sorted({min(64, _pow2(cin)), min(32, _pow2(cin))})
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


def _rb_providers(c: int, h: int, w: int, dt: torch.dtype):
    """(cuDNN's block on channels_last tensors, the two-kernel Triton block with its current
    tiles, tiles -> the one-kernel block), all on the same data."""
    from fastdeblur.kernels.conv3x3 import conv3x3_nhwc, pack_conv3x3_weight
    from fastdeblur.kernels.conv_relu_residual import conv_relu_residual_nhwc

    x = torch.randn(1, h, w, c, device="cuda", dtype=dt)
    xc = x.permute(0, 3, 1, 2)
    w1, w2 = ((torch.randn(c, c, 3, 3, device="cuda", dtype=dt) * 0.05).contiguous(memory_format=torch.channels_last)
              for _ in range(2))
    b1, b2 = (torch.randn(c, device="cuda", dtype=dt) for _ in range(2))
    w1p, w2p = pack_conv3x3_weight(w1), pack_conv3x3_weight(w2)
    return (lambda: xc + F.conv2d(F.relu(F.conv2d(xc, w1, b1, padding=1)), w2, b2, padding=1),
            lambda: conv3x3_nhwc(conv3x3_nhwc(x, w1p, b1, relu=True), w2p, b2, residual=x),
            lambda t: conv_relu_residual_nhwc(x, w1p, b1, w2p, b2, tiles=t))


def _launch(kind: str, shape: tuple, tiles: tuple) -> None:
    from fastdeblur.kernels.conv3x3 import Tiles
    from fastdeblur.kernels.conv_relu_residual import BlockTiles

    if kind == "rb":
        _rb_providers(*shape)[2](BlockTiles(*tiles))
    else:
        _providers(*shape)[1](Tiles(*tiles))


def _warm(jobs: list[tuple]) -> int:
    """Compile (by launching once) each (kind, shape, tiles) job: fills Triton's on-disk cache, so
    the timing loop finds every kernel compiled. Runs in worker processes, one compiler each."""
    done = 0
    for kind, shape, tiles in jobs:
        try:
            _launch(kind, shape, tiles)
            done += 1
        except Exception:  # a tile that does not fit: the timing loop reports it
            continue
    torch.cuda.synchronize()
    return done


def precompile(shapes: list[tuple], rb_shapes: list[tuple], dt: torch.dtype, workers: int) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    jobs = [("conv", (*sh[:5], dt), tuple(t)) for sh in shapes for t in candidates(*sh[:3])]
    jobs += [("rb", (*sh, dt), tuple(t)) for sh in rb_shapes for t in block_candidates(sh[0])]
    chunks = [jobs[i::workers] for i in range(workers)]
    t0 = time.time()
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        n = sum(pool.map(_warm, chunks))
    print(f"compiled {n} of {len(jobs)} kernels in {time.time() - t0:.0f} s on {workers} processes", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--budget-s", type=float, default=150.0, help="seconds for the conv sweep")
    ap.add_argument("--rb-budget-s", type=float, default=90.0, help="seconds for the one-kernel block's sweep")
    ap.add_argument("--ops", default="conv,rb", help="what to sweep: conv, rb or both")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--write", action="store_true", help="write the winners to kernels/_gpu_tiles.py")
    ap.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1),
                    help="processes compiling the candidates first (0: compile while timing)")
    a = ap.parse_args()
    from fastdeblur.kernels.conv3x3 import tiles_for
    from triton.testing import do_bench

    dt = getattr(torch, a.dtype)
    ops = set(a.ops.split(","))
    shapes = SHAPES if "conv" in ops else []
    rb_shapes = RB_SHAPES if "rb" in ops else []
    if a.workers > 0:
        precompile(shapes, rb_shapes, dt, a.workers)
    torch.backends.cudnn.benchmark = True
    t_start, results = time.time(), []
    print(f"{torch.cuda.get_device_name()}, {a.dtype}")
    print("| op | cin->cout | input | cuDNN ms | default ms | best ms | best tiles | tried |")
    print("|---|---|---|---|---|---|---|---|")
    for op, cin, cout, h, w in shapes:
        cudnn, mine = _providers(op, cin, cout, h, w, dt)
        ref = cudnn().permute(0, 2, 3, 1).float()
        t_cudnn = do_bench(cudnn, return_mode="median")
        default = tiles_for(op, cin, cout, False)
        timings = time_candidates(f"{op} {cin}->{cout}", mine, ref, [default, *candidates(op, cin, cout)],
                                  t_start + a.budget_s, atol=2e-2)
        if not timings:
            continue
        best = min(timings, key=timings.get)
        row = {"op": op, "cin": cin, "cout": cout, "h": h, "w": w, "cudnn_ms": t_cudnn,
               "default_ms": timings.get(default), "best_ms": timings[best], "best": best._asdict(),
               "tried": len(timings)}
        results.append(row)
        print(f"| {op} | {cin}->{cout} | {h}x{w} | {t_cudnn:.4f} | {timings.get(default, float('nan')):.4f} | "
              f"{timings[best]:.4f} | {tuple(best)} | {len(timings)} |", flush=True)
    if rb_shapes:
        results += sweep_blocks(rb_shapes, dt, a.rb_budget_s)
    print(f"sweep took {time.time() - t_start:.0f} s")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    if a.write and results:
        write_table(results, a.dtype)
    return 0


def time_candidates(label: str, run, ref: torch.Tensor, tiles: list, deadline: float, atol: float) -> dict:
    """{tiles: CUDA-event median ms} for each candidate whose output matches `ref` (NHWC, float),
    until `deadline` (time.time()); a tile that does not compile or run, or computes wrong
    numbers, is reported and left out."""
    from triton.testing import do_bench

    timings = {}
    for t in tiles:
        if t in timings or time.time() > deadline:
            continue
        try:
            got = run(t).float()
            if not torch.allclose(got, ref, rtol=2e-2, atol=atol):
                print(f"  {label} {t}: WRONG (max diff {(got - ref).abs().max():.3g})")
                continue
            timings[t] = do_bench(lambda: run(t), return_mode="median")  # noqa: B023
        except Exception as e:  # out of shared memory / registers for this tile
            print(f"  {label} {t}: {type(e).__name__}")
    return timings


def sweep_blocks(rb_shapes: list[tuple], dt: torch.dtype, budget_s: float) -> list[dict]:
    """Time the one-kernel block's candidates against cuDNN's block and the two-kernel block."""
    from fastdeblur.kernels.conv_relu_residual import block_tiles_for
    from triton.testing import do_bench

    t_start, results = time.time(), []
    print("\n| one-kernel block | input | cuDNN ms | two kernels ms | default ms | best ms | best / two | best tiles "
          "| tried |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c, h, w in rb_shapes:
        cudnn, two, one = _rb_providers(c, h, w, dt)
        ref = cudnn().permute(0, 2, 3, 1).float()
        t_cudnn, t_two = do_bench(cudnn, return_mode="median"), do_bench(two, return_mode="median")
        default = block_tiles_for(c, False)
        # atol 5e-2: two convs in 16 bits, against cuDNN's two
        timings = time_candidates(f"rb {c}", one, ref, [default, *block_candidates(c)], t_start + budget_s, atol=5e-2)
        if not timings:
            continue
        best = min(timings, key=timings.get)
        results.append({"op": "rb", "cin": c, "cout": c, "h": h, "w": w, "cudnn_ms": t_cudnn, "two_kernel_ms": t_two,
                        "default_ms": timings.get(default), "best_ms": timings[best], "best": best._asdict(),
                        "tried": len(timings)})
        print(f"| {c} ch | {h}x{w} | {t_cudnn:.4f} | {t_two:.4f} | {timings.get(default, float('nan')):.4f} | "
              f"{timings[best]:.4f} | {timings[best] / t_two:.2f} | {tuple(best)} | {len(timings)} |", flush=True)
    return results


def _table(name: str, comment: str, swept: dict, old: dict, value, note) -> list[str]:
    """Lines of one dict literal: the swept winners (value(best tiles), note(row)) first, then
    the old entries the sweep did not time."""
    lines = [comment, f"{name} = {{"]
    for key in [*swept, *(k for k in old if k not in swept)]:
        if key in swept:
            v, n = value(swept[key]["best"]), note(swept[key])
        else:
            v, n = tuple(old[key]), "from an earlier sweep"
        lines.append(f"    {key!r}: {v!r},  # {n}")
    return [*lines, "}"]


def render_table(results: list[dict], header: str, old_tiles: dict, old_blocks: dict) -> str:
    """_gpu_tiles.py's text: this sweep's winners, plus the entries of the current file (old_*)
    that it did not time, kept as they were."""
    convs = {(r["op"], r["cin"], r["cout"]): r for r in results if r["op"] != "rb"}
    blocks = {r["cin"]: r for r in results if r["op"] == "rb"}
    lines = [f'"""{header}"""', ""]
    lines += _table("TILES", "# (op, cin, cout): (block_m, block_n, block_k, warps, stages, unroll)", convs, old_tiles,
                    lambda b: (b["block_m"], b["block_n"], b["block_k"], b["warps"], b["stages"], b["unroll"]),
                    lambda r: f'{r["best_ms"]:.4f} / {r["cudnn_ms"]:.4f}')
    lines += [""] + _table(
        "BLOCK_TILES", "# one-kernel residual block, channels: (th, tw, chunk, block_k, warps, stages)", blocks,
        old_blocks, lambda b: (b["th"], b["tw"], b["chunk"], b["block_k"], b["warps"], b["stages"]),
        lambda r: f'{r["best_ms"]:.4f} / two kernels {r["two_kernel_ms"]:.4f} / cuDNN {r["cudnn_ms"]:.4f}')
    return "\n".join(lines) + "\n"


def write_table(results: list[dict], dtype: str) -> Path:
    import datetime

    import triton
    from fastdeblur.kernels import _gpu_tiles

    header = (f"Tiles measured fastest by benchmarks/tune_kernels.py: {torch.cuda.get_device_name()}, "
              f"{datetime.date.today()},\ntriton {triton.__version__}, torch {torch.__version__}, {dtype}, DMPHN 720p "
              "shapes (ms: best / baseline).")
    text = render_table(results, header, _gpu_tiles.TILES, getattr(_gpu_tiles, "BLOCK_TILES", {}))
    path = Path(__file__).resolve().parents[1] / "kernels" / "_gpu_tiles.py"
    path.write_text(text)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    raise SystemExit(main())
