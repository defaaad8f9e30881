"""A gallery of the synthetic blur the trainer makes: one sharp photo, several random blurs.

Usage: python examples/blur_gallery.py [photo] [-o gallery.png] [--n 6] [--set object_prob=1 ...]
(default photo: the bundled examples/sharp.png; --set takes any BlurConfig field, as the trainer's)
"""

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from fastdeblur.errors import InputError
from fastdeblur.io import read_image, write_image
from fastdeblur.train.blur import BlurConfig, add_settings_option, synthesize
from fastdeblur.train.data import to_tensor

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("photo", nargs="?", default=HERE / "sharp.png", type=Path)
    p.add_argument("-o", "--output", default="blur_gallery.png", type=Path)
    p.add_argument("--n", type=int, default=5)
    add_settings_option(p)
    a = p.parse_args()
    cfg = dataclasses.replace(BlurConfig(), **dict(a.settings))
    try:
        sharp = to_tensor(read_image(a.photo))  # [3, H, W] in [0, 1]: gray repeated, alpha dropped
    except InputError as e:
        p.error(str(e))
    tiles = [sharp] + [synthesize(sharp, seed, cfg) for seed in range(a.n)]
    cols = 3
    rows = [torch.cat(tiles[i:i + cols] + [torch.ones_like(sharp)] * (cols - len(tiles[i:i + cols])), 2)
            for i in range(0, len(tiles), cols)]
    grid = torch.cat(rows, 1).permute(1, 2, 0).numpy()
    try:
        write_image(a.output, np.round(grid * 255).astype(np.uint8))
    except InputError as e:
        p.error(str(e))
    print(f"wrote {a.output}: the sharp photo, then {a.n} synthetic blurs (seeds 0..{a.n - 1})")


if __name__ == "__main__":
    main()
