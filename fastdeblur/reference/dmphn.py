"""DMPHN and Stack(N)-DMPHN in plain PyTorch: the reference every faster path is judged by.

Written from ../shared/docs/dmphn-spec.md. Module and parameter names are the checkpoint keys of
the authors' files (`encoder_lv1.pkl` holds `layer2.0.weight`, ...), so their weights load as they
are. Patches of one level are one batch through one encoder call: zero padding at patch borders
then comes from the convolution itself, exactly as the authors' per-patch calls had it.
Modules take and return images shifted by -0.5 (the network's own convention).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .patches import Grid, TorchLayout
from .tiled import Footprint, apply_tiled

# Patch count of a level -> its (rows, cols) grid. Level 4's 8 patches are each quadrant's
# top and bottom halves, i.e. a 4x2 grid.
LEVEL_GRIDS: dict[int, Grid] = {1: (1, 1), 2: (2, 1), 4: (2, 2), 8: (4, 2)}


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1)


class ResidualBlock(nn.Sequential):
    """x + conv(relu(conv(x))); as a Sequential so its convs are keyed `.0` and `.2`."""

    def __init__(self, channels: int):
        super().__init__(_conv(channels, channels), nn.ReLU(inplace=True), _conv(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W]
        return x + super().forward(x)


class Encoder(nn.Module):
    """3 -> 32 -> 64 -> 128 channels, 1/4 resolution out."""

    # receptive-field radius 32 input pixels, total stride 4 (tests check both)
    footprint = Footprint(halo=32, align=4, down=4)

    def __init__(self):
        super().__init__()
        self.layer1 = _conv(3, 32)
        self.layer2 = ResidualBlock(32)
        self.layer3 = ResidualBlock(32)
        self.layer5 = _conv(32, 64, stride=2)
        self.layer6 = ResidualBlock(64)
        self.layer7 = ResidualBlock(64)
        self.layer9 = _conv(64, 128, stride=2)
        self.layer10 = ResidualBlock(128)
        self.layer11 = ResidualBlock(128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, 3, H, W] -> [N, 128, H/4, W/4]
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.layer7(self.layer6(self.layer5(x)))
        return self.layer11(self.layer10(self.layer9(x)))


class Decoder(nn.Module):
    """128 channels at 1/4 resolution -> 3 channels at full resolution."""

    # receptive-field radius 8 feature pixels (10 kept), 4 output pixels per input pixel
    footprint = Footprint(halo=10, align=1, up=4)

    def __init__(self):
        super().__init__()
        self.layer13 = ResidualBlock(128)
        self.layer14 = ResidualBlock(128)
        self.layer16 = nn.ConvTranspose2d(128, 64, kernel_size=4, stride=2, padding=1)
        self.layer17 = ResidualBlock(64)
        self.layer18 = ResidualBlock(64)
        self.layer20 = nn.ConvTranspose2d(64, 32, kernel_size=4, stride=2, padding=1)
        self.layer21 = ResidualBlock(32)
        self.layer22 = ResidualBlock(32)
        self.layer24 = _conv(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, 128, h, w] -> [N, 3, 4h, 4w]
        x = self.layer16(self.layer14(self.layer13(x)))
        x = self.layer20(self.layer18(self.layer17(x)))
        return self.layer24(self.layer22(self.layer21(x)))


def multipatch_forward(
    x: torch.Tensor,
    encoders: Sequence[nn.Module],
    decoders: Sequence[nn.Module],
    grids: Sequence[Grid],
    prev_features: Sequence[torch.Tensor] | None = None,
    level2_extra: torch.Tensor | None = None,
    tile: int | None = None,
    layout=TorchLayout,
    keep_features: bool = True,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One DMPHN pass, finest level first. Index i = 0 is level 1 (the whole image).

    x: [N, 3, H, W] shifted image. Level i encodes `patches(x) + R_{i+1}`, adds the finer level's
    features, regroups them onto level i-1's grid and decodes there. `prev_features` (a previous
    Stack stage's) are added after the regroup; `level2_extra` is added to level 2's residual.
    `tile` (pixels) bounds each encoder/decoder call's input; results equal the untiled ones.
    `layout` does the patch split/regroup steps (TorchLayout, or the extension's ops).
    Returns the level-1 output and each level's features (on the next coarser grid), or no
    features with `keep_features=False`: each level's are then freed once the next has used them
    (a whole image's 1/4-resolution features are 32 bytes per pixel in float32 and level).
    """
    rows, cols = max(g[0] for g in grids), max(g[1] for g in grids)
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] % (4 * rows) or x.shape[3] % (4 * cols):
        raise ValueError(f"x must be [N, 3, H, W] with H a multiple of {4 * rows} and W of {4 * cols} (the finest "
                         f"patches, {rows}x{cols} of the image, are downsampled 4x), got {list(x.shape)}; "
                         "fastdeblur.deblur() pads any size")
    residual: torch.Tensor | None = None
    carry: torch.Tensor | None = None
    features: list[torch.Tensor] = [x] * len(encoders) if keep_features else []
    # without autograd, sums land in the encoder's fresh output instead of another whole tensor
    add = torch.Tensor.add_ if not torch.is_grad_enabled() else torch.add
    for i in reversed(range(len(encoders))):
        grid, coarser = grids[i], grids[i - 1] if i else (1, 1)
        inp = layout.split(x, grid, residual)
        residual = None  # each whole-image tensor is let go as soon as it is used
        feat = _call(encoders[i], inp, tile)
        del inp
        if carry is not None:
            feat, carry = add(feat, carry), None
        feat = layout.regroup(feat, grid, coarser)
        if prev_features is not None:
            feat = add(feat, prev_features[i])
        carry = feat
        if keep_features:
            features[i] = feat
        residual = _call(decoders[i], feat, tile and tile // 4)
        if i == 1 and level2_extra is not None:
            residual = add(residual, level2_extra)
    assert residual is not None
    return residual, features


def _call(net: nn.Module, x: torch.Tensor, tile: int | None) -> torch.Tensor:
    return apply_tiled(net, x, tile, getattr(net, "footprint", None))  # tile None or 0: one call


def _check_levels(levels: Sequence[int]) -> tuple[int, ...]:
    levels = tuple(levels)
    if levels not in ((1,), (1, 2), (1, 2, 4), (1, 2, 4, 8)):
        raise ValueError(f"levels must be a prefix of (1, 2, 4, 8), got {levels}")
    return levels


def size_multiple(levels: Sequence[int]) -> tuple[int, int]:
    """(height, width) multiples an input must have: every patch divisible by 4."""
    rows, cols = LEVEL_GRIDS[max(_check_levels(levels))]
    return 4 * rows, 4 * cols


class DMPHN(nn.Module):
    """Deep Multi-Patch Hierarchical Network; `levels` are the patch counts per level.

    Submodules `encoder_lv{l}` / `decoder_lv{l}` match the official checkpoint files.
    """

    def __init__(self, levels: Sequence[int] = (1, 2, 4)):
        super().__init__()
        self.levels = _check_levels(levels)
        for lv in range(1, len(self.levels) + 1):
            self.add_module(f"encoder_lv{lv}", Encoder())
            self.add_module(f"decoder_lv{lv}", Decoder())

    @property
    def size_multiple(self) -> tuple[int, int]:
        return size_multiple(self.levels)

    @property
    def cnn_calls(self) -> int:
        """Encoder and decoder calls per forward, each over the whole image's area."""
        return 2 * len(self.levels)

    def _parts(self) -> tuple[list[nn.Module], list[nn.Module], list[Grid]]:
        n = len(self.levels)
        enc = [getattr(self, f"encoder_lv{lv}") for lv in range(1, n + 1)]
        dec = [getattr(self, f"decoder_lv{lv}") for lv in range(1, n + 1)]
        return enc, dec, [LEVEL_GRIDS[p] for p in self.levels]

    def forward(self, x: torch.Tensor, tile: int | None = None, layout=TorchLayout) -> torch.Tensor:
        """x [N, 3, H, W] = img - 0.5 -> restored - 0.5; `tile` bounds memory (exact)."""
        out, _ = multipatch_forward(x, *self._parts(), tile=tile, layout=layout, keep_features=False)
        return out


class StackDMPHN(nn.Module):
    """Stack(N)-DMPHN: N DMPHN(1-2-4) stages with feature and output links between them.

    Submodules `encoder_s{k}_lv{l}` / `decoder_s{k}_lv{l}` match the official SDNet files.
    Stage k >= 2 adds stage 1's output to its level-2 residual: the published weights were
    trained that way (see the spec).
    """

    levels = (1, 2, 4)

    def __init__(self, stages: int = 4):
        super().__init__()
        if stages < 1:
            raise ValueError(f"stages must be >= 1, got {stages}")
        self.stages = stages
        for k in range(1, stages + 1):
            for lv in (1, 2, 3):
                self.add_module(f"encoder_s{k}_lv{lv}", Encoder())
                self.add_module(f"decoder_s{k}_lv{lv}", Decoder())

    @property
    def size_multiple(self) -> tuple[int, int]:
        return size_multiple(self.levels)

    @property
    def cnn_calls(self) -> int:
        """Encoder and decoder calls per forward, each over the whole image's area."""
        return 2 * len(self.levels) * self.stages

    def forward(self, x: torch.Tensor, tile: int | None = None, layout=TorchLayout) -> torch.Tensor:
        """x [N, 3, H, W] = img - 0.5 -> restored - 0.5; `tile` bounds memory (exact)."""
        grids = [LEVEL_GRIDS[p] for p in self.levels]
        y, feats, first = x, None, None
        for k in range(1, self.stages + 1):
            enc = [getattr(self, f"encoder_s{k}_lv{lv}") for lv in (1, 2, 3)]
            dec = [getattr(self, f"decoder_s{k}_lv{lv}") for lv in (1, 2, 3)]
            y, feats = multipatch_forward(y, enc, dec, grids, feats, first, tile, layout,
                                          keep_features=k < self.stages)  # the next stage's input
            if first is None:
                first = y
        return y
