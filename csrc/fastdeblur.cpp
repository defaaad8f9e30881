// Op schemas of the fastdeblur extension and the Python module entry point.
// Each op is declared once here; CPU and CUDA kernels register against these schemas in
// their own files, and fake kernels and autograd are registered from Python
// (fastdeblur/_ext.py), so the same op works eagerly, under autograd and in torch.compile.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing fastdeblur._C loads this library, which runs the registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(fastdeblur, m) {
  // x [N, C, H, W] -> [N*rows*cols, C, H/rows, W/cols], row-major patches; `add` (same layout
  // as the output) is added on the way.
  m.def("patch_split(Tensor x, int rows, int cols, Tensor? add=None) -> Tensor");
  // p [N*rows*cols, C, h, w] -> [N, C, h*rows, w*cols]; `add` (merged layout) added on the way.
  m.def("patch_merge(Tensor p, int rows, int cols, Tensor? add=None) -> Tensor");
  // img [H, W, 3] / [N, H, W, 3] uint8, uint16 or float -> [N, 3, Hp, Wp] in `dtype`,
  // value img/max - 0.5, padded at the bottom and right to a multiple of `multiple`.
  m.def("preprocess(Tensor img, int multiple, ScalarType dtype) -> Tensor");
  // y [N, 3, Hp, Wp] float -> [N, height, width, 3] in `dtype`: round(clamp(y + 0.5, 0, 1) * max).
  m.def("postprocess(Tensor y, int height, int width, ScalarType dtype) -> Tensor");
}
