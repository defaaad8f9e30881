// bfloat16 convolutions on Intel's AMX tile units, NHWC activations, float32 accumulation:
//   amx_residual_block(_)   DMPHN's residual block, h + conv2(relu(conv1(h) + b1)) + b2 (3x3,
//                           stride 1, padding 1, C -> C channels, C a multiple of 32), both
//                           convolutions in one pass over the image; the intermediate activation
//                           is rounded to bfloat16 as a separate convolution would round it
//   amx_conv3x3             a 3x3 convolution, padding 1, stride 1 or 2, C (a multiple of 32) ->
//                           any K channels, + bias
//   amx_conv_transpose4x4s2 ConvTranspose2d(C, K, 4, stride=2, padding=1) + bias, as four 2x2
//                           phases
//
// Why: on CPUs with AMX, deblur() ran these layers on oneDNN (a residual block as two fused
// convolutions: 84% of a 720p frame, at 2.0-3.2 TFLOP/s on 2 cores, 40-60% of the tile units'
// 5.2). Here a block goes row by row: row y + 1 of t = relu(conv1(h) + b1) is computed from rows
// y .. y + 2 of h into a ring of three rows that stays in the cache, then row y of the output from
// the ring's rows y .. y + 2, plus row y of h (still cached): t never goes to memory, and memory
// sees h read once and the output written once. Per block 1.0-1.6x oneDNN's pair, the other layers
// 1.0-1.2x; a 720p frame 1.2-1.4x (benchmarks/RESULTS.md).
//
// The convolution of one row (conv_row): per block of 32 output pixels and 32 output channels,
// four 16x16 float32 accumulator tiles; for each tap and each 32 input channels, two 16-pixel x
// 32-channel input tiles (rows of NHWC memory, C * 2 bytes apart, or twice that for stride 2: no
// packing), two 16-pair x 16-channel weight tiles (packed once, fastdeblur/models/amx.py) and four
// tile products (tdpbf16ps). The epilogue (bias, ReLU, residual, rounding) of each block runs on
// the vector units in pieces between the next block's products. Blocks at a row's ends read their
// pixels from a small zero-padded copy; the ring's rows carry their own zero padding.
//
// Threads: the ops run output rows in parallel; the block cuts each image's rows into segments (at
// least as many as threads), one thread a segment. In place (the output written over h, as
// deblur() runs it) a segment's t rows next to another segment's rows read h rows that segment
// overwrites, so those (y0 - 1, y0, y1 - 1, y1 of a segment [y0, y1), where the neighbour is in
// the same image) are computed first, in a pass of their own.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "cpu_isa.h"  // FD_CPU_X86, cpu_isa::best
#include "nhwc.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

// the AMX intrinsics: GCC 11 and Clang 12 have them (an older compiler builds the ops without the kernels)
#if defined(__clang__)
#define FD_AMX_COMPILER (__clang_major__ >= 12)
#elif defined(__GNUC__)
#define FD_AMX_COMPILER (__GNUC__ >= 11)
#else
#define FD_AMX_COMPILER 0
#endif
#if FD_CPU_X86 && defined(__linux__) && FD_AMX_COMPILER
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define FD_AMX_BUILT 1
#else
#define FD_AMX_BUILT 0
#endif

namespace fastdeblur {
namespace {

using T = at::BFloat16;

// The tile units run here: the CPU has AMX-TILE and AMX-BF16, Linux lets this process use the tile
// registers (arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA, once; oneDNN asks the same), and
// ATEN_CPU_CAPABILITY does not limit torch's kernels below AVX-512 (the epilogue's instructions).
bool amx_usable() {
#if FD_AMX_BUILT
  static const bool granted = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !((d >> 24) & 1) || !((d >> 22) & 1)) return false;
    constexpr long kReqXcompPerm = 0x1023, kXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXtiledata) == 0;
  }();
  return granted && cpu_isa::best() == cpu_isa::kAvx512Bf16;
#else
  return false;
#endif
}

