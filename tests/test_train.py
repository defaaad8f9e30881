"""Training: loaders on a tiny GoPro-like tree, a few steps lower the loss, resume is exact."""

import csv
import json
import re

import numpy as np
import pytest
import torch

from fastdeblur.errors import InputError
from fastdeblur.io import write_image
from fastdeblur.train.data import PairedImages, SyntheticPairs
from fastdeblur.train.trainer import StepBatches, TrainConfig, Trainer


@pytest.fixture
def gopro_tree(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for seq in ("GOPR0001_00_00", "GOPR0002_00_00"):
            for kind in ("blur", "blur_gamma", "sharp"):
                (tmp_path / "GOPRO_Large" / split / seq / kind).mkdir(parents=True)
            for i in range(2):
                sharp = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                for kind in ("blur", "blur_gamma"):
                    write_image(tmp_path / "GOPRO_Large" / split / seq / kind / f"{i:06d}.png", sharp // 2 + 60)
                write_image(tmp_path / "GOPRO_Large" / split / seq / "sharp" / f"{i:06d}.png", sharp)
    return tmp_path


def test_gopro_layout_lists_and_folders(gopro_tree, tmp_path):
    ds = PairedImages.from_gopro(gopro_tree, "train", crop=32)
    assert len(ds) == 4
    blur, sharp = ds[0]
    assert blur.shape == sharp.shape == (3, 32, 32)
    assert len(PairedImages.from_gopro(gopro_tree / "GOPRO_Large", "test", blur_kind="blur_gamma", crop=32)) == 4
    seq = gopro_tree / "GOPRO_Large" / "train" / "GOPR0001_00_00"
    assert len(PairedImages.from_folders(seq / "blur", seq / "sharp", crop=32)) == 2
    root = gopro_tree / "GOPRO_Large"
    for kind in ("blur", "sharp"):
        (tmp_path / f"{kind}.txt").write_text(f"train/GOPR0001_00_00/{kind}/000000.png\n"
                                              f"train/GOPR0002_00_00/{kind}/000001.png\n")
    fl = PairedImages.from_file_lists(root, tmp_path / "blur.txt", tmp_path / "sharp.txt", crop=16)
    assert len(fl) == 2 and fl[1][0].shape == (3, 16, 16)


def test_augmentation_is_shared_and_deterministic(gopro_tree):
    ds = PairedImages.from_gopro(gopro_tree, "train", crop=24, seed=3)
    b1, s1 = ds[1]
    b2, s2 = ds[1]
    assert torch.equal(b1, b2) and torch.equal(s1, s2)
    # blur = sharp // 2 + 60 in this tree: the same crop/flip/rotation was applied to both
    assert torch.allclose(b1 * 255, torch.floor(s1 * 255 / 2) + 60, atol=1e-3)


def test_synthetic_pairs(gopro_tree):
    photos = gopro_tree / "GOPRO_Large" / "train" / "GOPR0001_00_00" / "sharp"
    ds = SyntheticPairs([photos], crop=32, length=5)
    blur, sharp = ds[3]
    assert len(ds) == 5 and blur.shape == sharp.shape == (3, 32, 32)
    assert torch.equal(ds[3][0], blur)


def test_synthetic_photos_are_found_in_subfolders_and_bad_sources_named(gopro_tree):
    train = gopro_tree / "GOPRO_Large" / "train"  # 12 images, all two levels down
    (train / "notes.txt").write_text("not a photo")
    (train / ".thumbs").mkdir()
    write_image(train / ".thumbs" / "t.png", np.zeros((40, 48, 3), np.uint8))
    assert len(SyntheticPairs([train], crop=32).files) == 12
    one = train / "GOPR0001_00_00" / "sharp" / "000000.png"
    assert SyntheticPairs([one, train / "GOPR0002_00_00"], crop=32).files[0] == one
    with pytest.raises(InputError, match="nowhere.*does not exist"):
        SyntheticPairs([train, gopro_tree / "nowhere"])
    (gopro_tree / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(InputError, match="no images .* in .*empty or its subfolders"):
        SyntheticPairs([gopro_tree / "empty"])
    with pytest.raises(InputError, match="nowhere is not a folder"):
        PairedImages.from_folders(gopro_tree / "nowhere", train)


def test_paired_folders_pair_by_name_then_by_stem(tmp_path):
    """blur/a.png pairs with sharp/a.png, else with the one sharp file of stem a (a.jpg); what has
    no twin is counted and one is named."""
    rng = np.random.default_rng(0)
    for name in ("blur/a.png", "blur/b.png", "blur/c.png", "sharp/a.png", "sharp/a.jpg", "sharp/b.jpg",
                 "sharp/c.tif", "sharp/c.jpg"):
        write_image(tmp_path / name, rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    with pytest.raises(InputError, match=r"1 of 3 blurry images in .*blur have no sharp twin of the same name in "
                                         r".*sharp, e.g. .*sharp/c.png"):  # c.tif or c.jpg: not guessed
        PairedImages.from_folders(tmp_path / "blur", tmp_path / "sharp", crop=32)
    (tmp_path / "sharp" / "c.jpg").unlink()
    pairs = PairedImages.from_folders(tmp_path / "blur", tmp_path / "sharp", crop=32).pairs
    assert [(b.name, s.name) for b, s in pairs] == [("a.png", "a.png"), ("b.png", "b.jpg"), ("c.png", "c.tif")]
    for name in ("S1/blur/1.png", "S1/sharp/1.png", "S1/blur/2.png", "S2/blur/1.png"):  # GoPro's layout
        write_image(tmp_path / "GOPRO_Large" / "train" / name, rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    with pytest.raises(InputError, match=r"2 of 3 blurry images of .*train have no sharp twin of the same name in "
                                         r"their sequence's sharp/, e.g. .*S1/sharp/2.png"):
        PairedImages.from_gopro(tmp_path, crop=32)


def test_images_that_cannot_train_are_named_before_the_run(gopro_tree, tmp_path):
    """Photos or pairs smaller than the crop are left out with a warning (an error when none is
    left), pairs of two sizes are an error: all from the headers, before the first step, where
    before a photo smaller than the crop stopped the run with a traceback when it was drawn."""
    from PIL import Image

    from fastdeblur.io import read_image
    from fastdeblur.train.data import SyntheticBatches, image_size

    photos = gopro_tree / "GOPRO_Large" / "train" / "GOPR0001_00_00" / "sharp"  # two 40x48 photos
    write_image(photos / "thumb.png", np.zeros((20, 30, 3), np.uint8))
    left_out = r"1 of 3 photos are smaller than the 32 px training crop and are left out, e.g. .*thumb.png \(30x20\)"
    with pytest.warns(RuntimeWarning, match=left_out):
        assert [p.name for p in SyntheticPairs([photos], crop=32).files] == ["000000.png", "000001.png"]
    with pytest.warns(RuntimeWarning, match=left_out):
        assert len(SyntheticBatches([photos], crop=32, device="cpu").images) == 2
    assert len(SyntheticPairs([photos], crop=16).files) == 3
    with pytest.raises(InputError, match=r"every photo is smaller than the 48 px training crop \(the largest's "
                                         r"shorter side: 40 px\): use a smaller crop"):
        SyntheticPairs([photos], crop=48)
    seq = gopro_tree / "GOPRO_Large" / "train" / "GOPR0002_00_00"
    write_image(seq / "blur" / "000009.png", np.zeros((20, 30, 3), np.uint8))
    write_image(seq / "sharp" / "000009.png", np.zeros((20, 30, 3), np.uint8))
    with pytest.warns(RuntimeWarning, match=r"1 of 3 pairs are smaller .* e.g. .*blur/000009.png \(30x20\)"):
        assert len(PairedImages.from_folders(seq / "blur", seq / "sharp", crop=32)) == 2
    write_image(seq / "sharp" / "000009.png", np.zeros((20, 31, 3), np.uint8))
    with pytest.raises(InputError, match=r"blur/000009.png and .*sharp/000009.png differ in size"):
        PairedImages.from_folders(seq / "blur", seq / "sharp", crop=16)
    # the header's size is read_image's: EXIF orientations with a quarter turn swap the sides
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (30, 20)).save(tmp_path / "turned.jpg", exif=exif)
    assert image_size(tmp_path / "turned.jpg") == read_image(tmp_path / "turned.jpg").shape[:2] == (30, 20)
    assert image_size(photos / "thumb.png") == (20, 30)
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(InputError, match="junk.png: not a readable image"):
        image_size(tmp_path / "junk.png")


@pytest.mark.parametrize("channels", [None, 1, 2, 4])
def test_every_kind_of_photo_trains_as_rgb(tmp_path, channels):
    """Gray, gray + alpha and RGBA photos become RGB crops in every loader: gray + alpha was taken
    as two colour channels, so a gray PNG with transparency stopped a run (and synthesize refused it)."""
    from fastdeblur.train.data import SyntheticBatches, rgb_pixels

    shape = (40, 48) if channels is None else (40, 48, channels)
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    write_image(tmp_path / "p.png", img)
    gray = img if channels is None else img[..., 0]
    want = np.stack([gray] * 3, -1) if channels in (None, 1, 2) else img[..., :3]
    assert np.array_equal(rgb_pixels(img), want)
    blur, sharp = SyntheticPairs([tmp_path / "p.png"], crop=32)[0]
    assert blur.shape == sharp.shape == (3, 32, 32)
    assert SyntheticBatches([tmp_path / "p.png"], crop=32, device="cpu").batch(0, 2)[0].shape == (2, 3, 32, 32)


def test_a_photo_that_turns_out_unreadable_when_drawn_is_replaced(tmp_path, capsys):
    """A JPEG cut short after its header passes the size check before the run, then failed when
    drawn, stopping the run (with a data worker's traceback). Now the next photo is drawn in its
    place, deterministically, and the file is said once per process."""
    from fastdeblur.train import data as D

    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.png", "c.png"):
        write_image(tmp_path / "photos" / name, rng.integers(0, 256, (72, 80, 3), dtype=np.uint8))
    jpg = (tmp_path / "photos" / "a.jpg").read_bytes()
    (tmp_path / "photos" / "a.jpg").write_bytes(jpg[: len(jpg) // 3])
    ds = SyntheticPairs([tmp_path / "photos"], crop=32)
    assert [f.name for f in ds.files] == ["a.jpg", "b.png", "c.png"]  # the header reads: kept before the run
    D._LEFT_OUT.clear()
    first, again = ds[0], ds[0]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])  # the same draw each time
    assert capsys.readouterr().err.count("a.jpg: not a readable image") == 1  # said once
    from fastdeblur.train.data import SyntheticBatches

    with pytest.warns(RuntimeWarning, match=r"1 of 3 photos could not be read and are left out, e.g. .*a.jpg"):
        assert len(SyntheticBatches([tmp_path / "photos"], crop=32, device="cpu").images) == 2  # decodes them all
    for name in ("blur", "sharp"):
        for photo in ("a.jpg", "b.png"):
            (tmp_path / name).mkdir(exist_ok=True)
            (tmp_path / name / photo).write_bytes((tmp_path / "photos" / photo).read_bytes())
    pairs = PairedImages.from_folders(tmp_path / "blur", tmp_path / "sharp", crop=32)
    assert pairs[0][0].shape == (3, 32, 32)  # b.png's pair in a.jpg's place
    D._LEFT_OUT.clear()
    (tmp_path / "photos" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "photos" / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(InputError, match="none of the 3 training images could be read"):
        ds[1]


def test_an_error_between_steps_keeps_the_steps_done(tmp_path, capsys):
    """An error from the data (or validation, or the log's disk) after some steps saves them, as
    Ctrl-C does, instead of losing every step since the last periodic checkpoint (up to 500)."""

    class Failing:
        def batch(self, step, size):
            if step == 3:
                raise OSError("the photos' disk went away")
            g = torch.Generator().manual_seed(step)
            return torch.rand(size, 3, 32, 32, generator=g), torch.rand(size, 3, 32, 32, generator=g)

    tr = _trainer(tmp_path, Failing(), steps=10)
    with pytest.raises(OSError, match="disk went away"):
        tr.run()
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 3
    assert "stopped by an error after step 3; checkpoint " in capsys.readouterr().err
    again = _trainer(tmp_path, Failing(), steps=10)
    with pytest.raises(OSError):
        again.run()  # resumed at 3, failed at once: nothing new to save, nothing said
    assert "stopped by an error" not in capsys.readouterr().err


def test_settings_a_run_cannot_use_are_named_at_once(tmp_path):
    with pytest.raises(InputError, match=r"^steps must be at least 1, got 0; batch must be at least 1, got 0; "
                                         r"lr must be above 0, got -1.0; crop must be a multiple of 8, whose patch "
                                         r"grids split it evenly, got 30$"):
        Trainer(TrainConfig(out_dir=str(tmp_path), steps=0, batch=0, lr=-1.0, crop=30, device="cpu"), None)
    with pytest.raises(InputError, match=r"^workers must be 0 or more, got -1; val_every must be at least 1, got 0$"):
        Trainer(TrainConfig(out_dir=str(tmp_path), workers=-1, val_every=0, device="cpu"), None)
    with pytest.raises(InputError, match=r"^warmup must be 0 or more, got -5; min_lr_ratio must be from 0 to 1, got "
                                         r"2; ema must be from 0 \(off\) to below 1, got 1; clip must be 0 \(off\) "
                                         r"or more, got -1; loss must be one of mse, l1, charbonnier, got 'L2'; "
                                         r"fft_weight must be 0 \(off\) or more, got -1; max_seconds must be 0 or "
                                         r"more \(or None\), got -1$"):
        Trainer(TrainConfig(out_dir=str(tmp_path), warmup=-5, min_lr_ratio=2, ema=1, clip=-1, loss="L2",
                            fft_weight=-1, max_seconds=-1, device="cpu"), None)
    with pytest.raises(InputError, match="crop must be a multiple of 16"):  # 1-2-4-8 splits heights in 8
        Trainer(TrainConfig(out_dir=str(tmp_path), levels=(1, 2, 4, 8), crop=40, device="cpu"), None)
    with pytest.raises(InputError, match="device 'nonsense' is not a valid torch device"):
        Trainer(TrainConfig(out_dir=str(tmp_path), device="nonsense"), None)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="device 'cuda' asked for, but CUDA is not available"):
            Trainer(TrainConfig(out_dir=str(tmp_path), device="cuda"), None)
    assert not (tmp_path / "last.pt").exists()


def _trainer(tmp_path, data, **kw):
    kw = {"workers": 0, **kw}
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), crop=32, batch=2, lr=5e-4, warmup=1, amp="none",
                      val_every=10**6, ckpt_every=10**6, log_every=1, device="cpu", **kw)
    return Trainer(cfg, data)


def _mse_before_and_after_run(tr, data) -> tuple[float, float]:
    """The model's MSE on one fixed batch before and after `tr.run()`."""
    blur, sharp = StepBatches(data, 4, seed=99)[0]

    def mse() -> float:
        with torch.no_grad():
            return torch.nn.functional.mse_loss(tr.model(blur - 0.5), sharp - 0.5).item()

    before = mse()
    tr.run()
    return before, mse()


def test_cpu_training_sizes_its_threads_to_the_cpu_quota(gopro_tree, tmp_path, monkeypatch):
    from fastdeblur import api

    calls = []
    monkeypatch.setattr(api, "fit_threads_to_cpu_quota", lambda: calls.append(True))
    _trainer(tmp_path, PairedImages.from_gopro(gopro_tree, "train", crop=32), steps=1).run()
    assert calls == [True]


def test_a_few_steps_lower_the_loss(gopro_tree, tmp_path):
    data = PairedImages.from_gopro(gopro_tree, "train", crop=32)
    before, after = _mse_before_and_after_run(_trainer(tmp_path, data, steps=20), data)
    assert after < 0.95 * before  # measured: 0.021 -> 0.0028 (identity start); random start 0.086 -> 0.080
    assert (tmp_path / "run" / "last.pt").is_file() and (tmp_path / "run" / "log.csv").read_text().count("\n") > 5


def test_pixel_losses_match_their_formulas():
    """Each loss against its formula in float64, on random images of an odd size; the frequency
    term against numpy's FFT; a bad name is refused before any data loads."""
    from fastdeblur.train.trainer import CHARBONNIER_EPS, pixel_loss

    g = torch.Generator().manual_seed(0)
    out, target = (torch.rand(2, 3, 13, 18, generator=g, dtype=torch.float64) for _ in range(2))
    d = (out - target).numpy()
    want = {"mse": (d ** 2).mean(), "l1": np.abs(d).mean(),
            "charbonnier": np.sqrt(d ** 2 + CHARBONNIER_EPS ** 2).mean()}
    for kind, w in want.items():
        assert abs(pixel_loss(out, target, kind).item() - w) < 1e-12, kind
    spec = np.fft.rfft2(d) / (13 * 18)
    fft = (np.abs(spec.real).sum() + np.abs(spec.imag).sum()) / (2 * spec.size)
    assert abs(pixel_loss(out, target, "l1", fft_weight=0.1).item() - (want["l1"] + 0.1 * fft)) < 1e-12
    assert pixel_loss(out, out, "charbonnier", fft_weight=1.0).item() == pytest.approx(CHARBONNIER_EPS)
    with pytest.raises(ValueError, match="loss must be one of mse, l1, charbonnier"):
        pixel_loss(out, target, "ssim")
    with pytest.raises(ValueError, match="loss must be one of"):
        Trainer(TrainConfig(loss="L2", device="cpu"), None)


@pytest.mark.parametrize("loss,fft", [("l1", 0.0), ("charbonnier", 0.1)])
def test_other_losses_train_and_log_the_mse(gopro_tree, tmp_path, loss, fft):
    """A run with another loss lowers the MSE too, and log.csv's mse column is the output's MSE
    whatever the loss (for the default loss, equal to the loss column)."""
    data = PairedImages.from_gopro(gopro_tree, "train", crop=32)
    before, after = _mse_before_and_after_run(_trainer(tmp_path, data, steps=20, loss=loss, fft_weight=fft), data)
    assert after < 0.95 * before
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert all(float(r["mse"]) != float(r["loss"]) for r in rows)  # charbonnier/l1 differ from the MSE
    mse_run = _trainer(tmp_path / "mse", data, steps=3)
    mse_run.run()
    rows = list(csv.DictReader(open(tmp_path / "mse" / "run" / "log.csv")))
    assert all(r["mse"] == r["loss"] for r in rows)


def test_resume_reproduces_the_same_next_step(gopro_tree, tmp_path):
    data = PairedImages.from_gopro(gopro_tree, "train", crop=32)
    straight = _trainer(tmp_path / "a", data, steps=4)
    straight.run()
    first = _trainer(tmp_path / "b", data, steps=4)
    first.run(steps=3)  # stops (and checkpoints) after 3 steps
    resumed = _trainer(tmp_path / "b", data, steps=4)
    resumed.run()  # picks up last.pt and does step 4
    resumed_state = resumed.model.state_dict()
    for k, a in straight.model.state_dict().items():
        assert torch.equal(a, resumed_state[k]), k
    assert all(torch.equal(straight.ema[k], resumed.ema[k]) for k in straight.ema)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_finishes_the_step_saves_and_resumes(gopro_tree, tmp_path, monkeypatch, sig):
    """Ctrl-C (SIGINT) or SIGTERM (a job scheduler's preemption; until 2026-12-06 it killed the
    run where it stood) during a step: the step finishes, the checkpoint is saved there (not at
    the last ckpt_every), TrainingInterrupted (a KeyboardInterrupt) names it, and the run resumed
    from it ends where an uninterrupted one does."""
    import os
    import signal

    from fastdeblur.train.trainer import TrainingInterrupted

    data = PairedImages.from_gopro(gopro_tree, "train", crop=32)
    straight = _trainer(tmp_path / "a", data, steps=5)
    straight.run()
    interrupted = _trainer(tmp_path / "b", data, steps=5)
    real_step = Trainer.train_step

    def step_with_ctrl_c(self, blur, sharp):
        if self.step == 2:
            os.kill(os.getpid(), getattr(signal, sig))  # arrives while the step runs
        return real_step(self, blur, sharp)

    monkeypatch.setattr(Trainer, "train_step", step_with_ctrl_c)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match=r"interrupted after step 3; checkpoint .*last.pt \(run again to "
                                                  r"resume\)") as e:
        interrupted.run()
    assert isinstance(e.value, KeyboardInterrupt) and e.value.step == 3
    assert e.value.exit_code == 128 + getattr(signal, sig)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # the handlers are put back
    assert torch.load(tmp_path / "b" / "run" / "last.pt", weights_only=True)["step"] == 3
    monkeypatch.setattr(Trainer, "train_step", real_step)
    resumed = _trainer(tmp_path / "b", data, steps=5)
    resumed.run()
    for k, a in straight.model.state_dict().items():
        assert torch.equal(a, resumed.model.state_dict()[k]), k


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_in_a_terminal_stops_the_command_with_its_workers(gopro_tree, tmp_path, sig):
    """The command in its own process group, as a terminal runs it, with two data workers: Ctrl-C
    (or a scheduler's SIGTERM to the group) reaches them all, the workers leave it to the
    trainer, and the command exits 130 (143) after saving the step it was in."""
    import os
    import signal
    import subprocess
    import sys
    import time

    photos = gopro_tree / "GOPRO_Large" / "train" / "GOPR0001_00_00" / "sharp"
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "fastdeblur.train.cli", "--synthetic", str(photos), "--steps", "100000", "--batch",
           "1", "--crop", "32", "--amp", "none", "--workers", "2", "--device", "cpu", "--out", str(run)]
    log = tmp_path / "stderr.txt"  # a file, not a pipe the progress bar could fill while nobody reads it
    with open(log, "w") as stderr:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not ((run / "log.csv").is_file() and (run / "log.csv").read_text().count("\n") >= 4):
            assert p.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        os.killpg(p.pid, getattr(signal, sig))
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    err = log.read_text()
    assert p.returncode == 128 + getattr(signal, sig), err
    step = torch.load(run / "last.pt", weights_only=True)["step"]
    assert err.strip().splitlines()[-1] == (f"fastdeblur-train: interrupted after step {step}; checkpoint "
                                            f"{run / 'last.pt'} (run again to resume)")
    assert step >= 3 and "Traceback" not in err


