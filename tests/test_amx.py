"""The AMX residual block and convolution (csrc/cpu/amx_block.cpp) against float64 by the
2x-PyTorch-error rule, their forms, threads and in-place segments, their errors, and their place
in the CPU model. The kernels' own tests need a CPU with AMX-BF16 and skip elsewhere; the packing
and the errors are checked on every machine."""

import copy

import pytest
import torch
import torch.nn.functional as F

from fastdeblur import _ext
from fastdeblur.models import amx, onednn_available, onednn_model
from fastdeblur.reference import DMPHN
from fastdeblur.reference.dmphn import ResidualBlock

needs_amx = pytest.mark.skipif(not amx.available(), reason="the AMX kernel needs a CPU with AMX-BF16 (Intel "
                               "Sapphire Rapids or later), Linux and the extension")
needs_ext = pytest.mark.skipif(not _ext.load(), reason="needs the compiled extension")


def _block(c: int, seed: int = 0) -> ResidualBlock:
    """A bfloat16 residual block with weights of a trained block's scale (outputs stay O(1))."""
    g = torch.Generator().manual_seed(seed)
    rb = ResidualBlock(c).requires_grad_(False)
    for t in rb.parameters():
        scale = 3 * c ** 0.5 if t.dim() == 4 else 4
        t.copy_(torch.randn(t.shape, generator=g) / scale)
    return rb.to(torch.bfloat16)


def _packed(rb: ResidualBlock) -> tuple[torch.Tensor, ...]:
    return amx.pack(rb[0].weight), rb[0].bias.float(), amx.pack(rb[2].weight), rb[2].bias.float()


