"""End-to-end providers timed round-robin, for machines whose speed drifts during a run.

pytest-benchmark (bench_end_to_end.py) times one provider's rounds back to back, so on a shared
host whose speed changes within minutes (our 2-core VM: the same bf16 forward at 1.0 s or 2.4 s)
two providers can land in different phases and their ratio means little. Here every round runs
each provider once, in turn, so each round's ratio compares neighbours in time; the table gives
each provider's median and the median of its per-round ratios to the baseline. Same providers,
same output check against the float32 reference as bench_end_to_end.py; warm-up excluded.

Usage: python benchmarks/interleaved.py [--device cpu] [--model dmphn-1-2-4-gopro]
         [--providers official_fp32,stock_best,fastdeblur] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from bench_end_to_end import _model, _provider, checked_psnr  # noqa: E402
from conftest import environment, sync  # noqa: E402
from flops import conv_flops  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="dmphn-1-2-4-gopro")
    p.add_argument("--providers", default="official_fp32,stock_best,fastdeblur",
                   help="comma-separated; the first is the baseline of the ratio column")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", default=None, help="also write the raw times here")
    a = p.parse_args()
    names = a.providers.split(",")
    runs, quality = {}, {}
    with torch.inference_mode():
        for name in names:
            fn, dtype = _provider(name, a.model, a.device)
            try:  # the first call is the warm-up and the output check
                quality[name] = checked_psnr(name, fn(), dtype, a.model, a.device)
            except AssertionError as e:
                raise SystemExit(str(e)) from None
            runs[name] = fn
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(a.rounds):
            for name in names:
                sync(a.device)
                t = time.perf_counter()
                runs[name]()
                sync(a.device)
                times[name].append(time.perf_counter() - t)
            print(f"round {r + 1}: " + "  ".join(f"{n} {times[n][-1]:.3f} s" for n in names), file=sys.stderr)
    gflop = conv_flops(_model(a.model, a.device), 720, 1280) / 1e9
    base = names[0]
    env = environment(a.device)
    print(f"{a.model}, 1280x720, {env['device']}, torch {env['torch']}, commit {env['commit']}, "
          f"{datetime.datetime.now().isoformat(timespec='minutes')}, {a.rounds} interleaved rounds\n")
    print(f"| provider | median s | min s | max s | GFLOP/s | median per-round {base} / provider | PSNR vs fp32 |")
    print("|---|---|---|---|---|---|---|")
    for n in names:
        ts = times[n]
        ratio = statistics.median(b / t for b, t in zip(times[base], ts, strict=True))
        med = statistics.median(ts)
        print(f"| {n} | {med:.3f} | {min(ts):.3f} | {max(ts):.3f} | {gflop / med:.0f} | {ratio:.2f}x | "
              f"{quality[n]:.1f} dB |")
    if a.json:
        Path(a.json).write_text(json.dumps({"model": a.model, "device": a.device, "environment": env,
                                            "times_s": times, "psnr_vs_fp32": quality}, indent=1))


if __name__ == "__main__":
    main()
