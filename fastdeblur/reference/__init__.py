"""Pure-PyTorch DMPHN: modules with the authors' checkpoint keys, and the patch layout ops."""

from .dmphn import DMPHN, LEVEL_GRIDS, Decoder, Encoder, ResidualBlock, StackDMPHN, multipatch_forward, size_multiple
from .patches import patch_merge, patch_regroup, patch_split

__all__ = [
    "DMPHN", "LEVEL_GRIDS", "Decoder", "Encoder", "ResidualBlock", "StackDMPHN", "multipatch_forward",
    "patch_merge", "patch_regroup", "patch_split", "size_multiple",
]
