// 3x3 stride-1 padding-1 convolutions with at most 4 output channels on the CPU (the decoders'
// last layer, 32 -> 3 channels), NHWC, bias fused: bfloat16 with AVX-512 BF16 dot products,
// float32 with AVX-512 or AVX2+FMA.
//
// Why: oneDNN's kernels spend as long on 3 output channels as on 16 (21 ms for a 720p 32 -> 3
// layer in bfloat16 on a 2-core Zen 4, 72 GFLOP/s), so that one layer cost as much as a 32 -> 64
// one. Here the dot products run along the input channels (one vector step per 32 bfloat16 or 16
// float32 channels on AVX-512, 8 on AVX2), 4 pixels x 4 output channels at a time in 16
// accumulators (2 pixels and 8 on AVX2), and one transposing reduction turns them into the
// pixels' outputs.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "cpu_isa.h"  // FD_CPU_X86 (elsewhere the kernel never runs), cpu_isa::best
#include "nhwc.h"

#include <algorithm>
#include <cstdint>

namespace fastdeblur {
namespace {

#if FD_CPU_X86
// bfloat16, AVX-512 BF16: vdpbf16ps takes 32 channels (16 pairs) of a pixel and of a weight row.
namespace sk_bf16 {
#define FD_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#include "vec_f32_avx512.h"
#include "conv_small_k_avx512.h"
using T = at::BFloat16;
constexpr int64_t kChunk = 32;
template <int K>
constexpr int kGroups = 1;  // 4 pixels a step (8 spilled: 2x slower)
using WVec = __m512bh;
FD_TARGET inline WVec vloadw(const T* p) { return (__m512bh)_mm512_loadu_si512(p); }
FD_TARGET inline Vec vdot(Vec acc, WVec a, WVec b) { return _mm512_dpbf16_ps(acc, a, b); }
FD_TARGET inline void store_k(T* p, Vec r, int np, int K) {
  _mm256_mask_storeu_epi16(p, static_cast<__mmask16>((1u << (np * K)) - 1),
                           (__m256i)_mm512_cvtneps_pbh(compress_k(r, np, K)));
}
#include "conv_small_k_body.h"
#undef FD_TARGET
}  // namespace sk_bf16

// float32, AVX-512: 16 channels per FMA.
namespace sk_f32 {
#define FD_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#include "vec_f32_avx512.h"
#include "conv_small_k_avx512.h"
using T = float;
constexpr int64_t kChunk = 16;
template <int K>
constexpr int kGroups = 1;
using WVec = __m512;
FD_TARGET inline WVec vloadw(const T* p) { return _mm512_loadu_ps(p); }
FD_TARGET inline Vec vdot(Vec acc, WVec a, WVec b) { return _mm512_fmadd_ps(a, b, acc); }
FD_TARGET inline void store_k(T* p, Vec r, int np, int K) {
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << (np * K)) - 1), compress_k(r, np, K));
}
#include "conv_small_k_body.h"
#undef FD_TARGET
}  // namespace sk_f32

// AVX2, float32: 2 pixels x 4 output channels in 8 accumulators (of 16 registers).
namespace sk_avx2 {
#define FD_TARGET __attribute__((target("avx2,fma")))
#include "vec_f32_avx2.h"
using T = float;
constexpr int64_t kChunk = 8;
// up to 3 outputs, 4 pixels a step in two groups of 2 (3 outputs: 12 accumulators, 3 weights and
// the input in 16 registers): the tap setup and weight loads shared by twice the pixels, 1.3x
// faster than 2 pixels (a 720p 32 -> 3 layer, 18.3-18.8 -> 14.3-14.5 ms); 4 outputs would spill
template <int K>
constexpr int kGroups = K <= 3 ? 2 : 1;
using WVec = __m256;
FD_TARGET inline WVec vloadw(const T* p) { return _mm256_loadu_ps(p); }
FD_TARGET inline Vec vdot(Vec acc, WVec a, WVec b) { return _mm256_fmadd_ps(a, b, acc); }
// lane i = the sum of v[i]'s 8 lanes: two rounds of hadd give each 128-bit half's sums of four
// vectors; the halves are then added
FD_TARGET inline Vec reduce(const Vec* v) {
  const Vec q0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const Vec q1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20), _mm256_permute2f128_ps(q0, q1, 0x31));
}
FD_TARGET inline void store_k(T* p, Vec r, int np, int K) {
  alignas(32) int idx[8], mask[8];
  for (int j = 0; j < 8; ++j) {
    idx[j] = j < 2 * K ? (j / K) * 4 + j % K : 0;
    mask[j] = j < np * K ? -1 : 0;
  }
  const __m256i m = _mm256_load_si256(reinterpret_cast<const __m256i*>(mask));
  _mm256_maskstore_ps(p, m, _mm256_permutevar8x32_ps(r, _mm256_load_si256(reinterpret_cast<const __m256i*>(idx))));
}
#include "conv_small_k_body.h"
#undef FD_TARGET
}  // namespace sk_avx2

// The kernel for dtype here: 2 bfloat16 AVX-512, 1 float32 AVX-512, 3 float32 AVX2, 0 none
// (ATEN_CPU_CAPABILITY limits it as it limits torch's own kernels: cpu_isa.h).
int small_k_kernel(at::ScalarType dtype) {
  using namespace cpu_isa;
  const Isa isa = best();
  if (dtype == at::kBFloat16) return isa >= kAvx512Bf16 ? 2 : 0;
  if (dtype != at::kFloat) return 0;
  return isa >= kAvx512 ? 1 : isa >= kAvx2 ? 3 : 0;
}
#endif  // FD_CPU_X86

