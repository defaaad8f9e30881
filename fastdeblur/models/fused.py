"""DMPHN on the Triton kernels: each Encoder/Decoder swapped for one that runs fused convolutions.

The multi-patch orchestration (patch split, regroup, cross-level sums, tiling) stays the
reference's own code (reference.dmphn.multipatch_forward), so the fused model computes the same
network from the same weights; what changes is inside each encoder/decoder: NHWC activations,
weights packed once for the implicit GEMMs, bias/ReLU/residual adds in the conv epilogues
(2 kernels per residual block instead of 5 passes), transposed convs as 4 sub-pixel GEMMs.

Each layer runs where it measured faster. On an H200 (fp16, 720p shapes, one run of
benchmarks/tune_kernels.py and bench_kernels.py; benchmarks/RESULTS.md) the fused 32-channel
residual block beat cuDNN's conv/ReLU/conv/add (0.283 vs 0.424 ms), while cuDNN won every other
layer: 64- and 128-channel blocks (0.222 vs 0.248, 0.136 vs 0.225 ms), the stride-2 convs, the
transposed convs and the 3-channel ends. Those layers call torch's convolutions on the same NHWC
memory (a channels_last view, no copies). `fuse_model(model, triton="all")` runs every layer on
the Triton kernels.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.conv3x3 import pack_conv3x3_weight
from ..kernels.conv_transpose import pack_conv_transpose_weight
from ..ops.conv import conv3x3_packed, conv_transpose4x4_packed
from ..reference.dmphn import Decoder, Encoder, ResidualBlock

# the layer kinds whose Triton kernels measured faster than cuDNN (see the module docstring)
MEASURED_FASTER = frozenset({"rb32"})


def _kind(layer: nn.Module) -> str:
    if isinstance(layer, ResidualBlock):
        return f"rb{layer[0].out_channels}"
    if isinstance(layer, nn.ConvTranspose2d):
        return f"convT{layer.in_channels}_{layer.out_channels}"
    return f"conv{layer.in_channels}_{layer.out_channels}_s{layer.stride[0]}"


class _Torch(nn.Module):
    """A layer left on torch's convolutions (cuDNN measured faster): weights as buffers, NHWC in/out."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.kind = "rb" if isinstance(layer, ResidualBlock) else "up" if isinstance(
            layer, nn.ConvTranspose2d) else "conv"
        convs = [layer[0], layer[2]] if self.kind == "rb" else [layer]
        for i, c in enumerate(convs, 1):
            self.register_buffer(f"w{i}", c.weight.detach().clone().contiguous(memory_format=torch.channels_last))
            self.register_buffer(f"b{i}", c.bias.detach().clone())
        self.stride = convs[0].stride[0]

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [N, H, W, C] -> [N, H', W', C']
        v = h.permute(0, 3, 1, 2)  # channels_last NCHW view: cuDNN's NHWC kernels, no copy
        if self.kind == "up":
            y = F.conv_transpose2d(v, self.w1, self.b1, stride=2, padding=1)
        elif self.kind == "conv":
            y = F.conv2d(v, self.w1, self.b1, stride=self.stride, padding=1)
        else:
            y = F.conv2d(F.relu_(F.conv2d(v, self.w1, self.b1, padding=1)), self.w2, self.b2, padding=1).add_(v)
        return y.permute(0, 2, 3, 1).contiguous()  # already NHWC memory: contiguous() is free


class _Packed(nn.Module):
    """Packed weights of one conv (or both convs of a residual block), as buffers."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        if isinstance(layer, ResidualBlock):
            self.register_buffer("w1", pack_conv3x3_weight(layer[0].weight.detach()))
            self.register_buffer("b1", layer[0].bias.detach().clone())
            self.register_buffer("w2", pack_conv3x3_weight(layer[2].weight.detach()))
            self.register_buffer("b2", layer[2].bias.detach().clone())
        elif isinstance(layer, nn.ConvTranspose2d):
            self.register_buffer("w", pack_conv_transpose_weight(layer.weight.detach()))
            self.register_buffer("b", layer.bias.detach().clone())
        else:
            self.register_buffer("w", pack_conv3x3_weight(layer.weight.detach()))
            self.register_buffer("b", layer.bias.detach().clone())


def _layer(layer: nn.Module, triton: frozenset[str] | None) -> nn.Module:
    """The layer on the Triton kernels if its kind is in `triton` (None: every kind), else on torch."""
    return _Packed(layer) if triton is None or _kind(layer) in triton else _Torch(layer)


class _FusedCNN(nn.Module):
    precision = "ieee"  # float32 stays float32; "tf32" trades exactness for speed

    def _rb(self, h: torch.Tensor, p: _Packed) -> torch.Tensor:  # h [N, H, W, C]
        if isinstance(p, _Torch):
            return p(h)
        t = conv3x3_packed(h, p.w1, p.b1, relu=True, precision=self.precision)
        return conv3x3_packed(t, p.w2, p.b2, residual=h, precision=self.precision)

    def _conv(self, h: torch.Tensor, p: _Packed, stride: int = 1) -> torch.Tensor:
        if isinstance(p, _Torch):
            return p(h)
        return conv3x3_packed(h, p.w, p.b, stride=stride, precision=self.precision)

    def _up(self, h: torch.Tensor, p: _Packed) -> torch.Tensor:
        if isinstance(p, _Torch):
            return p(h)
        return conv_transpose4x4_packed(h, p.w, p.b, precision=self.precision)


class FusedEncoder(_FusedCNN):
    footprint = Encoder.footprint

    def __init__(self, enc: Encoder, triton: frozenset[str] | None = None):
        super().__init__()
        self.layers = nn.ModuleDict({name: _layer(getattr(enc, name), triton) for name in (
            "layer1", "layer2", "layer3", "layer5", "layer6", "layer7", "layer9", "layer10", "layer11")})

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, 3, H, W] -> [N, 128, H/4, W/4], channels_last
        p = self.layers
        h = self._conv(x.permute(0, 2, 3, 1).contiguous(), p["layer1"])
        h = self._rb(self._rb(h, p["layer2"]), p["layer3"])
        h = self._conv(h, p["layer5"], stride=2)
        h = self._rb(self._rb(h, p["layer6"]), p["layer7"])
        h = self._conv(h, p["layer9"], stride=2)
        h = self._rb(self._rb(h, p["layer10"]), p["layer11"])
        return h.permute(0, 3, 1, 2)


class FusedDecoder(_FusedCNN):
    footprint = Decoder.footprint

    def __init__(self, dec: Decoder, triton: frozenset[str] | None = None):
        super().__init__()
        self.layers = nn.ModuleDict({name: _layer(getattr(dec, name), triton) for name in (
            "layer13", "layer14", "layer16", "layer17", "layer18", "layer20", "layer21", "layer22", "layer24")})

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, 128, h, w] -> [N, 3, 4h, 4w], channels_last
        p = self.layers
        h = self._rb(self._rb(x.permute(0, 2, 3, 1).contiguous(), p["layer13"]), p["layer14"])
        h = self._up(h, p["layer16"])
        h = self._rb(self._rb(h, p["layer17"]), p["layer18"])
        h = self._up(h, p["layer20"])
        h = self._rb(self._rb(h, p["layer21"]), p["layer22"])
        return self._conv(h, p["layer24"]).permute(0, 3, 1, 2)


def fuse_model(model: nn.Module, triton: str | frozenset[str] = "measured") -> nn.Module:
    """A copy of a DMPHN/StackDMPHN whose encoders and decoders run the Triton kernels.

    Same class, same forward (and so the same patch logic and tiling), same device and dtype.
    triton: "measured" (the layers where the kernels measured faster than cuDNN: MEASURED_FASTER),
    "all", or a set of layer kinds ("rb32", "rb64", "conv3_32_s1", "convT128_64", ...).
    """
    if triton == "measured":
        kinds: frozenset[str] | None = MEASURED_FASTER
    elif triton == "all":
        kinds = None
    elif isinstance(triton, (set, frozenset)):
        kinds = frozenset(triton)
    else:
        raise ValueError(f"triton must be 'measured', 'all' or a set of layer kinds, got {triton!r}")
    fused = copy.copy(model)  # shallow: shares nothing we modify below
    fused._modules = dict(model._modules)
    for name, child in model.named_children():
        if isinstance(child, Encoder):
            fused._modules[name] = FusedEncoder(child, kinds)
        elif isinstance(child, Decoder):
            fused._modules[name] = FusedDecoder(child, kinds)
    return fused
