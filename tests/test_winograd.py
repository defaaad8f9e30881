"""The Winograd kernels (csrc/cpu/winograd.cpp: F(2x2, 3x3) and the transposed convolution's
F(3x3, 2x2) phases in bfloat16 on AVX512-BF16 and in float32 on AVX-512 and on AVX2, the real
F(4x4, 3x3) and F(6x6, 3x3) in float32, the complex F(4x4, 3x3) and F(8x8, 3x3) in bfloat16)
against float64, by the 2x-PyTorch-error rule (the real F(4x4) and F(6x6): their own bounds), and
their place in the CPU model."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastdeblur
from fastdeblur import api
from fastdeblur.models import onednn_model, winograd
from fastdeblur.reference import DMPHN

from .utils import check_nhwc_forms

pytestmark = pytest.mark.skipif(not winograd.available(torch.float32),
                                reason="the Winograd kernels need the extension and a CPU with AVX2 and FMA")
needs_bf16 = pytest.mark.skipif(not winograd.available(torch.bfloat16), reason="no AVX512-BF16 on this CPU")
# (dtype, ATEN_CPU_CAPABILITY, output tile): every kernel this CPU runs; "avx2" limits float32 to
# the AVX2 one. Defaults: bfloat16's tile 8 (the complex F(8x8, 3x3)), float32's tile 6 (the real
# F(6x6, 3x3)); the others on request: tile 2 in both, 4 (bfloat16's complex F(4x4, 3x3), float32's
# real one).
KERNELS = [pytest.param((torch.bfloat16, None, 4), id="bf16-c4", marks=needs_bf16),
           pytest.param((torch.bfloat16, None, 8), id="bf16-c8", marks=needs_bf16),
           pytest.param((torch.bfloat16, None, 2), id="bf16-f2", marks=needs_bf16),
           pytest.param((torch.float32, None, 6), id="fp32-f6"),
           pytest.param((torch.float32, "avx2", 6), id="fp32-f6-avx2"),
           pytest.param((torch.float32, None, 4), id="fp32-f4"),
           pytest.param((torch.float32, "avx2", 4), id="fp32-f4-avx2"),
           pytest.param((torch.float32, None, 2), id="fp32-f2"),
           pytest.param((torch.float32, "avx2", 2), id="fp32-f2-avx2")]
# How far each kernel's error may exceed torch's own convolution's in the same dtype, against
# float64: (max, rms), by (dtype, tile). 2x, the project's rule for low precision, but for the
# real F(4x4, 3x3) and F(6x6, 3x3) (float32 only): their error is ~1e-6 to 1e-5 of the values,
# F(4x4)'s up to 14x direct float32's at the worst pixel and 5x in rms over these cases and seeds,
# F(6x6)'s up to 21x and 11x (any real F(4x4) or F(6x6) has this: the transforms' coefficients,
# up to 8 and 32, amplify rounding). The complex ones' coefficients are 0, +-1 and +-sqrt(1/2).
ERROR_FACTOR = {(torch.bfloat16, 2): (2, 2), (torch.bfloat16, 4): (2, 2), (torch.bfloat16, 8): (2, 2),
                (torch.float32, 2): (2, 2), (torch.float32, 4): (24, 8), (torch.float32, 6): (36, 18)}


@pytest.fixture(params=KERNELS)
def kernel(request, monkeypatch):
    """The dtype under test; its kernel's instruction set and tile are set for the test."""
    dtype, cap, tile = request.param
    if cap is not None:
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", cap)
    monkeypatch.setitem(winograd.TILE, dtype, tile)
    return dtype


def _factor(dtype):
    return ERROR_FACTOR[dtype, winograd.TILE[dtype]]


def _case(n, c, k, h, w, seed=0, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, w, c, generator=g).to(dtype)  # NHWC
    wt = (torch.randn(k, c, 3, 3, generator=g) / (3 * c ** 0.5)).to(dtype)  # a model's weights in dtype
    b = torch.randn(k, generator=g).to(dtype)
    add = torch.randn(n, h, w, k, generator=g).to(dtype)
    return x, wt, b, add


def _nchw(t):
    return t.permute(0, 3, 1, 2)