// Whether the kernel runs C -> K channels in `dtype` here: K in 1..4, C a multiple of the vector
// step (32 in bfloat16 on AVX512-BF16; 16 in float32 on AVX-512, 8 on AVX2 with FMA).
bool conv3x3_small_k_runs(at::ScalarType dtype, int64_t C, int64_t K) {
#if FD_CPU_X86
  if (K < 1 || K > 4 || C <= 0) return false;
  switch (small_k_kernel(dtype)) {
    case 2: return C % 32 == 0;
    case 1: return C % 16 == 0;
    case 3: return C % 8 == 0;
    default: return false;
  }
#else
  (void)dtype, (void)C, (void)K;
  return false;
#endif
}

// x: [N, H, W, C] NHWC memory (a contiguous tensor, or a channels_last [N, C, H, W] view of
// one); w: [9, 4, C] in x's dtype (fastdeblur.models.small_k.pack); bias: K float32 values.
// Returns [N, H, W, K] in x's form.
at::Tensor conv3x3_small_k(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) {
  const auto dt = x.scalar_type();
  TORCH_CHECK(x.device().is_cpu() && (dt == at::kBFloat16 || dt == at::kFloat) && x.dim() == 4,
              "conv3x3_small_k: x must be a 4-D bfloat16 or float32 CPU tensor, got ", dt, " ", x.sizes());
  TORCH_CHECK(w.scalar_type() == dt && w.dim() == 3 && w.size(0) == 9 && w.size(1) == 4 && w.is_contiguous(),
              "conv3x3_small_k: w must be the contiguous [9, 4, C] ", dt,
              " tensor of fastdeblur.models.small_k.pack, got ", w.scalar_type(), " ", w.sizes());
  const int64_t C = w.size(2), K = bias.numel();
  TORCH_CHECK(bias.scalar_type() == at::kFloat && bias.is_contiguous() && K >= 1 && K <= 4,
              "conv3x3_small_k: bias must be 1 to 4 contiguous float32 values, got ", bias.scalar_type(), " ",
              bias.sizes());
  TORCH_CHECK(conv3x3_small_k_runs(dt, C, K), "conv3x3_small_k does not run ", dt, " with ", C, " -> ", K,
              " channels on this CPU");
  const at::Tensor xh = nhwc_input(x, C);  // channels_last [N, C, H, W] is accepted as is
  TORCH_CHECK(xh.is_contiguous() && xh.size(3) == C, "conv3x3_small_k: x must be NHWC memory with ", C,
              " channels, got sizes ", x.sizes(), " strides ", x.strides());
  const int64_t N = xh.size(0), H = xh.size(1), W = xh.size(2);
  at::Tensor out = at::empty({N, H, W, K}, xh.options());
#if FD_CPU_X86
  const float* bp = bias.const_data_ptr<float>();
  auto go = [&](auto row, const auto* xp, const auto* wp, auto* op) {
    at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t n = r / H;
        row(xp + n * H * W * C, wp, bp, op + n * H * W * K, H, W, C, r % H);
      }
    });
  };
  // the row function for K output channels, of the instruction set's namespace NS
#define FD_SMALL_K_ROWS(NS) {NS::small_k_row<1>, NS::small_k_row<2>, NS::small_k_row<3>, NS::small_k_row<4>}
  const int kernel = small_k_kernel(dt);
  if (kernel == 2) {
    using Row = void (*)(const at::BFloat16*, const at::BFloat16*, const float*, at::BFloat16*, int64_t, int64_t,
                         int64_t, int64_t);
    const Row rows[4] = FD_SMALL_K_ROWS(sk_bf16);
    go(rows[K - 1], xh.const_data_ptr<at::BFloat16>(), w.const_data_ptr<at::BFloat16>(),
       out.mutable_data_ptr<at::BFloat16>());
  } else {
    using Row = void (*)(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t);
    const Row avx512[4] = FD_SMALL_K_ROWS(sk_f32), avx2[4] = FD_SMALL_K_ROWS(sk_avx2);
    go((kernel == 1 ? avx512 : avx2)[K - 1], xh.const_data_ptr<float>(), w.const_data_ptr<float>(),
       out.mutable_data_ptr<float>());
  }
#undef FD_SMALL_K_ROWS
#endif
  return xh.is_same(x) ? out : out.permute({0, 3, 1, 2});
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastdeblur, m) {
  // 3x3 stride-1 padding-1 convolution with 1-4 output channels, NHWC bfloat16 (AVX512-BF16) or
  // float32 (AVX-512 or AVX2+FMA): x * w + bias
  m.def("conv3x3_small_k(Tensor x, Tensor w, Tensor bias) -> Tensor");
  // whether it runs in_channels -> out_channels in dtype on this CPU
  m.def("conv3x3_small_k_runs(ScalarType dtype, int in_channels, int out_channels) -> bool", &conv3x3_small_k_runs);
}

TORCH_LIBRARY_IMPL(fastdeblur, CPU, m) { m.impl("conv3x3_small_k", &conv3x3_small_k); }

}  // namespace fastdeblur
