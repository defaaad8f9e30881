"""deblur(): every input kind comes back as itself; bad input gets an error naming the problem."""

import copy
import os
import re
import threading
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import fastdeblur
from fastdeblur import InputError
from fastdeblur.api import auto_tile, run_model
from fastdeblur.reference import DMPHN


@pytest.fixture(scope="module")
def net():
    """Random-weight DMPHN(1-2-4): the API's plumbing does not depend on the weights."""
    torch.manual_seed(1)
    return DMPHN((1, 2, 4)).eval().requires_grad_(False)


def _expected(net, rgb_float):  # HxWx3 float in [0, 1] -> HxWx3 float32
    x = torch.from_numpy(np.ascontiguousarray(rgb_float)).permute(2, 0, 1)[None].float()
    return run_model(net, x, tile=0)[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("ensemble", [2, 4])
def test_ensemble_averages_the_flipped_outputs(net, ensemble):
    """ensemble=N: the mean of the network's outputs for the flipped inputs, flipped back, taken
    before clamping; on an odd size, whose padding lands on the other side once flipped."""
    x = torch.rand(2, 3, 21, 37)
    want = sum(run_model(net, x.flip(d) if d else x, tile=0, shifted=True).flip(d or ())
               for d in [(), (3,), (2,), (2, 3)][:ensemble]) / ensemble
    got = run_model(net, x, tile=0, shifted=True, ensemble=ensemble)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert (got - run_model(net, x, tile=0, shifted=True)).abs().max() > 1e-3  # not the plain output
    clamped = run_model(net, x, tile=0, ensemble=ensemble)
    torch.testing.assert_close(clamped, (want + 0.5).clamp(0, 1), rtol=0, atol=1e-6)
    img = (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # and through deblur()
    want8 = np.round(run_model(net, torch.from_numpy(img).permute(2, 0, 1)[None], tile=0,
                               ensemble=ensemble)[0].permute(1, 2, 0).numpy() * 255)
    assert np.abs(fastdeblur.deblur(img, net, ensemble=ensemble).astype(int) - want8).max() <= 1
    big = torch.rand(1, 3, 150, 170)  # exact tiling holds for every flipped copy
    torch.testing.assert_close(run_model(net, big, tile=128, ensemble=ensemble),
                               run_model(net, big, tile=0, ensemble=ensemble), rtol=0, atol=1e-5)


@pytest.mark.parametrize("model,tile,ensemble", [("1-2-4", 0, 1), ("1-2-4", 128, 1), ("stack2", 0, 2),
                                                 ("1-2-4-8", 128, 2)])
def test_progress_counts_the_work_exactly(model, tile, ensemble):
    """progress(fraction) after every encoder/decoder call or tile: rising, and the area count
    reaches exactly 1.0 by itself (the closing 1.0 is not sent twice), tiled or not, on an odd
    size whose padding the count includes."""
    from fastdeblur.reference import StackDMPHN

    torch.manual_seed(0)
    net = StackDMPHN(2) if model == "stack2" else DMPHN(tuple(int(p) for p in model.split("-")))
    seen = []
    run_model(net.eval(), torch.rand(2, 3, 150, 171), tile=tile, ensemble=ensemble, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and seen.count(1.0) == 1
    if not tile:  # one report per network call
        assert len(seen) == net.cnn_calls * ensemble
    else:
        assert len(seen) > net.cnn_calls * ensemble


def test_deblur_reports_progress(net):
    seen = []
    fastdeblur.deblur(np.zeros((20, 30, 3), np.uint8), net, progress=seen.append)
    assert len(seen) == net.cnn_calls and seen[-1] == 1.0


@pytest.mark.parametrize("bad", [0, 3, 8, True, "2", 2.0])
def test_bad_ensemble_is_named(net, bad):
    with pytest.raises(InputError, match="ensemble must be 1"):
        fastdeblur.deblur(np.zeros((16, 16, 3), np.uint8), net, ensemble=bad)


@pytest.mark.parametrize("shape", [(37, 53, 3), (40, 48, 3), (9, 8, 3), (8, 17, 3)])
def test_numpy_uint8_any_size(net, shape):
    img = np.random.randint(0, 256, shape, dtype=np.uint8)
    out = fastdeblur.deblur(img, net)
    assert out.shape == img.shape and out.dtype == np.uint8
    want = np.round(_expected(net, img / 255.0) * 255)
    assert np.abs(out.astype(int) - want).max() <= 1


def test_numpy_uint16_and_float(net):
    img16 = np.random.randint(0, 65536, (24, 32, 3), dtype=np.uint16)
    out16 = fastdeblur.deblur(img16, net)
    assert out16.dtype == np.uint16 and out16.shape == img16.shape
    for dt in (np.float32, np.float64, np.float16):
        f = (img16 / 65535.0).astype(dt)
        out = fastdeblur.deblur(f, net)
        assert out.dtype == dt and out.shape == f.shape
        assert 0.0 <= out.min() and out.max() <= 1.0
        np.testing.assert_allclose(out.astype(np.float64), out16 / 65535.0, atol=2e-3)


def test_gray_goes_through_rgb_and_back(net):
    gray = np.random.randint(0, 256, (24, 32), dtype=np.uint8)
    out = fastdeblur.deblur(gray, net)
    assert out.shape == gray.shape and out.dtype == np.uint8
    rgb = _expected(net, np.repeat(gray[..., None], 3, -1) / 255.0)
    want = np.round(rgb @ np.array([0.299, 0.587, 0.114]) * 255)
    assert np.abs(out.astype(int) - want).max() <= 1
    assert fastdeblur.deblur(gray[..., None], net).shape == (24, 32, 1)


def test_alpha_is_passed_through(net):
    img = np.random.randint(0, 256, (24, 32, 4), dtype=np.uint8)
    out = fastdeblur.deblur(img, net)
    assert out.shape == img.shape
    assert np.array_equal(out[..., 3], img[..., 3])
    assert np.array_equal(out[..., :3], fastdeblur.deblur(img[..., :3], net))


@pytest.mark.parametrize(("shape", "dtype"), [((4, 20, 28), torch.uint8), ((2, 4, 20, 28), torch.float32),
                                              ((2, 20, 28), torch.uint16), ((3, 2, 20, 28), torch.bfloat16)])
def test_tensor_alpha_is_passed_through(net, shape, dtype):
    """RGBA and gray + alpha tensors (torchvision reads RGBA PNGs as [4, H, W] uint8): the colour
    channels are deblurred as they would be alone, the alpha channel comes back bit for bit."""
    t = torch.randint(0, 256, shape, dtype=torch.int32).to(dtype) if not dtype.is_floating_point else \
        torch.rand(shape).to(dtype)
    out = fastdeblur.deblur(t, net)
    assert out.shape == t.shape and out.dtype == dtype
    assert torch.equal(out[..., -1, :, :], t[..., -1, :, :])
    assert torch.equal(out[..., :-1, :, :], fastdeblur.deblur(t[..., :-1, :, :], net))


@pytest.mark.parametrize("shape", [(3, 20, 28), (2, 3, 20, 28), (1, 20, 28), (2, 1, 20, 28), (20, 28)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_torch_tensors_keep_shape_dtype_device(net, shape, dtype):
    t = torch.rand(shape).to(dtype)
    out = fastdeblur.deblur(t, net)
    assert out.shape == t.shape and out.dtype == dtype and out.device == t.device
    if len(shape) == 2:  # [H, W]: gray, as [1, H, W] is
        assert torch.equal(out, fastdeblur.deblur(t[None], net)[0])
    if len(shape) == 4 and shape[1] == 3:  # batch items are deblurred independently
        first = fastdeblur.deblur(t[:1], net)
        torch.testing.assert_close(out[:1].float(), first.float(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 20, 28), (2, 1, 20, 28)])
def test_uint8_tensors_come_back_uint8(net, shape):
    """torchvision's images (uint8, 0-255) in, uint8 out: the float result, rounded."""
    t = torch.randint(0, 256, shape, dtype=torch.uint8)
    out = fastdeblur.deblur(t, net)
    assert out.shape == t.shape and out.dtype == torch.uint8
    want = torch.round(fastdeblur.deblur(t.float() / 255, net) * 255)
    assert (out.float() - want).abs().max() <= 1  # float32 rounding at a .5 boundary at most


def test_uint16_tensors_come_back_uint16_as_numpy_does(net):
    a = np.random.default_rng(0).integers(0, 65536, (20, 28, 3), dtype=np.uint16)
    t = torch.from_numpy(a.astype(np.int32)).to(torch.uint16).permute(2, 0, 1)
    out = fastdeblur.deblur(t, net)
    assert out.shape == t.shape and out.dtype == torch.uint16
    assert np.array_equal(out.permute(1, 2, 0).to(torch.int32).numpy(), fastdeblur.deblur(a, net).astype(np.int32))


def test_tensors_that_require_grad_are_taken_as_data(net):
    t = torch.rand(3, 16, 24, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = fastdeblur.deblur(t, net)
    assert not out.requires_grad and out.shape == t.shape


@pytest.fixture(scope="module")
def identity_net():
    """A DMPHN that returns its input (to float32 rounding): what comes back is what went in."""
    from fastdeblur.train.init import identity_init

    return identity_init(DMPHN((1, 2, 4))).eval().requires_grad_(False)


def _pil_image(mode: str, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode in ("I;16", "I;16L", "I;16B"):
        a16 = rng.integers(0, 65536, (24, 32), dtype=np.uint16)
        return Image.frombytes(mode, (32, 24), a16.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    rgba = rng.integers(0, 256, (24, 32, 4), dtype=np.uint8)
    if mode in ("La", "LA", "RGBa", "RGBA", "PA"):
        return Image.fromarray(rgba).convert({"La": "LA", "RGBa": "RGBA", "PA": "RGBA"}.get(mode, mode)).convert(mode)
    return Image.fromarray(rgba[..., :3]).convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "I;16", "I;16L", "I;16B", "La", "RGBa", "RGBX", "CMYK",
                                  "YCbCr", "HSV", "LAB", "1", "P", "PA"])
def test_pil_images_come_back_in_their_mode(identity_net, mode):
    """A PIL image comes back in its own mode, holding the network's output as Pillow converts it:
    16-bit gray in its byte order (converting it to RGB clipped it to 0..255), other colour
    spaces and premultiplied alpha through RGB(A) and back. Two exceptions, since re-quantising
    would undo the deblurring: bilevel (1) comes back 8-bit gray, palette (P, PA) RGB or RGBA."""
    im = _pil_image(mode)
    out = fastdeblur.deblur(im, identity_net)
    assert isinstance(out, Image.Image) and out.size == im.size
    if mode in ("1", "P", "PA"):
        want = im.convert({"1": "L", "P": "RGB", "PA": "RGBA"}[mode])
    elif mode in ("La", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV", "LAB"):
        want = im.convert({"La": "LA", "RGBa": "RGBA"}.get(mode, "RGB")).convert(mode)
    else:
        want = im
    assert out.mode == want.mode
    assert out.tobytes() == want.tobytes()


def test_pil_palette_transparency_is_kept(identity_net):
    im = _pil_image("RGB").convert("P")
    im.info["transparency"] = 0
    out = fastdeblur.deblur(im, identity_net)
    assert out.mode == "RGBA" and out.tobytes() == im.convert("RGBA").tobytes()


def test_pil_info_is_kept_as_pillow_keeps_it(identity_net, tmp_path):
    """Pillow's own operations (resize, convert, copy) keep `info`: the ICC profile, EXIF and dpi
    of a photo opened with Image.open. deblur() returned an image without them, so code that
    saves an image with its own info (`exif=im.info["exif"]`) lost the colour profile and the
    orientation tag, and a phone photo was shown on its side."""
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6
    _pil_image("RGB").save(tmp_path / "p.jpg", icc_profile=icc, exif=exif.tobytes(), dpi=(300, 300))
    with Image.open(tmp_path / "p.jpg") as im:
        out = fastdeblur.deblur(im, identity_net)
        assert out.info["icc_profile"] == icc and out.info["exif"] == im.info["exif"]
        assert out.info["dpi"] == im.info["dpi"]
    out.save(tmp_path / "q.jpg", icc_profile=out.info["icc_profile"], exif=out.info["exif"])
    with Image.open(tmp_path / "q.jpg") as back:
        assert back.info.get("icc_profile") == icc and back.getexif().get(0x0112) == 6
    pal = _pil_image("RGB").convert("P")
    pal.info["transparency"] = 0  # a palette index: meaningless for the RGBA given back
    assert "transparency" not in fastdeblur.deblur(pal, identity_net).info


def test_pil_32_bit_gray_modes_keep_their_values(net):
    """Mode I (Pillow < 10 opens 16-bit gray PNGs so) is 16-bit gray, F is float gray in [0, 1]:
    converting them to RGB, as other modes are, clipped them to 0..255 (a white or black image)."""
    a16 = np.random.default_rng(0).integers(0, 65536, (24, 32), dtype=np.uint16)
    out = fastdeblur.deblur(Image.fromarray(a16.astype(np.int32)), net)
    assert out.mode == "I" and np.array_equal(np.asarray(out), fastdeblur.deblur(a16, net).astype(np.int32))
    f = np.random.default_rng(1).random((24, 32), dtype=np.float32)
    out = fastdeblur.deblur(Image.fromarray(f), net)
    assert out.mode == "F" and np.array_equal(np.asarray(out), fastdeblur.deblur(f, net))
    with pytest.raises(InputError, match=r"mode I image holds values in \[0, 131070\]"):
        fastdeblur.deblur(Image.fromarray(np.array([[0, 131070]] * 16 * 8, np.int32).reshape(16, 16)), net)
    with pytest.raises(InputError, match=r"PIL mode F image: float images must lie in \[0, 1\]"):
        fastdeblur.deblur(Image.fromarray(f * 255), net)


def test_path_returns_numpy(net, tmp_path):
    img = np.random.randint(0, 256, (24, 32, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(img).save(path)
    for p in (path, str(path)):
        out = fastdeblur.deblur(p, net)
        assert isinstance(out, np.ndarray) and np.array_equal(out, fastdeblur.deblur(img, net))


@pytest.mark.parametrize("suffix", [".png", ".png16", ".jpg", ".tif", ".tif16", ".bmp", ".webp", ".avif", ".heic"])
def test_bytes_come_back_as_bytes_in_their_format(net, suffix):
    """An image file's bytes (an upload, a blob from a database) come back encoded in the same
    format, holding what deblur() gives for the decoded pixels, encoded as write_image does."""
    import imageio.v3 as iio

    from fastdeblur.io import encode_image, read_image, sniff

    rng = np.random.default_rng(3)
    deep = suffix.endswith("16")
    suffix = suffix.removesuffix("16")
    if suffix == ".heic":
        pytest.importorskip("pillow_heif", reason="pillow-heif is not installed (pip install fastdeblur[heif])")
    img = rng.integers(0, 65536 if deep else 256, (26, 35, 3)).astype(np.uint16 if deep else np.uint8)
    data = encode_image(img, suffix)
    for given in (data, bytearray(data), memoryview(data)):
        out = fastdeblur.deblur(given, net)
        assert isinstance(out, bytes) and sniff(out) == sniff(data)
        back = read_image(out)
        assert back.shape == img.shape and back.dtype == read_image(data).dtype
        want = fastdeblur.deblur(read_image(data), net)
        if suffix in (".png", ".tif", ".bmp"):  # lossless: bit for bit
            assert out == encode_image(want, suffix)
        else:  # lossy: within the codec's error of the array result
            assert np.abs(back.astype(float) - want).mean() < 6
    assert iio.imread(fastdeblur.deblur(encode_image(img[..., 0], ".png"), net)).ndim == 2  # gray stays gray


def test_bytes_keep_alpha_and_metadata(identity_net):
    """RGBA PNG bytes keep their alpha untouched; a JPEG's ICC profile and EXIF block come back,
    the pixels turned upright and the orientation tag reset to 1, as the command writes files."""
    import io

    from PIL import ImageCms

    from fastdeblur.io import encode_image, read_image

    rgba = np.random.default_rng(4).integers(0, 256, (20, 30, 4), dtype=np.uint8)
    out = fastdeblur.deblur(encode_image(rgba, ".png"), identity_net)
    assert np.array_equal(read_image(out)[..., 3], rgba[..., 3])
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # turned 90 degrees clockwise to display
    exif[0x010F] = "a camera"
    buf = io.BytesIO()
    Image.fromarray(rgba[..., :3]).save(buf, "JPEG", quality=95, icc_profile=icc, exif=exif.tobytes())
    with Image.open(io.BytesIO(fastdeblur.deblur(buf.getvalue(), identity_net))) as im:
        assert im.format == "JPEG" and im.size == (20, 30)  # upright: 30 wide becomes 30 high
        assert im.info["icc_profile"] == icc
        assert im.getexif()[0x0112] == 1 and im.getexif()[0x010F] == "a camera"


def test_bytes_in_formats_not_written_come_back_as_png(identity_net):
    import io

    rgb = np.random.default_rng(5).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    for fmt in ("GIF", "PPM"):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, fmt)
        out = fastdeblur.deblur(buf.getvalue(), identity_net)
        with Image.open(io.BytesIO(out)) as im:
            assert im.format == "PNG" and im.size == (24, 16)


def test_bad_bytes_and_file_objects_are_named(net):
    import io

    from fastdeblur.io import encode_image

    with pytest.raises(InputError, match=r"image data is empty"):
        fastdeblur.deblur(b"", net)
    with pytest.raises(InputError, match=r"image data: not a readable image"):
        fastdeblur.deblur(b"not an image at all", net)
    png = encode_image(np.zeros((16, 16, 3), np.uint8), ".png")
    with pytest.raises(InputError, match=r"image data: not a readable image"):
        fastdeblur.deblur(png[: len(png) // 2], net)  # cut short
    mp4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(64)
    with pytest.raises(InputError, match=r"a video \(MP4 container\), not an image; use fastdeblur.deblur_video"):
        fastdeblur.deblur(mp4, net)
    with pytest.raises(InputError, match=r"file object \(BytesIO\): pass its path, or its bytes \(f.read\(\)\)"):
        fastdeblur.deblur(io.BytesIO(png), net)


def test_tiling_matches_whole_image(net):
    img = np.random.rand(300, 260, 3).astype(np.float32)
    whole = fastdeblur.deblur(img, net, tile=0)
    tiled = fastdeblur.deblur(img, net, tile=128)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


@pytest.mark.parametrize("value", ["abc", "-5", "0", "nan", "inf", ""])
def test_memory_budget_env_is_checked(monkeypatch, value):
    from fastdeblur.api import memory_budget

    monkeypatch.setenv("FASTDEBLUR_MEMORY_BUDGET", value)
    if value == "":  # unset in effect: the default share of free memory
        assert memory_budget(torch.device("cpu")) > 0
        return
    with pytest.raises(InputError, match=f"FASTDEBLUR_MEMORY_BUDGET must be a positive number of MiB, got '{value}'"):
        memory_budget(torch.device("cpu"))
    monkeypatch.setenv("FASTDEBLUR_MEMORY_BUDGET", "1.5")
    assert memory_budget(torch.device("cpu")) == int(1.5 * 2**20)


def test_cpu_budget_is_half_the_available_memory_up_to_3_gib(monkeypatch):
    from fastdeblur import api

    monkeypatch.delenv("FASTDEBLUR_MEMORY_BUDGET", raising=False)
    monkeypatch.setattr(api._heap, "free_bytes", lambda: 0)  # no pages kept from an earlier forward
    monkeypatch.setattr(api._system, "memory_available", lambda: 2 * 2**30)
    assert api.memory_budget(torch.device("cpu")) == 2**30
    monkeypatch.setattr(api._system, "memory_available", lambda: 64 * 2**30)
    assert api.memory_budget(torch.device("cpu")) == 3 * 2**30
    monkeypatch.setattr(api._system, "memory_available", lambda: None)  # not Linux
    monkeypatch.delattr(api.os, "sysconf")  # Windows: 8 GiB assumed, so the 3 GiB cap
    assert api.memory_budget(torch.device("cpu")) == 3 * 2**30


def test_auto_tile_follows_the_budget():
    assert auto_tile(1280 * 720, torch.float32, 3 * 2**30) is None
    side = auto_tile(6000 * 4000, torch.float32, 3 * 2**30)
    assert side is not None and 512 <= side <= 1500 and side % 16 == 0
    assert auto_tile(6000 * 4000, torch.bfloat16, 3 * 2**30) > side


def test_concurrent_calls_agree(net):
    img = np.random.randint(0, 256, (32, 40, 3), dtype=np.uint8)
    want = fastdeblur.deblur(img, net)
    results, errors = [], []

    def work():
        try:
            results.append(fastdeblur.deblur(img, net))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 4
    assert all(np.array_equal(r, want) for r in results)


@pytest.mark.needs_data
def test_named_models_are_cached_and_shared_across_threads():
    fastdeblur.clear_model_cache()
    from fastdeblur.api import _cached_model

    got = []
    threads = [threading.Thread(target=lambda: got.append(_cached_model("default", torch.device("cpu"),
                                                                         torch.float32))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(got) == 3 and got[0] is got[1] is got[2]
    out = fastdeblur.deblur(np.zeros((16, 16, 3), np.uint8), device="cpu")
    assert out.shape == (16, 16, 3)


# --- bad input: one test each, the message names the problem -------------------------------

def test_wrong_ndim(net):
    with pytest.raises(InputError, match="HxW or HxWxC"):
        fastdeblur.deblur(np.zeros((2, 16, 16, 3), np.uint8), net)
    for shape in ((28,), (1, 2, 3, 20, 28)):  # a 2-D tensor is a gray image, as a 2-D array is
        with pytest.raises(InputError, match=r"\[H, W\] \(gray\), \[C, H, W\] or \[N, C, H, W\], got shape"):
            fastdeblur.deblur(torch.zeros(shape), net)


def test_wrong_channel_count(net):
    with pytest.raises(InputError, match="1, 2, 3 or 4 channels.*got 5"):
        fastdeblur.deblur(np.zeros((16, 16, 5), np.uint8), net)
    with pytest.raises(InputError, match="1, 2, 3 or 4 channels.*got 5") as e:
        fastdeblur.deblur(torch.zeros(5, 16, 16), net)
    assert "permute" not in str(e.value)


def test_swapped_layout_gets_a_hint(net):
    """The common mix-ups (numpy CxHxW, torch channels last) name the fix."""
    with pytest.raises(InputError, match=r"a.transpose\(1, 2, 0\)"):
        fastdeblur.deblur(np.zeros((3, 16, 16), np.uint8), net)
    with pytest.raises(InputError, match=r"t.permute\(2, 0, 1\)"):
        fastdeblur.deblur(torch.zeros(16, 16, 3), net)
    with pytest.raises(InputError, match=r"t.permute\(0, 3, 1, 2\)"):
        fastdeblur.deblur(torch.zeros(2, 16, 16, 3), net)


def test_nan_and_inf(net):
    a = np.zeros((16, 16, 3), np.float32)
    a[3, 3, 1] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        fastdeblur.deblur(a, net)
    t = torch.zeros(3, 16, 16)
    t[0, 0, 0] = float("inf")
    with pytest.raises(InputError, match="NaN or infinite"):
        fastdeblur.deblur(t, net)


def test_float_out_of_range(net):
    """Out-of-range floats are named; whole numbers up to 255 / 65535 (integer pixels cast to
    float, the usual cause) get the division that fixes them."""
    with pytest.raises(InputError, match=r"must lie in \[0, 1\], got values in \[0, 255\]; these look like 8-bit "
                                         r"values: divide by 255, or pass them as uint8"):
        fastdeblur.deblur(np.arange(16 * 16 * 3).reshape(16, 16, 3).clip(0, 255).astype(np.float32), net)
    with pytest.raises(InputError, match=r"got values in \[0, 4096\]; these look like integer pixel values: divide "
                                         r"by their bit depth's maximum \(65535 for 16-bit, 4095 for 12-bit\), or "
                                         r"pass 16-bit data as uint16"):
        fastdeblur.deblur(torch.full((3, 16, 16), 4096.0).index_fill_(1, torch.tensor([0]), 0), net)
    with pytest.raises(InputError, match=r"got values in \[0, 1\.5\]$"):  # not whole numbers: no guess
        fastdeblur.deblur(np.linspace(0, 1.5, 16 * 16 * 3).reshape(16, 16, 3), net)
    with pytest.raises(InputError, match=r"got values in \[-1, 1\]$"):  # [-1, 1], another convention: no guess
        fastdeblur.deblur(np.full((16, 16, 3), -1.0).clip(-1, 1) * np.sign(np.arange(3) - 0.5), net)
    # a little outside [0, 1]: a bicubic resize's or a sharpening's overshoot, told to clip
    overshoot = np.linspace(-0.02, 1.03, 16 * 16 * 3).reshape(16, 16, 3)
    with pytest.raises(InputError, match=r"got values in \[-0\.02, 1\.03\]; values a little outside come from "
                                         r"resampling or sharpening overshoot: clip them first "
                                         r"\(np\.clip\(img, 0, 1\)\)"):
        fastdeblur.deblur(overshoot, net)
    with pytest.raises(InputError, match=r"clip them first \(tensor\.clamp\(0, 1\)\)"):
        fastdeblur.deblur(torch.from_numpy(overshoot).permute(2, 0, 1), net)
    assert fastdeblur.deblur(overshoot.clip(0, 1), net).shape == overshoot.shape


def test_empty_image(net):
    with pytest.raises(InputError, match="empty"):
        fastdeblur.deblur(np.zeros((0, 16, 3), np.uint8), net)


@pytest.mark.parametrize("h,w", [(1, 1), (1, 23), (5, 3), (7, 16)])
def test_tiny_images(net, h, w):
    """Any size down to one pixel: sides shorter than the padding repeat their edge pixels."""
    rng = np.random.default_rng(h * 100 + w)
    img = rng.random((h, w, 3), dtype=np.float32)
    out = fastdeblur.deblur(img, net)
    assert out.shape == (h, w, 3) and out.dtype == np.float32
    x = torch.from_numpy(img).permute(2, 0, 1)[None] - 0.5
    ph, pw = -h % 8, -w % 8
    mode = "reflect" if ph < h and pw < w else "replicate"
    padded = torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
    want = (net(padded)[0, :, :h, :w] + 0.5).clamp(0, 1).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(out, want, atol=1e-5)
    tiny = fastdeblur.deblur(Image.fromarray((img * 255).astype(np.uint8)), net)
    assert tiny.size == (w, h) and tiny.mode == "RGB"


def test_unsupported_dtype(net):
    with pytest.raises(InputError, match="dtype int32 is not supported"):
        fastdeblur.deblur(np.zeros((16, 16, 3), np.int32), net)
    with pytest.raises(InputError, match=r"dtype torch.int16 is not supported \(float in \[0, 1\], uint8 or uint16\)"):
        fastdeblur.deblur(torch.zeros(3, 16, 16, dtype=torch.int16), net)


_WITHOUT_TRITON = r"""
import sys, tempfile, pathlib
sys.modules["triton"] = None  # as if triton were not installed: importing it raises ImportError
import numpy as np, torch, fastdeblur
from fastdeblur.cli import main
from fastdeblur.io import write_image
from fastdeblur.reference import DMPHN
from fastdeblur.train.trainer import TrainConfig  # the trainer imports too
torch.manual_seed(0)
net = DMPHN().eval()
img = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
for kw in [{}, {"dtype": "float32"}, {"backend": "reference"}, {"tile": 128}, {"ensemble": 2}]:
    assert fastdeblur.deblur(img, net, device="cpu", **kw).shape == img.shape, kw
tmp = pathlib.Path(tempfile.mkdtemp())
write_image(tmp / "a.png", img)
assert main([str(tmp / "a.png"), "-o", str(tmp / "b.png"), "--model", "fastdeblur-default", "-q"]) == 0
assert not any(m.startswith(("fastdeblur.kernels", "fastdeblur.models.fused")) for m in sys.modules)
print("ok")
"""


def test_cpu_paths_run_without_triton():
    """A CPU install has no triton (it comes with the test extras and CUDA torch builds): deblur()'s
    default (oneDNN) and other CPU paths, the command and the trainer's import must not need it.
    The quick start's first command failed this way until the eleventh session."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _WITHOUT_TRITON], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


@pytest.mark.parametrize("dtype", [">u2", ">f4", ">f8"])
def test_big_endian_arrays(net, dtype):
    """Big-endian data (FITS, some TIFF readers) deblurs as the same values in native order and
    comes back in its own dtype."""
    img = np.random.default_rng(0).integers(0, 65536, (19, 24, 3)).astype(np.uint16)
    if dtype != ">u2":
        img = img / 65535.0
    native = fastdeblur.deblur(img.astype(np.dtype(dtype).newbyteorder("=")), net)
    out = fastdeblur.deblur(img.astype(dtype), net)
    assert out.dtype == np.dtype(dtype) and out.shape == img.shape
    np.testing.assert_array_equal(out, native)


def test_tensor_without_pixels(net):
    with pytest.raises(InputError, match="dense tensor holding pixels.*'meta'"):
        fastdeblur.deblur(torch.zeros(3, 16, 16, device="meta"), net)
    with pytest.raises(InputError, match="dense tensor holding pixels.*sparse"):
        fastdeblur.deblur(torch.zeros(3, 16, 16).to_sparse(), net)


def test_unsupported_object(net):
    with pytest.raises(InputError, match="cannot deblur a value of type list"):
        fastdeblur.deblur([[0, 1]], net)


def test_missing_file(net, tmp_path, monkeypatch):
    with pytest.raises(InputError, match="nope.png: no such file$"):
        fastdeblur.deblur(tmp_path / "nope.png", net)
    # strings meant as something else get a hint: a URL (nothing is fetched), a "~" path
    with pytest.raises(InputError, match="^https://example.com/a.png: no such file; URLs are not downloaded"):
        fastdeblur.deblur("https://example.com/a.png", net)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(InputError, match=re.escape(f"~ is not expanded here: did you mean {tmp_path}/nope.png?")):
        fastdeblur.deblur("~/nope.png", net)


def test_bad_options(net):
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(InputError, match="backend 'magic'"):
        fastdeblur.deblur(img, net, backend="magic")
    with pytest.raises(InputError, match="tile must be"):
        fastdeblur.deblur(img, net, tile=-1)
    with pytest.raises(InputError, match="at least 128"):
        fastdeblur.deblur(img, net, tile=64)
    with pytest.raises(InputError, match="not a valid torch device"):
        fastdeblur.deblur(img, device="tpu9")
    for gpu in ("gpu", "GPU:0", "gpu9"):
        with pytest.raises(InputError, match=r"not a valid torch device \(an NVIDIA GPU is 'cuda' or 'cuda:N'\)"):
            fastdeblur.deblur(img, device=gpu)
    with pytest.raises(InputError, match="'meta' holds no pixels"):
        fastdeblur.deblur(img, net, device="meta")
    for same in ("cpu", "cpu:0", "CPU", torch.device("cpu")):  # where the model is: fine
        assert fastdeblur.deblur(img, net, device=same).shape == img.shape
    elsewhere = copy.deepcopy(net).to("meta")  # a model on another device than the one asked for
    with pytest.raises(InputError, match="the model given is on meta; load it with device='cpu'"):
        fastdeblur.deblur(img, elsewhere, device="cpu")
    for other in ("mps", "xpu"):  # neither exists on the machines the tests run on
        if (getattr(torch.backends, other, None) or getattr(torch, other)).is_available():
            continue
        with pytest.raises(InputError, match=f"no {other} device"):
            fastdeblur.deblur(img, net, device=other)
    with pytest.raises(InputError, match="dtype 'int8'"):
        fastdeblur.deblur(img, dtype="int8")
    with pytest.raises(InputError, match="progress must be a function called with the fraction done, got int"):
        fastdeblur.deblur(img, net, progress=5)
    # numpy's dtypes name the same precisions
    want = fastdeblur.deblur(img, net, dtype="float32")
    for same in (np.float32, np.dtype("float32"), "Float32", "FP32"):
        np.testing.assert_array_equal(fastdeblur.deblur(img, net, dtype=same), want)
    with pytest.raises(InputError, match="dtype 'float64' is not one of"):
        fastdeblur.deblur(img, net, dtype=np.float64)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # dynamo's import
def test_what_deblur_takes_as_a_model(net, tmp_path):
    """A name, or a DMPHN / StackDMPHN, also inside torch.compile's or DataParallel's wrapper
    (deblur() runs its own paths on the weights); anything else is named, and a weights file
    given as the model's name gets the way to load it."""
    img = np.random.default_rng(0).random((16, 24, 3)).astype(np.float32)
    want = fastdeblur.deblur(img, net)
    compiled = torch.compile(net)  # compiles nothing until called, and deblur() does not call it
    for wrapped in (compiled, torch.nn.DataParallel(net), torch.nn.DataParallel(compiled)):
        np.testing.assert_array_equal(fastdeblur.deblur(img, wrapped), want)
    for bad, named in ((torch.nn.Conv2d(3, 3, 3), "got a Conv2d"), (None, "got NoneType"), (3, "got int"),
                       (torch.nn.DataParallel(torch.nn.Identity()), "got a Identity")):
        with pytest.raises(InputError, match=r"model must be a model name \(fastdeblur.list_models\(\)\) or a "
                                             r"DMPHN / StackDMPHN module.*" + named):
            fastdeblur.deblur(img, bad)
    for path in ("runs/mine/last.pt", "mine.safetensors", tmp_path):
        with pytest.raises(fastdeblur.WeightsError, match=r"is a path, not a model name: .*load_model\(weights=PATH\)"
                                                          r".*CLI: --weights PATH"):
            fastdeblur.deblur(img, path)


def test_backend_env_is_validated(net, monkeypatch):
    monkeypatch.setenv("FASTDEBLUR_BACKEND", "nonsense")
    with pytest.raises(InputError, match="backend 'nonsense'"):
        fastdeblur.deblur(np.zeros((16, 16, 3), np.uint8), net)


def test_backends_agree(net):
    from fastdeblur import _ext

    img = np.random.rand(40, 56, 3).astype(np.float32)
    ref = fastdeblur.deblur(img, net, backend="reference")
    if _ext.has_ext():
        np.testing.assert_allclose(fastdeblur.deblur(img, net, backend="cuda"), ref, atol=1e-6)
        np.testing.assert_allclose(fastdeblur.deblur(img, net), ref, atol=1e-6)
    from fastdeblur.ops.conv import triton_usable

    if triton_usable(torch.device("cpu")):  # the interpreter, in this test session
        small = img[:16, :24]
        np.testing.assert_allclose(fastdeblur.deblur(small, net, backend="triton"),
                                   fastdeblur.deblur(small, net, backend="reference"), atol=1e-5)


def test_import_loads_no_extension_and_no_cuda():
    import subprocess
    import sys

    code = ("import sys, fastdeblur; assert 'fastdeblur._C' not in sys.modules; "
            "import torch; assert not torch.cuda.is_initialized(); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "ok", r.stderr


def test_cpu_deblur_does_not_import_the_compiler():
    """torch._dynamo takes 0.9 s to import (torch 2.13, 2-core Xeon): a process that deblurs on the CPU
    and compiles nothing must not pay for it. The backend choice's torch.compile marker imported it
    until the thirty-fifth session: a first 720p deblur() took 1.5 s there instead of 0.7 s."""
    import subprocess
    import sys

    code = ("import sys, numpy as np, fastdeblur; from fastdeblur.reference import DMPHN; "
            "net = DMPHN((1, 2, 4)).eval().requires_grad_(False); img = np.zeros((40, 56, 3), np.uint8); "
            "fastdeblur.deblur(img, net); fastdeblur.deblur(img, net, backend='reference'); "
            "print('imported' if 'torch._dynamo' in sys.modules else 'ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.stdout.strip() == "ok", r.stdout + r.stderr[-2000:]


@pytest.mark.filterwarnings("ignore:fastdeblur's compiled extension:RuntimeWarning")  # tested on its own
def test_without_the_extension_everything_runs_on_torch(net, monkeypatch):
    from fastdeblur import _ext, api
    from fastdeblur.reference.patches import TorchLayout

    img = np.random.rand(24, 32, 3).astype(np.float32)
    want = fastdeblur.deblur(img, net, backend="reference")
    monkeypatch.setattr(_ext, "_loaded", False)  # as after a FASTDEBLUR_SKIP_EXT=1 install
    monkeypatch.setattr(_ext, "_error", "No module named 'fastdeblur._C'")
    assert not fastdeblur.has_ext() and not fastdeblur.has_cuda_ext()
    assert api._resolve_backend(None, torch.device("cpu"), torch.float32)[1] is TorchLayout
    # torch's own layout steps; the convolutions are oneDNN's fused ones where torch has them
    np.testing.assert_allclose(fastdeblur.deblur(img, net), want, atol=1e-6)
    with pytest.raises(InputError, match="backend 'cuda' asked for, but the compiled extension has no cpu kernels"):
        fastdeblur.deblur(img, net, backend="cuda")


def test_a_missing_extension_where_its_kernels_would_run_warns_once(net, monkeypatch):
    """Without the extension a CPU whose instructions its Winograd kernels use runs 2-3x slower:
    said once per process, pointing at the caller's line, with how to fix it."""
    from fastdeblur import _ext, api
    from fastdeblur.models import winograd

    monkeypatch.setattr(_ext, "_loaded", False)
    monkeypatch.setattr(_ext, "_error", "No module named 'fastdeblur._C'")
    monkeypatch.setattr(api, "_warned_missing_extension", False)
    monkeypatch.setattr(winograd, "lost_without_extension", lambda dtype: dtype == torch.float32)
    img = np.random.rand(24, 32, 3).astype(np.float32)
    with pytest.warns(RuntimeWarning, match=r"compiled extension is not installed \(No module named "
                      r"'fastdeblur._C'\).*2-3x slower.*--no-build-isolation") as caught:
        fastdeblur.deblur(img, copy.deepcopy(net))  # a new model: its CPU twin is built here
    assert len(caught) == 1 and caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastdeblur.deblur(img, copy.deepcopy(net))  # once per process


@pytest.mark.parametrize("system, machine, isa, bf16, amx, lost", [
    ("linux", "x86_64", "AVX2", False, False, {torch.float32}),          # AVX2 only: float32's kernels
    ("linux", "x86_64", "AVX512", True, False, {torch.float32, torch.bfloat16}),  # AVX512-BF16, no AMX
    ("linux", "x86_64", "AVX512", True, True, {torch.float32}),          # AMX: bfloat16 stays on oneDNN
    ("linux", "x86_64", "DEFAULT", False, False, set()),     # no AVX2 (or ATEN_CPU_CAPABILITY=default)
    ("linux", "aarch64", "DEFAULT", False, False, set()),    # the kernels are x86-64 only
    ("darwin", "x86_64", "AVX2", False, False, {torch.float32}),         # an Intel Mac
    ("win32", "AMD64", "AVX2", False, False, set()),         # MSVC builds them without the kernels
])
def test_what_a_missing_extension_loses_follows_the_cpu(monkeypatch, system, machine, isa, bf16, amx, lost):
    import platform

    from fastdeblur import _ext
    from fastdeblur.models import winograd

    monkeypatch.setattr(_ext, "_loaded", False)
    monkeypatch.setattr(winograd.sys, "platform", system)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: isa)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
    monkeypatch.setattr(winograd, "cpu_has_amx", lambda: amx)
    monkeypatch.delenv("FASTDEBLUR_WINOGRAD", raising=False)
    assert {dt for dt in (torch.float32, torch.bfloat16) if winograd.lost_without_extension(dt)} == lost
    monkeypatch.setenv("FASTDEBLUR_WINOGRAD", "0")  # turned off: nothing lost
    assert not winograd.lost_without_extension(torch.float32)
    monkeypatch.delenv("FASTDEBLUR_WINOGRAD")
    monkeypatch.setattr(_ext, "_loaded", True)  # installed: nothing lost
    assert not winograd.lost_without_extension(torch.float32)


@pytest.mark.filterwarnings("ignore:fastdeblur's compiled extension:RuntimeWarning")  # tested on its own
def test_torch_23_leaves_the_extension_unloaded(net, monkeypatch):
    """torch 2.3 (supported) lacks torch.library.register_fake/register_autograd, which the
    extension's Python parts need: it counts as missing, with the reason, and deblur() runs on torch."""
    from fastdeblur import _ext

    monkeypatch.setattr(_ext, "_loaded", None)
    monkeypatch.setattr(_ext, "_error", None)
    monkeypatch.delattr(torch.library, "register_fake")
    assert not fastdeblur.has_ext()
    assert "need torch >= 2.4" in _ext.why_missing()
    img = np.random.rand(16, 24, 3).astype(np.float32)
    np.testing.assert_allclose(fastdeblur.deblur(img, net), fastdeblur.deblur(img, net, backend="reference"),
                               atol=1e-6)


def test_triton_backend_without_gpu_or_interpreter_is_a_clear_error(net, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(InputError, match="backend 'triton' needs a CUDA GPU"):
        fastdeblur.deblur(np.zeros((16, 16, 3), np.uint8), net, backend="triton", device="cpu")


def test_torch_without_triton_op_keeps_the_other_paths(net, monkeypatch):
    """torch 2.3-2.5 (supported) has no torch.library.triton_op: Triton counts as unusable, so
    backend=None never picks it, and backend='triton' says why."""
    from fastdeblur.ops.conv import triton_usable

    monkeypatch.setenv("TRITON_INTERPRET", "1")  # Triton would run here otherwise
    monkeypatch.delattr(torch.library, "triton_op", raising=False)
    assert not triton_usable(torch.device("cpu"))
    img = np.random.rand(16, 24, 3).astype(np.float32)
    np.testing.assert_allclose(fastdeblur.deblur(img, net), fastdeblur.deblur(img, net, backend="reference"),
                               atol=1e-6)
    with pytest.raises(InputError, match=r"torch >= 2\.6 \(this is "):
        fastdeblur.deblur(img, net, backend="triton", device="cpu")


@pytest.mark.skipif(not fastdeblur.has_ext(), reason="extension not built")
@pytest.mark.parametrize("dtype,kind", [(np.uint8, "numpy"), (np.uint16, "numpy"), (np.uint8, "rgba"),
                                        (np.uint8, "pil")])
def test_quantizing_through_the_extension_matches_torch(net, monkeypatch, dtype, kind):
    """The GPU's postprocess path, exercised here with the extension's CPU kernel."""
    from fastdeblur import api

    top = np.iinfo(dtype).max
    img = np.random.randint(0, top + 1, (37, 53, 4 if kind == "rgba" else 3)).astype(dtype)
    image = Image.fromarray(img) if kind == "pil" else img
    want = fastdeblur.deblur(image, net)
    monkeypatch.setattr(api, "_quantizes_on_extension", lambda r, device: not r.gray and r.kind != "torch"
                        and np.dtype(r.dtype).kind == "u")
    got = fastdeblur.deblur(image, net)
    if kind == "pil":
        got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and np.array_equal(got, want)


def test_conv_ops_validate_backend_names(monkeypatch):
    from fastdeblur import ops

    x, w = torch.zeros(1, 2, 4, 4), torch.zeros(2, 2, 3, 3)
    with pytest.raises(InputError, match="backend 'bogus' is not one of"):
        ops.conv3x3(x, w, backend="bogus")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(InputError, match="backend 'triton' needs a CUDA GPU"):
        ops.conv3x3(x, w, backend="triton")
    assert ops.conv3x3(x, w, backend="reference").shape == (1, 2, 4, 4)


def test_triton_failing_when_picked_automatically_falls_back_with_one_warning(net, monkeypatch):
    """backend=None picks the Triton model on GPUs. If Triton then fails in its own code (no C
    compiler for its launcher, a tile too big for the GPU's shared memory), deblur() warns, returns
    the result of the cuDNN/reference path, and does not try Triton on that device again; an
    explicit backend='triton' raises. Here the interpreter stands in for the GPU."""
    from fastdeblur import api
    from fastdeblur.ops.conv import triton_usable

    if not triton_usable(torch.device("cpu")):
        pytest.skip("needs Triton (its interpreter on CPU)")
    import triton.runtime.interpreter as interpreter

    launches = []

    def no_compiler(self, *args, **kwargs):
        launches.append(1)
        raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.")

    monkeypatch.setattr(interpreter.InterpretedFunction, "run", no_compiler)
    monkeypatch.setattr(api, "_TRITON_AUTO_DEVICES", ("cuda", "cpu"))  # as if the CPU were a GPU
    monkeypatch.setattr(api, "TRITON_DTYPES", (torch.float32,))
    monkeypatch.setattr(api, "_triton_failed", set())
    img = np.random.rand(16, 24, 3).astype(np.float32)
    want = fastdeblur.deblur(img, net, backend="reference")
    assert api._resolve_backend(None, torch.device("cpu"), torch.float32)[0] == "triton"
    with pytest.warns(RuntimeWarning, match=r"Triton kernels failed on cpu \(RuntimeError: Failed to find C compiler"):
        got = fastdeblur.deblur(img, net, dtype="float32")
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert launches == [1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, no second try
        np.testing.assert_allclose(fastdeblur.deblur(img, net, dtype="float32"), want, atol=1e-6)
    assert launches == [1]
    with pytest.raises(RuntimeError, match="C compiler"):
        fastdeblur.deblur(img, net, dtype="float32", backend="triton")


def test_other_errors_of_the_automatic_triton_model_are_not_swallowed(net, monkeypatch):
    from fastdeblur import api

    class Broken(torch.nn.Module):
        size_multiple = net.size_multiple

        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.zeros(1))

        def forward(self, x, **kw):
            raise ValueError("a bug of ours, not Triton's")

    monkeypatch.setattr(api, "_resolve_backend", lambda *a: ("triton", None))
    monkeypatch.setattr(api, "_fused", lambda model, kind: Broken())
    monkeypatch.setattr(api, "_triton_failed", set())
    with pytest.raises(ValueError, match="a bug of ours"):
        fastdeblur.deblur(np.random.rand(16, 24, 3).astype(np.float32), net, dtype="float32")
    assert not api._triton_failed


def test_which_errors_count_as_triton_failures():
    """Raised in Triton's code or torch's bridge to it (or chained from such an error): yes; raised
    in torch's other code or ours: no."""
    pytest.importorskip("triton")
    import os

    import triton

    from fastdeblur.api import _raised_by_triton

    torch_dir, triton_dir = os.path.dirname(torch.__file__), os.path.dirname(triton.__file__)

    def raised_in(path: str, cause: BaseException | None = None) -> BaseException:
        try:
            try:
                exec(compile("raise RuntimeError('from ' + where)", path, "exec"), {"where": path})
            except RuntimeError as e:
                if cause is None:
                    raise
                raise ValueError("wrapped") from e
        except (RuntimeError, ValueError) as e:
            return e

    assert _raised_by_triton(raised_in(os.path.join(triton_dir, "runtime", "build.py")))
    assert _raised_by_triton(raised_in(os.path.join(torch_dir, "_library", "triton.py")))
    assert not _raised_by_triton(raised_in(os.path.join(torch_dir, "nn", "functional.py")))
    assert not _raised_by_triton(raised_in(__file__))
    assert _raised_by_triton(raised_in(os.path.join(triton_dir, "compiler", "compiler.py"), cause=True))


@pytest.mark.parametrize("kw", [{}, {"tile": 128}, {"ensemble": 2}], ids=["whole", "tiled", "ensemble"])
def test_inputs_are_never_written_over(net, kw):
    """The forward shifts and sums in place, but only in its own temporaries."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (136, 144, 3), dtype=np.uint8),
              rng.integers(0, 65536, (136, 144, 3), dtype=np.uint16),
              rng.random((136, 144, 3), dtype=np.float32),
              torch.rand(3, 136, 144), torch.randint(0, 256, (1, 3, 136, 144), dtype=torch.uint8)]
    for img in images:
        keep = img.copy() if isinstance(img, np.ndarray) else img.clone()
        fastdeblur.deblur(img, net, **kw)
        assert (np.array_equal(img, keep) if isinstance(img, np.ndarray) else torch.equal(img, keep)), type(img)


_FORKED = r"""
import os, signal, sys, time
import numpy as np, torch, fastdeblur
from fastdeblur.reference import DMPHN
torch.set_num_threads(2)
torch.manual_seed(0)
net = DMPHN().eval()
img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
want = fastdeblur.deblur(img, net, device="cpu")  # the parent runs parallel ops: GNU OpenMP's pool starts
pid = os.fork()
if pid == 0:  # the child: the same call, then its result as the exit status
    ok = np.array_equal(fastdeblur.deblur(img, net, device="cpu"), want) and torch.get_num_threads() == 1
    os._exit(0 if ok else 1)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("child", os.waitstatus_to_exitcode(status))
        break
    time.sleep(0.05)
else:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    print("child hung")
print("parent threads", torch.get_num_threads())
"""


@pytest.mark.skipif(not hasattr(os, "fork") or not fastdeblur.api._gnu_openmp(),
                    reason="needs fork and a torch on GNU OpenMP (Linux pip wheels)")
def test_a_forked_child_runs_after_the_parent_has(tmp_path):
    """multiprocessing's default start on Linux (before Python 3.14) forks: a Pool worker's
    deblur() after the parent's hung for ever, on GNU OpenMP's pool threads that the fork left
    behind. The child now runs on one thread, with the same result; the parent keeps its two."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _FORKED], capture_output=True, text=True, timeout=200)
    assert r.stdout.split("\n")[:2] == ["child 0", "parent threads 2"], (r.stdout, r.stderr[-2000:])
