"""The fused (Triton) DMPHN equals the reference, end to end, under the interpreter on CPU."""

import numpy as np
import pytest
import torch

import fastdeblur
from fastdeblur.metrics import psnr
from fastdeblur.models import fuse_model
from fastdeblur.ops.conv import triton_usable
from fastdeblur.reference import DMPHN, StackDMPHN

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(not triton_usable(torch.device(DEVICE)), reason="Triton unusable here")


@pytest.mark.parametrize("triton", ["all", "measured", frozenset({"rb64", "convT64_32", "conv32_64_s2"}),
                                    frozenset({"rb32:one", "rb128:one", "convT128_64"})])
@pytest.mark.parametrize("build", [lambda: DMPHN((1, 2, 4, 8)), lambda: StackDMPHN(2)])
def test_fused_module_equals_reference(build, triton):
    """Every layer on Triton, the measured mix (the first conv and the 64-channel stride-2 conv on
    torch, the rest on Triton), and other mixes: the same network either way."""
    torch.manual_seed(0)
    model = build().eval().to(DEVICE)
    x = (torch.rand(1, 3, 32, 16, device=DEVICE) - 0.5).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(fuse_model(model, triton=triton)(x), model(x), rtol=1e-4, atol=1e-5)


def test_fuse_model_rejects_an_unknown_choice():
    with pytest.raises(ValueError, match="triton must be"):
        fuse_model(DMPHN((1, 2)), triton="fastest")


@pytest.mark.needs_data
def test_deblur_triton_backend_matches_reference_on_a_real_crop(data_dir):
    img = fastdeblur.io.read_image(data_dir / "dmphn_official" / "samples" / "blur" / "000003.png")[300:364, 600:696]
    ref = fastdeblur.deblur(img, "dmphn-1-2-4-gopro", device=DEVICE, dtype="float32", backend="reference")
    got = fastdeblur.deblur(img, "dmphn-1-2-4-gopro", device=DEVICE, dtype="float32", backend="triton")
    assert got.shape == (64, 96, 3)
    assert psnr(got, ref) >= 50.0 and np.abs(got.astype(int) - ref).max() <= 1