def _torch_lowp(x, wt, b, relu, add):
    """What torch's own ops give in x's dtype for the same fused layer (NHWC out)."""
    y = F.conv2d(_nchw(x), wt, b, padding=1)
    if relu:
        y = y.relu()
    if add is not None:
        y = y + _nchw(add)
    return y.permute(0, 2, 3, 1)


def _ref64(x, wt, b, relu, add):
    y = F.conv2d(_nchw(x).double(), wt.double(), b.double(), padding=1)
    if relu:
        y = y.relu()
    if add is not None:
        y = y + _nchw(add).double()
    return y.permute(0, 2, 3, 1)


@pytest.mark.parametrize("n,c,k,h,w", [(1, 32, 32, 7, 9), (3, 64, 64, 5, 30), (2, 128, 128, 11, 13),
                                       (1, 16, 32, 1, 1), (1, 32, 64, 50, 51), (3, 48, 96, 2, 3),
                                       (1, 128, 32, 9, 53), (2, 32, 32, 41, 67)])
@pytest.mark.parametrize("relu,with_add", [(False, False), (True, False), (False, True), (True, True)])
def test_error_is_at_most_twice_torchs(kernel, n, c, k, h, w, relu, with_add):
    x, wt, b, add = _case(n, c, k, h, w, dtype=kernel)
    add = add if with_add else None
    got = winograd.conv3x3(x, winograd.pack(wt, kernel), b, relu=relu, add=add)
    assert got.shape == (n, h, w, k) and got.dtype == kernel and got.is_contiguous()
    want = _ref64(x, wt, b, relu, add)
    base = _torch_lowp(x, wt, b, relu, add)
    # float32: both errors are ~1e-6 and torch's varies with its algorithm, hence the small atol
    atol = 1e-6 if kernel == torch.bfloat16 else 2e-6
    norms = (lambda e: e.abs().max(), lambda e: e.pow(2).mean().sqrt())  # worst case and typical
    for norm, k in zip(norms, _factor(kernel), strict=True):
        err, ref_err = norm(got.double() - want).item(), norm(base.double() - want).item()
        assert err <= k * ref_err + atol, f"Winograd error {err:.3g} > {k} x torch's {ref_err:.3g} in {kernel}"


@pytest.fixture(params=[k for k in KERNELS if k.values[0][2] == 2])
def up_kernel(request, monkeypatch):
    """The dtype of a transposed or stride-2 convolution test (one kernel per instruction set)."""
    dtype, cap, _ = request.param
    if cap is not None:
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", cap)
    return dtype


def _assert_within_twice_torchs(got, want, base, dtype, what):
    """got's error against the float64 want is at most 2x torch's own (base), at the worst pixel
    and in rms (float32: both ~1e-6, and torch's varies with its algorithm, hence the atol)."""
    atol = 1e-6 if dtype == torch.bfloat16 else 2e-6
    for norm in (lambda e: e.abs().max(), lambda e: e.pow(2).mean().sqrt()):
        err, ref_err = norm(got.double() - want).item(), norm(base.double() - want).item()
        assert err <= 2 * ref_err + atol, f"{what} error {err:.3g} > 2 x torch's {ref_err:.3g} in {dtype}"


def _up_case(n, c, k, h, w, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, w, c, generator=g).to(dtype)  # NHWC
    wt = (torch.randn(c, k, 4, 4, generator=g) / (4 * c ** 0.5)).to(dtype)  # ConvTranspose2d's [C, K, 4, 4]
    return x, wt, torch.randn(k, generator=g).to(dtype)


@pytest.mark.parametrize("n,c,k,h,w", [(1, 64, 32, 7, 9), (2, 128, 64, 5, 13), (1, 16, 32, 1, 1),
                                       (3, 48, 96, 4, 3), (1, 32, 64, 30, 31), (2, 128, 32, 2, 17)])
@pytest.mark.parametrize("seed", [0, 1])
def test_transposed_error_is_at_most_twice_torchs(up_kernel, n, c, k, h, w, seed):
    """ConvTranspose2d(C, K, 4, stride=2, padding=1) as four F(3x3, 2x2) phases, against float64,
    by the 2x rule in both dtypes (its transforms have coefficients 1/2 and 1 only)."""
    x, wt, b = _up_case(n, c, k, h, w, up_kernel, seed)
    got = winograd.conv_transpose4x4s2(x, winograd.pack_transpose(wt, up_kernel), b)
    assert got.shape == (n, 2 * h, 2 * w, k) and got.dtype == up_kernel and got.is_contiguous()
    want = F.conv_transpose2d(_nchw(x).double(), wt.double(), b.double(), stride=2, padding=1).permute(0, 2, 3, 1)
    base = F.conv_transpose2d(_nchw(x), wt, b, stride=2, padding=1).permute(0, 2, 3, 1)
    _assert_within_twice_torchs(got, want, base, up_kernel, "transposed")


