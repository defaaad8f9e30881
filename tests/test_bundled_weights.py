"""fastdeblur's own weights ship in the package: offline, verified, and they deblur; the recipe
continues from them."""

import json
import re
import time

import numpy as np
import pytest
import torch

import fastdeblur
from fastdeblur import WeightsError
from fastdeblur import weights as W
from fastdeblur.io import read_image, write_image
from fastdeblur.metrics import psnr
from fastdeblur.train.blur import BlurConfig
from fastdeblur.train.export import read_metadata

from .conftest import REPO

NAME = "fastdeblur-default"
FILE = "fastdeblur-default.safetensors"


def test_bundled_default_loads_offline_and_sharpens_the_example(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTDEBLUR_OFFLINE", "1")
    monkeypatch.setenv("FASTDEBLUR_HOME", str(tmp_path / "empty"))  # no cache, no downloads
    entry = W.get_weights(NAME)
    assert entry.bundled and entry.arch == "dmphn" and entry.config == (1, 2, 4)
    path = W.resolve_files(NAME)[FILE]
    assert path.parent == W.BUNDLED_DIR and path.stat().st_size < 12 * 2**20
    meta = read_metadata(path)
    assert meta["name"] == NAME and int(meta["steps"]) > 0 and "gopro" not in meta["data"].lower()
    # the bundled example is synthetic camera shake of a photo the model never saw
    blurry, sharp = read_image(REPO / "examples" / "blurry.png"), read_image(REPO / "examples" / "sharp.png")
    out = fastdeblur.deblur(blurry, NAME, device="cpu", dtype=torch.float32)
    assert out.shape == blurry.shape and out.dtype == np.uint8
    gain = psnr(out, sharp) - psnr(blurry, sharp)
    assert gain > 0.5, f"{gain:.2f} dB"  # measured: see the registry entry's description
    assert not (tmp_path / "empty").exists()  # nothing was cached or fetched


def test_bundled_default_leaves_a_sharp_photo_nearly_as_it_is():
    # a user's photo is often sharp already; the weights shipped before still draws were in the
    # training data darkened this one by 2.2 levels (28.3 dB against itself); the shipped: 31.0 / -0.8
    sharp = read_image(REPO / "examples" / "sharp.png")
    out = fastdeblur.deblur(sharp, NAME, device="cpu", dtype=torch.float32)
    shift = float(out.astype(np.float64).mean() - sharp.astype(np.float64).mean())
    assert psnr(out, sharp) > 30.0 and abs(shift) < 2.0, (psnr(out, sharp), shift)


def test_bundled_weights_are_verified(tmp_path, monkeypatch):
    fake = tmp_path / "bundled"
    fake.mkdir()
    monkeypatch.setattr(W, "BUNDLED_DIR", fake)
    with pytest.raises(WeightsError, match="ships with fastdeblur, but .* is missing"):
        W.resolve_files(NAME)
    data = bytearray((REPO / "fastdeblur" / "_bundled" / FILE).read_bytes())
    data[-1] ^= 1  # one flipped bit in the last tensor
    (fake / FILE).write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="fails its sha256 check.*reinstall"):
        fastdeblur.load_model(NAME, device="cpu")


def _tiny_data(root):
    """The recipe's data layout, small: its photo sets and two evaluation pairs."""
    from fastdeblur.train.recipe import photo_dirs

    rng = np.random.default_rng(0)
    for d in photo_dirs(root):
        d.mkdir(parents=True)
        write_image(d / "a.png", rng.integers(0, 256, (72, 80, 3), dtype=np.uint8))
    for kind in ("blur", "sharp"):
        (root / "gopro_pairs" / kind).mkdir(parents=True)
        for i in range(2):
            write_image(root / "gopro_pairs" / kind / f"p{i}.png", np.full((40, 48, 3), 100 + 20 * i, np.uint8))
    return root


def test_recipe_continues_from_the_bundled_weights(tmp_path, capsys):
    from fastdeblur.train import recipe

    bundled = read_metadata(W.resolve_files(NAME)[FILE])
    prior = int(bundled["steps"])
    out = tmp_path / "run"
    assert recipe.main(["--minutes", "5", "--steps", "2", "--crop", "32", "--batch", "1", "--warmup", "1",
                        "--lr", "1e-6", "--data", str(_tiny_data(tmp_path / "data")), "--out", str(out),
                        "--device", "cpu", "--set", "length_log=1", "--set", "jpeg_prob=0"]) == 0
    meta = read_metadata(out / FILE)
    assert int(meta["steps"]) == prior + 2 and f"steps {prior} + 2" in capsys.readouterr().out
    assert set(json.loads(meta["psnr"])) == {"p0", "p1"}
    flat = json.loads(meta["flat"])  # how far it moves flat frames, for the next runs to watch
    assert set(flat) == {"black", "light", "white"} and all(set(v) == {"max", "over3"} for v in flat.values())
    runs = json.loads(meta["recipe"])["runs"]  # the bundled file's history, plus this run
    assert runs[:-1] == json.loads(bundled["recipe"])["runs"]
    assert runs[-1]["steps"] == 2 and runs[-1]["init"] == "bundled" and sum(r["steps"] for r in runs) == prior + 2
    assert runs[-1]["blur"]["still_prob"] == BlurConfig().still_prob  # the data's settings go along,
    assert runs[-1]["blur"]["length_log"] is True and runs[-1]["blur"]["jpeg_prob"] == 0.0  # --set ones too
    # two tiny steps from the bundled weights: the export is still (almost) them
    a = fastdeblur.load_model(NAME, device="cpu", dtype=torch.float32).state_dict()
    b = fastdeblur.load_model(weights=out / FILE, device="cpu", dtype=torch.float32).state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-3
    with pytest.raises(SystemExit):
        recipe.main(["--start", "zeros"])


