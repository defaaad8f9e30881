"""Synthetic motion blur that looks like GoPro's: average many poses of a random camera path.

GoPro's blurry frames are the mean of 7-13 consecutive sharp frames of a 240 fps camera, i.e.
the image integrated along the camera's path during a longer exposure. We draw a smooth random
path of in-plane camera motion (translation plus rotation about a random centre, with non-uniform
speed: a random walk on the velocity), warp the sharp image to each of `steps` poses along it
(bilinear, reflected borders), average, optionally saturate bright regions the way a sensor
clips each sub-frame (clipping the sharp target alike, as GoPro's middle frame is clipped), then
add signal-dependent sensor noise and optionally JPEG-compress.
A share of the draws (`still_prob`) has no motion, so the network also learns to leave sharp
photos alone, and a share (`object_prob`) adds a moving object: GoPro's scenes, like a user's,
are dynamic (people walk, branches sway), and a blur that is the same everywhere but for the
rotation teaches nothing about a sharp background behind a streaked subject. The object is a
random blob cut from the same photo turned by 180 degrees, pasted over it and moved along its own
path (the camera's motion on top); the sharp target is the scene at mid-exposure, the blob at
rest (`render(..., return_target=True)`). A share (`flat_prob`) paints a flat field of one colour
over part or all of the scene before the blur, as a dark sky or a white wall that reaches the
photo's edge.
Where the average is taken is drawn too: in linear light (sRGB gamma undone first and reapplied
after: what a camera's sensor integrates) or on the sRGB values themselves, which is how GoPro's
`blur` frames were made (the dataset's author: "it would be enough to assume linear CRF"; the
gamma-corrected average is its separate `blur_gamma` set). The two differ at edges between
bright and dark regions, where the linear-light average lets the bright side spread further.
Everything is drawn from one seed (`draw_blur`); `render` applies a list of draws to a batch at
once on any device, which is how training on a GPU makes its pairs (`data.SyntheticBatches`),
and `synthesize` is the one-image form.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError


@dataclass(frozen=True)
class BlurConfig:
    """Ranges the random blur is drawn from (pixels refer to the image's longer side / 1280)."""

    length: tuple[float, float] = (3.0, 48.0)  # path length in pixels (times draw_blur's scale)
    # lengths drawn log-uniformly (half in 3-12 px, a quarter each in 12-24 and 24-48) rather than
    # uniformly (over half beyond 24 px, where even the authors' GoPro model makes crops worse):
    # the first run with it gained more than the uniform runs before it on every measure
    # (docs/TRAINING.md)
    length_log: bool = True
    max_rotation_deg: float = 2.0  # total in-plane rotation over the exposure
    steps: int = 32  # poses averaged (GoPro averages 7-13 frames; more keeps streaks smooth)
    jerk: float = 0.6  # how much the velocity wanders (0: straight line at constant speed)
    saturation_prob: float = 0.3  # chance of simulating clipped highlights
    # a saturated draw (a brighter exposure, clipped in each sub-frame) clips its sharp target the
    # same way, as GoPro's sharp frame is one of the clipped frames it averages: clipped regions
    # are white in both images. 0: the target is the photo at the original exposure and the blurry
    # image is scaled back to it (before 2026-12-06), which puts clipped regions at 1/gain, grey,
    # and asks a model to brighten any flat bright region by a clip it might hide: the weights
    # trained that way lift a flat frame of level 230 by 5 levels (docs/TRAINING.md)
    clip_target: bool = True
    linear_prob: float = 0.5  # chance of averaging in linear light (else the sRGB values, as GoPro's `blur`)
    # sensor noise in linear light, after averaging: GoPro's blurry frames average 7-13 frames,
    # which divides a frame's noise by ~3. (0.01 was too much: in sRGB shadows, where the curve's
    # slope is 12.9, it became noise of up to 0.13.)
    noise_sigma: tuple[float, float] = (0.0, 0.003)  # read noise
    shot_noise: tuple[float, float] = (0.0, 0.003)  # signal-dependent noise scale
    jpeg_prob: float = 0.3
    jpeg_quality: tuple[int, int] = (70, 95)
    # chance of no motion at all (clipping, noise and JPEG still applied): photos handed to
    # deblur() are often sharp or nearly so, and a model that never saw one applies the
    # corrections blur calls for (such as undoing the linear-light average's brightening of
    # edges) to every input
    still_prob: float = 0.1
    # chance of a moving object in front of the (camera-blurred) scene; its size is a radius of
    # object_radius times the image's shorter side, its path drawn like the camera's
    object_prob: float = 0.0
    object_radius: tuple[float, float] = (0.08, 0.3)
    # chance of a flat field of one colour (near black, near white or any) over part of the scene
    # or all of it, painted before the blur: dark skies, white walls and black backgrounds reach a
    # photo's edges, where the network's zero padding meets them, and photos seldom hold flat
    # regions to learn from (docs/TRAINING.md, "Flat frames")
    flat_prob: float = 0.0

    def __post_init__(self) -> None:
        """Every field a draw cannot use, named at once (InputError): a chance outside [0, 1], a
        range whose low end is above its high end, a negative length, ..."""
        wrong = []
        for name in ("saturation_prob", "linear_prob", "jpeg_prob", "still_prob", "object_prob", "flat_prob"):
            if not 0 <= getattr(self, name) <= 1:
                wrong.append(f"{name} is a chance from 0 to 1, got {getattr(self, name)}")
        for name, low in (("length", 0), ("noise_sigma", 0), ("shot_noise", 0), ("jpeg_quality", 1),
                          ("object_radius", 0)):
            lo, hi = getattr(self, name)
            if not low <= lo <= hi or (name == "jpeg_quality" and hi > 100):
                top = ", up to 100" if name == "jpeg_quality" else ""
                wrong.append(f"{name} is a range LO,HI with {low} <= LO <= HI{top}, got {lo:g},{hi:g}")
        for name, low in (("max_rotation_deg", 0), ("jerk", 0), ("steps", 1)):
            if not getattr(self, name) >= low:
                wrong.append(f"{name} must be {low} or more, got {getattr(self, name)}")
        if wrong:
            raise InputError("blur settings: " + "; ".join(wrong))


def parse_setting(text: str) -> tuple[str, object]:
    """"name=value" for a BlurConfig field, as the command lines' --set takes it: a tuple field
    takes "lo,hi", a flag 1/0 (or true/false, yes/no). Raises argparse.ArgumentTypeError."""
    import argparse
    import dataclasses

    name, _, value = text.partition("=")
    fields = [f.name for f in dataclasses.fields(BlurConfig)]  # in order, for the error message
    if name not in fields or not value:
        raise argparse.ArgumentTypeError(f"--set {text!r}: expected NAME=VALUE with NAME one of {', '.join(fields)}")
    default = getattr(BlurConfig(), name)
    try:
        if isinstance(default, bool):
            flags = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
            if value.lower() not in flags:
                raise ValueError(f"{value!r} is not 1/0, true/false or yes/no")
            parsed: object = flags[value.lower()]
        elif isinstance(default, tuple):
            parts = value.split(",")
            if len(parts) != len(default):
                raise ValueError(f"{name} takes {len(default)} values, LO,HI")
            parsed = tuple(type(d)(v) for d, v in zip(default, parts, strict=True))
        else:
            parsed = type(default)(value)
        BlurConfig(**{name: parsed})  # the field's own checks (InputError is a ValueError)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--set {text!r}: {e}") from None
    return name, parsed


def add_settings_option(parser, help: str = "a BlurConfig field, e.g. linear_prob=0 (repeatable)") -> None:
    """The command lines' repeatable `--set NAME=VALUE` (parsed by `parse_setting`), collected
    in `args.settings` as (name, value) pairs for dataclasses.replace(BlurConfig(...), **dict(...))."""
    parser.add_argument("--set", dest="settings", type=parse_setting, action="append", default=[],
                        metavar="NAME=VALUE", help=help)


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
    # GoPro's sharp frame is the middle one in time: centre the path on the pose at mid-exposure,
    # not on the path's mean (with non-uniform speed they differ, and a model trained on the mean
    # learns an ambiguous shift that it then applies to real frames)
    mid = (steps - 1) / 2
    path -= (path[int(math.floor(mid))] + path[int(math.ceil(mid))]) / 2
    angles = np.linspace(-0.5, 0.5, steps) * rotation_rad
    return np.concatenate([path, angles[:, None]], axis=1)


def _pixel_centres(h: int, w: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """[h, w] y and x coordinates (float32 pixels) of the pixels' centres, for the draws' masks."""
    return torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32) + 0.5,
                          torch.arange(w, device=device, dtype=torch.float32) + 0.5, indexing="ij")


