// Winograd F(2x2, 3x3) to F(8x8, 3x3) convolutions on the CPU (3x3, stride 1, padding 1) and a
// Winograd 4x4 stride-2 transposed convolution: NHWC activations, float32 accumulation, with the
// bias, the ReLU and a residual add fused into the output transform. bfloat16 (F(4x4) and F(8x8)
// the complex ones) on CPUs with AVX-512 BF16 dot products (vdpbf16ps); float32 (the real F(4x4)
// and F(6x6)) with AVX-512 or AVX2+FMA.
//
// Why: on CPUs without AMX, oneDNN's direct convolutions already run at the vector units' peak,
// so only fewer multiplies make them faster. F(m x m, 3x3) computes each m x m output tile from an
// (m + 2) x (m + 2) input tile: 16 multiplies per input/output channel pair for m = 2, 36 for
// m = 4 and 64 for m = 6, instead of 36, 144 and 324. The real F(4x4)'s and F(6x6)'s larger
// transform coefficients amplify rounding (~1e-6 to 1e-5 of the values in float32, which runs
// F(6x6) by default), too much for bfloat16's 8-bit mantissa, so bfloat16 runs the complex
// F(4x4, 3x3) instead (points 0, +-1, +-i, infinity: coefficients 0 and +-1, 46 multiplies per
// 4x4 tile; winograd_body.h), whose rounding error is within F(2x2)'s, and by default the
// complex F(8x8, 3x3) (points 0, the 8th roots of unity, infinity: coefficients 0, +-1 and
// +-sqrt(1/2), 142 multiplies per 8x8 tile, 1.30x fewer again; error within F(2x2)'s too).
//
// The decoders' ConvTranspose2d(C, K, 4, stride=2, padding=1) runs on the same machinery: output
// row 2i + p takes input rows (i - 1, i) for p = 0 and (i, i + 1) for p = 1, so each row/column
// parity is a 2-tap correlation per side, computed as F(3x3, 2x2) (16 multiplies per 3x3 outputs
// instead of 36): a 5x5 input tile gives 8x8 positions and a 6x6 output block.
//
// Per block of MR tiles of one tile row (MR: the micro-kernel's rows, 4, 6 or 12), all in cache, with
// TN the input tile's side and NP the transformed tile's positions (Tiles below):
//   1. input transform V = B^T d B of each TN x TN tile (in float32, stored in the activation
//      type): V[NP][MR][C];
//   2. NP GEMMs M[xi] = V[xi] U[xi] with U = G g G^T, transformed and packed once in Python
//      (fastdeblur/models/winograd.py: pack), register-blocked MR x NR: M[NP][MR][K] in float32;
//   3. output transform Y = A^T M A, then + bias, ReLU, + residual, rounded to the activation type.
// In bfloat16 the three overlap: while block b's GEMMs run on the FMA pipes, block b + 1's input
// and block b - 1's output transforms run on the other pipes, interleaved a few vector operations
// at a time with the GEMM's steps (for F(2x2): 1.10-1.13x at 64 and 128 channels, 1.27x at 32).
// Pixels past the image's edge read as zeros; outputs past it are not stored. The transforms and
// loops are winograd_body.h, compiled here once per instruction set with target attributes (so
// the extension builds and runs on any x86-64 CPU) and chosen at run time.
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "cpu_isa.h"  // FD_CPU_X86 (elsewhere winograd_block is 0), cpu_isa::best
#include "nhwc.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

