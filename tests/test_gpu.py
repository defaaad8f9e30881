"""GPU checks of the reference path (marked needs_cuda; skipped without a GPU).

The authors' DMPHN(1-2-4) on a 1280x720 frame: float32 parity with their output, and the 16-bit
types within 0.02 dB of float32 against the sharp ground truth. Tiling and the extension's
layout ops must not change results on the GPU either.
"""

import numpy as np
import pytest
import torch

import fastdeblur
from fastdeblur.io import read_image
from fastdeblur.metrics import psnr

from .conftest import DATA

pytestmark = [pytest.mark.needs_cuda, pytest.mark.needs_data]
MODEL = "dmphn-1-2-4-gopro"


@pytest.fixture(scope="module")
def frame():
    return read_image(DATA / "gopro_pairs" / "blur" / "GOPR0384_11_00_000001.png")


@pytest.fixture(scope="module")
def fp32_out(frame):
    return fastdeblur.deblur(frame, MODEL, device="cuda", dtype="float32")


def test_fp32_parity_with_authors(fp32_out):
    ref = read_image(DATA / "dmphn_official" / "samples" / "official_out" / "DMPHN_1_2_4" / "000001.png")
    assert psnr(fp32_out, ref) >= 50.0


# float16 (and so deblur()'s GPU default) must stay within 0.02 dB of float32. bfloat16 keeps 8
# mantissa bits against float16's 11: through cuDNN it measured -0.026 dB on an H200, so it is
# held to the 0.05 dB bound of the CPU's bfloat16 path; it is not a GPU default.
@pytest.mark.parametrize("dtype,bound", [(None, 0.02), ("float16", 0.02), ("bfloat16", 0.05)])
def test_half_precision_quality(frame, fp32_out, dtype, bound):
    sharp = read_image(DATA / "gopro_pairs" / "sharp" / "GOPR0384_11_00_000001.png")
    out = fastdeblur.deblur(frame, MODEL, device="cuda", dtype=dtype)
    assert abs(psnr(out, sharp) - psnr(fp32_out, sharp)) <= bound


def test_cuda_tensor_stays_on_its_device(frame):
    t = torch.from_numpy(frame).permute(2, 0, 1).float().div(255).cuda()
    out = fastdeblur.deblur(t, MODEL)
    assert out.is_cuda and out.shape == t.shape and out.dtype == t.dtype


@pytest.mark.parametrize("backend", ["reference", "cuda"])
def test_tiles_and_backends_agree(frame, fp32_out, backend):
    if backend == "cuda" and not fastdeblur.has_cuda_ext():
        pytest.skip("extension built without CUDA kernels")
    out = fastdeblur.deblur(frame, MODEL, device="cuda", dtype="float32", tile=384, backend=backend)
    assert psnr(out, fp32_out) >= 50.0
    assert np.abs(out.astype(int) - fp32_out).max() <= 1


def test_4k_half_precision_fits_in_3_gb():
    img = np.random.default_rng(0).integers(0, 256, (2160, 3840, 3), dtype=np.uint8)
    fastdeblur.deblur(img[:64, :64], MODEL, device="cuda", dtype="float16")  # model loaded first
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    out = fastdeblur.deblur(img, MODEL, device="cuda", dtype="float16")
    assert out.shape == img.shape
    assert torch.cuda.max_memory_allocated() <= 3 * 2**30


@pytest.mark.parametrize("dtype,bound", [("float16", 0.02), ("bfloat16", 0.05)])
def test_triton_path_quality(frame, fp32_out, dtype, bound):
    sharp = read_image(DATA / "gopro_pairs" / "sharp" / "GOPR0384_11_00_000001.png")
    out = fastdeblur.deblur(frame, MODEL, device="cuda", dtype=dtype, backend="triton")
    assert abs(psnr(out, sharp) - psnr(fp32_out, sharp)) <= bound


def test_triton_path_fp32_parity(fp32_out):
    out = fastdeblur.deblur(read_image(DATA / "gopro_pairs" / "blur" / "GOPR0384_11_00_000001.png"), MODEL,
                            device="cuda", dtype="float32", backend="triton")
    assert psnr(out, fp32_out) >= 50.0


@pytest.mark.parametrize("backend", [None, "reference"])
def test_repeated_sizes_replay_a_cuda_graph(frame, backend):
    """The third same-size call replays a captured graph: same result as eager, fresh tensors,
    and a new input really goes through (not the captured one's output)."""
    from fastdeblur import _graphs

    _graphs.clear()
    crop = frame[:256, :384]
    eager = [fastdeblur.deblur(crop, MODEL, device="cuda", backend=backend) for _ in range(1)]
    outs = [fastdeblur.deblur(crop, MODEL, device="cuda", backend=backend) for _ in range(3)]
    assert any(e.graph is not None for e in _graphs._graphs.values())
    for out in outs:  # cuDNN may pick another algorithm after its first-call search: 1 grey level
        assert np.abs(out.astype(int) - eager[0]).max() <= 1
    other = fastdeblur.deblur(np.ascontiguousarray(crop[::-1]), MODEL, device="cuda", backend=backend)
    assert not np.array_equal(other, outs[-1])
    t = torch.from_numpy(crop).permute(2, 0, 1).float().div(255)[None].cuda()
    a = fastdeblur.deblur(t, MODEL)
    b = fastdeblur.deblur(t, MODEL)
    assert a.data_ptr() != b.data_ptr()  # never the graph's own buffer
    _graphs.clear()


def test_ensemble_with_graph_replay(frame):
    """ensemble=4 on the GPU: the four same-size copies run eagerly, capture and replay a CUDA
    graph, and their sum must equal the flipped runs taken one at a time (each copied at once)."""
    from fastdeblur import _graphs
    from fastdeblur.api import run_model

    _graphs.clear()
    model = fastdeblur.load_model(MODEL, device="cuda", dtype=torch.float16)
    x = torch.from_numpy(frame[:256, :384]).permute(2, 0, 1).float().div(255)[None].cuda()
    flips = [(), (3,), (2,), (2, 3)]
    want = sum(run_model(model, x.flip(d) if d else x, shifted=True).flip(d or ()).clone() for d in flips) / 4
    for _ in range(3):  # the second and third calls replay the graph for every copy
        got = run_model(model, x, shifted=True, ensemble=4)
        assert (got - want).abs().max().item() <= 2e-3
    assert any(e.graph is not None for e in _graphs._graphs.values())
    out = fastdeblur.deblur(frame[:256, :384], MODEL, device="cuda", ensemble=2)  # the default GPU path
    plain = fastdeblur.deblur(frame[:256, :384], MODEL, device="cuda")
    assert out.shape == plain.shape and not np.array_equal(out, plain)
    _graphs.clear()
