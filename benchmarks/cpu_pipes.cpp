// Which operations an x86 core with AVX512-BF16 can issue beside a stream of vdpbf16ps (the
// bfloat16 Winograd kernel's GEMM, csrc/cpu/winograd_gemm.h) without slowing it: the question of
// whether the kernel's transforms (adds, bf16 conversions, loads, stores, a few FMAs) can hide
// under its GEMM. Each loop iteration runs 12 independent vdpbf16ps (more chains than its
// latency) plus 6 or 12 operations of one kind on registers the dot products do not touch; the
// table gives core cycles per iteration, and what each added operation costs in dot-product
// cycles. The core clock comes from a chain of dependent scalar adds (one a cycle).
//
//   g++ -O2 -mavx512f -mavx512bf16 -mavx512bw -mavx512vl -o /tmp/cpu_pipes benchmarks/cpu_pipes.cpp
//   /tmp/cpu_pipes
//
// Results: benchmarks/RESULTS.md (the twenty-seventh session's CPU section).
#include <chrono>
#include <cstdio>

namespace {

alignas(64) float scratch[1024];

#define DP12                                                                                          \
  "vdpbf16ps %%zmm30, %%zmm31, %%zmm0\n vdpbf16ps %%zmm30, %%zmm31, %%zmm1\n"                         \
  "vdpbf16ps %%zmm30, %%zmm31, %%zmm2\n vdpbf16ps %%zmm30, %%zmm31, %%zmm3\n"                         \
  "vdpbf16ps %%zmm30, %%zmm31, %%zmm4\n vdpbf16ps %%zmm30, %%zmm31, %%zmm5\n"                         \
  "vdpbf16ps %%zmm30, %%zmm31, %%zmm6\n vdpbf16ps %%zmm30, %%zmm31, %%zmm7\n"                         \
  "vdpbf16ps %%zmm30, %%zmm31, %%zmm8\n vdpbf16ps %%zmm30, %%zmm31, %%zmm9\n"                         \
  "vdpbf16ps %%zmm30, %%zmm31, %%zmm10\n vdpbf16ps %%zmm30, %%zmm31, %%zmm11\n"
#define SIX(op, a, b) op a "12" b op a "13" b op a "14" b op a "15" b op a "16" b op a "17" b
#define ADD6 SIX("vaddps %%zmm30, %%zmm31, ", "%%zmm", "\n")
#define FMA6 SIX("vfmadd231ps %%zmm30, %%zmm31, ", "%%zmm", "\n")
#define CVT6 SIX("vcvtneps2bf16 %%zmm30, ", "%%ymm", "\n")
#define CVT2_6 SIX("vcvtne2ps2bf16 %%zmm30, %%zmm31, ", "%%zmm", "\n")
#define WIDEN6 SIX("vpmovzxwd %%ymm30, ", "%%zmm", "\n")
#define SHIFT6 SIX("vpslld $16, %%zmm31, ", "%%zmm", "\n")
#define LD6                                                                                           \
  "vmovups (%0), %%zmm12\n vmovups 64(%0), %%zmm13\n vmovups 128(%0), %%zmm14\n"                      \
  "vmovups 192(%0), %%zmm15\n vmovups 256(%0), %%zmm16\n vmovups 320(%0), %%zmm17\n"
#define ST512_6                                                                                       \
  "vmovups %%zmm30, (%0)\n vmovups %%zmm31, 64(%0)\n vmovups %%zmm30, 128(%0)\n"                      \
  "vmovups %%zmm31, 192(%0)\n vmovups %%zmm30, 256(%0)\n vmovups %%zmm31, 320(%0)\n"
#define ST256_6                                                                                       \
  "vmovups %%ymm30, (%0)\n vmovups %%ymm31, 64(%0)\n vmovups %%ymm30, 128(%0)\n"                      \
  "vmovups %%ymm31, 192(%0)\n vmovups %%ymm30, 256(%0)\n vmovups %%ymm31, 320(%0)\n"
#define CLOBBERS                                                                                      \
  "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",  \
      "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17"

// seconds per iteration of one asm body
#define BENCH(name, extra, body)                                                                      \
  __attribute__((noinline, target("avx512f,avx512bw,avx512vl,avx512bf16"))) double name(long n) {     \
    const auto t = std::chrono::steady_clock::now();                                                  \
    for (long i = 0; i < n; ++i) asm volatile(body : : "r"(scratch) : CLOBBERS);                      \
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count() / n;           \
  }                                                                                                   \
  constexpr int name##_extra = extra;

BENCH(dp_only, 0, DP12)
BENCH(dp_add6, 6, DP12 ADD6)
BENCH(dp_add12, 12, DP12 ADD6 ADD6)
BENCH(dp_fma6, 6, DP12 FMA6)
BENCH(dp_cvt6, 6, DP12 CVT6)
BENCH(dp_cvt2_6, 6, DP12 CVT2_6)
BENCH(dp_widen3_shift3, 6, DP12 "vpmovzxwd %%ymm30, %%zmm12\n vpmovzxwd %%ymm31, %%zmm13\n vpmovzxwd %%ymm30, %%zmm14\n vpslld $16, %%zmm31, %%zmm15\n vpslld $16, %%zmm30, %%zmm16\n vpslld $16, %%zmm31, %%zmm17\n")
BENCH(dp_add6_cvt6, 12, DP12 ADD6 CVT6)
BENCH(dp_ld512_6, 6, DP12 LD6)
BENCH(dp_st512_6, 6, DP12 ST512_6)
BENCH(dp_st256_6, 6, DP12 ST256_6)
BENCH(add12, 12, ADD6 ADD6)
BENCH(cvt12, 12, CVT6 CVT6)
BENCH(widen6_shift6, 12, WIDEN6 SHIFT6)

// core cycles a second: a chain of dependent adds retires one a cycle
double core_hz() {
  const long n = 300000000;
  long x = 0;
  const auto t = std::chrono::steady_clock::now();
  for (long i = 0; i < n; ++i) asm volatile("add $1, %0" : "+r"(x));
  return n / std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

int main() {
  const double hz = core_hz();
  const long n = 20000000;
  struct Row {
    const char* name;
    double (*run)(long);
    int extra;
  } rows[] = {
      {"12 vdpbf16ps", dp_only, dp_only_extra},
      {"  + 6 vaddps", dp_add6, dp_add6_extra},
      {"  + 12 vaddps", dp_add12, dp_add12_extra},
      {"  + 6 vfmadd231ps", dp_fma6, dp_fma6_extra},
      {"  + 6 vcvtneps2bf16", dp_cvt6, dp_cvt6_extra},
      {"  + 6 vcvtne2ps2bf16", dp_cvt2_6, dp_cvt2_6_extra},
      {"  + 3 vpmovzxwd, 3 vpslld", dp_widen3_shift3, dp_widen3_shift3_extra},
      {"  + 6 vaddps, 6 vcvtneps2bf16", dp_add6_cvt6, dp_add6_cvt6_extra},
      {"  + 6 512-bit loads", dp_ld512_6, dp_ld512_6_extra},
      {"  + 6 512-bit stores", dp_st512_6, dp_st512_6_extra},
      {"  + 6 256-bit stores", dp_st256_6, dp_st256_6_extra},
      {"12 vaddps alone", add12, add12_extra},
      {"12 vcvtneps2bf16 alone", cvt12, cvt12_extra},
      {"6 vpmovzxwd, 6 vpslld alone", widen6_shift6, widen6_shift6_extra},
  };
  for (const Row& r : rows) r.run(n / 10);  // warm up
  const double base = dp_only(n) * hz;
  std::printf("core clock %.2f GHz\n%-32s %8s %18s\n", hz / 1e9, "iteration", "cycles", "per added op");
  for (const Row& r : rows) {
    const double c = r.run(n) * hz;
    if (r.run == dp_only || r.name[0] != ' ')
      std::printf("%-32s %8.2f\n", r.name, c);
    else
      std::printf("%-32s %8.2f %+17.2f\n", r.name, c, (c - base) / r.extra);
  }
}
