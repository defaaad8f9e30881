"""Pure-PyTorch patch layout ops: image <-> batch of patches on a rows x cols grid.

DMPHN runs its encoders on a grid of patches and its decoders on a coarser grid. Keeping the
patches as one batch (not a Python loop of encoder calls) is what makes the reference fast, and
the same three functions are the reference every compiled patch op is tested against.
A grid is (rows, cols); patches are ordered row-major per image (TL, TR, BL, BR for 2x2).
"""

from __future__ import annotations

import torch

Grid = tuple[int, int]


def _check_grid(rows: int, cols: int) -> None:
    if rows < 1 or cols < 1:
        raise ValueError(f"patch grid must be positive, got rows={rows}, cols={cols}")


def patch_split(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """[N, C, H, W] -> [N*rows*cols, C, H/rows, W/cols], row-major patches per image."""
    _check_grid(rows, cols)
    if x.dim() != 4:
        raise ValueError(f"x must be [N, C, H, W], got {x.dim()} dims")
    n, c, h, w = x.shape
    if h % rows or w % cols:
        raise ValueError(f"image {h}x{w} does not split into a {rows}x{cols} grid of equal patches")
    if rows == cols == 1:
        return x
    ph, pw = h // rows, w // cols
    p = x.reshape(n, c, rows, ph, cols, pw).permute(0, 2, 4, 1, 3, 5)
    return p.reshape(n * rows * cols, c, ph, pw).contiguous(memory_format=memory_format_of(x))


def patch_merge(p: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """[N*rows*cols, C, h, w] -> [N, C, h*rows, w*cols]: the inverse of `patch_split`."""
    _check_grid(rows, cols)
    if p.dim() != 4:
        raise ValueError(f"p must be [N*rows*cols, C, h, w], got {p.dim()} dims")
    b, c, ph, pw = p.shape
    if b % (rows * cols):
        raise ValueError(f"batch of {b} patches is not a multiple of the {rows}x{cols} grid")
    if rows == cols == 1:
        return p
    n = b // (rows * cols)
    x = p.reshape(n, rows, cols, c, ph, pw).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, c, rows * ph, cols * pw).contiguous(memory_format=memory_format_of(p))


def patch_regroup(p: torch.Tensor, fine: Grid, coarse: Grid) -> torch.Tensor:
    """Patches on the `fine` grid -> patches on the `coarse` grid, in one copy.

    `coarse` must divide `fine` (e.g. quadrants (2, 2) -> halves (2, 1)). Equal to
    `patch_split(patch_merge(p, *fine), *coarse)` without materialising the whole image.
    """
    (r1, c1), (r2, c2) = fine, coarse
    _check_grid(r1, c1)
    _check_grid(r2, c2)
    if r1 % r2 or c1 % c2:
        raise ValueError(f"grid {coarse} does not divide grid {fine}")
    if fine == coarse:
        return p
    b, c, ph, pw = p.shape
    n, a, k = b // (r1 * c1), r1 // r2, c1 // c2
    # [N, r2, a, c2, k, C, h, w] -> [N, r2, c2, C, a, h, k, w]
    x = p.reshape(n, r2, a, c2, k, c, ph, pw).permute(0, 1, 3, 5, 2, 6, 4, 7)
    return x.reshape(n * r2 * c2, c, a * ph, k * pw).contiguous(memory_format=memory_format_of(p))


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last for 4-d channels_last tensors, else contiguous."""
    # Keep channels_last tensors channels_last, so the convolutions that follow stay fast.
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class TorchLayout:
    """The layout steps of a DMPHN pass, in plain PyTorch (the reference).

    `split`: patches of `x` on `grid`, plus `add` (patch layout) if given.
    `regroup`: patches on grid `fine` -> patches on grid `coarse`.
    Faster implementations (fastdeblur.ops.layout) provide the same two methods.
    """

    @staticmethod
    def split(x: torch.Tensor, grid: Grid, add: torch.Tensor | None = None) -> torch.Tensor:
        out = patch_split(x, *grid)
        return out if add is None else out + add

    @staticmethod
    def regroup(p: torch.Tensor, fine: Grid, coarse: Grid) -> torch.Tensor:
        return patch_regroup(p, fine, coarse)
