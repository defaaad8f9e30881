"""Public ops: one file each, taking NCHW or channels_last tensors, backend chosen per call.

Layout and pixel ops (patch_split, patch_merge, preprocess, postprocess): "cuda" is the compiled
extension (C++ kernels on CPU tensors, CUDA kernels on GPU tensors), "reference" is plain
PyTorch; `backend=None` uses the extension where it has kernels for the tensor's device.
Convolutions (conv3x3, conv_relu_residual, conv_transpose4x4): "triton" or "reference".
FASTDEBLUR_BACKEND forces a backend.
"""

from .conv import conv3x3, conv_relu_residual, conv_transpose4x4
from .patch_merge import patch_merge
from .patch_split import patch_split
from .pixels import postprocess, preprocess

__all__ = ["conv3x3", "conv_relu_residual", "conv_transpose4x4", "patch_merge", "patch_split", "postprocess",
           "preprocess"]
