"""How a trained model responds to synthetic blur: a check of the blur generator, no training.

    python -m fastdeblur.train.probe [--model dmphn-1-2-4-gopro] [--n 96] [--crop 256] \
        [--set linear_prob=0 --set noise_sigma=0,0 ...] [--data ../shared/data]

Blurs n crops of the sharp photos (Urban100, Sun-Hays80, BSD100) with `data.SyntheticBatches`
(seeded, so every setting sees the same crops and camera paths), deblurs them with `model`
(deblur()'s defaults for the device) and prints the blurry crops' mean PSNR, the model's, the
gain and the share of crops it improved. A model that removes real blur of some kind gains on
synthetic blur only as far as the two resemble each other, so a change to the generator can be
looked at in a few CPU minutes before any training run. It measures the generator, not the
model: never pick settings by their score on the GoPro evaluation pairs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from ..cli import _int_in
from ..metrics import psnr
from ..weights import WEIGHT_SUFFIXES
from .blur import BlurConfig, add_settings_option
from .data import SyntheticBatches
from .recipe import DEFAULT_DATA, photo_dirs


def probe(model: str | torch.nn.Module, photos: list[Path], cfg: BlurConfig, n: int = 96, crop: int = 256,
          batch: int = 8, seed: int = 1, device: str = "cpu") -> dict[str, float]:
    """Mean PSNR of the blurry crops and of `model`'s outputs over n synthetic pairs."""
    import fastdeblur

    data = SyntheticBatches(photos, crop=crop, seed=seed, cfg=cfg, device="cpu")
    before, after = [], []
    for step in range((n + batch - 1) // batch):
        blurry, sharp = data.batch(step, min(batch, n - step * batch))
        out = fastdeblur.deblur(blurry.to(device), model, device=device).cpu()
        for b, o, s in zip(blurry, out, sharp, strict=True):
            before.append(psnr(b.permute(1, 2, 0), s.permute(1, 2, 0)))
            after.append(psnr(o.permute(1, 2, 0), s.permute(1, 2, 0)))
    before_a, after_a = np.array(before), np.array(after)
    # a crop the draw left as it was (a whole-crop flat field clipped to white, a still draw
    # without noise) scores inf dB blurry, which made every mean inf: such crops are counted
    # apart, with the model's score on them (a model should give them back: inf)
    blurred = np.isfinite(before_a)
    mean = lambda v: float(np.mean(v)) if v.size else float("nan")  # noqa: E731
    return {"blurry_psnr": mean(before_a[blurred]), "model_psnr": mean(after_a[blurred]),
            "gain": mean(after_a[blurred] - before_a[blurred]), "improved": mean(after_a[blurred] > before_a[blurred]),
            "unchanged": int((~blurred).sum()), "unchanged_model_psnr": mean(after_a[~blurred])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastdeblur.train.probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="dmphn-1-2-4-gopro",
                   help="a registered name, a .safetensors file or a training checkpoint (runs/NAME/last.pt)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--n", type=_int_in(1), default=96)
    p.add_argument("--crop", type=_int_in(1), default=256)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="cpu")
    add_settings_option(p, help="a BlurConfig field, e.g. linear_prob=0 or noise_sigma=0,0 (repeatable)")
    a = p.parse_args(argv)
    import fastdeblur

    # no still crops (they measure nothing here) and uniform lengths: the crops and paths stay
    # those of the probes recorded in docs/TRAINING.md (whose figures before 2026-12-06 had the
    # saturated crops' old targets: --set clip_target=0)
    cfg = dataclasses.replace(BlurConfig(jpeg_prob=0.0, still_prob=0.0, length_log=False), **dict(a.settings))
    try:
        from ..api import _resolve_device

        _resolve_device(a.device)  # a device that is not there is named before the photos load
        model: str | torch.nn.Module = a.model
        if a.model.endswith(WEIGHT_SUFFIXES) or Path(a.model).is_file():
            model = fastdeblur.load_model(weights=a.model, device=a.device)
        r = probe(model, photo_dirs(a.data), cfg, n=a.n, crop=a.crop, seed=a.seed, device=a.device)
    except (fastdeblur.InputError, fastdeblur.WeightsError, OSError) as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 1
    changed = ", ".join(f"{k}={v}" for k, v in a.settings) or "defaults"
    line = f"{a.model} on {a.n} synthetic {a.crop}px crops ({changed}): "
    if r["unchanged"] < a.n:
        line += (f"blurry {r['blurry_psnr']:.2f} dB, model {r['model_psnr']:.2f} dB, gain {r['gain']:+.2f} dB, "
                 f"{r['improved']:.0%} of crops improved")
    if r["unchanged"]:
        line += (f"{'; ' if r['unchanged'] < a.n else ''}{r['unchanged']} left out of the means (blurry equal to "
                 f"sharp; the model's output on them: {r['unchanged_model_psnr']:.2f} dB)")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
