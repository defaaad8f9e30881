"""The default model's recipe: train on synthetic blur for a wall-clock budget, evaluate, export.

    python -m fastdeblur.train.recipe --minutes 60 [--data ../shared/data] [--out runs/default]

Resumes from OUT/last.pt when it exists, else starts from --init weights (by default the package's
own `fastdeblur-default`: the latest committed weights, so sessions add up), trains DMPHN(1-2-4) on
synthetic GoPro-like blur of the sharp photos (Urban100, Sun-Hays80, BSD100; never the GoPro
frames), then measures PSNR/SSIM on the GoPro ground-truth pairs (evaluation only) and exports
OUT/fastdeblur-default.safetensors with those figures in its header. Each session with time
or a GPU can push the model further by running it again; record each run in docs/TRAINING.md.
On a GPU the pairs are made there (data.SyntheticBatches); `--steps auto` times a few steps and
fits the cosine schedule to the --minutes budget (what a short device session wants).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .. import weights as _weights
from ..errors import InputError, WeightsError
from ..io import read_image
from ..metrics import psnr, ssim
from .blur import BlurConfig, add_settings_option
from .data import SyntheticBatches, SyntheticPairs
from .export import export_weights
from .trainer import LOSSES, TrainConfig, Trainer, TrainingInterrupted, build_model, check_settings, train_device

PHOTO_SETS = ("urban100", "sunhays80", "bsd100")  # under DATA/sharp_photos: what the default model learns from
DEFAULT_DATA = Path(os.environ.get("FASTDEBLUR_DATA") or "../shared/data")  # empty: unset
# the registry's entry for the shipped model: the export is named as the file it pins, so copying
# it over the bundled one is all a new release of the weights takes
SHIPPED = _weights.get_weights("fastdeblur-default")
SHIPPED_FILE = next(iter(SHIPPED.files))


def photo_dirs(data: Path) -> list[Path]:
    return [data / "sharp_photos" / s for s in PHOTO_SETS]


def evaluate(model: torch.nn.Module, pairs_dir: Path) -> dict[str, dict[str, float]]:
    """PSNR/SSIM of `model` (float32, on its device) on every blur/sharp pair in pairs_dir."""
    import fastdeblur

    scores = {}
    for blur_path in sorted((pairs_dir / "blur").iterdir()):
        out = fastdeblur.deblur(read_image(blur_path), model, backend="reference")
        sharp = read_image(pairs_dir / "sharp" / blur_path.name)
        scores[blur_path.stem] = {"psnr": round(float(psnr(out, sharp)), 3), "ssim": round(float(ssim(out, sharp)), 4)}
    return scores


def flat_frames(model: torch.nn.Module, size: tuple[int, int] = (360, 640)) -> dict[str, dict[str, int]]:
    """How far `model` moves flat black, light grey (level 230) and white frames, in 8-bit levels:
    the largest change and the pixels changed by more than 3. A flat frame has nothing to deblur,
    so each should be near 0; the shipped weights of 2026-11-28 moved a black 720p frame's border
    and patch-corner pixels by up to 31 levels and a white one's by up to 36 (the authors' GoPro
    model: 5 and 6), and lifted every pixel of a light grey one by 1-8 levels, as the saturated
    draws' unclipped targets taught them (BlurConfig.clip_target; the authors' model: at most 1)."""
    import fastdeblur

    out = {}
    for name, level in (("black", 0), ("light", 230), ("white", 255)):
        img = np.full((*size, 3), level, np.uint8)
        change = np.abs(fastdeblur.deblur(img, model, backend="reference").astype(int) - level).max(-1)
        out[name] = {"max": int(change.max()), "over3": int((change > 3).sum())}
    return out


def _runs(init: torch.nn.Module | None) -> list[dict]:
    """The runs recorded in the --init weights' header: each export carries its whole history."""
    if init is None:
        return []
    try:
        return list(json.loads(init.weights_meta.get("recipe", "{}")).get("runs", []))
    except (ValueError, AttributeError):  # an older header: a single run's settings, or none
        return []


def main(argv: list[str] | None = None) -> int:
    from ..cli import messages_cannot_fail

    with messages_cannot_fail():
        return _recipe(argv)


def _recipe(argv: list[str] | None) -> int:
    try:
        return _main(argv)
    except TrainingInterrupted as e:  # Ctrl-C: the step in hand saved; no export until a run ends
        print(f"python -m fastdeblur.train.recipe: {e}; nothing exported", file=sys.stderr)
        return e.exit_code
    except (InputError, WeightsError) as e:  # bad data, device or weights: one line, not a traceback
        print(f"python -m fastdeblur.train.recipe: error: {e}", file=sys.stderr)
        return 1