@pytest.mark.parametrize("arch", ["dmphn-1", "dmphn-1-2-4", "dmphn-1-2-4-8", "stack-1", "stack-3"])
def test_identity_start_returns_its_input(arch):
    from fastdeblur.reference import DMPHN, StackDMPHN
    from fastdeblur.train.init import identity_init

    torch.manual_seed(0)
    kind, *rest = arch.split("-")
    model = DMPHN(tuple(int(p) for p in rest)) if kind == "dmphn" else StackDMPHN(int(rest[0]))
    identity_init(model).double()
    x = torch.rand(2, 3, 48, 40, dtype=torch.float64) - 0.5  # odd patch sizes: 24x20, 12x20, 12x10
    with torch.no_grad():
        torch.testing.assert_close(model(x), x, rtol=0, atol=1e-6)  # 1/3, 1/10...: set in float32
        # the channels that do not carry the image keep their random start, and do not leak in
        enc = model.encoder_lv1 if kind == "dmphn" else model.encoder_s1_lv1
        assert enc.layer1.weight[3:].abs().min() > 0 and enc.layer9.weight[48:].std() > 0.01
        enc.layer9.weight[48:].normal_()
        torch.testing.assert_close(model(x), x, rtol=0, atol=1e-6)


def test_identity_start_is_the_default_and_trains(gopro_tree, tmp_path):
    from fastdeblur.train.init import identity_init

    data = PairedImages.from_gopro(gopro_tree, "train", crop=32)
    tr = _trainer(tmp_path, data, steps=3, levels=(1, 2))
    blur, sharp = StepBatches(data, 2, seed=5)[0]
    with torch.no_grad():
        assert torch.allclose(tr.model(blur - 0.5), blur - 0.5, atol=1e-6)
    tr.run()
    grads = {k: p.grad for k, p in tr.model.named_parameters()}
    assert all(g is not None for g in grads.values())
    # step 1 moves the zeroed second convs, so by step 3 every conv of every block learns
    assert all(g.abs().max() > 0 for k, g in grads.items() if k.endswith(".0.weight")), "a block did not train"
    with torch.no_grad():
        assert not torch.allclose(tr.model(blur - 0.5), blur - 0.5, atol=1e-4)
    with pytest.raises(ValueError, match="start must be"):
        _trainer(tmp_path / "x", data, start="zeros")
    with pytest.raises(TypeError, match="DMPHN or StackDMPHN"):
        identity_init(torch.nn.Conv2d(3, 3, 3))


