"""Weights registry: model name -> architecture, files, sha256, source, license, measured PSNR.

Resolution order for a model's files: an explicit path -> the cache ($FASTDEBLUR_HOME, default
~/.cache/fastdeblur) -> a download from $FASTDEBLUR_OFFICIAL_URL -> an error saying what to do.
fastdeblur's own weights ship inside the package (`fastdeblur/_bundled/`, one safetensors file
per model): no cache, no download, the same sha256 check.
Every file is checked against its pinned sha256 before it is used or enters the cache, downloads
land through a temp file and an atomic rename, and loading never executes pickled code
(`torch.load(..., weights_only=True)`).
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError, WeightsError, env_flag
from .io import private_temp_path, publish
from .reference import DMPHN, StackDMPHN

OFFICIAL_URL = "https://github.com/HongguangZhang/DMPHN-cvpr19-master/raw/master"
_AUTHORS_LICENSE = (
    "Weights by Zhang et al. (DMPHN, CVPR 2019), trained on GoPro (Nah et al. 2017). The authors' "
    "repository has no license file: research use, rights with the authors. Not redistributed by "
    "fastdeblur: downloaded from the authors' repository."
)
_DOWNLOAD_TIMEOUT_S = 30.0
# No weights file here is near this (the authors' are 3.5-3.8 MB): a mirror that answers with
# something else (a disk image, an endless stream) is cut off here, not when the disk is full.
_MAX_DOWNLOAD_BYTES = 256 * 2**20
BUNDLED_DIR = Path(__file__).with_name("_bundled")


@dataclass(frozen=True)
class ModelWeights:
    """One registered model: how to build it and which verified files fill it."""

    name: str
    arch: str  # "dmphn" or "stack"
    config: tuple[int, ...]  # levels (patch counts) for dmphn, (stages,) for stack
    folder: str  # the authors' checkpoint folder name ("" for bundled weights)
    files: dict[str, str]  # file name -> sha256
    license: str = _AUTHORS_LICENSE
    # PSNR (dB, 8-bit RGB, whole image) we measured on ../shared/data/gopro_pairs, fp32.
    psnr: dict[str, float] = field(default_factory=dict)
    description: str = ""
    bundled: bool = False  # one fastdeblur .safetensors file in BUNDLED_DIR, shipped with the package

    def build(self) -> nn.Module:
        if self.arch == "dmphn":
            return DMPHN(self.config)
        return StackDMPHN(self.config[0])

    @property
    def source_url(self) -> str:
        return f"{official_url()}/checkpoints/{self.folder}/"


_REGISTRY: dict[str, ModelWeights] = {}
_ALIASES = {"default": "dmphn-1-2-4-gopro"}


def _register(w: ModelWeights) -> None:
    _REGISTRY[w.name] = w


_register(ModelWeights(
    "dmphn-1-2-4-gopro", "dmphn", (1, 2, 4), "DMPHN_1_2_4",
    {
        "encoder_lv1.pkl": "64b21c627f67382b20d472689a4766c6426d1f3b11763e73cde0cd13270064e1",
        "encoder_lv2.pkl": "816cdef4165ef81438da0c2226491b1a820ebbc1a3c3d175f56338111da7546d",
        "encoder_lv3.pkl": "898f79b659fd4a4ea1b098d186d42345e6d5fd12ad1ea22eb785c3484f93aab2",
        "decoder_lv1.pkl": "923fe68db2a9fb97c45082984e4371768f8d7d27824febcdd95615c3841e9824",
        "decoder_lv2.pkl": "d324a23f676c624f68ed20cad13d5bca5fa3281922ab20383c4c4713138233d2",
        "decoder_lv3.pkl": "652c12753b2eb15523cfdb0f1f280d0dd258aceb3464d9da637d2b6b5b1aa5bb",
    },
    psnr={"GOPR0384_11_00_000001": 30.77, "GOPRO_flower_frame1": 26.86},
    description="DMPHN(1-2-4), the authors' GoPro weights: 3 levels, 5.4 M parameters",
))
_register(ModelWeights(
    "dmphn-1-2-4-8-gopro", "dmphn", (1, 2, 4, 8), "DMPHN_1_2_4_8",
    {
        "encoder_lv1.pkl": "938651e29071b661d59909b68d1772d590c3a7a7191cebee22b521dd78af84c0",
        "encoder_lv2.pkl": "1357fd72cec9da556864bf3d1156879d154f40efb1b806547b713c4bf3877fa2",
        "encoder_lv3.pkl": "c9864598889dca34503211e94978e056135d6ad9e8b7e297bf076665997a55ef",
        "encoder_lv4.pkl": "01de21b48fc6b216c737acb3fe854ed085f68d93b498f7f0862872606e99f632",
        "decoder_lv1.pkl": "387a0ee8dd945052d069cdce6e6322ec9c93173896a28a72ac2be211bb0a78b2",
        "decoder_lv2.pkl": "9ec171ef8513eb85598af0c150904dee1aafe2674416a1878a3f093752721c08",
        "decoder_lv3.pkl": "aff3d672b9c81bc9067fe8e111f1901d9e78269fdb103c3f56d7690bec1aa740",
        "decoder_lv4.pkl": "5f88c7117f902ce7087ba18fc2b4ec395680d2ad2e6ddc0931284c8e4f1c25e5",
    },
    psnr={"GOPR0384_11_00_000001": 30.81, "GOPRO_flower_frame1": 27.04},
    description="DMPHN(1-2-4-8), the authors' GoPro weights: 4 levels, 7.2 M parameters",
))
_register(ModelWeights(
    "stack4-dmphn-gopro", "stack", (4,), "SDNet4",
    {
        "encoder_s1_lv1.pkl": "276842e365a2497ad4ad9861d55596490843c96dff5b0d6b629d1d01f20aa2d8",
        "encoder_s1_lv2.pkl": "cffbbdd5856970bde6c26c8867344074edb535844f45ec71c64ec2c7c65d5841",
        "encoder_s1_lv3.pkl": "985ec1ec43b6796aec17e9bcccf273a9ab16cece2db08df862edc103f56f0674",
        "encoder_s2_lv1.pkl": "548ba90ba30e9652ae6ec690ed0c381a185f1f1e0c1f1f72e0dbf635b1910955",
        "encoder_s2_lv2.pkl": "61aa3debb355872da328b22d3827ad2d81bd4baeb4b5deb90aefa01069913e36",
        "encoder_s2_lv3.pkl": "8ba77263cfee954fc43d9f056f5bc682ae935d2b01e9cdebf6451f156bb83cbe",
        "encoder_s3_lv1.pkl": "1bcf967ed2d504ed7f7575acafeaca8e817a831d00731a83d0694240760cf052",
        "encoder_s3_lv2.pkl": "84ac41f13ae51914dfd4e27de5431484b4641340a9bd95fe4cf46afa6f38fa6d",
        "encoder_s3_lv3.pkl": "58ba75c47591ceed26bf15a91a9be4a336e0d43c0e0c5a07fa777fe5a47f19a0",
        "encoder_s4_lv1.pkl": "c99b84bd6ba701417bafd7e4307525930847eb9a78f9e3eb820514cc6589708b",
        "encoder_s4_lv2.pkl": "4ae847b3d116b60d2e02129df57252a1d31751ec359fc498f24ef481eda49fa4",
        "encoder_s4_lv3.pkl": "9cef6d621cdb977a622bbc8813ef4b7a038761975800bf3422ec11cd6a6e41ad",
        "decoder_s1_lv1.pkl": "742090cc26b80cb7e490632bc2a39a8a307d80bf4a1238d70d719d9b23a215f2",
        "decoder_s1_lv2.pkl": "6b54f3a75747d78446457943f5d315ba265950d86454e0056dba9a83bce97556",
        "decoder_s1_lv3.pkl": "d016d669a015edf6242e089082d1c55b885c53daba4b85118539dc741f2860e0",
        "decoder_s2_lv1.pkl": "f41d84bb03d5ddee44c9e31d073d499c10892ebd2d3e50c14a4651556f2b890b",
        "decoder_s2_lv2.pkl": "987694789a7c7de31835c9e60a32eb26d369d0036520a4d718710982d9ef4331",
        "decoder_s2_lv3.pkl": "2d5f8419144d4fb4c32350e400a1c2daa94025109b45c56f1331a534606bd433",
        "decoder_s3_lv1.pkl": "d1266e04a2a4e591e8cfa9975c054748eb2b0b9a059ffcc980882b3b803380cc",
        "decoder_s3_lv2.pkl": "27c8d2d1dd45973fffda2b14c5143549b08e11b822535acd9530414e5e52a576",
        "decoder_s3_lv3.pkl": "6c49f544d97bf4c2a9842e29605ec033b8409405be36956df350b2480aef9466",
        "decoder_s4_lv1.pkl": "3c80b9565eb568ef799637c2e3e20cb6f4da063ad121da9ebdf77a9cd97aced5",
        "decoder_s4_lv2.pkl": "a314cefb4f78803305cca94a5771c6ac61b826cdefbb52d9f2a7cb729e5297d8",
        "decoder_s4_lv3.pkl": "0686bb91604e93325da35ce324936b40e2e23524549f02bf76f9613e87b21117",
    },
    psnr={"GOPR0384_11_00_000001": 31.64, "GOPRO_flower_frame1": 27.94},
    description="Stack(4)-DMPHN, the authors' GoPro weights (SDNet4): 4 stages, 21.7 M parameters",
))

_register(ModelWeights(
    "fastdeblur-default", "dmphn", (1, 2, 4), "",
    {"fastdeblur-default.safetensors": "feb6ecc053916402a25a54df03131f4bffe1131e5522c270153f568155d1ef56"},
    license="fastdeblur's own weights (MIT, as the code), trained on synthetic blur of public benchmark "
            "photos (Urban100, Sun-Hays80, BSD100); no GoPro data",
    # 18,070 steps of 4 crops on the 2-core CPU; the blurry inputs score 24.05 and 25.11 dB
    psnr={"GOPR0384_11_00_000001": 24.66, "GOPRO_flower_frame1": 25.38},
    description="DMPHN(1-2-4), fastdeblur's own weights, in the package; in training, not yet for GoPro-style blur",
    bundled=True,
))


def list_models() -> list[str]:
    """Registered model names (aliases such as `default` excluded)."""
    return sorted(_REGISTRY)


# names that are files, not models: a user's weights passed where a model name goes
WEIGHT_SUFFIXES = (".safetensors", ".pkl", ".pt", ".pth", ".ckpt", ".bin")


def get_weights(name: str) -> ModelWeights:
    """The registry entry for `name` (an alias like `default` is resolved)."""
    if isinstance(name, os.PathLike) or (isinstance(name, str) and name not in _ALIASES and name not in _REGISTRY
                                         and (os.sep in name or "/" in name or name.endswith(WEIGHT_SUFFIXES))):
        raise WeightsError(f"model {os.fspath(name)!r} is a path, not a model name: a weights file or folder is "
                           "given as weights (fastdeblur.load_model(weights=PATH), then deblur(img, model); "
                           "CLI: --weights PATH)")
    if not isinstance(name, str):
        raise WeightsError(f"model must be a name (str), got {type(name).__name__}")
    key = name.strip().lower()  # the names are lower case: Default, DMPHN-1-2-4-GoPro name them too
    entry = _REGISTRY.get(_ALIASES.get(key, key))
    if entry is None:
        import difflib

        names = list_models() + sorted(_ALIASES)
        close = ([n for n in names if key and n.startswith(key)][:1]  # cut short: stack4, fastdeblur
                 or difflib.get_close_matches(key, names, n=1, cutoff=0.6))
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise WeightsError(f"unknown model {name!r}; {hint}known models: {', '.join(names)}")
    return entry


def cache_dir() -> Path:
    """$FASTDEBLUR_HOME, else ~/.cache/fastdeblur."""
    home = os.environ.get("FASTDEBLUR_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "fastdeblur"


def official_url() -> str:
    """Where the authors' files are fetched from: $FASTDEBLUR_OFFICIAL_URL (an http(s):// or
    file:// URL; anything else is a ConfigError that says so), else their repository."""
    url = (os.environ.get("FASTDEBLUR_OFFICIAL_URL", "").strip() or OFFICIAL_URL).rstrip("/")  # empty: unset
    if "://" not in url or url.split("://", 1)[0].lower() not in ("http", "https", "file"):
        hint = f"; for a local folder: file://{Path(url).expanduser().resolve()}" if "://" not in url else ""
        raise ConfigError(f"FASTDEBLUR_OFFICIAL_URL must be an http://, https:// or file:// URL, got {url!r}{hint}")
    return url


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verified(path: Path, expected: str) -> bool:
    return path.is_file() and sha256_of(path) == expected