namespace fastdeblur {
namespace {

// The kernel's variants: what an input tile, its transforms and its output tile are
// (winograd_body.h). in: input tile side; pos: transformed tile side (NP = pos * pos GEMMs);
// out: output tile side; step: input pixels between tiles (output sizes: out_size).
// np: the GEMMs per tile (the transformed tile's pos * pos values, but for the complex kC4 and kC8).
enum Variant { kF2, kF4, kF6, kC4, kC8, kUp, kS2 };
template <int VAR>
struct Tiles;
template <>
struct Tiles<kF2> {  // Winograd F(2x2, 3x3)
  static constexpr int in = 4, pos = 4, out = 2, step = 2, np = 16;
};
template <>
struct Tiles<kF4> {  // Winograd F(4x4, 3x3)
  static constexpr int in = 6, pos = 6, out = 4, step = 4, np = 36;
};
template <>
struct Tiles<kF6> {  // Winograd F(6x6, 3x3): float32
  static constexpr int in = 8, pos = 8, out = 6, step = 6, np = 64;
};
template <>
struct Tiles<kC4> {  // complex Winograd F(4x4, 3x3), points 0, +-1, +-i: bfloat16 (winograd_body.h)
  static constexpr int in = 6, pos = 6, out = 4, step = 4, np = 46;
};
template <>
struct Tiles<kC8> {  // complex Winograd F(8x8, 3x3), points 0, infinity, the 8th roots of unity: bfloat16
  static constexpr int in = 10, pos = 10, out = 8, step = 8, np = 142;
};
template <>
struct Tiles<kUp> {  // 4x4 stride-2 padding-1 transposed convolution: 4 phases of F(3x3, 2x2)
  static constexpr int in = 5, pos = 8, out = 6, step = 3, np = 64;
};
template <>
struct Tiles<kS2> {  // 3x3 stride-2 padding-1 convolution: polyphase, F(3, 2) x pass-through per side
  static constexpr int in = 7, pos = 7, out = 3, step = 6, np = 49;
};

// The output side of an n-pixel input side.
template <int VAR>
constexpr int64_t out_size(int64_t n) {
  return VAR == kUp ? 2 * n : VAR == kS2 ? (n + 1) / 2 : n;
}

// The kernels' blocks: an H x W image (N of them) in tiles `step` input pixels apart, each tile
// row cut into blocks of KB tiles, numbered a tile row's blocks in order, rows in order, images
// in order. Block blk lies in image n, tile row ti, from tile column t0, with tn <= KB of its
// tiles in the image (the rest, past the row's end, are computed as zeros and never stored).
struct BlockGrid {
  int64_t KB, tw, th, bpr;  // tiles per block; tiles per row and tile rows; blocks per tile row
  BlockGrid(int64_t H, int64_t W, int64_t step, int64_t KB_)
      : KB(KB_), tw((W + step - 1) / step), th((H + step - 1) / step), bpr((tw + KB_ - 1) / KB_) {}
  int64_t count(int64_t N) const { return N * th * bpr; }
  struct Block {
    int64_t n, ti, t0, tn;
  };
  Block at(int64_t blk) const {
    const int64_t t0 = (blk % bpr) * KB;
    return {blk / (th * bpr), (blk / bpr) % th, t0, std::min(KB, tw - t0)};
  }
};

// n elements of E whose first is 64-byte aligned, so that the kernels' vector loads and stores of
// their scratch buffers are whole cache lines (std::vector's 16-byte alignment splits them).
template <typename E>
class Buffer {
 public:
  explicit Buffer(int64_t n) : raw_(n + 64 / sizeof(E)) {}
  E* data() {
    const auto a = reinterpret_cast<std::uintptr_t>(raw_.data());
    return reinterpret_cast<E*>((a + 63) & ~std::uintptr_t{63});
  }

