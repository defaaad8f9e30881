"""`deblur()` and `load_model()`: any image kind in, the same kind out.

Inputs are normalised to one float32 batch [N, 3, H, W] in [0, 1] plus a note of how to give
the result back (numpy, torch, PIL; gray and alpha). The network runs on a reflect-padded copy
(cropped back exactly); above a memory budget each encoder/decoder call runs in exact tiles
(see reference/tiled.py), so large images give the same result as untiled ones. Models loaded
by name are cached per (model, cache folder, device, dtype) behind a lock.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _graphs, _heap, _system
from . import weights as _weights
from .errors import ConfigError, InputError, WeightsError
from .io import PIL_WORK_MODES, encode_image, output_format, read_image, read_metadata

MIN_TILE = 128
# Peak bytes per pixel of the untiled reference forward (CPU, measured at 1280x720; 16-bit runs
# need about half) and of the per-level tensors that stay whole when tiling, per dtype. float32:
# 81 B/px measured since the levels free their features (3000x2000 and 6000x4000 at tile 512:
# 1512 and 2968 MiB), 96 with a margin; a 6000x4000 photo then gets 800 px tiles instead of 512
# (at 768: 384 s and 3019 MiB against 421 s and 2968 MiB on the AMD EPYC). bfloat16: 63 B/px
# measured the same way on a Zen 5 EPYC (1163 and 2251 MiB), 80 with a margin.
_FORWARD_BYTES_PER_PX = 1400
_HELD_BYTES_PER_PX = {torch.float32: 96, torch.float16: 80, torch.bfloat16: 80}
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert("L")
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "half": torch.float16,
           "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _resolve_device(device: Any) -> torch.device:
    if device is None:
        return default_device()
    if isinstance(device, str):
        device = device.strip().lower()  # CPU, CUDA:0 (torch's names are lower case)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        hint = " (an NVIDIA GPU is 'cuda' or 'cuda:N')" if str(device).startswith(("gpu", "nvidia")) else ""
        raise InputError(f"device {device!r} is not a valid torch device{hint}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but CUDA is not available on this machine")
    if dev.type == "meta":
        raise InputError("device 'meta' holds no pixels; use cpu or cuda")
    if dev.type not in ("cpu", "cuda"):  # mps, xpu, ...: the plain-PyTorch path, where torch has the device
        probe = getattr(getattr(torch.backends, dev.type, None) or getattr(torch, dev.type, None), "is_available", None)
        if probe is None or not probe():
            raise InputError(f"device {device!r} asked for, but this torch build or machine has no "
                             f"{dev.type} device")
    return dev


def cpu_has_fast_bf16() -> bool:
    """True on x86 CPUs with AMX or AVX512-BF16, where oneDNN runs bfloat16 convs 2-4x faster."""
    cpu = getattr(torch, "cpu", None)
    try:
        return bool(cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported())
    except AttributeError:  # older torch without these probes: stay with float32
        return False


def default_dtype(device: torch.device) -> torch.dtype:
    """The fast dtype whose quality we measured, per device.

    CPUs with AMX/AVX512-BF16: bfloat16 (GoPro PSNR within 0.02 dB of float32). GPUs with tensor
    cores (compute capability 7.0+): float16 (within 0.02 dB, checked by tests/test_gpu.py).
    Elsewhere float32.
    """
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.get_device_capability(device) >= (7, 0):
        return torch.float16
    return torch.float32


def _resolve_dtype(dtype: Any, device: torch.device) -> torch.dtype:
    if dtype is None:
        return default_dtype(device)
    if not isinstance(dtype, (str, torch.dtype)):  # numpy's: np.float32, np.dtype("float16")
        try:
            dtype = np.dtype(dtype).name
        except TypeError:
            pass
    if isinstance(dtype, str):
        dtype = dtype.strip().lower()  # BF16, Float32
        if dtype not in _DTYPES:
            raise InputError(f"dtype {dtype!r} is not one of {', '.join(_DTYPES)}")
        dtype = _DTYPES[dtype]
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise InputError(f"dtype {dtype} is not supported (float32, float16 or bfloat16)")
    if dtype == torch.float16 and device.type == "cpu":
        raise InputError("float16 is not supported on CPU (slow and inexact there); use bfloat16 or float32")
    if dtype == torch.bfloat16 and device.type == "cpu" and not cpu_has_fast_bf16():
        warnings.warn("this CPU has no bfloat16 arithmetic (AMX or AVX512-BF16), so bfloat16 runs emulated: "
                      "17x slower than float32 on an AVX2 CPU; float32 is the fast dtype here (the default)",
                      RuntimeWarning, stacklevel=3)
    return dtype


# With backend=None, 16-bit inference on GPUs that run Triton's tensor-core path (compute
# capability 8.0+) uses the fused Triton model: on an H200 deblur() took 9.4 ms per 720p frame
# that way against 16.1 ms through cuDNN, float16 within 0.02 dB (benchmarks/RESULTS.md).
# float32 stays on cuDNN, whose exact mode is measured; the Triton fp32 path is opt-in.
TRITON_DTYPES = (torch.float16, torch.bfloat16)
_TRITON_AUTO_DEVICES = ("cuda",)  # the interpreter (CPU) runs Triton only when asked
# On CPUs, backend=None runs oneDNN's fused convolutions (models.onednn_model): same weights,
# same numerics (float32 within rounding of the reference: ~1e-7), fewer passes over memory.
ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


def _resolve_backend(backend: str | None, device: torch.device, dtype: torch.dtype):
    """(the fused model to run: "triton", "onednn" or None for the module as it is,
    layout steps: the extension's ops or plain torch)."""
    from .models.onednn import onednn_available
    from .ops import _backend
    from .ops.layout import OpsLayout
    from .reference.patches import TorchLayout

    backend = _backend.requested(backend)
    if backend == "triton":
        _backend.require_triton(device)
    fused = None
    if backend == "triton" or (backend is None and _triton_by_default(device, dtype)):
        fused = "triton"
    elif backend is None and device.type == "cpu" and dtype in ONEDNN_DTYPES and onednn_available(dtype):
        fused = "onednn"
    layout_backend = None if backend == "triton" else backend
    use_ext = _backend.choose(layout_backend, device) == "cuda"
    return fused, (OpsLayout("cuda") if use_ext else TorchLayout)


# Devices where the automatic choice of the Triton model failed (no C compiler for Triton's
# launcher, a tile that does not fit this GPU's shared memory, a Triton release that rejects a
# kernel): deblur() ran the cuDNN path instead, with a warning, and stays on it in this process.
_triton_failed: set[tuple[str, int | None]] = set()


def _device_key(device: torch.device) -> tuple[str, int | None]:
    if device.type == "cuda" and device.index is None:
        return ("cuda", torch.cuda.current_device())
    return (device.type, device.index)


def _same_device(a: torch.device, b: torch.device) -> bool:
    """a and b name the same device ("cpu" and "cpu:0" do; "cuda" is the current GPU)."""
    return a.type == b.type and (a.type == "cpu" or _device_key(a) == _device_key(b))


def _triton_by_default(device: torch.device, dtype: torch.dtype) -> bool:
    """backend=None picks the Triton model here: 16-bit on a GPU where Triton runs and has not failed."""
    from .ops import _backend

    return (device.type in _TRITON_AUTO_DEVICES and dtype in TRITON_DTYPES
            and _device_key(device) not in _triton_failed and _backend.triton_usable(device))


def _raised_by_triton(e: BaseException) -> bool:
    """`e` (or an exception it was raised from) comes out of Triton's code (its compiler, launcher
    or runtime) or torch's bridge to it, where a torch/Triton version mismatch shows: not out of
    the network's other layers, a bad input or a full GPU."""
    import triton

    triton_root = os.path.dirname(triton.__file__) + os.sep
    torch_root = os.path.dirname(torch.__file__) + os.sep
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if type(e).__module__.split(".")[0] == "triton":
            return True
        tb = e.__traceback__
        while tb is not None:
            f = tb.tb_frame.f_code.co_filename
            if f.startswith(triton_root) or (f.startswith(torch_root) and "triton" in f[len(torch_root):]):
                return True
            tb = tb.tb_next
        e = e.__cause__ or e.__context__
    return False


_fused_cache: weakref.WeakKeyDictionary[nn.Module, dict[str, nn.Module]] = weakref.WeakKeyDictionary()


def _fused(model: nn.Module, kind: str) -> nn.Module:
    """The fused twin of `model` ("triton" or "onednn"; weights packed once), cached while the
    model lives."""
    with _model_lock:
        twins = _fused_cache.setdefault(model, {})
        fused = twins.get(kind)
        if fused is None:
            if kind == "triton":  # imports triton, an optional dependency: only when asked for
                from .models.fused import fuse_model

                fused = twins[kind] = fuse_model(model)
            else:
                from .models.onednn import onednn_model

                fused = twins[kind] = onednn_model(model)
                warn_if_extension_missing(_first_tensor(model).dtype)
    return fused


_warned_missing_extension = False


def warn_if_extension_missing(dtype: torch.dtype) -> None:
    """Once per process: a CPU forward in `dtype` runs 2-3x slower than it could, for want of the
    extension (an install without --no-build-isolation, or without a C++ compiler, leaves it
    out). The warning points at the caller's first frame outside fastdeblur."""
    global _warned_missing_extension
    from . import _ext
    from .models import winograd

    if _warned_missing_extension or not winograd.lost_without_extension(dtype):
        return
    _warned_missing_extension = True
    warnings.warn(f"fastdeblur's compiled extension is not installed ({_ext.why_missing()}), so this CPU runs "
                  "the network on oneDNN's convolutions alone, 2-3x slower than with the extension's Winograd "
                  "kernels (a 720p frame on 2 Zen 4 cores: 3.2 s against 1.5 s in bfloat16, 6.5 s against 2.2 s "
                  "in float32). Reinstall with a C++ compiler and `pip install --no-build-isolation` (README, "
                  "Quick start); FASTDEBLUR_WINOGRAD=0 silences this.", RuntimeWarning, stacklevel=_outside_level())


def _outside_level() -> int:
    """warnings.warn's stacklevel, called from the function that calls this, for the first frame
    outside the fastdeblur package."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


# ---------------------------------------------------------------------------------------------
# models

_model_cache: dict[tuple, nn.Module] = {}
_model_lock = threading.Lock()


def load_model(name: str | None = None, weights: str | os.PathLike | None = None,
               device: Any = None, *, dtype: Any = None) -> nn.Module:
    """A registered model with its verified weights, in eval mode, on `device`.

    `name` is a registered model (see `list_models()`; None: "default"). `weights` is a
    directory of the model's files (the authors' .pkl files), a .safetensors file exported by
    fastdeblur, or a fastdeblur-train checkpoint (runs/NAME/last.pt: its EMA weights, as export
    writes them). The last two name their architecture: `name` may then be left out, and if it
    is given, its architecture must be the file's. Without `weights` the cache is used and, if
    needed, filled by a verified download.
    """
    dev = _resolve_device(device)
    dt = _resolve_dtype(dtype, dev)
    from_file = weights is not None and Path(weights).suffix != ".pkl" and Path(weights).is_file()
    if weights is not None and (str(weights).endswith(".safetensors") or from_file):
        # fastdeblur's own formats: the file names its architecture (see fastdeblur.train.export)
        from .train.export import load_checkpoint, load_exported

        if str(weights).endswith(".safetensors"):
            model = load_exported(weights)
        else:
            try:
                model = load_checkpoint(weights)
            except InputError as e:
                raise WeightsError(f"{e}; weights are a fastdeblur .safetensors file, a fastdeblur-train checkpoint "
                                   "(runs/NAME/last.pt) or a folder holding the authors' .pkl files") from e
        if name is not None:
            _check_file_fits(_weights.get_weights(name), model, weights)
        model.weights_name = model.weights_meta.get("name", Path(weights).stem)
        return model.to(device=dev, dtype=dt).eval().requires_grad_(False)
    entry = _weights.get_weights("default" if name is None else name)
    files = _weights.resolve_files(entry.name, weights)
    model = _weights.load_weights_into(entry.build(), files)
    model.weights_name = entry.name
    return model.to(device=dev, dtype=dt).eval().requires_grad_(False)


def _check_file_fits(entry: _weights.ModelWeights, model: nn.Module, path: str | os.PathLike) -> None:
    """A model named beside a weights file must be the architecture the file holds."""
    meta = model.weights_meta
    held = (meta["arch"], tuple(model.levels) if meta["arch"] == "dmphn" else (model.stages,))
    if held != (entry.arch, tuple(entry.config)):
        def say(arch: str, config: tuple[int, ...]) -> str:
            return f"DMPHN({'-'.join(map(str, config))})" if arch == "dmphn" else f"Stack({config[0]})"

        raise InputError(f"weights file {path} holds a {say(*held)}, not {entry.name}'s "
                         f"{say(entry.arch, entry.config)}; leave the model name out and the file's own "
                         "architecture is used")


def _cached_model(name: str, device: torch.device, dtype: torch.dtype) -> nn.Module:
    key = (_weights.get_weights(name).name, str(_weights.cache_dir()), str(device), dtype)
    with _model_lock:
        model = _model_cache.get(key)
        if model is None:
            _model_cache[key] = model = for_inference(load_model(name, device=device, dtype=dtype))
    return model


def for_inference(model: nn.Module) -> nn.Module:
    """A loaded model as deblur() keeps it: on CPU its weights channels_last, like the frames it
    gets. The plain-PyTorch path runs oneDNN's NHWC kernels then; in bfloat16 their rounding
    differs from the NCHW ones', so the command (which loads its model once) must do the same to
    give what deblur(img, name) gives."""
    if _first_tensor(model).device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model


def clear_model_cache() -> None:
    with _model_lock:
        _model_cache.clear()


# ---------------------------------------------------------------------------------------------
# input normalisation


@dataclass
class _Restore:
    kind: str  # "numpy" | "torch" | "pil" | "path" | "bytes"
    dtype: Any
    shape: tuple
    gray: bool
    alpha: Any = None
    device: Any = None
    scale: float = 1.0  # pixel value of white: 255, 65535 or 1.0
    pil_mode: str | None = None  # a PIL image's mode, to give back where the result's differs
    pil_info: dict | None = None  # and its info (ICC profile, EXIF, dpi), kept as Pillow's own operations keep it
    encoding: tuple[str, dict] | None = None  # encoded bytes in: (format to write back, as a suffix; metadata kept)


def _check_size(h: int, w: int) -> None:
    if h == 0 or w == 0:
        raise InputError(f"image is empty ({h}x{w})")


def _check_float_range(x, what: str) -> None:
    lib = torch if isinstance(x, torch.Tensor) else np
    if not bool(lib.isfinite(x).all()):
        raise InputError(f"{what} contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        hint = ""
        if lo >= 0 and hi <= 65535 and bool((x == x.round()).all()):  # whole numbers: integer pixels held as floats
            hint = ("; these look like 8-bit values: divide by 255, or pass them as uint8" if hi <= 255 else
                    "; these look like integer pixel values: divide by their bit depth's maximum (65535 for 16-bit, "
                    "4095 for 12-bit), or pass 16-bit data as uint16")
        elif lo >= -0.25 and hi <= 1.25:  # a little outside: a resize's or a sharpening's overshoot
            fix = "tensor.clamp(0, 1)" if lib is torch else "np.clip(img, 0, 1)"
            hint = f"; values a little outside come from resampling or sharpening overshoot: clip them first ({fix})"
        raise InputError(f"{what}: float images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]{hint}")


def _from_numpy(a: np.ndarray, restore: _Restore, what: str = "numpy image") -> torch.Tensor:
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise InputError(f"numpy image must be HxW or HxWxC, got shape {a.shape}")
    h, w, c = a.shape
    if c not in (1, 2, 3, 4):
        hint = "; numpy images are HxWxC, so a CxHxW array needs a.transpose(1, 2, 0)" if h in (1, 3, 4) else ""
        raise InputError(f"numpy image must have 1, 2, 3 or 4 channels (last axis), got {c} (shape {a.shape}){hint}")
    _check_size(h, w)
    if not a.dtype.isnative:  # big-endian data (FITS, some TIFF readers): the same values, native order
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype == np.uint8:
        scale = 255.0
    elif a.dtype == np.uint16:
        scale = 65535.0
    elif a.dtype in (np.float16, np.float32, np.float64):
        scale = 1.0
        _check_float_range(a, what)
    else:
        raise InputError(f"numpy image dtype {a.dtype} is not supported (uint8, uint16 or float in [0, 1])")
    restore.gray = c <= 2
    if c in (2, 4):
        restore.alpha = a[..., -1].copy()
        a = a[..., :-1]
    restore.scale = scale
    # pixels stay in their own type here: the conversion to float runs on the target device
    t = torch.from_numpy(np.require(a, requirements=["C", "W"])).permute(2, 0, 1)[None]
    if t.dtype == torch.uint16:  # few torch ops take uint16; int32 holds it exactly
        t = t.to(torch.int32)
    return t.expand(-1, 3, -1, -1) if restore.gray else t


def _from_tensor(t: torch.Tensor, restore: _Restore) -> torch.Tensor:
    if t.dim() not in (2, 3, 4):
        raise InputError(f"tensor image must be [H, W] (gray), [C, H, W] or [N, C, H, W], got shape {tuple(t.shape)}")
    if t.device.type == "meta" or t.layout != torch.strided:
        raise InputError(f"tensor image must be a dense tensor holding pixels, got a {t.layout} tensor "
                         f"on device {t.device.type!r}")
    b = t if t.dim() == 4 else t[None] if t.dim() == 3 else t[None, None]  # [H, W]: one gray channel
    if b.shape[1] not in (1, 2, 3, 4):
        hint = ""
        if t.shape[-1] in (1, 2, 3, 4):  # channels last, as numpy and PIL hold them
            hint = ("; tensors are [C, H, W] or [N, C, H, W], so an HxWxC tensor needs t.permute(2, 0, 1)"
                    if t.dim() == 3 else "; tensors are [N, C, H, W], so an NxHxWxC one needs t.permute(0, 3, 1, 2)")
        raise InputError(f"tensor image must have 1, 2, 3 or 4 channels (dim -3), got {b.shape[1]} "
                         f"(shape {tuple(t.shape)}){hint}")
    if not (t.is_floating_point() or t.dtype in (torch.uint8, torch.uint16)):
        raise InputError(f"tensor image dtype {t.dtype} is not supported (float in [0, 1], uint8 or uint16)")
    if b.shape[0] == 0:
        raise InputError("tensor image batch is empty")
    _check_size(b.shape[2], b.shape[3])
    b = b.detach()
    if b.shape[1] in (2, 4):  # gray or RGB plus alpha, which is given back untouched (as for numpy)
        restore.alpha = b[:, -1:].clone()
        b = b[:, :-1]
    if t.dtype == torch.uint8:  # torchvision's images: 0-255, converted on the device that runs the network
        restore.scale = 255.0
    elif t.dtype == torch.uint16:  # as numpy's: held in int32, which run_model reads as 16-bit pixels
        restore.scale = 65535.0
        b = b.to(torch.int32)
    else:
        _check_float_range(b, "tensor image")
        b = b.float()
    restore.gray = b.shape[1] == 1
    restore.device = t.device
    return b.expand(-1, 3, -1, -1) if restore.gray else b


# PIL modes are deblurred as io.PIL_WORK_MODES says and given back in their own. Bilevel images
# come back 8-bit gray, palette images RGB(A): thresholding or re-quantising the result would undo
# the deblurring.
# 16-bit gray modes by byte order; Pillow's convert() between them clips to 0..255
_PIL_16BIT = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2"}


def _from_pil(im, restore: _Restore) -> torch.Tensor:
    mode = im.mode
    restore.pil_mode = None if mode in ("P", "PA") else "L" if mode == "1" else mode  # None: RGB or RGBA
    # a palette's (or bilevel image's) transparent index means nothing in the RGB(A) or L given back
    restore.pil_info = {k: v for k, v in im.info.items() if not (k == "transparency" and mode in ("P", "PA", "1"))}
    if mode == "I":  # 32-bit integer gray: Pillow < 10 opens 16-bit gray PNGs this way
        a = np.asarray(im)
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise InputError(f"PIL mode I image holds values in [{lo}, {hi}]: fastdeblur reads mode I as "
                             "16-bit gray (0 to 65535)")
        restore.shape, restore.dtype = a.shape, np.dtype(np.uint16)
        return _from_numpy(a.astype(np.uint16), restore)
    if mode == "F":  # 32-bit float gray: values in [0, 1], as for float numpy images
        a = np.asarray(im)
        restore.shape, restore.dtype = a.shape, a.dtype
        return _from_numpy(a, restore, "PIL mode F image")
    if mode not in ("RGB", "RGBA", "L", "LA", *_PIL_16BIT):
        work = PIL_WORK_MODES.get(mode) or ("RGBA" if "transparency" in im.info else "RGB")
        im = im.convert(work)
    a = np.asarray(im)
    restore.shape, restore.dtype = a.shape, a.dtype
    return _from_numpy(a, restore)


def _to_batch(image: Any) -> tuple[torch.Tensor, _Restore]:
    if isinstance(image, (str, os.PathLike)):
        a = read_image(image)
        r = _Restore("path", a.dtype, a.shape, False)
        return _from_numpy(a, r), r
    if isinstance(image, np.ndarray):
        r = _Restore("numpy", image.dtype, image.shape, False)
        return _from_numpy(image, r), r
    if isinstance(image, torch.Tensor):
        r = _Restore("torch", image.dtype, tuple(image.shape), False)
        return _from_tensor(image, r), r
    if type(image).__module__.startswith("PIL."):
        r = _Restore("pil", None, image.size, False)
        return _from_pil(image, r), r
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        a = read_image(data)
        r = _Restore("bytes", a.dtype, a.shape, False, encoding=(output_format(data), read_metadata(data)))
        return _from_numpy(a, r), r
    if hasattr(image, "read"):
        raise InputError(f"cannot deblur a file object ({type(image).__name__}): pass its path, or its bytes "
                         "(f.read()), which come back encoded in the same format")
    raise InputError(f"cannot deblur a value of type {type(image).__name__}: pass a numpy array, torch tensor, "
                     "PIL image, file path or an image file's bytes")



def _quantizes_on_extension(r: _Restore, device: torch.device) -> bool:
    """8/16-bit RGB results on a GPU: the extension's postprocess (one kernel, 2.5x torch's chain)."""
    from . import _ext

    return (r.kind != "torch" and not r.gray and np.dtype(r.dtype).kind == "u" and device.type == "cuda"
            and _ext.has_kernel(device))


def _restore_quantized(y: torch.Tensor, r: _Restore) -> Any:
    """y: [N, 3, H, W] raw network output (shifted) on a GPU -> the caller's integer image."""
    from .ops import postprocess

    q = postprocess(y, y.shape[2], y.shape[3], torch.uint8 if np.dtype(r.dtype) == np.uint8 else torch.uint16,
                    backend="cuda")
    return _finish(q[0].cpu().numpy(), r)