def _main(argv: list[str] | None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastdeblur.train.recipe")
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=Path("runs/default"))
    p.add_argument("--init", default="bundled",
                   help="weights a new run starts from (no optimizer state): a fastdeblur .safetensors file, "
                        "'bundled' (the package's fastdeblur-default, the latest committed weights) or 'none'")
    p.add_argument("--start", choices=["identity", "random"], default="identity",
                   help="with --init none: the identity (out == in) or PyTorch's random start")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=192)
    p.add_argument("--steps", default="200000",
                   help="schedule length, or 'auto': fit the cosine schedule to --minutes at the measured speed")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--seed", type=int, help="batches' seed; default: the --init weights' step count, so a "
                   "continued run sees new crops")
    p.add_argument("--device", default="auto")
    p.add_argument("--loss", choices=LOSSES, default="mse", help="training loss (default: %(default)s, the authors')")
    p.add_argument("--fft-weight", type=float, default=0.0, metavar="W",
                   help="add W times the spectra's mean absolute difference (default: 0, off)")
    add_settings_option(p, help="a synthetic-blur setting (BlurConfig field), e.g. length_log=1 (repeatable; "
                               "recorded in the export's header)")
    a = p.parse_args(argv)
    if not 0 < a.minutes < float("inf"):
        p.error(f"--minutes must be a time above 0, got {a.minutes:g}")
    photos = photo_dirs(a.data)
    # checked before training, so an hour's run never ends in a traceback at its evaluation
    pairs = [a.data / "gopro_pairs" / k for k in ("blur", "sharp")]
    missing = [str(d) for d in (*photos, *pairs) if not d.is_dir()]
    if missing:
        p.error(f"no folder {missing[0]}: --data (default $FASTDEBLUR_DATA or ../shared/data) must hold "
                f"sharp_photos/{{{','.join(PHOTO_SETS)}}} and gopro_pairs/{{blur,sharp}}")
    init = None
    if a.init != "none":
        from .export import load_exported

        # the --init file's steps count even when OUT/last.pt resumes a run that started from it
        init = load_exported(_weights.resolve_files(SHIPPED.name)[SHIPPED_FILE] if a.init == "bundled" else a.init)
    prior = int(init.weights_meta.get("steps", 0)) if init is not None else 0
    auto = a.steps == "auto"
    cfg = TrainConfig(out_dir=str(a.out), start=a.start, crop=a.crop, batch=a.batch,
                      steps=10**9 if auto else int(a.steps), lr=a.lr, warmup=a.warmup, clip=1.0,
                      loss=a.loss, fft_weight=a.fft_weight,
                      workers=2, val_every=10**9, ckpt_every=250 if not auto else 10**9, device=a.device,
                      seed=prior if a.seed is None else a.seed, max_seconds=a.minutes * 60,
                      notes={"data": "synthetic blur of " + "+".join(PHOTO_SETS)})
    check_settings(cfg, init)  # before the photos are read
    model = None
    if init is not None and not (a.out / "last.pt").is_file():
        model = init.float().train().requires_grad_(True)
    device = train_device(a.device)
    if device.startswith("cuda"):  # pairs made on the GPU: no worker processes to keep up with it
        data = SyntheticBatches(photos, crop=a.crop, seed=cfg.seed, device=device,
                                cfg=dataclasses.replace(BlurConfig(jpeg_prob=0.0), **dict(a.settings)))
    else:
        data = SyntheticPairs(photos, crop=a.crop, seed=cfg.seed,
                              cfg=dataclasses.replace(BlurConfig(), **dict(a.settings)))
    trainer = Trainer(cfg, data, model=model)
    t0 = time.time()
    if auto:  # time a few steps after the first ones (cuDNN's autotuning), then size the schedule
        budget = cfg.max_seconds
        # each timing phase stops at 15% of the budget: on a CPU 60 steps of a GPU's batch take
        # ten minutes, and a 1-minute run once took ten
        cfg.max_seconds = 0.15 * budget
        trainer.run(steps=trainer.step + 20)
        t1, s1 = time.time(), trainer.step
        trainer.run(steps=s1 + 40)
        rate = (trainer.step - s1) / max(time.time() - t1, 1e-6)
        left = budget - (time.time() - t0)
        cfg.steps = trainer.step + max(1, int(rate * left * 0.97))
        cfg.max_seconds = left
        print(f"{rate:.1f} steps/s: schedule of {cfg.steps} steps", flush=True)
    trainer.run()
    hours = (time.time() - t0) / 3600
    this_run = {"date": time.strftime("%Y-%m-%d"), "steps": trainer.step, "crop": a.crop, "batch": a.batch,
                "lr": cfg.lr, "schedule_steps": cfg.steps, "seed": cfg.seed, "device": device,
                "loss": cfg.loss, "fft_weight": cfg.fft_weight,
                "init": a.init if init is not None else f"none ({a.start})",
                "blur": dataclasses.asdict(data.cfg)}
    ema = trainer.ema if trainer.ema is not None else trainer.model.state_dict()
    eval_model = build_model(cfg).eval()
    eval_model.load_state_dict(ema)
    scores = evaluate(eval_model.float().to(device), a.data / "gopro_pairs")
    flat = flat_frames(eval_model.float().to(device))
    path = export_weights(ema, a.out / SHIPPED_FILE, arch="dmphn", levels=(1, 2, 4),
                          steps=prior + trainer.step, data=cfg.notes["data"], psnr=scores, flat=flat,
                          name=SHIPPED.name,
                          recipe={"runs": _runs(init) + [this_run]},
                          license="fastdeblur's own weights, trained on public benchmark photos")
    print(f"steps {prior} + {trainer.step} ({hours:.2f} h this run), GoPro pairs: {scores}, flat frames "
          f"(8-bit levels moved): {flat}, exported {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
