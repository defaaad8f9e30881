"""Training pairs: the GoPro layout, the authors' file lists, paired folders, and synthetic blur.

Every dataset returns (blurry, sharp) float tensors [3, crop, crop] in [0, 1]. Randomness (crop,
flips, 90-degree rotations, synthetic blur) comes from `item_rng(seed, epoch, index)`, never from
global state, so an item is the same in any worker process and after a resume.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputError
from ..io import is_hidden, is_image_path, read_image, suffixes
from .blur import BlurConfig, draw_blur, render, synthesize_pair


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def rgb_pixels(img: np.ndarray) -> np.ndarray:
    """HxW(x1|2|3|4), as read_image gives them -> HxWx3 of the same dtype: gray (with or without
    alpha) repeated into RGB, alpha dropped. (Gray + alpha was taken as two colour channels.)"""
    if img.ndim == 3 and img.shape[-1] in (1, 2):
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img[..., :3])


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxW(x1|2|3|4) uint8/uint16 -> [3, H, W] float in [0, 1] (see rgb_pixels)."""
    scale = 255.0 if img.dtype == np.uint8 else 65535.0
    return torch.from_numpy(rgb_pixels(img)).permute(2, 0, 1).float() / scale


def augment(pair: Sequence[torch.Tensor], crop: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """The same random crop, flips and 90-degree rotation for every tensor [3, H, W] of `pair`."""
    _, h, w = pair[0].shape
    if h < crop or w < crop:
        raise InputError(f"image of {h}x{w} is smaller than the {crop} px training crop")
    y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    out = [t[:, y:y + crop, x:x + crop] for t in pair]
    if rng.random() < 0.5:
        out = [t.flip(2) for t in out]
    if rng.random() < 0.5:
        out = [t.flip(1) for t in out]
    k = int(rng.integers(0, 4))
    return [torch.rot90(t, k, (1, 2)).contiguous() for t in out]


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    return sorted(p for p in folder.iterdir() if is_image_path(p))


def _check_twins(pairs: list[tuple[Path, Path]], blur_where: str, sharp_where: str) -> None:
    missing = [str(s) for _, s in pairs if not s.is_file()]
    if missing:
        raise InputError(f"{len(missing)} of {len(pairs)} blurry images {blur_where} have no sharp twin of the same "
                         f"name {sharp_where}, e.g. {missing[0]}")


_LEFT_OUT: set[str] = set()  # the files this process found unreadable while training (said once each)


def _read_or_next(items: Sequence, i: int, read):
    """read(items[i]), or where that file turns out unreadable when drawn (a truncated JPEG whose
    header still reads, so the check before the run passed it), the next item that reads: the run
    goes on instead of stopping, perhaps hours in, with a worker's traceback. Deterministic, so a
    resumed run draws the same; each such file is said once per process, on stderr (data workers
    are processes of their own)."""
    import sys

    for k in range(len(items)):
        item = items[(i + k) % len(items)]
        try:
            return read(item)
        except InputError as e:
            if str(e) not in _LEFT_OUT:
                _LEFT_OUT.add(str(e))
                print(f"\nfastdeblur.train: warning: {e}; left out of training (the next one is drawn in its place)",
                      file=sys.stderr, flush=True)
    raise InputError(f"none of the {len(items)} training images could be read")


def _sharp_photos(sources: Sequence[str | os.PathLike]) -> list[Path]:
    """The image files of `sources` (files, and folders searched with their subfolders, hidden ones
    left out as the command's -r does)."""
    files: list[Path] = []
    for s in map(Path, sources):
        if s.is_dir():
            found = sorted(p for p in s.rglob("*") if is_image_path(p) and p.is_file()
                           and not is_hidden(p.relative_to(s)))
            if not found:
                raise InputError(f"no images ({', '.join(sorted(suffixes()))}) in {s} or its subfolders")
            files += found
        elif s.is_file():
            files.append(s)
        else:
            raise InputError(f"{s} does not exist")
    if not files:
        raise InputError("no sharp photos given for synthetic pairs")
    return files


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file as `read_image` gives it (turned as its EXIF orientation
    says), from the header where Pillow reads one, else by decoding it (InputError for a file that
    is not a readable image)."""
    from PIL import Image

    from ..io import _EXIF_ORIENTATION, heif_available

    heif_available()  # registers pillow-heif's opener where it is installed
    try:
        with Image.open(path) as im:
            w, h = im.size
            turned = im.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)  # the ones with a quarter turn
    except Exception:  # not Pillow's (or damaged): read_image decodes it, or says what is wrong
        return read_image(path).shape[:2]
    return (w, h) if turned else (h, w)


def _fitting(items: list, sizes: list[tuple[int, int]], crop: int, what: str) -> list:
    """The items whose image is at least crop x crop; the others left out with a RuntimeWarning
    that names them (an InputError when none is left): a photo smaller than the training crop
    would otherwise stop a run when it is drawn, perhaps hours in."""
    keep = [i for i, size in enumerate(sizes) if min(size) >= crop]
    if len(keep) == len(items):
        return items
    if not keep:
        raise InputError(f"every {what} is smaller than the {crop} px training crop (the largest's shorter side: "
                         f"{max(min(size) for size in sizes)} px): use a smaller crop")
    first = next(i for i, size in enumerate(sizes) if min(size) < crop)
    h, w = sizes[first]
    name = items[first][0] if isinstance(items[first], tuple) else items[first]
    warnings.warn(f"{len(items) - len(keep)} of {len(items)} {what}s are smaller than the {crop} px training crop "
                  f"and are left out, e.g. {name} ({w}x{h})", RuntimeWarning, stacklevel=3)
    return [items[i] for i in keep]


class PairedImages(Dataset):
    """Aligned (blurry, sharp) file pairs with random crops and flips."""

    def __init__(self, pairs: Sequence[tuple[Path, Path]], crop: int = 256, seed: int = 0):
        if not pairs:
            raise InputError("no training pairs found")
        pairs = list(pairs)
        sizes = []
        for blur, sharp in pairs:  # from the headers: a pair that cannot train is named before the run
            sizes.append(image_size(blur))
            if image_size(sharp) != sizes[-1]:
                raise InputError(f"{blur} and {sharp} differ in size")
        self.pairs, self.crop, self.seed, self.epoch = _fitting(pairs, sizes, crop, "pair"), crop, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        def read(pair):
            blur, sharp = (to_tensor(read_image(p)) for p in pair)
            if blur.shape != sharp.shape:
                raise InputError(f"{pair[0]} and {pair[1]} differ in size")
            return blur, sharp

        blur, sharp = _read_or_next(self.pairs, i, read)
        b, s = augment((blur, sharp), self.crop, item_rng(self.seed, self.epoch, i))
        return b, s

    @classmethod
    def from_folders(cls, blur_dir: str | os.PathLike, sharp_dir: str | os.PathLike, **kw) -> PairedImages:
        """`blur/` and `sharp/` folders with matching file names; a sharp file of the same name in
        another format (blur/a.png, sharp/a.jpg) pairs where it is the only one of that stem."""
        blur_dir, sharp_dir = Path(blur_dir), Path(sharp_dir)
        blurry = _images_in(blur_dir)
        by_stem: dict[str, list[Path]] = {}
        for p in _images_in(sharp_dir):
            by_stem.setdefault(p.stem, []).append(p)

        def twin(p: Path) -> Path:
            same = sharp_dir / p.name
            return same if same.is_file() or len(by_stem.get(p.stem, ())) != 1 else by_stem[p.stem][0]

        pairs = [(p, twin(p)) for p in blurry]
        _check_twins(pairs, f"in {blur_dir}", f"in {sharp_dir}")
        return cls(pairs, **kw)

    @classmethod
    def from_gopro(cls, root: str | os.PathLike, split: str = "train", blur_kind: str = "blur", **kw) -> PairedImages:
        """GOPRO_Large/{train,test}/<sequence>/{blur,blur_gamma,sharp}/*.png (root may be GOPRO_Large's parent)."""
        root = Path(root)
        base = root / "GOPRO_Large" / split if (root / "GOPRO_Large").is_dir() else root / split
        if not base.is_dir():
            raise InputError(f"no GoPro split folder at {base}")
        pairs = []
        for seq in sorted(p for p in base.iterdir() if p.is_dir()):
            pairs += [(p, seq / "sharp" / p.name) for p in _images_in(seq / blur_kind)]
        _check_twins(pairs, f"of {base}", "in their sequence's sharp/")
        return cls(pairs, **kw)

    @classmethod
    def from_file_lists(cls, root: str | os.PathLike, blur_list: str | os.PathLike, sharp_list: str | os.PathLike,
                        **kw) -> PairedImages:
        """The authors' lists: one relative path a line (`train/<seq>/blur/000047.png`), same order."""
        root = Path(root)
        blurs = [ln.strip() for ln in Path(blur_list).read_text().splitlines() if ln.strip()]
        sharps = [ln.strip() for ln in Path(sharp_list).read_text().splitlines() if ln.strip()]
        if len(blurs) != len(sharps):
            raise InputError(f"file lists differ in length: {len(blurs)} blurry, {len(sharps)} sharp")
        return cls([(root / b, root / s) for b, s in zip(blurs, sharps, strict=True)], **kw)


class SyntheticPairs(Dataset):
    """Sharp photos blurred on the fly by `synthesize_pair` (a fresh blur per epoch and index).

    Blur lengths are in the photo's own pixels (BlurConfig.length, scale 1): the network sees
    them at that size, as it sees a GoPro frame's blur at 1280x720.
    """

    MARGIN = 32  # extra border blurred and cut away, so warps never show the crop's edge

    def __init__(self, sharp: Sequence[str | os.PathLike], crop: int = 256, seed: int = 0,
                 cfg: BlurConfig | None = None, length: int | None = None):
        files = _sharp_photos(sharp)
        files = _fitting(files, [image_size(f) for f in files], crop, "photo")
        self.files, self.crop, self.seed, self.cfg, self.epoch = files, crop, seed, cfg or BlurConfig(), 0
        self.length = length or len(files)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = item_rng(self.seed, self.epoch, i)
        img = _read_or_next(self.files, i % len(self.files), lambda f: to_tensor(read_image(f)))
        big = min(self.crop + 2 * self.MARGIN, img.shape[1], img.shape[2])
        (region,) = augment((img,), big, rng)
        blurry, target = synthesize_pair(region, int(rng.integers(2**31)), self.cfg, scale=1.0)
        m = (big - self.crop) // 2
        return blurry[:, m:m + self.crop, m:m + self.crop], target[:, m:m + self.crop, m:m + self.crop]


class SyntheticBatches:
    """Whole batches of synthetic pairs made on one device, for training on a GPU.

    The photos are decoded once and kept on the device (uint8); batch `step` is drawn from a
    generator seeded by (seed, step): random photo, crop, flips, rotation and blur (`draw_blur`),
    rendered for the whole batch in one call (`render`). No worker processes, no host copies,
    and a resumed run sees the same batches. JPEG artefacts are left out on this path (the
    encoder runs on the CPU); everything else matches `SyntheticPairs`.
    """

    MARGIN = SyntheticPairs.MARGIN

    def __init__(self, sharp: Sequence[str | os.PathLike], crop: int = 256, seed: int = 0,
                 cfg: BlurConfig | None = None, device: str | torch.device = "cuda"):
        self.device = torch.device(device)
        decoded, unreadable = [], []
        files = _sharp_photos(sharp)
        for f in files:
            try:
                img = rgb_pixels(read_image(f))
            except InputError as e:  # left out, as SyntheticPairs leaves out what it cannot draw
                unreadable.append(e)
                continue
            if img.dtype != np.uint8:
                img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
            decoded.append((f, torch.from_numpy(img).permute(2, 0, 1).to(self.device)))
        if unreadable and not decoded:
            raise InputError(f"none of the {len(files)} photos could be read, e.g. {unreadable[0]}")
        if unreadable:
            warnings.warn(f"{len(unreadable)} of {len(files)} photos could not be read and are left out, e.g. "
                          f"{unreadable[0]}", RuntimeWarning, stacklevel=2)
        # sized by the pixels decoded here anyway (SyntheticPairs reads only the headers)
        decoded = _fitting(decoded, [tuple(t.shape[1:]) for _, t in decoded], crop, "photo")
        self.images = [t for _, t in decoded]
        smallest = min(min(t.shape[1:]) for t in self.images)
        self.big = min(crop + 2 * self.MARGIN, smallest)
        self.crop, self.seed, self.cfg = crop, seed, cfg or BlurConfig(jpeg_prob=0.0)

    def batch(self, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(blurry, sharp) [size, 3, crop, crop] float in [0, 1] on the device."""
        rng = np.random.default_rng([self.seed, step])
        regions, draws = [], []
        for _ in range(size):
            img = self.images[int(rng.integers(len(self.images)))]
            (region,) = augment((img,), self.big, rng)
            regions.append(region)
            draws.append(draw_blur(rng, self.big, self.big, self.cfg, scale=1.0))
        blurry, sharp = render(torch.stack(regions).float() / 255.0, draws, return_target=True)
        m = (self.big - self.crop) // 2
        sl = (slice(None), slice(None), slice(m, m + self.crop), slice(m, m + self.crop))
        return blurry[sl].contiguous(), sharp[sl].contiguous()
