// The CPU ops' one layout helper (winograd.cpp, conv_small_k.cpp): they take NHWC memory either
// as a contiguous [N, H, W, C] tensor or as the channels_last [N, C, H, W] view of one.
#pragma once

#include <ATen/core/Tensor.h>

namespace fastdeblur {

// A channels_last [N, C, H, W] view of NHWC memory as the [N, H, W, C] tensor it is; else t itself.
inline at::Tensor nhwc(const at::Tensor& t) {
  const bool view = t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast) && !t.is_contiguous();
  return view ? t.permute({0, 2, 3, 1}) : t;
}

}  // namespace fastdeblur
