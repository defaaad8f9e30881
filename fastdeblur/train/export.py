"""Export trained weights in fastdeblur's own format: one safetensors file, fp16, with metadata.

safetensors holds raw tensors and a string header, so loading can never run code (unlike a
pickle); the header records what is needed to rebuild the model and judge the weights:
architecture, levels or stages, training data, recipe, steps, measured PSNR.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError, WeightsError, missing_path
from ..io import private_temp_path, publish
from ..reference import DMPHN, StackDMPHN

FORMAT = "fastdeblur-weights-1"


def export_weights(state_dict: dict[str, torch.Tensor], path: str | os.PathLike, *, arch: str,
                   levels: tuple[int, ...] = (1, 2, 4), stages: int = 4, dtype: torch.dtype = torch.float16,
                   **metadata) -> Path:
    """Write `state_dict` (a DMPHN / StackDMPHN's) as safetensors with a metadata header."""
    from safetensors.torch import save_file

    if arch not in ("dmphn", "stack"):
        raise ValueError(f"arch must be 'dmphn' or 'stack', got {arch!r}")
    path = Path(path)
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in state_dict.items()}
    header = {"format": FORMAT, "arch": arch, "levels": ",".join(map(str, levels)), "stages": str(stages)}
    header.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    path.parent.mkdir(parents=True, exist_ok=True)  # as write_image does (the error named the temp file)
    tmp = private_temp_path(path)
    try:
        save_file(tensors, str(tmp), metadata=header)
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise WeightsError(f"weights file {path} is not a readable safetensors file: {e}") from e
    if meta.get("format") != FORMAT:
        raise WeightsError(f"weights file {path} is not in fastdeblur's format (header format {meta.get('format')!r})")
    return meta


def load_into(model: nn.Module, path: str | os.PathLike) -> dict[str, str]:
    """Fill `model` (float32) from a fastdeblur safetensors file; returns the file's header."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    try:
        model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    except RuntimeError as e:
        raise WeightsError(f"weights file {path} does not fit the architecture {meta.get('arch')!r} "
                           f"(levels {meta.get('levels')}): {e}") from e
    return meta


def load_exported(path: str | os.PathLike) -> nn.Module:
    """Rebuild the model a fastdeblur safetensors file describes and fill it (float32, CPU, eval)."""
    meta = read_metadata(path)
    model = (DMPHN(tuple(int(x) for x in meta["levels"].split(","))) if meta["arch"] == "dmphn"
             else StackDMPHN(int(meta["stages"])))
    model.weights_meta = load_into(model, path)
    return model.eval()


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A fastdeblur-train checkpoint (runs/NAME/last.pt), loaded without running code
    (`weights_only`); an InputError that says what the file is otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(missing_path(path) if not path.exists() else f"{path}: not a file")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch.save's zip, or a legacy pickle
        raise InputError(f"{path}: not a torch file (it starts with {head!r})")
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or one that holds more than tensors and plain data
        raise InputError(f"{path}: not a checkpoint torch loads without running code ({type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})") from e
    lacks = sorted({"config", "model", "step"} - set(st)) if isinstance(st, dict) else ["config", "model", "step"]
    if lacks:
        raise InputError(f"{path}: not a fastdeblur-train checkpoint (such as runs/NAME/last.pt): it has no "
                         f"{', '.join(lacks)}")
    return st


def checkpoint_weights(st: dict) -> dict[str, torch.Tensor]:
    """The weights a checkpoint stands for: its EMA where it has one (what export writes)."""
    return st["ema"] if st.get("ema") is not None else st["model"]


def load_checkpoint(path: str | os.PathLike) -> nn.Module:
    """The model of a fastdeblur-train checkpoint with `checkpoint_weights` (float32, CPU, eval);
    `weights_meta` as an exported file's header would have it."""
    st = read_checkpoint(path)
    cfg = st["config"]
    levels = tuple(int(x) for x in cfg["levels"])
    model = DMPHN(levels) if cfg["arch"] == "dmphn" else StackDMPHN(int(cfg["stages"]))
    try:
        model.load_state_dict({k: v.float() for k, v in checkpoint_weights(st).items()})
    except RuntimeError as e:
        raise WeightsError(f"checkpoint {path} does not fit its own architecture {cfg['arch']!r}: {e}") from e
    model.weights_meta = {"format": "fastdeblur-train checkpoint", "arch": cfg["arch"],
                          "levels": ",".join(map(str, levels)), "stages": str(cfg["stages"]),
                          "steps": str(st["step"]), "name": Path(path).stem}
    return model.eval()
