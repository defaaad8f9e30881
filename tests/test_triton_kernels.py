"""Triton kernels against the float64 PyTorch reference (on CPU through Triton's interpreter).

fp32 runs with input_precision="ieee" and must match float64 tightly; fp16 follows the rule
err(kernel, ref64) <= 2 * err(torch's fp16 op, ref64) + atol. bf16 is broken in the interpreter
(Triton 3.6-3.9), so it is checked on the GPU only. Odd sizes, batch 1 and 3, DMPHN's channel
counts and a small odd one.
"""


import pytest
import torch
import torch.nn.functional as F
from fastdeblur.kernels import compiled_variants, jit_kernels

from fastdeblur import ops
from fastdeblur.ops.conv import triton_usable

from .conftest import benchmark_module
from .utils import assert_within_lowprec_rule

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(not triton_usable(torch.device(DEVICE)),
                                reason="Triton unusable here (no triton, or no GPU and no TRITON_INTERPRET=1)")
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else [])
CHANNELS = [(3, 32), (32, 32), (64, 64), (128, 128), (32, 64), (7, 5), (32, 3)]


def _rand(*shape, scale=1.0):
    return torch.randn(*shape, dtype=torch.float64, device=DEVICE) * scale


def _check(got, ref64, lowprec_torch, dtype):
    if dtype == torch.float32:
        torch.testing.assert_close(got.double(), ref64, rtol=1e-5, atol=1e-5)
    else:
        assert_within_lowprec_rule(got, lowprec_torch, ref64, atol=1e-3)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cin,cout", CHANNELS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("n,h,w", [(1, 9, 11), (3, 6, 7)])
def test_conv3x3_fused_epilogue(dtype, cin, cout, stride, n, h, w):
    x, xa = _rand(n, cin, h, w), _rand(n, cin, h, w)
    wt, b = _rand(cout, cin, 3, 3, scale=0.2), _rand(cout)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    res, extra = _rand(n, cout, ho, wo), _rand(n, cout, ho, wo)
    kw = dict(stride=stride, relu=True)
    ref64 = ops.conv3x3(x, wt, b, x_add=xa, residual=res, extra=extra, backend="reference", **kw)
    lo = [t.to(dtype) for t in (x, wt, b, xa, res, extra)]
    got = ops.conv3x3(lo[0], lo[1], lo[2], x_add=lo[3], residual=lo[4], extra=lo[5], backend="triton", **kw)
    assert got.shape == ref64.shape and got.dtype == dtype
    torch_lo = ops.conv3x3(lo[0], lo[1], lo[2], x_add=lo[3], residual=lo[4], extra=lo[5], backend="reference", **kw)
    _check(got, ref64, torch_lo, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cin,cout,block_k,block_n", [(32, 32, 32, 32), (64, 64, 32, 32), (128, 128, 64, 128),
                                                     (40, 24, 32, 32), (8, 3, 16, 16)])
@pytest.mark.parametrize("n,h,w,block_m", [(1, 9, 11, 8), (3, 6, 7, 16), (1, 5, 20, 256)])
def test_conv3x3_tma(dtype, cin, cout, block_k, block_n, n, h, w, block_m, monkeypatch):
    """The TMA variant (stride 1): each tap's input tile is one descriptor load whose outside-the-
    image part comes back zero. Runs that cross a row's end, a channel chunk past Cin (40 with
    block_k 32), 8 input channels (TMA's 16 bytes in 16-bit types) and 3 outputs, output channels
    over two programs (64 in blocks of 32); bias, ReLU and both epilogue adds."""
    import triton
    from fastdeblur.kernels import conv3x3 as k

    if k.TensorDescriptor is None:
        pytest.skip("this Triton has no host-side tensor descriptors")
    x, wt, b = _rand(n, cin, h, w), _rand(cout, cin, 3, 3, scale=0.2), _rand(cout)
    res, extra = _rand(n, cout, h, w), _rand(n, cout, h, w)
    ref64 = ops.conv3x3(x, wt, b, relu=True, residual=res, extra=extra, backend="reference")
    lo = [t.to(dtype) for t in (x, wt, b, res, extra)]
    nhwc = [t.permute(0, 2, 3, 1).contiguous() for t in (lo[0], lo[3], lo[4])]
    assert k.tma_fits(nhwc[0])
    loads = []
    real = k.TensorDescriptor.from_tensor
    monkeypatch.setattr(k.TensorDescriptor, "from_tensor", lambda t, box: loads.append(box) or real(t, box))
    got = k.conv3x3_nhwc(nhwc[0], k.pack_conv3x3_weight(lo[1]), lo[2], relu=True, residual=nhwc[1], extra=nhwc[2],
                         tiles=k.Tiles(block_m, block_n, block_k, tma=True))
    assert loads == [[1, 1, block_m, min(block_k, triton.next_power_of_2(cin))]]  # the TMA kernel ran
    got = got.permute(0, 3, 1, 2)
    torch_lo = ops.conv3x3(lo[0], lo[1], lo[2], relu=True, residual=lo[3], extra=lo[4], backend="reference")
    _check(got, ref64, torch_lo, dtype)


