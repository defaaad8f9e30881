"""DMPHN's residual blocks on Intel's AMX tile units (csrc/cpu/amx_block.cpp), in bfloat16.

On CPUs with AMX (Intel Sapphire Rapids and later), deblur() runs bfloat16 on oneDNN, whose
tile-unit convolutions beat the extension's Winograd kernels there (3.3x over a 720p frame on
a 2-core Xeon, benchmarks/RESULTS.md). The residual blocks (84% of a frame) still ran as two
oneDNN convolutions each, at 2.0-3.2 TFLOP/s of the tile units' 5.2 on 2 cores: each
convolution is a full pass over memory. The extension's kernel runs a whole block in one pass,
row by row, with the intermediate activation kept in the cache: memory sees the block's input
read once and its output written once. Measured per block on the same Xeon: 1.6x faster than
oneDNN's two calls at 32 channels, 1.5x at 64 and 1.3x at 128.

Numerics: bfloat16 products accumulated in float32, as oneDNN's; the intermediate activation is
rounded to bfloat16 as the separate convolutions round it, and the bias, ReLU and residual add
are done in float32 before the one rounding of the output. tests/test_amx.py holds the error
to at most 2x that of torch's own bfloat16 convolutions against float64.
"""

from __future__ import annotations

import functools

import torch

from ..errors import env_flag


def runs(dtype: torch.dtype, in_channels: int, out_channels: int) -> bool:
    """The kernel runs a residual block of these channels in `dtype` here: bfloat16, C -> C with C a
    multiple of 32, a CPU with AMX-BF16 that Linux lets this process use, the extension built."""
    from .. import _ext

    if dtype != torch.bfloat16 or not _ext.load():
        return False
    return bool(torch.ops.fastdeblur.amx_block_runs(dtype, in_channels, out_channels))


def pack(weight: torch.Tensor) -> torch.Tensor:
    """[C, C, 3, 3] conv weight -> the kernel's [C/32, 9, C/32, 2, 16, 16, 2] bfloat16, in the order
    the kernel reads it: for each 32 output channels, each tap (row-major) and each 32 input
    channels, two tiles (16 output channels each) of 16 input channel pairs x 16 output channels x
    the pair (the tile unit's layout for its second operand)."""
    k, c = weight.shape[:2]
    if weight.shape[2:] != (3, 3) or k != c or c % 32 or c == 0:
        raise ValueError(f"the AMX kernel runs 3x3 C -> C convolutions with C a multiple of 32, not a "
                         f"{tuple(weight.shape)} weight")
    w = weight.detach().to("cpu", torch.float32).permute(2, 3, 1, 0)  # [3, 3, C, K]
    # tap, input chunk, pair, of pair, output chunk, output tile, output
    w = w.reshape(9, c // 32, 16, 2, k // 32, 2, 16)
    return w.permute(4, 0, 1, 5, 2, 6, 3).to(torch.bfloat16).contiguous()


@functools.cache
def available() -> bool:
    """The kernel runs here, and a small block (odd size, row ends, image edges, both the new-tensor
    and the in-place form) matches float64 within bfloat16's rounding."""
    if not runs(torch.bfloat16, 32, 32):
        return False
    gen = torch.Generator().manual_seed(0)
    h = torch.rand(2, 5, 37, 32, generator=gen).to(torch.bfloat16)
    w1, w2 = ((torch.rand(32, 32, 3, 3, generator=gen) - 0.5) / 8 for _ in range(2))
    b1, b2 = torch.rand(32, generator=gen), torch.rand(32, generator=gen)
    v = h.permute(0, 3, 1, 2).double()
    conv = torch.nn.functional.conv2d
    with torch.inference_mode():
        t = conv(v, w1.bfloat16().double(), b1.double(), padding=1).relu()
        want = (v + conv(t, w2.bfloat16().double(), b2.double(), padding=1)).permute(0, 2, 3, 1)
        new = residual_block(h, pack(w1), b1, pack(w2), b2)
        inplace = residual_block_(h.clone(), pack(w1), b1, pack(w2), b2)
    tol = 0.05  # values up to ~3: bfloat16 rounding is ~0.01
    return bool((new.double() - want).abs().max() <= tol and (inplace.double() - want).abs().max() <= tol)


def preferred() -> bool:
    """The CPU model runs its bfloat16 residual blocks on the kernel by default here: wherever it
    runs (FASTDEBLUR_AMX=0 leaves them to oneDNN)."""
    return available() and env_flag("FASTDEBLUR_AMX", True)


def residual_block(h: torch.Tensor, u1: torch.Tensor, b1: torch.Tensor, u2: torch.Tensor,
                   b2: torch.Tensor) -> torch.Tensor:
    """h + conv2(relu(conv1(h) + b1)) + b2 (3x3, stride 1, padding 1) as a new tensor. h: NHWC
    bfloat16 memory, as [N, H, W, C] or a channels_last [N, C, H, W] view (the result takes the same
    form); u1, u2: `pack(w)`; b1, b2: C values."""
    return torch.ops.fastdeblur.amx_residual_block(h, u1, b1.float().contiguous(), u2, b2.float().contiguous())


def residual_block_(h: torch.Tensor, u1: torch.Tensor, b1: torch.Tensor, u2: torch.Tensor,
                    b2: torch.Tensor) -> torch.Tensor:
    """residual_block written over h, which is returned."""
    return torch.ops.fastdeblur.amx_residual_block_(h, u1, b1.float().contiguous(), u2, b2.float().contiguous())
