"""Start a DMPHN or Stack(N) at the identity: out == in, exactly, before the first step.

A DMPHN's decoder writes the image, not a correction to it, so a network trained from the usual
random start first has to learn to hand its input through: the 2-core CPU run of 2026-11-28 took
about 1,500 steps (6,000 crops) to get back to the blurry input's own loss, before any deblurring.

The network is linear apart from the inside of its residual blocks (the spec: no activation after
a residual add or a stand-alone conv), so the identity can be built into the weights:
- every residual block's second conv starts at zero (the block is then x -> x; its first conv
  keeps its random start and gets gradients from the first step on);
- the encoder keeps the three colours in channels 0-2 at full resolution (layer1), folds each
  2x2 block of pixels into channels (space-to-depth) at each stride-2 conv: 12 channels at 1/2,
  48 at 1/4 resolution (layer5, layer9);
- the decoder's transposed convs unfold them again (depth-to-space: layer16, layer20);
- the last decoder's layer24 reads the colours back, scaled by 1 / (how many times the carried
  image was summed into its features); the coarser levels' layer24 start at zero, so their
  residuals R start as "no correction".
The other channels keep PyTorch's random start, and the carried channels read only carried ones,
so the output is the input whatever the random channels hold; all of them train from step one.
"""

from __future__ import annotations

import torch
from torch import nn

from ..reference import DMPHN, StackDMPHN
from ..reference.dmphn import Decoder, Encoder, ResidualBlock

_OFFSETS = ((0, 0), (0, 1), (1, 0), (1, 1))  # (dy, dx) of a 2x2 block; channel = 4 * c + index


@torch.no_grad()
def _fold(conv: nn.Conv2d, carried: int) -> None:
    """Stride-2 3x3 conv: out[4c + k](i, j) = in[c](2i + dy_k, 2j + dx_k) for c < carried."""
    conv.weight[: 4 * carried] = 0
    conv.bias[: 4 * carried] = 0
    for c in range(carried):
        for k, (dy, dx) in enumerate(_OFFSETS):
            conv.weight[4 * c + k, c, 1 + dy, 1 + dx] = 1  # padding 1: tap 1 + d is pixel 2i + d


@torch.no_grad()
def _unfold(convt: nn.ConvTranspose2d, carried: int) -> None:
    """4x4 stride-2 padding-1 transposed conv: out[c](2i + dy_k, 2j + dx_k) = in[4c + k](i, j)."""
    convt.weight[:, :carried] = 0  # weight [in, out, kh, kw]; output y = 2i - 1 + tap
    convt.bias[:carried] = 0
    for c in range(carried):
        for k, (dy, dx) in enumerate(_OFFSETS):
            convt.weight[4 * c + k, c, 1 + dy, 1 + dx] = 1


@torch.no_grad()
def _pick(conv: nn.Conv2d, channels: int, scale: float) -> None:
    """3x3 conv: out[c] = scale * in[c] for c < channels (the centre tap)."""
    conv.weight[:channels] = 0
    conv.bias[:channels] = 0
    for c in range(channels):
        conv.weight[c, c, 1, 1] = scale


@torch.no_grad()
def _identity_pair(enc: Encoder, dec: Decoder, scale: float) -> None:
    for m in (*enc.modules(), *dec.modules()):
        if isinstance(m, ResidualBlock):
            m[2].weight.zero_()
            m[2].bias.zero_()
    _pick(enc.layer1, 3, 1.0)
    _fold(enc.layer5, 3)
    _fold(enc.layer9, 12)
    _unfold(dec.layer16, 12)
    _unfold(dec.layer20, 3)
    _pick(dec.layer24, 3, scale)


def identity_init(model: nn.Module) -> nn.Module:
    """Set `model`'s weights (in place) so that model(x) == x; returns it. See the module notes."""
    if isinstance(model, DMPHN):
        n = len(model.levels)
        # coarse levels return R = 0, so each level adds the carried image to the features once:
        # level 1 decodes n copies of it
        for lv in range(1, n + 1):
            _identity_pair(getattr(model, f"encoder_lv{lv}"), getattr(model, f"decoder_lv{lv}"),
                           1.0 / n if lv == 1 else 0.0)
        return model
    if isinstance(model, StackDMPHN):
        # copies of the carried image in each stage's level-3/2/1 features (the spec's sums; coarse
        # residuals 0, every stage's input and output the image): stage 1 as DMPHN(1-2-4); stage
        # k >= 2 adds its own encoders' copies to the previous stage's sums, and its level 1 sees
        # y + R2 = y + Y^1, two copies
        f3 = f2 = f1 = 0
        for k in range(1, model.stages + 1):
            f3 = f3 + 1
            f2 = f2 + 1 + f3
            f1 = f1 + (2 if k > 1 else 1) + f2
            for lv in (1, 2, 3):
                _identity_pair(getattr(model, f"encoder_s{k}_lv{lv}"), getattr(model, f"decoder_s{k}_lv{lv}"),
                               1.0 / f1 if lv == 1 else 0.0)
        return model
    raise TypeError(f"identity_init takes a DMPHN or StackDMPHN, got {type(model).__name__}")