def _restore(y: torch.Tensor, r: _Restore) -> Any:
    # y: [N, 3, H, W] float32 in [0, 1], on the device that ran the network
    if r.gray:
        luma = torch.tensor(_LUMA, dtype=y.dtype, device=y.device).view(1, 3, 1, 1)
        y = (y * luma).sum(1, keepdim=True)
    if r.kind == "torch":
        if not r.dtype.is_floating_point:  # uint8 / uint16 pixels
            y = torch.round(y * r.scale)
        y = y.to(device=r.device, dtype=r.dtype)
        return (y if r.alpha is None else torch.cat([y, r.alpha], 1)).reshape(r.shape)
    dtype = np.dtype(r.dtype)
    y = y[0].permute(1, 2, 0)
    if dtype.kind == "u":  # quantise on the device, move the small integer image
        y = torch.round(y * r.scale).to(torch.uint8 if dtype == np.uint8 else torch.int32)
    return _finish(y.cpu().numpy().astype(dtype, copy=False), r)


def _finish(a: np.ndarray, r: _Restore) -> Any:
    """HxWxC result -> the caller's kind: alpha put back, shape restored, PIL if given PIL."""
    if r.alpha is not None:
        a = np.concatenate([a, r.alpha[..., None].astype(a.dtype)], axis=-1)
    a = a.reshape(r.shape)
    if r.kind == "pil":
        from PIL import Image

        mode = r.pil_mode
        if mode == "I":
            out = Image.fromarray(a.astype(np.int32))
        elif mode in _PIL_16BIT:
            out = Image.frombytes(mode, (a.shape[1], a.shape[0]), a.astype(_PIL_16BIT[mode]).tobytes())
        else:
            out = Image.fromarray(a)  # dtype and channels select the mode: L, LA, RGB or RGBA
            out = out if mode in (None, out.mode) else out.convert(mode)
        out.info.update(r.pil_info or {})
        return out
    if r.kind == "bytes":
        suffix, meta = r.encoding
        return encode_image(a, suffix, metadata=meta)
    return a


