"""3x3 convolution (stride 1 or 2, padding 1) as an implicit GEMM on tensor cores, NHWC.

out = act(conv(x [+ x_add]) + bias) [+ residual] [+ extra]

One program computes a BLOCK_M x BLOCK_N tile of (output pixels) x (output channels): for each
of the 9 taps it loads the shifted input rows (zero outside the image: the conv's padding, also
for the prologue add) and a [BLOCK_K, BLOCK_N] slice of the packed weight, and accumulates with
`tl.dot` in float32. Bias, ReLU and up to two residual tensors are added in the epilogue, so a
residual block costs two kernels and no separate elementwise passes. fp16/bf16 in, fp32
accumulate; fp32 in with input_precision "ieee" (exact) or "tf32".
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ..errors import env_flag


@triton.jit
def _conv3x3_step(acc, x_ptr, xadd_ptr, w_ptr, img, oy, ox, m_mask, offs_n, n_mask, tap, k0, H, W,
                  CIN: tl.constexpr, COUT: tl.constexpr, STRIDE: tl.constexpr, HAS_XADD: tl.constexpr,
                  PRECISION: tl.constexpr, BLOCK_K: tl.constexpr):
    """acc += (shifted input rows of one tap, channels k0..k0+BLOCK_K) @ (that weight slice)."""
    iy = oy * STRIDE + tap // 3 - 1
    ix = ox * STRIDE + tap % 3 - 1
    valid = m_mask & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
    row = ((img.to(tl.int64) * H + iy) * W + ix) * CIN
    offs_k = k0 + tl.arange(0, BLOCK_K)
    k_mask = offs_k < CIN
    a_mask = valid[:, None] & k_mask[None, :]
    a = tl.load(x_ptr + row[:, None] + offs_k[None, :], mask=a_mask, other=0.0)
    if HAS_XADD:
        a += tl.load(xadd_ptr + row[:, None] + offs_k[None, :], mask=a_mask, other=0.0)
    wk = tl.load(w_ptr + (tap * CIN + offs_k)[:, None] * COUT + offs_n[None, :],
                 mask=k_mask[:, None] & n_mask[None, :], other=0.0)
    return tl.dot(a, wk, acc, input_precision=PRECISION)


@triton.jit
def _epilogue(acc, b_ptr, res_ptr, extra_ptr, out_ptr, pix, pix_mask, offs_n, n_mask, COUT: tl.constexpr,
              HAS_BIAS: tl.constexpr, RELU: tl.constexpr, HAS_RES: tl.constexpr, HAS_EXTRA: tl.constexpr):
    """out[pix, offs_n] = act(acc + bias) [+ residual] [+ extra], for output pixels `pix` (NHWC
    pixel indices, int64) where pix_mask and channels where n_mask."""
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    out_off = pix[:, None] * COUT + offs_n[None, :]
    o_mask = pix_mask[:, None] & n_mask[None, :]
    if HAS_RES:
        acc += tl.load(res_ptr + out_off, mask=o_mask, other=0.0).to(tl.float32)
    if HAS_EXTRA:
        acc += tl.load(extra_ptr + out_off, mask=o_mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + out_off, acc.to(out_ptr.dtype.element_ty), mask=o_mask)


# The int arguments are sizes: Triton would otherwise compile a variant per pattern of which of
# them are divisible by 16 (or equal 1), and a single 720p frame has several (720, 360, 180 rows),
# while no address needs the hint (every NHWC offset is a multiple of the constexpr channel count).
@triton.jit(do_not_specialize=["M", "H", "W", "HO", "WO"])
def _conv3x3_kernel(x_ptr, xadd_ptr, w_ptr, b_ptr, res_ptr, extra_ptr, out_ptr,
                    M, H, W, HO, WO,
                    CIN: tl.constexpr, COUT: tl.constexpr, STRIDE: tl.constexpr,
                    HAS_XADD: tl.constexpr, HAS_BIAS: tl.constexpr, RELU: tl.constexpr,
                    HAS_RES: tl.constexpr, HAS_EXTRA: tl.constexpr, PRECISION: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    K_CHUNKS: tl.constexpr, UNROLL: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output pixels over N*HO*WO
    m_mask = offs_m < M
    img = offs_m // (HO * WO)
    rem = offs_m % (HO * WO)
    oy = rem // WO
    ox = rem % WO
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < COUT
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if UNROLL:  # every (tap, channel chunk) step spelled out: index math hoisted, no loop overhead
        for tap in tl.static_range(9):
            for c in tl.static_range(K_CHUNKS):
                acc = _conv3x3_step(acc, x_ptr, xadd_ptr, w_ptr, img, oy, ox, m_mask, offs_n, n_mask, tap,
                                    c * BLOCK_K, H, W, CIN, COUT, STRIDE, HAS_XADD, PRECISION, BLOCK_K)
    else:  # one loop over the 9 * K_CHUNKS steps, which Triton software-pipelines (num_stages)
        for kk in range(0, 9 * K_CHUNKS):
            acc = _conv3x3_step(acc, x_ptr, xadd_ptr, w_ptr, img, oy, ox, m_mask, offs_n, n_mask,
                                kk // K_CHUNKS, (kk % K_CHUNKS) * BLOCK_K, H, W, CIN, COUT, STRIDE, HAS_XADD,
                                PRECISION, BLOCK_K)
    _epilogue(acc, b_ptr, res_ptr, extra_ptr, out_ptr, offs_m.to(tl.int64), m_mask, offs_n, n_mask, COUT, HAS_BIAS,
              RELU, HAS_RES, HAS_EXTRA)


# The TMA variant (Hopper's tensor memory accelerator, through a host-side tensor descriptor):
# each tap's input tile is one descriptor load of [1, 1, BLOCK_M, BLOCK_K] (a run of BLOCK_M
# pixels of one row), whose out-of-image part the hardware fills with zeros, so the 3x3 padding
# costs no masks and no per-element address arithmetic. The pointer kernel above computes a
# 64-bit address and a mask for every element of every tap's tile, which on a GPU may compete
# with the MMAs for issue slots at 32 channels. Stride 1, no prologue add; opt-in
# (FASTDEBLUR_TRITON_TMA=1) until a GPU measures it (benchmarks/RESULTS.md).
try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # Triton without host-side tensor descriptors
    TensorDescriptor = None


@triton.jit(do_not_specialize=["H", "W", "TILES_W"])
def _conv3x3_tma_kernel(x_desc, w_ptr, b_ptr, res_ptr, extra_ptr, out_ptr, H, W, TILES_W,
                        CIN: tl.constexpr, COUT: tl.constexpr, HAS_BIAS: tl.constexpr, RELU: tl.constexpr,
                        HAS_RES: tl.constexpr, HAS_EXTRA: tl.constexpr, PRECISION: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        K_CHUNKS: tl.constexpr):
    pid = tl.program_id(0)  # over (image, row, run of BLOCK_M pixels)
    pid_n = tl.program_id(1)
    run = pid % TILES_W
    row = pid // TILES_W  # image * H + y
    img = row // H
    y = row % H
    x0 = run * BLOCK_M
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < COUT
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for tap in tl.static_range(9):
        for c in tl.static_range(K_CHUNKS):
            a = x_desc.load([img, y + tap // 3 - 1, x0 + tap % 3 - 1, c * BLOCK_K])
            a = tl.reshape(a, (BLOCK_M, BLOCK_K))
            offs_k = c * BLOCK_K + tl.arange(0, BLOCK_K)
            wk = tl.load(w_ptr + (tap * CIN + offs_k)[:, None] * COUT + offs_n[None, :],
                         mask=(offs_k < CIN)[:, None] & n_mask[None, :], other=0.0)
            acc = tl.dot(a, wk, acc, input_precision=PRECISION)
    ox = x0 + tl.arange(0, BLOCK_M)
    _epilogue(acc, b_ptr, res_ptr, extra_ptr, out_ptr, row.to(tl.int64) * W + ox, ox < W, offs_n, n_mask, COUT,
              HAS_BIAS, RELU, HAS_RES, HAS_EXTRA)


def tma_fits(x: torch.Tensor, stride: int = 1, x_add: torch.Tensor | None = None) -> bool:
    """Whether the TMA variant runs this call: Triton has host descriptors, stride 1, no prologue
    add, and x is contiguous NHWC whose pixel rows are 16-byte multiples at a 16-byte-aligned
    address (TMA's rule: 8 channels in 16-bit types, 4 in float32)."""
    return (TensorDescriptor is not None and stride == 1 and x_add is None and x.dim() == 4 and x.is_contiguous()
            and (x.shape[3] * x.element_size()) % 16 == 0 and x.data_ptr() % 16 == 0)


def pack_conv3x3_weight(weight: torch.Tensor) -> torch.Tensor:
    """[Cout, Cin, 3, 3] -> [9*Cin, Cout], row (tap*Cin + ci), tap = ky*3 + kx."""
    cout, cin = weight.shape[:2]
    return weight.permute(2, 3, 1, 0).reshape(9 * cin, cout).contiguous()


class Tiles(NamedTuple):
    block_m: int
    block_n: int
    block_k: int
    warps: int = 4
    stages: int = 3
    unroll: bool = True
    tma: bool = False  # stride 1: the TMA variant (block_m pixels of one row, at most 256), where tma_fits


# GPU tiles per (op, Cin, Cout), op "conv" (stride 1), "conv_s2" or "convT": the fastest in
# benchmarks/tune_kernels.py's sweep at DMPHN's 720p shapes, which writes them to _gpu_tiles.py
# (card, date and figures in its header and in benchmarks/RESULTS.md). Other shapes: `_gpu_default`.
try:
    from ._gpu_tiles import TILES as _TUNED
except ImportError:
    _TUNED = {}
GPU_TILES: dict[tuple[str, int, int], Tiles] = {k: Tiles(*v) for k, v in _TUNED.items()}


def _gpu_default(cin: int, cout: int) -> Tiles:
    return Tiles(128, max(16, min(128, triton.next_power_of_2(cout))), max(16, min(64, triton.next_power_of_2(cin))))


def tiles_for(op: str, cin: int, cout: int, interpret: bool) -> Tiles:
    """The CPU interpreter pays per program and loop step, not per element, so it gets the
    largest blocks; GPUs get the measured tiles that fit registers and shared memory."""
    if interpret:
        t = Tiles(1024, max(16, min(128, triton.next_power_of_2(cout))), max(16, min(128, triton.next_power_of_2(cin))))
    else:
        t = GPU_TILES.get((op, cin, cout)) or _gpu_default(cin, cout)
    if op == "conv" and env_flag("FASTDEBLUR_TRITON_TMA", False):
        t = t._replace(tma=True, block_m=min(t.block_m, 256))  # a TMA box side is at most 256
    return t


def conv3x3_nhwc(x: torch.Tensor, w_packed: torch.Tensor, bias: torch.Tensor | None = None, *, stride: int = 1,
                 relu: bool = False, x_add: torch.Tensor | None = None, residual: torch.Tensor | None = None,
                 extra: torch.Tensor | None = None, precision: str = "ieee",
                 out: torch.Tensor | None = None, tiles: Tiles | None = None) -> torch.Tensor:
    """x [N, H, W, Cin] contiguous; w_packed [9*Cin, Cout]; residual/extra [N, Ho, Wo, Cout]."""
    n, h, w, cin = x.shape
    cout = w_packed.shape[1]
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    if out is None:
        out = torch.empty(n, ho, wo, cout, device=x.device, dtype=x.dtype)
    m = n * ho * wo
    if m == 0:
        return out
    t = tiles or tiles_for("conv" if stride == 1 else "conv_s2", cin, cout, x.device.type == "cpu")
    dummy = x
    if t.tma and tma_fits(x, stride, x_add):
        block_k = min(t.block_k, triton.next_power_of_2(cin))
        desc = TensorDescriptor.from_tensor(x, [1, 1, t.block_m, block_k])
        tiles_w = triton.cdiv(w, t.block_m)
        torch.library.wrap_triton(_conv3x3_tma_kernel)[(n * h * tiles_w, triton.cdiv(cout, t.block_n))](
            desc, w_packed, bias if bias is not None else dummy, residual if residual is not None else dummy,
            extra if extra is not None else dummy, out, h, w, tiles_w, CIN=cin, COUT=cout,
            HAS_BIAS=bias is not None, RELU=relu, HAS_RES=residual is not None, HAS_EXTRA=extra is not None,
            PRECISION=precision if x.dtype == torch.float32 else "ieee", BLOCK_M=t.block_m, BLOCK_N=t.block_n,
            BLOCK_K=block_k, K_CHUNKS=triton.cdiv(cin, block_k), num_warps=t.warps, num_stages=t.stages)
        return out
    grid = (triton.cdiv(m, t.block_m), triton.cdiv(cout, t.block_n))
    torch.library.wrap_triton(_conv3x3_kernel)[grid](
        x, x_add if x_add is not None else dummy, w_packed, bias if bias is not None else dummy,
        residual if residual is not None else dummy, extra if extra is not None else dummy, out,
        m, h, w, ho, wo, CIN=cin, COUT=cout, STRIDE=stride,
        HAS_XADD=x_add is not None, HAS_BIAS=bias is not None, RELU=relu,
        HAS_RES=residual is not None, HAS_EXTRA=extra is not None,
        PRECISION=precision if x.dtype == torch.float32 else "ieee",
        BLOCK_M=t.block_m, BLOCK_N=t.block_n, BLOCK_K=t.block_k, K_CHUNKS=triton.cdiv(cin, t.block_k),
        UNROLL=t.unroll, num_warps=t.warps, num_stages=t.stages)
    return out
