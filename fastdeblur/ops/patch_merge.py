"""patch_merge: row-major patches [N*rows*cols, C, h, w] -> image [N, C, h*rows, w*cols] (+ add).

The inverse of patch_split; the optional add (DMPHN's cross-level feature sum) is fused into the
same pass by the extension. Autograd: the gradient is patch_split.
"""

from __future__ import annotations

import torch

from ..reference import patches
from . import _backend, _checks


def patch_merge(p: torch.Tensor, rows: int, cols: int, add: torch.Tensor | None = None, *,
                backend: str | None = None) -> torch.Tensor:
    """p [N*rows*cols, C, h, w]; add [N, C, h*rows, w*cols] or None."""
    rows, cols = _checks.patch_merge(p, rows, cols, add)
    if _backend.choose(backend, p.device) == "cuda":
        return torch.ops.fastdeblur.patch_merge(p, rows, cols, add)
    out = patches.patch_merge(p, rows, cols)
    return out if add is None else out + add  # add's shape, dtype and device: checked above
