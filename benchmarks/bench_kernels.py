"""Triton kernels against cuDNN on DMPHN's real layer shapes of a 1280x720 frame (GPU only).

A residual block (two 3x3 convs, bias, ReLU, residual add) at 32 channels full resolution, 64 at
1/2 and 128 at 1/4 (Triton as two kernels, and as one: triton_1k), and the two transposed convs;
fp16, channels_last (NHWC) for every provider.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import timed

from fastdeblur import ops
from fastdeblur.ops.conv import triton_usable

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or not triton_usable(torch.device("cuda")),
                                reason="needs a GPU that runs Triton's tensor-core path")
CASES = {  # name: (kind, cin, cout, h, w)
    "rb32_720p": ("rb", 32, 32, 720, 1280),
    "rb64_360p": ("rb", 64, 64, 360, 640),
    "rb128_180p": ("rb", 128, 128, 180, 320),
    "convT128_64": ("up", 128, 64, 180, 320),
    "convT64_32": ("up", 64, 32, 360, 640),
}


@pytest.mark.parametrize("provider", ["cudnn", "triton", "triton_1k"])
@pytest.mark.parametrize("case", list(CASES))
def test_kernel(benchmark, case, provider):
    """triton_1k: the residual block as one kernel (kernels/conv_relu_residual.py)."""
    kind, cin, cout, h, w = CASES[case]
    if provider == "triton_1k" and kind != "rb":
        pytest.skip("one-kernel form exists for residual blocks only")
    dev, dt, cl = "cuda", torch.float16, torch.channels_last
    torch.backends.cudnn.benchmark = True
    x = torch.randn(1, cin, h, w, device=dev, dtype=dt).contiguous(memory_format=cl)
    backend = "reference" if provider == "cudnn" else "triton"
    if kind == "rb":
        w1, w2 = (torch.randn(cout, cin, 3, 3, device=dev, dtype=dt) * 0.05 for _ in range(2))
        b1, b2 = (torch.randn(cout, device=dev, dtype=dt) for _ in range(2))
        w1, w2 = w1.contiguous(memory_format=cl), w2.contiguous(memory_format=cl)
        fn = lambda: ops.conv_relu_residual(x, w1, b1, w2, b2, backend=backend,  # noqa: E731
                                            one_kernel=provider == "triton_1k")
        flops = 2 * 2 * cin * cout * 9 * h * w
    else:
        wt = torch.randn(cin, cout, 4, 4, device=dev, dtype=dt) * 0.05
        b = torch.randn(cout, device=dev, dtype=dt)
        fn = (lambda: F.conv_transpose2d(x, wt, b, stride=2, padding=1)) if provider == "cudnn" else (
            lambda: ops.conv_transpose4x4(x, wt, b, backend="triton"))
        flops = 2 * cin * cout * 16 * h * w
    with torch.inference_mode():
        ref = (ops.conv_relu_residual(x, w1, b1, w2, b2, backend="reference") if kind == "rb"
               else F.conv_transpose2d(x, wt, b, stride=2, padding=1))
        torch.testing.assert_close(fn().float(), ref.float(), rtol=2e-2, atol=2e-2)
        timed(benchmark, fn, "cuda", flops=flops, rounds=50, provider=provider, op=case, dtype="torch.float16")
