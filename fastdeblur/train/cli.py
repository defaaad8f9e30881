"""`fastdeblur-train`: train DMPHN on GoPro, paired folders or synthetic blur, then export.

    fastdeblur-train --synthetic photos/ --steps 3000 --out runs/synth      # resumes if run again
    fastdeblur-train --synthetic photos/ --set object_prob=0.3 --set length=3,24 --out runs/objects
    fastdeblur-train --gopro /data --val-folders blur/ sharp/ --out runs/gopro
    fastdeblur-train --export runs/synth/last.pt weights.safetensors
    fastdeblur-train --make-pairs slowmo/ --pairs-out pairs/ && fastdeblur-train --gopro pairs/ --out runs/mine
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from pathlib import Path

from ..errors import InputError, WeightsError
from .blur import BlurConfig, add_settings_option
from .trainer import LOSSES, TrainingInterrupted, check_settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastdeblur-train", description="Train DMPHN deblurring models.")
    src = p.add_argument_group("training data (one or more)")
    src.add_argument("--gopro", type=Path, help="root of GOPRO_Large (train split)")
    src.add_argument("--folders", nargs=2, type=Path, metavar=("BLUR", "SHARP"), help="paired folders")
    src.add_argument("--synthetic", nargs="+", type=Path, metavar="PHOTOS",
                     help="sharp photos to blur on the fly: files, or folders (subfolders included)")
    add_settings_option(src, help="a setting of --synthetic's blur (a BlurConfig field: length=3,24, "
                                  "object_prob=0.3, linear_prob=1, ...; repeatable)")
    val = p.add_argument_group("validation (PSNR/SSIM in log.csv, strips blurry | output | sharp in OUT/val/)")
    val.add_argument("--val-folders", nargs=2, type=Path, metavar=("BLUR", "SHARP"), help="validation pairs")
    val.add_argument("--val-gopro", type=Path, metavar="ROOT", help="root of GOPRO_Large: validate on its test split")
    val.add_argument("--val-every", type=int, default=500, metavar="STEPS")
    p.add_argument("--out", default="runs/fastdeblur", help="run folder (checkpoints, log.csv); resumed if present")
    p.add_argument("--arch", choices=["dmphn", "stack"], default="dmphn")
    p.add_argument("--levels", default="1,2,4", choices=["1", "1,2", "1,2,4", "1,2,4,8"],
                   help="DMPHN's patch counts per level (default %(default)s)")
    p.add_argument("--start", choices=["identity", "random"], default="identity",
                   help="a new run's weights: the identity (out == in; see fastdeblur/train/init.py) or random")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--loss", choices=LOSSES, default="mse",
                   help="training loss (default: %(default)s, the authors')")
    p.add_argument("--fft-weight", type=float, default=0.0, metavar="W",
                   help="add W times the spectra's mean absolute difference (MIMO-UNet's frequency loss; default 0)")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "none"], default="auto")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--export", nargs=2, metavar=("CHECKPOINT", "OUT"),
                   help="write a checkpoint's EMA weights as fp16 safetensors and exit")
    vp = p.add_argument_group("pairs from slow-motion video, as GoPro's were made (then train with --gopro DIR)")
    vp.add_argument("--make-pairs", nargs="+", type=Path, metavar="VIDEO",
                    help="average windows of consecutive frames of these clips (files or folders; 120-240 fps) "
                         "into blurry frames, the middle frame the sharp one, write them and exit")
    vp.add_argument("--pairs-out", type=Path, metavar="DIR", help="where --make-pairs writes DIR/train/<clip>/...")
    vp.add_argument("--pair-frames", default="7,13", metavar="LO,HI",
                    help="frames averaged per pair, drawn among the odd counts in LO-HI (default %(default)s, GoPro's)")
    vp.add_argument("--pair-every", type=int, default=1, metavar="N",
                    help="keep one window of frames in N (default %(default)s: back to back)")
    vp.add_argument("--pair-space", choices=["linear", "srgb"], default="linear",
                    help="average in linear light (default) or on the stored sRGB values (GoPro's blur set)")
    vp.add_argument("--min-fps", type=float, default=120.0,
                    help="refuse slower clips, whose frame gaps show as ghost copies (default %(default)g)")
    return p


def _make_pairs(a) -> int:
    from tqdm import tqdm

    from .video_pairs import make_video_pairs

    if a.pairs_out is None:
        print("fastdeblur-train: error: --make-pairs needs --pairs-out DIR", file=sys.stderr)
        return 2
    try:
        lo, hi = (int(x) for x in a.pair_frames.split(","))
    except ValueError:
        lo = hi = 0
    wrong = [f"--pair-frames takes LO,HI with 3 <= LO <= HI, got {a.pair_frames!r}"] if not 3 <= lo <= hi else []
    wrong += [f"--pair-every must be 1 or more, got {a.pair_every}"] if a.pair_every < 1 else []
    if wrong:  # said before any clip is opened, as usage errors
        print(f"fastdeblur-train: error: {'; '.join(wrong)}", file=sys.stderr)
        return 2
    with tqdm(unit="pair", file=sys.stderr) as bar:
        def progress(clip: Path, n: int) -> None:
            bar.set_description(clip.name)
            bar.update(1)

        with warnings.catch_warnings(record=True) as caught:  # clips too short for a pair: said, not fatal
            warnings.simplefilter("always", RuntimeWarning)
            try:
                n = make_video_pairs(a.make_pairs, a.pairs_out, frames=(lo, hi), every=a.pair_every,
                                     space=a.pair_space, seed=a.seed, min_fps=a.min_fps, progress=progress)
            finally:
                for w in caught:
                    tqdm.write(f"fastdeblur-train: warning: {w.message}", file=sys.stderr)
    print(f"fastdeblur-train: {n} pairs in {a.pairs_out / 'train'}; train on them with --gopro {a.pairs_out}")
    return 0


def _export(ckpt: str, given: str) -> int:
    from .export import checkpoint_weights, export_weights, read_checkpoint

    ckpt, out = Path(ckpt), Path(given)
    if given.endswith(("/", os.sep)) or out.is_dir():  # a folder: a file of that name was written, or it failed
        raise InputError(f"OUT {given} is a folder; name the file, e.g. {out / (ckpt.parent.name or 'weights')}"
                         ".safetensors")
    if out.suffix != ".safetensors":  # load_model and --weights tell the format by the name
        raise InputError(f"OUT must end in .safetensors (--weights and load_model tell the format by it), got {out}")
    if ckpt.suffix == ".safetensors" and ckpt.is_file():
        raise InputError(f"{ckpt}: exported weights already (deblur with --weights {ckpt}); --export takes a "
                         "training checkpoint (runs/NAME/last.pt)")
    st = read_checkpoint(ckpt)
    cfg = st["config"]
    weights = checkpoint_weights(st)
    export_weights(weights, out, arch=cfg["arch"], levels=tuple(cfg["levels"]), stages=cfg["stages"],
                   steps=st["step"],
                   recipe={k: cfg[k] for k in ("crop", "batch", "lr", "amp", "seed", "loss", "fft_weight") if k in cfg},
                   data=cfg.get("notes", {}).get("data", "unknown"), name=out.stem)
    print(f"fastdeblur-train: wrote {out} (step {st['step']})")
    return 0


def _read_data(a, parts: list, names: list) -> None:
    """The training sets the arguments name, with a short name of each for the run's notes."""
    from .data import PairedImages, SyntheticPairs

    if a.gopro:
        parts.append(PairedImages.from_gopro(a.gopro, "train", crop=a.crop, seed=a.seed))
        names.append("gopro")
    if a.folders:
        parts.append(PairedImages.from_folders(*a.folders, crop=a.crop, seed=a.seed))
        names.append("folders")
    if a.synthetic:
        blur = dataclasses.replace(BlurConfig(), **dict(a.settings))
        parts.append(SyntheticPairs(a.synthetic, crop=a.crop, seed=a.seed, cfg=blur))
        changed = "".join(f";{k}={v}" for k, v in a.settings)
        names.append("synthetic:" + ",".join(p.name for p in a.synthetic) + changed)


