"""Fused DMPHN modules built on fastdeblur.ops (Triton kernels) from the reference's weights."""

from .fused import FusedDecoder, FusedEncoder, fuse_model

__all__ = ["FusedDecoder", "FusedEncoder", "fuse_model"]
