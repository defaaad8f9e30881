"""Synthetic blur: deterministic, zero motion is the identity, brightness kept where it is averaged."""

import dataclasses

import numpy as np
import pytest
import torch

from fastdeblur.train.blur import BlurConfig, affine_grid, camera_path, srgb_to_linear, synthesize, synthesize_pair

CLEAN = BlurConfig(noise_sigma=(0, 0), shot_noise=(0, 0), jpeg_prob=0, saturation_prob=0)
LINEAR, SRGB = (dataclasses.replace(CLEAN, linear_prob=p) for p in (1.0, 0.0))


@pytest.fixture(scope="module")
def sharp():
    g = torch.Generator().manual_seed(3)
    base = torch.rand(3, 12, 16, generator=g)
    return torch.nn.functional.interpolate(base[None], size=(96, 128), mode="bilinear")[0]  # smooth, textured


def test_deterministic_by_seed(sharp):
    assert torch.equal(synthesize(sharp, 11), synthesize(sharp, 11))
    assert not torch.equal(synthesize(sharp, 11), synthesize(sharp, 12))


def test_zero_motion_gives_the_sharp_image_back(sharp):
    for cfg in (LINEAR, SRGB):
        torch.testing.assert_close(synthesize(sharp, 5, cfg, length_px=0), sharp, rtol=0, atol=1e-5)


def test_mean_brightness_is_kept_where_it_is_averaged(sharp):
    for seed in range(4):
        blurry = synthesize(sharp, seed, LINEAR, length_px=12.0)
        assert abs(srgb_to_linear(blurry).mean() - srgb_to_linear(sharp).mean()) < 0.01 * srgb_to_linear(sharp).mean()
        assert (blurry - sharp).abs().mean() > 1e-3  # and it is blurred
        blurry = synthesize(sharp, seed, SRGB, length_px=12.0)
        assert abs(blurry.mean() - sharp.mean()) < 0.01 * sharp.mean()
        assert (blurry - sharp).abs().mean() > 1e-3


def test_linear_light_average_is_brighter_than_the_srgb_one(sharp):
    """Same path, both spaces: the sRGB curve is concave, so the linear-light average of a mix of
    bright and dark (seen in sRGB) is at least the sRGB values' average, pixel by pixel."""
    from fastdeblur.train.blur import draw_blur, render

    img = torch.zeros(1, 3, 48, 64)
    img[..., 32:] = 0.9  # a vertical edge between dark and bright
    d = draw_blur(np.random.default_rng(4), 48, 64, LINEAR, length_px=10.0)
    lin, srgb = (render(img, [dataclasses.replace(d, linear=f)])[0] for f in (True, False))
    assert (lin >= srgb - 1e-5).all()
    assert (lin - srgb).max() > 0.1  # near the edge the two differ a lot
    torch.testing.assert_close(lin[..., :8], srgb[..., :8], rtol=0, atol=1e-5)  # far from it, not at all


def test_longer_paths_blur_more(sharp):
    def detail(img):
        return (img[:, :, 1:] - img[:, :, :-1]).abs().mean()

    d = [detail(synthesize(sharp, 3, CLEAN, length_px=n)) for n in (0.0, 4.0, 16.0)]
    assert d[0] > d[1] > d[2]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("h,w", [(1, 1), (7, 5), (64, 97)])
def test_affine_grid_is_torchs(dtype, h, w):
    theta = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(h * w), dtype=dtype)
    want = torch.nn.functional.affine_grid(theta, [6, 3, h, w], align_corners=False)
    tol = 1e-12 if dtype == torch.float64 else 4e-6
    torch.testing.assert_close(affine_grid(theta, h, w), want, rtol=0, atol=tol)