def main(argv: list[str] | None = None) -> int:
    from ..cli import messages_cannot_fail

    with messages_cannot_fail():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    a = _parser().parse_args(argv)
    try:
        if a.export:
            return _export(*a.export)
        if a.make_pairs:
            return _make_pairs(a)
        from torch.utils.data import ConcatDataset

        from .data import PairedImages
        from .trainer import TrainConfig, Trainer

        if a.settings and not a.synthetic:
            print("fastdeblur-train: error: --set changes the synthetic blur: it needs --synthetic", file=sys.stderr)
            return 2
        if not (a.gopro or a.folders or a.synthetic):
            print("fastdeblur-train: error: give --gopro, --folders or --synthetic (or --make-pairs)", file=sys.stderr)
            return 2
        if a.val_folders and a.val_gopro:
            print("fastdeblur-train: error: give --val-folders or --val-gopro, not both", file=sys.stderr)
            return 2
        cfg = TrainConfig(out_dir=a.out, arch=a.arch, start=a.start, levels=tuple(int(x) for x in a.levels.split(",")),
                          steps=a.steps, batch=a.batch, crop=a.crop, lr=a.lr, amp=a.amp, workers=a.workers,
                          loss=a.loss, fft_weight=a.fft_weight, seed=a.seed, device=a.device, val_every=a.val_every)
        check_settings(cfg, None)  # before the photos are read
        parts, names = [], []
        with warnings.catch_warnings(record=True) as said:  # photos or pairs left out: a line each
            warnings.simplefilter("always", RuntimeWarning)
            try:
                _read_data(a, parts, names)
                val = (PairedImages.from_folders(*a.val_folders, crop=a.crop, seed=1) if a.val_folders else
                       PairedImages.from_gopro(a.val_gopro, "test", crop=a.crop, seed=1) if a.val_gopro else None)
            finally:
                for w in said:
                    print(f"fastdeblur-train: warning: {w.message}", file=sys.stderr)
        cfg.notes = {"data": "+".join(names)}
        data = parts[0] if len(parts) == 1 else ConcatDataset(parts)
        trainer = Trainer(cfg, data, val)
        path = trainer.run()
        if trainer.resumed_at >= cfg.steps:
            print(f"fastdeblur-train: warning: {a.out} was already at step {trainer.resumed_at}, so --steps "
                  f"{cfg.steps} trained nothing; raise --steps to go on", file=sys.stderr)
        print(f"fastdeblur-train: checkpoint {path}")
        return 0
    except TrainingInterrupted as e:  # Ctrl-C: the step in hand finished and saved
        print(f"fastdeblur-train: {e}", file=sys.stderr)
        return e.exit_code
    except (InputError, WeightsError, OSError) as e:
        print(f"fastdeblur-train: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # python -m fastdeblur.train.cli, e.g. under torchrun
    sys.exit(main())
