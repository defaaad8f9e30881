"""PSNR and SSIM with the DMPHN convention: 8-bit RGB, peak 255, the whole image, no border crop.

Inputs are HxW or HxWxC numpy arrays (uint8, uint16, or float in [0, 1], rounded to 8 bits
first), PIL images, image file paths, or torch tensors: [C, H, W] as deblur() gives them back (C
1-4), [1, C, H, W], [H, W] or HxWxC. SSIM is the Gaussian-window SSIM of Wang et al. (sigma 1.5, 11 taps,
K1 0.01, K2 0.03) averaged over channels, computed in float64 with separable filters.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import InputError


def _as_uint8_rgb(a, name: str) -> np.ndarray:
    if isinstance(a, (str, os.PathLike)):
        from .io import read_image

        a = read_image(a)
    if hasattr(a, "detach"):  # torch tensor
        import torch

        t = a.detach()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim == 3 and t.shape[0] <= 4 < t.shape[-1]:  # [C, H, W], torch's layout
            t = t.permute(1, 2, 0)
        a = (t.float() if t.dtype == torch.bfloat16 else t).cpu().numpy()  # numpy has no bfloat16
    a = np.asarray(a)
    if a.ndim not in (2, 3):
        raise InputError(f"{name}: expected an HxW or HxWxC image (a tensor: [C, H, W]), got shape {a.shape}")
    if a.size == 0:  # the mean of nothing is NaN, with a numpy warning
        raise InputError(f"{name}: the image has no pixels (shape {a.shape})")
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return np.round(a.astype(np.float64) / 257.0).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InputError(f"{name}: contains NaN or infinite values")
        return np.round(np.clip(a.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    raise InputError(f"{name}: unsupported dtype {a.dtype}")


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_uint8_rgb(a, "a"), _as_uint8_rgb(b, "b")
    if a.shape != b.shape:
        raise InputError(f"images differ in shape: {a.shape} vs {b.shape}")
    return a.astype(np.float64), b.astype(np.float64)


def psnr(a, b) -> float:
    """PSNR in dB between two images (inf when identical)."""
    a, b = _pair(a, b)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def _gaussian_filter(img: np.ndarray, taps: np.ndarray) -> np.ndarray:
    # 'valid' separable filtering along H and W of an HxWxC array
    r = len(taps)
    h = sum(taps[i] * img[i:img.shape[0] - r + 1 + i] for i in range(r))
    return sum(taps[i] * h[:, i:h.shape[1] - r + 1 + i] for i in range(r))


def ssim(a, b) -> float:
    """Mean SSIM over the image and its channels (8-bit scale)."""
    a, b = _pair(a, b)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if min(a.shape[:2]) < 11:
        raise InputError(f"SSIM needs images of at least 11x11 pixels, got {a.shape[0]}x{a.shape[1]}")
    x = np.arange(11) - 5.0
    taps = np.exp(-(x**2) / (2 * 1.5**2))
    taps /= taps.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = _gaussian_filter(a, taps), _gaussian_filter(b, taps)
    var_a = _gaussian_filter(a * a, taps) - mu_a**2
    var_b = _gaussian_filter(b * b, taps) - mu_b**2
    cov = _gaussian_filter(a * b, taps) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())
