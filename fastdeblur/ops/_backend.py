"""Backend choice shared by the ops: argument, then FASTDEBLUR_BACKEND, then the best available."""

from __future__ import annotations

import os
import sys

import torch

from .. import _ext
from ..errors import InputError

BACKENDS = ("reference", "triton", "cuda")


def requested(backend: str | None) -> str | None:
    """The backend asked for: the argument, else $FASTDEBLUR_BACKEND, else None (pick the best)."""
    return backend or os.environ.get("FASTDEBLUR_BACKEND") or None


def torch_runs_triton_ops() -> bool:
    """torch can register Triton launchers as custom ops (torch.library.triton_op: torch >= 2.6)."""
    return hasattr(torch.library, "triton_op") and hasattr(torch.library, "wrap_triton")


def triton_usable(device: torch.device) -> bool:
    """Triton kernels run here: a CUDA GPU of compute capability 8.0+, or the CPU interpreter,
    with torch >= 2.6 (older torch, which the rest of fastdeblur supports, runs the other paths)."""
    import importlib.util

    if not torch_runs_triton_ops():
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    # kernels/ is installed as fastdeblur.kernels; a bare source tree on sys.path (python run in
    # the repo root after a non-editable install) has no such package: use the other paths there
    if importlib.util.find_spec("fastdeblur.kernels") is None:
        return False
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def require_triton(device: torch.device) -> None:
    """Raise the one explanation of why backend 'triton' cannot run on `device`."""
    if not triton_usable(device):
        raise InputError(f"backend 'triton' needs a CUDA GPU of compute capability 8.0+, triton, torch >= 2.6 "
                         f"(this is {torch.__version__}) and an installed fastdeblur (its kernels package) "
                         f"(or TRITON_INTERPRET=1 on CPU, for tests); the device is {device}")


# What torch.compiler.assume_constant_result sets on a function (as of torch 2.13), and all it
# does; tests/test_ext_ops.py checks that it still is.
DYNAMO_CONSTANT = "_dynamo_marked_constant"


def _constant_under_compile(fn):
    """torch.compile takes fn's result as a constant, computed once while it traces (choose()
    loads the extension under a lock and asks importlib and the dispatcher, which it cannot trace:
    `torch.compile(fullgraph=True)` of the public ops failed there). Marked as
    torch.compiler.assume_constant_result marks it, without its import of torch._dynamo unless
    something has imported that already: that import takes 0.9 s (torch 2.13, 2-core Xeon), and a
    CPU process's first deblur(), which compiles nothing, paid it."""
    mark = getattr(torch.compiler, "assume_constant_result", None)
    if mark is None:
        return fn
    if "torch._dynamo" in sys.modules:
        return mark(fn)
    setattr(fn, DYNAMO_CONSTANT, True)
    return fn


@_constant_under_compile
def choose(backend: str | None, device: torch.device, *, triton: bool = False) -> str:
    """'cuda' (the compiled extension), 'reference', or for ops with Triton kernels (`triton`)
    'triton', which those ops also pick by default wherever Triton runs. A compiled graph keeps
    the choice it was traced with (FASTDEBLUR_BACKEND set later does not change it)."""
    backend = requested(backend)
    if backend is not None and backend not in BACKENDS:
        raise InputError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "reference":
        return backend
    if backend == "triton":
        if not triton:
            raise InputError("backend 'triton' has no kernel for this op; use 'cuda' or 'reference'")
        require_triton(device)
        return backend
    if backend == "cuda":
        if not _ext.has_kernel(device):
            raise InputError(f"backend 'cuda' asked for, but the compiled extension has no {device.type} kernels "
                             f"({_ext.why_missing()}); reinstall with `pip install --no-build-isolation .`")
        return backend
    if triton and triton_usable(device):
        return "triton"
    return "cuda" if _ext.has_kernel(device) else "reference"