def resolve_files(name: str, weights: str | os.PathLike | None = None, *,
                  download: bool = True, progress: bool | None = None) -> dict[str, Path]:
    """Paths of the verified files of model `name`, fetching them into the cache if needed."""
    entry = get_weights(name)
    if weights is not None:
        return _files_from_path(entry, Path(weights).expanduser())
    if entry.bundled:  # no cache, no download: the file is part of the installed package
        return _checked_files(entry, BUNDLED_DIR, installed=True)
    folder = cache_dir() / "checkpoints" / entry.folder
    found: dict[str, Path] = {}
    for fname, digest in entry.files.items():
        path = folder / fname
        if path.exists() and not _verified(path, digest):
            # A damaged or tampered cache entry is dropped and fetched again, never used.
            print(f"fastdeblur: {path} fails its sha256 check; removing it", file=sys.stderr)
            path.unlink()
        if path.exists():
            found[fname] = path
    missing = [f for f in entry.files if f not in found]
    if not missing:
        return found
    offline = env_flag("FASTDEBLUR_OFFLINE", False)
    if not download or offline:
        raise WeightsError(_missing_message(entry, folder, missing, "downloads are disabled"
                                            + (" (FASTDEBLUR_OFFLINE is set)" if offline else "")))
    for fname in missing:
        try:
            found[fname] = download_file(f"{entry.source_url}{fname}", folder / fname,
                                         entry.files[fname], progress=progress)
        except WeightsError:
            raise
        except (OSError, urllib.error.URLError) as e:
            raise WeightsError(_missing_message(entry, folder, missing, f"downloading {fname} failed: {e}")) from e
    return found


