"""Triton kernels of fastdeblur, installed as `fastdeblur.kernels` (one file per op)."""