def test_conv3x3_tma_switch_and_its_limits(monkeypatch):
    """FASTDEBLUR_TRITON_TMA=1 turns the variant on for stride-1 tiles (block_m at most 256);
    calls it cannot run (a prologue add, stride 2, pixel rows not 16-byte multiples) take the
    pointer kernel, with the same results."""
    from fastdeblur.kernels import conv3x3 as k

    assert not k.tiles_for("conv", 32, 32, interpret=True).tma
    monkeypatch.setenv("FASTDEBLUR_TRITON_TMA", "1")
    t = k.tiles_for("conv", 32, 32, interpret=True)
    assert t.tma and t.block_m == 256 and not k.tiles_for("conv_s2", 32, 64, interpret=True).tma
    x = torch.zeros(1, 4, 5, 32, device=DEVICE)
    assert k.tma_fits(x) == (k.TensorDescriptor is not None)
    assert not k.tma_fits(x, stride=2) and not k.tma_fits(x, x_add=x)
    assert not k.tma_fits(torch.zeros(1, 4, 5, 7, device=DEVICE, dtype=torch.float16))  # 14-byte rows
    assert not k.tma_fits(x.permute(0, 2, 1, 3))  # not contiguous
    loads = []
    if k.TensorDescriptor is not None:
        real = k.TensorDescriptor.from_tensor
        monkeypatch.setattr(k.TensorDescriptor, "from_tensor", lambda t, box: loads.append(box) or real(t, box))
    for cin, stride, add in ((7, 1, False), (32, 1, True), (32, 2, False), (32, 1, False)):  # the last one fits
        x, wt, b = _rand(1, cin, 6, 9), _rand(5, cin, 3, 3, scale=0.2), _rand(5)
        xa = _rand(*x.shape) if add else None
        ref64 = ops.conv3x3(x, wt, b, stride=stride, x_add=xa, backend="reference")
        got = ops.conv3x3(x.float(), wt.float(), b.float(), stride=stride, x_add=None if xa is None else xa.float(),
                          backend="triton")
        torch.testing.assert_close(got.double(), ref64, rtol=1e-5, atol=1e-5)
    assert len(loads) == (k.TensorDescriptor is not None)  # only the last call ran the TMA kernel


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("c", [32, 64, 128, 5])
@pytest.mark.parametrize("with_extra", [False, True])
@pytest.mark.parametrize("one_kernel", [False, True], ids=["two-kernels", "one-kernel"])
def test_conv_relu_residual(dtype, c, with_extra, one_kernel):
    x = _rand(3 if c == 32 else 1, c, 7, 9)
    w1, w2 = _rand(c, c, 3, 3, scale=0.1), _rand(c, c, 3, 3, scale=0.1)
    b1, b2 = _rand(c), _rand(c)
    extra = _rand(*x.shape) if with_extra else None
    ref64 = ops.conv_relu_residual(x, w1, b1, w2, b2, extra, backend="reference")
    lo = [t.to(dtype) if t is not None else None for t in (x, w1, b1, w2, b2, extra)]
    got = ops.conv_relu_residual(*lo, backend="triton", one_kernel=one_kernel)
    assert got.shape == x.shape and got.dtype == dtype
    _check(got, ref64, ops.conv_relu_residual(*lo, backend="reference"), dtype)


