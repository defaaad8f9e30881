// CUDA kernels of the patch and pixel ops: one thread per output element, threads walk the
// output in its memory order (channels fastest for channels_last), so stores coalesce and
// loads of the same row stay in the same cache lines. int64 indexing throughout.
#include <ATen/Dispatch.h>
#include <ATen/Dispatch_v2.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "../patch_ops.h"
#include "patch_ops_cuda.h"

namespace fastdeblur {
namespace {

constexpr int kThreads = 256;

struct Strides4 {
  int64_t s[4];
};

inline Strides4 strides_of(const at::Tensor& t) {
  Strides4 r{};
  for (int i = 0; i < 4; ++i) r.s[i] = t.stride(i);
  return r;
}

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// Patch tensor P [B, C, ph, pw] <-> image I [N, C, H, W]; kSplit writes P, else writes I.
template <typename T, bool kSplit>
__global__ void patch_copy_kernel(const T* __restrict__ src, const T* __restrict__ add, T* __restrict__ out,
                                  int64_t total, int64_t C, int64_t ph, int64_t pw, int64_t rows, int64_t cols,
                                  Strides4 sP, Strides4 sI, Strides4 sA, bool channels_last) {
  using acc = at::opmath_type<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    // coordinates in the patch tensor, decoded in the output's memory order
    int64_t b, ch, yy, xx, rest = i;
    if (channels_last) {
      ch = rest % C; rest /= C;
      xx = rest % pw; rest /= pw;
      yy = rest % ph; b = rest / ph;
    } else {
      xx = rest % pw; rest /= pw;
      yy = rest % ph; rest /= ph;
      ch = rest % C; b = rest / C;
    }
    const int64_t n = b / (rows * cols), r = (b / cols) % rows, k = b % cols;
    const int64_t y = r * ph + yy, x = k * pw + xx;
    const int64_t p_off = b * sP.s[0] + ch * sP.s[1] + yy * sP.s[2] + xx * sP.s[3];
    const int64_t i_off = n * sI.s[0] + ch * sI.s[1] + y * sI.s[2] + x * sI.s[3];
    acc v = static_cast<acc>(src[kSplit ? i_off : p_off]);
    if (add != nullptr) {
      v += static_cast<acc>(kSplit ? add[b * sA.s[0] + ch * sA.s[1] + yy * sA.s[2] + xx * sA.s[3]]
                                   : add[n * sA.s[0] + ch * sA.s[1] + y * sA.s[2] + x * sA.s[3]]);
    }
    out[kSplit ? p_off : i_off] = static_cast<T>(v);
  }
}

template <bool kSplit>
at::Tensor patch_op_cuda(const at::Tensor& x, int64_t rows, int64_t cols, const c10::optional<at::Tensor>& add) {
  auto shape = kSplit ? patch_split_shape(x, rows, cols, add) : patch_merge_shape(x, rows, cols, add);
  TORCH_CHECK(x.is_cuda(), "x must be a CUDA tensor");
  c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty(shape, x.options().memory_format(output_format(x)));
  const int64_t total = out.numel();
  if (total == 0) return out;
  const at::Tensor& P = kSplit ? out : x;
  const at::Tensor& I = kSplit ? x : out;
  const bool cl = out.is_contiguous(at::MemoryFormat::ChannelsLast) && !out.is_contiguous();
  Strides4 sA{};
  if (add.has_value()) sA = strides_of(*add);
  auto stream = c10::cuda::getCurrentCUDAStream();
  const unsigned blocks = std::min<int64_t>(blocks_for(total), 65535LL * 8);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "patch_copy_cuda", [&] {
    patch_copy_kernel<scalar_t, kSplit><<<blocks, kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), add.has_value() ? add->const_data_ptr<scalar_t>() : nullptr,
        out.mutable_data_ptr<scalar_t>(), total, P.size(1), P.size(2), P.size(3), rows, cols, strides_of(P),
        strides_of(I), sA, cl);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

__device__ inline int64_t pad_index_d(int64_t i, int64_t size, bool reflect) {
  if (i < size) return i;
  return reflect ? 2 * (size - 1) - i : size - 1;
}

// Multiply without letting nvcc contract the following subtraction into an FMA: the result must
// round exactly like torch's separate `* inv` and `- 0.5` (and like the CPU kernel).
__device__ inline float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ inline double mul_rn(double a, double b) { return __dmul_rn(a, b); }

template <typename In, typename Out>
__global__ void preprocess_kernel(const In* __restrict__ img, Out* __restrict__ out, int64_t total, int64_t H,
                                  int64_t W, int64_t Hp, int64_t Wp, bool reflect, double inv) {
  using acc = at::opmath_type<Out>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t x = i % Wp, y = (i / Wp) % Hp, c = (i / (Wp * Hp)) % 3, n = i / (Wp * Hp * 3);
    const int64_t sy = pad_index_d(y, H, reflect), sx = pad_index_d(x, W, reflect);
    out[i] = static_cast<Out>(mul_rn(static_cast<acc>(img[((n * H + sy) * W + sx) * 3 + c]), static_cast<acc>(inv)) -
                              acc(0.5));
  }
}