def test_export_and_load_through_load_model(tmp_path):
    import fastdeblur
    from fastdeblur import WeightsError
    from fastdeblur.reference import DMPHN
    from fastdeblur.train.export import export_weights, read_metadata

    torch.manual_seed(0)
    model = DMPHN((1, 2, 4)).eval()
    path = export_weights(model.state_dict(), tmp_path / "mine.safetensors", arch="dmphn", steps=12,
                          psnr={"GOPR0384_11_00_000001": 25.0}, data="synthetic")
    meta = read_metadata(path)
    assert meta["arch"] == "dmphn" and meta["levels"] == "1,2,4" and meta["steps"] == "12"
    assert path.stat().st_size < 12 * 2**20  # fp16: 5.4 M parameters in ~11 MB
    loaded = fastdeblur.load_model(weights=path, device="cpu", dtype="float32")
    x = torch.rand(1, 3, 16, 16) - 0.5
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.half().float()(x), rtol=0, atol=1e-5)
    # a model named beside the file must be the file's architecture, never silently replaced by it
    assert fastdeblur.load_model("fastdeblur-default", weights=path).levels == (1, 2, 4)
    with pytest.raises(fastdeblur.InputError, match=r"holds a DMPHN\(1-2-4\), not stack4-dmphn-gopro's Stack\(4\)"):
        fastdeblur.load_model("stack4-dmphn-gopro", weights=path)
    with pytest.raises(fastdeblur.InputError, match=r"not dmphn-1-2-4-8-gopro's DMPHN\(1-2-4-8\)"):
        fastdeblur.load_model("dmphn-1-2-4-8-gopro", weights=path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        fastdeblur.load_model(weights=bad, device="cpu")


def test_train_cli_trains_resumes_and_exports(gopro_tree, tmp_path, capsys):
    from fastdeblur.train.cli import main

    photos = gopro_tree / "GOPRO_Large" / "train" / "GOPR0001_00_00" / "sharp"
    args = ["--synthetic", str(photos), "--steps", "2", "--batch", "1", "--crop", "32", "--amp", "none",
            "--workers", "0", "--device", "cpu", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    assert main(args[:3] + ["3"] + args[4:]) == 0  # resumes at step 2, trains step 3
    assert "warning" not in capsys.readouterr().err
    assert main(args[:3] + ["2"] + args[4:]) == 0  # already past: trains nothing, and says so
    assert "was already at step 3, so --steps 2 trained nothing; raise --steps to go on" in capsys.readouterr().err
    st = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert st["step"] == 3 and st["config"]["notes"]["data"].startswith("synthetic")
    # the run folder with another model's settings, or a damaged checkpoint: one line, nothing trained
    for other, says in ((["--levels", "1,2"], "DMPHN(1-2-4), and this run asks for DMPHN(1-2)"),
                        (["--arch", "stack"], "DMPHN(1-2-4), and this run asks for Stack(4)")):
        assert main(args[:3] + ["4"] + args[4:] + other) == 1
        assert f"last.pt is a checkpoint of {says}: give --out a new folder" in capsys.readouterr().err
    good = (tmp_path / "run" / "last.pt").read_bytes()
    (tmp_path / "run" / "last.pt").write_bytes(good[:1000])
    assert main(args[:3] + ["4"] + args[4:]) == 1
    assert "last.pt could not be read (" in capsys.readouterr().err
    (tmp_path / "run" / "last.pt").write_bytes(good)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 3
    assert main(["--export", str(tmp_path / "run" / "last.pt"), str(tmp_path / "w.safetensors")]) == 0
    assert (tmp_path / "w.safetensors").stat().st_size > 1e6
    assert main(["--export", str(tmp_path / "run" / "last.pt"), str(tmp_path / "new" / "dir" / "w.safetensors")]) == 0
    # a folder (which got a file of its name, or failed with the temp file's "Is a directory") or
    # another suffix (which load_model would then take for a torch checkpoint) is named
    for out, says in ((str(tmp_path / "dir") + "/", "is a folder; name the file, e.g. "),
                      (str(tmp_path), "is a folder; name the file, e.g. "),
                      (str(tmp_path / "w.pt"), "OUT must end in .safetensors")):
        assert main(["--export", str(tmp_path / "run" / "last.pt"), out]) == 1
        assert says in capsys.readouterr().err
    assert not (tmp_path / "dir").exists() and not (tmp_path / "w.pt").exists()
    assert main(["--steps", "1"]) == 2
    assert "give --gopro, --folders or --synthetic" in capsys.readouterr().err
    assert main([*args, "--fft-weight", "-1", "--lr", "0"]) == 1  # one line naming both, not a traceback
    assert capsys.readouterr().err == ("fastdeblur-train: error: lr must be above 0, got 0.0; fft_weight must be "
                                       "0 (off) or more, got -1.0\n")
    assert main(["--gopro", str(photos), "--set", "object_prob=1"]) == 2  # --set is for --synthetic
    # what is not a training checkpoint is named, without a traceback
    (tmp_path / "text.pt").write_text("hello")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    for ckpt in ("missing.pt", "text.pt", "other.pt", "w.safetensors"):
        assert main(["--export", str(tmp_path / ckpt), str(tmp_path / "x.safetensors")]) == 1
    assert not (tmp_path / "x.safetensors").exists()
    # the checkpoint loads as a model itself: its EMA weights, which the export holds in fp16
    import fastdeblur
    from fastdeblur.train.export import checkpoint_weights

    ema = checkpoint_weights(st)
    from_ckpt = fastdeblur.load_model(weights=tmp_path / "run" / "last.pt", device="cpu", dtype="float32")
    exported = fastdeblur.load_model(weights=tmp_path / "w.safetensors", device="cpu", dtype="float32")
    assert from_ckpt.weights_meta["steps"] == "3" and from_ckpt.levels == (1, 2, 4)
    for k, v in from_ckpt.state_dict().items():
        torch.testing.assert_close(v, ema[k].float(), rtol=0, atol=0)
        torch.testing.assert_close(exported.state_dict()[k], ema[k].half().float(), rtol=0, atol=0)
    with pytest.raises(fastdeblur.InputError, match=r"holds a DMPHN\(1-2-4\), not stack4-dmphn-gopro's"):
        fastdeblur.load_model("stack4-dmphn-gopro", weights=tmp_path / "run" / "last.pt")
    accepted = "; weights are a fastdeblur .safetensors file, a fastdeblur-train checkpoint"
    with pytest.raises(fastdeblur.WeightsError, match=r"text.pt: not a torch file \(it starts with b'hell'\)"
                                                      + accepted):
        fastdeblur.load_model(weights=tmp_path / "text.pt")
    with pytest.raises(fastdeblur.WeightsError, match=r"other.pt: not a fastdeblur-train checkpoint .*: it has no "
                                                      "config, model, step" + accepted):
        fastdeblur.load_model(weights=tmp_path / "other.pt")
    with pytest.raises(SystemExit):  # argparse: not a blur setting
        main([*args, "--set", "nosuch=1"])
    # the same through the main command: `fastdeblur train ...`, `fastdeblur export CKPT OUT`
    from fastdeblur.cli import main as fastdeblur_main

    assert fastdeblur_main(["train", *args[:3], "4", *args[4:]]) == 0
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 4
    assert fastdeblur_main(["export", str(tmp_path / "run" / "last.pt"), str(tmp_path / "w4.safetensors")]) == 0
    from fastdeblur.train.export import read_metadata

    assert read_metadata(tmp_path / "w4.safetensors")["steps"] == "4"
    # the loss options reach the run's config and the export's recipe
    other = [*args[:-1], str(tmp_path / "l1"), "--loss", "charbonnier", "--fft-weight", "0.1"]
    assert main(other) == 0
    cfg = torch.load(tmp_path / "l1" / "last.pt", weights_only=True)["config"]
    assert (cfg["loss"], cfg["fft_weight"]) == ("charbonnier", 0.1)
    assert main(["--export", str(tmp_path / "l1" / "last.pt"), str(tmp_path / "l1.safetensors")]) == 0
    recipe = json.loads(read_metadata(tmp_path / "l1.safetensors")["recipe"])
    assert (recipe["loss"], recipe["fft_weight"]) == ("charbonnier", 0.1)
    with pytest.raises(SystemExit):  # argparse: not a loss
        main([*args, "--loss", "ssim"])


def test_train_cli_says_what_it_left_out_and_names_bad_settings(gopro_tree, tmp_path, capsys):
    from fastdeblur.train.cli import main

    photos = gopro_tree / "GOPRO_Large" / "train" / "GOPR0001_00_00" / "sharp"
    write_image(photos / "thumb.png", np.zeros((20, 30, 3), np.uint8))
    args = ["--synthetic", str(photos), "--steps", "1", "--batch", "1", "--amp", "none", "--workers", "0",
            "--device", "cpu", "--out", str(tmp_path / "run")]
    assert main([*args, "--crop", "32"]) == 0
    err = capsys.readouterr().err
    assert "fastdeblur-train: warning: 1 of 3 photos are smaller than the 32 px training crop" in err
    assert "Traceback" not in err and "RuntimeWarning" not in err  # one line, not Python's warning format
    assert main([*args, "--crop", "30", "--steps", "0"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "fastdeblur-train: error: steps must be at least 1, got 0; crop must be a multiple of 8, whose patch grids "
        "split it evenly, got 30")
    with pytest.raises(SystemExit):
        main([*args, "--levels", "1,3"])
    assert "invalid choice: '1,3'" in capsys.readouterr().err


def test_train_cli_passes_blur_settings_to_the_synthetic_pairs(gopro_tree, tmp_path, monkeypatch):
    from fastdeblur.train import data
    from fastdeblur.train.cli import main

    made = []
    real_init = data.SyntheticPairs.__init__
    monkeypatch.setattr(data.SyntheticPairs, "__init__",
                        lambda self, *a, **kw: (made.append(kw["cfg"]), real_init(self, *a, **kw))[1])
    photos = gopro_tree / "GOPRO_Large" / "train" / "GOPR0001_00_00" / "sharp"
    assert main(["--synthetic", str(photos), "--set", "object_prob=0.5", "--set", "length=2,9", "--steps", "1",
                 "--batch", "1", "--crop", "32", "--amp", "none", "--workers", "0", "--device", "cpu",
                 "--out", str(tmp_path / "run")]) == 0
    assert made[0].object_prob == 0.5 and made[0].length == (2.0, 9.0) and made[0].still_prob == 0.1
    notes = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["config"]["notes"]["data"]
    assert notes == "synthetic:sharp;object_prob=0.5;length=(2.0, 9.0)"


def test_wall_clock_budget_stops_and_checkpoints(gopro_tree, tmp_path):
    data = PairedImages.from_gopro(gopro_tree, "train", crop=32)
    tr = _trainer(tmp_path, data, steps=1000, max_seconds=0.0)
    path = tr.run()
    assert path.is_file() and tr.step <= 1


def _ddp_worker(rank, world, port, root, out, result):
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        data = PairedImages.from_gopro(root, "train", crop=32)
        cfg = TrainConfig(out_dir=out, crop=32, batch=2, steps=2, lr=5e-4, warmup=1, amp="none", workers=0,
                          val_every=10**6, ckpt_every=10**6, log_every=1, device="cpu", start="random")
        tr = Trainer(cfg, data)
        tr.run()
        if rank == 0:
            torch.save({k: v.clone() for k, v in tr.model.state_dict().items()}, result)
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_matches_one_process(gopro_tree, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(gopro_tree), str(tmp_path / "ddp"), str(tmp_path / "ddp.pt")),
             nprocs=2, join=True)
    # random start: from the identity, step 2's gradients for the blocks' first convs are tiny sums
    # that cancel; the slicing and averaging checked here do not depend on the start
    single = _trainer(tmp_path / "one", PairedImages.from_gopro(gopro_tree, "train", crop=32), steps=2,
                      start="random")
    start = {k: v.clone() for k, v in single.model.state_dict().items()}
    single.run()
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    # Adam's first steps are about lr * sign(g) per weight, so where a gradient is near zero the
    # last-bit differences of a 2-way all-reduce can move a weight by a fraction of a step: up to 28%
    # of one (1.4e-4), in 1.6% of the weights, on an AVX-512 Zen 5 (1e-6 on an AMX Xeon), 7e-4 of
    # the update's norm. Training on other data (batch 1 or 4 instead of 2, what a wrong slice or
    # average amounts to) moved 96% of the weights by 1e-6 or more, 0.68-0.77 of the norm.
    moved = torch.cat([(v - start[k]).flatten() for k, v in single.model.state_dict().items()])
    apart = torch.cat([(ddp[k] - v).flatten() for k, v in single.model.state_dict().items()])
    assert moved.abs().max() > 4e-4  # the runs did step
    assert apart.norm() < 1e-2 * moved.norm()
    assert (apart.abs() > 1e-6).float().mean() < 0.05
    assert (tmp_path / "ddp" / "last.pt").is_file()


def test_synthetic_batches_made_on_the_device(gopro_tree, tmp_path):
    from fastdeblur.train.data import SyntheticBatches

    photos = gopro_tree / "GOPRO_Large" / "train" / "GOPR0001_00_00" / "sharp"
    src = SyntheticBatches([photos], crop=24, seed=5, device="cpu")  # the GPU path, run on the CPU
    blur, sharp = src.batch(3, 4)
    assert blur.shape == sharp.shape == (4, 3, 24, 24) and blur.device == sharp.device
    again = src.batch(3, 4)
    assert torch.equal(again[0], blur) and torch.equal(again[1], sharp)  # deterministic in the step
    assert not torch.equal(src.batch(4, 4)[1], sharp)
    assert 0 <= blur.min() and blur.max() <= 1 and (blur - sharp).abs().mean() > 1e-3
    # the trainer draws batch s for step s from such a source, so resume stays exact
    straight = _trainer(tmp_path / "a", src, steps=3)
    straight.run()
    part = _trainer(tmp_path / "b", src, steps=3)
    part.run(steps=2)
    resumed = _trainer(tmp_path / "b", src, steps=3)
    resumed.run()
    for k, a in straight.model.state_dict().items():
        assert torch.equal(a, resumed.model.state_dict()[k]), k


def test_synthetic_sources_return_the_scene_with_its_moving_object(gopro_tree):
    """With object_prob=1 both synthetic sources pair the blurry crop with the scene at rest (the
    photo with the object pasted in), on the same crop as the plain pairs of the same seed."""
    from fastdeblur.train.blur import BlurConfig
    from fastdeblur.train.data import SyntheticBatches

    photos = [gopro_tree / "GOPRO_Large" / "train" / "GOPR0001_00_00" / "sharp"]
    plain, moving = BlurConfig(still_prob=0.0), BlurConfig(still_prob=0.0, object_prob=1.0)
    for make in (lambda cfg: SyntheticPairs(photos, crop=24, seed=2, cfg=cfg, length=4).__getitem__(1),
                 lambda cfg: SyntheticBatches(photos, crop=24, seed=2, cfg=cfg, device="cpu").batch(1, 2)):
        (_, photo), (blurry, scene) = make(plain), make(moving)
        # the target differs from the photo only where the object covers the crop
        assert 0.0 < (scene != photo).any(dim=-3).float().mean() < 0.8
        assert blurry.shape == scene.shape and (blurry - scene).abs().mean() > 1e-3


def test_probe_scores_the_blurry_crops_and_the_model(gopro_tree):
    import fastdeblur
    from fastdeblur.metrics import psnr
    from fastdeblur.reference import DMPHN
    from fastdeblur.train.blur import BlurConfig
    from fastdeblur.train.data import SyntheticBatches
    from fastdeblur.train.probe import probe

    photos = [gopro_tree / "GOPRO_Large" / "train" / "GOPR0001_00_00" / "sharp"]
    torch.manual_seed(0)
    model = DMPHN((1,)).eval()
    cfg = BlurConfig(jpeg_prob=0.0)
    r = probe(model, photos, cfg, n=3, crop=24, batch=2, seed=4)
    data = SyntheticBatches(photos, crop=24, seed=4, cfg=cfg, device="cpu")
    blurry = [b for step, size in ((0, 2), (1, 1)) for b in zip(*data.batch(step, size), strict=True)]
    hwc = lambda t: t.permute(1, 2, 0)  # noqa: E731
    before = [psnr(hwc(b), hwc(s)) for b, s in blurry]
    after = [psnr(hwc(fastdeblur.deblur(b, model, device="cpu")), hwc(s)) for b, s in blurry]
    assert r["blurry_psnr"] == pytest.approx(np.mean(before))
    # one image at a time against the probe's batches: 16-bit defaults may round a pixel differently
    assert r["model_psnr"] == pytest.approx(np.mean(after), rel=1e-4)
    assert r["model_psnr"] != pytest.approx(r["blurry_psnr"])  # the model did something to them
    assert r["gain"] == pytest.approx(r["model_psnr"] - r["blurry_psnr"])
    assert r["improved"] == pytest.approx(np.mean(np.array(after) > np.array(before)))


def test_probe_counts_crops_left_sharp_apart(gopro_tree):
    """A crop the draw leaves as it was (a still draw without noise here; a whole-crop flat field
    clipped to white in practice) scores inf dB blurry: it is counted apart, and the means are
    those of the other crops, not inf."""
    from fastdeblur.reference import DMPHN
    from fastdeblur.train.blur import BlurConfig
    from fastdeblur.train.probe import probe

    photos = [gopro_tree / "GOPRO_Large" / "train" / "GOPR0001_00_00" / "sharp"]
    torch.manual_seed(0)
    model = DMPHN((1,)).eval()
    quiet = {"jpeg_prob": 0.0, "saturation_prob": 0.0, "noise_sigma": (0.0, 0.0), "shot_noise": (0.0, 0.0)}
    every = probe(model, photos, BlurConfig(still_prob=0.0, **quiet), n=8, crop=24, batch=4, seed=4)
    mixed = probe(model, photos, BlurConfig(still_prob=0.5, **quiet), n=8, crop=24, batch=4, seed=4)
    still = probe(model, photos, BlurConfig(still_prob=1.0, **quiet), n=8, crop=24, batch=4, seed=4)
    assert every["unchanged"] == 0 and np.isnan(every["unchanged_model_psnr"])
    assert 0 < mixed["unchanged"] < 8 and np.isfinite([mixed["blurry_psnr"], mixed["gain"]]).all()
    assert np.isfinite(mixed["unchanged_model_psnr"])  # a random model does not give them back
    assert still["unchanged"] == 8 and np.isnan(still["blurry_psnr"]) and np.isfinite(still["unchanged_model_psnr"])


def test_probe_command_names_missing_data(tmp_path, capsys):
    from fastdeblur.train.probe import main

    assert main(["--data", str(tmp_path), "--n", "1"]) == 1
    assert f"error: {tmp_path / 'sharp_photos' / 'urban100'} does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # n = 0 averaged nothing: nan dB
        main(["--data", str(tmp_path), "--n", "0"])
    assert "argument --n: expected an integer of 1 or more, got 0" in capsys.readouterr().err
    if not torch.cuda.is_available():  # named before any photo loads, not torch's AssertionError
        assert main(["--data", str(tmp_path), "--n", "1", "--device", "cuda"]) == 1
        assert "error: device 'cuda' asked for, but CUDA is not available" in capsys.readouterr().err


def test_probe_command_takes_a_training_checkpoint(gopro_tree, tmp_path, capsys, monkeypatch):
    from fastdeblur.train import probe as probe_module
    from fastdeblur.train.trainer import TrainConfig, Trainer

    photos = gopro_tree / "GOPRO_Large" / "train" / "GOPR0001_00_00" / "sharp"
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), crop=32, batch=1, steps=1, amp="none", workers=0, device="cpu")
    Trainer(cfg, SyntheticPairs([photos], crop=32)).run()
    monkeypatch.setattr(probe_module, "photo_dirs", lambda data: [photos])
    assert probe_module.main(["--model", str(tmp_path / "run" / "last.pt"), "--n", "2", "--crop", "24"]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'run' / 'last.pt'} on 2 synthetic 24px crops")


