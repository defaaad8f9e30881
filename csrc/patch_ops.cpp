// Argument checks for the patch and pixel ops: every message names the argument at fault.
#include "patch_ops.h"

namespace fastdeblur {

at::MemoryFormat output_format(const at::Tensor& x) {
  if (x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast))
    return at::MemoryFormat::ChannelsLast;
  return at::MemoryFormat::Contiguous;
}

static void check_float(const at::Tensor& t, const char* name) {
  auto s = t.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kHalf || s == at::kBFloat16 || s == at::kDouble, name,
              " must be float64, float32, float16 or bfloat16, got ", s);
}

static void check_add(const c10::optional<at::Tensor>& add, const at::Tensor& like,
                      const std::vector<int64_t>& shape) {
  if (!add.has_value()) return;
  TORCH_CHECK(add->sizes() == at::IntArrayRef(shape), "add must have shape ", at::IntArrayRef(shape),
              ", got ", add->sizes());
  TORCH_CHECK(add->scalar_type() == like.scalar_type(), "add must have dtype ", like.scalar_type(),
              ", got ", add->scalar_type());
  TORCH_CHECK(add->device() == like.device(), "add must be on ", like.device(), ", got ", add->device());
}

std::vector<int64_t> patch_split_shape(const at::Tensor& x, int64_t rows, int64_t cols,
                                       const c10::optional<at::Tensor>& add) {
  TORCH_CHECK(x.dim() == 4, "x must be [N, C, H, W], got ", x.dim(), " dims");
  TORCH_CHECK(rows > 0 && cols > 0, "rows and cols must be positive, got ", rows, "x", cols);
  check_float(x, "x");
  TORCH_CHECK(x.size(2) % rows == 0 && x.size(3) % cols == 0, "x of ", x.size(2), "x", x.size(3),
              " does not split into a ", rows, "x", cols, " grid of equal patches");
  std::vector<int64_t> shape{x.size(0) * rows * cols, x.size(1), x.size(2) / rows, x.size(3) / cols};
  check_add(add, x, shape);
  return shape;
}

std::vector<int64_t> patch_merge_shape(const at::Tensor& p, int64_t rows, int64_t cols,
                                       const c10::optional<at::Tensor>& add) {
  TORCH_CHECK(p.dim() == 4, "p must be [N*rows*cols, C, h, w], got ", p.dim(), " dims");
  TORCH_CHECK(rows > 0 && cols > 0, "rows and cols must be positive, got ", rows, "x", cols);
  check_float(p, "p");
  TORCH_CHECK(p.size(0) % (rows * cols) == 0, "p's batch of ", p.size(0), " is not a multiple of the ",
              rows, "x", cols, " grid");
  std::vector<int64_t> shape{p.size(0) / (rows * cols), p.size(1), p.size(2) * rows, p.size(3) * cols};
  check_add(add, p, shape);
  return shape;
}

double pixel_max(at::ScalarType t) {
  if (t == at::kByte) return 255.0;
  if (t == at::kUInt16) return 65535.0;
  return 1.0;
}

static bool is_pixel_type(at::ScalarType t) {
  return t == at::kByte || t == at::kUInt16 || t == at::kFloat || t == at::kHalf || t == at::kBFloat16 ||
         t == at::kDouble;
}

void check_preprocess(const at::Tensor& img, int64_t multiple, at::ScalarType dtype) {
  TORCH_CHECK(img.dim() == 3 || img.dim() == 4, "img must be [H, W, 3] or [N, H, W, 3], got ", img.dim(), " dims");
  TORCH_CHECK(img.size(-1) == 3, "img must have 3 channels in its last dim, got ", img.size(-1));
  TORCH_CHECK(is_pixel_type(img.scalar_type()), "img must be uint8, uint16 or float, got ", img.scalar_type());
  TORCH_CHECK(multiple > 0, "multiple must be positive, got ", multiple);
  TORCH_CHECK(img.size(-3) > 0 && img.size(-2) > 0, "img is empty");
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kDouble,
              "dtype must be a float type, got ", dtype);
}

void check_postprocess(const at::Tensor& y, int64_t height, int64_t width, at::ScalarType dtype) {
  TORCH_CHECK(y.dim() == 4 && y.size(1) == 3, "y must be [N, 3, Hp, Wp], got ", y.sizes());
  check_float(y, "y");
  TORCH_CHECK(height > 0 && width > 0 && height <= y.size(2) && width <= y.size(3), "height and width (",
              height, "x", width, ") must be positive and within y's ", y.size(2), "x", y.size(3));
  TORCH_CHECK(is_pixel_type(dtype), "dtype must be uint8, uint16 or float, got ", dtype);
}

}  // namespace fastdeblur