template <typename In, typename Out>
__global__ void postprocess_kernel(const In* __restrict__ y, Out* __restrict__ out, int64_t total, int64_t height,
                                   int64_t width, int64_t Hp, int64_t Wp, float maxv, bool integer) {
  using acc = at::opmath_type<In>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i % 3, x = (i / 3) % width, r = (i / (3 * width)) % height, n = i / (3 * width * height);
    acc v = static_cast<acc>(y[((n * 3 + c) * Hp + r) * Wp + x]) + acc(0.5);
    v = v < acc(0) ? acc(0) : (v > acc(1) ? acc(1) : v);
    out[i] = integer ? static_cast<Out>(nearbyint(v * static_cast<acc>(maxv))) : static_cast<Out>(v);
  }
}

}  // namespace

at::Tensor patch_split_cuda(const at::Tensor& x, int64_t rows, int64_t cols, const c10::optional<at::Tensor>& add) {
  return patch_op_cuda<true>(x, rows, cols, add);
}

at::Tensor patch_merge_cuda(const at::Tensor& p, int64_t rows, int64_t cols, const c10::optional<at::Tensor>& add) {
  return patch_op_cuda<false>(p, rows, cols, add);
}

at::Tensor preprocess_cuda(const at::Tensor& img_in, int64_t multiple, at::ScalarType dtype) {
  check_preprocess(img_in, multiple, dtype);
  TORCH_CHECK(img_in.is_cuda(), "img must be a CUDA tensor");
  c10::cuda::CUDAGuard guard(img_in.device());
  const at::Tensor img = (img_in.dim() == 3 ? img_in.unsqueeze(0) : img_in).contiguous();
  const int64_t N = img.size(0), H = img.size(1), W = img.size(2);
  const int64_t Hp = (H + multiple - 1) / multiple * multiple, Wp = (W + multiple - 1) / multiple * multiple;
  const bool reflect = (Hp - H) < H && (Wp - W) < W;
  at::Tensor out = at::empty({N, 3, Hp, Wp}, img.options().dtype(dtype));
  const int64_t total = out.numel();
  if (total == 0) return out;
  const double inv = 1.0 / pixel_max(img.scalar_type());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const unsigned blocks = std::min<int64_t>(blocks_for(total), 65535LL * 8);
  AT_DISPATCH_V2(img.scalar_type(), "preprocess_cuda_in", AT_WRAP([&] {
    using in_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "preprocess_cuda_out", [&] {
      preprocess_kernel<in_t, scalar_t><<<blocks, kThreads, 0, stream>>>(
          img.const_data_ptr<in_t>(), out.mutable_data_ptr<scalar_t>(), total, H, W, Hp, Wp, reflect, inv);
    });
  }), at::kByte, at::kUInt16, AT_EXPAND(AT_FLOATING_TYPES), at::kHalf, at::kBFloat16);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor postprocess_cuda(const at::Tensor& y_in, int64_t height, int64_t width, at::ScalarType dtype) {
  check_postprocess(y_in, height, width, dtype);
  TORCH_CHECK(y_in.is_cuda(), "y must be a CUDA tensor");
  c10::cuda::CUDAGuard guard(y_in.device());
  const at::Tensor y = y_in.contiguous();
  const int64_t N = y.size(0), Hp = y.size(2), Wp = y.size(3);
  at::Tensor out = at::empty({N, height, width, 3}, y.options().dtype(dtype));
  const int64_t total = out.numel();
  if (total == 0) return out;
  const bool integer = dtype == at::kByte || dtype == at::kUInt16;
  const float maxv = static_cast<float>(pixel_max(dtype));
  auto stream = c10::cuda::getCurrentCUDAStream();
  const unsigned blocks = std::min<int64_t>(blocks_for(total), 65535LL * 8);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "postprocess_cuda_in", [&] {
    using in_t = scalar_t;
    AT_DISPATCH_V2(dtype, "postprocess_cuda_out", AT_WRAP([&] {
      postprocess_kernel<in_t, scalar_t><<<blocks, kThreads, 0, stream>>>(
          y.const_data_ptr<in_t>(), out.mutable_data_ptr<scalar_t>(), total, height, width, Hp, Wp, maxv, integer);
    }), at::kByte, at::kUInt16, AT_EXPAND(AT_FLOATING_TYPES), at::kHalf, at::kBFloat16);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace fastdeblur
