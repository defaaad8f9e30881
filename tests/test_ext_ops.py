"""The extension's patch and pixel ops against plain-torch formulas, on every device built.

Odd sizes, batch 1 and 3, both memory formats, every dispatched dtype; opcheck on every op;
gradcheck in float64 for split/merge. CUDA cases are marked and skip without a GPU.
"""

import pytest
import torch

from fastdeblur import _ext, ops
from fastdeblur.reference import patch_merge, patch_split
from fastdeblur.reference.patches import memory_format_of

from .utils import ATOL, FLOAT_DTYPES, assert_within_lowprec_rule

pytestmark = pytest.mark.skipif(not _ext.has_ext(), reason=f"extension not built: {_ext.why_missing()}")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.needs_cuda)]
GRIDS = [(2, 2), (2, 1), (4, 2), (1, 3)]


def _fmt(t, channels_last):
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t.contiguous()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("rows,cols", GRIDS)
@pytest.mark.parametrize("n,c", [(1, 3), (3, 32), (1, 5)])
def test_split_and_merge_match_torch(device, dtype, channels_last, rows, cols, n, c):
    h, w = 37 // rows * rows or rows, 53 // cols * cols
    x = _fmt(torch.randn(n, c, h, w, device=device).to(dtype), channels_last)
    p = torch.ops.fastdeblur.patch_split(x, rows, cols)
    assert torch.equal(p, patch_split(x, rows, cols))
    assert memory_format_of(p) == memory_format_of(x)  # channels_last stays channels_last
    add = _fmt(torch.randn(p.shape, device=device).to(dtype), not channels_last)  # the other layout
    got = torch.ops.fastdeblur.patch_split(x, rows, cols, add)
    want = patch_split(x, rows, cols) + add
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL[dtype])
    merged = torch.ops.fastdeblur.patch_merge(p, rows, cols)
    assert torch.equal(merged, x)  # exact round trip
    madd = torch.randn(x.shape, device=device).to(dtype)
    torch.testing.assert_close(torch.ops.fastdeblur.patch_merge(p, rows, cols, madd), x + madd, rtol=0,
                               atol=ATOL[dtype])
    assert torch.equal(patch_merge(p, rows, cols), merged)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("src_dtype", [torch.uint8, torch.uint16, torch.float32])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape,multiple", [((37, 53, 3), 8), ((3, 37, 53, 3), 16), ((10, 9, 3), 16), ((16, 8, 3), 8)])
