// 3x3 stride-1 padding-1 convolutions with at most 4 output channels on the CPU (the decoders'
// last layer, 32 -> 3 channels), NHWC, bias fused: bfloat16 with AVX-512 BF16 dot products,
// float32 with AVX-512.
//
// Why: oneDNN's kernels spend as long on 3 output channels as on 16 (21 ms for a 720p 32 -> 3
// layer in bfloat16 on a 2-core Zen 4, 72 GFLOP/s), so that one layer cost as much as a 32 -> 64
// one. Here the dot products run along the input channels (one vector step per 32 bfloat16 or 16
// float32 channels), 4 pixels x 4 output channels at a time in 16 accumulators, and one
// transposing reduction turns them into the 4 pixels' outputs.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FD_SMALL_K_X86 1
#include <immintrin.h>
#else
#define FD_SMALL_K_X86 0
#endif

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace fastdeblur {
namespace {

#if FD_SMALL_K_X86
bool small_k_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return has;
}
bool small_k_avx512_bf16() {
  static const bool has = small_k_avx512() && __builtin_cpu_supports("avx512bf16");
  return has;
}

namespace sk_bf16 {
#define FD_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
using T = at::BFloat16;
constexpr int64_t kChunk = 32;
using WVec = __m512bh;
FD_TARGET inline WVec vloadw(const T* p) { return (__m512bh)_mm512_loadu_si512(p); }
FD_TARGET inline __m512 vdot(__m512 acc, WVec a, WVec b) { return _mm512_dpbf16_ps(acc, a, b); }
FD_TARGET inline void vstore_n(T* p, __m512 v, int n) {
  _mm256_mask_storeu_epi16(p, static_cast<__mmask16>((1u << n) - 1), (__m256i)_mm512_cvtneps_pbh(v));
}
#include "conv_small_k_body.h"
#undef FD_TARGET
}  // namespace sk_bf16

namespace sk_f32 {
#define FD_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
using T = float;
constexpr int64_t kChunk = 16;
using WVec = __m512;
FD_TARGET inline WVec vloadw(const T* p) { return _mm512_loadu_ps(p); }
FD_TARGET inline __m512 vdot(__m512 acc, WVec a, WVec b) { return _mm512_fmadd_ps(a, b, acc); }
FD_TARGET inline void vstore_n(T* p, __m512 v, int n) {
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), v);
}
#include "conv_small_k_body.h"
#undef FD_TARGET
}  // namespace sk_f32
#endif  // FD_SMALL_K_X86

// Whether the kernel runs C -> K channels in `dtype` here: K in 1..4, C a multiple of the vector
// step (32 in bfloat16, 16 in float32), and the CPU's instructions. ATEN_CPU_CAPABILITY=avx2 or
// default turns it off, as it limits torch's own kernels to AVX2 or none.
bool conv3x3_small_k_runs(at::ScalarType dtype, int64_t C, int64_t K) {
#if FD_SMALL_K_X86
  const char* cap = std::getenv("ATEN_CPU_CAPABILITY");
  if (cap != nullptr && (std::strcmp(cap, "avx2") == 0 || std::strcmp(cap, "default") == 0)) return false;
  if (K < 1 || K > 4 || C <= 0) return false;
  if (dtype == at::kBFloat16) return small_k_avx512_bf16() && C % 32 == 0;
  if (dtype == at::kFloat) return small_k_avx512() && C % 16 == 0;
#endif
  (void)dtype, (void)C, (void)K;
  return false;
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
  const bool view = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous() && x.size(1) == C;
  const at::Tensor xh = view ? x.permute({0, 2, 3, 1}) : x;
  TORCH_CHECK(xh.is_contiguous() && xh.size(3) == C, "conv3x3_small_k: x must be NHWC memory with ", C,
              " channels, got sizes ", x.sizes(), " strides ", x.strides());
  const int64_t N = xh.size(0), H = xh.size(1), W = xh.size(2);
  at::Tensor out = at::empty({N, H, W, K}, xh.options());
#if FD_SMALL_K_X86
  const float* bp = bias.const_data_ptr<float>();
  auto go = [&](auto row, const auto* xp, const auto* wp, auto* op) {
    at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t n = r / H;
        row(xp + n * H * W * C, wp, bp, op + n * H * W * K, H, W, C, K, r % H);
      }
    });
  };
  if (dt == at::kBFloat16)
    go(sk_bf16::small_k_row, xh.const_data_ptr<at::BFloat16>(), w.const_data_ptr<at::BFloat16>(),
       out.mutable_data_ptr<at::BFloat16>());
  else
    go(sk_f32::small_k_row, xh.const_data_ptr<float>(), w.const_data_ptr<float>(), out.mutable_data_ptr<float>());
#endif
  return view ? out.permute({0, 3, 1, 2}) : out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastdeblur, m) {
  // 3x3 stride-1 padding-1 convolution with 1-4 output channels, NHWC bfloat16 (AVX512-BF16) or
  // float32 (AVX-512): x * w + bias
  m.def("conv3x3_small_k(Tensor x, Tensor w, Tensor bias) -> Tensor");
  // whether it runs in_channels -> out_channels in dtype on this CPU
  m.def("conv3x3_small_k_runs(ScalarType dtype, int in_channels, int out_channels) -> bool", &conv3x3_small_k_runs);
}

TORCH_LIBRARY_IMPL(fastdeblur, CPU, m) { m.impl("conv3x3_small_k", &conv3x3_small_k); }

}  // namespace fastdeblur