@dataclass(frozen=True)
class ObjectDraw:
    """A moving object: a blob of radius r(theta) = radius * aspect-stretched (1 + sum_k a_k
    cos(k theta + phi_k)) around `centre` (pixels), turned by `angle`, moved by `offsets` [steps, 2]
    (pixels, zero at mid-exposure) relative to the background."""

    centre: tuple[float, float]
    radius: float
    aspect: float
    angle: float
    harmonics: np.ndarray  # [K, 2]: amplitude a_k and phase phi_k of orders k = 2 .. K + 1
    offsets: np.ndarray

    def mask(self, h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """[h, w] coverage in [0, 1], antialiased over about one pixel."""
        y, x = _pixel_centres(h, w, device)
        dx, dy = x - self.centre[0], y - self.centre[1]
        c, s = math.cos(self.angle), math.sin(self.angle)
        u, v = c * dx + s * dy, (-s * dx + c * dy) * self.aspect
        theta = torch.atan2(v, u)
        r = torch.ones_like(theta)
        for k, (amp, phase) in enumerate(self.harmonics.tolist(), start=2):
            r = r + amp * torch.cos(k * theta + phase)
        return (self.radius * r - torch.sqrt(u * u + v * v) + 0.5).clamp(0.0, 1.0)


@dataclass(frozen=True)
class FlatDraw:
    """A flat field of sRGB `colour` painted over the scene: all of it (`whole`), or the half-plane
    of the points whose distance past the line through `point` (x, y pixels), along the direction
    `angle`, is positive."""

    colour: tuple[float, float, float]
    whole: bool
    point: tuple[float, float]
    angle: float

    def mask(self, h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """[h, w] coverage in [0, 1], antialiased over about one pixel."""
        if self.whole:
            return torch.ones(h, w, device=device)
        y, x = _pixel_centres(h, w, device)
        past = (x - self.point[0]) * math.cos(self.angle) + (y - self.point[1]) * math.sin(self.angle)
        return (past + 0.5).clamp(0.0, 1.0)


def draw_flat(rng: np.random.Generator, h: int, w: int) -> FlatDraw:
    """A random flat field: near black (two fifths), near white (two fifths) or any colour, over
    the whole image (a fifth) or a half-plane through a random point in it."""
    kind = rng.random()
    if kind < 0.4:
        base, spread = rng.uniform(0.0, 0.05), 0.01
    elif kind < 0.8:
        base, spread = rng.uniform(0.95, 1.0), 0.01
    else:
        base, spread = 0.5, 0.5
    colour = tuple(float(c) for c in np.clip(base + rng.uniform(-spread, spread, size=3), 0.0, 1.0))
    whole = bool(rng.random() < 0.2)
    point = (float(rng.uniform(0, w)), float(rng.uniform(0, h)))
    return FlatDraw(colour, whole, point, float(rng.uniform(0, 2 * math.pi)))


def _path_length(cfg: BlurConfig, u: float) -> float:
    """The path length in pixels (before scaling) at quantile u of cfg.length's distribution."""
    lo, hi = cfg.length
    return lo * (hi / lo) ** u if cfg.length_log and lo > 0 else lo + (hi - lo) * u


def draw_object(rng: np.random.Generator, h: int, w: int, cfg: BlurConfig, scale: float) -> ObjectDraw:
    """A random blob and its path, lengths as the camera's (cfg.length times `scale`)."""
    offsets = camera_path(rng, _path_length(cfg, rng.uniform(0.0, 1.0)) * scale, 0.0, cfg.steps, cfg.jerk)[:, :2]
    radius = float(rng.uniform(*cfg.object_radius)) * min(h, w)
    harmonics = np.stack([rng.uniform(0.0, 0.25, size=3) / np.arange(1, 4), rng.uniform(0, 2 * math.pi, size=3)], 1)
    return ObjectDraw(centre=(float(rng.uniform(0, w)), float(rng.uniform(0, h))), radius=radius,
                      aspect=float(np.exp(rng.uniform(-0.5, 0.5))), angle=float(rng.uniform(0, math.pi)),
                      harmonics=harmonics, offsets=offsets)


@dataclass(frozen=True)
class BlurDraw:
    """One random blur, drawn from a seed: what `render` applies to a sharp image."""

    poses: np.ndarray  # [steps, 3] (dx, dy, angle) along the camera path
    centre: tuple[float, float]  # rotation centre (x, y) in pixels
    gain: float  # > 1: a brighter exposure whose highlights clip in each sub-frame
    linear: bool  # average in linear light (else the sRGB values)
    noise_sigma: float
    shot_noise: float
    noise_seed: int
    jpeg_quality: int | None
    obj: ObjectDraw | None = None
    flat: FlatDraw | None = None
    clip_target: bool = True  # BlurConfig.clip_target: with gain > 1, the target is clipped too


def draw_blur(rng: np.random.Generator, h: int, w: int, cfg: BlurConfig = BlurConfig(), *,
              length_px: float | None = None, scale: float | None = None) -> BlurDraw:
    """Draw one blur for an h x w image. Path lengths are cfg.length pixels times `scale`
    (default max(h, w) / 1280: the ranges refer to a 1280 px wide frame); `length_px` fixes it
    (and rules out cfg.still_prob's still draws, cfg.object_prob's objects and cfg.flat_prob's
    flat fields)."""
    scale = max(h, w) / 1280.0 if scale is None else scale
    if length_px is None:  # one draw either way, so the draws after it do not depend on length_log
        length = _path_length(cfg, rng.uniform(0.0, 1.0)) * scale
    else:
        length = length_px
    rotation = math.radians(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg)) if length > 0 else 0.0
    poses = camera_path(rng, length, rotation, cfg.steps, cfg.jerk)
    centre = (float(rng.uniform(0, w)), float(rng.uniform(0, h)))
    gain = float(rng.uniform(1.0, 1.5)) if rng.random() < cfg.saturation_prob else 1.0
    linear = bool(rng.random() < cfg.linear_prob)
    sigma, shot = float(rng.uniform(*cfg.noise_sigma)), float(rng.uniform(*cfg.shot_noise))
    noise_seed = int(rng.integers(2**31))  # drawn even without noise: the draws after it stay the same
    quality = None
    if rng.random() < cfg.jpeg_prob:
        quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    # drawn last and only when they can matter, so the draws above stay those of a config without them
    obj = None
    if length_px is None and cfg.object_prob > 0 and rng.random() < cfg.object_prob:
        obj = draw_object(rng, h, w, cfg, scale)
    if length_px is None and cfg.still_prob > 0 and rng.random() < cfg.still_prob:
        poses, obj = np.zeros_like(poses), None
    flat = None
    if length_px is None and cfg.flat_prob > 0 and rng.random() < cfg.flat_prob:
        flat = draw_flat(rng, h, w)
    return BlurDraw(poses, centre, gain, linear, sigma, shot, noise_seed, quality, obj, flat, cfg.clip_target)


def affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """F.affine_grid(theta, [N, C, h, w], align_corners=False) for theta [N, 2, 3], computed by
    broadcasting: torch's CPU version multiplies [N, h*w, 3] by [N, 3, 2] in a batched matmul,
    which took 16 ms of a 43 ms training pair (192 px crop, 32 poses; the warp itself 13 ms)."""
    dev = theta.device
    xs = (torch.arange(w, device=dev, dtype=theta.dtype) * 2 + 1) / w - 1  # pixel centres in [-1, 1]
    ys = (torch.arange(h, device=dev, dtype=theta.dtype) * 2 + 1) / h - 1
    t = theta[:, :, :, None, None]  # [N, 2, 3, 1, 1]
    grid = t[:, :, 0] * xs + (t[:, :, 1] * ys[:, None] + t[:, :, 2])  # [N, 2, h, w]: x and y
    return grid.permute(0, 2, 3, 1)  # a view; grid_sample takes it as it is


def _warp(img: torch.Tensor, poses: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """img [B, C, H, W], poses [B, S, 3], centre [B, 2] -> [B, S, C, H, W] warped copies
    (bilinear, reflected borders)."""
    b, c, h, w = img.shape
    s = poses.shape[1]
    cos, sin = torch.cos(poses[..., 2]), torch.sin(poses[..., 2])
    # affine_grid works in normalised coordinates [-1, 1]; rotate about `centre`, then translate
    cx = (centre[:, 0] / (w / 2) - 1)[:, None]
    cy = (centre[:, 1] / (h / 2) - 1)[:, None]
    aspect = w / h
    theta = torch.stack([
        torch.stack([cos, -sin / aspect, cx - cos * cx + sin / aspect * cy - poses[..., 0] * 2 / w], -1),
        torch.stack([sin * aspect, cos, cy - sin * aspect * cx - cos * cy - poses[..., 1] * 2 / h], -1),
    ], -2).reshape(b * s, 2, 3)
    grid = affine_grid(theta, h, w)
    src = img[:, None].expand(b, s, c, h, w).reshape(b * s, c, h, w)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.view(b, s, c, h, w)


def render(sharp: torch.Tensor, draws: list[BlurDraw], return_target: bool = False):
    """sharp [B, 3, H, W] float in [0, 1] (sRGB, any device) -> blurry [B, 3, H, W], before JPEG;
    with `return_target`, (blurry, target): the scene at mid-exposure, which is `sharp` itself
    except where a draw painted a flat field or pasted a moving object, or, on a saturated draw,
    `sharp` brighter by its gain and clipped (BlurConfig.clip_target).

    The whole batch is warped in one grid_sample call, so on a GPU the blur costs little next to
    a training step; noise comes from a generator on sharp's device seeded by each draw.
    """
    dev = sharp.device
    sharp = sharp.float().clamp(0, 1)
    flats = [i for i, d in enumerate(draws) if d.flat is not None]
    if flats:  # part of the scene itself, so the target and a moving object's photo have it too
        sharp = sharp.clone()
        for i in flats:
            cover = draws[i].flat.mask(*sharp.shape[-2:], device=dev)
            colour = torch.tensor(draws[i].flat.colour, device=dev).view(3, 1, 1)
            sharp[i] = sharp[i] * (1 - cover) + colour * cover
    lin = srgb_to_linear(sharp)
    gain = torch.tensor([d.gain for d in draws], device=dev).view(-1, 1, 1, 1)
    poses = torch.as_tensor(np.stack([d.poses for d in draws]), dtype=torch.float32, device=dev)
    centre = torch.tensor([d.centre for d in draws], dtype=torch.float32, device=dev)
    linear = torch.tensor([d.linear for d in draws], device=dev).view(-1, 1, 1, 1)
    bright = lin * gain
    exposed = bright.clamp(max=1.0)  # what the sensor records of the brighter exposure
    bright_srgb = linear_to_srgb(bright)  # clipped at 1, as linear_to_srgb clamps
    # the scene as the exposure records it: brighter and clipped on saturated draws that clip their
    # target, the photo itself (bit for bit) on all others
    clipped = (gain > 1) & torch.tensor([d.clip_target for d in draws], device=dev).view(-1, 1, 1, 1)
    scene = torch.where(clipped, bright_srgb, sharp)
    # sRGB-averaged draws warp the clipped exposure's sRGB values (clipping before the warp
    # rather than after: the same up to interpolation at the clip's edge)
    src = torch.where(linear, bright, bright_srgb)
    frames = _warp(src, poses, centre)  # [B, S, 3, H, W]: what each sub-frame saw
    target = scene
    moving = [i for i, d in enumerate(draws) if d.obj is not None]
    if moving:
        idx = torch.tensor(moving, device=dev)
        alpha = torch.stack([draws[i].obj.mask(*sharp.shape[-2:], device=dev) for i in moving])[:, None]
        # the object: the same photo turned by 180 degrees, premultiplied by its coverage, moved by
        # its own offsets on top of the camera's motion
        layer = torch.cat([src[idx].flip(-2, -1) * alpha, alpha], 1)
        offsets = torch.as_tensor(np.stack([draws[i].obj.offsets for i in moving]), dtype=torch.float32, device=dev)
        layer_poses = poses[idx].clone()
        layer_poses[..., :2] += offsets
        moved = _warp(layer, layer_poses, centre[idx])
        frames[idx] = frames[idx] * (1 - moved[:, :, 3:]) + moved[:, :, :3]
        # the target is the scene at rest, composed in the space the draw averages in
        scene_lin = torch.where(clipped[idx], exposed[idx], lin[idx])
        base = torch.where(linear[idx], scene_lin, scene[idx])
        still_scene = base * (1 - alpha) + base.flip(-2, -1) * alpha
        target = scene.clone()  # and, bit for bit, the scene wherever the object is not
        target[idx] = torch.where(alpha > 0, torch.where(linear[idx], linear_to_srgb(still_scene), still_scene),
                                  scene[idx])
    avg = frames.clamp_(max=1.0).mean(1)
    blurred = torch.where(linear, avg, srgb_to_linear(avg))  # linear light from here on
    still = poses.abs().amax(dim=(1, 2)) == 0  # no motion: the image itself, not a resampled copy
    blurred = torch.where(still.view(-1, 1, 1, 1), exposed, blurred)
    blurred = torch.where(clipped, blurred, blurred / gain)  # unclipped targets: back to their exposure
    for i, d in enumerate(draws):
        if d.noise_sigma > 0 or d.shot_noise > 0:
            gen = torch.Generator(device=dev).manual_seed(d.noise_seed)
            std = torch.sqrt(d.noise_sigma**2 + d.shot_noise**2 * blurred[i].clamp_min(0))
            blurred[i] += std * torch.randn(blurred[i].shape, generator=gen, device=dev)
    blurry = linear_to_srgb(blurred)
    return (blurry, target) if return_target else blurry


def synthesize(sharp: torch.Tensor, seed: int, cfg: BlurConfig = BlurConfig(), *,
               length_px: float | None = None, scale: float | None = None) -> torch.Tensor:
    """sharp [3, H, W] float in [0, 1] (sRGB) -> blurry [3, H, W], deterministic in `seed`.

    `length_px` fixes the path length (0 gives the target back, before noise and JPEG: the
    sharp image, or on a saturated draw its brighter, clipped exposure);
    `scale` multiplies cfg.length (default: the image's longer side / 1280). With
    cfg.object_prob or cfg.flat_prob > 0 the blurry image may show a moving object or a flat
    field that `sharp` lacks: `synthesize_pair` gives the matching target.
    """
    return synthesize_pair(sharp, seed, cfg, length_px=length_px, scale=scale)[0]


def synthesize_pair(sharp: torch.Tensor, seed: int, cfg: BlurConfig = BlurConfig(), *,
                    length_px: float | None = None, scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(blurry, target) [3, H, W] for `sharp`, as `synthesize`: the target is `sharp` itself
    unless the draw added a flat field or a moving object, then the scene with them (the object
    at rest), or saturates, then the scene at its brighter exposure, clipped as the blurry one."""
    _check_sharp(sharp)
    _, h, w = sharp.shape
    d = draw_blur(np.random.default_rng(seed), h, w, cfg, length_px=length_px, scale=scale)
    out, target = render(sharp[None], [d], return_target=True)
    out = out[0]
    if d.jpeg_quality is not None:
        out = _jpeg(out.cpu(), d.jpeg_quality).to(out.device)
    return out.to(sharp.dtype), target[0].to(sharp.dtype)


def _check_sharp(sharp) -> None:
    """What synthesize renders: an RGB float tensor in [0, 1]; anything else named (a gray or
    RGBA tensor failed only on the draws that add JPEG, pixel values 0-255 made a wrong blur)."""
    how = "(a uint8 HxWx3 array: torch.from_numpy(img).permute(2, 0, 1).float() / 255)"
    if not isinstance(sharp, torch.Tensor):
        raise InputError(f"sharp must be a float tensor [3, H, W] in [0, 1] {how}, got {type(sharp).__name__}")
    if sharp.dim() != 3 or sharp.shape[0] != 3 or not sharp.is_floating_point():
        raise InputError(f"sharp must be a float tensor [3, H, W] in [0, 1] {how}, got {sharp.dtype} of shape "
                         f"{tuple(sharp.shape)}")
    lo, hi = sharp.aminmax()
    if not (0.0 <= float(lo) and float(hi) <= 1.0):
        raise InputError(f"sharp must hold values in [0, 1], got [{float(lo):.4g}, {float(hi):.4g}]")


def _jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return torch.from_numpy(back.copy()).permute(2, 0, 1).float() / 255.0