def test_preprocess_matches_torch(device, src_dtype, dtype, shape, multiple):
    if src_dtype == torch.float32:
        img = torch.rand(shape, device=device)
    else:
        top = 255 if src_dtype == torch.uint8 else 65535
        img = torch.randint(0, top + 1, shape, device=device, dtype=torch.int32).to(src_dtype)
    got = ops.preprocess(img, multiple, dtype, backend="cuda")
    want = ops.preprocess(img, multiple, dtype, backend="reference")
    assert got.shape == want.shape and got.dtype == dtype
    assert got.shape[-2] % multiple == 0 and got.shape[-1] % multiple == 0
    if dtype in (torch.float32, torch.float64):
        torch.testing.assert_close(got, want, rtol=0, atol=ATOL[dtype])
    else:  # one rounding of the same float32 value: identical
        assert torch.equal(got, want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("in_dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.uint16, torch.float32, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_postprocess_matches_torch(device, in_dtype, dtype, channels_last):
    y = _fmt((torch.rand(3, 3, 40, 56, device=device) * 1.4 - 0.7).to(in_dtype), channels_last)
    got = ops.postprocess(y, 37, 53, dtype, backend="cuda")
    want = ops.postprocess(y, 37, 53, dtype, backend="reference")
    assert got.shape == (3, 37, 53, 3) and got.dtype == dtype
    if dtype.is_floating_point:
        torch.testing.assert_close(got.double(), want.double(), rtol=0, atol=ATOL[dtype])
    else:
        assert torch.equal(got, want)


def test_preprocess_postprocess_round_trip():
    img = torch.randint(0, 256, (2, 37, 53, 3), dtype=torch.uint8)
    x = ops.preprocess(img, 8, torch.float32, backend="cuda")
    assert torch.equal(ops.postprocess(x, 37, 53, torch.uint8, backend="cuda"), img)
    img16 = torch.randint(0, 65536, (37, 53, 3), dtype=torch.int32).to(torch.uint16)
    x16 = ops.preprocess(img16, 8, torch.float32, backend="cuda")
    assert torch.equal(ops.postprocess(x16, 37, 53, torch.uint16, backend="cuda")[0], img16)


def test_lowprec_add_error_is_torchs():
    x = torch.randn(2, 8, 12, 16)
    add = torch.randn(8, 8, 6, 8)
    ref = (patch_split(x.double(), 2, 2) + add.double())
    for dt in (torch.float16, torch.bfloat16):
        got = torch.ops.fastdeblur.patch_split(x.to(dt), 2, 2, add.to(dt))
        assert_within_lowprec_rule(got, patch_split(x.to(dt), 2, 2) + add.to(dt), ref)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_every_op(device):
    x = torch.randn(2, 4, 8, 12, device=device, requires_grad=True)
    add = torch.randn(8, 4, 4, 6, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.fastdeblur.patch_split.default, (x, 2, 2, add))
    torch.library.opcheck(torch.ops.fastdeblur.patch_split.default, (x.detach().contiguous(
        memory_format=torch.channels_last), 2, 2, None))
    p = torch.randn(8, 4, 4, 6, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.fastdeblur.patch_merge.default, (p, 2, 2, torch.randn(2, 4, 8, 12, device=device)))
    img = torch.randint(0, 256, (2, 9, 13, 3), dtype=torch.uint8, device=device)
    torch.library.opcheck(torch.ops.fastdeblur.preprocess.default, (img, 8, torch.float32))
    y = torch.randn(2, 3, 16, 16, device=device)
    torch.library.opcheck(torch.ops.fastdeblur.postprocess.default, (y, 9, 13, torch.uint8))


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_split_and_merge(device):
    x = torch.randn(2, 3, 6, 4, dtype=torch.float64, device=device, requires_grad=True)
    a = torch.randn(8, 3, 3, 2, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a: torch.ops.fastdeblur.patch_split(x, 2, 2, a), (x, a))
    p = torch.randn(8, 3, 3, 2, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(2, 3, 6, 4, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, b: torch.ops.fastdeblur.patch_merge(p, 2, 2, b), (p, b))
    assert torch.autograd.gradgradcheck(lambda p: torch.ops.fastdeblur.patch_merge(p, 2, 2), (p,))


def test_torch_compile_sees_the_ops():
    def f(x, add):
        return torch.ops.fastdeblur.patch_merge(torch.ops.fastdeblur.patch_split(x, 2, 2, add), 2, 2) * 2

    x, add = torch.randn(1, 4, 8, 8), torch.randn(4, 4, 4, 4)
    out = torch.compile(f, backend="aot_eager", fullgraph=True)(x, add)
    torch.testing.assert_close(out, f(x, add))


def test_backend_choice_is_marked_as_torchs_marker_marks(monkeypatch):
    """ops._backend marks choose() for torch.compile by hand where torch._dynamo is not imported
    yet (torch's marker imports it: 0.9 s of a CPU process's first deblur()); the mark must be
    exactly what torch.compiler.assume_constant_result sets, for the torch installed."""
    import sys

    from fastdeblur.ops import _backend

    def theirs():
        return 1

    def ours():
        return 1

    torch.compiler.assume_constant_result(theirs)
    monkeypatch.delitem(sys.modules, "torch._dynamo")  # as in a process that has compiled nothing
    assert _backend._constant_under_compile(ours) is ours
    assert vars(ours) == vars(theirs) == {_backend.DYNAMO_CONSTANT: True}
    assert getattr(_backend.choose, _backend.DYNAMO_CONSTANT)


@pytest.mark.parametrize("backend", [None, "reference"])
def test_torch_compile_traces_the_public_ops(backend):
    """fastdeblur.ops' functions whole under torch.compile(fullgraph=True): the backend choice
    (which loads the extension under a lock) broke the graph until 2026-12-06; it is now a
    constant of the trace."""
    def f(x, add, w):
        p = ops.patch_split(x, 2, 2, add, backend=backend)
        y = ops.conv3x3(p, w, relu=True, backend="reference")
        return ops.patch_merge(y, 2, 2, backend=backend)

    x, add, w = torch.randn(1, 4, 8, 8), torch.randn(4, 4, 4, 4), torch.randn(4, 4, 3, 3)
    torch._dynamo.reset()
    out = torch.compile(f, backend="aot_eager", fullgraph=True)(x, add, w)
    torch.testing.assert_close(out, f(x, add, w))


def test_bad_arguments_are_named():
    with pytest.raises(RuntimeError, match="does not split into a 2x2 grid"):
        torch.ops.fastdeblur.patch_split(torch.zeros(1, 1, 5, 4), 2, 2)
    with pytest.raises(RuntimeError, match="add must have shape"):
        torch.ops.fastdeblur.patch_split(torch.zeros(1, 1, 4, 4), 2, 2, torch.zeros(4, 1, 2, 3))
    with pytest.raises(RuntimeError, match="add must have dtype"):
        torch.ops.fastdeblur.patch_merge(torch.zeros(4, 1, 2, 2), 2, 2, torch.zeros(1, 1, 4, 4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="x must be float64, float32, float16 or bfloat16"):
        torch.ops.fastdeblur.patch_split(torch.zeros(1, 1, 4, 4, dtype=torch.int32), 2, 2)
    with pytest.raises(RuntimeError, match="img must have 3 channels"):
        torch.ops.fastdeblur.preprocess(torch.zeros(8, 8, 4, dtype=torch.uint8), 8, torch.float32)
    with pytest.raises(RuntimeError, match="must be positive and within"):
        torch.ops.fastdeblur.postprocess(torch.zeros(1, 3, 8, 8), 9, 8, torch.uint8)


def test_backend_choice(monkeypatch):
    x = torch.randn(1, 2, 4, 4)
    assert torch.equal(ops.patch_split(x, 2, 2, backend="reference"), ops.patch_split(x, 2, 2, backend="cuda"))
    from fastdeblur import InputError

    with pytest.raises(InputError, match="backend 'triton' has no kernel"):
        ops.patch_split(x, 2, 2, backend="triton")
    monkeypatch.setenv("FASTDEBLUR_BACKEND", "bogus")
    with pytest.raises(InputError, match="backend 'bogus'"):
        ops.patch_split(x, 2, 2)


@pytest.mark.parametrize("backend", ["reference", "cuda"])
def test_public_patch_ops_refuse_the_same_arguments_on_every_backend(backend):
    """fastdeblur.ops' layout and pixel ops check their arguments before either backend runs, so
    both raise the same InputError (before: the extension's RuntimeError; on the reference path an
    `add` of another shape broadcast through, integer patches and int32 results were taken, a 3-D
    `y` raised an IndexError and `multiple=0` a ZeroDivisionError)."""
    from fastdeblur import InputError, _ext, ops

    if backend == "cuda" and not _ext.has_ext():
        pytest.skip("the extension is not built")
    img = torch.randint(0, 256, (6, 10, 3), dtype=torch.uint8)
    y = torch.rand(1, 3, 8, 12)
    cases = {
        lambda: ops.patch_split(torch.rand(1, 3, 8, 12), 2, 2, torch.rand(1, 3, 4, 6)):
            r"patch_split: add must have shape \[4, 3, 4, 6\], got \[1, 3, 4, 6\]",
        lambda: ops.patch_merge(torch.rand(4, 3, 4, 6), 2, 2, torch.rand(1, 3, 1, 12)):
            r"patch_merge: add must have shape \[1, 3, 8, 12\], got \[1, 3, 1, 12\]",
        lambda: ops.patch_merge(torch.rand(4, 3, 4, 6), 2, 2, torch.rand(1, 3, 8, 12, dtype=torch.float64)):
            r"patch_merge: add must be torch.float32 on cpu, got torch.float64 on cpu",
        lambda: ops.patch_split(torch.rand(3, 8, 12), 2, 2): r"patch_split: x must be \[N, C, H, W\], got 3 dims",
        lambda: ops.patch_merge(torch.rand(3, 4, 6), 2, 2):
            r"patch_merge: p must be \[N\*rows\*cols, C, h, w\], got 3 dims",
        lambda: ops.patch_split(torch.rand(1, 3, 9, 12), 2, 2): r"x of 9x12 does not split into a 2x2 grid",
        lambda: ops.patch_merge(torch.rand(3, 3, 4, 6), 2, 2): r"p's batch of 3 is not a multiple of the 2x2 grid",
        lambda: ops.patch_split(torch.rand(1, 3, 8, 12), 0, 2): r"patch_split: rows must be at least 1, got 0",
        lambda: ops.patch_merge(torch.rand(4, 3, 4, 6), 2, 2.0): r"patch_merge: cols must be an integer, got 2.0",
        lambda: ops.patch_split(torch.zeros(1, 3, 8, 12, dtype=torch.uint8), 2, 2):
            r"patch_split: x must be float64, float32, float16 or bfloat16, got torch.uint8",
        lambda: ops.preprocess(img, 0, torch.float32): r"preprocess: multiple must be at least 1, got 0",
        lambda: ops.preprocess(img[None, None], 8, torch.float32):
            r"preprocess: img must be \[H, W, 3\] or \[N, H, W, 3\], got shape \(1, 1, 6, 10, 3\)",
        lambda: ops.preprocess(img.to(torch.int32), 8, torch.float32):
            r"img must be uint8, uint16 or float, got torch.int32",
        lambda: ops.preprocess(img[:0], 8, torch.float32): r"preprocess: img is empty",
        lambda: ops.preprocess(img, 8, torch.uint8): r"preprocess: dtype must be float64, .*, got torch.uint8",
        lambda: ops.postprocess(y[0], 8, 12, torch.uint8):
            r"postprocess: y must be \[N, 3, Hp, Wp\], got shape \(3, 8, 12\)",
        lambda: ops.postprocess(y.to(torch.int32), 8, 12, torch.uint8):
            r"postprocess: y must be float64, .*, got torch.int32",
        lambda: ops.postprocess(y, 9, 12, torch.uint8): r"height and width \(9x12\) must be within y's 8x12",
        lambda: ops.postprocess(y, 8, 0, torch.uint8): r"postprocess: width must be at least 1, got 0",
        lambda: ops.postprocess(y, 8, 12, torch.int32):
            r"postprocess: dtype must be uint8, uint16 or float, got torch.int32",
    }
    for call, message in cases.items():
        with pytest.raises(InputError, match=message):
            call()
    # what passes the checks runs the same on both backends, numpy integers for the grid included
    import numpy as np

    torch.testing.assert_close(ops.patch_split(torch.arange(16.0).view(1, 1, 4, 4), np.int64(2), 2, backend=backend),
                               torch.arange(16.0).view(1, 1, 4, 4).unfold(2, 2, 2).unfold(3, 2, 2)
                               .permute(0, 2, 3, 1, 4, 5).reshape(4, 1, 2, 2))