@pytest.mark.parametrize("k,c", [(64, 64), (40, 32)])
def test_pack_is_the_layout_the_kernel_reads(k, c):
    """Element ((kp * 9 + tap) * C/32 + cc) * 1024 + j * 512 + r * 32 + o * 2 + p of the packed weight
    (csrc/cpu/amx_block.cpp's reads) is weight[32 kp + 16 j + o, 32 cc + 2 r + p, tap], and zero
    for the output channels past K up to a multiple of 32."""
    w = torch.randn(k, c, 3, 3)
    kp_ = -(-k // 32)
    flat = amx.pack(w).reshape(-1)
    assert flat.dtype == torch.bfloat16 and amx.pack(w).shape == (kp_, 9, c // 32, 2, 16, 16, 2)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        kp, tap, cc, j, r, o, p = (int(torch.randint(n, (), generator=g)) for n in (kp_, 9, c // 32, 2, 16, 16, 2))
        at = ((kp * 9 + tap) * (c // 32) + cc) * 1024 + j * 512 + r * 32 + o * 2 + p
        out = 32 * kp + 16 * j + o
        assert flat[at] == (w[out, 32 * cc + 2 * r + p, tap // 3, tap % 3].bfloat16() if out < k else 0)


@pytest.mark.parametrize("shape", [(32, 48, 3, 3), (32, 32, 3, 1), (0, 32, 3, 3), (32, 0, 3, 3)])
def test_pack_refuses_what_the_kernel_does_not_run(shape):
    with pytest.raises(ValueError, match="input channels a multiple of 32"):
        amx.pack(torch.zeros(shape))


@needs_ext
def test_runs_bfloat16_multiples_of_32_only():
    assert not amx.runs(torch.float32, 32, 32) and not amx.runs(torch.bfloat16, 48, 48)
    assert not amx.runs(torch.bfloat16, 3, 32) and not amx.runs(torch.bfloat16, 32, 0)
    assert amx.runs(torch.bfloat16, 32, 3) == amx.runs(torch.bfloat16, 32, 32)


@needs_ext
def test_refuses_where_it_does_not_run(monkeypatch):
    """On a CPU without AMX (or with torch's kernels limited below AVX-512) the op names that it
    does not run, and the model keeps oneDNN."""
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # the switch that limits torch's kernels
    assert not amx.runs(torch.bfloat16, 32, 32)
    rb = _block(32)
    x = torch.zeros(1, 4, 4, 32, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="does not run on this CPU"):
        amx.residual_block(x, *_packed(rb))
    with pytest.raises(RuntimeError, match="does not run on this CPU"):
        amx.conv3x3(x, amx.pack(rb[0].weight), rb[0].bias)
    if onednn_available(torch.bfloat16):  # not on AVX2-only CPUs
        twin = onednn_model(DMPHN((1,)).eval().requires_grad_(False).to(torch.bfloat16), use_winograd=False,
                            use_amx=True)
        assert not any(getattr(m, "amx", None) is not None for m in twin.modules())


def _assert_within_twice_torchs(got: torch.Tensor, want: torch.Tensor, base: torch.Tensor, what: str) -> None:
    """got's error against float64 `want`, in the worst case and typically, is at most twice that
    of torch's own bfloat16 result `base`."""
    assert got.shape == want.shape and got.dtype == torch.bfloat16 and got.is_contiguous()
    for norm in (lambda e: e.abs().max(), lambda e: e.pow(2).mean().sqrt()):
        err, ref_err = norm(got.double() - want).item(), norm(base.double() - want).item()
        assert err <= 2 * ref_err + 1e-6, f"AMX {what} error {err:.3g} > 2 x torch's {ref_err:.3g}"


def _want(rb: ResidualBlock, h: torch.Tensor) -> torch.Tensor:
    """The block in float64 (its bfloat16 weights), NHWC."""
    return copy.deepcopy(rb).double()(h.permute(0, 3, 1, 2).double()).permute(0, 2, 3, 1)


@needs_amx
@pytest.mark.parametrize("n,c,h,w", [(1, 32, 7, 9), (2, 64, 5, 37), (1, 32, 1, 1), (3, 32, 4, 3), (1, 96, 10, 11),
                                     (2, 32, 3, 131), (1, 128, 6, 70), (1, 32, 40, 33), (1, 64, 2, 64)])
@pytest.mark.parametrize("seed", [0, 1])
def test_error_is_at_most_twice_torchs(n, c, h, w, seed):
    rb = _block(c, seed)
    x = torch.randn(n, h, w, c, generator=torch.Generator().manual_seed(seed + 10)).bfloat16()
    want = _want(rb, x)
    base = rb(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # torch's own bfloat16 block
    got = amx.residual_block(x, *_packed(rb))
    inplace = x.clone()
    assert amx.residual_block_(inplace, *_packed(rb)) is inplace
    assert torch.equal(inplace, got)
    _assert_within_twice_torchs(got, want, base, "block")


@needs_amx
@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_in_place_segments_on_any_thread_count(threads):
    """In place, an image's rows are cut into one segment per thread, whose rows next to another
    segment's are computed before any is written: the bits do not depend on the thread count, for
    batches smaller and larger than it."""
    rb = _block(32, 3)
    for n, h in ((1, 23), (2, 9), (7, 4)):
        x = torch.randn(n, h, 45, 32, generator=torch.Generator().manual_seed(h)).bfloat16()
        want = amx.residual_block(x, *_packed(rb))
        saved = torch.get_num_threads()
        try:
            torch.set_num_threads(threads)
            got = amx.residual_block_(x.clone(), *_packed(rb))
            new = amx.residual_block(x, *_packed(rb))
        finally:
            torch.set_num_threads(saved)
        assert torch.equal(got, want) and torch.equal(new, want)


@needs_amx
def test_forms_and_fake_kernels():
    """NHWC memory as [N, H, W, C] or its channels_last [N, C, H, W] view gives the same bits in the
    same form, on any thread count; empty batches and 1x1 images run; opcheck's schema and
    fake-tensor tests pass (_check_forms, and the in-place op here)."""
    rb = _block(64)
    u = _packed(rb)
    x = torch.randn(2, 6, 11, 64).bfloat16()
    _check_forms(amx.residual_block, torch.ops.fastdeblur.amx_residual_block, x, u, (2, 64, 6, 11))
    want = amx.residual_block(x, *u)
    view = x.clone().permute(0, 3, 1, 2)
    assert amx.residual_block_(view, *u) is view and torch.equal(view.permute(0, 2, 3, 1), want)
    for part in (x[:1, :1, :1].contiguous(), x[:0]):
        assert torch.equal(amx.residual_block(part.permute(0, 3, 1, 2), *u).permute(0, 2, 3, 1),
                           amx.residual_block(part, *u))
    for xin in (x, x.permute(0, 3, 1, 2)):
        torch.library.opcheck(torch.ops.fastdeblur.amx_residual_block_, (xin.clone(), *u),
                              test_utils=("test_schema", "test_faketensor"))


@needs_amx
def test_bad_arguments_name_the_problem():
    rb = _block(32)
    u1, b1, u2, b2 = _packed(rb)
    x = torch.zeros(1, 4, 4, 32, dtype=torch.bfloat16)
    op = amx.residual_block
    with pytest.raises(RuntimeError, match="4-D bfloat16 CPU tensor"):
        op(x.float(), u1, b1, u2, b2)
    with pytest.raises(RuntimeError, match="amx.pack"):
        op(x, u1.float(), b1, u2, b2)
    with pytest.raises(RuntimeError, match="amx.pack"):
        op(x, u1, b1, amx.pack(_block(64)[2].weight), b2)
    with pytest.raises(RuntimeError, match="b1 and b2 must be 32 contiguous float32"):
        torch.ops.fastdeblur.amx_residual_block(x, u1, b1[:16], u2, b2)
    with pytest.raises(RuntimeError, match="NHWC memory with 32 channels"):
        op(torch.zeros(1, 4, 4, 64, dtype=torch.bfloat16), u1, b1, u2, b2)
    with pytest.raises(RuntimeError, match="NHWC memory with 32 channels"):  # a broadcast view: not writable once
        amx.residual_block_(torch.zeros(1, 1, 1, 32, dtype=torch.bfloat16).expand(1, 4, 4, 32), u1, b1, u2, b2)


@needs_amx
@pytest.mark.parametrize("n,c,k,h,w,stride", [(1, 32, 3, 7, 9, 1), (2, 32, 64, 9, 37, 2), (1, 64, 128, 6, 70, 2),
                                              (1, 32, 3, 1, 1, 1), (3, 96, 40, 5, 33, 2), (1, 32, 64, 40, 131, 2),
                                              (2, 64, 17, 8, 64, 1), (1, 32, 33, 2, 2, 2)])
def test_conv_error_is_at_most_twice_torchs(n, c, k, h, w, stride):
    g = torch.Generator().manual_seed(k)
    x = torch.randn(n, h, w, c, generator=g).bfloat16()
    wt = (torch.randn(k, c, 3, 3, generator=g) / (3 * c ** 0.5)).bfloat16()
    b = torch.randn(k, generator=g)
    got = amx.conv3x3(x, amx.pack(wt), b, stride)
    want = F.conv2d(x.permute(0, 3, 1, 2).double(), wt.double(), b.double(), stride=stride, padding=1)
    base = F.conv2d(x.permute(0, 3, 1, 2), wt, b.bfloat16(), stride=stride, padding=1)
    want, base = want.permute(0, 2, 3, 1), base.permute(0, 2, 3, 1)
    _assert_within_twice_torchs(got, want, base, "conv")


def _check_forms(fn, op, x: torch.Tensor, args: tuple, nchw_shape: tuple[int, ...]) -> None:
    """fn(x, *args) on NHWC memory given as [N, H, W, C] or as its channels_last [N, C, H, W] view
    gives the same bits in the same form (nchw_shape for the view), and the same on one thread; `op`
    (the torch.ops op behind fn) passes opcheck's schema and fake-tensor tests in both forms and on
    an empty batch."""
    want = fn(x, *args)
    got = fn(x.permute(0, 3, 1, 2), *args)
    assert got.shape == nchw_shape and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got.permute(0, 2, 3, 1), want)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(fn(x, *args), want)
    finally:
        torch.set_num_threads(saved)
    for xin in (x, x.permute(0, 3, 1, 2), x[:0]):
        torch.library.opcheck(op, (xin, *args), test_utils=("test_schema", "test_faketensor"))


@needs_amx
def test_conv_forms_threads_and_errors():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 45, 32, generator=g).bfloat16()
    u, b = amx.pack(torch.randn(64, 32, 3, 3, generator=g) / 16), torch.randn(64, generator=g)
    for stride in (1, 2):
        _check_forms(amx.conv3x3, torch.ops.fastdeblur.amx_conv3x3, x, (u, b, stride),
                     (2, 64, 7 if stride == 1 else 4, 45 if stride == 1 else 23))
    op = torch.ops.fastdeblur.amx_conv3x3
    with pytest.raises(RuntimeError, match="stride must be 1 or 2, got 3"):
        op(x, u, b, 3)
    with pytest.raises(RuntimeError, match="one per output channel .33 to 64 for this u"):
        op(x, u, b[:32].contiguous(), 1)
    with pytest.raises(RuntimeError, match="amx.pack"):
        op(x, u[:, :4].contiguous(), b, 1)
    with pytest.raises(RuntimeError, match="NHWC memory with 32 channels"):
        op(x[..., :16].contiguous(), u, b, 1)
    with pytest.raises(RuntimeError, match="4-D bfloat16 CPU tensor"):
        op(x.float(), u, b, 1)


@needs_amx
@pytest.mark.parametrize("n,c,k,h,w", [(1, 64, 32, 5, 7), (2, 128, 64, 9, 37), (1, 32, 3, 1, 1), (3, 32, 40, 4, 33),
                                       (1, 64, 32, 40, 70)])
def test_transposed_error_is_at_most_twice_torchs(n, c, k, h, w):
    g = torch.Generator().manual_seed(k)
    x = torch.randn(n, h, w, c, generator=g).bfloat16()
    wt = (torch.randn(c, k, 4, 4, generator=g) / (2 * c ** 0.5)).bfloat16()
    b = torch.randn(k, generator=g)
    got = amx.conv_transpose4x4s2(x, amx.pack_transpose(wt), b)
    v = x.permute(0, 3, 1, 2)
    want = F.conv_transpose2d(v.double(), wt.double(), b.double(), stride=2, padding=1).permute(0, 2, 3, 1)
    base = F.conv_transpose2d(v, wt, b.bfloat16(), stride=2, padding=1).permute(0, 2, 3, 1)
    _assert_within_twice_torchs(got, want, base, "transposed conv")


@needs_amx
def test_transposed_forms_threads_and_errors():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 37, 64, generator=g).bfloat16()
    u, b = amx.pack_transpose(torch.randn(64, 32, 4, 4, generator=g) / 16), torch.randn(32, generator=g)
    _check_forms(amx.conv_transpose4x4s2, torch.ops.fastdeblur.amx_conv_transpose4x4s2, x, (u, b), (2, 32, 10, 74))
    op = torch.ops.fastdeblur.amx_conv_transpose4x4s2
    with pytest.raises(RuntimeError, match="one per output channel .1 to 32 for this u"):
        op(x, u, torch.zeros(33))
    with pytest.raises(RuntimeError, match="amx.pack_transpose"):
        op(x, amx.pack(torch.zeros(32, 64, 3, 3)), b)
    with pytest.raises(RuntimeError, match="NHWC memory with 64 channels"):
        op(x[..., :32].contiguous(), u, b)
    with pytest.raises(ValueError, match="4x4 transposed convolutions with input channels a multiple of 32"):
        amx.pack_transpose(torch.zeros(48, 32, 4, 4))


@needs_amx
def test_model_layers(monkeypatch):
    """A bfloat16 DMPHN(1-2-4)'s 36 residual blocks, its 9 3x3 convolutions with 32 or more input
    channels (stride-2 and 32 -> 3) and its 6 transposed convolutions run on the kernels, by
    default; the first layers (3 input channels) stay on oneDNN; the model stays within 2x torch's
    own forward's error against float64 and tracks the oneDNN-only twin. FASTDEBLUR_AMX=0 leaves
    all to oneDNN."""
    torch.manual_seed(0)
    model = DMPHN((1, 2, 4)).eval().requires_grad_(False).to(memory_format=torch.channels_last)
    x = (torch.rand(2, 3, 40, 72) - 0.5).contiguous(memory_format=torch.channels_last)
    lowp = copy.deepcopy(model).to(torch.bfloat16)
    monkeypatch.delenv("FASTDEBLUR_WINOGRAD", raising=False)
    twin = onednn_model(lowp, use_winograd=False)
    layers = [m for m in twin.modules() if getattr(m, "amx", None) is not None]
    assert sum(m.op == "rb" for m in layers) == 36 and sum(m.op == "up" for m in layers) == 6 and len(layers) == 51
    assert sorted((m.b1.numel(), m.stride) for m in layers if m.op == "conv") == [(3, 1)] * 3 + [(64, 2)] * 3 + [
        (128, 2)] * 3
    plain = onednn_model(lowp, use_winograd=False, use_amx=False)
    assert not any(getattr(m, "amx", None) is not None for m in plain.modules())
    with torch.inference_mode():
        want = model.double()(x.double())
        got, direct, base = twin(x.bfloat16()), plain(x.bfloat16()), lowp(x.bfloat16())
    err, ref_err = (got.double() - want).abs().max().item(), (base.double() - want).abs().max().item()
    assert err <= 2 * ref_err + 1e-3, f"model error {err:.3g} > 2 x torch's {ref_err:.3g}"
    assert (got.double() - direct.double()).abs().max().item() <= 2 * ref_err + 1e-3
    monkeypatch.setenv("FASTDEBLUR_AMX", "0")
    assert not amx.preferred()
    assert not any(getattr(m, "amx", None) is not None for m in onednn_model(lowp, use_winograd=False).modules())
