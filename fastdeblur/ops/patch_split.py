"""patch_split: image [N, C, H, W] -> row-major patches [N*rows*cols, C, H/rows, W/cols] (+ add).

The extension does the split and the optional add (DMPHN's `patch + residual`) in one pass;
the reference is a permute-copy followed by an add. Autograd: the gradient is patch_merge.
"""

from __future__ import annotations

import torch

from ..reference import patches
from . import _backend, _checks


def patch_split(x: torch.Tensor, rows: int, cols: int, add: torch.Tensor | None = None, *,
                backend: str | None = None) -> torch.Tensor:
    """x [N, C, H, W]; add [N*rows*cols, C, H/rows, W/cols] or None."""
    rows, cols = _checks.patch_split(x, rows, cols, add)
    if _backend.choose(backend, x.device) == "cuda":
        return torch.ops.fastdeblur.patch_split(x, rows, cols, add)
    out = patches.patch_split(x, rows, cols)
    return out if add is None else out + add  # add's shape, dtype and device: checked above