# ---------------------------------------------------------------------------------------------
# running the network


def _padded_forward(model: nn.Module, x: torch.Tensor, dtype: torch.dtype, tile: int | None,
                    layout=None, owned: bool = False) -> torch.Tensor:
    """x [N, 3, H, W] float32 in [0, 1], any H, W >= 1 -> the network's output [N, 3, H, W], float32,
    still shifted by -0.5 and not clamped. owned: x is a temporary of ours, shifted in place
    (a whole-image copy less: 12 bytes per pixel)."""
    mh, mw = model.size_multiple
    h, w = x.shape[-2:]
    ph, pw = -h % mh, -w % mw
    x = x.sub_(0.5) if owned else x - 0.5
    if ph or pw:
        # reflect needs pad < size; sides shorter than the padding (thumbnails, a 1-pixel strip) repeat their edge
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    # channels_last: oneDNN (AMX) and cuDNN (tensor cores) both run their fast kernels on NHWC
    x = x.to(dtype=dtype).contiguous(memory_format=torch.channels_last)
    # cuDNN's per-shape algorithm search pays off for whole frames (video, batches of one size);
    # tiles come in several shapes, and searching each cost 4 s on a first 4K frame (H200)
    def forward(t: torch.Tensor) -> torch.Tensor:
        return model(t, tile=tile) if layout is None else model(t, tile=tile, layout=layout)

    with _cuda_flags(x.is_cuda, exact_fp32=dtype == torch.float32, benchmark=not tile):
        if tile:
            y = forward(x)
        else:  # whole frames of a size seen before replay a captured CUDA graph (GPU only)
            y = _graphs.forward(model, x, forward, key=(type(layout).__name__, getattr(layout, "backend", None)))
    return y[..., :h, :w].float()


