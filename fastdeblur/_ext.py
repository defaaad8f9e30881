"""Lazy loader of the compiled extension `fastdeblur._C`: nothing loads or compiles at import.

The first call of `load()` imports the library (which registers the `torch.ops.fastdeblur.*`
kernels) and registers, once, the Python parts of each op: fake kernels for torch.compile and
meta tensors, and autograd formulas. Without the extension everything runs on the reference.
"""

from __future__ import annotations

import threading

import torch

_lock = threading.Lock()
_loaded: bool | None = None
_error: str | None = None


def load() -> bool:
    """Import the extension once; True when its ops are available."""
    global _loaded, _error
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is None:
            if not (hasattr(torch.library, "register_fake") and hasattr(torch.library, "register_autograd")):
                # torch 2.3: the ops would load, but without fake kernels and autograd formulas
                _loaded, _error = False, f"the extension's ops need torch >= 2.4 (this is {torch.__version__})"
                return _loaded
            try:
                from . import _C  # noqa: F401  (registers the ops)
            except ImportError as e:
                _loaded, _error = False, str(e)
            else:
                _register_python_parts()
                _loaded = True
    return _loaded


def has_ext() -> bool:
    """True when the compiled extension is installed (its CPU ops at least)."""
    return load()


def has_cuda_ext() -> bool:
    """True when the extension was built with its CUDA kernels."""
    return has_kernel(torch.device("cuda"))


def has_kernel(device: torch.device) -> bool:
    """True when the extension has kernels for tensors on `device`."""
    if not load():
        return False
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device.type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key("fastdeblur::patch_split", key)


def why_missing() -> str:
    load()
    return _error or "the extension is installed"


def _register_python_parts() -> None:
    from .reference.patches import memory_format_of

    lib = "fastdeblur::"

    @torch.library.register_fake(lib + "patch_split")
    def _split_fake(x, rows, cols, add=None):
        n, c, h, w = x.shape
        return torch.empty(n * rows * cols, c, h // rows, w // cols, dtype=x.dtype, device=x.device,
                           memory_format=memory_format_of(x))

    @torch.library.register_fake(lib + "patch_merge")
    def _merge_fake(p, rows, cols, add=None):
        b, c, h, w = p.shape
        return torch.empty(b // (rows * cols), c, h * rows, w * cols, dtype=p.dtype, device=p.device,
                           memory_format=memory_format_of(p))

    @torch.library.register_fake(lib + "preprocess")
    def _pre_fake(img, multiple, dtype):
        n = 1 if img.dim() == 3 else img.shape[0]
        h, w = img.shape[-3], img.shape[-2]
        return img.new_empty(n, 3, -(-h // multiple) * multiple, -(-w // multiple) * multiple, dtype=dtype)

    @torch.library.register_fake(lib + "postprocess")
    def _post_fake(y, height, width, dtype):
        return y.new_empty(y.shape[0], height, width, 3, dtype=dtype)

    def _conv_out(x, k, size):
        """The CPU convolution ops' result: k channels, each side size(side), in x's form."""
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            n, _, h, w = x.shape  # [N, C, H, W] view of NHWC memory
            return x.new_empty(n, size(h), size(w), k).permute(0, 3, 1, 2)
        n, h, w, _ = x.shape
        return x.new_empty(n, size(h), size(w), k)

    def _same(side):
        return side

    @torch.library.register_fake(lib + "winograd_conv3x3")
    def _winograd_fake(x, u, bias, relu, add=None):
        return _conv_out(x, bias.numel(), _same)

    @torch.library.register_fake(lib + "winograd_conv_transpose4x4s2")
    def _winograd_up_fake(x, u, bias):
        return _conv_out(x, bias.numel(), lambda side: 2 * side)

    @torch.library.register_fake(lib + "winograd_conv3x3s2")
    def _winograd_s2_fake(x, u, bias):
        return _conv_out(x, bias.numel(), lambda side: (side + 1) // 2)

    @torch.library.register_fake(lib + "conv3x3_small_k")
    def _small_k_fake(x, w, bias):
        return _conv_out(x, bias.numel(), _same)

    @torch.library.register_fake(lib + "winograd_conv3x3_add_")
    def _winograd_add_fake(acc, x, u, bias):
        return acc

    @torch.library.register_fake(lib + "amx_residual_block")
    def _amx_block_fake(h, u1, b1, u2, b2):
        return torch.empty_like(h)  # h's form: [N, H, W, C], or the channels_last [N, C, H, W] view

    @torch.library.register_fake(lib + "amx_conv3x3")
    def _amx_conv_fake(x, u, bias, stride):
        return _conv_out(x, bias.numel(), _same if stride == 1 else lambda side: (side + 1) // 2)

    @torch.library.register_fake(lib + "amx_conv_transpose4x4s2")
    def _amx_up_fake(x, u, bias):
        return _conv_out(x, bias.numel(), lambda side: 2 * side)

    @torch.library.register_fake(lib + "amx_residual_block_")
    def _amx_block_inplace_fake(h, u1, b1, u2, b2):
        return h

    def _setup(ctx, inputs, output):
        _, ctx.rows, ctx.cols, add = inputs
        ctx.has_add = add is not None

    def _split_backward(ctx, grad):  # the inverse layout op is the gradient
        return torch.ops.fastdeblur.patch_merge(grad, ctx.rows, ctx.cols), None, None, (grad if ctx.has_add else None)

    def _merge_backward(ctx, grad):
        return torch.ops.fastdeblur.patch_split(grad, ctx.rows, ctx.cols), None, None, (grad if ctx.has_add else None)

    torch.library.register_autograd(lib + "patch_split", _split_backward, setup_context=_setup)
    torch.library.register_autograd(lib + "patch_merge", _merge_backward, setup_context=_setup)