 private:
  std::vector<E> raw_;
};

#if FD_CPU_X86
// inlined whatever the compiler's estimate: the GEMM's accumulators must stay in registers across
// the transform pieces done between its steps (winograd_body.h)
#define FD_INLINE inline __attribute__((always_inline))
#define FD_INLINE_LAMBDA __attribute__((always_inline))

// bfloat16, AVX-512 BF16: vdpbf16ps multiplies pairs of input channels, so the weights are
// packed [C/2][NR][2] per panel and the activations' channel pairs are broadcast.
namespace avx512_bf16 {
#define FD_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))
#include "vec_f32_avx512.h"
using T = at::BFloat16;
FD_TARGET inline Vec vload(const T* p) {
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
FD_TARGET inline void vstore(T* p, Vec v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)_mm512_cvtneps_pbh(v));
}
FD_TARGET inline void vstore_out(T* p, Vec v, bool) { vstore(p, v); }  // half a line: never streamed
FD_TARGET inline void vstore_out2(T* p, Vec a, Vec b, bool stream) {    // a line: both rounded at once
  const __m512i h = (__m512i)_mm512_cvtne2ps_pbh(b, a);
  if (stream)
    _mm512_stream_si512(reinterpret_cast<__m512i*>(p), h);
  else
    _mm512_storeu_si512(p, h);
}
constexpr int64_t kPair = 2;
using WVec = __m512bh;
FD_TARGET inline WVec vloadw(const T* p) { return (__m512bh)_mm512_loadu_si512(p); }
FD_TARGET inline WVec vbcastw(const T* p) {
  int32_t pair;
  std::memcpy(&pair, p, sizeof(pair));
  return (__m512bh)_mm512_set1_epi32(pair);
}
FD_TARGET inline Vec vdot(Vec acc, WVec a, WVec b) { return _mm512_dpbf16_ps(acc, a, b); }
constexpr bool kPipelined = true;  // the transforms overlap the GEMMs (winograd_body.h: conv_blocks)
#include "winograd_gemm.h"
#include "winograd_body.h"
#undef FD_TARGET
}  // namespace avx512_bf16

// float32: one input channel per FMA step.
namespace avx512_f32 {
#define FD_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#include "vec_f32_avx512.h"
using T = float;
FD_TARGET inline Vec vload(const T* p) { return _mm512_loadu_ps(p); }
FD_TARGET inline void vstore(T* p, Vec v) { _mm512_storeu_ps(p, v); }
FD_TARGET inline void vstore_out(T* p, Vec v, bool stream) {  // a line
  if (stream)
    _mm512_stream_ps(p, v);
  else
    vstore(p, v);
}
FD_TARGET inline void vstore_out2(T* p, Vec a, Vec b, bool stream) {
  vstore_out(p, a, stream);
  vstore_out(p + kLanes, b, stream);
}
constexpr int64_t kPair = 1;
using WVec = Vec;
FD_TARGET inline WVec vloadw(const T* p) { return _mm512_loadu_ps(p); }
FD_TARGET inline WVec vbcastw(const T* p) { return _mm512_set1_ps(*p); }
FD_TARGET inline Vec vdot(Vec acc, WVec a, WVec b) { return _mm512_fmadd_ps(a, b, acc); }
constexpr bool kPipelined = false;
#include "winograd_gemm.h"
#include "winograd_body.h"
#undef FD_TARGET
}  // namespace avx512_f32

namespace avx2_f32 {
#define FD_TARGET __attribute__((target("avx2,fma")))
#include "vec_f32_avx2.h"
using T = float;
FD_TARGET inline Vec vload(const T* p) { return _mm256_loadu_ps(p); }
FD_TARGET inline void vstore(T* p, Vec v) { _mm256_storeu_ps(p, v); }
FD_TARGET inline void vstore_out(T* p, Vec v, bool) { vstore(p, v); }  // half a line: never streamed
FD_TARGET inline void vstore_out2(T* p, Vec a, Vec b, bool stream) {    // a line
  if (stream) {
    _mm256_stream_ps(p, a);
    _mm256_stream_ps(p + kLanes, b);
  } else {
    vstore(p, a);
    vstore(p + kLanes, b);
  }
}
constexpr int64_t kPair = 1;
using WVec = Vec;
FD_TARGET inline WVec vloadw(const T* p) { return _mm256_loadu_ps(p); }
FD_TARGET inline WVec vbcastw(const T* p) { return _mm256_broadcast_ss(p); }
FD_TARGET inline Vec vdot(Vec acc, WVec a, WVec b) { return _mm256_fmadd_ps(a, b, acc); }
constexpr bool kPipelined = false;
#include "winograd_gemm.h"
#include "winograd_body.h"
#undef FD_TARGET
}  // namespace avx2_f32

#endif  // FD_CPU_X86

// The kernel for `dtype` on this CPU: its vector lanes (input channels must be a multiple) and
// its register block NR for K output channels (the packing's panel width); 0 where it does not run.
struct Layout {
  int64_t lanes = 0, nr = 0;
};

// ATEN_CPU_CAPABILITY=avx2 (or default) limits it as it limits torch's own kernels (cpu_isa.h).
Layout layout_for([[maybe_unused]] at::ScalarType dtype, [[maybe_unused]] int64_t K) {
  Layout l;
#if FD_CPU_X86
  using namespace cpu_isa;
  const Isa isa = best();
  if ((dtype == at::kBFloat16 && isa >= kAvx512Bf16) || (dtype == at::kFloat && isa >= kAvx512)) {
    l.lanes = 16;
    l.nr = K % 64 == 0 ? 64 : K % 32 == 0 ? 32 : 0;
  } else if (dtype == at::kFloat && isa >= kAvx2) {
    l.lanes = 8;
    l.nr = K % 16 == 0 ? 16 : 0;
  }
#endif
  return l;
}

// The register block NR that `pack` must use for a [K, C, 3, 3] weight in `dtype`; 0 if the
// kernel does not run this convolution here (instruction set, or channel counts).
int64_t winograd_block(at::ScalarType dtype, int64_t C, int64_t K) {
  const Layout l = layout_for(dtype, K);
  return (l.lanes > 0 && C > 0 && C % l.lanes == 0) ? l.nr : 0;  // lanes are even: bf16's pairs fit
}

// Variant VAR of the kernel for T on this CPU's instruction set, register block NR:
// go(conv_blocks, MR tiles per block, VAR's tile step).
template <int VAR, typename T, typename Go>
void dispatch([[maybe_unused]] Go&& go, [[maybe_unused]] int64_t NR) {
#if FD_CPU_X86
  constexpr int64_t step = Tiles<VAR>::step;
  // one micro-kernel row block per block of tiles: the fastest of 6, 12, 24 and 48 tiles at 64
  // and 128 channels, and level with 24 at 32. The complex F(8x8)'s blocks take fewer: with 142
  // positions a tile, its double-buffered transformed inputs and products for 12 tiles of 32
  // channels and its weights outgrow the 1 MB L2 cache (34 -> 23 ms at 32 channels; at 128
  // channels 4 tiles: 14.3 ms, against 15.1, 17.4 and 17.8 for 5, 3 and 6).
  if constexpr (std::is_same_v<T, at::BFloat16>) {
    constexpr int64_t mr64 = VAR == kC8 ? 4 : 6, mr32 = VAR == kC8 ? 6 : 12;  // for NR = 64 and 32
    if (NR == 64)
      go(avx512_bf16::conv_blocks<VAR, mr64, 4>, mr64, step);
    else
      go(avx512_bf16::conv_blocks<VAR, mr32, 2>, mr32, step);
  } else if (NR == 16) {
    go(avx2_f32::conv_blocks<VAR, 6, 2>, 6, step);
  } else if (NR == 64) {
    go(avx512_f32::conv_blocks<VAR, 6, 4>, 6, step);
  } else {
    go(avx512_f32::conv_blocks<VAR, 12, 2>, 12, step);
  }
#else
  TORCH_CHECK(false, "the Winograd kernels run on x86-64 only");  // unreachable: winograd_block is 0
#endif
}

template <typename T>
void run(const at::Tensor& xh, const at::Tensor& u, const float* bias, bool relu, const T* add, at::Tensor& out,
         Variant var, int64_t NR) {
  const int64_t N = xh.size(0), H = xh.size(1), W = xh.size(2), C = xh.size(3), K = out.size(3);
  const T* xp = xh.const_data_ptr<T>();
  const T* up = u.const_data_ptr<T>();
  T* op = out.mutable_data_ptr<T>();
  // An output of kStreamBytes or more that nothing reads first (no residual add) goes to memory
  // with non-temporal stores where its vectors make whole cache lines: ordinary stores would first
  // read each line in. 2 Zen 4 cores, 720p: bfloat16 deblur() 1.54-1.59 -> 1.50-1.52 s, float32
  // (AVX-512) 2.33-2.35 -> 2.21-2.25 s; with 16 MiB (not the 128-channel layers' 14 MiB) 1.52-1.54
  // s; a 640x360 frame (16 and 4 MiB layers) no slower either way.
  constexpr int64_t kStreamBytes = int64_t{8} << 20;
  const bool stream = add == nullptr && static_cast<int64_t>(out.nbytes()) >= kStreamBytes &&
                      reinterpret_cast<std::uintptr_t>(op) % 64 == 0 && K * sizeof(T) % 64 == 0;
  // one kernel instance, parallel over its blocks of MR tiles
  auto go = [&](auto conv_blocks, int64_t MR, int64_t step) {
    const int64_t blocks = BlockGrid(H, W, step, MR).count(N);
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      conv_blocks(xp, up, bias, relu, add, op, stream, H, W, C, K, begin, end);
    });
  };
  if (var == kF2) {
    dispatch<kF2, T>(go, NR);
  } else if (var == kUp) {
    dispatch<kUp, T>(go, NR);
  } else if (var == kS2) {
    dispatch<kS2, T>(go, NR);
  } else if constexpr (std::is_same_v<T, float>) {  // the real F(4x4) and F(6x6): float32 only (check)
    if (var == kF4)
      dispatch<kF4, T>(go, NR);
    else
      dispatch<kF6, T>(go, NR);
  } else if (var == kC4) {  // the complex ones: bfloat16 only (check)
    dispatch<kC4, T>(go, NR);
  } else {
    dispatch<kC8, T>(go, NR);
  }
}

