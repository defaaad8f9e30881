// Winograd F(2x2, 3x3) convolution for CPUs with AVX-512 BF16 dot products (vdpbf16ps):
// 3x3, stride 1, padding 1, NHWC bfloat16 in and out, float32 accumulation, with the bias, the
// ReLU and a residual add fused into the output transform.
//
// Why: on CPUs without AMX, oneDNN's direct bf16 convolutions already run at the vector units'
// matrix peak, so only fewer multiplies make them faster. F(2x2, 3x3) computes each 2x2 output
// tile from a 4x4 input tile with 16 multiplies per input/output channel pair instead of 36.
//
// Per block of `kBlock` tiles of one tile row, all in cache (about 0.3 MB at 128 channels):
//   1. input transform V = B^T d B of each 4x4 tile (float32, rounded to bfloat16):
//      V[16][kBlock][C];
//   2. 16 GEMMs M[xi] = V[xi] U[xi] with U = G g G^T, transformed and packed once in Python
//      (fastdeblur/models/winograd.py: pack), register-blocked
//      MR x (16 * NV) with vdpbf16ps over input channel pairs: M[16][kBlock][K] in float32;
//   3. output transform Y = A^T M A, then + bias, ReLU, + residual, rounded to bfloat16.
// Tiles past the image's edge read zeros and their outputs are not stored.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <vector>

// gcc 12's AVX-512 headers start some intrinsics from an undefined register on purpose
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace fastdeblur {
namespace {

#define FD_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))

constexpr int64_t kBlock = 24;  // tiles per block: a multiple of every micro-kernel's MR (12, 6)

bool cpu_has_avx512bf16() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  return has;
}

FD_AVX512BF16 inline __m512 load_bf16(const at::BFloat16* p) {
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

FD_AVX512BF16 inline void store_bf16(at::BFloat16* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)_mm512_cvtneps_pbh(v));
}

// V[xi][m][c0:c0+16] of tile m from the 4x4 input tile whose top-left pixel is (y0, x0).
FD_AVX512BF16 void input_tile(const at::BFloat16* img, int64_t H, int64_t W, int64_t C, int64_t y0, int64_t x0,
                              at::BFloat16* V, int64_t vstride) {
  for (int64_t c0 = 0; c0 < C; c0 += 16) {
    __m512 d[4][4];
    for (int i = 0; i < 4; ++i) {
      const int64_t y = y0 + i;
      for (int j = 0; j < 4; ++j) {
        const int64_t x = x0 + j;
        d[i][j] = (y >= 0 && y < H && x >= 0 && x < W) ? load_bf16(img + (y * W + x) * C + c0) : _mm512_setzero_ps();
      }
    }
    // B^T d: rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
    __m512 t[4][4];
    for (int j = 0; j < 4; ++j) {
      t[0][j] = _mm512_sub_ps(d[0][j], d[2][j]);
      t[1][j] = _mm512_add_ps(d[1][j], d[2][j]);
      t[2][j] = _mm512_sub_ps(d[2][j], d[1][j]);
      t[3][j] = _mm512_sub_ps(d[1][j], d[3][j]);
    }
    // (B^T d) B: the same on columns
    for (int i = 0; i < 4; ++i) {
      at::BFloat16* v = V + (i * 4) * vstride + c0;
      store_bf16(v + 0 * vstride, _mm512_sub_ps(t[i][0], t[i][2]));
      store_bf16(v + 1 * vstride, _mm512_add_ps(t[i][1], t[i][2]));
      store_bf16(v + 2 * vstride, _mm512_sub_ps(t[i][2], t[i][1]));
      store_bf16(v + 3 * vstride, _mm512_sub_ps(t[i][1], t[i][3]));
    }
  }
}

// Mout[MR][NV*16] = A[MR][C] . B, with B packed as [C/2][NV*16][2] (input channel pairs).
template <int MR, int NV>
FD_AVX512BF16 void micro_kernel(const at::BFloat16* A, int64_t lda, const at::BFloat16* B, int64_t C2, float* Mout,
                                int64_t ldm) {
  __m512 acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t c2 = 0; c2 < C2; ++c2) {
    __m512bh b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = (__m512bh)_mm512_loadu_si512(B + (c2 * NV * 16 + v * 16) * 2);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      int32_t pair;
      std::memcpy(&pair, A + r * lda + 2 * c2, sizeof(pair));
      const __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], a, b[v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(Mout + r * ldm + v * 16, acc[r][v]);
}