// Every kernel here runs bfloat16 with input channels a multiple of 32 (the block: C -> C; the
// convolutions: to any number).
bool amx_runs(c10::ScalarType dtype, int64_t in_channels) {
  return dtype == at::kBFloat16 && in_channels > 0 && in_channels % 32 == 0 && amx_usable();
}

#if FD_AMX_BUILT
#define FD_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define FD_AMX_INLINE inline __attribute__((always_inline))
// tileloadd with a memory clobber: gcc's _tile_loadd declares no memory operand, so a store just
// before it (a ring row, the edge copy) could be moved past it
#define FD_TILE_LOAD(tile, base, stride) \
  __asm__ volatile("tileloadd\t(%0,%1,1), %%tmm" #tile ::"r"((const void*)(base)), "r"((long)(stride)) : "memory")

constexpr int64_t kGroup = 32;  // output pixels per block: two 16-row input tiles

// Tiles 0-3: 16x16 float32 accumulators; 4, 5: 16 pixels x 32 channels; 6, 7: 16 channel pairs x
// 16 outputs. Each is 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

FD_AMX void tiles_begin() {
  TileConfig cfg;
  for (int i = 0; i < 8; ++i) {
    cfg.colsb[i] = 64;
    cfg.rows[i] = 16;
  }
  // gcc's ldtilecfg declares only 8 bytes of the 64 read: make the stores above happen
  __asm__ volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

FD_AMX void tiles_end() { _tile_release(); }

// Pixels [p0, p1) of a float32 block of 32 pixels x 32 channels (blk[p][0:32]) + bias, ReLU (kRelu),
// + add (kAdd, pixels K channels apart), rounded to bfloat16 into out (pixels os elements apart;
// the first kv < 32 channels only where kv says so).
template <bool kRelu, bool kAdd>
FD_AMX FD_AMX_INLINE void epilogue(const float* blk, const float* bias, const T* add, T* out, int64_t p0, int64_t p1,
                                   int64_t K, int64_t os, int64_t kv) {
  const __mmask32 part = static_cast<__mmask32>((uint64_t{1} << kv) - 1);
  const __m512 b0 = _mm512_loadu_ps(bias), b1 = _mm512_loadu_ps(bias + 16);
  for (int64_t p = p0; p < p1; ++p) {
    __m512 v0 = _mm512_add_ps(_mm512_load_ps(blk + p * 32), b0);
    __m512 v1 = _mm512_add_ps(_mm512_load_ps(blk + p * 32 + 16), b1);
    if (kRelu) {
      v0 = _mm512_max_ps(v0, _mm512_setzero_ps());
      v1 = _mm512_max_ps(v1, _mm512_setzero_ps());
    }
    if (kAdd) {  // bfloat16 -> float32: the 16 bits moved to the top
      const __m512i a = _mm512_loadu_si512(add + p * K);
      const __m512i lo = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(a));
      const __m512i hi = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(a, 1));
      v0 = _mm512_add_ps(v0, _mm512_castsi512_ps(_mm512_slli_epi32(lo, 16)));
      v1 = _mm512_add_ps(v1, _mm512_castsi512_ps(_mm512_slli_epi32(hi, 16)));
    }
    const __m512i y = (__m512i)_mm512_cvtne2ps_pbh(v1, v0);
    if (kv == 32)
      _mm512_storeu_si512(out + p * os, y);
    else
      _mm512_mask_storeu_epi16(out + p * os, part, y);
  }
}

// One output row of a convolution with kTaps x kTaps taps (conv_row), C -> K channels (C a
// multiple of 32).
struct Row {
  const T* in[3];  // the input rows of the kernel's rows (nullptr: outside the image, zeros)
  bool padded;     // in[] are ring rows: one zero pixel before pixel 0, zeros past the last pixel up to
                   // a multiple of 32 pixels + 2; else rows of exactly in_w pixels
  int64_t in_w;    // the input rows' pixels
  int64_t xs;      // the stride: output pixel x reads input pixels xs * x + dx - 1 + x_off for the
                   // kernel's columns dx (padded: 1)
  int64_t x_off;
  int64_t os;  // elements from one output pixel to the next (K, or 2K for a phase of a transposed
               // convolution)
  const float* bias;
  const T* add;  // the residual's row (read where conv_row's kAdd is set)
  T* out;        // the output row (pixel 0)
};

