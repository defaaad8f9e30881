"""Backend choice shared by the ops: argument, then FASTDEBLUR_BACKEND, then the best available."""

from __future__ import annotations

import os

import torch

from .. import _ext
from ..errors import InputError

BACKENDS = ("reference", "triton", "cuda")


def choose(backend: str | None, device: torch.device, *, triton: bool = False) -> str:
    """'cuda' (the compiled extension) or 'reference' (or 'triton' for ops that have it)."""
    backend = backend or os.environ.get("FASTDEBLUR_BACKEND") or None
    if backend is not None and backend not in BACKENDS:
        raise InputError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "reference":
        return backend
    if backend == "triton":
        if not triton:
            raise InputError("backend 'triton' has no kernel for this op; use 'cuda' or 'reference'")
        return backend
    if backend == "cuda":
        if not _ext.has_kernel(device):
            raise InputError(f"backend 'cuda' asked for, but the compiled extension has no {device.type} kernels "
                             f"({_ext.why_missing()}); reinstall with `pip install --no-build-isolation .`")
        return backend
    return "cuda" if _ext.has_kernel(device) else "reference"