template <int MR, int NV>
FD_AVX512BF16 void block_gemm(const at::BFloat16* V, const at::BFloat16* U, int64_t C, int64_t K, float* M) {
  constexpr int64_t NR = NV * 16;
  const int64_t C2 = C / 2, nblocks = K / NR;
  for (int64_t xi = 0; xi < 16; ++xi) {
    const at::BFloat16* Vx = V + xi * kBlock * C;
    const at::BFloat16* Ux = U + xi * C * K;
    float* Mx = M + xi * kBlock * K;
    for (int64_t nb = 0; nb < nblocks; ++nb) {
      const at::BFloat16* Ub = Ux + nb * C * NR;  // [C/2][NR][2]
      for (int64_t m0 = 0; m0 < kBlock; m0 += MR) micro_kernel<MR, NV>(Vx + m0 * C, C, Ub, C2, Mx + m0 * K + nb * NR, K);
    }
  }
}

// Y = A^T M A for tile m (2x2 outputs at (y0, x0)), + bias, ReLU, + residual, stored if inside.
FD_AVX512BF16 void output_tile(const float* M, int64_t mstride, const float* bias, bool relu,
                               const at::BFloat16* add, at::BFloat16* out, int64_t H, int64_t W, int64_t K, int64_t y0,
                               int64_t x0) {
  for (int64_t k0 = 0; k0 < K; k0 += 16) {
    __m512 m[4][4];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) m[i][j] = _mm512_loadu_ps(M + (i * 4 + j) * mstride + k0);
    // A^T m: rows (m0 + m1 + m2, m1 - m2 - m3)
    __m512 s[2][4];
    for (int j = 0; j < 4; ++j) {
      s[0][j] = _mm512_add_ps(_mm512_add_ps(m[0][j], m[1][j]), m[2][j]);
      s[1][j] = _mm512_sub_ps(_mm512_sub_ps(m[1][j], m[2][j]), m[3][j]);
    }
    const __m512 b = _mm512_loadu_ps(bias + k0);
    for (int i = 0; i < 2; ++i) {
      const int64_t y = y0 + i;
      if (y >= H) break;
      __m512 o[2] = {_mm512_add_ps(_mm512_add_ps(s[i][0], s[i][1]), s[i][2]),
                     _mm512_sub_ps(_mm512_sub_ps(s[i][1], s[i][2]), s[i][3])};
      for (int j = 0; j < 2; ++j) {
        const int64_t x = x0 + j;
        if (x >= W) break;
        __m512 v = _mm512_add_ps(o[j], b);
        if (relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
        const int64_t off = (y * W + x) * K + k0;
        if (add) v = _mm512_add_ps(v, load_bf16(add + off));
        store_bf16(out + off, v);
      }
    }
  }
}

template <int MR, int NV>
FD_AVX512BF16 void conv_blocks(const at::BFloat16* x, const at::BFloat16* U, const float* bias, bool relu,
                               const at::BFloat16* add, at::BFloat16* out, int64_t N, int64_t H, int64_t W, int64_t C,
                               int64_t K, int64_t begin, int64_t end) {
  const int64_t th = (H + 1) / 2, tw = (W + 1) / 2, bpr = (tw + kBlock - 1) / kBlock;
  std::vector<at::BFloat16> V(16 * kBlock * C);
  std::vector<float> M(16 * kBlock * K);
  for (int64_t blk = begin; blk < end; ++blk) {
    const int64_t n = blk / (th * bpr), ti = (blk / bpr) % th, t0 = (blk % bpr) * kBlock;
    const int64_t tn = std::min(kBlock, tw - t0);
    const at::BFloat16* img = x + n * H * W * C;
    for (int64_t m = 0; m < kBlock; ++m) {
      if (m < tn) {
        input_tile(img, H, W, C, 2 * ti - 1, 2 * (t0 + m) - 1, V.data() + m * C, kBlock * C);
      } else {  // past the row's last tile: zeros (computed, never stored)
        for (int64_t xi = 0; xi < 16; ++xi) std::memset(V.data() + (xi * kBlock + m) * C, 0, C * sizeof(at::BFloat16));
      }
    }
    block_gemm<MR, NV>(V.data(), U, C, K, M.data());
    const at::BFloat16* a = add ? add + n * H * W * K : nullptr;
    at::BFloat16* o = out + n * H * W * K;
    for (int64_t m = 0; m < tn; ++m)
      output_tile(M.data() + m * K, kBlock * K, bias, relu, a, o, H, W, K, 2 * ti, 2 * (t0 + m));
  }
}

