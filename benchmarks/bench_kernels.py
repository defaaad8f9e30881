"""Each DMPHN layer as the fused model runs it, on Triton and on cuDNN, at its 1280x720 shape (GPU only).

Every layer kind of the encoder and decoder (the residual blocks at 32 channels full resolution,
64 at 1/2 and 128 at 1/4, the stride-2 convs, the transposed convs, the first and last convs),
built exactly as `fuse_model` builds it: `_Triton` (weights packed once; a residual block as two
kernels, or as one: triton_1k) or `_Torch` (cuDNN on the same NHWC memory), fp16. A round is
CALLS calls back to back and one synchronization, and the figures are per call: inside the
network the launches queue behind each other, so a synchronization after every call (the
benchmark's first form) charged each layer its launch latency, which is higher through Triton's
launcher, and the weight packing of the public `ops` functions. Even so, per-layer figures only
point: the choice of which layers run on Triton is made end to end (`layer_choice.py`).
"""

from __future__ import annotations

import pytest
import torch
from conftest import timed
from flops import conv_flops
from torch import nn

from fastdeblur.ops.conv import triton_usable
from fastdeblur.reference.dmphn import ResidualBlock

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or not triton_usable(torch.device("cuda")),
                                reason="needs a GPU that runs Triton's tensor-core path")
CASES = {  # name: (kind, cin, cout, stride, input h, input w)
    "conv3_32_720p": ("conv", 3, 32, 1, 720, 1280),
    "rb32_720p": ("rb", 32, 32, 1, 720, 1280),
    "conv32_64_s2_720p": ("conv", 32, 64, 2, 720, 1280),
    "rb64_360p": ("rb", 64, 64, 1, 360, 640),
    "conv64_128_s2_360p": ("conv", 64, 128, 2, 360, 640),
    "rb128_180p": ("rb", 128, 128, 1, 180, 320),
    "convT128_64": ("up", 128, 64, 2, 180, 320),
    "convT64_32": ("up", 64, 32, 2, 360, 640),
    "conv32_3_720p": ("conv", 32, 3, 1, 720, 1280),
}
CALLS = 10


def layer_module(kind: str, cin: int, cout: int, stride: int) -> nn.Module:
    """The reference layer (random weights) that the fused model's layers are made from."""
    if kind == "rb":
        return ResidualBlock(cin)
    if kind == "up":
        return nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


def fused_layer(layer: nn.Module, provider: str) -> nn.Module:
    from fastdeblur.models.fused import _Torch, _Triton

    return _Torch(layer) if provider == "cudnn" else _Triton(layer, one_kernel=provider == "triton_1k")


@pytest.mark.parametrize("provider", ["cudnn", "triton", "triton_1k"])
@pytest.mark.parametrize("case", list(CASES))
def test_kernel(benchmark, case, provider):
    """triton_1k: the residual block as one kernel (kernels/conv_relu_residual.py)."""
    kind, cin, cout, stride, h, w = CASES[case]
    if provider == "triton_1k" and kind != "rb":
        pytest.skip("one-kernel form exists for residual blocks only")
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    ref_layer = layer_module(kind, cin, cout, stride).to("cuda", torch.float16).eval()
    layer = fused_layer(ref_layer, provider)
    x = torch.randn(1, cin, h, w, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    h_nhwc = x.permute(0, 2, 3, 1)  # the fused model's activations: NHWC memory

    def calls():
        for _ in range(CALLS):
            y = layer(h_nhwc)
        return y

    with torch.inference_mode():
        torch.testing.assert_close(layer(h_nhwc).permute(0, 3, 1, 2).float(), ref_layer(x).float(),
                                   rtol=2e-2, atol=2e-2)
        timed(benchmark, calls, "cuda", flops=conv_flops(ref_layer, h, w, channels=cin) * CALLS, rounds=30,
              calls_per_round=CALLS, provider=provider, op=case, dtype="torch.float16")