// The row's W output pixels of a convolution with kTaps x kTaps taps (3: 3x3 with padding 1; 2: a
// phase of the 4x4 stride-2 transposed one), with ReLU (kRelu) or the residual add (kAdd) in the
// epilogue; K output channels, the weights U packed for K rounded up to a multiple of 32 (as the
// bias, which has that many values); scratch: 9 x 32 pixels (the row ends' zero-padded copies,
// per tap), fbuf: 2 x 1024 floats (64-byte aligned); prefetch: bytes to bring into the cache
// meanwhile, spread over the blocks' steps (a few lines after each step's products: 3-7% faster
// than each block's share at its start, which stalled the tile loads behind a burst of misses).
template <bool kRelu, bool kAdd, int kTaps = 3>
FD_AMX void conv_row(const Row& r, const T* U, int64_t W, int64_t C, int64_t K, T* scratch, float* fbuf,
                     const T* prefetch, int64_t prefetch_bytes) {
  const int64_t CC = C / 32, lda = r.xs * C * static_cast<int64_t>(sizeof(T));
  const int64_t groups = (W + kGroup - 1) / kGroup;
  const int64_t pf_step = prefetch ? (prefetch_bytes / groups + 63) / 64 * 64 : 0;
  int64_t pend_x0 = -1, pend_kp = 0;  // the block whose accumulators wait in fbuf[pend_buf]
  int pend_buf = 0;
  // the pending block's epilogue in 8 pieces of 4 pixels, piece i after step i * steps / 8 of the
  // next block's products: interleaved finely, the vector work overlaps the tile unit's (all at
  // once after the products, it mostly did not: 5-7% slower at 32 channels, 0-2% at 64 and 128)
  int steps = 0;
  for (int dy = 0; dy < kTaps; ++dy) steps += r.in[dy] ? kTaps * static_cast<int>(CC) : 0;
  const int64_t KP = (K + 31) / 32, block_steps = steps * KP;  // blocks of 32 output channels; a pixel block's steps
  auto finish_to = [&](int piece) FD_AMX {  // pixels [4 * piece, 4 * (piece + 1))
    const int64_t o = pend_x0 * K + pend_kp * 32, end = std::min(kGroup, W - pend_x0);
    epilogue<kRelu, kAdd>(fbuf + pend_buf * 1024, r.bias + pend_kp * 32, kAdd ? r.add + o : nullptr,
                          r.out + pend_x0 * r.os + pend_kp * 32,
                          std::min<int64_t>(4 * piece, end), std::min<int64_t>(4 * piece + 4, end), K, r.os,
                          std::min<int64_t>(32, K - pend_kp * 32));
  };
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t x0 = g * kGroup;
    // tap column dx reads pixels xs * x0 + dx - 1 + xs * p (p < 32); where some lie outside a
    // plain row, from a copy with zeros there (at a row's ends: dx = 0 of the first block, dx = 2
    // of the last)
    bool copied[3] = {false, false, false};
    for (int dx = 0; dx < kTaps && !r.padded; ++dx) {
      const int64_t first = r.xs * x0 + dx - 1 + r.x_off, last = first + r.xs * (kGroup - 1);
      if (first >= 0 && last < r.in_w) continue;
      copied[dx] = true;
      for (int dy = 0; dy < kTaps; ++dy) {
        T* s = scratch + (dy * 3 + dx) * kGroup * C;
        for (int64_t p = 0; p < kGroup; ++p) {
          const int64_t x = first + r.xs * p;
          if (r.in[dy] && x >= 0 && x < r.in_w)
            std::memcpy(s + p * C, r.in[dy] + x * C, C * sizeof(T));
          else
            std::memset(static_cast<void*>(s + p * C), 0, C * sizeof(T));
        }
      }
    }
    // this block's share of the prefetch
    const char* pf = reinterpret_cast<const char*>(prefetch) + g * pf_step;
    const int64_t pf_lines = prefetch ? (std::min(pf_step, prefetch_bytes - g * pf_step) + 63) / 64 : 0;
    int64_t pf_done = 0, block_step = 0;
    for (int64_t kp = 0; kp < KP; ++kp) {
      int step = 0, piece = pend_x0 >= 0 ? 0 : 8;
      const bool wide = K - kp * 32 > 16;  // else the second 16 output channels are padding: skipped
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int dy = 0; dy < kTaps; ++dy) {
        if (!r.in[dy]) continue;
        for (int dx = 0; dx < kTaps; ++dx) {
          const T* src = copied[dx] ? scratch + (dy * 3 + dx) * kGroup * C
                                    : r.in[dy] + (r.xs * x0 + dx - (r.padded ? 0 : 1) + r.x_off) * C;
          const int64_t ld = copied[dx] ? C * static_cast<int64_t>(sizeof(T)) : lda;
          const T* u = U + ((kp * kTaps * kTaps + dy * kTaps + dx) * CC) * 1024;  // the tiles in the order read
          for (int64_t cc = 0; cc < CC; ++cc) {
            // each product as soon as its operands are loaded (measured: all four loads first is
            // 5-9% slower at 64 and 128 channels, the same at 32)
            FD_TILE_LOAD(4, src + cc * 32, ld);
            FD_TILE_LOAD(6, u + cc * 1024, 64);
            _tile_dpbf16ps(0, 4, 6);
            if (wide) {
              FD_TILE_LOAD(7, u + cc * 1024 + 512, 64);
              _tile_dpbf16ps(1, 4, 7);
            }
            FD_TILE_LOAD(5, src + 16 * (ld / static_cast<int64_t>(sizeof(T))) + cc * 32, ld);
            _tile_dpbf16ps(2, 5, 6);
            if (wide) _tile_dpbf16ps(3, 5, 7);
            for (++step; piece < 8 && piece * steps < step * 8; ++piece) finish_to(piece);
            for (++block_step; pf_done < pf_lines && pf_done * block_steps < block_step * pf_lines; ++pf_done)
              _mm_prefetch(pf + pf_done * 64, _MM_HINT_T0);
          }
        }
      }
      for (; piece < 8; ++piece) finish_to(piece);
      pend_buf ^= 1;
      float* f = fbuf + pend_buf * 1024;  // [32 pixels][32 channels]
      _tile_stored(0, f, 128);
      _tile_stored(1, f + 16, 128);
      _tile_stored(2, f + 16 * 32, 128);
      _tile_stored(3, f + 16 * 32 + 16, 128);
      pend_x0 = x0;
      pend_kp = kp;
    }
  }
  for (int piece = 0; piece < 8; ++piece) finish_to(piece);
}