def test_recipe_auto_schedule_keeps_to_the_budget(tmp_path, monkeypatch, capsys):
    """`--steps auto` times its steps within the budget: 60 timing steps of 0.25 s would take
    15 s against a 3 s budget (on a CPU, GPU-sized batches made a 1-minute run take ten)."""
    from fastdeblur.train import recipe
    from fastdeblur.train.trainer import Trainer

    real_step = Trainer.train_step

    def slow_step(self, blur, sharp):
        time.sleep(0.25)
        return real_step(self, blur, sharp)

    monkeypatch.setattr(Trainer, "train_step", slow_step)
    t = time.perf_counter()
    assert recipe.main(["--minutes", "0.05", "--steps", "auto", "--crop", "32", "--batch", "1", "--warmup", "1",
                        "--lr", "1e-6", "--data", str(_tiny_data(tmp_path / "data")), "--out", str(tmp_path / "run"),
                        "--device", "cpu", "--init", "none"]) == 0
    assert time.perf_counter() - t < 12
    done = int(re.search(r"steps 0 \+ (\d+)", capsys.readouterr().out).group(1))
    assert 2 <= done <= 16


def test_recipe_bundled_init_names_a_broken_install(tmp_path, monkeypatch, capsys):
    from fastdeblur.train import recipe

    data = _tiny_data(tmp_path / "data")
    monkeypatch.setattr(W, "BUNDLED_DIR", tmp_path)
    assert recipe.main(["--minutes", "0.1", "--data", str(data), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err  # one line, not a traceback
    assert err.startswith("python -m fastdeblur.train.recipe: error: ") and "is missing" in err
    assert err.count("\n") == 1
    if not torch.cuda.is_available():  # a device it cannot use: the same
        assert recipe.main(["--minutes", "0.1", "--data", str(data), "--device", "cuda", "--init", "none",
                            "--out", str(tmp_path / "run2")]) == 1
        assert "device 'cuda' asked for, but CUDA is not available" in capsys.readouterr().err


def test_recipe_ctrl_c_keeps_the_step_and_says_nothing_was_exported(tmp_path, capsys, monkeypatch):
    import os
    import signal

    from fastdeblur.train import recipe
    from fastdeblur.train.trainer import Trainer

    real_step = Trainer.train_step

    def step_with_ctrl_c(self, blur, sharp):
        if self.step == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(self, blur, sharp)

    monkeypatch.setattr(Trainer, "train_step", step_with_ctrl_c)
    out = tmp_path / "run"
    assert recipe.main(["--minutes", "5", "--steps", "50", "--crop", "32", "--batch", "1", "--warmup", "1",
                        "--data", str(_tiny_data(tmp_path / "data")), "--out", str(out), "--device", "cpu",
                        "--init", "none"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"python -m fastdeblur.train.recipe: interrupted after step 2; checkpoint {out / 'last.pt'} (run again to "
        "resume); nothing exported")
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 2 and not (out / FILE).exists()


def test_flat_frames_measure_what_a_model_moves():
    from fastdeblur.reference import DMPHN
    from fastdeblur.train import identity_init
    from fastdeblur.train.recipe import flat_frames

    model = identity_init(DMPHN()).eval()  # returns its input exactly
    still = {"max": 0, "over3": 0}
    assert flat_frames(model, (24, 40)) == {"black": still, "light": still, "white": still}
    with torch.no_grad():
        model.decoder_lv1.layer24.bias += 6 / 255  # every pixel 6 levels up: white stays white (clamped)
    lifted = {"max": 6, "over3": 960}
    assert flat_frames(model, (24, 40)) == {"black": lifted, "light": lifted, "white": still}


def test_recipe_checks_its_data_before_training(tmp_path, capsys):
    from fastdeblur.train import recipe

    data = _tiny_data(tmp_path / "data")
    for sub in ("gopro_pairs/sharp", "sharp_photos/bsd100"):  # each is refused before any step
        for f in (data / sub).iterdir():
            f.unlink()
        (data / sub).rmdir()
        with pytest.raises(SystemExit) as e:
            recipe.main(["--minutes", "0.1", "--data", str(data), "--out", str(tmp_path / "run"), "--device", "cpu"])
        assert e.value.code == 2 and f"no folder {data / sub}: --data" in capsys.readouterr().err
        assert not (tmp_path / "run").exists()
    for minutes in ("0", "-1", "inf"):
        with pytest.raises(SystemExit) as e:
            recipe.main(["--minutes", minutes, "--data", str(data), "--out", str(tmp_path / "run")])
        assert e.value.code == 2 and "--minutes must be a time above 0" in capsys.readouterr().err


def test_recipe_names_settings_it_cannot_train_with(tmp_path, capsys):
    from fastdeblur.train import recipe

    data = _tiny_data(tmp_path / "data")
    assert recipe.main(["--minutes", "0.1", "--data", str(data), "--out", str(tmp_path / "run"), "--device", "cpu",
                        "--init", "none", "--warmup", "-5", "--fft-weight", "-1"]) == 1
    err = capsys.readouterr().err
    assert err == ("python -m fastdeblur.train.recipe: error: warmup must be 0 or more, got -5; fft_weight must be "
                   "0 (off) or more, got -1.0\n")
