"""DMPHN on the CPU through oneDNN's fused convolutions, without torch.compile.

torch ships the oneDNN ops that inductor's CPU freezing pass emits (`torch.ops.mkldnn`):
convolutions with weights reordered once into oneDNN's blocked layout, and with post-ops: the
ReLU, and the residual add written in place over the block's input. Called eagerly, a residual
block is then 2 oneDNN calls instead of conv, ReLU, conv, add (5 passes, 3 fresh tensors), and
no compile is needed (inductor's takes ~30 s on 2 cores).

Same structure as the Triton model (fused.py): the reference's multi-patch forward, with each
Encoder/Decoder swapped for a chain of layers on NHWC memory (a channels_last NCHW view for
oneDNN, no copies).
"""

from __future__ import annotations

import copy
import functools
import itertools
import platform

import torch
from torch import nn

from ..reference.dmphn import ResidualBlock
from . import amx, small_k, winograd
from ._layers import _convs, _Layer, swap_cnns

_PAD, _ONE = [1, 1], [1, 1]


@functools.cache
def onednn_available(dtype: torch.dtype = torch.float32) -> bool:
    """torch has oneDNN's fused-convolution ops for `dtype` on this x86 CPU, and they compute
    what torch does.

    The ops are internal to torch (inductor's), so a quick self-check on a tiny input guards
    against another torch version changing them: if it fails, deblur() runs the reference.
    bfloat16 needs AVX512-BW/VL/DQ or AVX-NE-CONVERT (oneDNN refuses it on AVX2-only CPUs such
    as AMD's Zen 3); the check runs in `dtype`, so such a CPU answers False for bfloat16 only.
    Other CPU architectures keep the reference path (not measured there).
    """
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return False
    try:
        with torch.inference_mode():
            gen = torch.Generator().manual_seed(0)
            rb = ResidualBlock(4).requires_grad_(False)
            up = nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1).requires_grad_(False)
            for m in (rb, up):
                for t in m.parameters():
                    t.copy_(torch.rand(t.shape, generator=gen) - 0.5)
            rb, up = rb.to(dtype), up.to(dtype)
            x = torch.rand(1, 5, 6, 4, generator=gen).to(dtype)  # NHWC
            v = x.permute(0, 3, 1, 2)
            # float32 copies of the same (rounded) weights: Module.float() would convert rb and up
            # themselves, and the oneDNN twins below would then be checked in float32
            want = tuple(copy.deepcopy(m).float()(v.float()) for m in (rb, up))
            got = (_OneDNN(rb)(x.clone(), reuse=True).permute(0, 3, 1, 2), _OneDNN(up)(x).permute(0, 3, 1, 2))
        atol = 1e-5 if dtype == torch.float32 else 0.02  # bfloat16's rounding: ~0.012 on these values (< 2.1)
        return all(torch.allclose(g.float(), w, rtol=atol, atol=atol) for g, w in zip(got, want, strict=True))
    except (RuntimeError, AttributeError, TypeError):
        return False


