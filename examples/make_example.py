"""Make the bundled example: a public-domain photo with synthetic camera shake.

Source: scikit-image's `astronaut` (NASA, public domain). The shake kernel is a random camera
trajectory (a walk with inertia, as in Boracchi & Foi 2012) rasterised with sub-pixel splatting;
the blur is applied in linear light, then mild sensor noise, then 8-bit sRGB. Deterministic:
rerunning it reproduces the committed files' pixels (checked; their PNG bytes may differ with the
compression settings).  Usage: python examples/make_example.py (rewrites examples/*.png)
"""

from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve
from skimage import data

from fastdeblur.io import write_image

HERE = Path(__file__).resolve().parent
SEED = 2019


def shake_kernel(rng: np.random.Generator, size: int = 15, length: float = 10.0, steps: int = 400) -> np.ndarray:
    """A normalised size x size kernel traced by a smooth random trajectory about `length` px long."""
    pos = np.zeros(2)
    vel = rng.normal(size=2)
    vel *= length / steps / np.linalg.norm(vel)
    path = []
    for _ in range(steps):
        # inertia plus a small random push: a smooth, gently curving hand movement
        vel = vel + 0.04 * rng.normal(size=2) * length / steps
        vel *= length / steps / np.linalg.norm(vel)
        pos = pos + vel
        path.append(pos.copy())
    path = np.array(path)
    path -= (path.max(0) + path.min(0)) / 2  # centre the trajectory in the kernel
    k = np.zeros((size, size))
    c = size // 2
    for y, x in path + c:
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        fy, fx = y - y0, x - x0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                k[y0 + dy, x0 + dx] += wy * wx
    return k / k.sum()


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0, 1)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


def main() -> None:
    rng = np.random.default_rng(SEED)
    sharp = data.astronaut()  # 512x512 RGB uint8
    k = shake_kernel(rng)
    lin = srgb_to_linear(sharp / 255.0)
    pad = k.shape[0] // 2
    padded = np.pad(lin, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    blurred = np.stack([fftconvolve(padded[..., c], k, mode="valid") for c in range(3)], -1)
    blurred += rng.normal(0, 0.003, blurred.shape)
    blurry = np.round(linear_to_srgb(blurred) * 255).astype(np.uint8)
    write_image(HERE / "sharp.png", sharp)
    write_image(HERE / "blurry.png", blurry)
    write_image(HERE / "kernel.png", np.round(k / k.max() * 255).astype(np.uint8))
    print(f"wrote {HERE / 'blurry.png'} and {HERE / 'sharp.png'} (kernel {k.shape[0]} px)")


if __name__ == "__main__":
    main()