def _missing_message(entry: ModelWeights, folder: Path, missing: list[str], why: str) -> str:
    return (
        f"weights of model {entry.name!r} are not available: {why}.\n"
        f"Missing from the cache {folder}: {', '.join(missing)}.\n"
        f"Fix: connect to the network (source {entry.source_url}), or copy the authors' files "
        f"into {folder}, or pass weights=<directory holding them> (CLI: --weights DIR), or set "
        f"FASTDEBLUR_OFFICIAL_URL to a mirror (file:// works) and run `fastdeblur --download {entry.name}`. "
        f"Or use model='fastdeblur-default' (CLI: --model fastdeblur-default): fastdeblur's own weights ship "
        f"with the package (weaker on GoPro-style blur; see docs/TRAINING.md)."
    )


def _files_from_path(entry: ModelWeights, path: Path) -> dict[str, Path]:
    if not path.exists():
        raise WeightsError(f"weights path {path} does not exist")
    if not path.is_dir():
        raise WeightsError(f"weights path {path} must be a directory holding {', '.join(entry.files)}")
    base = path / entry.folder if (path / entry.folder).is_dir() else path
    return _checked_files(entry, base, installed=False)


def _checked_files(entry: ModelWeights, base: Path, *, installed: bool) -> dict[str, Path]:
    """Each of `entry`'s files in `base`, refused unless its sha256 is the pinned one; `installed`:
    `base` is the package's own folder (an error there means a broken installation)."""
    out: dict[str, Path] = {}
    for fname, digest in entry.files.items():
        p = base / fname
        if not p.is_file():
            raise WeightsError(f"model {entry.name!r} ships with fastdeblur, but {p} is missing: the "
                               "installation is incomplete; reinstall fastdeblur" if installed else
                               f"weights file {p} is missing (model {entry.name!r} needs {len(entry.files)} files)")
        got = sha256_of(p)
        if got != digest:
            why = ("the installation is damaged; reinstall fastdeblur" if installed else
                   f"it is not the published {entry.name!r} file; refusing to load it")
            raise WeightsError(f"weights file {p} fails its sha256 check (expected {digest}, got {got}): {why}")
        out[fname] = p
    return out


