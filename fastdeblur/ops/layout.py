"""DMPHN's layout steps on the extension's ops (same interface as reference.patches.TorchLayout).

Measured on the 2-core CPU, bfloat16 channels_last, 1280x720 (benchmarks/RESULTS.md): splitting
the image into quadrants plus the residual add 2.6 -> 2.3 ms; regrouping level-3 features
(quadrants -> halves) 29.8 -> 2.1 ms (torch's permute-copy of channels_last bf16 is slow);
stacking channels_last patches vertically is a free view in torch and stays there. A regroup is one batched merge when
the coarse grid keeps whole rows of fine patches (coarse cols == 1, or equal rows): true for
every DMPHN(1-2-4) step; the 4x2 -> 2x2 step of 1-2-4-8 stays on torch.
"""

from __future__ import annotations

import torch

from ..reference.patches import Grid, patch_regroup
from .patch_merge import patch_merge
from .patch_split import patch_split


class OpsLayout:
    """Layout steps through fastdeblur.ops with a fixed backend."""

    def __init__(self, backend: str = "cuda"):
        self.backend = backend

    def split(self, x: torch.Tensor, grid: Grid, add: torch.Tensor | None = None) -> torch.Tensor:
        if grid == (1, 1):
            return x if add is None else x + add
        return patch_split(x, *grid, add, backend=self.backend)

    def regroup(self, p: torch.Tensor, fine: Grid, coarse: Grid) -> torch.Tensor:
        (r1, c1), (r2, c2) = fine, coarse
        if fine == coarse:
            return p
        if c1 == c2 and p.is_contiguous(memory_format=torch.channels_last):
            return patch_regroup(p, fine, coarse)  # stacking rows of channels_last patches is a free view
        if c2 == 1 or r1 == r2:  # each coarse patch is a contiguous row-major block of fine patches
            return patch_merge(p, r1 // r2, c1 // c2, backend=self.backend)
        return patch_regroup(p, fine, coarse)