struct Segment {
  int64_t n, y0, y1;  // rows [y0, y1) of image n
};

// body(i, scratch, fbuf) for i in [0, n), in parallel: each thread with the tile unit configured and
// its own conv_row scratch (for C input channels) and accumulator buffer
template <class Body>
void per_thread(int64_t n, int64_t C, const Body& body) {
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    tiles_begin();
    std::vector<T> scratch(9 * kGroup * C);
    alignas(64) float fbuf[2048];
    for (int64_t i = begin; i < end; ++i) body(i, scratch.data(), fbuf);
    tiles_end();
  });
}

void run_block(const T* h, T* out, const T* u1, const float* b1, const T* u2, const float* b2, int64_t N, int64_t H,
               int64_t W, int64_t C, bool inplace) {
  const int64_t parts = std::min(H, (at::get_num_threads() + N - 1) / N);
  std::vector<Segment> segs;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t p = 0; p < parts; ++p) segs.push_back({n, H * p / parts, H * (p + 1) / parts});
  const int64_t S = static_cast<int64_t>(segs.size());
  const int64_t row = ((W + kGroup - 1) / kGroup * kGroup + 2) * C;  // a padded t row's elements
  // in place: the t rows of a segment that read rows of h another segment writes, y0 - 1 and y0
  // unless y0 is the image's first row, y1 - 1 and y1 unless y1 is past its last, computed before
  // any row is written
  std::vector<T> side(inplace ? S * 4 * row : 0), zeros(row);
  auto side_row = [&](int64_t s, int64_t y) -> T* {
    const Segment& g = segs[s];
    const bool top = g.y0 > 0 && (y == g.y0 - 1 || y == g.y0), bottom = g.y1 < H && (y == g.y1 - 1 || y == g.y1);
    const int64_t i = !inplace ? -1 : top ? y - g.y0 + 1 : bottom ? y - g.y1 + 3 : -1;
    return i >= 0 ? side.data() + (s * 4 + i) * row : nullptr;
  };
  auto h_row = [&](int64_t n, int64_t y) -> const T* { return y < 0 || y >= H ? nullptr : h + (n * H + y) * W * C; };
  // t row y of image n into the padded row dst (pixel 0 at dst + C)
  auto t_row = [&](int64_t n, int64_t y, T* dst, T* scratch, float* fbuf, const T* prefetch) {
    const Row r{{h_row(n, y - 1), h_row(n, y), h_row(n, y + 1)}, false, W, 1, 0, C, b1, nullptr, dst + C};
    conv_row<true, false>(r, u1, W, C, C, scratch, fbuf, prefetch,
                          prefetch ? W * C * static_cast<int64_t>(sizeof(T)) : 0);
  };
  if (inplace) {
    per_thread(S, C, [&](int64_t s, T* scratch, float* fbuf) {
      const Segment& g = segs[s];
      for (const int64_t y : {g.y0 - 1, g.y0, g.y1 - 1, g.y1})
        if (T* dst = side_row(s, y)) t_row(g.n, y, dst, scratch, fbuf, nullptr);
    });
  }
  per_thread(S, C, [&](int64_t s, T* scratch, float* fbuf) {
    const Segment& g = segs[s];
    std::vector<T> ring(3 * row);  // zeros: the padding is never written
    auto t_at = [&](int64_t y) -> const T* {
      if (y < 0 || y >= H) return zeros.data();
      if (const T* p = side_row(s, y)) return p;
      T* dst = ring.data() + (y % 3) * row;
      t_row(g.n, y, dst, scratch, fbuf, h_row(g.n, y + 2));  // meanwhile: the row the next t row reads first
      return dst;
    };
    const T* t[3] = {t_at(g.y0 - 1), t_at(g.y0), nullptr};
    for (int64_t y = g.y0; y < g.y1; ++y) {
      t[2] = t_at(y + 1);  // overwrites t row y - 2's slot of the ring, done with
      const int64_t at = (g.n * H + y) * W * C;
      const Row r{{t[0], t[1], t[2]}, true, W, 1, 0, C, b2, h + at, out + at};
      conv_row<false, true>(r, u2, W, C, C, scratch, fbuf, nullptr, 0);
      t[0] = t[1];
      t[1] = t[2];
    }
  });
}