@contextlib.contextmanager
def _cuda_flags(active: bool, exact_fp32: bool, benchmark: bool):
    """cuDNN settings for one forward, restored afterwards.

    benchmark: pick the fastest algorithm per shape (costs one search per new size, then pays
    back on every frame of that size). exact_fp32: float32 means float32; cuDNN would otherwise
    run the convolutions in TF32 (10-bit mantissa).
    """
    if not active:
        yield
        return
    cudnn = torch.backends.cudnn
    conv = getattr(cudnn, "conv", None)
    new_api = conv is not None and hasattr(conv, "fp32_precision")  # torch >= 2.9
    old = (cudnn.benchmark, conv.fp32_precision if new_api else cudnn.allow_tf32)
    cudnn.benchmark = benchmark or cudnn.benchmark
    if exact_fp32:
        if new_api:
            conv.fp32_precision = "ieee"
        else:
            cudnn.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.benchmark = old[0]
        if new_api:
            conv.fp32_precision = old[1]
        else:
            cudnn.allow_tf32 = old[1]


# torch's CPU thread pool is sized from the cores it sees, which in a container with a CPU quota
# (docker --cpus 2 on a 64-core host) are the host's: dozens of threads then share two CPUs of
# time, and the scheduler's throttling stalls the convolutions' threads, which wait on each
# other. fit_threads_to_cpu_quota shrinks the pool to the quota, once, unless the user chose a
# size: OMP_NUM_THREADS / MKL_NUM_THREADS, or torch.set_num_threads since fastdeblur's import.
_THREADS_AT_IMPORT = torch.get_num_threads()
_threads_lock = threading.Lock()
_threads_fitted = False


