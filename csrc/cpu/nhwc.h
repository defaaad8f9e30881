// The CPU ops' layout helpers (winograd.cpp, conv_small_k.cpp): they take NHWC memory either
// as a contiguous [N, H, W, C] tensor or as the channels_last [N, C, H, W] view of one.
#pragma once

#include <ATen/core/Tensor.h>

namespace fastdeblur {

// An input x of C channels as the [N, H, W, C] tensor the kernels read: a channels_last
// [N, C, H, W] view is permuted, including one that is contiguous in both formats (a 1x1 image,
// an empty batch), unless its last dim is C too, which makes it an [N, H, W, C] tensor already.
// Anything else is returned as it is, for the caller's contiguity and channel checks.
inline at::Tensor nhwc_input(const at::Tensor& x, int64_t C) {
  const bool view = x.dim() == 4 && x.size(1) == C && x.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                    !(x.is_contiguous() && x.size(3) == C);
  return view ? x.permute({0, 2, 3, 1}) : x;
}

// An output-shaped tensor t (an add, an accumulator) as [N, H, W, K]: t itself when it has that
// shape, else its channels_last [N, K, H, W] view permuted (the caller checks the result).
inline at::Tensor nhwc_output(const at::Tensor& t, at::IntArrayRef nhwc_sizes) {
  if (t.dim() != 4 || t.sizes() == nhwc_sizes) return t;
  return t.is_contiguous(at::MemoryFormat::ChannelsLast) ? t.permute({0, 2, 3, 1}) : t;
}

}  // namespace fastdeblur
