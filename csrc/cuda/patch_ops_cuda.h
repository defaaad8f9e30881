// CUDA launchers of the patch and pixel ops (defined in patch_ops_kernel.cu, registered in
// register_cuda.cpp so the .cu file stays free of the heavy torch/library headers).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

namespace fastdeblur {
at::Tensor patch_split_cuda(const at::Tensor& x, int64_t rows, int64_t cols, const c10::optional<at::Tensor>& add);
at::Tensor patch_merge_cuda(const at::Tensor& p, int64_t rows, int64_t cols, const c10::optional<at::Tensor>& add);
at::Tensor preprocess_cuda(const at::Tensor& img, int64_t multiple, at::ScalarType dtype);
at::Tensor postprocess_cuda(const at::Tensor& y, int64_t height, int64_t width, at::ScalarType dtype);
}  // namespace fastdeblur
