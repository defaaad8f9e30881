"""End to end: one 1280x720 frame through each model, provider, device and dtype, same run.

Providers:
  official_fp32   the authors' style: eager float32, NCHW, one encoder call per patch (baseline)
  stock_best      the best stock PyTorch we found: CPU bf16 autocast + channels_last (float32 +
                  channels_last on CPUs without bf16 arithmetic);
                  GPU fp16 + channels_last + cudnn.benchmark + a captured CUDA graph
  compiled        torch.compile of the reference (set FASTDEBLUR_BENCH_COMPILE=1: compiling costs
                  15-60 s per shape)
  reference_fp32  fastdeblur's batched reference, float32 (the exact path)
  fastdeblur      fastdeblur.deblur() with its defaults, numpy uint8 in and out (what users get)
  fastdeblur_half the same with dtype float16 (GPU only; on CPUs bfloat16 is the default where fast)
  reference_fp16  the reference module in fp16 channels_last on cuDNN, tensor in and out (GPU)
  fused_fp16      the same weights through fastdeblur.models.fuse_model (Triton where it measured
                  faster, cuDNN elsewhere), GPU
  fused_fp16_all  every layer on the Triton kernels (fuse_model(..., triton="all"))
  fused_fp16_1k   the 32-channel blocks as one Triton kernel each, cuDNN elsewhere
                  (fuse_model(..., triton={"rb32:one"}))
  fused_fp16_graph  fused_fp16 replayed as a captured CUDA graph (what deblur() does for repeated sizes)
  fastdeblur_triton  deblur(..., backend="triton", dtype=float16), numpy in and out (GPU)
  onednn_bf16     CPU: the model through fastdeblur.models.onednn_model (oneDNN convolutions with
                  fused ReLU/residual adds), bfloat16 channels_last, heap pages reused
                  (_heap.reuse_heap), the extension's layout ops, tensor in and out: deblur()'s
                  CPU path without the image conversions (its residual blocks and transposed
                  convolutions on Winograd where deblur() runs them so: AVX512-BF16 without AMX;
                  in bfloat16 on CPUs with AMX every layer but the first on the extension's AMX
                  kernels; its 32 -> 3 layers elsewhere on its small-K kernel where it runs)
  onednn_bf16_f2  the same with the residual blocks on Winograd F(2x2, 3x3) (bfloat16's tile before
                  the complex F(4x4, 3x3))
  onednn_bf16_c4  the same with every residual block on the complex F(4x4, 3x3) (before the complex
                  F(8x8, 3x3) took them all)
  onednn_bf16_direct  the same with every convolution direct on oneDNN (no extension kernels)
  onednn_fp32     the same in float32 (deblur(dtype="float32") on CPU; Winograd F(6x6, 3x3),
                  the transposed convolutions' F(3x3, 2x2) and the stride-2 ones' polyphase
                  F(3, 2) wherever they run)
  onednn_fp32_f4  the same with the residual blocks on the real F(4x4, 3x3) (float32's tile before
                  F(6x6, 3x3))
  onednn_fp32_direct  the same with every convolution direct on oneDNN
Every provider's output is checked against the float32 reference before it is timed.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import MODELS, frame, graphed, timed
from flops import conv_flops

import fastdeblur
from benchmarks import official_style
from fastdeblur.api import default_dtype
from fastdeblur.metrics import psnr

PROVIDERS = ["official_fp32", "stock_best", "reference_fp32", "reference_fp16", "fused_fp16", "fused_fp16_all",
             "fused_fp16_1k", "fused_fp16_graph", "fastdeblur", "fastdeblur_half", "fastdeblur_triton",
             "onednn_bf16", "onednn_bf16_f2", "onednn_bf16_c4", "onednn_bf16_direct", "onednn_fp32",
             "onednn_fp32_f4", "onednn_fp32_direct", "compiled"]
_OFFICIAL = {"dmphn-1-2-4-gopro": official_style.dmphn_124, "dmphn-1-2-4-8-gopro": official_style.dmphn_1248,
             "stack4-dmphn-gopro": official_style.stack_dmphn}
_models: dict = {}
_refs: dict = {}


def _model(name: str, device: str, dtype=torch.float32, channels_last=False):
    key = (name, device, dtype, channels_last)
    if key not in _models:
        m = fastdeblur.load_model(name, device=device, dtype=dtype)
        _models[key] = m.to(memory_format=torch.channels_last) if channels_last else m
    return _models[key]


def _input(device: str) -> torch.Tensor:  # [1, 3, 720, 1280], shifted by -0.5
    return torch.from_numpy(frame()).permute(2, 0, 1)[None].float().div(255).sub(0.5).to(device)


def _to_uint8(y: torch.Tensor) -> np.ndarray:
    return (y.float() + 0.5).clamp(0, 1).mul(255).round().byte()[0].permute(1, 2, 0).cpu().numpy()


def _reference(name: str, device: str) -> np.ndarray:
    if (name, device) not in _refs:
        with torch.inference_mode():
            _refs[name, device] = _to_uint8(_model(name, device)(_input(device)))
    return _refs[name, device]


def _provider(provider: str, name: str, device: str):
    """(a zero-argument function returning the restored frame as -0.5-shifted tensor or uint8, dtype)."""
    x = _input(device)
    if provider == "official_fp32":
        m, fwd = _model(name, device), _OFFICIAL[name]
        return lambda: fwd(m, x), torch.float32
    if provider == "reference_fp32":
        m = _model(name, device, channels_last=device == "cpu")
        xin = x.contiguous(memory_format=torch.channels_last) if device == "cpu" else x
        return lambda: m(xin), torch.float32
    if provider == "fastdeblur":
        img = frame()
        return lambda: fastdeblur.deblur(img, name, device=device), default_dtype(torch.device(device))
    if provider == "fastdeblur_half":
        if device == "cpu":
            pytest.skip("on CPU 16-bit is bfloat16: the default where the CPU has bf16 arithmetic, emulated "
                        "(17x slower) elsewhere")
        img = frame()
        return lambda: fastdeblur.deblur(img, name, device=device, dtype=torch.float16), torch.float16
    if provider in ("reference_fp16", "fused_fp16", "fused_fp16_all", "fused_fp16_1k", "fused_fp16_graph",
                    "fastdeblur_triton"):
        if device == "cpu":
            pytest.skip("GPU provider (Triton runs on CPU only through its interpreter)")
        if provider == "fastdeblur_triton":
            img = frame()
            return lambda: fastdeblur.deblur(img, name, device=device, dtype=torch.float16,
                                             backend="triton"), torch.float16
        from fastdeblur.models import fuse_model

        m = _model(name, device, torch.float16, channels_last=True)
        if provider.startswith("fused"):
            m = fuse_model(m, triton={"fused_fp16_all": "all", "fused_fp16_1k": frozenset({"rb32:one"})}.get(
                provider, "measured"))
        xin = x.half().contiguous(memory_format=torch.channels_last)
        return (graphed(m, xin) if provider.endswith("graph") else lambda: m(xin)), torch.float16
    if provider in ("onednn_bf16", "onednn_bf16_f2", "onednn_bf16_c4", "onednn_bf16_direct", "onednn_fp32",
                    "onednn_fp32_f4", "onednn_fp32_direct"):
        if device != "cpu":
            pytest.skip("CPU provider")
        from fastdeblur._heap import reuse_heap
        from fastdeblur.api import _resolve_backend
        from fastdeblur.models import onednn_available, onednn_model, winograd

        dt = torch.float32 if provider.startswith("onednn_fp32") else torch.bfloat16
        if not onednn_available(dt):
            pytest.skip(f"oneDNN runs no {dt} on this CPU")
        direct = provider.endswith("_direct")
        tile = winograd.TILE[dt]
        try:  # the weights are packed here, for the tile chosen now
            if provider.endswith(("_f2", "_c4", "_f4")):  # F(2x2), bfloat16's complex F(4x4), float32's real one
                winograd.TILE[dt] = 2 if provider.endswith("_f2") else 4
            m = onednn_model(_model(name, device, dt, channels_last=True), use_winograd=False if direct else None,
                             use_small_k=False if direct else None, use_amx=False if direct else None)
        finally:
            winograd.TILE[dt] = tile
        layout = _resolve_backend(None, torch.device(device), dt)[1]  # deblur()'s: the extension's ops
        xin = x.to(dt).contiguous(memory_format=torch.channels_last)

        def run_onednn():
            with reuse_heap():
                return m(xin, layout=layout)
        return run_onednn, dt
    if provider == "stock_best":
        if device == "cpu":  # bfloat16 autocast where the CPU has bf16 arithmetic (emulated elsewhere: 17x slower)
            m = _model(name, device, channels_last=True)
            xin = x.contiguous(memory_format=torch.channels_last)
            dt = default_dtype(torch.device("cpu"))

            def run():
                with torch.autocast("cpu", torch.bfloat16, enabled=dt == torch.bfloat16):
                    return m(xin)
            return run, dt
        torch.backends.cudnn.benchmark = True
        m = _model(name, device, torch.float16, channels_last=True)
        return graphed(m, x.half().contiguous(memory_format=torch.channels_last)), torch.float16
    if provider == "compiled":
        if not os.environ.get("FASTDEBLUR_BENCH_COMPILE"):
            pytest.skip("set FASTDEBLUR_BENCH_COMPILE=1 to benchmark torch.compile (slow to compile)")
        dt = torch.bfloat16 if device == "cpu" else torch.float16
        m = _model(name, device, dt, channels_last=True)
        if device == "cpu":  # weights as constants: inductor's oneDNN fusions (the fastest compile on CPU)
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True
        cm = torch.compile(m)
        xin = x.to(dt).contiguous(memory_format=torch.channels_last)
        return lambda: cm(xin), dt
    raise ValueError(provider)


def checked_psnr(provider: str, out, dtype: torch.dtype, name: str, device: str) -> float:
    """PSNR of a provider's output against the float32 reference; AssertionError if it is wrong
    (under 50 dB for float32, 40 dB for 16-bit types)."""
    got = out if isinstance(out, np.ndarray) else _to_uint8(out)
    quality = psnr(got, _reference(name, device))
    if quality < (50.0 if dtype == torch.float32 else 40.0):
        raise AssertionError(f"{provider} is wrong: {quality:.1f} dB against the float32 reference")
    return quality


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("name", MODELS)
def test_end_to_end(benchmark, provider, name, device):
    fn, dtype = _provider(provider, name, device)
    with torch.inference_mode():
        quality = checked_psnr(provider, fn(), dtype, name, device)
        flops = conv_flops(_model(name, device), 720, 1280)
        timed(benchmark, fn, device, flops=flops, provider=provider, model=name, dtype=str(dtype),
              psnr_vs_fp32=round(quality, 2))