def test_transposed_forms_threads_and_checks(up_kernel):
    x, wt, b = _up_case(2, 32, 64, 5, 27, up_kernel)
    u = winograd.pack_transpose(wt, up_kernel)
    check_nhwc_forms(winograd.conv_transpose4x4s2, torch.ops.fastdeblur.winograd_conv_transpose4x4s2, x, u, b,
                     (2, 64, 10, 54))
    op = winograd.conv_transpose4x4s2
    with pytest.raises(RuntimeError, match="winograd.pack_transpose .NP = 64."):  # 3x3 weights
        op(x, winograd.pack(torch.zeros(64, 32, 3, 3), up_kernel, tile=2), b)
    with pytest.raises(RuntimeError, match="NHWC memory with 32 channels"):
        op(x[..., :16].contiguous(), u, b)
    with pytest.raises(RuntimeError, match="bias"):
        op(x, u, b[:32])
    with pytest.raises(ValueError, match="does not run a .32, 64, 3, 3. transposed weight"):
        winograd.pack_transpose(torch.zeros(32, 64, 3, 3), up_kernel)
    with pytest.raises(ValueError, match="does not run a .32, 40, 4, 4. transposed weight"):
        winograd.pack_transpose(torch.zeros(32, 40, 4, 4), up_kernel)


@pytest.mark.parametrize("n,c,k,h,w", [(1, 32, 64, 7, 9), (2, 64, 128, 13, 12), (1, 16, 32, 1, 1),
                                       (3, 48, 96, 2, 3), (1, 32, 64, 30, 31), (2, 128, 32, 6, 25)])
