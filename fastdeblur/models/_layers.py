"""The parts every fused DMPHN shares (Triton on GPUs, oneDNN on CPUs), free of Triton imports.

A fused model is the reference model with each Encoder/Decoder swapped for a _FusedCNN: the same
layers in the same order, each a _Layer that runs on NHWC activations. The multi-patch
orchestration (patch split, regroup, cross-level sums, tiling) stays the reference's own code.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from ..reference.dmphn import Decoder, Encoder, ResidualBlock


def _kind(layer: nn.Module) -> str:
    if isinstance(layer, ResidualBlock):
        return f"rb{layer[0].out_channels}"
    if isinstance(layer, nn.ConvTranspose2d):
        return f"convT{layer.in_channels}_{layer.out_channels}"
    return f"conv{layer.in_channels}_{layer.out_channels}_s{layer.stride[0]}"


class _Layer(nn.Module):
    """One conv, transposed conv or residual block of an Encoder/Decoder on NHWC activations:
    its op ("rb", "up" or "conv"), stride and weights (as buffers, one or two convs).
    forward(h, reuse) may write its result over `h` when `reuse` is true."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.op = "rb" if isinstance(layer, ResidualBlock) else "up" if isinstance(
            layer, nn.ConvTranspose2d) else "conv"
        self.stride = _convs(layer)[0].stride[0]


def _convs(layer: nn.Module) -> list[nn.Module]:
    return [layer[0], layer[2]] if isinstance(layer, ResidualBlock) else [layer]


class _FusedCNN(nn.Module):
    """An Encoder/Decoder whose layers (in `names` order) run one after another on NHWC memory,
    each made from the reference's layer by `make_layer`."""

    names: tuple[str, ...] = ()

    def __init__(self, cnn: nn.Module, make_layer: Callable[[nn.Module], _Layer]):
        super().__init__()
        self.layers = nn.ModuleDict({name: make_layer(getattr(cnn, name)) for name in self.names})

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW in and out, channels_last memory
        h = x.permute(0, 2, 3, 1).contiguous()
        for i, layer in enumerate(self.layers.values()):
            # after the first layer, h is this CNN's own temporary: a layer may write over it
            h = layer(h, reuse=i > 0)
        return h.permute(0, 3, 1, 2)


class FusedEncoder(_FusedCNN):
    """[N, 3, H, W] -> [N, 128, H/4, W/4]."""

    footprint = Encoder.footprint
    names = ("layer1", "layer2", "layer3", "layer5", "layer6", "layer7", "layer9", "layer10", "layer11")


class FusedDecoder(_FusedCNN):
    """[N, 128, h, w] -> [N, 3, 4h, 4w]."""

    footprint = Decoder.footprint
    names = ("layer13", "layer14", "layer16", "layer17", "layer18", "layer20", "layer21", "layer22", "layer24")


def swap_cnns(model: nn.Module, make_layer: Callable[[nn.Module], _Layer]) -> nn.Module:
    """A shallow copy of a DMPHN/StackDMPHN whose Encoders/Decoders are _FusedCNNs of `make_layer`
    layers: same class, same forward (patch logic, tiling), the original model untouched."""
    fused = copy.copy(model)  # shallow: shares nothing we modify below
    fused._modules = dict(model._modules)
    for name, child in model.named_children():
        if isinstance(child, Encoder):
            fused._modules[name] = FusedEncoder(child, make_layer)
        elif isinstance(child, Decoder):
            fused._modules[name] = FusedDecoder(child, make_layer)
    return fused