// Checks the op's inputs; x as [N, H, W, C], K, the variant and NR.
struct Conv {
  at::Tensor xh;
  int64_t K;
  Variant var;
  int64_t NR;  // register block
};

// The ops' kinds of convolution.
enum Kind { k3x3, kTransposed, kStride2 };

// kTransposed: the 4x4 stride-2 transposed convolution (u: 64 positions); kStride2: the 3x3
// stride-2 one (49); else the 3x3 stride-1 one, whose u has 16 positions for F(2x2, 3x3), 36 and
// 64 for the real F(4x4, 3x3) and F(6x6, 3x3) (float32 only: in bfloat16 their rounding error
// would be ~10x torch's own convolution's and more), or 46 for the complex F(4x4, 3x3) and 142
// for the complex F(8x8, 3x3) (bfloat16 only: in float32 the real ones do as few multiplies or fewer).
Conv check(const char* op, const at::Tensor& x, const at::Tensor& u, const at::Tensor& bias, Kind kind) {
  const auto dt = x.scalar_type();
  TORCH_CHECK(x.device().is_cpu() && (dt == at::kBFloat16 || dt == at::kFloat) && x.dim() == 4, op,
              ": x must be a 4-D bfloat16 or float32 CPU tensor, got ", dt, " ", x.sizes());
  const int64_t P = dt == at::kBFloat16 ? 2 : 1;
  const int64_t np = u.dim() == 5 ? u.size(0) : 0;
  const bool npos = kind == kTransposed ? np == Tiles<kUp>::np
                    : kind == kStride2  ? np == Tiles<kS2>::np
                                        : (np == Tiles<kF2>::np ||
                                          (dt == at::kFloat ? np == Tiles<kF4>::np || np == Tiles<kF6>::np
                                                            : np == Tiles<kC4>::np || np == Tiles<kC8>::np));
  static_assert(Tiles<kUp>::np == 64 && Tiles<kS2>::np == 49 && Tiles<kF2>::np == 16 && Tiles<kF4>::np == 36 &&
                    Tiles<kF6>::np == 64 && Tiles<kC4>::np == 46 && Tiles<kC8>::np == 142,
                "the message below names the positions");
  const char* want_np = kind == kTransposed ? "64"
                        : kind == kStride2  ? "49"
                        : dt == at::kFloat  ? "16, 36 or 64"
                                            : "16, 46 or 142";
  const char* packer = kind == kTransposed ? "pack_transpose" : kind == kStride2 ? "pack_stride2" : "pack";
  TORCH_CHECK(u.scalar_type() == dt && npos && u.size(4) == P && u.is_contiguous(), op,
              ": u must be the contiguous [NP, K/NR, C/", P, ", NR, ", P, "] ", dt,
              " tensor of fastdeblur.models.winograd.", packer, " (NP = ", want_np, "), got ", u.scalar_type(), " ",
              u.sizes());
  const Variant var = kind == kTransposed        ? kUp
                      : kind == kStride2         ? kS2
                      : np == Tiles<kF2>::np     ? kF2
                      : np == Tiles<kF4>::np     ? kF4
                      : np == Tiles<kF6>::np     ? kF6
                      : np == Tiles<kC4>::np     ? kC4
                                                 : kC8;
  const int64_t NR = u.size(3), C = P * u.size(2), K = u.size(1) * NR;
  const int64_t want = winograd_block(dt, C, K);
  TORCH_CHECK(want != 0, op, " does not run ", dt, " with ", C, " -> ", K,
              " channels on this CPU (winograd_block is 0)");
  TORCH_CHECK(NR == want, op, ": u was packed with register block ", NR, "; this CPU's kernel uses ", want,
              " (pack it here)");
  TORCH_CHECK(bias.scalar_type() == at::kFloat && bias.is_contiguous() && bias.numel() == K, op, ": bias must be ", K,
              " contiguous float32 values");
  const at::Tensor xh = nhwc_input(x, C);  // channels_last [N, C, H, W] is accepted as is
  TORCH_CHECK(xh.is_contiguous() && xh.size(3) == C, op, ": x must be NHWC memory with ", C, " channels, got sizes ",
              x.sizes(), " strides ", x.strides());
  return {xh, K, var, NR};
}