@pytest.mark.parametrize("seed", [0, 1])
def test_stride2_error_is_at_most_twice_torchs(up_kernel, n, c, k, h, w, seed):
    """Conv2d(C, K, 3, stride=2, padding=1) as a polyphase Winograd (F(3, 2) on the even input
    offsets, the odd ones passed through), against float64, by the 2x rule in both dtypes (its
    transforms have coefficients 1/2 and 1 only); odd sides give (side + 1) // 2 outputs."""
    x, wt, b, _ = _case(n, c, k, h, w, seed, dtype=up_kernel)
    got = winograd.conv3x3s2(x, winograd.pack_stride2(wt, up_kernel), b)
    assert got.shape == (n, (h + 1) // 2, (w + 1) // 2, k) and got.dtype == up_kernel and got.is_contiguous()
    want = F.conv2d(_nchw(x).double(), wt.double(), b.double(), stride=2, padding=1).permute(0, 2, 3, 1)
    base = F.conv2d(_nchw(x), wt, b, stride=2, padding=1).permute(0, 2, 3, 1)
    _assert_within_twice_torchs(got, want, base, up_kernel, "stride-2")


def test_stride2_forms_threads_and_checks(up_kernel):
    x, wt, b, _ = _case(2, 32, 64, 13, 27, dtype=up_kernel)
    u = winograd.pack_stride2(wt, up_kernel)
    check_nhwc_forms(winograd.conv3x3s2, torch.ops.fastdeblur.winograd_conv3x3s2, x, u, b, (2, 64, 7, 14))
    op = winograd.conv3x3s2
    with pytest.raises(RuntimeError, match="winograd.pack_stride2 .NP = 49."):  # a stride-1 packing
        op(x, winograd.pack(wt, up_kernel, tile=2), b)
    with pytest.raises(RuntimeError, match="NHWC memory with 32 channels"):
        op(x[..., :16].contiguous(), u, b)
    with pytest.raises(RuntimeError, match="bias"):
        op(x, u, b[:32])
    with pytest.raises(ValueError, match="does not run a .64, 32, 4, 4. stride-2 weight"):
        winograd.pack_stride2(torch.zeros(64, 32, 4, 4), up_kernel)
    with pytest.raises(ValueError, match="does not run a .40, 32, 3, 3. stride-2 weight"):
        winograd.pack_stride2(torch.zeros(40, 32, 3, 3), up_kernel)


def _c4_bt(d):  # the complex F(4x4, 3x3)'s B^T d: values at 0, 1, -1, infinity, then i's real and imaginary parts
    return [d[0] - d[4], d[1] + d[2] + d[3] + d[4], d[2] - d[1] + d[4] - d[3], d[5] - d[1], d[4] - d[2], d[3] - d[1]]


def _c4_at(m):  # its A^T m (each conjugate pair once: pack's weights carry the factor 2)
    return [m[0] + m[1] + m[2] + m[4], m[1] - m[2] - m[5], m[1] + m[2] - m[4], m[1] - m[2] + m[3] + m[5]]


_R = 0.5 ** 0.5


def _c8_bt(d):  # the complex F(8x8, 3x3)'s: at 0, 1, -1, infinity, then i, e^(-i pi/4), e^(3i pi/4) (re, im)
    b1, b2, b3, b4 = d[1] - d[5], d[2] - d[6], d[3] - d[7], d[8] - d[4]
    a1, a2, a3, a4 = d[1] + d[5], d[2] + d[6], d[3] + d[7], d[8] + d[4]
    return [d[0] - d[8], a1 + a2 + a3 + a4, a2 + a4 - a1 - a3, d[9] - d[1], a4 - a2, a3 - a1,
            b4 + _R * (b1 - b3), b2 + _R * (b1 + b3), b4 - _R * (b1 - b3), b2 - _R * (b1 + b3)]


def _c8_at(m):  # its A^T m: y_k = sum of the real points' m z^k, and of Re(z^k (re + i im)) for the pairs
    m0, m1, mm, mi, ri, ii, rw, iw, r3, i3 = m
    s, d = m1 + mm, m1 - mm
    e, f = _R * (rw + iw - r3 - i3), _R * (r3 - i3 - rw + iw)
    return [m0 + s + ri + rw + r3, d - ii + e, s - ri + iw + i3, d + ii + f, s + ri - rw - r3, d - ii - e,
            s - ri - iw - i3, d + ii - f + mi]


@pytest.mark.parametrize("m,bt,at", [(4, _c4_bt, _c4_at), (8, _c8_bt, _c8_at)], ids=["c4", "c8"])
def test_complex_weights_give_the_convolution_in_float64(m, bt, at):
    """pack's complex F(4x4, 3x3) (46 positions) and F(8x8, 3x3) (142) weights, with the
    kernel's transforms and position order (csrc/cpu/winograd_body.h) done here in float64, give
    the 3x3 convolution to float64 rounding: the algorithm and the packing, apart from the
    kernel's bfloat16 rounding."""
    g = torch.Generator().manual_seed(3)
    x, w = torch.randn(2, 5, 9, 10, generator=g, dtype=torch.float64), torch.randn(7, 5, 3, 3, generator=g,
                                                                                   dtype=torch.float64)
    n, pairs = m + 2, m // 2 - 1  # input tile side; conjugate pairs (1 or 3)
    u = winograd._complex(w, m)  # [NP, K, C]
    assert u.shape[0] == 16 + 24 * pairs + 6 * pairs ** 2
    # pack applies the same transforms as one linear map of the 3x3 taps
    via_map = (winograd._tap_map(m, True) @ w.reshape(-1, 9).T).reshape(u.shape)
    assert torch.allclose(via_map, u, rtol=0, atol=1e-12)
    tn = -(-10 // m)  # tiles per side: 3 x 3 of 4x4, 2 x 2 of 8x8
    pad = tn * m + 2 - 11
    tiles = F.pad(x, (1, pad, 1, pad + 1)).unfold(2, n, m).unfold(3, n, m)  # [N, C, tn, tn, n, n]
    cols = [bt([tiles[..., i, j] for i in range(n)]) for j in range(n)]
    r = [bt([cols[j][i] for j in range(n)]) for i in range(n)]  # r[i][j]

    def gauss(a, b):
        return [a, b, a + b]

    v = []  # the kernel's order of positions
    for i in range(4):
        v += r[i][:4]
        for q in range(pairs):
            v += gauss(r[i][4 + 2 * q], r[i][5 + 2 * q])
    for p in range(pairs):
        for j in range(4):
            v += gauss(r[4 + 2 * p][j], r[5 + 2 * p][j])
    for p in range(pairs):
        for q in range(pairs):
            a, b = r[4 + 2 * p][4 + 2 * q], r[4 + 2 * p][5 + 2 * q]
            c, d = r[5 + 2 * p][4 + 2 * q], r[5 + 2 * p][5 + 2 * q]
            v += gauss(a - d, b + c) + gauss(a + d, c - b)
    prod = torch.einsum("snctw,skc->snktw", torch.stack(v), u)

    def cplx(k):
        return prod[k] - prod[k + 2], prod[k + 2] - prod[k + 1]

    row, pair_col, pair_pair = 4 + 3 * pairs, 16 + 12 * pairs, 16 + 24 * pairs  # where the kinds start
    rm = [[None] * n for _ in range(n)]
    for i in range(4):
        rm[i][:4] = [prod[row * i + j] for j in range(4)]
        for q in range(pairs):
            rm[i][4 + 2 * q], rm[i][5 + 2 * q] = cplx(row * i + 4 + 3 * q)
    for p in range(pairs):
        for j in range(4):
            rm[4 + 2 * p][j], rm[5 + 2 * p][j] = cplx(pair_col + 3 * (4 * p + j))
    for p in range(pairs):
        for q in range(pairs):
            (pr, pi), (qr, qi) = cplx(pair_pair + 6 * (pairs * p + q)), cplx(pair_pair + 6 * (pairs * p + q) + 3)
            i, j = 4 + 2 * p, 4 + 2 * q
            rm[i][j], rm[i][j + 1], rm[i + 1][j], rm[i + 1][j + 1] = pr + qr, pi - qi, pi + qi, qr - pr
    s = [at([rm[i][j] for i in range(n)]) for j in range(n)]
    y = torch.stack([torch.stack(at([s[j][i] for j in range(n)])) for i in range(m)])  # [m, m, N, K, tn, tn]
    y = y.permute(2, 3, 4, 0, 5, 1).reshape(2, 7, tn * m, tn * m)[:, :, :9, :10]
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1), rtol=0, atol=1e-12)


