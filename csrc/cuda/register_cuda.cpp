// Registers the CUDA kernels against the schemas declared in fastdeblur.cpp.
#include <torch/library.h>

#include "patch_ops_cuda.h"

TORCH_LIBRARY_IMPL(fastdeblur, CUDA, m) {
  m.impl("patch_split", &fastdeblur::patch_split_cuda);
  m.impl("patch_merge", &fastdeblur::patch_merge_cuda);
  m.impl("preprocess", &fastdeblur::preprocess_cuda);
  m.impl("postprocess", &fastdeblur::postprocess_cuda);
}
