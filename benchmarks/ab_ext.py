"""Two builds of the compiled extension, A and B, timed against each other on this machine.

How the CPU kernels' changes were measured since the Winograd kernels came (RESULTS.md): on a
shared 2-core VM whose speed drifts by more than most changes gain, only builds timed in turn,
each in a fresh process, compare. Keep a copy of the built library before a change
(`cp fastdeblur/_C*.so /tmp/A.so`), rebuild, copy again, then:

    python benchmarks/ab_ext.py /tmp/A.so /tmp/B.so [--workload ops|frame|frame32] [--rounds 3]

Each round runs A then B, or B then A (alternating, so a drift favours neither), every run in
its own process, which loads the given library as `fastdeblur._C` before anything else can. The
table gives, per timed item, each build's medians over the rounds (each a median of `--calls`
calls, warm-up excluded) and B's median over A's; and whether the two builds' outputs were the
same bits (a sha256 of every output of the run), which is what a pure speed change must keep.

Workloads (no weights to download: the frames run the bundled `fastdeblur-default`, whose
architecture is DMPHN(1-2-4)'s):
  ops      the Winograd ops at a 720p frame's sizes: conv3x3 with ReLU and conv3x3_add_ at 32, 64
           and 128 channels, the two transposed and the two stride-2 convolutions, in bfloat16
           where the CPU has AVX512-BF16, else float32 (random weights, seed 0)
  frame    deblur() of a 1280x720 uint8 frame with the CPU's default dtype
  frame32  the same in float32
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import statistics
import subprocess
import sys
import time


def _load(library: str) -> None:
    """Register `library` as fastdeblur._C, before fastdeblur's lazy loader imports its own."""
    import fastdeblur  # noqa: F401  (the parent package; importing it loads no extension)

    spec = importlib.util.spec_from_file_location("fastdeblur._C", library)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{library}: not a loadable extension library")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fastdeblur._C"] = module
    spec.loader.exec_module(module)
    from fastdeblur import _ext

    if not _ext.load():
        raise SystemExit(f"{library}: loaded, but the extension is unusable: {_ext.why_missing()}")


def _median_ms(calls: int, fn, *args, **kwargs) -> float:
    """fn(*args, **kwargs)'s median time in ms over `calls` calls, after one warm-up call."""
    fn(*args, **kwargs)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def _ops(calls: int, digest) -> dict[str, float]:
    import torch

    from fastdeblur import _heap
    from fastdeblur.api import cpu_has_fast_bf16
    from fastdeblur.models import winograd as wg

    dt = torch.bfloat16 if cpu_has_fast_bf16() and wg.available(torch.bfloat16) else torch.float32
    if not wg.available(dt):
        raise SystemExit(f"the Winograd kernels do not run {dt} on this CPU")
    gen = torch.Generator().manual_seed(0)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(dt)

    def act(h, w, c):  # NHWC
        return rand(1, h, w, c)

    times = {}
    with torch.inference_mode(), _heap.reuse_heap(limit=2 << 30):
        for c, h, w in ((32, 720, 1280), (64, 360, 640), (128, 180, 320)):
            x, u, b = act(h, w, c), wg.pack(rand(c, c, 3, 3, scale=0.05), dt), torch.randn(c, generator=gen)
            acc = act(h, w, c)
            digest.update(wg.conv3x3(x, u, b, relu=True).float().numpy().tobytes())
            times[f"conv3x3 relu {c}ch {w}x{h}"] = _median_ms(calls, wg.conv3x3, x, u, b, relu=True)
            start = acc.clone()
            times[f"conv3x3_add_ {c}ch {w}x{h}"] = _median_ms(calls, wg.conv3x3_add_, acc, x, u, b)
            acc.copy_(start)
            digest.update(wg.conv3x3_add_(acc, x, u, b).float().numpy().tobytes())
        for c, k, h, w in ((128, 64, 180, 320), (64, 32, 360, 640)):
            x = act(h, w, c)
            u, b = wg.pack_transpose(rand(c, k, 4, 4, scale=0.05), dt), torch.randn(k, generator=gen)
            digest.update(wg.conv_transpose4x4s2(x, u, b).float().numpy().tobytes())
            times[f"transposed {c}->{k} {w}x{h}"] = _median_ms(calls, wg.conv_transpose4x4s2, x, u, b)
        for c, k, h, w in ((32, 64, 720, 1280), (64, 128, 360, 640)):
            x = act(h, w, c)
            u, b = wg.pack_stride2(rand(k, c, 3, 3, scale=0.05), dt), torch.randn(k, generator=gen)
            digest.update(wg.conv3x3s2(x, u, b).float().numpy().tobytes())
            times[f"stride-2 {c}->{k} {w}x{h}"] = _median_ms(calls, wg.conv3x3s2, x, u, b)
    return times