def fit_threads_to_cpu_quota() -> None:
    global _threads_fitted
    with _threads_lock:
        if _threads_fitted:
            return
        _threads_fitted = True
        if "OMP_NUM_THREADS" in os.environ or "MKL_NUM_THREADS" in os.environ:
            return
        threads = torch.get_num_threads()
        quota = _system.cpu_quota()
        if quota is not None and quota < threads == _THREADS_AT_IMPORT:
            torch.set_num_threads(quota)


def _gnu_openmp() -> bool:
    """torch's CPU ops run on GNU OpenMP (libgomp is mapped: Linux pip wheels), whose thread pool
    does not survive a fork."""
    try:
        with open("/proc/self/maps") as f:
            return any(os.path.basename(line.split()[-1]).startswith("libgomp") for line in f if "/" in line)
    except OSError:  # not Linux
        return False


def _one_thread_after_fork() -> None:
    """A forked child (multiprocessing's default start on Linux before Python 3.14, gunicorn
    workers) runs torch's CPU ops on one thread. After the parent has run any parallel op, GNU
    OpenMP's pool in the child names threads that did not survive the fork, and the child's first
    parallel op waits for them forever (pytorch/pytorch#17199, #41197): a deblur() in a Pool
    worker hung. One thread never uses the pool; a child wanting more starts by spawn instead."""
    if torch.get_num_threads() > 1 and _gnu_openmp():
        torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_one_thread_after_fork)


