#!/usr/bin/env bash
# One prepared GPU check, sized for a single short device call (under 8 minutes on an H100):
# build the extension with its CUDA kernels, run the GPU benchmarks and print their table, choose
# the Triton layers end to end, then run the GPU tests. Needs the authors' DMPHN(1-2-4) files and
# a few frames: FASTDEBLUR_DATA, or the .gpudata folder that benchmarks/pack_gpu_data.sh makes
# (the shared data does not travel). Set FASTDEBLUR_COMMIT to the commit that runs.
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]
# GPU_CHECK_TUNE=1: first sweep the kernels' tiles, conv3x3/convT and the one-kernel residual block
#   (benchmarks/tune_kernels.py --write, about 5 minutes), so the tests and benchmarks below run
#   the winners; the table comes back as OUT_DIR/_gpu_tiles.py.
# GPU_CHECK_QUICK=1: skip the Triton kernel grid tests and the per-op benchmarks.
# GPU_CHECK_COMPILE=0: skip the torch.compile baseline.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
[ -d .gpudata ] && export FASTDEBLUR_DATA=${FASTDEBLUR_DATA:-$PWD/.gpudata}
export FASTDEBLUR_HOME=$(mktemp -d)
[ -n "${FASTDEBLUR_DATA:-}" ] && export FASTDEBLUR_OFFICIAL_URL=$(python3 -c "import pathlib,sys; print(pathlib.Path(sys.argv[1],'dmphn_official').resolve().as_uri())" "$FASTDEBLUR_DATA")
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-16}

echo "== machine"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
echo "commit ${FASTDEBLUR_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)} (set FASTDEBLUR_COMMIT: a copied .git may be stale)"

echo "== build (extension with CUDA kernels)"
t0=$(date +%s)
FASTDEBLUR_FORCE_CUDA=1 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . 2>&1 | tail -3
python3 -c "import fastdeblur as f; print('has_ext', f.has_ext(), 'has_cuda_ext', f.has_cuda_ext())"
echo "build took $(( $(date +%s) - t0 )) s"

if [ "${GPU_CHECK_TUNE:-0}" = 1 ]; then
  echo "== tile sweep"
  timeout 420 python3 benchmarks/tune_kernels.py --write --json "$out/tune.json" --budget-s "${TUNE_BUDGET_S:-150}" \
    --rb-budget-s "${TUNE_RB_BUDGET_S:-90}" 2>&1 \
    | tee "$out/tune.md"
  [ -f kernels/_gpu_tiles.py ] && cp kernels/_gpu_tiles.py "$out/"
fi

# the benchmarks run before the tests: when a device call runs short, the table is what must come back
# (each benchmark also checks its output against the float32 reference, 40 dB in fp16)
echo "== GPU benchmarks"
export FASTDEBLUR_BENCH_DEVICES=cuda
benches="benchmarks/bench_end_to_end.py benchmarks/bench_kernels.py"
[ "${GPU_CHECK_QUICK:-0}" = 1 ] || benches="$benches benchmarks/bench_ops.py"
timeout 240 python3 -m pytest -q -p no:cacheprovider $benches \
  -k "not compiled and not reference_fp32 and not fastdeblur_half" -o addopts="" --benchmark-only --benchmark-json="$out/bench.json" 2>&1 | tee "$out/bench.log" | tail -5
python3 benchmarks/summarize.py "$out/bench.json" --peak-tflops "${PEAK_TFLOPS:-989}" | tee "$out/table.md"

echo "== which layers run on Triton: end to end, each layer kind switched (benchmarks/layer_choice.py)"
timeout 200 python3 benchmarks/layer_choice.py 2>&1 | tee "$out/layers.md"

echo "== first calls with an empty Triton cache: what a new user waits for (benchmarks/first_call.py)"
# (before the tests, which can take the rest of a device call; its own cache keeps it cold)
timeout 150 python3 benchmarks/first_call.py --device cuda --sizes 720x1280,719x1279 2>&1 | tee "$out/first_call.md"

echo "== GPU tests"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_ext_ops.py -k cuda -o addopts="" 2>&1 | tail -4
# test_fused_model's toy models compiled a Triton variant per small shape (minutes on a GPU) until
# the kernels stopped specializing on sizes (do_not_specialize); they still compile one per channel
# count and dtype, so the quick check keeps only its real-crop test, plus the test that new frame
# sizes compile nothing
kexpr=""; [ "${GPU_CHECK_QUICK:-0}" = 1 ] && kexpr="real_crop or test_gpu"
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_fused_model.py tests/test_triton_kernels.py \
  -o addopts="" -k "${kexpr:+($kexpr) and }not test_triton_kernels or compile_nothing_new" \
  2>&1 | tee "$out/tests.log" | tail -8
# the kernel grid compiles one Triton variant per channel count, stride and dtype (seconds each):
# bf16, which the CPU interpreter cannot check, plus one fp16 slice; CI covers fp32/fp16 numerics
[ "${GPU_CHECK_QUICK:-0}" = 1 ] || timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_triton_kernels.py \
  -o addopts="" -k "bfloat16 or (float16 and 32-32) or compile" 2>&1 | tail -8

echo "== torch.compile baseline (compiling takes a minute or two; GPU_CHECK_COMPILE=0 skips it)"
[ "${GPU_CHECK_COMPILE:-1}" = 1 ] && FASTDEBLUR_BENCH_COMPILE=1 timeout 180 python3 -m pytest -q -p no:cacheprovider benchmarks/bench_end_to_end.py \
  -k compiled -o addopts="" --benchmark-only --benchmark-json="$out/compiled.json" 2>&1 | tail -3
[ -s "$out/compiled.json" ] && [ "${GPU_CHECK_COMPILE:-1}" = 1 ] && python3 benchmarks/summarize.py "$out/compiled.json" --peak-tflops "${PEAK_TFLOPS:-989}"

echo "== GPU memory, 3840x2160 and 1280x720"
timeout 120 python3 benchmarks/memory.py --device cuda --sizes 2160x3840,720x1280 --dtype float16 2>&1 | tee "$out/memory.md"

echo "== command-line folder throughput, 24 720p frames (the default model, then a 9 ms stand-in for it)"
timeout 90 python3 benchmarks/cli_throughput.py --device cuda --repeat 2 2>&1 | tail -1
timeout 60 python3 benchmarks/cli_throughput.py --stand-in 9 --repeat 2 2>&1 | tail -1

echo "== video throughput, 60 720p H.264 frames with sound (the default model, then a 9 ms stand-in for it)"
if python3 -c "import av" 2>/dev/null; then
  timeout 120 python3 benchmarks/video_throughput.py --device cuda --frames 60 --repeat 2 2>&1 | tail -1
  timeout 60 python3 benchmarks/video_throughput.py --stand-in 9 --frames 60 --repeat 2 2>&1 | tail -1
else
  echo "PyAV is not installed here: skipped"
fi