// A 3x3 convolution with padding 1 and stride xs (1 or 2), + bias: x [N, H, W, C] -> out [N, Ho, Wo,
// K]; U packed for K rounded up to 32, bias that many values. Output rows in parallel.
void run_conv(const T* x, T* out, const T* U, const float* bias, int64_t N, int64_t H, int64_t W, int64_t C,
              int64_t K, int64_t xs, int64_t Ho, int64_t Wo) {
  per_thread(N * Ho, C, [&](int64_t i, T* scratch, float* fbuf) {
    const int64_t n = i / Ho, y = i % Ho;
    auto in_row = [&](int64_t yy) -> const T* { return yy < 0 || yy >= H ? nullptr : x + (n * H + yy) * W * C; };
    const Row r{{in_row(xs * y - 1), in_row(xs * y), in_row(xs * y + 1)}, false, W, xs, 0, K, bias, nullptr,
                out + i * Wo * K};
    const T* next = in_row(xs * (y + 1) + 1);  // the row the next output row reads first
    conv_row<false, false>(r, U, Wo, C, K, scratch, fbuf, next, next ? W * C * static_cast<int64_t>(sizeof(T)) : 0);
  });
}

// ConvTranspose2d(C, K, 4, stride=2, padding=1) + bias: x [N, H, W, C] -> out [N, 2H, 2W, K]. Output
// row 2i + p reads input rows i - 1 + p and i + p, output column 2j + q input columns j - 1 + q and
// j + q: each of the four phases (p, q) is a 2x2 convolution, U packed per phase. Output rows in
// parallel, each as its two column phases.
void run_up(const T* x, T* out, const T* U, const float* bias, int64_t N, int64_t H, int64_t W, int64_t C,
            int64_t K) {
  const int64_t phase = (K + 31) / 32 * 4 * C * 32;  // elements of one phase's packed weights
  per_thread(N * 2 * H, C, [&](int64_t o, T* scratch, float* fbuf) {
    const int64_t n = o / (2 * H), i = o % (2 * H) / 2, p = o % 2;
    auto in_row = [&](int64_t yy) -> const T* { return yy < 0 || yy >= H ? nullptr : x + (n * H + yy) * W * C; };
    const T* next = p == 0 ? in_row(i + 1) : nullptr;  // the row the next output row reads first
    for (int64_t q = 0; q < 2; ++q) {
      const Row r{{in_row(i - 1 + p), in_row(i + p), nullptr}, false, W, 1, q, 2 * K, bias, nullptr,
                  out + o * 2 * W * K + q * K};
      conv_row<false, false, 2>(r, U + (p * 2 + q) * phase, W, C, K, scratch, fbuf, q == 0 ? next : nullptr,
                                next ? W * C * static_cast<int64_t>(sizeof(T)) : 0);
    }
  });
}
#endif  // FD_AMX_BUILT