def test_blur_settings_are_checked():
    """--set NAME=VALUE of train.probe and train.recipe."""
    import argparse

    from fastdeblur.train.blur import BlurConfig, parse_setting

    assert parse_setting("linear_prob=0") == ("linear_prob", 0.0)
    assert parse_setting("noise_sigma=0,0.001") == ("noise_sigma", (0.0, 0.001))
    assert parse_setting("steps=16") == ("steps", 16)
    assert parse_setting("length_log=1") == ("length_log", True)
    assert parse_setting("length_log=False") == ("length_log", False)  # not bool("False")
    for bad in ("nosuch=1", "steps", "steps=x", "length_log=2"):
        with pytest.raises(argparse.ArgumentTypeError, match="--set"):
            parse_setting(bad)
    # values a draw cannot use are named when parsed, not trained on (they were, silently)
    for bad, says in (("noise_sigma=1", "noise_sigma takes 2 values, LO,HI"),
                      ("object_prob=2", "object_prob is a chance from 0 to 1, got 2.0"),
                      ("length=24,3", "length is a range LO,HI with 0 <= LO <= HI, got 24,3"),
                      ("length=-3,5", "length is a range LO,HI with 0 <= LO <= HI, got -3,5"),
                      ("jpeg_quality=50,101", "jpeg_quality is a range LO,HI with 1 <= LO <= HI, up to 100"),
                      ("steps=0", "steps must be 1 or more, got 0"), ("jerk=-1", "jerk must be 0 or more")):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(f"--set {bad!r}: ") + ".*" + re.escape(says)):
            parse_setting(bad)
    with pytest.raises(InputError, match=r"^blur settings: jpeg_prob is a chance from 0 to 1, got -1; shot_noise is a "
                                         r"range LO,HI with 0 <= LO <= HI, got 0.1,0$"):
        BlurConfig(jpeg_prob=-1, shot_noise=(0.1, 0.0))


