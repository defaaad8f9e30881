"""DMPHN on the Triton kernels: each Encoder/Decoder swapped for one that runs fused convolutions.

The multi-patch orchestration (patch split, regroup, cross-level sums, tiling) stays the
reference's own code (reference.dmphn.multipatch_forward), so the fused model computes the same
network from the same weights; what changes is inside each encoder/decoder: NHWC activations,
weights packed once for the implicit GEMMs, bias/ReLU/residual adds in the conv epilogues
(2 kernels per residual block instead of 5 passes), transposed convs as 4 sub-pixel GEMMs.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..kernels.conv3x3 import pack_conv3x3_weight
from ..kernels.conv_transpose import pack_conv_transpose_weight
from ..ops.conv import conv3x3_packed, conv_transpose4x4_packed
from ..reference.dmphn import Decoder, Encoder, ResidualBlock


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


class _FusedCNN(nn.Module):
    precision = "ieee"  # float32 stays float32; "tf32" trades exactness for speed

    def _rb(self, h: torch.Tensor, p: _Packed) -> torch.Tensor:  # h [N, H, W, C]
        t = conv3x3_packed(h, p.w1, p.b1, relu=True, precision=self.precision)
        return conv3x3_packed(t, p.w2, p.b2, residual=h, precision=self.precision)

    def _conv(self, h: torch.Tensor, p: _Packed, stride: int = 1) -> torch.Tensor:
        return conv3x3_packed(h, p.w, p.b, stride=stride, precision=self.precision)

    def _up(self, h: torch.Tensor, p: _Packed) -> torch.Tensor:
        return conv_transpose4x4_packed(h, p.w, p.b, precision=self.precision)


class FusedEncoder(_FusedCNN):
    footprint = Encoder.footprint

    def __init__(self, enc: Encoder):
        super().__init__()
        self.layers = nn.ModuleDict({name: _Packed(getattr(enc, name)) for name in (
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

    def __init__(self, dec: Decoder):
        super().__init__()
        self.layers = nn.ModuleDict({name: _Packed(getattr(dec, name)) for name in (
            "layer13", "layer14", "layer16", "layer17", "layer18", "layer20", "layer21", "layer22", "layer24")})

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, 128, h, w] -> [N, 3, 4h, 4w], channels_last
        p = self.layers
        h = self._rb(self._rb(x.permute(0, 2, 3, 1).contiguous(), p["layer13"]), p["layer14"])
        h = self._up(h, p["layer16"])
        h = self._rb(self._rb(h, p["layer17"]), p["layer18"])
        h = self._up(h, p["layer20"])
        h = self._rb(self._rb(h, p["layer21"]), p["layer22"])
        return self._conv(h, p["layer24"]).permute(0, 3, 1, 2)


def fuse_model(model: nn.Module) -> nn.Module:
    """A copy of a DMPHN/StackDMPHN whose encoders and decoders run the Triton kernels.

    Same class, same forward (and so the same patch logic and tiling), same device and dtype.
    """
    fused = copy.copy(model)  # shallow: shares nothing we modify below
    fused._modules = dict(model._modules)
    for name, child in model.named_children():
        if isinstance(child, Encoder):
            fused._modules[name] = FusedEncoder(child)
        elif isinstance(child, Decoder):
            fused._modules[name] = FusedDecoder(child)
    return fused
