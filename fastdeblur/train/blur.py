"""Synthetic motion blur that looks like GoPro's: average many camera poses in linear light.

GoPro's blurry frames are the mean of 7-13 consecutive sharp frames of a 240 fps camera, i.e.
the image integrated along the camera's path during a longer exposure. We draw a smooth random
path of in-plane camera motion (translation plus rotation about a random centre, with non-uniform
speed: a random walk on the velocity), warp the sharp image to each of `steps` poses along it
(bilinear, reflected borders), average in linear light (sRGB gamma undone first and reapplied
after), optionally saturate bright regions the way a sensor clips each sub-frame, then add
signal-dependent sensor noise and optionally JPEG-compress. Everything is drawn from one seed.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class BlurConfig:
    """Ranges the random blur is drawn from (pixels refer to the image's longer side / 1280)."""

    length: tuple[float, float] = (4.0, 40.0)  # path length in pixels at 1280 px width
    max_rotation_deg: float = 2.0  # total in-plane rotation over the exposure
    steps: int = 32  # poses averaged (GoPro averages 7-13 frames; more keeps streaks smooth)
    jerk: float = 0.6  # how much the velocity wanders (0: straight line at constant speed)
    saturation_prob: float = 0.3  # chance of simulating clipped highlights
    noise_sigma: tuple[float, float] = (0.0, 0.01)  # read noise (linear light)
    shot_noise: tuple[float, float] = (0.0, 0.01)  # signal-dependent noise scale
    jpeg_prob: float = 0.3
    jpeg_quality: tuple[int, int] = (70, 95)


def srgb_to_linear(v: torch.Tensor) -> torch.Tensor:
    return torch.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(v: torch.Tensor) -> torch.Tensor:
    v = v.clamp(0.0, 1.0)
    return torch.where(v <= 0.0031308, v * 12.92, 1.055 * v.clamp_min(1e-12) ** (1 / 2.4) - 0.055)


def camera_path(rng: np.random.Generator, length_px: float, rotation_rad: float, steps: int,
                jerk: float) -> np.ndarray:
    """[steps, 3] poses (dx, dy, angle), centred on the exposure's middle, total length ~length_px."""
    vel = rng.normal(size=2)
    vel /= np.linalg.norm(vel) + 1e-12
    pts = [np.zeros(2)]
    for _ in range(steps - 1):
        vel = vel + jerk * rng.normal(size=2) / math.sqrt(steps)
        speed = 0.3 + rng.random() * 1.4 if jerk > 0 else 1.0  # non-uniform speed along the path
        pts.append(pts[-1] + vel / (np.linalg.norm(vel) + 1e-12) * speed)
    path = np.array(pts)
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1).sum()
    path = path * (length_px / seg if seg > 0 else 0.0)
    path -= path.mean(axis=0)  # the blurry frame is aligned with the middle of the exposure
    angles = np.linspace(-0.5, 0.5, steps) * rotation_rad
    return np.concatenate([path, angles[:, None]], axis=1)


def _warp(img: torch.Tensor, poses: np.ndarray, centre: tuple[float, float]) -> torch.Tensor:
    """img [C, H, W] -> [S, C, H, W] warped copies (bilinear, reflected borders)."""
    _, h, w = img.shape
    p = torch.as_tensor(poses, dtype=img.dtype)
    cos, sin = torch.cos(p[:, 2]), torch.sin(p[:, 2])
    # affine_grid works in normalised coordinates [-1, 1]; rotate about `centre`, then translate
    cx, cy = centre[0] / (w / 2) - 1, centre[1] / (h / 2) - 1
    aspect = w / h
    theta = torch.zeros(len(poses), 2, 3, dtype=img.dtype)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin / aspect
    theta[:, 1, 0], theta[:, 1, 1] = sin * aspect, cos
    theta[:, 0, 2] = cx - cos * cx + sin / aspect * cy - p[:, 0] * 2 / w
    theta[:, 1, 2] = cy - sin * aspect * cx - cos * cy - p[:, 1] * 2 / h
    grid = F.affine_grid(theta, [len(poses), *img.shape], align_corners=False)
    return F.grid_sample(img.expand(len(poses), -1, -1, -1), grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


def synthesize(sharp: torch.Tensor, seed: int, cfg: BlurConfig = BlurConfig(), *,
               length_px: float | None = None) -> torch.Tensor:
    """sharp [3, H, W] float in [0, 1] (sRGB) -> blurry [3, H, W], deterministic in `seed`.

    `length_px` fixes the path length (0 gives the sharp image back, before noise and JPEG).
    """
    rng = np.random.default_rng(seed)
    _, h, w = sharp.shape
    scale = max(h, w) / 1280.0
    length = rng.uniform(*cfg.length) * scale if length_px is None else length_px
    rotation = math.radians(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg)) if length > 0 else 0.0
    poses = camera_path(rng, length, rotation, cfg.steps, cfg.jerk)
    centre = (rng.uniform(0, w), rng.uniform(0, h))
    lin = srgb_to_linear(sharp.float().clamp(0, 1))
    gain = 1.0
    if rng.random() < cfg.saturation_prob:
        gain = rng.uniform(1.0, 1.5)  # a brighter exposure: highlights clip in each sub-frame
    frames = _warp(lin * gain, poses, centre).clamp_(max=1.0) if length > 0 else (lin * gain).clamp(max=1.0)[None]
    blurred = frames.mean(0) / gain
    sigma = rng.uniform(*cfg.noise_sigma)
    shot = rng.uniform(*cfg.shot_noise)
    if sigma > 0 or shot > 0:
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        std = torch.sqrt(sigma**2 + shot**2 * blurred.clamp_min(0))
        blurred = blurred + std * torch.randn(blurred.shape, generator=gen)
    out = linear_to_srgb(blurred)
    if rng.random() < cfg.jpeg_prob:
        out = _jpeg(out, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    return out.to(sharp.dtype)


def _jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return torch.from_numpy(back.copy()).permute(2, 0, 1).float() / 255.0
