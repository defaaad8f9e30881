"""DMPHN's convolutions on Intel's AMX tile units (csrc/cpu/amx_block.cpp), in bfloat16: the
residual blocks, both convolutions in one pass, the other 3x3 convolutions with at least 32 input
channels (the encoders' stride-2 ones, the decoders' 32 -> 3) and the decoders' 4x4 stride-2
transposed convolutions (four 2x2 phases). Only the encoders' first layer (3 input channels)
stays on oneDNN.

On CPUs with AMX (Intel Sapphire Rapids and later), deblur() runs bfloat16 on oneDNN, whose
tile-unit convolutions beat the extension's Winograd kernels there (3.3x over a 720p frame on
a 2-core Xeon, benchmarks/RESULTS.md). The residual blocks (84% of a frame) still ran as two
oneDNN convolutions each, at 2.0-3.2 TFLOP/s of the tile units' 5.2 on 2 cores. The extension's
kernel runs a whole block row by row, the intermediate activation in a ring of three rows that
stays in the cache instead of a round trip through memory, and overlaps each block of outputs'
epilogue with the next block's tile products. Measured per layer in a 720p frame on the same
Xeon, alternating with oneDNN in one process: residual blocks 1.3-1.6x faster at 32 channels,
1.2-1.6x at 64 and 1.0-1.3x at 128 (the host's speed drifts); stride-2 convolutions 1.03-1.23x,
transposed ones 1.19-1.24x; the 32 -> 3 layers a tie.

Numerics: bfloat16 products accumulated in float32, as oneDNN's; the intermediate activation is
rounded to bfloat16 as the separate convolutions round it, and the bias, ReLU and residual add
are done in float32 before the one rounding of the output. On the Xeon measured, the 3x3 layers
give the same bits as oneDNN's; the transposed ones sum in another order (a 720p GoPro frame's
output 56.15 / 54.86 dB from float32's, oneDNN's 56.21 / 54.84). tests/test_amx.py holds every
kernel's error to at most 2x that of torch's own bfloat16 convolutions against float64.
"""

from __future__ import annotations

import functools

import torch

from ..errors import env_flag


def runs(dtype: torch.dtype, in_channels: int, out_channels: int) -> bool:
    """The kernels run this 3x3 convolution's channels in `dtype` here: bfloat16, input channels a
    multiple of 32 (any output channels; a residual block's C -> C), a CPU with AMX-BF16 that Linux
    lets this process use, the extension built."""
    from .. import _ext

    if dtype != torch.bfloat16 or out_channels < 1 or not _ext.load():
        return False
    return bool(torch.ops.fastdeblur.amx_runs(dtype, in_channels))