@pytest.mark.parametrize("c,n,h,w", [(32, 2, 17, 19), (5, 1, 9, 26)])
def test_one_kernel_block_across_tiles(c, n, h, w):
    """Small tiles, so halos cross tile and image borders and partial tiles occur."""
    from fastdeblur.kernels.conv3x3 import pack_conv3x3_weight
    from fastdeblur.kernels.conv_relu_residual import BlockTiles, conv_relu_residual_nhwc

    x, extra = _rand(n, c, h, w), _rand(n, c, h, w)
    w1, w2 = _rand(c, c, 3, 3, scale=0.1), _rand(c, c, 3, 3, scale=0.1)
    b1, b2 = _rand(c), _rand(c)
    ref64 = ops.conv_relu_residual(x, w1, b1, w2, b2, extra, backend="reference")
    nhwc = [t.float().permute(0, 2, 3, 1).contiguous() for t in (x, extra)]
    got = conv_relu_residual_nhwc(nhwc[0], pack_conv3x3_weight(w1.float()), b1.float(),
                                  pack_conv3x3_weight(w2.float()), b2.float(), nhwc[1],
                                  tiles=BlockTiles(th=4, tw=8, chunk=32, block_k=16))
    torch.testing.assert_close(got.permute(0, 3, 1, 2).double(), ref64, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="power of two"):
        conv_relu_residual_nhwc(nhwc[0], pack_conv3x3_weight(w1.float()), b1.float(),
                                pack_conv3x3_weight(w2.float()), b2.float(), tiles=BlockTiles(3, 8, 32, 16))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cin,cout", [(128, 64), (64, 32), (7, 5)])
@pytest.mark.parametrize("n,h,w", [(1, 5, 7), (3, 4, 3)])
def test_conv_transpose4x4(dtype, cin, cout, n, h, w):
    x, wt, b = _rand(n, cin, h, w), _rand(cin, cout, 4, 4, scale=0.1), _rand(cout)
    ref64 = F.conv_transpose2d(x, wt, b, stride=2, padding=1)
    got = ops.conv_transpose4x4(x.to(dtype), wt.to(dtype), b.to(dtype), backend="triton")
    assert got.shape == ref64.shape
    _check(got, ref64, F.conv_transpose2d(x.to(dtype), wt.to(dtype), b.to(dtype), stride=2, padding=1), dtype)


def _specialization(kernel, size: int, honour_do_not_specialize: bool = True) -> list:
    """The part of Triton's compile-cache key that a GPU launch gets when every int argument (all
    are sizes) is `size`: the binder a JITFunction builds for its device, computed here without one.
    A different key is another compile (seconds each) on the first frame that has it."""
    jit = pytest.importorskip("triton.runtime.jit")
    from triton.backends.compiler import BaseBackend

    if not hasattr(jit, "create_function_from_signature"):  # a Triton internal (3.9 has it)
        pytest.skip("this Triton builds its launch binder differently")
    # a JITFunction keeps its options as attributes; the interpreter's stand-in, in kwargs
    dns = getattr(kernel, "do_not_specialize", None) or getattr(kernel, "kwargs", {}).get("do_not_specialize")
    fn = jit.JITFunction(kernel.fn, do_not_specialize=dns if honour_do_not_specialize else None)
    bind = jit.create_function_from_signature(fn.signature, fn.params, BaseBackend)
    t = torch.empty(64)
    args = {p.name: 1 if p.is_constexpr else t if p.name.endswith("_ptr") else size for p in fn.params}
    return bind(**args)[1]


@pytest.mark.parametrize("kernel", jit_kernels() if triton_usable(torch.device(DEVICE)) else [],  # no triton: skip
                         ids=lambda k: k.fn.__name__)