// `t` (the output's form: NHWC, or its channels_last [N, C, H, W] view) as the output's NHWC
// tensor, checked: x's dtype, contiguous, [N, H, W, K].
at::Tensor output_like(const char* op, const char* name, const at::Tensor& t, const Conv& c) {
  const std::array<int64_t, 4> want{c.xh.size(0), c.xh.size(1), c.xh.size(2), c.K};  // 3x3 ops only
  at::Tensor th = nhwc_output(t, want);
  TORCH_CHECK(th.scalar_type() == c.xh.scalar_type() && th.is_contiguous() && th.sizes() == at::IntArrayRef(want),
              op, ": ", name, " must be ", c.xh.scalar_type(), " NHWC memory of the output's shape");
  return th;
}

void launch(const Conv& c, const at::Tensor& u, const at::Tensor& bias, bool relu, const at::Tensor* add,
            at::Tensor& outh) {
  const float* bp = bias.const_data_ptr<float>();
  if (c.xh.scalar_type() == at::kBFloat16)
    run<at::BFloat16>(c.xh, u, bp, relu, add ? add->const_data_ptr<at::BFloat16>() : nullptr, outh, c.var, c.NR);
  else
    run<float>(c.xh, u, bp, relu, add ? add->const_data_ptr<float>() : nullptr, outh, c.var, c.NR);
}

