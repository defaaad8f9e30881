"""preprocess / postprocess: pixels <-> the network's shifted, padded NCHW input and output.

preprocess:  img [H, W, 3] or [N, H, W, 3] (uint8, uint16, float) -> [N, 3, Hp, Wp] in `dtype`,
             img/max - 0.5, padded at the bottom/right to a multiple of `multiple` (reflect;
             replicate when a pad is as large as the side, as deblur() pads).
postprocess: y [N, 3, Hp, Wp] -> [N, height, width, 3] in `dtype`, round(clamp(y + 0.5, 0, 1) * max)
             for integer types, clamp(y + 0.5, 0, 1) for floats; cropped at the top left.
The extension does each in one pass; the reference chains torch ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _backend, _checks

_MAX = {torch.uint8: 255.0, torch.uint16: 65535.0}


def preprocess(img: torch.Tensor, multiple: int, dtype: torch.dtype, *, backend: str | None = None) -> torch.Tensor:
    multiple = _checks.preprocess(img, multiple, dtype)
    if _backend.choose(backend, img.device) == "cuda":
        return torch.ops.fastdeblur.preprocess(img, multiple, dtype)
    b = img if img.dim() == 4 else img[None]
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    x = b.permute(0, 3, 1, 2).to(acc) * (1.0 / _MAX.get(img.dtype, 1.0)) - 0.5
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
    return x.to(dtype).contiguous()


def postprocess(y: torch.Tensor, height: int, width: int, dtype: torch.dtype, *,
                backend: str | None = None) -> torch.Tensor:
    height, width = _checks.postprocess(y, height, width, dtype)
    if _backend.choose(backend, y.device) == "cuda":
        return torch.ops.fastdeblur.postprocess(y, height, width, dtype)
    acc = torch.float64 if y.dtype == torch.float64 else torch.float32
    v = (y[:, :, :height, :width].to(acc) + 0.5).clamp(0.0, 1.0)
    if dtype in _MAX:
        v = torch.round(v * _MAX[dtype])
    return v.permute(0, 2, 3, 1).to(dtype).contiguous()
