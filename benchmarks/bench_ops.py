"""Per-op benchmarks: the extension's layout and pixel ops against the torch equivalent, and its
CPU convolutions (Winograd residual blocks, transposed and stride-2 convolutions; the 32 -> 3
kernel) against oneDNN's.

Shapes are the real DMPHN(1-2-4) steps of a 1280x720 frame (channels_last, as deblur() runs):
level-3 image split + residual, level-3 feature regroup (quadrants -> halves), level-2 merge,
the uint8 <-> network conversions, and one residual block (two 3x3 convolutions) at each of the
three channel counts at its level-1 resolution. Correctness is checked once before timing.
"""

from __future__ import annotations

import pytest
import torch
from conftest import timed

from fastdeblur import _ext, ops
from fastdeblur.ops.layout import OpsLayout
from fastdeblur.reference.patches import TorchLayout

pytestmark = pytest.mark.skipif(not _ext.has_ext(), reason="extension not built")
CL = torch.channels_last


def _cases(device: str, dtype: torch.dtype):
    def t(*shape):
        return torch.randn(*shape, device=device).to(dtype).contiguous(memory_format=CL)

    x, r = t(1, 3, 720, 1280), t(4, 3, 360, 640)
    f3, f2 = t(4, 128, 90, 160), t(2, 128, 90, 320)
    img = torch.randint(0, 256, (720, 1280, 3), dtype=torch.uint8, device=device)
    y = torch.randn(1, 3, 720, 1280, device=device).to(dtype)
    return {
        "split_x_2x2_add": lambda lay: lay.split(x, (2, 2), r),
        "regroup_f3_2x2_to_2x1": lambda lay: lay.regroup(f3, (2, 2), (2, 1)),
        "regroup_f2_2x1_to_1x1": lambda lay: lay.regroup(f2, (2, 1), (1, 1)),
        "preprocess_u8": lambda lay: ops.preprocess(img, 8, dtype, backend=_name(lay)),
        "postprocess_u8": lambda lay: ops.postprocess(y, 720, 1280, torch.uint8, backend=_name(lay)),
    }


def _name(layout) -> str:
    return "reference" if layout is TorchLayout else "cuda"