def test_in_place_residual_add_equals_the_functional_op(kernel):
    x, wt, b, add = _case(2, 32, 64, 9, 13, dtype=kernel)
    u = winograd.pack(wt, kernel)
    want = winograd.conv3x3(x, u, b, add=add)
    acc = add.clone()
    got = winograd.conv3x3_add_(acc, x, u, b)
    assert got is acc and torch.equal(acc, want)
    view = add.clone().permute(0, 3, 1, 2)  # the channels_last [N, C, H, W] form
    winograd.conv3x3_add_(view, x.permute(0, 3, 1, 2), u, b)
    assert torch.equal(view.permute(0, 2, 3, 1), want)
    one, add1 = x[:1, :1, :1].contiguous(), add[:1, :1, :1].contiguous()  # 1x1: views contiguous in both formats
    want1 = winograd.conv3x3(one, u, b, add=add1)
    assert torch.equal(winograd.conv3x3(one.permute(0, 3, 1, 2), u, b, add=add1.permute(0, 3, 1, 2)),
                       want1.permute(0, 3, 1, 2))
    view1 = add1.clone().permute(0, 3, 1, 2)
    winograd.conv3x3_add_(view1, one.permute(0, 3, 1, 2), u, b)
    assert torch.equal(view1.permute(0, 2, 3, 1), want1)
    with pytest.raises(RuntimeError, match="must not share memory"):
        same = torch.randn(1, 4, 4, 32).to(kernel)
        winograd.conv3x3_add_(same, same, winograd.pack(_case(1, 32, 32, 1, 1, dtype=kernel)[1], kernel), b[:32])
    with pytest.raises(RuntimeError, match="acc must be"):
        winograd.conv3x3_add_(acc[:, :4].contiguous(), x, u, b)
    torch.library.opcheck(torch.ops.fastdeblur.winograd_conv3x3_add_, (add.clone(), x, u, b.float()),
                          test_utils=("test_schema", "test_faketensor"))