def test_one_compiled_variant_for_every_frame_size(kernel):
    """720 and 1280 are multiples of 16, 45 is not and 1 is special to Triton: by default each
    pattern is its own compile, and one 720p frame has several (720, 360, 180 rows)."""
    assert _specialization(kernel, 720) == _specialization(kernel, 45) == _specialization(kernel, 1)
    assert _specialization(kernel, 720, False) != _specialization(kernel, 45, False)  # what the option removes


@pytest.mark.needs_cuda
def test_new_frame_sizes_compile_nothing_new():
    """On the GPU itself: a second set of shapes, none a multiple of 16, reuses the compiled kernels."""
    wt, b = _rand(32, 32, 3, 3, scale=0.1).half(), _rand(32).half()
    if compiled_variants() is None:
        pytest.skip("this Triton keeps no device_caches")

    ops.conv3x3(_rand(1, 32, 64, 96).half(), wt, b, relu=True, backend="triton")
    before = compiled_variants()
    for h, w in [(45, 77), (90, 155), (1, 33)]:
        ops.conv3x3(_rand(1, 32, h, w).half(), wt, b, relu=True, backend="triton")
    assert compiled_variants() == before > 0


def _registered_inputs():
    from fastdeblur.kernels.conv3x3 import pack_conv3x3_weight

    x, wt, b = _rand(1, 8, 6, 7).float(), _rand(8, 8, 3, 3, scale=0.1).float(), _rand(8).float()
    y = ops.conv3x3(x, wt, b, relu=True, backend="triton")  # registers the ops
    return x.permute(0, 2, 3, 1).contiguous(), pack_conv3x3_weight(wt), b, y


def test_triton_ops_have_fake_kernels():
    from torch._subclasses.fake_tensor import FakeTensorMode

    xn, wp, b, _ = _registered_inputs()
    with FakeTensorMode(allow_non_fake_inputs=True):
        out = torch.ops.fastdeblur.triton_conv3x3(xn, wp, b, 2, True, None, None, None, "ieee")
        up = torch.ops.fastdeblur.triton_conv_transpose4x4(torch.empty(1, 3, 5, 16), torch.empty(256, 8), None, "ieee")
        w9 = torch.empty(9 * 16, 16)
        rb = torch.ops.fastdeblur.triton_conv_relu_residual(torch.empty(2, 5, 7, 16), w9, torch.empty(16), w9,
                                                             torch.empty(16), None, "ieee")
    assert out.shape == (1, 3, 4, 8) and up.shape == (1, 6, 10, 8) and rb.shape == (2, 5, 7, 16)