class _OneDNN(_Layer):
    """The layer as oneDNN convolutions: weights reordered once, ReLU and residual add fused; a
    residual block or transposed convolution on the extension's Winograd kernels instead where
    `use_winograd` says so (None: `winograd.preferred`), and otherwise, in bfloat16, a residual
    block, a 3x3 convolution with 32 or more input channels or a transposed convolution on its AMX
    kernels where `use_amx` says so (None: `amx.preferred`)."""

    def __init__(self, layer: nn.Module, use_winograd: bool | None = None, use_small_k: bool | None = None,
                 use_amx: bool | None = None):
        super().__init__(layer)
        self._stride = [self.stride, self.stride]
        convs = _convs(layer)
        # residual blocks (complex F(8x8, 3x3) in bfloat16, F(6x6, 3x3) in float32), transposed
        # convolutions (F(3x3, 2x2) phases) and 3x3 stride-2 convolutions (polyphase, F(3, 2))
        # through Winograd where it beats oneDNN (winograd.py); the 3-channel convolutions stay
        # on oneDNN (or the small-K kernel below)
        self.winograd: tuple[torch.Tensor, ...] | None = None
        c1, dt = convs[0], convs[0].weight.dtype
        stride2 = self.op == "conv" and self.stride == 2 and tuple(c1.kernel_size) == (3, 3)
        if (self.op in ("rb", "up") or stride2) and winograd.register_block(dt, c1.in_channels, c1.out_channels) and (
                winograd.preferred(dt) if use_winograd is None else use_winograd and winograd.available(dt)):
            pack = {"rb": winograd.pack, "up": winograd.pack_transpose, "conv": winograd.pack_stride2}[self.op]
            self.winograd = tuple(t for c in convs for t in (pack(c.weight, dt), c.bias.detach().float()))
        # the decoders' last layer (32 -> 3): the extension's few-output-channel kernel (small_k.py)
        self.small_k: tuple[torch.Tensor, torch.Tensor] | None = None
        if (self.op == "conv" and self.stride == 1 and tuple(c1.kernel_size) == (3, 3)
                and small_k.runs(dt, c1.in_channels, c1.out_channels)
                and (small_k.preferred(dt) if use_small_k is None else use_small_k and small_k.available(dt))):
            self.small_k = (small_k.pack(c1.weight, dt), c1.bias.detach().float())
        # in bfloat16 on a CPU with AMX, a residual block (both convolutions in one pass), a 3x3
        # convolution (stride 1 or 2; the encoders' stride-2 ones, the decoders' 32 -> 3) or a
        # transposed one not on the kernels above: on the tile units (amx.py)
        self.amx: tuple[torch.Tensor, ...] | None = None
        on_amx = self.op == "rb" or (self.op == "conv" and tuple(c1.kernel_size) == (3, 3) and self.stride in (1, 2))
        on_amx = on_amx or (self.op == "up" and tuple(c1.kernel_size) == (4, 4) and tuple(c1.padding) == (1, 1))
        if (on_amx and self.winograd is None and self.small_k is None
                and amx.runs(dt, c1.in_channels, c1.out_channels)
                and (amx.preferred() if use_amx is None else use_amx and amx.available())):
            packer = amx.pack_transpose if self.op == "up" else amx.pack
            self.amx = tuple(t for c in convs for t in (packer(c.weight), c.bias.detach().float()))
        self.weights = []  # oneDNN-layout tensors: not buffers (they have no storage to move)
        for i, c in enumerate(convs, 1):
            self.register_buffer(f"b{i}", c.bias.detach().clone())
            if self.winograd is not None or self.small_k is not None or self.amx is not None:  # no oneDNN copy
                continue
            w = c.weight.detach()
            if self.op == "up":
                self.weights.append(
                    torch.ops.mkldnn._reorder_convolution_transpose_weight(w, _PAD, [0, 0], [2, 2], _ONE, 1))
            else:
                self.weights.append(torch.ops.mkldnn._reorder_convolution_weight(w, _PAD, self._stride, _ONE, 1))

    def forward(self, h: torch.Tensor, reuse: bool = False) -> torch.Tensor:  # [N, H, W, C] -> [N, H', W', C']
        if self.small_k is not None:
            return small_k.conv3x3(h, *self.small_k)
        if self.winograd is not None and self.op == "up":
            return winograd.conv_transpose4x4s2(h, *self.winograd)
        if self.winograd is not None and self.op == "conv":
            return winograd.conv3x3s2(h, *self.winograd)
        if self.amx is not None and self.op == "conv":
            return amx.conv3x3(h, *self.amx, stride=self.stride)
        if self.amx is not None and self.op == "up":
            return amx.conv_transpose4x4s2(h, *self.amx)
        if self.amx is not None:
            return amx.residual_block_(h, *self.amx) if reuse else amx.residual_block(h, *self.amx)
        if self.winograd is not None:
            u1, b1, u2, b2 = self.winograd
            t = winograd.conv3x3(h, u1, b1, relu=True)
            return winograd.conv3x3_add_(h, t, u2, b2) if reuse else winograd.conv3x3(t, u2, b2, add=h)
        v = h.permute(0, 3, 1, 2)  # channels_last NCHW view
        mkl = torch.ops.mkldnn
        if self.op == "up":
            y = mkl._convolution_transpose_pointwise(v, self.weights[0], self.b1, _PAD, [0, 0], [2, 2], _ONE, 1,
                                                     "none", [], "")
        elif self.op == "conv":
            y = mkl._convolution_pointwise(v, self.weights[0], self.b1, _PAD, self._stride, _ONE, 1, "none", [], "")
        else:
            t = mkl._convolution_pointwise(v, self.weights[0], self.b1, _PAD, _ONE, _ONE, 1, "relu", [], "")
            if reuse:  # v + conv(t), accumulated into v's memory by oneDNN's sum post-op
                y = mkl._convolution_pointwise_(v, t, self.weights[1], self.b2, _PAD, _ONE, _ONE, 1, "add", 1.0,
                                                None, [], None)
            else:
                y = mkl._convolution_pointwise(t, v, self.weights[1], self.b2, _PAD, _ONE, _ONE, 1, "add", 1.0,
                                               None, [], None)
        return y.permute(0, 2, 3, 1).contiguous()  # NHWC memory already: free