// x [N, H, W, C] (NHWC memory: a contiguous tensor of that shape, or a channels_last [N, C, H, W]
// view of one); the result has x's form. u: winograd.pack's [16, K/NR, C/2, NR, 2] bfloat16.
at::Tensor winograd_conv3x3(const at::Tensor& x, const at::Tensor& u, const at::Tensor& bias, bool relu,
                            const std::optional<at::Tensor>& add) {
  TORCH_CHECK(cpu_has_avx512bf16(), "winograd_conv3x3 needs a CPU with AVX512-BF16");
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kBFloat16 && x.dim() == 4,
              "winograd_conv3x3: x must be a 4-D bfloat16 CPU tensor, got ", x.scalar_type(), " ", x.sizes());
  TORCH_CHECK(u.scalar_type() == at::kBFloat16 && u.dim() == 5 && u.size(0) == 16 && u.size(4) == 2 &&
                  u.is_contiguous(),
              "winograd_conv3x3: u must be the contiguous [16, K/NR, C/2, NR, 2] bfloat16 tensor of "
              "fastdeblur.models.winograd.pack, got ",
              u.sizes());
  const int64_t NR = u.size(3), C = 2 * u.size(2), K = u.size(1) * NR;
  TORCH_CHECK(NR == 32 || NR == 64, "winograd_conv3x3: unsupported register block ", NR);
  TORCH_CHECK(C % 16 == 0, "winograd_conv3x3: input channels must be a multiple of 16, got ", C);
  TORCH_CHECK(bias.scalar_type() == at::kFloat && bias.is_contiguous() && bias.numel() == K,
              "winograd_conv3x3: bias must be ", K, " contiguous float32 values");
  // NHWC views: [N, C, H, W] channels_last is accepted as is (the oneDNN model's view).
  const bool nchw_view = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous() && x.size(1) == C;
  const at::Tensor xh = nchw_view ? x.permute({0, 2, 3, 1}) : x;
  TORCH_CHECK(xh.is_contiguous() && xh.size(3) == C, "winograd_conv3x3: x must be NHWC memory with ", C,
              " channels, got sizes ", x.sizes(), " strides ", x.strides());
  const int64_t N = xh.size(0), H = xh.size(1), W = xh.size(2);
  at::Tensor out = at::empty({N, H, W, K}, xh.options());
  const at::BFloat16* a = nullptr;
  at::Tensor addh;
  if (add.has_value()) {
    addh = (add->dim() == 4 && add->is_contiguous(at::MemoryFormat::ChannelsLast) && !add->is_contiguous())
               ? add->permute({0, 2, 3, 1})
               : *add;
    TORCH_CHECK(addh.scalar_type() == at::kBFloat16 && addh.is_contiguous() &&
                    addh.sizes() == at::IntArrayRef({N, H, W, K}),
                "winograd_conv3x3: add must be bfloat16 NHWC memory of the output's shape");
    a = addh.const_data_ptr<at::BFloat16>();
  }
  const int64_t th = (H + 1) / 2, tw = (W + 1) / 2, blocks = N * th * ((tw + kBlock - 1) / kBlock);
  const at::BFloat16* xp = xh.const_data_ptr<at::BFloat16>();
  const at::BFloat16* up = u.const_data_ptr<at::BFloat16>();
  const float* bp = bias.const_data_ptr<float>();
  at::BFloat16* op = out.mutable_data_ptr<at::BFloat16>();
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    if (NR == 64)
      conv_blocks<6, 4>(xp, up, bp, relu, a, op, N, H, W, C, K, begin, end);
    else
      conv_blocks<12, 2>(xp, up, bp, relu, a, op, N, H, W, C, K, begin, end);
  });
  return nchw_view ? out.permute({0, 3, 1, 2}) : out;
}

bool winograd_available() { return cpu_has_avx512bf16(); }

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastdeblur, m) {
  // 3x3 stride-1 padding-1 convolution by Winograd F(2x2, 3x3), NHWC bfloat16, CPUs with
  // AVX512-BF16 only (winograd_available()): relu?(x * w + bias) [+ add].
  m.def("winograd_conv3x3(Tensor x, Tensor u, Tensor bias, bool relu, Tensor? add=None) -> Tensor");
  m.def("winograd_available() -> bool", &winograd_available);
}

TORCH_LIBRARY_IMPL(fastdeblur, CPU, m) { m.impl("winograd_conv3x3", &winograd_conv3x3); }

}  // namespace fastdeblur