def test_the_capability_switch_picks_the_avx2_kernel(monkeypatch):
    """float32 weights pack for the kernel that will run them: 16-wide panels on AVX2."""
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert winograd.register_block(torch.float32, 32, 64) == 16
    assert winograd.register_block(torch.bfloat16, 32, 64) == 0  # bfloat16 needs AVX512-BF16
    u = winograd.pack(torch.zeros(64, 32, 3, 3), torch.float32)
    assert u.shape == (64, 4, 32, 16, 1)  # F(6x6, 3x3): 8x8 positions
    assert winograd.pack(torch.zeros(64, 32, 3, 3), torch.float32, tile=2).shape == (16, 4, 32, 16, 1)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert winograd.register_block(torch.float32, 32, 64) == 0
    x = torch.zeros(1, 4, 4, 32)
    with pytest.raises(RuntimeError, match="does not run Float with 32 -> 64 channels on this CPU"):
        winograd.conv3x3(x, u, torch.zeros(64))


def test_default_tiles():
    """bfloat16 packs the complex F(8x8, 3x3) (142 positions) at every channel count, float32
    the real F(6x6, 3x3) (64); tile= picks another."""
    assert winograd.TILE == {torch.bfloat16: 8, torch.float32: 6}
    if winograd.available(torch.bfloat16):
        for c in (32, 64, 128):
            assert winograd.pack(torch.zeros(c, c, 3, 3)).shape[0] == 142
        assert winograd.pack(torch.zeros(64, 64, 3, 3), tile=4).shape[0] == 46
    if winograd.available(torch.float32):
        assert winograd.pack(torch.zeros(64, 64, 3, 3), torch.float32).shape[0] == 64
        assert winograd.pack(torch.zeros(64, 64, 3, 3), torch.float32, tile=4).shape[0] == 36


def test_channels_last_view_in_and_out(kernel):
    """The oneDNN model's form: a channels_last [N, C, H, W] view of NHWC memory, kept on the way out."""
    x, wt, b, add = _case(2, 32, 64, 6, 7, dtype=kernel)
    u = winograd.pack(wt, kernel)
    got = winograd.conv3x3(_nchw(x), u, b, relu=True, add=_nchw(add))
    assert got.shape == (2, 64, 6, 7) and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got.permute(0, 2, 3, 1), winograd.conv3x3(x, u, b, relu=True, add=add))


def test_threads_and_blocks_do_not_change_the_result(kernel):
    """Rows of tiles wider than a block (4 to 12 tiles) and any thread count give the same bits."""
    x, wt, b, _ = _case(1, 32, 32, 41, 101, dtype=kernel)
    u = winograd.pack(wt, kernel)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = winograd.conv3x3(x, u, b)
        torch.set_num_threads(2)
        two = winograd.conv3x3(x, u, b)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    # each output pixel depends on its 3x3 neighbourhood only: a crop of the input at a tile
    # boundary gives the same interior, away from the tiles that read the crop's zero padding
    # (and the complex F(8x8)'s tiles that lie inside the image, done whole, give the bits of the
    # same tiles done piece by piece at the crop's edges)
    m = winograd.TILE[kernel]  # the output tile, the input tiles' step: 48 is a multiple of every one
    crop = winograd.conv3x3(x[:, :, 48:79].contiguous(), u, b)
    assert torch.equal(crop[:, :, m:-m], one[:, :, 48 + m:79 - m])


@pytest.mark.parametrize("c,k", [(32, 32), (64, 64), (128, 32)])
def test_a_zero_border_gives_the_same_bits(kernel, c, k):
    """The image framed by 24 zero pixels (a multiple of every tile step, so the tiles line up)
    gives the same bits inside: the tiles at the image's edge, whose pixels past it read as zeros
    (bounds-checked pieces), against the same tiles inside the framed one (done whole, without
    checks, by the complex F(8x8)), with ReLU and with the residual add."""
    x, wt, b, add = _case(1, c, k, 35, 43, seed=3, dtype=kernel)
    u = winograd.pack(wt, kernel)
    p = 24

    def framed(t):
        return F.pad(t, (0, 0, p, p, p, p))  # NHWC: W and H

    for relu, a in ((True, None), (False, add)):
        want = winograd.conv3x3(x, u, b, relu=relu, add=a)
        got = winograd.conv3x3(framed(x), u, b, relu=relu, add=None if a is None else framed(a))
        assert torch.equal(got[:, p:-p, p:-p], want)


