"""DMPHN on the Triton kernels: each Encoder/Decoder swapped for one that runs fused convolutions.

The multi-patch orchestration (patch split, regroup, cross-level sums, tiling) stays the
reference's own code (reference.dmphn.multipatch_forward), so the fused model computes the same
network from the same weights; what changes is inside each encoder/decoder: NHWC activations,
weights packed once for the implicit GEMMs, bias/ReLU/residual adds in the conv epilogues
(2 kernels per residual block instead of 5 passes), transposed convs as 4 sub-pixel GEMMs.

Each layer kind runs where it measured faster, end to end: benchmarks/layer_choice.py times the
whole 720p forward (fp16, CUDA-graph replay, H200, 2026-12-04; benchmarks/RESULTS.md) with every
layer on Triton (7.34 ms), every layer on cuDNN (10.25 ms), and each kind switched. The Triton
residual blocks win at every width (moving the 32-, 64- or 128-channel blocks to cuDNN costs
2.47, 0.46 and 0.06 ms), so do the transposed convs, the stride-2 conv at 32 channels and the
last conv; the first conv (3 -> 32) is 0.16 ms faster on cuDNN and the stride-2 conv at 64
channels a hair (0.03 ms). That mix ran in 7.15 ms. Per-layer microbenchmarks, synchronized after
every call, had said the opposite for the 64- and 128-channel layers: only the end-to-end
figure decides. Layers left on torch call its convolutions on the same NHWC memory (a
channels_last view, no copies). `fuse_model(model, triton="all")` runs every layer on the
Triton kernels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.conv3x3 import pack_conv3x3_weight
from ..kernels.conv_transpose import pack_conv_transpose_weight
from ..ops.conv import conv3x3_packed, conv_relu_residual_packed, conv_transpose4x4_packed
from ._layers import _convs, _kind, _Layer, swap_cnns

# the layer kinds whose Triton kernels measured faster than cuDNN, end to end (module docstring)
MEASURED_FASTER = frozenset({"rb32", "rb64", "rb128", "conv32_64_s2", "convT128_64", "convT64_32", "conv32_3_s1"})


class _Triton(_Layer):
    """The layer on the Triton kernels: weights packed once for the implicit GEMMs, bias, ReLU and
    the residual add in the conv epilogues."""

    precision = "ieee"  # float32 stays float32; "tf32" trades exactness for speed

    def __init__(self, layer: nn.Module, one_kernel: bool = False):
        super().__init__(layer)
        self.one_kernel = one_kernel and self.op == "rb"  # the whole block in one kernel
        pack = pack_conv_transpose_weight if self.op == "up" else pack_conv3x3_weight
        for i, c in enumerate(_convs(layer), 1):
            self.register_buffer(f"w{i}", pack(c.weight.detach()))
            self.register_buffer(f"b{i}", c.bias.detach().clone())

    def forward(self, h: torch.Tensor, reuse: bool = False) -> torch.Tensor:  # [N, H, W, C] -> [N, H', W', C']
        if self.op == "up":
            return conv_transpose4x4_packed(h, self.w1, self.b1, precision=self.precision)
        if self.op == "conv":
            return conv3x3_packed(h, self.w1, self.b1, stride=self.stride, precision=self.precision)
        if self.one_kernel:
            return conv_relu_residual_packed(h, self.w1, self.b1, self.w2, self.b2, precision=self.precision)
        t = conv3x3_packed(h, self.w1, self.b1, relu=True, precision=self.precision)
        return conv3x3_packed(t, self.w2, self.b2, residual=h, precision=self.precision)


class _Torch(_Layer):
    """The layer left on torch's convolutions (cuDNN measured faster), on the same NHWC memory."""

    def __init__(self, layer: nn.Module):
        super().__init__(layer)
        for i, c in enumerate(_convs(layer), 1):
            self.register_buffer(f"w{i}", c.weight.detach().clone().contiguous(memory_format=torch.channels_last))
            self.register_buffer(f"b{i}", c.bias.detach().clone())

    def forward(self, h: torch.Tensor, reuse: bool = False) -> torch.Tensor:  # [N, H, W, C] -> [N, H', W', C']
        v = h.permute(0, 3, 1, 2)  # channels_last NCHW view: cuDNN's NHWC kernels, no copy
        if self.op == "up":
            y = F.conv_transpose2d(v, self.w1, self.b1, stride=2, padding=1)
        elif self.op == "conv":
            y = F.conv2d(v, self.w1, self.b1, stride=self.stride, padding=1)
        else:
            y = F.conv2d(F.relu_(F.conv2d(v, self.w1, self.b1, padding=1)), self.w2, self.b2, padding=1).add_(v)
        return y.permute(0, 2, 3, 1).contiguous()  # already NHWC memory: contiguous() is free


def _triton_or_torch(triton: frozenset[str] | None) -> Callable[[nn.Module], _Layer]:
    """Layer factory: Triton kernels for the kinds in `triton` (None: every kind; "rb32:one":
    32-channel blocks as one kernel), torch for the rest."""
    def make(layer: nn.Module) -> _Layer:
        kind = _kind(layer)
        if triton is not None and f"{kind}:one" in triton:
            return _Triton(layer, one_kernel=True)
        return _Triton(layer) if triton is None or kind in triton else _Torch(layer)
    return make


def fuse_model(model: nn.Module, triton: str | frozenset[str] = "measured") -> nn.Module:
    """A copy of a DMPHN/StackDMPHN whose encoders and decoders run the Triton kernels.

    Same class, same forward (and so the same patch logic and tiling), same device and dtype.
    triton: "measured" (the layers where the kernels measured faster than cuDNN: MEASURED_FASTER),
    "all", or a set of layer kinds ("rb32", "rb64", "conv3_32_s1", "convT128_64", ...; a residual
    block kind with ":one", e.g. "rb32:one", runs that block as one kernel).
    """
    if triton == "measured":
        kinds: frozenset[str] | None = MEASURED_FASTER
    elif triton == "all":
        kinds = None
    elif isinstance(triton, (set, frozenset)):
        kinds = frozenset(triton)
    else:
        raise ValueError(f"triton must be 'measured', 'all' or a set of layer kinds, got {triton!r}")
    return swap_cnns(model, _triton_or_torch(kinds))
