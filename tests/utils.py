"""Tolerance table and helpers shared by the op tests (see docs: fp32 against float64 tightly,
16-bit types by the rule err(kernel, ref64) <= 2 * err(torch_lowprec, ref64) + atol), and the
resident set size the memory tests read."""

from __future__ import annotations

import os

import torch

# exact layout ops: values are copied or added once in the output type, so the only error is
# the final rounding of the add
ATOL = {torch.float64: 1e-12, torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 1e-2}
FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def assert_within_lowprec_rule(got: torch.Tensor, torch_lowprec: torch.Tensor, ref64: torch.Tensor,
                               atol: float = 1e-6) -> None:
    """The kernel's error against the float64 reference is at most twice PyTorch's own + atol."""
    err = (got.double() - ref64).abs().max().item()
    base = (torch_lowprec.double() - ref64).abs().max().item()
    assert err <= 2 * base + atol, f"error {err:.3g} > 2 x torch's {base:.3g} + {atol}"


def check_nhwc_forms(fn, op, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                     nchw_shape: tuple[int, ...]) -> torch.Tensor:
    """A CPU conv op's forms and threads: fn(x, weight, bias) on NHWC memory given as an [N, H, W, C]
    tensor or as the channels_last [N, C, H, W] view of it gives the same bits in the same form
    (nchw_shape for the view), and the same on one thread; `op` (the torch.ops op behind fn, which
    takes a float32 bias) passes opcheck's schema and fake-tensor tests in both forms. Returns the
    NHWC result."""
    want = fn(x, weight, bias)
    got = fn(x.permute(0, 3, 1, 2), weight, bias)
    assert got.shape == nchw_shape and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got.permute(0, 2, 3, 1), want)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(fn(x, weight, bias), want)
    finally:
        torch.set_num_threads(threads)
    for xin in (x, x.permute(0, 3, 1, 2)):
        torch.library.opcheck(op, (xin, weight, bias.float()), test_utils=("test_schema", "test_faketensor"))
    # the view of a 1x1 image or of an empty batch is contiguous in both formats; it is still the
    # channels_last form (until 2026-12-06 the ops refused it as "not NHWC memory")
    for part in (x[:1, :1, :1].contiguous(), x[:0]):
        view = part.permute(0, 3, 1, 2)
        assert view.is_contiguous() and view.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(fn(view, weight, bias).permute(0, 2, 3, 1), fn(part, weight, bias))
    return want


def rss_bytes() -> int:
    """This process's resident set size now (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
