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

import torch
import triton
import triton.language as tl


@triton.jit
def _conv3x3_kernel(x_ptr, xadd_ptr, w_ptr, b_ptr, res_ptr, extra_ptr, out_ptr,
                    M, H, W, HO, WO,
                    CIN: tl.constexpr, COUT: tl.constexpr, STRIDE: tl.constexpr,
                    HAS_XADD: tl.constexpr, HAS_BIAS: tl.constexpr, RELU: tl.constexpr,
                    HAS_RES: tl.constexpr, HAS_EXTRA: tl.constexpr, PRECISION: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
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
    for tap in tl.static_range(9):
        iy = oy * STRIDE + (tap // 3) - 1
        ix = ox * STRIDE + (tap % 3) - 1
        valid = m_mask & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        row = ((img.to(tl.int64) * H + iy) * W + ix) * CIN
        for k0 in tl.static_range(0, CIN, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_mask = offs_k < CIN
            a_mask = valid[:, None] & k_mask[None, :]
            a = tl.load(x_ptr + row[:, None] + offs_k[None, :], mask=a_mask, other=0.0)
            if HAS_XADD:
                a += tl.load(xadd_ptr + row[:, None] + offs_k[None, :], mask=a_mask, other=0.0)
            wk = tl.load(w_ptr + (tap * CIN + offs_k)[:, None] * COUT + offs_n[None, :],
                         mask=k_mask[:, None] & n_mask[None, :], other=0.0)
            acc = tl.dot(a, wk, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    out_off = offs_m.to(tl.int64)[:, None] * COUT + offs_n[None, :]
    o_mask = m_mask[:, None] & n_mask[None, :]
    if HAS_RES:
        acc += tl.load(res_ptr + out_off, mask=o_mask, other=0.0).to(tl.float32)
    if HAS_EXTRA:
        acc += tl.load(extra_ptr + out_off, mask=o_mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + out_off, acc.to(out_ptr.dtype.element_ty), mask=o_mask)


def pack_conv3x3_weight(weight: torch.Tensor) -> torch.Tensor:
    """[Cout, Cin, 3, 3] -> [9*Cin, Cout], row (tap*Cin + ci), tap = ky*3 + kx."""
    cout, cin = weight.shape[:2]
    return weight.permute(2, 3, 1, 0).reshape(9 * cin, cout).contiguous()


def block_sizes(cin: int, cout: int, interpret: bool) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K). The CPU interpreter pays per program and loop step, not per
    element, so it gets the largest blocks; GPUs get tiles that fit registers and shared memory."""
    block_n = max(16, min(128, triton.next_power_of_2(cout)))
    if interpret:
        return 1024, block_n, max(16, min(128, triton.next_power_of_2(cin)))
    return 128, block_n, max(16, min(64, triton.next_power_of_2(cin)))


def conv3x3_nhwc(x: torch.Tensor, w_packed: torch.Tensor, bias: torch.Tensor | None = None, *, stride: int = 1,
                 relu: bool = False, x_add: torch.Tensor | None = None, residual: torch.Tensor | None = None,
                 extra: torch.Tensor | None = None, precision: str = "ieee",
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """x [N, H, W, Cin] contiguous; w_packed [9*Cin, Cout]; residual/extra [N, Ho, Wo, Cout]."""
    n, h, w, cin = x.shape
    cout = w_packed.shape[1]
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    if out is None:
        out = torch.empty(n, ho, wo, cout, device=x.device, dtype=x.dtype)
    m = n * ho * wo
    if m == 0:
        return out
    interpret = x.device.type == "cpu"
    bm, bn, bk = block_sizes(cin, cout, interpret)
    grid = (triton.cdiv(m, bm), triton.cdiv(cout, bn))
    dummy = x
    torch.library.wrap_triton(_conv3x3_kernel)[grid](
        x, x_add if x_add is not None else dummy, w_packed, bias if bias is not None else dummy,
        residual if residual is not None else dummy, extra if extra is not None else dummy, out,
        m, h, w, ho, wo, CIN=cin, COUT=cout, STRIDE=stride,
        HAS_XADD=x_add is not None, HAS_BIAS=bias is not None, RELU=relu,
        HAS_RES=residual is not None, HAS_EXTRA=extra is not None,
        PRECISION=precision if x.dtype == torch.float32 else "ieee",
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=4, num_stages=3)
    return out