def _pack_taps(w: torch.Tensor) -> torch.Tensor:
    """[K, C, T] float32 taps -> [Kp/32, T, C/32, 2, 16, 16, 2] bfloat16 (Kp: K rounded up to 32, the
    extra output channels zero)."""
    k, c, taps = w.shape
    kp = -(-k // 32) * 32
    full = torch.zeros(taps, c, kp)
    full[..., :k] = w.permute(2, 1, 0)  # [T, C, K]
    # tap, input chunk, pair, of pair, output chunk, output tile, output
    full = full.reshape(taps, c // 32, 16, 2, kp // 32, 2, 16)
    return full.permute(4, 0, 1, 5, 2, 6, 3).to(torch.bfloat16).contiguous()


def pack(weight: torch.Tensor) -> torch.Tensor:
    """[K, C, 3, 3] conv weight -> the kernels' [Kp/32, 9, C/32, 2, 16, 16, 2] bfloat16 (Kp: K rounded
    up to a multiple of 32, the extra output channels zero), in the order the kernels read it: for
    each 32 output channels, each tap (row-major) and each 32 input channels, two tiles (16 output
    channels each) of 16 input channel pairs x 16 output channels x the pair (the tile unit's layout
    for its second operand)."""
    k, c = weight.shape[:2]
    if weight.shape[2:] != (3, 3) or c % 32 or c == 0 or k == 0:
        raise ValueError(f"the AMX kernels run 3x3 convolutions with input channels a multiple of 32, not a "
                         f"{tuple(weight.shape)} weight")
    return _pack_taps(weight.detach().to("cpu", torch.float32).reshape(k, c, 9))


# ConvTranspose2d(C, K, 4, stride=2, padding=1): output row 2i + p reads input rows (i - 1 + p, i + p)
# through these kernel rows (columns alike)
_UP_TAPS = ((3, 1), (2, 0))


def pack_transpose(weight: torch.Tensor) -> torch.Tensor:
    """ConvTranspose2d(C, K, 4, stride=2, padding=1)'s [C, K, 4, 4] weight -> the kernel's [4, Kp/32,
    4, C/32, 2, 16, 16, 2] bfloat16: for each output phase (row parity p, column parity q) its 2x2
    taps, packed as `pack` packs 3x3 ones."""
    c, k = weight.shape[:2]
    if weight.shape[2:] != (4, 4) or c % 32 or c == 0 or k == 0:
        raise ValueError(f"the AMX kernel runs 4x4 transposed convolutions with input channels a multiple of 32, "
                         f"not a {tuple(weight.shape)} weight")
    w = weight.detach().to("cpu", torch.float32).permute(1, 0, 2, 3)  # [K, C, 4, 4]
    phases = [w[:, :, list(rows)][:, :, :, list(cols)].reshape(k, c, 4) for rows in _UP_TAPS for cols in _UP_TAPS]
    return torch.stack([_pack_taps(t) for t in phases])


@functools.cache
def available() -> bool:
    """The kernels run here, and a small block (odd size, row ends, image edges, both the new-tensor
    and the in-place form), small stride-1 and stride-2 convolutions (3 and 40 output channels) and
    a small transposed one match float64 within bfloat16's rounding."""
    if not runs(torch.bfloat16, 32, 32):
        return False
    gen = torch.Generator().manual_seed(0)
    h = torch.rand(2, 5, 37, 32, generator=gen).to(torch.bfloat16)
    w1, w2, w3 = ((torch.rand(k, 32, 3, 3, generator=gen) - 0.5) / 8 for k in (32, 32, 40))
    b1, b2, b3 = (torch.rand(k, generator=gen) for k in (32, 32, 40))
    v = h.permute(0, 3, 1, 2).double()
    conv = torch.nn.functional.conv2d
    with torch.inference_mode():
        t = conv(v, w1.bfloat16().double(), b1.double(), padding=1).relu()
        want = [(v + conv(t, w2.bfloat16().double(), b2.double(), padding=1)).permute(0, 2, 3, 1)] * 2
        got = [residual_block(h, pack(w1), b1, pack(w2), b2), residual_block_(h.clone(), pack(w1), b1, pack(w2), b2)]
        for k, stride in ((3, 1), (40, 2)):
            y = conv(v, w3[:k].bfloat16().double(), b3[:k].double(), stride=stride, padding=1)
            want.append(y.permute(0, 2, 3, 1))
            got.append(conv3x3(h, pack(w3[:k]), b3[:k], stride))
        wt = (torch.rand(32, 40, 4, 4, generator=gen) - 0.5) / 8
        y = torch.nn.functional.conv_transpose2d(v, wt.bfloat16().double(), b3.double(), stride=2, padding=1)
        want.append(y.permute(0, 2, 3, 1))
        got.append(conv_transpose4x4s2(h, pack_transpose(wt), b3))
    tol = 0.05  # values up to ~3: bfloat16 rounding is ~0.01
    return all(g.shape == w.shape and (g.double() - w).abs().max() <= tol for g, w in zip(got, want, strict=True))


def preferred() -> bool:
    """The CPU model runs its bfloat16 residual blocks, 3x3 convolutions (32 or more input channels)
    and transposed convolutions on the kernels by default here: wherever they run
    (FASTDEBLUR_AMX=0 leaves them to oneDNN)."""
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


def conv3x3(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """conv3x3(x) + bias with padding 1 and stride 1 or 2. x: NHWC bfloat16 memory, as [N, H, W, C]
    or a channels_last [N, C, H, W] view (the result takes the same form); u: `pack(w)`; bias: K
    values."""
    return torch.ops.fastdeblur.amx_conv3x3(x, u, bias.float().contiguous(), stride)


def conv_transpose4x4s2(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """ConvTranspose2d(C, K, 4, stride=2, padding=1)(x) + bias: [N, H, W, C] -> [N, 2H, 2W, K] (or the
    channels_last [N, C, H, W] forms); u: `pack_transpose(w)`; bias: K values."""
    return torch.ops.fastdeblur.amx_conv_transpose4x4s2(x, u, bias.float().contiguous())