def test_validation_logs_psnr_and_ssim_and_saves_strips(gopro_tree, tmp_path):
    import csv

    from fastdeblur.io import read_image
    from fastdeblur.train.cli import main

    photos = gopro_tree / "GOPRO_Large" / "train" / "GOPR0001_00_00" / "sharp"
    out = tmp_path / "run"
    args = ["--synthetic", str(photos), "--steps", "2", "--batch", "1", "--crop", "32", "--amp", "none",
            "--workers", "0", "--device", "cpu", "--out", str(out), "--val-gopro", str(gopro_tree),
            "--val-every", "2"]
    assert main(args) == 0
    rows = list(csv.DictReader(open(out / "log.csv")))
    val = [r for r in rows if r["val_psnr"]]
    assert [r["step"] for r in val] == ["2"]
    strips = sorted((out / "val").iterdir())
    assert [p.name for p in strips] == ["step0000002_0.png", "step0000002_1.png", "step0000002_2.png"]
    # each strip is blurry | output | sharp of one validation pair (the GoPro tree's test split)
    from fastdeblur.train.trainer import _to_uint8

    pairs = PairedImages.from_gopro(gopro_tree, "test", crop=32, seed=1)
    for i, path in enumerate(strips):
        strip = read_image(path)
        assert strip.shape == (32, 96, 3)
        blur, sharp = pairs[i]
        assert np.array_equal(strip[:, :32], _to_uint8(blur)) and np.array_equal(strip[:, 64:], _to_uint8(sharp))
    # the figures themselves are checked against the metrics in the next test
    assert 0 < float(val[0]["val_ssim"]) <= 1 and float(val[0]["val_psnr"]) > 0
    assert main([*args, "--val-folders", str(photos), str(photos)]) == 2


