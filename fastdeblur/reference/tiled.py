"""Exact tiling of DMPHN's convolutional parts, so memory stays bounded on any image size.

DMPHN is a fixed arrangement of patches around plain CNNs (encoders, decoders). Tiling the whole
network would move its patch borders and leave seams; tiling each CNN call instead, with a halo
as wide as its receptive field, gives the same numbers as the untiled call (up to float
reassociation). Only the small per-level tensors (1/4-resolution features, residuals) are held
whole; the 32-channel full-resolution activations exist one tile at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import nn

from .patches import memory_format_of


@dataclass(frozen=True)
class Footprint:
    """How a CNN maps input pixels to output pixels, in input-pixel units."""

    halo: int  # receptive-field radius: input pixels needed beyond a tile's core on each side
    align: int  # tile cores start at multiples of this (the network's total stride)
    up: int = 1  # output pixels per input pixel (decoder: 4)
    down: int = 1  # input pixels per output pixel (encoder: 4)


# Progress of the forward running in this context: told the work each CNN call (or tile) has
# just done, as the full-resolution pixel area it covered (fastdeblur.api.run_model's `progress`)
progress_sink: ContextVar[Callable[[int], None] | None] = ContextVar("fastdeblur_progress", default=None)


def _done(fp: Footprint, batch: int, h: int, w: int) -> None:
    if torch.compiler.is_compiling():  # torch.compile cannot trace ContextVar.get: it would split the graph
        return
    sink = progress_sink.get()
    if sink is not None:
        sink(batch * h * w * fp.up * fp.up)  # input pixels -> full-resolution pixels (decoder: 16 each)


def _spans(length: int, core: int, align: int) -> list[tuple[int, int]]:
    core = max(align, core // align * align)
    return [(s, min(s + core, length)) for s in range(0, length, core)]


def apply_tiled(net: nn.Module, x: torch.Tensor, tile: int | None, fp: Footprint | None) -> torch.Tensor:
    """net(x) for x [N, C, H, W], computed on input crops of at most about `tile` pixels a side.
    Without a footprint (a CNN of the user's own) only whole calls are possible, and they report
    no progress."""
    h, w = x.shape[-2:]
    if not tile or (h <= tile and w <= tile):
        y = net(x)
        if fp is not None:
            _done(fp, x.shape[0], h, w)
        return y
    if fp is None:
        raise ValueError(f"{type(net).__name__} has no `footprint` (halo and stride), so it cannot be tiled")
    core = tile - 2 * fp.halo
    if core < fp.align:
        raise ValueError(f"tile {tile} is too small for a halo of {fp.halo} pixels")
    def scale(n: int) -> int:  # input pixels -> output pixels
        return n * fp.up // fp.down

    out = None
    for y0, y1 in _spans(h, core, fp.align):
        cy0, cy1 = max(0, y0 - fp.halo), min(h, y1 + fp.halo)
        for x0, x1 in _spans(w, core, fp.align):
            cx0, cx1 = max(0, x0 - fp.halo), min(w, x1 + fp.halo)
            y = net(x[:, :, cy0:cy1, cx0:cx1])
            if out is None:
                out = torch.empty((*y.shape[:2], scale(h), scale(w)), dtype=y.dtype, device=y.device,
                                  memory_format=memory_format_of(y))
            oy, ox = scale(y0 - cy0), scale(x0 - cx0)
            out[:, :, scale(y0):scale(y1), scale(x0):scale(x1)] = (
                y[:, :, oy:oy + scale(y1 - y0), ox:ox + scale(x1 - x0)])
            _done(fp, x.shape[0], y1 - y0, x1 - x0)
    assert out is not None
    return out