def test_a_large_output_streams_the_same_bits(kernel):
    """An output of 8 MiB or more without a residual add is written with non-temporal stores
    (bfloat16: two channel vectors a pixel at once): the same bits as the add path's ordinary
    stores, adding zeros."""
    x, wt, b, _ = _case(1, 32, 32, 264, 520, seed=5, dtype=kernel)
    u = winograd.pack(wt, kernel)
    got = winograd.conv3x3(x, u, b, relu=True)
    assert got.numel() * got.element_size() >= 8 << 20
    assert torch.equal(got, winograd.conv3x3(x, u, b, relu=True, add=torch.zeros_like(got)))


def test_bad_arguments_name_the_problem():
    x, wt, b, add = _case(1, 32, 32, 4, 4, dtype=torch.float32)
    u = winograd.pack(wt, torch.float32)
    op = winograd.conv3x3
    with pytest.raises(RuntimeError, match="bfloat16 or float32"):
        op(x.double(), u, b)
    with pytest.raises(RuntimeError, match="winograd.pack"):
        op(x.bfloat16(), u, b)  # weights packed for another dtype
    with pytest.raises(RuntimeError, match="NHWC memory with 32 channels"):
        op(x[..., :16].contiguous(), u, b)
    with pytest.raises(RuntimeError, match="winograd.pack"):
        op(x, u[..., :0].contiguous(), b)
    with pytest.raises(RuntimeError, match="bias"):
        op(x, u, b[:16])
    with pytest.raises(RuntimeError, match="add must be"):
        op(x, u, b, add=add[:, :2].contiguous())
    with pytest.raises(ValueError, match="does not run a .32, 3, 3, 3. weight"):
        winograd.pack(torch.zeros(32, 3, 3, 3), torch.float32)
    with pytest.raises(ValueError, match="does not run a .40, 32, 3, 3. weight"):
        winograd.pack(torch.zeros(40, 32, 3, 3), torch.float32)
    with pytest.raises(ValueError, match="does not run"):
        winograd.pack(torch.zeros(32, 32, 5, 5), torch.float32)
    for dtype in (torch.float32, torch.bfloat16):
        with pytest.raises(ValueError, match="Winograd tile 3: the kernel runs F.2x2, 3x3. and F.4x4, 3x3.,"):
            winograd.pack(wt, dtype, tile=3)
    with pytest.raises(ValueError, match="Winograd tile 8: .* and F.8x8, 3x3. in bfloat16"):
        winograd.pack(wt, torch.float32, tile=8)
    with pytest.raises(ValueError, match="Winograd tile 6: .* F.6x6, 3x3. in float32"):
        winograd.pack(wt, torch.bfloat16, tile=6)
    # the real F(4x4, 3x3)'s and F(6x6, 3x3)'s weights built by hand for bfloat16, and the complex
    # one's for float32
    for real in (winograd.pack(wt, torch.float32, tile=4), u):
        with pytest.raises(RuntimeError, match=rf"NP = 16, 46 or 142\), got BFloat16 \[{len(real)}"):
            op(x.bfloat16(), real.bfloat16(), b)
    with pytest.raises(RuntimeError, match=r"NP = 16, 36 or 64\), got Float \[46"):
        op(x, torch.zeros(46, *u.shape[1:]), b)


def test_fake_kernel_and_schema(kernel):
    x, wt, b, add = _case(1, 16, 32, 3, 5, dtype=kernel)
    torch.library.opcheck(torch.ops.fastdeblur.winograd_conv3x3, (x, winograd.pack(wt, kernel), b.float(), True, add),
                          test_utils=("test_schema", "test_faketensor"))


def test_preferred_follows_the_switch(monkeypatch):
    monkeypatch.delenv("FASTDEBLUR_WINOGRAD", raising=False)
    assert winograd.preferred(torch.float32)  # float32: wherever it runs
    if winograd.available(torch.bfloat16):  # bfloat16: unless the CPU has AMX
        assert winograd.preferred(torch.bfloat16) == (not torch.cpu._is_amx_tile_supported())
    else:
        assert not winograd.preferred(torch.bfloat16)
    monkeypatch.setenv("FASTDEBLUR_WINOGRAD", "1")
    assert winograd.preferred(torch.float32)
    monkeypatch.setenv("FASTDEBLUR_WINOGRAD", "0")
    assert not winograd.preferred(torch.float32)
    monkeypatch.setenv("FASTDEBLUR_WINOGRAD", "maybe")
    with pytest.raises(fastdeblur.InputError, match="FASTDEBLUR_WINOGRAD"):
        winograd.preferred(torch.float32)


