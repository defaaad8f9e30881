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


def test_measured_choice_names_real_layer_kinds_and_layer_choice_picks_by_end_to_end_time():
    """A misspelt kind in MEASURED_FASTER would silently leave that layer on torch; and
    benchmarks/layer_choice.py keeps on Triton exactly the kinds whose move to torch was slower."""
    from fastdeblur.models.fused import MEASURED_FASTER

    from .conftest import benchmark_module

    layer_choice = benchmark_module("layer_choice")
    kinds = layer_choice.layer_kinds()
    assert len(kinds) == 9 and kinds[0] == "conv3_32_s1" and kinds[-1] == "conv32_3_s1"
    assert MEASURED_FASTER <= set(kinds)
    configs = layer_choice.configurations(kinds, MEASURED_FASTER)
    assert configs["all Triton"] == frozenset(kinds) and configs["all torch"] == frozenset()
    assert configs["current choice"] == MEASURED_FASTER
    assert configs["Triton except rb64"] == frozenset(kinds) - {"rb64"}
    assert configs["torch except rb64"] == frozenset({"rb64"})
    assert "rb32:one" in configs["all Triton, rb32 one kernel"]
    assert configs["all Triton, TMA"] == frozenset(kinds) | {layer_choice.TMA}
    assert configs["current choice, TMA"] == MEASURED_FASTER | {layer_choice.TMA}
    times = dict.fromkeys(configs, 9.0)
    times.update({"all Triton": 7.3, "Triton except conv3_32_s1": 7.2, "Triton except rb128": 7.3})
    assert layer_choice.suggest(times, kinds) == frozenset(kinds) - {"conv3_32_s1", "rb128"}


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
