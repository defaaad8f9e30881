"""Winograd F(2x2, 3x3) convolutions for the CPU model's residual blocks (csrc/cpu/winograd.cpp).

On x86 CPUs with AVX512-BF16 but no AMX (AMD Zen 4 and 5, Intel Cooper Lake), oneDNN's direct
bfloat16 convolutions already run at the vector units' matrix peak; Winograd F(2x2, 3x3) needs
16 multiplies per 2x2 output tile and channel pair instead of 36. The residual blocks' 3x3
convolutions (C -> C, stride 1) carry 89% of DMPHN's FLOPs. On CPUs with AMX, oneDNN's direct
convolutions on the tile units are faster than this kernel's vector dot products, so they stay.

Numerics: the kernel rounds the transformed input tiles and weights to bfloat16 and accumulates
in float32; tests/test_winograd.py holds its error to at most 2x that of torch's own bfloat16
convolution, against float64.
"""

from __future__ import annotations

import functools

import torch

from ..errors import env_flag

# G of F(2x2, 3x3): U = G g G^T turns a 3x3 kernel into its 4x4 Winograd form.
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def pack(weight: torch.Tensor) -> torch.Tensor:
    """[K, C, 3, 3] conv weight -> the kernel's [16, K/NR, C/2, NR, 2] bfloat16 transformed weight.

    NR (64 or 32 output channels) is the micro-kernel's register block; the pairs of input
    channels are what one vdpbf16ps lane multiplies. The transform runs in float64.
    """
    k, c = weight.shape[:2]
    if weight.shape[2:] != (3, 3) or c % 16 or k % 32:
        raise ValueError(f"Winograd packing needs a [K, C, 3, 3] weight with C % 16 == 0 and K % 32 == 0, "
                         f"got {tuple(weight.shape)}")
    g = torch.tensor(_G, dtype=torch.float64)
    u = torch.einsum("ai,kcij,bj->abkc", g, weight.detach().to("cpu", torch.float64), g).reshape(16, k, c)
    nr = 64 if k % 64 == 0 else 32
    u = u.reshape(16, k // nr, nr, c // 2, 2).permute(0, 1, 3, 2, 4)
    return u.to(torch.bfloat16).contiguous()


@functools.cache
def available() -> bool:
    """The kernel runs here: the extension is built, the CPU has AVX512-BF16, and a small
    convolution (odd size, edge tiles, every epilogue) matches torch's within bfloat16 rounding."""
    from .. import _ext

    if not (_ext.load() and torch.ops.fastdeblur.winograd_available()):
        return False
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 5, 7, 16, generator=gen).bfloat16()
    w = (torch.rand(32, 16, 3, 3, generator=gen) - 0.5).bfloat16()
    b, add = torch.rand(32, generator=gen), torch.rand(1, 5, 7, 32, generator=gen).bfloat16()
    with torch.inference_mode():
        got = conv3x3(x, pack(w), b, relu=True, add=add).double()
        want = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2).double(), w.double(), b.double(), padding=1)
        want = want.relu().permute(0, 2, 3, 1) + add.double()
    return bool((got - want).abs().max() <= 0.05)  # values up to ~5: bfloat16 rounding is ~0.02


def preferred() -> bool:
    """The CPU model runs its bfloat16 residual blocks through Winograd by default here.

    FASTDEBLUR_WINOGRAD=1/0 forces it on (where available) or off; by default it is on where the
    kernel runs and the CPU has no AMX (where oneDNN's direct convolutions are faster).
    """
    if not available():
        return False
    try:
        amx = bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without the probe
        amx = False
    return env_flag("FASTDEBLUR_WINOGRAD", not amx)


def conv3x3(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor, relu: bool = False,
            add: torch.Tensor | None = None) -> torch.Tensor:
    """relu?(conv3x3(x, w) + bias) [+ add], stride 1, padding 1, by Winograd F(2x2, 3x3).

    x: NHWC bfloat16 memory, as an [N, H, W, C] tensor or a channels_last [N, C, H, W] one (the
    result takes the same form); u: `pack(w)`; bias: float32; add: the output's shape and form.
    """
    return torch.ops.fastdeblur.winograd_conv3x3(x, u, bias.float().contiguous(), relu, add)
