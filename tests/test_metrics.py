import numpy as np
import pytest
import torch

from fastdeblur import InputError
from fastdeblur.metrics import psnr, ssim


def test_psnr_known_values():
    a = np.zeros((10, 10, 3), np.uint8)
    b = a.copy()
    assert psnr(a, b) == float("inf")
    b[...] = 1  # MSE 1 -> 20 log10(255)
    assert psnr(a, b) == pytest.approx(48.1308, abs=1e-4)
    assert psnr(torch.zeros(10, 10, 3), np.full((10, 10, 3), 1 / 255, np.float32)) == pytest.approx(48.1308, abs=1e-4)


def test_ssim_properties_and_reference():
    rng = np.random.default_rng(0)
    a = (rng.random((48, 40, 3)) * 255).astype(np.uint8)
    noisy = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, noisy) == pytest.approx(ssim(noisy, a))
    assert 0 < ssim(a, noisy) < 0.99
    skm = pytest.importorskip("skimage.metrics")
    want = skm.structural_similarity(a, noisy, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=255, channel_axis=-1)
    assert ssim(a, noisy) == pytest.approx(want, abs=1e-6)


def test_metric_errors():
    with pytest.raises(InputError, match="differ in shape"):
        psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(InputError, match="at least 11x11"):
        ssim(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))