// The activation argument `name` of an op: a 4-D bfloat16 CPU tensor (checked first, before the
// weights)...
void check_activation(const char* op, const char* name, const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kBFloat16 && x.dim() == 4, op, ": ", name,
              " must be a 4-D bfloat16 CPU tensor, got ", x.scalar_type(), " ", x.sizes());
}

// ... and, once the weights give its C input channels, NHWC memory of them on a CPU the kernels run
// on: its NHWC tensor.
at::Tensor nhwc_activation(const char* op, const char* name, const at::Tensor& x, int64_t C) {
  TORCH_CHECK(amx_runs(at::kBFloat16, C), op, " does not run on this CPU (it needs AMX-BF16 and Linux; "
              "fastdeblur.models.amx.runs says where it does)");
  const at::Tensor xh = nhwc_input(x, C);
  TORCH_CHECK(xh.is_contiguous() && xh.size(3) == C, op, ": ", name, " must be NHWC memory with ", C,
              " channels, got sizes ", x.sizes(), " strides ", x.strides());
  return xh;
}

// h: [N, H, W, C] bfloat16 NHWC memory (a contiguous tensor, or the channels_last [N, C, H, W]
// view of one); u1, u2: fastdeblur.models.amx.pack's [C/32, 9, C/32, 2, 16, 16, 2] bfloat16; b1, b2:
// C float32 values each. Returns h's NHWC tensor and (for out) its form.
at::Tensor check(const char* op, const at::Tensor& h, const at::Tensor& u1, const at::Tensor& b1, const at::Tensor& u2,
                 const at::Tensor& b2) {
  check_activation(op, "h", h);
  const int64_t C = u1.dim() == 7 ? u1.size(0) * 32 : 0;
  const std::array<int64_t, 7> want{C / 32, 9, C / 32, 2, 16, 16, 2};
  for (const at::Tensor* u : {&u1, &u2})
    TORCH_CHECK(u->scalar_type() == at::kBFloat16 && u->is_contiguous() && u->sizes() == at::IntArrayRef(want) &&
                    C > 0,
                op, ": u1 and u2 must be the contiguous [C/32, 9, C/32, 2, 16, 16, 2] bfloat16 tensors of "
                "fastdeblur.models.amx.pack (C -> C channels, C a multiple of 32), got ", u->sizes());
  for (const at::Tensor* b : {&b1, &b2})
    TORCH_CHECK(b->scalar_type() == at::kFloat && b->is_contiguous() && b->numel() == C, op, ": b1 and b2 must be ",
                C, " contiguous float32 values");
  return nhwc_activation(op, "h", h, C);
}