def _frame(calls: int, digest, dtype: str | None) -> dict[str, float]:
    import numpy as np

    import fastdeblur

    img = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    model = fastdeblur.load_model("fastdeblur-default", device="cpu", dtype=dtype)
    digest.update(fastdeblur.deblur(img, model).tobytes())
    name = f"deblur() 1280x720, {str(next(model.parameters()).dtype).removeprefix('torch.')}"
    return {name: _median_ms(calls, fastdeblur.deblur, img, model)}


def _child(library: str, workload: str, calls: int) -> None:
    _load(library)
    digest = hashlib.sha256()
    if workload == "ops":
        times = _ops(calls, digest)
    else:
        times = _frame(calls, digest, "float32" if workload == "frame32" else None)
    print(json.dumps({"times": times, "sha256": digest.hexdigest()}))


def _run(library: str, workload: str, calls: int) -> dict:
    cmd = [sys.executable, __file__, "--child", library, "--workload", workload, "--calls", str(calls)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"{library}: the run failed (exit {r.returncode}):\n{r.stderr.strip()[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", nargs="?", help="build A: a copy of fastdeblur/_C*.so")
    p.add_argument("b", nargs="?", help="build B")
    p.add_argument("--workload", choices=("ops", "frame", "frame32"), default="ops")
    p.add_argument("--rounds", type=int, default=3, help="runs of each build, alternating (default 3)")
    p.add_argument("--calls", type=int, help="timed calls per item and run (default: 9 for ops, 5 for frames)")
    p.add_argument("--child", metavar="LIBRARY", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    calls = args.calls or (9 if args.workload == "ops" else 5)
    if args.child:
        _child(args.child, args.workload, calls)
        return 0
    if not (args.a and args.b) or args.rounds < 1 or calls < 1:
        p.error("give two libraries, A and B, and positive --rounds and --calls")
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    for i in range(args.rounds):
        for side in ("AB" if i % 2 == 0 else "BA"):
            res = _run(args.a if side == "A" else args.b, args.workload, calls)
            runs[side].append(res)
            print(f"round {i + 1} {side}: " + "  ".join(f"{v:.2f}" for v in res["times"].values()),
                  file=sys.stderr, flush=True)
    print(f"A: {args.a}\nB: {args.b}\n{args.workload}, {args.rounds} rounds of {calls} calls, alternating\n")
    print("| item | A ms (median per run) | B ms (median per run) | B / A (medians) |")
    print("|---|---|---|---|")
    for item in runs["A"][0]["times"]:
        a = [r["times"][item] for r in runs["A"]]
        b = [r["times"][item] for r in runs["B"]]
        span = lambda v: f"{min(v):.2f}-{max(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"  # noqa: E731
        print(f"| {item} | {span(a)} | {span(b)} | {statistics.median(b) / statistics.median(a):.3f} |")
    hashes = {side: {r["sha256"] for r in rs} for side, rs in runs.items()}
    same = len(hashes["A"] | hashes["B"]) == 1
    print(f"\noutputs: {'the same bits in every run' if same else 'DIFFERENT'} "
          f"(A {', '.join(sorted(h[:12] for h in hashes['A']))}; B {', '.join(sorted(h[:12] for h in hashes['B']))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
