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
    with pytest.raises(InputError, match="b: contains NaN or infinite values"):
        psnr(np.zeros((4, 4, 3)), np.full((4, 4, 3), np.nan))
    with pytest.raises(InputError, match=r"a: expected an HxW or HxWxC image \(a tensor: \[C, H, W\]\)"):
        psnr(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4))
    for empty in (np.zeros((0, 4, 3), np.uint8), torch.zeros(3, 0, 0)):  # was NaN, with numpy's warning
        with pytest.raises(InputError, match=r"a: the image has no pixels \(shape \("):
            psnr(empty, empty)


def test_metrics_take_what_deblur_takes_and_gives(tmp_path):
    """Torch tensors in torch's layout ([C, H, W], as deblur() gives them back; before, SSIM took
    their channels for rows), bfloat16 ones too, PIL images and file paths, all scored as the
    HxWxC numpy arrays they hold."""
    from PIL import Image

    from fastdeblur.io import write_image

    rng = np.random.default_rng(1)
    a = (rng.random((24, 30, 3)) * 255).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    want_p, want_s = psnr(a, b), ssim(a, b)
    chw = [torch.from_numpy(x).permute(2, 0, 1) for x in (a, b)]
    for x, y in (chw, [t[None] for t in chw], [t.float() / 255 for t in chw], [t.permute(1, 2, 0) for t in chw]):
        assert (psnr(x, y), ssim(x, y)) == (want_p, want_s)
    halves = [(t.float() / 255).bfloat16() for t in chw]
    assert abs(ssim(*halves) - want_s) < 1e-3  # bfloat16 rounds a few pixels to the next 8-bit level
    write_image(tmp_path / "a.png", a)
    write_image(tmp_path / "b.png", b)
    assert psnr(tmp_path / "a.png", str(tmp_path / "b.png")) == want_p
    assert ssim(Image.fromarray(a), tmp_path / "b.png") == want_s