def test_model_with_winograd_is_as_close_as_onednns(kernel, monkeypatch):
    """DMPHN(1-2-4) with every residual block, transposed and stride-2 convolution on Winograd: its
    error against the float64 model is at most twice torch's own forward's in the same dtype, and
    it tracks the oneDNN-only model."""
    torch.manual_seed(0)
    model = DMPHN((1, 2, 4)).eval().requires_grad_(False).to(memory_format=torch.channels_last)
    x = (torch.rand(2, 3, 40, 56) - 0.5).contiguous(memory_format=torch.channels_last)
    lowp = copy.deepcopy(model).to(kernel)
    monkeypatch.setenv("FASTDEBLUR_WINOGRAD", "0")  # the argument wins over the switch
    fused = onednn_model(lowp, use_winograd=True)
    def winograd_layers(m):
        return [m for m in m.modules() if getattr(m, "op", None) in ("rb", "up") or getattr(m, "stride", 1) == 2]

    layers = winograd_layers(fused)
    assert len(layers) == 36 + 6 + 6 and all(m.winograd is not None for m in layers)  # blocks, deconvs, stride 2
    monkeypatch.setenv("FASTDEBLUR_WINOGRAD", "1")
    plain = onednn_model(lowp, use_winograd=False)
    assert all(m.winograd is None for m in winograd_layers(plain))
    atol = 1e-3 if kernel == torch.bfloat16 else 1e-5
    with torch.inference_mode():
        want = model.double()(x.double())
        got, direct, base = fused(x.to(kernel)), plain(x.to(kernel)), lowp(x.to(kernel))
    err, ref_err = (got.double() - want).abs().max().item(), (base.double() - want).abs().max().item()
    assert err <= 2 * ref_err + atol, f"Winograd model error {err:.3g} > 2 x torch's {ref_err:.3g} in {kernel}"
    assert (got.double() - direct.double()).abs().max().item() <= 2 * ref_err + atol


def test_deblur_with_and_without_winograd(kernel, monkeypatch):
    """deblur() end to end (untrained weights: the kernels, not the model, are under test)."""
    torch.manual_seed(0)
    model = DMPHN((1, 2, 4)).eval().requires_grad_(False).to(kernel)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (45, 67, 3), dtype=np.uint8)
    outs = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("FASTDEBLUR_WINOGRAD", flag)
        api._fused_cache.clear()
        outs[flag] = fastdeblur.deblur(img, model=model, device="cpu")
        twin = api._fused_cache[model]["onednn"]
        layers = [m for m in twin.modules() if getattr(m, "op", None) in ("rb", "up")]
        assert {m.winograd is not None for m in layers} == {flag == "1"}
    assert outs["1"].shape == img.shape and outs["1"].dtype == np.uint8
    assert fastdeblur.metrics.psnr(outs["1"], outs["0"]) >= (40 if kernel == torch.bfloat16 else 60)


def test_the_ab_tool_times_a_build_against_itself(tmp_path):
    """benchmarks/ab_ext.py (how kernel changes are measured, README: Benchmarks) loads each
    given library as the extension in its own process: the same build twice gives the same bits."""
    import subprocess
    import sys
    from pathlib import Path

    from fastdeblur import _C

    tool = Path(__file__).resolve().parents[1] / "benchmarks" / "ab_ext.py"
    lib = _C.__file__
    run = subprocess.run([sys.executable, str(tool), lib, lib, "--rounds", "1", "--calls", "1"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [ln for ln in run.stdout.splitlines() if ln.startswith("| conv") or ln.startswith("| trans")
            or ln.startswith("| stride")]
    assert len(rows) == 10 and "outputs: the same bits in every run" in run.stdout, run.stdout
    (tmp_path / "not_a_library.so").write_bytes(b"nothing")
    bad = subprocess.run([sys.executable, str(tool), lib, str(tmp_path / "not_a_library.so"), "--rounds", "1"],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "not_a_library.so: the run failed" in bad.stderr