def download_file(url: str, dest: Path, sha256: str, *, progress: bool | None = None) -> Path:
    """Download `url` to `dest` if its sha256 matches; a temp file plus rename, never a partial file.
    A cache folder that cannot be written is a WeightsError that says so (before any download)."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = private_temp_path(dest)
    except OSError as e:
        raise WeightsError(f"the weights cache {dest.parent} cannot be written ({e.strerror or e}): set "
                           "FASTDEBLUR_HOME to a writable folder (the cache is FASTDEBLUR_HOME/checkpoints), "
                           "or pass weights=<directory holding the files> (CLI: --weights DIR)") from e
    if progress is None:
        progress = sys.stderr is not None and sys.stderr.isatty()  # None: a daemon's, pythonw's closed stderr
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            too_big = (f"download of {url} is larger than any weights file (over {_MAX_DOWNLOAD_BYTES >> 20} MiB): "
                       "not a weights file; the file was not kept")
            if total is not None and total > _MAX_DOWNLOAD_BYTES:
                raise WeightsError(too_big)
            from tqdm import tqdm

            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress,
                      file=sys.stderr) as bar:
                size = 0  # not bar.n: a disabled bar counts nothing
                for block in iter(lambda: resp.read(1 << 16), b""):
                    size += len(block)
                    if size > _MAX_DOWNLOAD_BYTES:
                        raise WeightsError(too_big)
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
        got = h.hexdigest()
        if got != sha256:
            raise WeightsError(f"download of {url} fails its sha256 check (expected {sha256}, got {got}); "
                               "the file was not kept")
        publish(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or foreign files
        raise WeightsError(f"weights file {path} could not be read as a checkpoint: {e}") from e
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    return sd


def load_weights_into(model: nn.Module, files: dict[str, Path]) -> nn.Module:
    """Fill each submodule from its file (`encoder_lv1.pkl` -> `model.encoder_lv1`), or the whole
    model from one fastdeblur .safetensors file."""
    for fname, path in files.items():
        if fname.endswith(".safetensors"):
            from .train.export import load_into

            load_into(model, path)
            continue
        sub = model.get_submodule(Path(fname).stem)
        try:
            sub.load_state_dict(_load_state_dict(path))
        except RuntimeError as e:
            raise WeightsError(f"weights file {path} does not fit {Path(fname).stem}: {e}") from e
    return model
