"""Print pytest-benchmark JSON results as a markdown table (median ms, GFLOP/s, % of peak).

Usage: python benchmarks/summarize.py results.json [--peak-tflops 989]
(H100 SXM dense: 989 TFLOP/s fp16/bf16, 495 tf32, 67 fp32; H200 the same compute.)
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("json")
    p.add_argument("--peak-tflops", type=float, default=None, help="the card's peak for the %% column")
    a = p.parse_args()
    data = json.load(open(a.json))
    rows = []
    for b in data["benchmarks"]:
        e = b.get("extra_info", {})
        calls = e.get("calls_per_round", 1)  # rounds of several back-to-back calls: figures per call
        median_ms = b["stats"]["median"] * 1e3 / calls
        name = b["name"].split("[", 1)[-1].rstrip("]")
        gf = e.get("gflop_per_s")
        pct = f"{100 * gf / 1e3 / a.peak_tflops:.1f}" if gf and a.peak_tflops else "-"
        rows.append((b["group"] or b["fullname"].split("::")[0], name, e.get("device", "?"), e.get("dtype", "?"),
                     f"{median_ms:.3f}", f"{b['stats']['iqr'] * 1e3 / calls:.3f}",
                     f"{gf / 1e3:.1f}" if gf else "-", pct,
                     e.get("psnr_vs_fp32", "-")))
    print("| bench | case | device | dtype | median ms | IQR ms | TFLOP/s | % peak | PSNR vs fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(map(str, r)) + " |")
    if data["benchmarks"]:
        e = data["benchmarks"][0].get("extra_info", {})
        print(f"\ntorch {e.get('torch')}, triton {e.get('triton')}, fastdeblur {e.get('fastdeblur')}, "
              f"commit {e.get('commit')}, {data.get('datetime', '')}")


if __name__ == "__main__":
    main()
