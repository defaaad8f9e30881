"""The few-output-channel 3x3 convolution (csrc/cpu/conv_small_k.cpp: bfloat16 on AVX512-BF16,
float32 on AVX-512 and on AVX2) against float64 by the 2x-PyTorch-error rule, and its place in the CPU model
(the decoders' 32 -> 3 layers)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from fastdeblur.models import onednn_model, small_k, winograd
from fastdeblur.reference import DMPHN

from .utils import check_nhwc_forms

# (dtype, ATEN_CPU_CAPABILITY): every kernel this CPU runs ("avx2" limits float32 to the AVX2 one)
_HAS_AVX512 = small_k.available(torch.float32) and small_k.runs(torch.float32, 16, 3)
DTYPES = [pytest.param((torch.bfloat16, None), id="bf16", marks=pytest.mark.skipif(
              not small_k.available(torch.bfloat16), reason="the small-K kernel's bfloat16 needs AVX512-BF16")),
          pytest.param((torch.float32, None), id="fp32", marks=pytest.mark.skipif(
              not small_k.available(torch.float32), reason="the small-K kernel needs the extension and AVX2+FMA")),
          pytest.param((torch.float32, "avx2"), id="fp32-avx2", marks=pytest.mark.skipif(
              not _HAS_AVX512, reason="the AVX2 kernel is tested here on AVX-512 CPUs (elsewhere it is fp32's)"))]


@pytest.fixture(params=DTYPES)
def dtype(request, monkeypatch):
    dt, cap = request.param
    if cap is not None:
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", cap)
    return dt


def _case(n, c, k, h, w, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, w, c, generator=g).to(dtype)  # NHWC
    wt = (torch.randn(k, c, 3, 3, generator=g) / (3 * c ** 0.5)).to(dtype)
    return x, wt, torch.randn(k, generator=g).to(dtype)


def _nchw(t):
    return t.permute(0, 3, 1, 2)


@pytest.mark.parametrize("n,c,k,h,w", [(1, 32, 3, 7, 9), (2, 64, 4, 5, 13), (1, 32, 1, 1, 1), (3, 32, 2, 4, 3),
                                       (1, 96, 3, 10, 11), (2, 32, 3, 3, 131)])
@pytest.mark.parametrize("seed", [0, 1])
def test_error_is_at_most_twice_torchs(dtype, n, c, k, h, w, seed):
    x, wt, b = _case(n, c, k, h, w, dtype, seed)
    got = small_k.conv3x3(x, small_k.pack(wt, dtype), b)
    assert got.shape == (n, h, w, k) and got.dtype == dtype and got.is_contiguous()
    want = F.conv2d(_nchw(x).double(), wt.double(), b.double(), padding=1).permute(0, 2, 3, 1)
    base = F.conv2d(_nchw(x), wt, b, padding=1).permute(0, 2, 3, 1)
    atol = 1e-6 if dtype == torch.bfloat16 else 2e-6
    for norm in (lambda e: e.abs().max(), lambda e: e.pow(2).mean().sqrt()):  # worst case and typical
        err, ref_err = norm(got.double() - want).item(), norm(base.double() - want).item()
        assert err <= 2 * ref_err + atol, f"small-K error {err:.3g} > 2 x torch's {ref_err:.3g} in {dtype}"


def test_forms_threads_and_fake_kernel(dtype):
    x, wt, b = _case(2, 32, 3, 6, 11, dtype)
    w = small_k.pack(wt, dtype)
    check_nhwc_forms(small_k.conv3x3, torch.ops.fastdeblur.conv3x3_small_k, x, w, b, (2, 3, 6, 11))


def test_bad_arguments_name_the_problem(dtype, monkeypatch):
    x, wt, b = _case(1, 32, 3, 4, 4, dtype)
    w = small_k.pack(wt, dtype)
    op = small_k.conv3x3
    with pytest.raises(RuntimeError, match="bfloat16 or float32"):
        op(x.double(), w, b)
    with pytest.raises(RuntimeError, match="small_k.pack"):
        op(x, w[:, :3].contiguous(), b)
    with pytest.raises(RuntimeError, match="NHWC memory with 32 channels"):
        op(torch.zeros(1, 4, 4, 64, dtype=dtype), w, b)
    with pytest.raises(RuntimeError, match="bias must be 1 to 4"):
        op(x, w, torch.zeros(5))
    with pytest.raises(ValueError, match="does not run a .5, 32, 3, 3. weight"):
        small_k.pack(torch.zeros(5, 32, 3, 3), dtype)
    with pytest.raises(ValueError, match="does not run a .3, 4, 3, 3. weight"):  # C: a multiple of 8, 16 or 32
        small_k.pack(torch.zeros(3, 4, 3, 3), dtype)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")  # the switch that limits torch's kernels
    assert not small_k.runs(dtype, 32, 3)
    with pytest.raises(RuntimeError, match="does not run"):
        op(x, w, b)


def test_model_last_layers(dtype):
    """DMPHN(1-2-4)'s three 32 -> 3 layers run on the kernel (and only they); the model stays
    within 2x torch's own forward's error against float64, and tracks the oneDNN-only one."""
    torch.manual_seed(0)
    model = DMPHN((1, 2, 4)).eval().requires_grad_(False).to(memory_format=torch.channels_last)
    x = (torch.rand(2, 3, 40, 56) - 0.5).contiguous(memory_format=torch.channels_last)
    lowp = copy.deepcopy(model).to(dtype)
    fused = onednn_model(lowp, use_winograd=False, use_small_k=True)
    layers = [m for m in fused.modules() if getattr(m, "small_k", None) is not None]
    assert len(layers) == 3 and all(m.op == "conv" and m.b1.numel() == 3 for m in layers)
    plain = onednn_model(lowp, use_winograd=False, use_small_k=False)
    assert not any(getattr(m, "small_k", None) is not None for m in plain.modules())
    atol = 1e-3 if dtype == torch.bfloat16 else 1e-5
    with torch.inference_mode():
        want = model.double()(x.double())
        got, direct, base = fused(x.to(dtype)), plain(x.to(dtype)), lowp(x.to(dtype))
    err, ref_err = (got.double() - want).abs().max().item(), (base.double() - want).abs().max().item()
    assert err <= 2 * ref_err + atol, f"model error {err:.3g} > 2 x torch's {ref_err:.3g} in {dtype}"
    assert (got.double() - direct.double()).abs().max().item() <= 2 * ref_err + atol


def test_preferred_leaves_bfloat16_to_amx(dtype):
    """By default: float32 wherever the kernel runs, bfloat16 unless the CPU has AMX; the model
    follows it."""
    assert small_k.preferred(dtype) == (dtype == torch.float32 or not winograd.cpu_has_amx())
    model = DMPHN((1, 2, 4)).eval().requires_grad_(False).to(dtype)
    twin = onednn_model(model)
    assert sum(getattr(m, "small_k", None) is not None for m in twin.modules()) == 3 * small_k.preferred(dtype)