def test_validation_numbers_match_the_metrics(gopro_tree, tmp_path):
    from fastdeblur.metrics import psnr, ssim
    from fastdeblur.train.trainer import _to_uint8

    data = PairedImages.from_gopro(gopro_tree, "train", crop=32)
    val = PairedImages.from_gopro(gopro_tree, "test", crop=24, seed=1)
    tr = _trainer(tmp_path, data, steps=1)
    tr.val_set = val
    got = tr.validate(max_images=2, save_images=0)
    model = tr.model.eval()  # the EMA equals the weights before any step
    want_p, want_s = [], []
    with torch.no_grad():
        for i in range(2):
            blur, sharp = val[i]
            o = _to_uint8((model(blur[None] - 0.5) + 0.5)[0])
            want_p.append(psnr(o, _to_uint8(sharp)))
            want_s.append(ssim(o, _to_uint8(sharp)))
    assert got["psnr"] == pytest.approx(np.mean(want_p)) and got["ssim"] == pytest.approx(np.mean(want_s))
    assert not (tmp_path / "run" / "val").exists()


def test_resumed_run_keeps_an_older_logs_columns(gopro_tree, tmp_path):
    data = PairedImages.from_gopro(gopro_tree, "train", crop=32)
    (tmp_path / "run").mkdir()
    old_header = "step,loss,lr,images_per_s,val_psnr,input_loss"
    (tmp_path / "run" / "log.csv").write_text(old_header + "\n")
    _trainer(tmp_path, data, steps=2).run()
    lines = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert lines[0] == old_header and len(lines) == 3 and all(ln.count(",") == 5 for ln in lines)


def test_training_runs_without_stderr(gopro_tree, tmp_path, monkeypatch):
    """Trainer.run in a process whose sys.stderr is None (a daemon's, pythonw's): its progress bar
    wrote to it and failed with an AttributeError before the first step."""
    data = PairedImages.from_gopro(gopro_tree, "train", crop=32)
    trainer = _trainer(tmp_path, data, steps=2)
    monkeypatch.setattr("sys.stderr", None)
    trainer.run()
    assert trainer.step == 2
