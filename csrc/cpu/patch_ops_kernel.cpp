// CPU kernels of the patch and pixel ops: one pass over memory each, parallel over rows.
// Split and merge are one routine (copy patch rows between the image and the patch batch)
// run in either direction. Rows are contiguous runs in both layouts: `pw` values per channel
// for NCHW, `pw * C` values for channels_last, so the inner loops vectorize.
#include <ATen/Dispatch.h>
#include <ATen/Dispatch_v2.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>

#include "../patch_ops.h"

namespace fastdeblur {
namespace {

// Round to nearest, ties to even (as torch.round), for 0 <= v < 2^22: adding and removing
// 1.5 * 2^23 leaves the rounded value under IEEE arithmetic (no -ffast-math here, so the
// compiler keeps both operations), and unlike nearbyint it vectorizes on plain SSE2.
inline float round_half_even(float v) {
  constexpr float kMagic = 12582912.0f;
  return (v + kMagic) - kMagic;
}
inline double round_half_even(double v) { return std::nearbyint(v); }

template <typename T>
inline void copy_run(const T* __restrict s, const T* __restrict a, T* __restrict o, int64_t n, int64_t ss,
                     int64_t sa, int64_t so) {
  using acc = at::opmath_type<T>;
  if (ss == 1 && so == 1 && (a == nullptr || sa == 1)) {
    if (a == nullptr) {
      std::memcpy(o, s, n * sizeof(T));
    } else {
      for (int64_t i = 0; i < n; ++i) o[i] = static_cast<T>(static_cast<acc>(s[i]) + static_cast<acc>(a[i]));
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    acc v = static_cast<acc>(s[i * ss]);
    if (a != nullptr) v += static_cast<acc>(a[i * sa]);
    o[i * so] = static_cast<T>(v);
  }
}

// kSplit: image `src` [N, C, H, W] -> patches `out`; else patches `src` -> image `out`.
// `add` has the output's shape (any strides).
template <typename T, bool kSplit>
void patch_copy(const at::Tensor& src, const at::Tensor* add, at::Tensor& out, int64_t rows, int64_t cols) {
  const at::Tensor& P = kSplit ? out : src;
  const at::Tensor& I = kSplit ? src : out;
  const int64_t B = P.size(0), C = P.size(1), ph = P.size(2), pw = P.size(3);
  const auto sP = P.strides(), sI = I.strides();
  std::vector<int64_t> sA(4, 0);
  if (add) sA = add->strides().vec();
  const T* s_ptr = src.const_data_ptr<T>();
  const T* a_ptr = add ? add->const_data_ptr<T>() : nullptr;
  T* o_ptr = out.mutable_data_ptr<T>();
  const auto cl = at::MemoryFormat::ChannelsLast;
  // one flat run of pw*C values per patch row when every tensor is channels_last
  const bool flat = src.is_contiguous(cl) && out.is_contiguous(cl) && (!add || add->is_contiguous(cl)) && C > 1;

  at::parallel_for(0, B * ph, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, pw * C)), [&](int64_t begin, int64_t end) {
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t b = idx / ph, yy = idx % ph;
      const int64_t n = b / (rows * cols), r = (b / cols) % rows, k = b % cols;
      const int64_t y = r * ph + yy, x0 = k * pw;
      const int64_t p_off = b * sP[0] + yy * sP[2];
      const int64_t i_off = n * sI[0] + y * sI[2] + x0 * sI[3];
      const int64_t a_off = kSplit ? b * sA[0] + yy * sA[2] : n * sA[0] + y * sA[2] + x0 * sA[3];
      const int64_t s_off = kSplit ? i_off : p_off, o_off = kSplit ? p_off : i_off;
      if (flat) {
        copy_run<T>(s_ptr + s_off, a_ptr ? a_ptr + a_off : nullptr, o_ptr + o_off, pw * C, 1, 1, 1);
        continue;
      }
      const auto& sS = kSplit ? sI : sP;
      const auto& sO = kSplit ? sP : sI;
      for (int64_t ch = 0; ch < C; ++ch) {
        copy_run<T>(s_ptr + s_off + ch * sS[1], a_ptr ? a_ptr + a_off + ch * sA[1] : nullptr,
                    o_ptr + o_off + ch * sO[1], pw, sS[3], sA[3], sO[3]);
      }
    }
  });
}

template <bool kSplit>
at::Tensor patch_op_cpu(const at::Tensor& x, int64_t rows, int64_t cols, const c10::optional<at::Tensor>& add) {
  auto shape = kSplit ? patch_split_shape(x, rows, cols, add) : patch_merge_shape(x, rows, cols, add);
  at::Tensor out = at::empty(shape, x.options().memory_format(output_format(x)));
  if (out.numel() == 0) return out;
  const at::Tensor* a = add.has_value() ? &add.value() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "patch_copy", [&] {
    patch_copy<scalar_t, kSplit>(x, a, out, rows, cols);
  });
  return out;
}