def memory_budget(device: torch.device) -> int:
    """Bytes one forward may use: $FASTDEBLUR_MEMORY_BUDGET (MiB), else a share of what is free."""
    env = os.environ.get("FASTDEBLUR_MEMORY_BUDGET")
    if env:
        try:
            mib = float(env)
        except ValueError:
            mib = float("nan")
        if not mib > 0 or mib == float("inf"):
            raise ConfigError(f"FASTDEBLUR_MEMORY_BUDGET must be a positive number of MiB, got {env!r}")
        return int(mib * 2**20)
    if device.type == "cuda":  # bounded, so a 4K frame stays under 3 GB in half precision
        free, _ = torch.cuda.mem_get_info(device)
        return int(min(free * 0.6, 2.5 * 2**30))
    avail = _system.memory_available()
    if avail is not None:  # the heap pages kept from the last forward are ours to reuse
        avail += _heap.free_bytes()
    else:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):  # Windows has no os.sysconf, macOS no SC_AVPHYS_PAGES
            avail = 8 * 2**30
    return int(min(3 * 2**30, avail * 0.5))


def auto_tile(pixels: int, dtype: torch.dtype, budget: int, whole_bytes_per_px: int | None = None) -> int | None:
    """Tile side (pixels) for a forward over `pixels` (batch included); None if it fits whole.

    whole_bytes_per_px: what a whole-image forward of the model needs per pixel where it is known
    (the CPU oneDNN model's `whole_bytes_per_px`); else the reference forward's estimate. Tiles are
    sized from the reference forward's in either case, which keeps a tiled forward's peak where
    it was measured."""
    shrink = 1 if dtype == torch.float32 else 2
    if pixels * (whole_bytes_per_px or _FORWARD_BYTES_PER_PX // shrink) <= budget:
        return None
    room = budget - pixels * _HELD_BYTES_PER_PX[dtype]
    side = int((max(room, 0) * shrink / _FORWARD_BYTES_PER_PX) ** 0.5) // 16 * 16
    return max(side, 4 * MIN_TILE)


def _dmphn_inside(model: nn.Module) -> nn.Module:
    """The DMPHN or StackDMPHN that deblur() runs for a module it is given: the module itself,
    or the one inside torch.compile's or (Distributed)DataParallel's wrapper. deblur() runs its own
    fast paths on the model's weights (their speed measured against torch.compile's), so the
    wrapper's forward is not what runs."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    from .reference import DMPHN, StackDMPHN

    inner = model
    while True:
        if isinstance(inner, (DataParallel, DistributedDataParallel)):
            inner = inner.module
        elif isinstance(getattr(inner, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            inner = inner._orig_mod
        else:
            break
    if not isinstance(inner, (DMPHN, StackDMPHN)):
        raise InputError(_MODEL_KINDS + f", got a {type(inner).__name__}")
    return inner


_MODEL_KINDS = ("model must be a model name (fastdeblur.list_models()) or a DMPHN / StackDMPHN module "
                "(fastdeblur.load_model(), fastdeblur.reference)")


def _first_tensor(model: nn.Module) -> torch.Tensor:
    """A weight of `model` (parameters, or the packed buffers of a fused model): device and dtype."""
    return next(itertools.chain(model.parameters(), model.buffers()))


# self-ensemble: the flips (dims of [N, 3, H, W]) whose outputs, flipped back, are averaged
ENSEMBLE_FLIPS = {1: [()], 2: [(), (3,)], 4: [(), (3,), (2,), (2, 3)]}


def _check_ensemble(ensemble: Any) -> None:
    if isinstance(ensemble, bool) or not isinstance(ensemble, (int, np.integer)) or ensemble not in ENSEMBLE_FLIPS:
        raise InputError(f"ensemble must be 1 (off), 2 (and the mirror image) or 4 (and the vertical flips of "
                         f"both), got {ensemble!r}")


@contextlib.contextmanager
def _reporting(progress: Callable[[float], None] | None, model: nn.Module, shape: torch.Size, ensemble: int):
    """Tell `progress` the fraction of the forward done after each encoder/decoder call or tile
    (by the image area it covered), and 1.0 at the end: a replayed CUDA graph runs no Python, so
    it reports only then."""
    if progress is None:
        yield
        return
    from .reference.tiled import progress_sink

    n, _, h, w = shape
    mh, mw = model.size_multiple
    total = getattr(model, "cnn_calls", 0) * n * (h + -h % mh) * (w + -w % mw) * ensemble
    done = 0

    def sink(area: int) -> None:
        nonlocal done
        done += area
        progress(min(done / total, 1.0))

    token = progress_sink.set(sink if total else None)
    try:
        yield
    finally:
        progress_sink.reset(token)
    if done < total or not total:
        progress(1.0)


def run_model(model: nn.Module, x: torch.Tensor, *, dtype: torch.dtype | None = None,
              tile: int | None = None, layout=None, shifted: bool = False, ensemble: int = 1,
              progress: Callable[[float], None] | None = None) -> torch.Tensor:
    """x [N, 3, H, W] float in [0, 1] (or uint8 / int32-held uint16 pixels) -> restored, float32
    in [0, 1], same shape, on the model's device.

    tile: None picks a tile size from the memory budget (no tiling when the image fits), 0
    forces a whole-image run, a positive number (>= 128) bounds each CNN call's input side.
    shifted: return the raw network output (restored - 0.5, unclamped) instead.
    ensemble: 2 or 4 also runs the image flipped left-right (and, for 4, both of them upside
    down) and averages the outputs flipped back, before clamping: 2x or 4x the time.
    progress: called with the fraction done (0 to 1) after each encoder/decoder call or tile.
    """
    _check_ensemble(ensemble)
    param = _first_tensor(model)
    dtype = dtype or param.dtype
    if tile and tile < MIN_TILE:
        raise InputError(f"tile must be 0 (off) or at least {MIN_TILE} pixels, got {tile}")
    if param.device.type == "cpu":
        fit_threads_to_cpu_quota()
    with torch.inference_mode():
        x = x.to(param.device)
        owned = not x.is_floating_point()
        if owned:  # pixels arrive in their own type; scale on the device
            x = x.float().mul_(1.0 / (255.0 if x.dtype == torch.uint8 else 65535.0))
        cpu = x.device.type == "cpu"
        budget = memory_budget(param.device) if cpu or tile is None else 0
        if tile is None:
            n, _, h, w = x.shape
            tile = auto_tile(n * h * w, dtype, budget, getattr(model, "whole_bytes_per_px", None))
        # CPU: large activations reuse memory instead of fresh, zero-filled mappings (_heap.py).
        # Tiled, the block cache holds at most half the budget: more kept a 6000x4000 photo's
        # tiles 2 s faster (44.6 against 46.8 s) but raised its peak RSS from 2.3 to 3.4 GB.
        # Whole, the forward fits the budget by the estimate above, and so does the cache at the
        # whole budget: a 4032x3024 bfloat16 photo took 25.5 s (4.2 M page faults) with half of it
        # and 21.1 s (0.9 M) with 4.4 GiB, at 2.6-2.9 GB peak RSS either way.
        limit = budget // 2 if tile else budget
        reuse = _heap.reuse_heap(limit=limit, tiled=bool(tile)) if cpu else contextlib.nullcontext()
        with reuse, _reporting(progress, model, x.shape, ensemble):
            if ensemble == 1:
                y = _padded_forward(model, x, dtype, tile or None, layout, owned=owned)
            else:
                # summed at once: a replayed CUDA graph's output is overwritten by the next replay
                y = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
                for dims in ENSEMBLE_FLIPS[ensemble]:
                    out = _padded_forward(model, x.flip(dims) if dims else x, dtype, tile or None, layout)
                    y += out.flip(dims) if dims else out
                y /= ensemble
            return y if shifted else (y + 0.5).clamp_(0.0, 1.0)


def deblur(image: Any, model: str | nn.Module = "default", *, device: Any = None, dtype: Any = None,
           backend: str | None = None, tile: int | None = None, ensemble: int = 1,
           progress: Callable[[float], None] | None = None) -> Any:
    """Remove motion blur from `image`; returns the same kind, shape and dtype.

    image: numpy HxW / HxWxC (uint8, uint16, float in [0, 1]), torch [H, W], [C, H, W] or
      [N, C, H, W] (float in [0, 1], uint8 or uint16), C = 1, 2, 3 or 4 (gray, gray + alpha, RGB, RGBA: alpha
      comes back untouched), a PIL image, a file path (returns a numpy array), or an image file's
      bytes (returns the bytes of a file in the same format, PNG for formats not written here,
      with the ICC profile and EXIF kept as the command keeps them).
    model: a registered name (see `list_models()`) or a module from `load_model()`.
    device: default CUDA when available, else CPU. dtype: None picks bfloat16 on CPUs with
      AMX/AVX512-BF16, float16 on GPUs with tensor cores, float32 elsewhere (`default_dtype`);
      or float32 (exact), float16 (GPU), bfloat16.
    backend: None (the best measured: the fused model for 16-bit on GPUs with compute capability
      8.0+; on CPUs oneDNN's fused convolutions, models.onednn_model, with the residual blocks and
      transposed convolutions on the extension's Winograd kernels where they are faster
      (FASTDEBLUR_WINOGRAD) and the 32 -> 3 layers on its small-K kernel, or in bfloat16 on CPUs
      with AMX every layer but the first on its AMX kernels (FASTDEBLUR_AMX); else cuDNN convolutions;
      with the compiled extension's layout ops), "reference" (plain torch), "cuda" (the
      extension's ops, torch convolutions), "triton" (the fused model: Triton kernels for the
      layers where they measured faster than cuDNN, see models.fuse_model, plus the extension's
      layout ops); env FASTDEBLUR_BACKEND. If Triton, chosen by None, fails in its own code, the
      call warns (RuntimeWarning) and runs PyTorch's convolutions, as later calls on that device do.
    tile: None (automatic, from the memory budget), 0 (never tile) or a tile size in pixels.
    ensemble: 1 (default), 2 or 4: average the outputs for the image and its left-right mirror
      (2), and for both turned upside down (4), each flipped back: sharper, at 2x / 4x the time.
    progress: a function called with the fraction done, 0 to 1, as the network runs (after each
      encoder/decoder call or tile: 6 to hundreds of calls per image), and with 1.0 at the end;
      for a progress bar on CPU, where a large photo takes minutes.
    """
    if tile is not None and (not isinstance(tile, int) or tile < 0):
        raise InputError(f"tile must be None, 0 or a positive number of pixels, got {tile!r}")
    _check_ensemble(ensemble)
    if progress is not None and not callable(progress):
        raise InputError(f"progress must be a function called with the fraction done, got {type(progress).__name__}")
    x, restore = _to_batch(image)
    if not isinstance(model, (str, os.PathLike, nn.Module)):  # a path gets the registry's hint: weights=
        raise InputError(_MODEL_KINDS + f", got {type(model).__name__}")
    if isinstance(model, nn.Module):
        net = _dmphn_inside(model)
        weight = _first_tensor(net)
        dev, dt = weight.device, weight.dtype
        if dtype is not None and _resolve_dtype(dtype, dev) != dt:
            raise InputError(f"the model given is in {dt}; load it with dtype={dtype!r} instead of passing dtype here")
        if device is not None and not _same_device(_resolve_device(device), dev):
            raise InputError(f"the model given is on {dev}; load it with device={device!r} (or move it) "
                             "instead of passing device here")
    else:
        if device is None and restore.kind == "torch" and restore.device.type == "cuda":
            device = restore.device
        dev = _resolve_device(device)
        dt = _resolve_dtype(dtype, dev)
    fused, layout = _resolve_backend(backend, dev, dt)  # a bad backend fails before any weights load
    if not isinstance(model, nn.Module):
        net = _cached_model(model, dev, dt)

    def run(fused: str | None, layout) -> Any:
        m = _fused(net, fused) if fused else net
        if _quantizes_on_extension(restore, dev):
            y = run_model(m, x, dtype=dt, tile=tile, layout=layout, shifted=True, ensemble=ensemble,
                          progress=progress)
            return _restore_quantized(y, restore)
        return _restore(run_model(m, x, dtype=dt, tile=tile, layout=layout, ensemble=ensemble, progress=progress),
                        restore)

    from .ops._backend import requested

    try:
        return run(fused, layout)
    except Exception as e:
        # Triton picked automatically and failed in its own code: PyTorch's convolutions (cuDNN)
        # run the same network, so use them, say why, and do not try Triton on this device
        # again. An explicit backend="triton" raises instead; so does a full GPU.
        if (fused != "triton" or requested(backend) is not None or isinstance(e, torch.cuda.OutOfMemoryError)
                or not _raised_by_triton(e)):
            raise
        with _model_lock:
            _triton_failed.add(_device_key(dev))
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        warnings.warn(f"fastdeblur: the Triton kernels failed on {dev} ({type(e).__name__}: {first}); running "
                      "PyTorch's convolutions instead from now on in this process (backend='triton' raises the "
                      "full error)", RuntimeWarning, stacklevel=2)
        return run(*_resolve_backend(None, dev, dt))
