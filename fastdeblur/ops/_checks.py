"""Argument checks for the layout and pixel ops, run before either backend.

The extension checks its arguments too (for direct `torch.ops.fastdeblur` calls), but as a
RuntimeError, and the reference path let through what the extension refuses (integer patches,
int32 results) or failed on its own terms (an IndexError for a 3-D `y`, a ZeroDivisionError for
`multiple=0`). Checking here gives every backend the same InputError, naming the argument.
"""

from __future__ import annotations

import operator

import torch

from ..errors import InputError

_FLOATS = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_PIXELS = (torch.uint8, torch.uint16, *_FLOATS)


def _int(op: str, name: str, value: object, *, minimum: int = 1) -> int:
    """`value` as an int of at least `minimum` (bools and floats refused: 2.0 rows is a mistake)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        n = operator.index(value)
    except TypeError:
        raise InputError(f"{op}: {name} must be an integer, got {value!r}") from None
    if n < minimum:
        raise InputError(f"{op}: {name} must be at least {minimum}, got {n}")
    return n


def float_tensor(op: str, name: str, t: object) -> None:
    if not isinstance(t, torch.Tensor):
        raise InputError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOATS:
        raise InputError(f"{op}: {name} must be float64, float32, float16 or bfloat16, got {t.dtype}")


def _add(op: str, add: object, like: torch.Tensor, shape: list[int]) -> None:
    if add is None:
        return
    if not isinstance(add, torch.Tensor):
        raise InputError(f"{op}: add must be a torch.Tensor or None, got {type(add).__name__}")
    if list(add.shape) != shape:
        raise InputError(f"{op}: add must have shape {shape}, got {list(add.shape)}")
    if add.dtype != like.dtype or add.device != like.device:
        raise InputError(f"{op}: add must be {like.dtype} on {like.device}, got {add.dtype} on {add.device}")


def _grid_and_tensor(op: str, name: str, form: str, t: object, rows: object, cols: object) -> tuple[int, int]:
    rows, cols = _int(op, "rows", rows), _int(op, "cols", cols)
    float_tensor(op, name, t)
    if t.dim() != 4:
        raise InputError(f"{op}: {name} must be {form}, got {t.dim()} dims")
    return rows, cols


def patch_split(x: torch.Tensor, rows: object, cols: object, add: object) -> tuple[int, int]:
    """The grid as ints; raises InputError for anything the split cannot take."""
    rows, cols = _grid_and_tensor("patch_split", "x", "[N, C, H, W]", x, rows, cols)
    n, c, h, w = x.shape
    if h % rows or w % cols:
        raise InputError(f"patch_split: x of {h}x{w} does not split into a {rows}x{cols} grid of equal patches")
    _add("patch_split", add, x, [n * rows * cols, c, h // rows, w // cols])
    return rows, cols


def patch_merge(p: torch.Tensor, rows: object, cols: object, add: object) -> tuple[int, int]:
    rows, cols = _grid_and_tensor("patch_merge", "p", "[N*rows*cols, C, h, w]", p, rows, cols)
    b, c, h, w = p.shape
    if b % (rows * cols):
        raise InputError(f"patch_merge: p's batch of {b} is not a multiple of the {rows}x{cols} grid")
    _add("patch_merge", add, p, [b // (rows * cols), c, h * rows, w * cols])
    return rows, cols


def preprocess(img: torch.Tensor, multiple: object, dtype: object) -> int:
    multiple = _int("preprocess", "multiple", multiple)
    if not isinstance(img, torch.Tensor):
        raise InputError(f"preprocess: img must be a torch.Tensor, got {type(img).__name__}")
    if img.dim() not in (3, 4) or img.shape[-1] != 3:
        raise InputError(f"preprocess: img must be [H, W, 3] or [N, H, W, 3], got shape {tuple(img.shape)}")
    if img.dtype not in _PIXELS:
        raise InputError(f"preprocess: img must be uint8, uint16 or float, got {img.dtype}")
    if img.shape[-3] == 0 or img.shape[-2] == 0:
        raise InputError(f"preprocess: img is empty (shape {tuple(img.shape)})")
    if dtype not in _FLOATS:
        raise InputError(f"preprocess: dtype must be float64, float32, float16 or bfloat16, got {dtype}")
    return multiple


def postprocess(y: torch.Tensor, height: object, width: object, dtype: object) -> tuple[int, int]:
    float_tensor("postprocess", "y", y)
    if y.dim() != 4 or y.shape[1] != 3:
        raise InputError(f"postprocess: y must be [N, 3, Hp, Wp], got shape {tuple(y.shape)}")
    height, width = _int("postprocess", "height", height), _int("postprocess", "width", width)
    if height > y.shape[2] or width > y.shape[3]:
        raise InputError(f"postprocess: height and width ({height}x{width}) must be within y's "
                         f"{y.shape[2]}x{y.shape[3]}")
    if dtype not in _PIXELS:
        raise InputError(f"postprocess: dtype must be uint8, uint16 or float, got {dtype}")
    return height, width