@pytest.mark.needs_cuda  # the interpreter cannot be traced through by AOT autograd
def test_triton_ops_run_under_torch_compile():
    xn, wp, b, y = _registered_inputs()
    f = torch.compile(lambda a: torch.ops.fastdeblur.triton_conv3x3(a, wp, b, 1, True, None, None, None, "ieee"),
                      backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(f(xn).permute(0, 3, 1, 2), y)


@pytest.mark.parametrize("unroll", [True, False], ids=["unrolled", "pipelined-loop"])
@pytest.mark.parametrize("cin,cout,stride", [(64, 64, 1), (37, 19, 2)])
def test_conv3x3_every_tile_form(unroll, cin, cout, stride):
    """The tiles the GPU tuner may pick: blocks smaller than the channels (several K chunks, several
    N blocks, a ragged last chunk) and both loop forms give the same float32 result."""
    from fastdeblur.kernels.conv3x3 import Tiles, conv3x3_nhwc, pack_conv3x3_weight

    x, wt, b = _rand(2, cin, 7, 10), _rand(cout, cin, 3, 3, scale=0.1), _rand(cout)
    ref64 = ops.conv3x3(x, wt, b, stride=stride, relu=True, backend="reference")
    got = conv3x3_nhwc(x.float().permute(0, 2, 3, 1).contiguous(), pack_conv3x3_weight(wt.float()), b.float(),
                       stride=stride, relu=True, tiles=Tiles(32, 16, 16, unroll=unroll))
    torch.testing.assert_close(got.permute(0, 3, 1, 2).double(), ref64, rtol=1e-5, atol=1e-5)


def test_conv_transpose_small_tiles():
    from fastdeblur.kernels.conv3x3 import Tiles
    from fastdeblur.kernels.conv_transpose import conv_transpose4x4s2_nhwc, pack_conv_transpose_weight

    x, wt, b = _rand(2, 40, 5, 6), _rand(40, 24, 4, 4, scale=0.1), _rand(24)
    ref64 = F.conv_transpose2d(x, wt, b, stride=2, padding=1)
    got = conv_transpose4x4s2_nhwc(x.float().permute(0, 2, 3, 1).contiguous(), pack_conv_transpose_weight(wt.float()),
                                   b.float(), tiles=Tiles(16, 16, 16))
    torch.testing.assert_close(got.permute(0, 3, 1, 2).double(), ref64, rtol=1e-5, atol=1e-5)


def _tune_kernels():
    return benchmark_module("tune_kernels")


@pytest.mark.parametrize("c", [32, 64, 128])
def test_block_sweep_candidates_are_valid_and_hold_the_default(c):
    from fastdeblur.kernels.conv_relu_residual import _gpu_default

    cands = list(_tune_kernels().block_candidates(c))
    assert len(cands) == len(set(cands)) > 10
    for t in cands:
        assert (t.th * t.tw) & (t.th * t.tw - 1) == 0  # the launcher's requirement
        assert max(t.th * t.tw, t.chunk) * max(16, c) <= 4096 * t.warps  # accumulators in registers
        tk = _tune_kernels()
        assert tk.conv1_steps(t.th, t.tw, t.chunk, c, t.block_k) <= tk.MAX_CONV1_STEPS  # compiles in seconds
    assert _gpu_default(c) in cands


def test_tile_table_round_trip():
    """What --write writes: the sweep's winners, the current file's other entries kept, and a
    module the kernels read back into their tile types."""
    from fastdeblur.kernels.conv3x3 import Tiles
    from fastdeblur.kernels.conv_relu_residual import BlockTiles

    results = [
        {"op": "conv", "cin": 32, "cout": 32, "best_ms": 0.3, "cudnn_ms": 0.2,
         "best": Tiles(128, 32, 32, 8, 3, False)._asdict()},
        {"op": "rb", "cin": 32, "cout": 32, "best_ms": 0.5, "two_kernel_ms": 0.7, "cudnn_ms": 0.4,
         "best": BlockTiles(8, 32, 64, 32, 4)._asdict()},
    ]
    old_tiles = {("conv", 32, 32): (64, 32, 32, 4, 3, True), ("convT", 64, 32): (64, 32, 32, 4, 1, True)}
    old_blocks = {64: (8, 16, 64, 64, 4, 1)}
    text = _tune_kernels().render_table(results, "a card, a date", old_tiles, old_blocks)
    ns: dict = {}
    exec(compile(text, "_gpu_tiles.py", "exec"), ns)
    assert {k: Tiles(*v) for k, v in ns["TILES"].items()} == {
        ("conv", 32, 32): Tiles(128, 32, 32, 8, 3, False), ("convT", 64, 32): Tiles(64, 32, 32, 4, 1, True)}
    assert {k: BlockTiles(*v) for k, v in ns["BLOCK_TILES"].items()} == {
        32: BlockTiles(8, 32, 64, 32, 4, 1), 64: BlockTiles(8, 16, 64, 64, 4, 1)}
    assert "from an earlier sweep" in text and "two kernels 0.7000" in text


def test_sweep_keeps_only_tiles_that_run_and_match(monkeypatch):
    """The sweep's timing loop (GPU timer replaced): wrong numbers and failing tiles are left out."""
    import triton.testing

    ref = torch.zeros(2, 3)
    outputs = {"ok": ref, "slow": ref, "wrong": ref + 1}

    def run(t):
        if t == "broken":
            raise RuntimeError("out of resources")
        return outputs[t]

    timed = []
    monkeypatch.setattr(triton.testing, "do_bench", lambda fn, return_mode: timed.append(fn()) or 0.5 * len(timed))
    tk = _tune_kernels()
    got = tk.time_candidates("x", run, ref, ["ok", "wrong", "broken", "slow", "ok"], deadline=float("inf"), atol=1e-3)
    assert got == {"ok": 0.5, "slow": 1.0} and len(timed) == 2  # each good tile timed once
    assert tk.time_candidates("x", run, ref, ["ok"], deadline=0.0, atol=1e-3) == {}  # past the budget: nothing


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_ops_name_shapes_that_do_not_fit(backend):
    """Every backend refuses the same mis-shaped arguments, by name, before any kernel runs
    (before: torch's error from inside the convolution, a wrong `extra` broadcast through on the
    reference path, a 5x5 weight taken into a size mismatch further on)."""
    from fastdeblur import InputError

    x, w, b = _rand(1, 32, 9, 11), _rand(32, 32, 3, 3), _rand(32)
    block = {
        (_rand(1, 16, 9, 11), w, b, w, b): r"w1 must be \[C, C, 3, 3\] with C = x's 16 channels, got \(32, 32, 3, 3\)",
        (x, w, b, _rand(32, 32, 5, 5), b): r"w2 must be \[C, C, 3, 3\] with C = x's 32 channels",
        (x[0], w, b, w, b): r"x must be \[N, C, H, W\], got shape \(32, 9, 11\)",
        (x, w, b, w, b[:3]): r"bias must be \[32\] \(one per output channel\), got \(3,\)",
        (x, w, b, w, b, _rand(1, 32, 1, 1)): r"extra must be \[1, 32, 9, 11\] \(the output's shape\)",
        (x, w, b, w.float(), b): rf"weight must be x's torch.float64 on {x.device}, got torch.float32",
        (x, w, b, w, b, _rand(1, 32, 9, 11).half()): r"extra must be x's torch.float64 on .*, got torch.float16",
    }
    for args, message in block.items():
        with pytest.raises(InputError, match="conv_relu_residual: " + message):
            ops.conv_relu_residual(*args, backend=backend)
    w64 = _rand(64, 32, 3, 3)
    with pytest.raises(InputError, match=r"conv3x3: residual must be \[1, 64, 5, 6\] \(the output's shape\)"):
        ops.conv3x3(x, w64, stride=2, residual=_rand(1, 64, 9, 11), backend=backend)
    with pytest.raises(InputError, match=r"conv3x3: x_add must be \[1, 32, 9, 11\] \(x's shape\)"):
        ops.conv3x3(x, w, x_add=_rand(1, 32, 1, 11), backend=backend)
    with pytest.raises(InputError, match=r"conv_transpose4x4: weight must be \[Cin, Cout, 4, 4\] with Cin = x's 32"):
        ops.conv_transpose4x4(x, _rand(16, 32, 4, 4), backend=backend)
    # the stride, the dtype, empty images and non-tensors (before: a stride of 3 or 0 ran torch's
    # convolution, which no kernel has; integer images and 0-pixel ones got torch's errors from inside)
    for stride in (0, 3, -1, 2.0, True):
        with pytest.raises(InputError, match=rf"conv3x3: stride must be 1 or 2, got {stride!r}"):
            ops.conv3x3(x, w, stride=stride, backend=backend)
    with pytest.raises(InputError, match=r"conv3x3: x must be float64, float32, float16 or bfloat16, got torch.int32"):
        ops.conv3x3(x.to(torch.int32), w.to(torch.int32), backend=backend)
    with pytest.raises(InputError, match=r"conv_transpose4x4: x has no pixels \(shape \(1, 32, 0, 11\)\)"):
        ops.conv_transpose4x4(x[:, :, :0], _rand(32, 16, 4, 4), backend=backend)
    with pytest.raises(InputError, match=r"conv3x3: bias must be a torch.Tensor, got list"):
        ops.conv3x3(x, w, [0.0] * 32, backend=backend)
    empty = ops.conv3x3(x[:0], w, b, backend=backend)  # an empty batch is not an error: torch's convolutions take it
    assert empty.shape == (0, 32, 9, 11)