at::Tensor patch_split_cpu(const at::Tensor& x, int64_t rows, int64_t cols, const c10::optional<at::Tensor>& add) {
  return patch_op_cpu<true>(x, rows, cols, add);
}

at::Tensor patch_merge_cpu(const at::Tensor& p, int64_t rows, int64_t cols, const c10::optional<at::Tensor>& add) {
  return patch_op_cpu<false>(p, rows, cols, add);
}

at::Tensor preprocess_cpu(const at::Tensor& img_in, int64_t multiple, at::ScalarType dtype) {
  check_preprocess(img_in, multiple, dtype);
  const at::Tensor img = (img_in.dim() == 3 ? img_in.unsqueeze(0) : img_in).contiguous();
  const int64_t N = img.size(0), H = img.size(1), W = img.size(2);
  const int64_t Hp = (H + multiple - 1) / multiple * multiple, Wp = (W + multiple - 1) / multiple * multiple;
  const bool reflect = (Hp - H) < H && (Wp - W) < W;  // as deblur() pads
  at::Tensor out = at::empty({N, 3, Hp, Wp}, img.options().dtype(dtype));
  const double maxv = pixel_max(img.scalar_type());
  AT_DISPATCH_V2(img.scalar_type(), "preprocess_in", AT_WRAP([&] {
    using in_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "preprocess_out", [&] {
      using acc = at::opmath_type<scalar_t>;
      const acc inv = acc(1) / static_cast<acc>(maxv);
      const in_t* src = img.const_data_ptr<in_t>();
      scalar_t* dst = out.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, N * Hp, 8, [&](int64_t begin, int64_t end) {
        for (int64_t idx = begin; idx < end; ++idx) {
          const int64_t n = idx / Hp, y = idx % Hp, sy = pad_index(y, H, reflect);
          const in_t* row = src + (n * H + sy) * W * 3;
          scalar_t* o[3];
          for (int64_t c = 0; c < 3; ++c) o[c] = dst + ((n * 3 + c) * Hp + y) * Wp;
          for (int64_t x = 0; x < Wp; ++x) {  // read RGB triples, write three planes
            const in_t* px = row + (x < W ? x : pad_index(x, W, reflect)) * 3;
            for (int64_t c = 0; c < 3; ++c)
              o[c][x] = static_cast<scalar_t>(static_cast<acc>(px[c]) * inv - acc(0.5));
          }
        }
      });
    });
  }), at::kByte, at::kUInt16, AT_EXPAND(AT_FLOATING_TYPES), at::kHalf, at::kBFloat16);
  return out;
}

at::Tensor postprocess_cpu(const at::Tensor& y_in, int64_t height, int64_t width, at::ScalarType dtype) {
  check_postprocess(y_in, height, width, dtype);
  const at::Tensor y = y_in.contiguous();
  const int64_t N = y.size(0), Hp = y.size(2), Wp = y.size(3);
  at::Tensor out = at::empty({N, height, width, 3}, y.options().dtype(dtype));
  const double maxv = pixel_max(dtype);
  const bool integer = dtype == at::kByte || dtype == at::kUInt16;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "postprocess_in", [&] {
    using in_t = scalar_t;
    using acc = at::opmath_type<in_t>;
    const in_t* src = y.const_data_ptr<in_t>();
    AT_DISPATCH_V2(dtype, "postprocess_out", AT_WRAP([&] {
      scalar_t* dst = out.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, N * height, 8, [&](int64_t begin, int64_t end) {
        for (int64_t idx = begin; idx < end; ++idx) {
          const int64_t n = idx / height, r = idx % height;
          scalar_t* o = dst + idx * width * 3;
          const in_t* rows[3];
          for (int64_t c = 0; c < 3; ++c) rows[c] = src + ((n * 3 + c) * Hp + r) * Wp;
          for (int64_t x = 0; x < width; ++x) {  // interleave three planes into RGB triples
            for (int64_t c = 0; c < 3; ++c) {
              acc v = static_cast<acc>(rows[c][x]) + acc(0.5);
              v = v < acc(0) ? acc(0) : (v > acc(1) ? acc(1) : v);
              o[x * 3 + c] = integer ? static_cast<scalar_t>(round_half_even(v * static_cast<acc>(maxv)))
                                     : static_cast<scalar_t>(v);
            }
          }
        }
      });
    }), at::kByte, at::kUInt16, AT_EXPAND(AT_FLOATING_TYPES), at::kHalf, at::kBFloat16);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastdeblur, CPU, m) {
  m.impl("patch_split", &patch_split_cpu);
  m.impl("patch_merge", &patch_merge_cpu);
  m.impl("preprocess", &preprocess_cpu);
  m.impl("postprocess", &postprocess_cpu);
}

}  // namespace fastdeblur
