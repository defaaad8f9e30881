"""Which layers of the fused DMPHN should run on Triton, measured end to end.

DMPHN(1-2-4) on the 1280x720 frame, fp16, channels_last, each configuration captured as a CUDA
graph and replayed: every layer on Triton, every layer on torch's convolutions (cuDNN), the
current choice (models.fused.MEASURED_FASTER), and each layer kind switched from one side to the
other. Configurations are timed in interleaved rounds (median of the rounds, each round the mean
of a few replays), so drift hits them all alike. Every output is checked against the float32
reference (>= 40 dB).

Why: per-layer microbenchmarks (bench_kernels.py, tune_kernels.py) predicted a mixed model about
2.5 ms faster than all-Triton; end to end it measured 0.46 ms slower (RESULTS.md, 2026-12-04).
The choice has to be measured where it counts.

Usage: python benchmarks/layer_choice.py [--rounds 7] [--replays 10] [--json out.json]
  (--device cpu --size 64x96 --kinds rb32,rb64 runs it under TRITON_INTERPRET=1 as a smoke test)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import frame, graphed, sync  # noqa: E402  (frame: the benchmarks' 720p frame)

import fastdeblur  # noqa: E402
from fastdeblur.models import fuse_model  # noqa: E402
from fastdeblur.models._layers import FusedDecoder, FusedEncoder, _kind  # noqa: E402
from fastdeblur.reference.dmphn import Decoder, Encoder  # noqa: E402


def layer_kinds() -> list[str]:
    """The layer kinds of DMPHN's encoder and decoder, in order of first use."""
    e, d = Encoder(), Decoder()
    kinds = [_kind(getattr(e, n)) for n in FusedEncoder.names] + [_kind(getattr(d, n)) for n in FusedDecoder.names]
    return list(dict.fromkeys(kinds))


def configurations(kinds: list[str], measured: frozenset[str]) -> dict[str, frozenset[str]]:
    """name -> the set of kinds on Triton (the rest on torch)."""
    every = frozenset(kinds)
    configs = {"all Triton": every, "all torch": frozenset(), "current choice": measured & every}
    for k in kinds:
        configs[f"Triton except {k}"] = every - {k}
    for k in kinds:
        configs[f"torch except {k}"] = frozenset({k})
    if "rb32" in every:
        configs["all Triton, rb32 one kernel"] = (every - {"rb32"}) | {"rb32:one"}
    # the stride-1 convolutions through the TMA variant (kernels/conv3x3.py), opt-in until measured
    configs["all Triton, TMA"] = every | {TMA}
    configs["current choice, TMA"] = (measured & every) | {TMA}
    return configs


TMA = "tma"  # not a layer kind: runs the configuration with FASTDEBLUR_TRITON_TMA=1


@contextlib.contextmanager
def _tma(on: bool):
    """FASTDEBLUR_TRITON_TMA set to `on` for the block (the kernels read it at each launch)."""
    old = os.environ.get("FASTDEBLUR_TRITON_TMA")
    os.environ["FASTDEBLUR_TRITON_TMA"] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["FASTDEBLUR_TRITON_TMA"]
        else:
            os.environ["FASTDEBLUR_TRITON_TMA"] = old


def suggest(times: dict[str, float], kinds: list[str]) -> frozenset[str]:
    """The kinds whose move to torch made the all-Triton model slower: Triton's share."""
    return frozenset(k for k in kinds if times[f"Triton except {k}"] > times["all Triton"])


def runner(model: torch.nn.Module, x: torch.Tensor, kinds: frozenset[str], graph: bool) -> Callable[[], torch.Tensor]:
    """A function running `model` fused with `kinds` on Triton over `x` (with the TMA variant where
    `kinds` holds TMA): a CUDA graph's replay, or (on CPU) an eager forward, after the warm-up that
    compiles the Triton kernels."""
    fused = fuse_model(model, triton=kinds)
    tma = TMA in kinds
    with torch.inference_mode(), _tma(tma):
        if graph:  # the graph keeps the kernels it captured
            return graphed(fused, x)
        for _ in range(3):
            fused(x)

    def run() -> torch.Tensor:
        with torch.inference_mode(), _tma(tma):
            return fused(x)
    return run


