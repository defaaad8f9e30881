"""ConvTranspose2d(k=4, stride=2, padding=1) as four sub-pixel 2x2 convolutions, NHWC, bias fused.

Output pixel (2m + a, 2p + b) only sees kernel rows ky = 1 - a + 2t and input rows
m + (a + 1 - ky) / 2 for t in {0, 1} (likewise columns): a 2x2 convolution per output parity.
Program axis 2 picks the parity, so every pixel of a tile shares its four taps and the tile is
one implicit GEMM over K = 4 * Cin with `tl.dot`; no zero-stuffed input, no scatter.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .conv3x3 import Tiles, tiles_for


@triton.jit(do_not_specialize=["M", "H", "W"])  # sizes: one variant for every frame (conv3x3.py)
def _conv_transpose4x4s2_kernel(x_ptr, w_ptr, b_ptr, out_ptr, M, H, W,
                                CIN: tl.constexpr, COUT: tl.constexpr, HAS_BIAS: tl.constexpr,
                                PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    parity = tl.program_id(2)
    a = parity // 2
    b = parity % 2
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # input-grid positions over N*H*W
    m_mask = offs_m < M
    img = offs_m // (H * W)
    rem = offs_m % (H * W)
    my = rem // W
    mx = rem % W
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < COUT
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for t in tl.static_range(4):
        ky = 1 - a + 2 * (t // 2)
        kx = 1 - b + 2 * (t % 2)
        iy = my + (a + 1 - ky) // 2
        ix = mx + (b + 1 - kx) // 2
        valid = m_mask & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        row = ((img.to(tl.int64) * H + iy) * W + ix) * CIN
        for k0 in tl.static_range(0, CIN, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_mask = offs_k < CIN
            xv = tl.load(x_ptr + row[:, None] + offs_k[None, :], mask=valid[:, None] & k_mask[None, :], other=0.0)
            wk = tl.load(w_ptr + ((ky * 4 + kx) * CIN + offs_k)[:, None] * COUT + offs_n[None, :],
                         mask=k_mask[:, None] & n_mask[None, :], other=0.0)
            acc = tl.dot(xv, wk, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    oy = 2 * my + a
    ox = 2 * mx + b
    out_row = ((img.to(tl.int64) * (2 * H) + oy) * (2 * W) + ox) * COUT
    tl.store(out_ptr + out_row[:, None] + offs_n[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=m_mask[:, None] & n_mask[None, :])


def pack_conv_transpose_weight(weight: torch.Tensor) -> torch.Tensor:
    """ConvTranspose2d weight [Cin, Cout, 4, 4] -> [16*Cin, Cout], row ((ky*4 + kx)*Cin + ci)."""
    cin, cout = weight.shape[:2]
    return weight.permute(2, 3, 0, 1).reshape(16 * cin, cout).contiguous()


def conv_transpose4x4s2_nhwc(x: torch.Tensor, w_packed: torch.Tensor, bias: torch.Tensor | None = None, *,
                             precision: str = "ieee", tiles: Tiles | None = None) -> torch.Tensor:
    """x [N, H, W, Cin] contiguous -> [N, 2H, 2W, Cout]."""
    n, h, w, cin = x.shape
    cout = w_packed.shape[1]
    out = torch.empty(n, 2 * h, 2 * w, cout, device=x.device, dtype=x.dtype)
    m = n * h * w
    if m == 0:
        return out
    t = tiles or tiles_for("convT", cin, cout, x.device.type == "cpu")
    grid = (triton.cdiv(m, t.block_m), triton.cdiv(cout, t.block_n), 4)
    torch.library.wrap_triton(_conv_transpose4x4s2_kernel)[grid](
        x, w_packed, bias if bias is not None else x, out, m, h, w, CIN=cin, COUT=cout,
        HAS_BIAS=bias is not None, PRECISION=precision if x.dtype == torch.float32 else "ieee",
        BLOCK_M=t.block_m, BLOCK_N=t.block_n, BLOCK_K=t.block_k, num_warps=t.warps, num_stages=t.stages)
    return out
