"""Fused DMPHN modules from the reference's weights: the Triton kernels (fastdeblur.ops) for
GPUs, oneDNN's fused convolutions for CPUs. The Triton model imports triton (an optional
dependency) only when first asked for."""

from ._layers import FusedDecoder, FusedEncoder
from .onednn import onednn_available, onednn_model

__all__ = ["FusedDecoder", "FusedEncoder", "fuse_model", "onednn_available", "onednn_model"]


def __getattr__(name: str):
    if name == "fuse_model":
        from .fused import fuse_model

        return fuse_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