@pytest.mark.parametrize("provider", ["torch", "extension"])
@pytest.mark.parametrize("case", ["split_x_2x2_add", "regroup_f3_2x2_to_2x1", "regroup_f2_2x1_to_1x1",
                                  "preprocess_u8", "postprocess_u8"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_op(benchmark, device, dtype, case, provider):
    if device == "cpu" and dtype == torch.float16:
        pytest.skip("float16 is not a CPU path")
    if device == "cuda" and not _ext.has_cuda_ext():
        pytest.skip("extension built without CUDA")
    fn = _cases(device, dtype)[case]
    layout = TorchLayout if provider == "torch" else OpsLayout()
    with torch.inference_mode():
        torch.testing.assert_close(fn(OpsLayout()).float(), fn(TorchLayout).float(), rtol=0, atol=1e-2)
        timed(benchmark, lambda: fn(layout), device, rounds=50 if device == "cuda" else 10, op=case,
              provider=provider, dtype=str(dtype))


def _skip_unless_runs(dtype: torch.dtype, provider: str, kernel, what: str) -> None:
    """Skip a CPU layer benchmark where oneDNN runs no `dtype`, or where its provider's kernel does
    not run it: the AMX kernels for "amx", the extension's `kernel` (named `what`) for the others
    but "onednn"."""
    from fastdeblur.models import amx, onednn_available

    if not onednn_available(dtype):
        pytest.skip(f"oneDNN runs no {dtype} here")
    if provider == "amx" and not (dtype == torch.bfloat16 and amx.available()):
        pytest.skip("the AMX kernels run bfloat16 on CPUs with AMX-BF16")
    if provider not in ("onednn", "amx") and not kernel.available(dtype):
        pytest.skip(f"{what} runs no {dtype} here (bfloat16: AVX512-BF16)")


@pytest.mark.parametrize("provider", ["onednn", "winograd", "winograd_f2", "amx"])
@pytest.mark.parametrize("channels", [32, 64, 128])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_residual_block(benchmark, device, dtype, channels, provider, monkeypatch):
    """One residual block of the CPU model, written over its input as the model runs it: oneDNN's
    direct convolutions (ReLU and residual add fused) against the Winograd kernel (models/winograd.py)
    with its default tile for the dtype (winograd, `winograd.TILE`: the complex F(8x8, 3x3) in
    bfloat16, F(6x6, 3x3) in float32), with F(2x2, 3x3) (winograd_f2), and against the AMX kernel's
    one-pass block (amx, models/amx.py: bfloat16 on CPUs with AMX). The FLOP count is the direct
    convolutions' (Winograd's rate is then an equivalent rate)."""
    from fastdeblur._heap import reuse_heap
    from fastdeblur.models import winograd
    from fastdeblur.models.onednn import _OneDNN
    from fastdeblur.reference.dmphn import ResidualBlock

    if device != "cpu":
        pytest.skip("CPU op")
    _skip_unless_runs(dtype, provider, winograd, "the Winograd kernel")
    if provider == "winograd_f2" and winograd.TILE[dtype] == 2:
        pytest.skip(f"F(2x2, 3x3) is already the winograd provider in {dtype}")
    h, w = {32: (720, 1280), 64: (360, 640), 128: (180, 320)}[channels]
    torch.manual_seed(0)
    block = ResidualBlock(channels).eval().requires_grad_(False).to(dtype)
    layers = {"onednn": _OneDNN(block, use_winograd=False, use_amx=False)}
    if provider.startswith("winograd"):
        if provider == "winograd_f2":
            monkeypatch.setitem(winograd.TILE, dtype, 2)  # the weights are packed for it here
        layers[provider] = _OneDNN(block, use_winograd=True, use_amx=False)
    elif provider == "amx":
        layers[provider] = _OneDNN(block, use_winograd=False, use_amx=True)
    x = torch.randn(1, h, w, channels).to(dtype)  # NHWC, as the model runs
    tol = 0.1 if dtype == torch.bfloat16 else 1e-4
    with torch.inference_mode():
        ref = block(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).float()
        for layer in layers.values():  # both within rounding of torch's own block
            torch.testing.assert_close(layer(x).float(), ref, rtol=tol / 2, atol=tol)

        def step():  # in place, as deblur() runs the blocks (the values grow a little each round)
            layers[provider](x, reuse=True)

        # deblur()'s block cache: oneDNN's intermediate activation reuses its memory, as in a frame
        with reuse_heap(limit=1 << 30):
            timed(benchmark, step, device, flops=2 * 2 * 9 * channels ** 2 * h * w,
                  op=f"residual_block_{channels}", provider=provider, dtype=str(dtype))


@pytest.mark.parametrize("provider", ["onednn", "winograd", "amx"])
@pytest.mark.parametrize("channels", [64, 128])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_transposed_conv(benchmark, device, dtype, channels, provider):
    """A decoder's ConvTranspose2d(C, C/2, 4, stride=2, padding=1) at a 720p frame's level-1 size:
    oneDNN's against the Winograd kernel's four F(3x3, 2x2) phases (models/winograd.py) and the AMX
    kernel's four 2x2 ones (models/amx.py). The FLOP count is the direct one's (16 multiply-adds per
    input pixel and channel pair)."""
    from fastdeblur._heap import reuse_heap
    from fastdeblur.models import winograd
    from fastdeblur.models.onednn import _OneDNN

    if device != "cpu":
        pytest.skip("CPU op")
    _skip_unless_runs(dtype, provider, winograd, "the Winograd kernel")
    h, w = {64: (360, 640), 128: (180, 320)}[channels]
    torch.manual_seed(0)
    up = torch.nn.ConvTranspose2d(channels, channels // 2, 4, stride=2, padding=1).eval().requires_grad_(False)
    up = up.to(dtype)
    layer = _OneDNN(up, use_winograd=provider == "winograd", use_amx=provider == "amx")
    x = torch.randn(1, h, w, channels).to(dtype)  # NHWC, as the model runs
    tol = 0.1 if dtype == torch.bfloat16 else 1e-4
    with torch.inference_mode():
        ref = up(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).float()
        torch.testing.assert_close(layer(x).float(), ref, rtol=tol / 2, atol=tol)
        with reuse_heap(limit=1 << 30):  # deblur()'s block cache: outputs reuse their memory, as in a frame
            timed(benchmark, lambda: layer(x), device, flops=2 * 16 * channels * channels // 2 * h * w,
                  op=f"conv_transpose_{channels}", provider=provider, dtype=str(dtype))


# (Cin, Cout, stride, input H x W): the encoders' stride-2 convolutions and the decoders' last
# layer, at a 720p frame's level-1 sizes
_OTHER_CONVS = {"conv32_64_s2": (32, 64, 2, 720, 1280), "conv64_128_s2": (64, 128, 2, 360, 640),
                "conv32_3": (32, 3, 1, 720, 1280)}


@pytest.mark.parametrize("provider", ["onednn", "extension", "amx"])
@pytest.mark.parametrize("conv", list(_OTHER_CONVS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_other_conv(benchmark, device, dtype, conv, provider):
    """The CPU model's other 3x3 convolutions: oneDNN's (bias fused) against the extension's,
    the polyphase Winograd for stride 2 (models/winograd.py) and the few-output-channel kernel
    for 32 -> 3 (models/small_k.py), and against the AMX row kernel (amx, models/amx.py). The FLOP
    count is the direct convolution's."""
    from fastdeblur._heap import reuse_heap
    from fastdeblur.models import small_k, winograd
    from fastdeblur.models.onednn import _OneDNN

    cin, cout, stride, h, w = _OTHER_CONVS[conv]
    if device != "cpu":
        pytest.skip("CPU op")
    _skip_unless_runs(dtype, provider, small_k if cout < 8 else winograd, "the extension's kernel")
    torch.manual_seed(0)
    c = torch.nn.Conv2d(cin, cout, 3, stride=stride, padding=1).eval().requires_grad_(False).to(dtype)
    ext = provider == "extension"
    layer = _OneDNN(c, use_winograd=ext, use_small_k=ext, use_amx=provider == "amx")
    assert (layer.winograd is not None or layer.small_k is not None) == ext
    assert (layer.amx is not None) == (provider == "amx")
    x = torch.randn(1, h, w, cin).to(dtype)  # NHWC, as the model runs
    tol = 0.1 if dtype == torch.bfloat16 else 1e-4
    with torch.inference_mode():
        ref = c(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).float()
        torch.testing.assert_close(layer(x).float(), ref, rtol=tol / 2, atol=tol)
        ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
        with reuse_heap(limit=1 << 30):  # deblur()'s block cache: outputs reuse their memory, as in a frame
            timed(benchmark, lambda: layer(x), device, flops=2 * 9 * cin * cout * ho * wo, op=conv,
                  provider=provider, dtype=str(dtype))