// x [N, H, W, C] (NHWC memory: a contiguous tensor of that shape, or a channels_last [N, C, H, W]
// view of one); the result has x's form. u: winograd.pack's [NP, K/NR, C/P, NR, P] in x's dtype
// (NP = 16 for F(2x2, 3x3), 36 and 64 for the real F(4x4, 3x3) and F(6x6, 3x3) in float32, 46
// and 142 for the complex F(4x4, 3x3) and F(8x8, 3x3) in bfloat16; P = 2 for bfloat16, 1 for
// float32).
at::Tensor winograd_conv3x3(const at::Tensor& x, const at::Tensor& u, const at::Tensor& bias, bool relu,
                            const std::optional<at::Tensor>& add) {
  const Conv c = check("winograd_conv3x3", x, u, bias, k3x3);
  const int64_t N = c.xh.size(0), H = c.xh.size(1), W = c.xh.size(2);
  at::Tensor out = at::empty({N, H, W, c.K}, c.xh.options());
  const at::Tensor addh = add.has_value() ? output_like("winograd_conv3x3", "add", *add, c) : at::Tensor();
  launch(c, u, bias, relu, add.has_value() ? &addh : nullptr, out);
  return c.xh.is_same(x) ? out : out.permute({0, 3, 1, 2});
}

// acc += conv3x3(x) + bias, in place: the residual block's second convolution written over the
// block's input, so the block holds two activations at a time instead of three.
at::Tensor& winograd_conv3x3_add_(at::Tensor& acc, const at::Tensor& x, const at::Tensor& u, const at::Tensor& bias) {
  const Conv c = check("winograd_conv3x3_add_", x, u, bias, k3x3);
  at::Tensor acch = output_like("winograd_conv3x3_add_", "acc", acc, c);
  // each output pixel reads acc just before writing it, but x is read around it: no overlap
  TORCH_CHECK(at::get_overlap_status(acch, c.xh) == at::MemOverlapStatus::No,
              "winograd_conv3x3_add_: acc and x must not share memory");
  launch(c, u, bias, false, &acch, acch);
  return acc;
}

