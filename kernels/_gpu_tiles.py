"""Tiles measured fastest by benchmarks/tune_kernels.py: NVIDIA H200, 2026-11-27,
triton 3.6.0, torch 2.11.0+cu130, float16, DMPHN 720p shapes (ms: best / cuDNN)."""

# (op, cin, cout): (block_m, block_n, block_k, warps, stages, unroll)
TILES = {
    ("conv", 32, 32): (128, 32, 32, 8, 3, False),  # 0.3491 / 0.2031
    ("conv", 64, 64): (256, 64, 64, 8, 3, False),  # 0.4313 / 0.0975
    ("conv", 128, 128): (128, 128, 32, 8, 3, False),  # 0.1706 / 0.0603
    ("convT", 128, 64): (256, 64, 64, 8, 1, True),  # 0.1391 / 0.0885
    ("convT", 64, 32): (64, 32, 32, 4, 1, True),  # 0.1420 / 0.1691
    ("conv_s2", 32, 64): (256, 64, 32, 8, 1, True),  # 0.1706 / 0.0875
    ("conv_s2", 64, 128): (128, 64, 32, 4, 1, True),  # 0.1767 / 0.0527
    ("conv", 3, 32): (64, 32, 16, 4, 3, False),  # 0.2221 / 0.1756
    ("conv", 32, 3): (64, 16, 32, 4, 3, False),  # 0.1756 / 0.1170
}

# one-kernel residual block, channels: (th, tw, chunk, block_k, warps, stages); not swept yet
BLOCK_TILES = {}