def test_camera_path_length_and_centre():
    rng = np.random.default_rng(0)
    p = camera_path(rng, 20.0, 0.01, 32, 0.6)
    assert p.shape == (32, 3)
    assert np.linalg.norm(np.diff(p[:, :2], axis=0), axis=1).sum() == pytest.approx(20.0)
    np.testing.assert_allclose((p[15, :2] + p[16, :2]) / 2, 0, atol=1e-9)  # mid-exposure, as GoPro's sharp frame
    np.testing.assert_allclose((p[15, 2] + p[16, 2]) / 2, 0, atol=1e-12)
    odd = camera_path(rng, 20.0, 0.01, 33, 0.6)
    np.testing.assert_allclose(odd[16], 0, atol=1e-9)


def test_noise_and_jpeg_stay_in_range(sharp):
    cfg = BlurConfig(noise_sigma=(0.02, 0.02), shot_noise=(0.02, 0.02), jpeg_prob=1.0, saturation_prob=1.0)
    out = synthesize(sharp, 2, cfg)
    assert out.shape == sharp.shape and out.min() >= 0 and out.max() <= 1


def test_a_batch_renders_each_image_as_alone(sharp):
    from fastdeblur.train.blur import draw_blur, render

    rng = np.random.default_rng(7)
    draws = [draw_blur(rng, 96, 128, BlurConfig(jpeg_prob=0), scale=1.0) for _ in range(3)]
    draws.append(draw_blur(rng, 96, 128, CLEAN, length_px=0))
    batch = torch.stack([sharp, sharp.flip(2), sharp.flip(1), sharp])
    together = render(batch, draws)
    for i, d in enumerate(draws):
        torch.testing.assert_close(together[i], render(batch[i:i + 1], [d])[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(together[3], sharp, rtol=0, atol=1e-5)  # the still one is the image itself


def test_scale_sets_the_blur_length_in_pixels():
    from fastdeblur.train.blur import draw_blur

    d = draw_blur(np.random.default_rng(1), 96, 128, BlurConfig(length=(20, 20)), scale=0.5)
    assert np.linalg.norm(np.diff(d.poses[:, :2], axis=0), axis=1).sum() == pytest.approx(10.0)


def test_still_draws_come_at_their_rate_and_give_the_photo_back(sharp):
    from fastdeblur.train.blur import draw_blur

    rng = np.random.default_rng(5)
    draws = [draw_blur(rng, 96, 128, dataclasses.replace(CLEAN, still_prob=0.3), scale=1.0) for _ in range(400)]
    still = [not d.poses.any() for d in draws]
    assert 0.22 < np.mean(still) < 0.38
    # the moving ones are still real paths of the configured lengths
    assert all(np.linalg.norm(np.diff(d.poses[:, :2], axis=0), axis=1).sum() >= 3.0 - 1e-6
               for d, s in zip(draws, still, strict=True) if not s)
    torch.testing.assert_close(synthesize(sharp, 9, dataclasses.replace(CLEAN, still_prob=1.0)), sharp,
                               rtol=0, atol=1e-5)


def test_still_prob_zero_leaves_the_other_draws_as_they_were():
    from fastdeblur.train.blur import draw_blur

    # the still coin is drawn last: a config with still_prob > 0 draws the same path, exposure,
    # noise and JPEG as one without, and only then decides whether to keep the motion
    a, b = np.random.default_rng(8), np.random.default_rng(8)
    with_still = draw_blur(a, 96, 128, dataclasses.replace(CLEAN, still_prob=1e-9), scale=1.0)
    without = draw_blur(b, 96, 128, dataclasses.replace(CLEAN, still_prob=0.0), scale=1.0)
    assert np.array_equal(with_still.poses, without.poses) and with_still.noise_seed == without.noise_seed
    b.random()  # what the coin took from `a`
    assert a.random() == b.random()


def _path_length(d) -> float:
    return float(np.linalg.norm(np.diff(d.poses[:, :2], axis=0), axis=1).sum())


def test_log_uniform_lengths():
    """length_log (the default): as many paths in 3-12 px as in 12-48 px (uniform: a fifth and four
    fifths), the same range, and the same draws after the length as without it."""
    from fastdeblur.train.blur import draw_blur

    cfg = dataclasses.replace(CLEAN, length=(3.0, 48.0), still_prob=0.0, length_log=False)
    logcfg = dataclasses.replace(cfg, length_log=True)
    rng_u, rng_l = np.random.default_rng(2), np.random.default_rng(2)
    uni = [draw_blur(rng_u, 96, 128, cfg, scale=1.0) for _ in range(600)]
    log = [draw_blur(rng_l, 96, 128, logcfg, scale=1.0) for _ in range(600)]
    lu, ll = np.array([_path_length(d) for d in uni]), np.array([_path_length(d) for d in log])
    assert lu.min() >= 3.0 - 1e-6 and ll.min() >= 3.0 - 1e-6 and lu.max() <= 48.0 + 1e-6 and ll.max() <= 48.0 + 1e-6
    assert 0.15 < np.mean(lu < 12.0) < 0.25 and 0.43 < np.mean(ll < 12.0) < 0.57
    assert 9.0 < np.median(ll) < 15.0  # the geometric middle of 3 and 48 is 12
    assert all(u.noise_seed == g.noise_seed and u.linear == g.linear for u, g in zip(uni, log, strict=True))


OBJECTS = dataclasses.replace(CLEAN, object_prob=1.0, still_prob=0.0)


def test_moving_object_target_is_the_scene_at_rest(sharp):
    """A draw with an object: the target is the photo with the blob (the photo turned by 180
    degrees) pasted in, the blurry image shows it streaked, and a batch renders each as alone."""
    from fastdeblur.train.blur import draw_blur, render

    rng = np.random.default_rng(3)
    draws = [draw_blur(rng, 96, 128, OBJECTS, scale=1.0) for _ in range(3)]
    assert all(d.obj is not None for d in draws)
    batch = torch.stack([sharp, sharp.flip(2), sharp.flip(1)])
    blurry, target = render(batch, draws, return_target=True)
    for i, d in enumerate(draws):
        alpha = d.obj.mask(96, 128)
        assert 0.0 < alpha.mean() < 0.6 and ((alpha > 0) & (alpha < 1)).float().mean() < 0.05  # a blob, sharp-edged
        inside, outside = alpha == 1, alpha == 0
        turned = batch[i].flip(-2, -1)
        torch.testing.assert_close(target[i][:, inside], turned[:, inside], rtol=0, atol=1e-5)
        torch.testing.assert_close(target[i][:, outside], batch[i][:, outside], rtol=0, atol=1e-6)
        one_blurry, one_target = render(batch[i:i + 1], [d], return_target=True)
        torch.testing.assert_close(blurry[i], one_blurry[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(target[i], one_target[0], rtol=0, atol=0)
    # the object streaks where it moves: its own motion adds to the camera's
    without = render(batch, [dataclasses.replace(d, obj=None) for d in draws])
    assert ((blurry - without).abs().amax(dim=(1, 2, 3)) > 0.05).all()


def test_an_object_at_rest_under_a_still_camera_gives_the_target_back(sharp):
    from fastdeblur.train.blur import draw_blur, render

    d = draw_blur(np.random.default_rng(6), 96, 128, OBJECTS, scale=1.0)
    tiny = dataclasses.replace(d, poses=d.poses * 1e-4, obj=dataclasses.replace(d.obj, offsets=d.obj.offsets * 1e-4))
    for linear in (True, False):
        blurry, target = render(sharp[None], [dataclasses.replace(tiny, linear=linear)], return_target=True)
        torch.testing.assert_close(blurry, target, rtol=0, atol=2e-3)
        assert not torch.allclose(target[0], sharp, atol=1e-3)


def test_objects_come_at_their_rate_and_leave_other_draws_alone(sharp):
    from fastdeblur.train.blur import draw_blur, synthesize_pair

    rng = np.random.default_rng(9)
    cfg = dataclasses.replace(CLEAN, object_prob=0.3)
    assert 0.22 < np.mean([draw_blur(rng, 96, 128, cfg, scale=1.0).obj is not None for _ in range(400)]) < 0.38
    a, b = (draw_blur(np.random.default_rng(8), 96, 128, c, scale=1.0) for c in (cfg, CLEAN))
    assert np.array_equal(a.poses, b.poses) and a.noise_seed == b.noise_seed  # the object is drawn after
    # still draws and a fixed length have no object; without one the target is the photo itself
    assert draw_blur(rng, 96, 128, dataclasses.replace(OBJECTS, still_prob=1.0)).obj is None
    assert draw_blur(rng, 96, 128, OBJECTS, length_px=5.0).obj is None
    blurry, target = synthesize_pair(sharp, 4, CLEAN)
    assert torch.equal(target, sharp) and torch.equal(blurry, synthesize(sharp, 4, CLEAN))
    blurry, target = synthesize_pair(sharp, 4, OBJECTS)
    assert not torch.equal(target, sharp) and torch.equal(blurry, synthesize(sharp, 4, OBJECTS))


FLATS = dataclasses.replace(CLEAN, flat_prob=1.0, still_prob=0.0)


def test_flat_fields_are_part_of_the_scene(sharp):
    """A draw with a flat field: the target is the photo painted with the colour over a half-plane
    (or all of it), and a blur of a flat field is that flat field: nothing to deblur there."""
    from fastdeblur.train.blur import FlatDraw, draw_blur, render

    rng = np.random.default_rng(12)
    draws = [draw_blur(rng, 96, 128, FLATS, scale=1.0) for _ in range(3)]
    assert all(d.flat is not None for d in draws)
    draws[0] = dataclasses.replace(draws[0], flat=FlatDraw((0.02, 0.01, 0.03), False, (40.0, 50.0), 0.0))
    draws[1] = dataclasses.replace(draws[1], flat=FlatDraw((0.97, 1.0, 0.98), True, (0.0, 0.0), 1.0))
    batch = torch.stack([sharp, sharp.flip(2), sharp.flip(1)])
    for linear in (True, False):
        now = [dataclasses.replace(d, linear=linear) for d in draws]
        blurry, target = render(batch, now, return_target=True)
        # draw 0: the columns from x = 40 on are the colour, those before it the photo
        colour = torch.tensor([0.02, 0.01, 0.03]).view(3, 1, 1)
        torch.testing.assert_close(target[0][:, :, 41:], colour.expand(3, 96, 87), rtol=0, atol=1e-6)
        assert torch.equal(target[0][:, :, :39], batch[0][:, :, :39])
        # far inside the field (beyond any warp's reach) the blurry image is the colour too
        torch.testing.assert_close(blurry[0][:, :, 100:], colour.expand(3, 96, 28), rtol=0, atol=1e-4)
        # draw 1: the whole frame, before and after the blur
        torch.testing.assert_close(blurry[1], target[1], rtol=0, atol=1e-4)
        assert float(target[1].std()) < 0.02
        for i, d in enumerate(now):  # a batch renders each as alone
            one_blurry, one_target = render(batch[i:i + 1], [d], return_target=True)
            torch.testing.assert_close(blurry[i], one_blurry[0], rtol=0, atol=1e-6)
            torch.testing.assert_close(target[i], one_target[0], rtol=0, atol=0)
    assert torch.equal(batch[0], sharp)  # the caller's photo is left as it was


def test_flats_come_at_their_rate_and_leave_other_draws_alone(sharp):
    from fastdeblur.train.blur import draw_blur

    rng = np.random.default_rng(10)
    cfg = dataclasses.replace(CLEAN, flat_prob=0.3)
    flats = [d.flat for d in (draw_blur(rng, 96, 128, cfg, scale=1.0) for _ in range(400)) if d.flat is not None]
    assert 0.22 < len(flats) / 400 < 0.38
    dark = np.mean([max(f.colour) <= 0.06 for f in flats])
    bright = np.mean([min(f.colour) >= 0.94 for f in flats])
    assert 0.28 < dark < 0.52 and 0.28 < bright < 0.52 and 0.1 < np.mean([f.whole for f in flats]) < 0.3
    a, b = (draw_blur(np.random.default_rng(8), 96, 128, c, scale=1.0) for c in (cfg, CLEAN))
    assert np.array_equal(a.poses, b.poses) and a.noise_seed == b.noise_seed  # the field is drawn after
    assert draw_blur(rng, 96, 128, FLATS, length_px=5.0).flat is None  # a fixed length has none
    blurry, target = synthesize_pair(sharp, 4, FLATS)
    assert not torch.equal(target, sharp) and torch.equal(blurry, synthesize(sharp, 4, FLATS))


def test_a_saturated_draw_clips_its_target_as_its_frames(sharp):
    """A brighter exposure clipped in each sub-frame: the target is that exposure, clipped alike,
    so a region the exposure clips is white in both images and a still camera gives the target
    back. The old target (clip_target=0) was the photo, with the blurry image scaled back by the
    gain: grey where it clipped, and brighter in the target than in any blur of it."""
    from fastdeblur.train.blur import draw_blur, linear_to_srgb, render

    d = dataclasses.replace(draw_blur(np.random.default_rng(3), 96, 128, CLEAN, length_px=8.0), gain=1.4)
    img = sharp.clone()
    img[:, :, 64:] = 0.9  # a bright flat half: 0.79 in linear light, 1.1 at the exposure
    far = (slice(None), slice(None), slice(100, None))  # out of the blur's reach from that edge
    for linear in (True, False):
        blurry, target = render(img[None], [dataclasses.replace(d, linear=linear)], return_target=True)
        torch.testing.assert_close(target[0][far], torch.ones(3, 96, 28), rtol=0, atol=1e-6)
        torch.testing.assert_close(blurry[0][far], torch.ones(3, 96, 28), rtol=0, atol=1e-5)
        exposed = linear_to_srgb((srgb_to_linear(img[:, :, :40]) * 1.4).clamp(max=1.0))
        torch.testing.assert_close(target[0][:, :, :40], exposed, rtol=0, atol=1e-6)
        still = dataclasses.replace(d, linear=linear, poses=np.zeros_like(d.poses))
        blurry, target = render(img[None], [still], return_target=True)
        torch.testing.assert_close(blurry, target, rtol=0, atol=1e-5)
        old = dataclasses.replace(d, linear=linear, clip_target=False)
        blurry, target = render(img[None], [old], return_target=True)
        assert torch.equal(target[0], img)
        grey = linear_to_srgb(torch.tensor(1 / 1.4))
        torch.testing.assert_close(blurry[0][far], grey.expand(3, 96, 28), rtol=0, atol=1e-5)
    assert dataclasses.replace(CLEAN, clip_target=False).clip_target is False
    assert draw_blur(np.random.default_rng(3), 96, 128, dataclasses.replace(CLEAN, clip_target=False)).clip_target \
        is False


def test_what_synthesize_cannot_render_is_named(sharp):
    """An RGB float tensor in [0, 1] only: a gray or RGBA tensor failed on the draws that add
    JPEG (one in three), 8-bit values made a wrong blur, a numpy array an AttributeError."""
    from fastdeblur import InputError

    for bad in (sharp[:1], torch.cat([sharp, sharp[:1]]), (sharp * 255).to(torch.uint8), sharp[None],
                sharp.permute(1, 2, 0).numpy()):
        with pytest.raises(InputError, match=r"sharp must be a float tensor \[3, H, W\] in \[0, 1\] \(a uint8 HxWx3 "
                                             r"array: torch.from_numpy\(img\).permute\(2, 0, 1\).float\(\) / 255\)"):
            synthesize(bad, 0)
    with pytest.raises(InputError, match=r"sharp must hold values in \[0, 1\], got \[[\d.]+, 2[\d.]+\]"):
        synthesize_pair(sharp * 255, 0)