// The ops whose output size differs from the input's: x [N, H, W, C] (either form, as above) ->
// [N, out_size(H), out_size(W), K] in x's form, + bias.
at::Tensor resampled(const char* op, const at::Tensor& x, const at::Tensor& u, const at::Tensor& bias, Kind kind) {
  const Conv c = check(op, x, u, bias, kind);
  const int64_t N = c.xh.size(0), H = c.xh.size(1), W = c.xh.size(2);
  auto size = [kind](int64_t n) { return kind == kTransposed ? out_size<kUp>(n) : out_size<kS2>(n); };
  at::Tensor out = at::empty({N, size(H), size(W), c.K}, c.xh.options());
  launch(c, u, bias, false, nullptr, out);
  return c.xh.is_same(x) ? out : out.permute({0, 3, 1, 2});
}

// ConvTranspose2d(C, K, 4, stride=2, padding=1): [N, H, W, C] -> [N, 2H, 2W, K]. u:
// winograd.pack_transpose's [64, K/NR, C/P, NR, P].
at::Tensor winograd_conv_transpose4x4s2(const at::Tensor& x, const at::Tensor& u, const at::Tensor& bias) {
  return resampled("winograd_conv_transpose4x4s2", x, u, bias, kTransposed);
}

// Conv2d(C, K, 3, stride=2, padding=1): [N, H, W, C] -> [N, (H + 1) / 2, (W + 1) / 2, K]. u:
// winograd.pack_stride2's [49, K/NR, C/P, NR, P].
at::Tensor winograd_conv3x3s2(const at::Tensor& x, const at::Tensor& u, const at::Tensor& bias) {
  return resampled("winograd_conv3x3s2", x, u, bias, kStride2);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastdeblur, m) {
  // 3x3 stride-1 padding-1 convolution by Winograd F(2x2, 3x3) to F(8x8, 3x3) (u's 16 positions, or
  // 36 and 64 for the real F(4x4) and F(6x6) in float32, 46 and 142 for the complex ones in bfloat16), NHWC bfloat16
  // (AVX512-BF16) or float32 (AVX-512 or AVX2+FMA): relu?(x * w + bias) [+ add].
  m.def("winograd_conv3x3(Tensor x, Tensor u, Tensor bias, bool relu, Tensor? add=None) -> Tensor");
  // acc += x * w + bias in place (the residual block's second convolution over its input)
  m.def("winograd_conv3x3_add_(Tensor(a!) acc, Tensor x, Tensor u, Tensor bias) -> Tensor(a!)");
  // ConvTranspose2d(C, K, 4, stride=2, padding=1) as four Winograd F(3x3, 2x2) phases, NHWC
  // bfloat16 (AVX512-BF16) or float32 (AVX-512 or AVX2+FMA)
  m.def("winograd_conv_transpose4x4s2(Tensor x, Tensor u, Tensor bias) -> Tensor");
  // Conv2d(C, K, 3, stride=2, padding=1) as a polyphase Winograd: F(3, 2) on the even input rows and
  // columns, the odd ones passed through (49 GEMMs per 3x3 output tile instead of 81), NHWC bfloat16
  // (AVX512-BF16) or float32 (AVX-512 or AVX2+FMA)
  m.def("winograd_conv3x3s2(Tensor x, Tensor u, Tensor bias) -> Tensor");
  // the register block NR that winograd.pack uses for C -> K channels in dtype; 0: no kernel here
  m.def("winograd_block(ScalarType dtype, int in_channels, int out_channels) -> int", &winograd_block);
}

TORCH_LIBRARY_IMPL(fastdeblur, CPU, m) {
  m.impl("winograd_conv3x3", &winograd_conv3x3);
  m.impl("winograd_conv3x3_add_", &winograd_conv3x3_add_);
  m.impl("winograd_conv_transpose4x4s2", &winograd_conv_transpose4x4s2);
  m.impl("winograd_conv3x3s2", &winograd_conv3x3s2);
}

}  // namespace fastdeblur
