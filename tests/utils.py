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


def rss_bytes() -> int:
    """This process's resident set size now (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
