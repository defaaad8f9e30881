"""3x3 convolutions with few output channels on the CPU (csrc/cpu/conv_small_k.cpp): the
decoders' last layer, 32 -> 3 channels.

oneDNN's kernels take as long for 3 output channels as for 16 (21 ms for a 720p layer in
bfloat16 on a 2-core Zen 4, 72 GFLOP/s: three such calls a frame cost as much as the decoders'
transposed convolutions). The extension's kernel runs the dot products along the input
channels, 4 pixels x 4 output channels at a time (2 x 4 on AVX2), and reduces them in
registers: 2.6x faster there in bfloat16 and 3.2x in float32. bfloat16 on CPUs with
AVX512-BF16 (by default only where the CPU has no AMX), float32 on AVX-512 or AVX2 with FMA;
elsewhere oneDNN keeps the layer. Products
accumulate in float32 and the bias is added in float32 before the one rounding to the
activation type.
"""

from __future__ import annotations

import functools

import torch


def runs(dtype: torch.dtype, in_channels: int, out_channels: int) -> bool:
    """The kernel runs this 3x3 convolution's channels in `dtype` on this CPU (1-4 output
    channels; input channels a multiple of 32 in bfloat16, of 16 in float32 on AVX-512 and of 8
    on AVX2; the extension built)."""
    from .. import _ext

    if dtype not in (torch.bfloat16, torch.float32) or not _ext.load():
        return False
    return bool(torch.ops.fastdeblur.conv3x3_small_k_runs(dtype, in_channels, out_channels))


def pack(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[K, C, 3, 3] conv weight (K <= 4) -> the kernel's [9, 4, C] in `dtype`: taps row-major,
    output channels padded to 4 with zeros."""
    k, c = weight.shape[:2]
    if weight.shape[2:] != (3, 3) or not runs(dtype, c, k):
        raise ValueError(f"the small-K kernel does not run a {tuple(weight.shape)} weight in {dtype} on this "
                         "machine (3x3, 1-4 output channels, input channels a multiple of 32 in bfloat16 or of 16 "
                         "in float32 (8 on AVX2), AVX512-BF16 for bfloat16 or AVX2+FMA for float32, the "
                         "extension built)")
    u = torch.zeros(9, 4, c, dtype=torch.float64)
    u[:, :k] = weight.detach().to("cpu", torch.float64).permute(2, 3, 0, 1).reshape(9, k, c)
    return u.to(dtype).contiguous()


@functools.cache
def available(dtype: torch.dtype) -> bool:
    """The kernel runs `dtype` here and a small convolution (ragged row end, image edges)
    matches float64 within that dtype's rounding."""
    if not runs(dtype, 32, 3):
        return False
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 7, 32, generator=gen).to(dtype)
    w = (torch.rand(3, 32, 3, 3, generator=gen) - 0.5).to(dtype)
    b = torch.rand(3, generator=gen)
    with torch.inference_mode():
        got = conv3x3(x, pack(w, dtype), b).double()
        want = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2).double(), w.double(), b.double(), padding=1)
    tol = 0.05 if dtype == torch.bfloat16 else 1e-4  # values up to ~5: bfloat16 rounding is ~0.02
    return bool((got - want.permute(0, 2, 3, 1)).abs().max() <= tol)


def preferred(dtype: torch.dtype) -> bool:
    """The CPU model runs its few-output-channel layers in `dtype` on the kernel by default here:
    float32 wherever it runs; bfloat16 where the CPU has no AMX (on a Xeon with AMX it tied
    oneDNN's tile-unit convolutions; there the extension's AMX kernel runs the layer, amx.py)."""
    from .winograd import cpu_has_amx

    return available(dtype) and not (dtype == torch.bfloat16 and cpu_has_amx())


def conv3x3(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """conv3x3(x) + bias, stride 1, padding 1. x: NHWC bfloat16 or float32 memory, as [N, H, W, C]
    or a channels_last [N, C, H, W] view (the result takes the same form); w: `pack(weight,
    x.dtype)`; bias: K values."""
    return torch.ops.fastdeblur.conv3x3_small_k(x, w, bias.float().contiguous())
