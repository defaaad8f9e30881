"""Triton kernels of fastdeblur, installed as `fastdeblur.kernels` (one file per op)."""

from __future__ import annotations


def jit_kernels() -> tuple:
    """The top-level Triton kernels (the ones that are launched, so compiled): conv3x3,
    conv_transpose, conv_relu_residual."""
    from . import conv3x3, conv_relu_residual, conv_transpose

    return conv3x3._conv3x3_kernel, conv_transpose._conv_transpose4x4s2_kernel, conv_relu_residual._rb_fused_kernel


def compiled_variants() -> int | None:
    """How many variants of these kernels this process has compiled, on every device (None where
    this Triton keeps no `device_caches`, or under the interpreter, which compiles nothing)."""
    caches = [getattr(k, "device_caches", None) for k in jit_kernels()]
    if any(c is None for c in caches):
        return None
    return sum(len(entry[0]) for dc in caches for entry in dc.values())  # entry[0]: the compiled-kernel cache
