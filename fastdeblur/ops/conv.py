"""Convolution ops of DMPHN with fused epilogues: conv3x3, conv_relu_residual, conv_transpose4x4.

    conv3x3(x, w, b, stride, relu, x_add, residual, extra) = act(conv(x + x_add) + b) + residual + extra
    conv_relu_residual(x, w1, b1, w2, b2, extra)          = x + conv2(relu(conv1(x) + b1)) + b2 + extra
                                                            (two kernels, or one with one_kernel=True)
    conv_transpose4x4(x, w, b)                            = ConvTranspose2d(k=4, s=2, p=1)(x) + b

Backends: "triton" (fastdeblur.kernels, registered as torch.library.triton_op so torch.compile
sees through them; on CPU only under TRITON_INTERPRET=1, for tests; the default wherever it
runs); anything else runs torch's convolutions.
Inputs NCHW in any memory format; outputs are channels_last (NHWC memory), what the kernels write.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._backend import choose, triton_usable  # noqa: F401  (triton_usable is part of this module's API)
from ._checks import float_tensor

_registered = False


def _nhwc(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.permute(0, 2, 3, 1).contiguous()


def _register() -> None:
    """Register the Triton launchers as custom ops (once, on first use)."""
    global _registered
    if _registered:
        return
    from ..kernels.conv3x3 import conv3x3_nhwc
    from ..kernels.conv_relu_residual import conv_relu_residual_nhwc
    from ..kernels.conv_transpose import conv_transpose4x4s2_nhwc

    @torch.library.triton_op("fastdeblur::triton_conv3x3", mutates_args=())
    def _conv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, stride: int, relu: bool,
              x_add: torch.Tensor | None, residual: torch.Tensor | None, extra: torch.Tensor | None,
              precision: str) -> torch.Tensor:
        return conv3x3_nhwc(x, w, bias, stride=stride, relu=relu, x_add=x_add, residual=residual, extra=extra,
                            precision=precision)

    @torch.library.triton_op("fastdeblur::triton_conv_transpose4x4", mutates_args=())
    def _convt(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, precision: str) -> torch.Tensor:
        return conv_transpose4x4s2_nhwc(x, w, bias, precision=precision)

    @torch.library.triton_op("fastdeblur::triton_conv_relu_residual", mutates_args=())
    def _block(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
               extra: torch.Tensor | None, precision: str) -> torch.Tensor:
        return conv_relu_residual_nhwc(x, w1, b1, w2, b2, extra, precision=precision)

    # Explicit fake kernels: shapes only. triton_op could trace the launchers itself, but not
    # under Triton's CPU interpreter, where the launch touches real data pointers.
    @_conv.register_fake
    def _conv_fake(x, w, bias, stride, relu, x_add, residual, extra, precision):
        n, h, wd, _ = x.shape
        return x.new_empty(n, (h - 1) // stride + 1, (wd - 1) // stride + 1, w.shape[1])

    @_convt.register_fake
    def _convt_fake(x, w, bias, precision):
        n, h, wd, _ = x.shape
        return x.new_empty(n, 2 * h, 2 * wd, w.shape[1])

    @_block.register_fake
    def _block_fake(x, w1, b1, w2, b2, extra, precision):
        return torch.empty_like(x)

    _registered = True


def conv3x3_packed(x_nhwc: torch.Tensor, w_packed: torch.Tensor, bias: torch.Tensor | None = None, *,
                   stride: int = 1, relu: bool = False, x_add: torch.Tensor | None = None,
                   residual: torch.Tensor | None = None, extra: torch.Tensor | None = None,
                   precision: str = "ieee") -> torch.Tensor:
    """The Triton op on NHWC tensors and a prepacked weight (what the fused model calls)."""
    _register()
    return torch.ops.fastdeblur.triton_conv3x3(x_nhwc, w_packed, bias, stride, relu, x_add, residual, extra,
                                               precision)


def conv_relu_residual_packed(x_nhwc: torch.Tensor, w1_packed: torch.Tensor, b1: torch.Tensor,
                              w2_packed: torch.Tensor, b2: torch.Tensor, extra: torch.Tensor | None = None, *,
                              precision: str = "ieee") -> torch.Tensor:
    """The one-kernel residual block (kernels/conv_relu_residual.py) on NHWC tensors."""
    _register()
    return torch.ops.fastdeblur.triton_conv_relu_residual(x_nhwc, w1_packed, b1, w2_packed, b2, extra, precision)


def conv_transpose4x4_packed(x_nhwc: torch.Tensor, w_packed: torch.Tensor, bias: torch.Tensor | None = None, *,
                             precision: str = "ieee") -> torch.Tensor:
    _register()
    return torch.ops.fastdeblur.triton_conv_transpose4x4(x_nhwc, w_packed, bias, precision)


def _check_args(op: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *,
                transposed: bool = False, stride: int = 1, **adds: torch.Tensor | None) -> None:
    """An InputError that names the argument that does not fit (shape, dtype, device), the same
    on every backend (torch's own error came from deep inside, or broadcasting let a wrong `extra`
    through; a Triton kernel reads a mis-shaped weight as what it is not)."""
    from ..errors import InputError

    for name, t in (("x", x), ("weight", weight), ("bias", bias), *adds.items()):
        if t is not None and not isinstance(t, torch.Tensor):
            raise InputError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if x.ndim != 4:
        raise InputError(f"{op}: x must be [N, C, H, W], got shape {tuple(x.shape)}")
    float_tensor(op, "x", x)
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise InputError(f"{op}: x has no pixels (shape {tuple(x.shape)})")
    if type(stride) is not int or stride not in (1, 2):
        raise InputError(f"{op}: stride must be 1 or 2, got {stride!r}")
    k, form = (4, "[Cin, Cout, 4, 4]") if transposed else (3, "[Cout, Cin, 3, 3]")
    if weight.ndim != 4 or tuple(weight.shape[2:]) != (k, k) or weight.shape[0 if transposed else 1] != x.shape[1]:
        raise InputError(f"{op}: weight must be {form} with Cin = x's {x.shape[1]} channels, got {tuple(weight.shape)}")
    cout = weight.shape[1 if transposed else 0]
    if bias is not None and tuple(bias.shape) != (cout,):
        raise InputError(f"{op}: bias must be [{cout}] (one per output channel), got {tuple(bias.shape)}")
    for name, t in (("weight", weight), ("bias", bias), *adds.items()):  # one dtype and device, as x's
        if t is not None and (t.dtype != x.dtype or t.device != x.device):
            raise InputError(f"{op}: {name} must be x's {x.dtype} on {x.device}, got {t.dtype} on {t.device}")
    n, _, h, w = x.shape
    out = (n, cout, 2 * h, 2 * w) if transposed else (n, cout, (h - 1) // stride + 1, (w - 1) // stride + 1)
    for name, t in adds.items():
        want = tuple(x.shape) if name == "x_add" else out
        if t is not None and tuple(t.shape) != want:
            raise InputError(f"{op}: {name} must be {list(want)} ({'x' if name == 'x_add' else 'the output'}'s shape), "
                             f"got {tuple(t.shape)}")


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, stride: int = 1,
            relu: bool = False, x_add: torch.Tensor | None = None, residual: torch.Tensor | None = None,
            extra: torch.Tensor | None = None, backend: str | None = None) -> torch.Tensor:
    """x [N, Cin, H, W]; weight [Cout, Cin, 3, 3]; residual, extra [N, Cout, Ho, Wo]."""
    _check_args("conv3x3", x, weight, bias, stride=stride, x_add=x_add, residual=residual, extra=extra)
    if choose(backend, x.device, triton=True) == "triton":
        from ..kernels.conv3x3 import pack_conv3x3_weight

        y = conv3x3_packed(_nhwc(x), pack_conv3x3_weight(weight), bias, stride=stride, relu=relu,
                           x_add=_nhwc(x_add), residual=_nhwc(residual), extra=_nhwc(extra))
        return y.permute(0, 3, 1, 2)
    y = F.conv2d(x if x_add is None else x + x_add, weight, bias, stride=stride, padding=1)
    if relu:
        y = F.relu(y)
    if residual is not None:
        y = y + residual
    return y if extra is None else y + extra


def conv_relu_residual(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
                       extra: torch.Tensor | None = None, backend: str | None = None,
                       one_kernel: bool = False) -> torch.Tensor:
    """DMPHN's residual block x [N, C, H, W] -> x + conv2(relu(conv1(x))) (+ extra).

    Triton: two fused kernels, or with `one_kernel` a single kernel that keeps the intermediate
    in a per-tile scratch slab instead of a full tensor (slower end to end on an H200: 8.22 vs
    7.34 ms for DMPHN(1-2-4) at 720p with every 32-channel block in one kernel)."""
    for name, w in (("w1", w1), ("w2", w2)):  # both convolutions keep x's C channels
        if x.ndim == 4 and tuple(w.shape) != (x.shape[1], x.shape[1], 3, 3):
            from ..errors import InputError

            raise InputError(f"conv_relu_residual: {name} must be [C, C, 3, 3] with C = x's {x.shape[1]} channels, "
                             f"got {tuple(w.shape)}")
    _check_args("conv_relu_residual", x, w1, b1, extra=extra)
    _check_args("conv_relu_residual", x, w2, b2)
    if one_kernel and choose(backend, x.device, triton=True) == "triton":
        from ..kernels.conv3x3 import pack_conv3x3_weight

        return conv_relu_residual_packed(_nhwc(x), pack_conv3x3_weight(w1), b1, pack_conv3x3_weight(w2), b2,
                                         _nhwc(extra)).permute(0, 3, 1, 2)
    t = conv3x3(x, w1, b1, relu=True, backend=backend)
    return conv3x3(t, w2, b2, residual=x, extra=extra, backend=backend)


def conv_transpose4x4(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                      backend: str | None = None) -> torch.Tensor:
    """x [N, Cin, H, W]; weight [Cin, Cout, 4, 4] (ConvTranspose2d's) -> [N, Cout, 2H, 2W]."""
    _check_args("conv_transpose4x4", x, weight, bias, transposed=True)
    if choose(backend, x.device, triton=True) == "triton":
        from ..kernels.conv_transpose import pack_conv_transpose_weight

        return conv_transpose4x4_packed(_nhwc(x), pack_conv_transpose_weight(weight), bias).permute(0, 3, 1, 2)
    return F.conv_transpose2d(x, weight, bias, stride=2, padding=1)