def psnr_db(a: torch.Tensor, ref: torch.Tensor) -> float:
    mse = float(((a.float() - ref.float()).clamp(-1, 1) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="dmphn-1-2-4-gopro")
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", default="720x1280", help="HxW crop of the frame")
    p.add_argument("--kinds", default=None, help="comma-separated layer kinds to vary (default: all)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--replays", type=int, default=10)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)

    from fastdeblur.models.fused import MEASURED_FASTER

    device = torch.device(a.device)
    h, w = (int(v) for v in a.size.split("x"))
    img = torch.from_numpy(np.ascontiguousarray(frame()[:h, :w])).to(device)
    x32 = (img.permute(2, 0, 1)[None].float() / 255 - 0.5).contiguous(memory_format=torch.channels_last)
    model = fastdeblur.load_model(a.model, device=device, dtype=torch.float32)
    with torch.inference_mode():
        ref = model(x32.contiguous())
    model = model.half().to(memory_format=torch.channels_last)  # (load_model refuses float16 on CPUs)
    x = x32.half()
    kinds = a.kinds.split(",") if a.kinds else layer_kinds()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    configs = configurations(kinds, MEASURED_FASTER)
    runners: dict[str, Callable[[], torch.Tensor]] = {}
    quality: dict[str, float] = {}
    for name, chosen in list(configs.items()):
        try:
            runners[name] = runner(model, x, chosen, graph=device.type == "cuda")
        except Exception as e:  # the opt-in TMA variant on a Triton or GPU that lacks it: the rest still run
            if TMA not in chosen:
                raise
            print(f"{name}: skipped, {type(e).__name__}: {str(e).strip()[:300]}")
            del configs[name]
            continue
        quality[name] = psnr_db(runners[name](), ref)
        if quality[name] < 40:
            raise AssertionError(f"{name}: {quality[name]:.1f} dB against the float32 reference")

    def timing(names: list[str]) -> dict[str, float]:
        samples: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(a.rounds):
            for n in names:
                sync(device.type)
                t = time.perf_counter()
                for _ in range(a.replays):
                    runners[n]()
                sync(device.type)
                samples[n].append((time.perf_counter() - t) / a.replays * 1000)
        return {n: statistics.median(s) for n, s in samples.items()}

    first = timing(list(configs))  # chooses; the second pass, with the suggestion added, reports
    suggested = suggest(first, kinds)
    label = f"suggested: Triton for {', '.join(sorted(suggested)) or 'nothing'}"
    if suggested not in configs.values():
        configs[label] = suggested
        runners[label] = runner(model, x, suggested, graph=device.type == "cuda")
        quality[label] = psnr_db(runners[label](), ref)
    times = timing(list(configs))

    base = times["all Triton"]
    print(f"{a.model}, {w}x{h}, fp16, {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, "
          f"{'CUDA graph replay' if device.type == 'cuda' else 'eager'}, median of {a.rounds} rounds x {a.replays}")
    print("| configuration | Triton kinds | ms | vs all Triton | first pass ms | PSNR vs fp32 |")
    print("|---|---|---|---|---|---|")
    for name, chosen in configs.items():
        first_ms = f"{first[name]:.3f}" if name in first else "-"  # the suggestion, when new, has none
        print(f"| {name} | {len(chosen - {TMA})} | {times[name]:.3f} | {base / times[name]:.3f}x | {first_ms} | "
              f"{quality[name]:.1f} |")
    print(f"suggested Triton kinds: {sorted(suggested)} (TMA: the stride-1 convolutions' TMA variant)")
    if a.json:
        Path(a.json).write_text(json.dumps({"times_ms": times, "first_pass_ms": first, "psnr": quality, "configs": {
            n: sorted(c) for n, c in configs.items()}, "suggested": sorted(suggested)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
