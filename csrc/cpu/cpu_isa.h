// Which instruction sets the extension's hand-written x86 CPU kernels (winograd.cpp,
// conv_small_k.cpp) may use here: the CPU's, probed once, limited by ATEN_CPU_CAPABILITY as it
// limits torch's own kernels ("avx2": AVX2 at most, "default": none), so that the tests run the
// AVX2 kernels on AVX-512 machines. x86-64 with GCC or Clang (__builtin_cpu_supports); elsewhere
// none.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>

// FD_CPU_X86: x86-64 with GCC or Clang (target attributes, __builtin_cpu_supports, the
// intrinsics); elsewhere (ARM, MSVC) the kernels' ops are registered but report that they do
// not run, so the Python side never calls them.
// (-DFD_CPU_X86=0 builds the other branch on x86 too: a compile check.)
#ifndef FD_CPU_X86
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FD_CPU_X86 1
#else
#define FD_CPU_X86 0
#endif
#endif
#if FD_CPU_X86
#include <immintrin.h>
#endif

// gcc 12's AVX-512 headers start some intrinsics from an undefined register on purpose
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace fastdeblur {
namespace cpu_isa {

// Each includes the ones before it. kAvx2: AVX2 and FMA; kAvx512: AVX-512 F, BW, VL and DQ;
// kAvx512Bf16: that and AVX512-BF16.
enum Isa { kNone, kAvx2, kAvx512, kAvx512Bf16 };

inline Isa best() {
#if FD_CPU_X86
  static const Isa cpu = [] {
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    if (avx512) return __builtin_cpu_supports("avx512bf16") ? kAvx512Bf16 : kAvx512;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? kAvx2 : kNone;
  }();
  const char* cap = std::getenv("ATEN_CPU_CAPABILITY");  // read at every call: the tests change it
  if (cap != nullptr && std::strcmp(cap, "default") == 0) return kNone;
  if (cap != nullptr && std::strcmp(cap, "avx2") == 0) return std::min(cpu, kAvx2);
  return cpu;
#else
  return kNone;
#endif
}

}  // namespace cpu_isa
}  // namespace fastdeblur
