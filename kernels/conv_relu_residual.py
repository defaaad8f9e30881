"""DMPHN's residual block in one kernel: out = x + conv2(relu(conv1(x) + b1)) + b2 [+ extra], NHWC.

The two-kernel block (conv3x3.py twice) writes the intermediate t = relu(conv1(x) + b1) to
global memory and reads it back. Here one program owns a TH x TW tile of output pixels (all
channels): it computes t on the tile plus a 1-pixel halo ((TH+2) x (TW+2) pixels, in CHUNK-row
implicit GEMMs), writes it to a per-program scratch slab, which stays in the SM's L1/L2 because
the same program reads it back at once, and after a CTA barrier runs conv2 from that slab with
bias, residual and extra in the epilogue. Cost: conv1 over the halo too ((TH+2)(TW+2)/(TH*TW) of
its FLOPs, 1.41x for 8x16 tiles); saving: the intermediate's round trip through DRAM and a
launch.

t is stored in x's dtype, as the two-kernel path stores it, so both compute the same numbers up
to accumulation order. Halo pixels outside the image hold t = 0: conv2's zero padding.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .conv3x3 import _conv3x3_step


@triton.jit
def _rb_conv1_chunk(x_ptr, w1_ptr, b1_ptr, scratch_ptr, slab, img, y0, x0, H, W, chunk,
                    C: tl.constexpr, BLOCK_C: tl.constexpr, TW: tl.constexpr, HALO: tl.constexpr,
                    CHUNK: tl.constexpr, BLOCK_K: tl.constexpr, K_CHUNKS: tl.constexpr,
                    PRECISION: tl.constexpr):
    """t = relu(conv1(x) + b1) for CHUNK halo pixels (row-major over the (TH+2) x (TW+2) halo),
    zero outside the image, stored to this program's slab."""
    r = chunk * CHUNK + tl.arange(0, CHUNK)
    r_ok = r < HALO
    py = y0 + r // (TW + 2)
    px = x0 + r % (TW + 2)
    inside = r_ok & (py >= 0) & (py < H) & (px >= 0) & (px < W)
    offs_c = tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    acc = tl.zeros((CHUNK, BLOCK_C), dtype=tl.float32)
    for tap in tl.static_range(9):  # conv3x3's own step: stride 1, no prologue add
        for kc in tl.static_range(K_CHUNKS):
            acc = _conv3x3_step(acc, x_ptr, x_ptr, w1_ptr, img, py, px, inside, offs_c, c_ok, tap, kc * BLOCK_K,
                                H, W, C, C, 1, False, PRECISION, BLOCK_K)
    acc += tl.load(b1_ptr + offs_c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    t = tl.where(inside[:, None], tl.maximum(acc, 0.0), 0.0)
    tl.store(scratch_ptr + (slab + r.to(tl.int64))[:, None] * BLOCK_C + offs_c[None, :],
             t.to(scratch_ptr.dtype.element_ty), mask=r_ok[:, None])


@triton.jit(do_not_specialize=["H", "W", "TILES_Y", "TILES_X"])  # sizes: one variant for every frame (conv3x3.py)
def _rb_fused_kernel(x_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, extra_ptr, out_ptr, scratch_ptr,
                     H, W, TILES_Y, TILES_X,
                     C: tl.constexpr, BLOCK_C: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
                     HALO: tl.constexpr, CHUNK: tl.constexpr, N_CHUNKS: tl.constexpr, BLOCK_K: tl.constexpr,
                     K_CHUNKS: tl.constexpr, HAS_EXTRA: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    img = pid // (TILES_Y * TILES_X)
    tile = pid % (TILES_Y * TILES_X)
    ty = tile // TILES_X
    tx = tile % TILES_X
    slab = pid.to(tl.int64) * HALO
    # phase 1: the intermediate on the tile and its halo, into this program's slab
    for chunk in tl.static_range(N_CHUNKS):
        _rb_conv1_chunk(x_ptr, w1_ptr, b1_ptr, scratch_ptr, slab, img, ty * TH - 1, tx * TW - 1, H, W, chunk,
                        C, BLOCK_C, TW, HALO, CHUNK, BLOCK_K, K_CHUNKS, PRECISION)
    tl.debug_barrier()  # the slab is written by all of this program's threads before any reads it
    # phase 2: conv2 over the slab, then bias, the block's input and `extra`
    o = tl.arange(0, TH * TW)
    ly = o // TW
    lx = o % TW
    oy = ty * TH + ly
    ox = tx * TW + lx
    o_ok = (oy < H) & (ox < W)
    offs_c = tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    acc = tl.zeros((TH * TW, BLOCK_C), dtype=tl.float32)
    for tap in tl.static_range(9):
        r = (ly + tap // 3) * (TW + 2) + (lx + tap % 3)
        for kc in tl.static_range(K_CHUNKS):
            offs_k = kc * BLOCK_K + tl.arange(0, BLOCK_K)
            k_ok = offs_k < C
            a = tl.load(scratch_ptr + (slab + r.to(tl.int64))[:, None] * BLOCK_C + offs_k[None, :],
                        mask=k_ok[None, :], other=0.0)
            wk = tl.load(w2_ptr + (tap * C + offs_k)[:, None] * C + offs_c[None, :],
                         mask=k_ok[:, None] & c_ok[None, :], other=0.0)
            acc = tl.dot(a, wk, acc, input_precision=PRECISION)
    acc += tl.load(b2_ptr + offs_c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    pix = ((img.to(tl.int64) * H + oy) * W + ox) * C
    off = pix[:, None] + offs_c[None, :]
    mask = o_ok[:, None] & c_ok[None, :]
    acc += tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float32)
    if HAS_EXTRA:
        acc += tl.load(extra_ptr + off, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + off, acc.to(out_ptr.dtype.element_ty), mask=mask)


class BlockTiles(NamedTuple):
    th: int  # output tile height (TH * TW a power of two)
    tw: int
    chunk: int  # halo rows per conv1 GEMM
    block_k: int
    warps: int = 4
    stages: int = 1


# GPU tiles per channel count: the fastest in benchmarks/tune_kernels.py's sweep (its "rb" rows),
# which writes them to _gpu_tiles.py's BLOCK_TILES next to conv3x3's TILES. Until a sweep has run
# on a GPU the table is empty and `_gpu_default` holds.
try:
    from ._gpu_tiles import BLOCK_TILES as _TUNED
except ImportError:
    _TUNED = {}
GPU_BLOCK_TILES: dict[int, BlockTiles] = {k: BlockTiles(*v) for k, v in _TUNED.items()}


def _gpu_default(c: int) -> BlockTiles:
    """An 8 x 16 tile (halo 10 x 18 = 180 pixels, in 3 chunks of 64), K in slices of up to 64
    channels, 8 warps at 128 channels (the 128 x 128 fp32 accumulator would otherwise need 128
    registers a thread)."""
    return BlockTiles(8, 16, 64, max(16, min(64, triton.next_power_of_2(c))), warps=8 if c > 64 else 4)


def block_tiles_for(c: int, interpret: bool) -> BlockTiles:
    """The interpreter pays per operation, not per element: one big tile and one chunk. GPUs: the
    swept tiles for this channel count, else `_gpu_default`."""
    if interpret:
        return BlockTiles(16, 16, 512, max(16, triton.next_power_of_2(c)))
    return GPU_BLOCK_TILES.get(c) or _gpu_default(c)


def conv_relu_residual_nhwc(x: torch.Tensor, w1_packed: torch.Tensor, b1: torch.Tensor, w2_packed: torch.Tensor,
                            b2: torch.Tensor, extra: torch.Tensor | None = None, *, precision: str = "ieee",
                            tiles: BlockTiles | None = None) -> torch.Tensor:
    """x [N, H, W, C] contiguous; w*_packed [9*C, C] (conv3x3.pack_conv3x3_weight); extra like x."""
    n, h, w, c = x.shape
    out = torch.empty_like(x)
    if out.numel() == 0:
        return out
    t = tiles or block_tiles_for(c, x.device.type == "cpu")
    if (t.th * t.tw) & (t.th * t.tw - 1):
        raise ValueError(f"tile {t.th}x{t.tw}: th * tw must be a power of two")
    block_c = max(16, triton.next_power_of_2(c))
    tiles_y, tiles_x = triton.cdiv(h, t.th), triton.cdiv(w, t.tw)
    programs = n * tiles_y * tiles_x
    halo = (t.th + 2) * (t.tw + 2)
    scratch = torch.empty(programs * halo * block_c, device=x.device, dtype=x.dtype)
    torch.library.wrap_triton(_rb_fused_kernel)[(programs,)](
        x, w1_packed, b1, w2_packed, b2, extra if extra is not None else x, out, scratch,
        h, w, tiles_y, tiles_x, C=c, BLOCK_C=block_c, TH=t.th, TW=t.tw, HALO=halo, CHUNK=t.chunk,
        N_CHUNKS=triton.cdiv(halo, t.chunk), BLOCK_K=t.block_k, K_CHUNKS=triton.cdiv(c, t.block_k),
        HAS_EXTRA=extra is not None, PRECISION=precision if x.dtype == torch.float32 else "ieee",
        num_warps=t.warps, num_stages=t.stages)
    return out
