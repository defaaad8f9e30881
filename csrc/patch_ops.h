// Shared shape checks and index helpers for the patch and pixel ops (CPU and CUDA).
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Optional.h>

namespace fastdeblur {

// Checks shared by both devices; return the output shape.
std::vector<int64_t> patch_split_shape(const at::Tensor& x, int64_t rows, int64_t cols,
                                       const c10::optional<at::Tensor>& add);
std::vector<int64_t> patch_merge_shape(const at::Tensor& p, int64_t rows, int64_t cols,
                                       const c10::optional<at::Tensor>& add);
void check_preprocess(const at::Tensor& img, int64_t multiple, at::ScalarType dtype);
void check_postprocess(const at::Tensor& y, int64_t height, int64_t width, at::ScalarType dtype);

// The memory format the output of a layout op keeps: channels_last in, channels_last out.
at::MemoryFormat output_format(const at::Tensor& x);

// Reflect (or, when the pad is as large as the side, replicate) index into [0, size).
inline int64_t pad_index(int64_t i, int64_t size, bool reflect) {
  if (i < size) return i;
  return reflect ? 2 * (size - 1) - i : size - 1;
}

// Largest value of an integer image type, 1 for floats.
double pixel_max(at::ScalarType t);

}  // namespace fastdeblur
