"""Exact FLOP counts of a model's convolutions for an input size (2 FLOP per multiply-add).

Counted by running the model on the meta device with hooks, so the count follows the code:
a 3x3 conv costs 2*Cin*Cout*9 per output pixel, a 4x4 stride-2 transposed conv 2*Cin*Cout*16 per
input pixel. Biases, ReLUs and adds (under 0.1%) are not counted. DMPHN: 458 GFLOP per level per
1280x720 frame (the spec's figure).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def conv_flops(model: nn.Module, height: int, width: int, batch: int = 1, channels: int = 3) -> int:
    """FLOPs of `model`'s convolutions on a [batch, channels, height, width] input (an image by
    default; a layer's own channel count for one layer)."""
    total = 0

    def hook(mod, inputs, output):
        nonlocal total
        cin, cout = mod.in_channels, mod.out_channels
        k = mod.kernel_size[0] * mod.kernel_size[1]
        pixels = (inputs[0] if isinstance(mod, nn.ConvTranspose2d) else output)[0, 0].numel()
        total += 2 * cin * cout * k * pixels * output.shape[0]

    meta = copy.deepcopy(model).to("meta")
    handles = [m.register_forward_hook(hook) for m in meta.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            meta(torch.empty(batch, channels, height, width, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return total


if __name__ == "__main__":
    from fastdeblur.reference import DMPHN, StackDMPHN

    for name, m in (("DMPHN(1-2-4)", DMPHN((1, 2, 4))), ("DMPHN(1-2-4-8)", DMPHN((1, 2, 4, 8))),
                    ("Stack(4)", StackDMPHN(4))):
        print(f"{name:16} {conv_flops(m, 720, 1280) / 1e9:8.1f} GFLOP per 1280x720 frame")