# Peak memory of a whole-image forward of this model per pixel, above the process's baseline, by
# dtype and by whether the residual blocks run on the Winograd kernels: linear in the pixels,
# measured from 640x480 to 4032x3024 with the block cache, with a margin. On the 2-core Zen 4:
# bfloat16 206 B/px on Winograd, 239 on oneDNN; float32 388 and 452. On a 2-core Xeon with AMX
# (2026-12-06), where bfloat16 runs on oneDNN by default: bfloat16 244-302 B/px on oneDNN (until
# then its figure was Winograd's 256, which a 1080p frame passed at 285), 207-218 on Winograd;
# float32 344-400 on Winograd, 400-477 on oneDNN. The reference forward needs ~3.5x more
# (api._FORWARD_BYTES_PER_PX), so with these figures deblur() runs a 4032x3024 photo whole in
# bfloat16 on Winograd under the default 3 GiB budget instead of tiling it.
WHOLE_BYTES_PER_PX = {(torch.bfloat16, True): 256, (torch.bfloat16, False): 352,
                      (torch.float32, True): 480, (torch.float32, False): 560}


def whole_bytes_per_px(dtype: torch.dtype, on_winograd: bool | None = None) -> int | None:
    """WHOLE_BYTES_PER_PX for `dtype`, on the Winograd kernels or not (None: as the twin built
    here by default runs, `winograd.preferred`); None for a dtype the twin does not run."""
    if on_winograd is None:
        on_winograd = winograd.preferred(dtype)
    return WHOLE_BYTES_PER_PX.get((dtype, on_winograd))


def onednn_model(model: nn.Module, use_winograd: bool | None = None, use_small_k: bool | None = None,
                 use_amx: bool | None = None) -> nn.Module:
    """A copy of a CPU DMPHN/StackDMPHN (float32 or bfloat16) on oneDNN's fused convolutions.

    Same class, forward and tiling; the weights are reordered for oneDNN once, here, so build it
    after the model has its final dtype. `use_winograd`: run the residual blocks and transposed
    convolutions through the extension's Winograd kernels (where they run; models/winograd.py);
    None: where they are faster (`winograd.preferred(dtype)`, FASTDEBLUR_WINOGRAD).
    `use_small_k`: run the 3x3 convolutions with 1-4 output channels (the decoders' last layer)
    through the extension's kernel for them (where it runs; models/small_k.py); None: by default
    there (`small_k.preferred(dtype)`: not bfloat16 on AMX CPUs). `use_amx`: run the bfloat16
    layers on none of those kernels, all but the encoders' 3-channel first ones, through the
    extension's AMX kernels (where they run; models/amx.py); None: wherever they run
    (`amx.preferred()`, FASTDEBLUR_AMX).
    """
    first = next(itertools.chain(model.parameters(), model.buffers()))
    if first.device.type != "cpu":
        raise ValueError(f"onednn_model runs on the CPU; the model is on {first.device}")
    if not onednn_available(first.dtype):
        raise RuntimeError(f"oneDNN's fused convolutions do not run {first.dtype} on this machine "
                           "(no oneDNN in this torch build, or a CPU without the instructions)")
    twin = swap_cnns(model, functools.partial(_OneDNN, use_winograd=use_winograd, use_small_k=use_small_k,
                                              use_amx=use_amx))
    on_winograd = any(m.winograd is not None for m in twin.modules() if isinstance(m, _OneDNN))
    # deblur()'s tiling reads it (api.auto_tile)
    twin.whole_bytes_per_px = whole_bytes_per_px(first.dtype, on_winograd)
    return twin