void launch(const at::Tensor& hh, const at::Tensor& outh, const at::Tensor& u1, const at::Tensor& b1,
            const at::Tensor& u2, const at::Tensor& b2, bool inplace) {
#if FD_AMX_BUILT
  if (hh.numel() == 0) return;
  run_block(hh.const_data_ptr<T>(), outh.mutable_data_ptr<T>(), u1.const_data_ptr<T>(), b1.const_data_ptr<float>(),
            u2.const_data_ptr<T>(), b2.const_data_ptr<float>(), hh.size(0), hh.size(1), hh.size(2), hh.size(3),
            inplace);
#endif
}

at::Tensor amx_residual_block(const at::Tensor& h, const at::Tensor& u1, const at::Tensor& b1, const at::Tensor& u2,
                              const at::Tensor& b2) {
  const at::Tensor hh = check("amx_residual_block", h, u1, b1, u2, b2);
  at::Tensor out = at::empty(hh.sizes(), hh.options());
  launch(hh, out, u1, b1, u2, b2, false);
  return hh.is_same(h) ? out : out.permute({0, 3, 1, 2});
}

// The block written over h: the forward holds one activation of the block's size instead of two.
at::Tensor& amx_residual_block_(at::Tensor& h, const at::Tensor& u1, const at::Tensor& b1, const at::Tensor& u2,
                                const at::Tensor& b2) {
  const at::Tensor hh = check("amx_residual_block_", h, u1, b1, u2, b2);
  launch(hh, hh, u1, b1, u2, b2, true);
  return h;
}

// The convolution ops' arguments, checked: x [N, H, W, C] bfloat16 NHWC memory (either form, as for
// the block), u the packed weights (`layout`, from fastdeblur.models.amx.`packer`: a leading dim of
// 4 phases where phased, then [Kp/32, taps, C/32, 2, 16, 16, 2], Kp: K rounded up to 32), bias K
// float32 values. Holds x's NHWC tensor, C, K and the bias padded with zeros to Kp (the epilogue
// reads 32 channels at a time).
struct ConvArgs {
  at::Tensor xh;
  int64_t C, K;
  std::vector<float> bias;
};

ConvArgs check_conv(const char* op, const at::Tensor& x, const at::Tensor& u, const at::Tensor& bias, bool phased,
                    int64_t taps, const char* layout, const char* packer) {
  check_activation(op, "x", x);
  const int64_t lead = phased ? 1 : 0, dims = 7 + lead;
  const int64_t C = u.dim() == dims ? u.size(lead + 2) * 32 : 0, Kp = u.dim() == dims ? u.size(lead) * 32 : 0;
  std::vector<int64_t> want{Kp / 32, taps, C / 32, 2, 16, 16, 2};
  if (phased) want.insert(want.begin(), 4);
  TORCH_CHECK(u.scalar_type() == at::kBFloat16 && u.is_contiguous() && u.sizes() == at::IntArrayRef(want) && C > 0 &&
                  Kp > 0,
              op, ": u must be the contiguous ", layout, " bfloat16 tensor of fastdeblur.models.amx.", packer,
              ", got ", u.sizes());
  const int64_t K = bias.numel();
  TORCH_CHECK(bias.scalar_type() == at::kFloat && bias.is_contiguous() && K > Kp - 32 && K <= Kp, op,
              ": bias must be contiguous float32 values, one per output channel (", Kp - 31, " to ", Kp,
              " for this u), got ", bias.scalar_type(), " ", bias.sizes());
  const at::Tensor xh = nhwc_activation(op, "x", x, C);
  std::vector<float> b(Kp, 0.0f);
  std::memcpy(b.data(), bias.const_data_ptr<float>(), K * sizeof(float));
  return {xh, C, K, std::move(b)};
}

// A 3x3 convolution with padding 1 and stride 1 or 2, + bias: u from fastdeblur.models.amx.pack.
// Returns [N, Ho, Wo, K] (Ho = (H + 1) / 2 for stride 2) in x's form.
at::Tensor amx_conv3x3(const at::Tensor& x, const at::Tensor& u, const at::Tensor& bias, int64_t stride) {
  TORCH_CHECK(stride == 1 || stride == 2, "amx_conv3x3: stride must be 1 or 2, got ", stride);
  const ConvArgs a = check_conv("amx_conv3x3", x, u, bias, false, 9, "[Kp/32, 9, C/32, 2, 16, 16, 2]", "pack");
  const int64_t N = a.xh.size(0), H = a.xh.size(1), W = a.xh.size(2);
  const int64_t Ho = stride == 2 ? (H + 1) / 2 : H, Wo = stride == 2 ? (W + 1) / 2 : W;
  at::Tensor out = at::empty({N, Ho, Wo, a.K}, a.xh.options());
#if FD_AMX_BUILT
  if (out.numel() > 0)
    run_conv(a.xh.const_data_ptr<T>(), out.mutable_data_ptr<T>(), u.const_data_ptr<T>(), a.bias.data(), N, H, W,
             a.C, a.K, stride, Ho, Wo);
#endif
  return a.xh.is_same(x) ? out : out.permute({0, 3, 1, 2});
}

// ConvTranspose2d(C, K, 4, stride=2, padding=1) + bias: u from fastdeblur.models.amx.pack_transpose.
// Returns [N, 2H, 2W, K] in x's form.
at::Tensor amx_conv_transpose4x4s2(const at::Tensor& x, const at::Tensor& u, const at::Tensor& bias) {
  const ConvArgs a = check_conv("amx_conv_transpose4x4s2", x, u, bias, true, 4, "[4, Kp/32, 4, C/32, 2, 16, 16, 2]",
                                "pack_transpose");
  const int64_t N = a.xh.size(0), H = a.xh.size(1), W = a.xh.size(2);
  at::Tensor out = at::empty({N, 2 * H, 2 * W, a.K}, a.xh.options());
#if FD_AMX_BUILT
  if (out.numel() > 0)
    run_up(a.xh.const_data_ptr<T>(), out.mutable_data_ptr<T>(), u.const_data_ptr<T>(), a.bias.data(), N, H, W, a.C,
           a.K);
#endif
  return a.xh.is_same(x) ? out : out.permute({0, 3, 1, 2});
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastdeblur, m) {
  // DMPHN's residual block h + conv2(relu(conv1(h) + b1)) + b2 on AMX, bfloat16 NHWC, C -> C
  // channels (a multiple of 32): a new tensor, or written over h
  m.def("amx_residual_block(Tensor h, Tensor u1, Tensor b1, Tensor u2, Tensor b2) -> Tensor");
  m.def("amx_residual_block_(Tensor(a!) h, Tensor u1, Tensor b1, Tensor u2, Tensor b2) -> Tensor(a!)");
  // a 3x3 convolution, padding 1, stride 1 or 2, + bias, on AMX: bfloat16 NHWC, C (a multiple of 32)
  // -> K channels (any)
  m.def("amx_conv3x3(Tensor x, Tensor u, Tensor bias, int stride) -> Tensor");
  // ConvTranspose2d(C, K, 4, stride=2, padding=1) + bias on AMX, bfloat16 NHWC, C a multiple of 32
  m.def("amx_conv_transpose4x4s2(Tensor x, Tensor u, Tensor bias) -> Tensor");
  // whether the kernels run dtype with in_channels input channels on this CPU
  m.def("amx_runs(ScalarType dtype, int in_channels) -> bool", &amx_runs);
}

TORCH_LIBRARY_IMPL(fastdeblur, CPU, m) {
  m.impl("amx_residual_block", &amx_residual_block);
  m.impl("amx_residual_block_", &amx_residual_block_);
  m.impl("amx_conv3x3", &amx_conv3x3);
  m.impl("amx_conv_transpose4x4s2", &amx_conv_transpose4x4s2);
}

}  // namespace fastdeblur
