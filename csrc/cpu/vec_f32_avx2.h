// float32 vector operations on AVX2 with FMA for the extension's CPU kernels (winograd.cpp,
// conv_small_k.cpp): included inside an instruction-set namespace that first defines FD_TARGET.
// No include guard: it is meant to be included more than once.

using Vec = __m256;
constexpr int64_t kLanes = 8;
FD_TARGET inline Vec vzero() { return _mm256_setzero_ps(); }
FD_TARGET inline Vec vloadf(const float* p) { return _mm256_loadu_ps(p); }
FD_TARGET inline void vstoref(float* p, Vec v) { _mm256_storeu_ps(p, v); }
FD_TARGET inline Vec vadd(Vec a, Vec b) { return _mm256_add_ps(a, b); }
FD_TARGET inline Vec vsub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
FD_TARGET inline Vec vmax(Vec a, Vec b) { return _mm256_max_ps(a, b); }
// a * s, c + a * s and c - a * s for a scalar s
FD_TARGET inline Vec vmul(Vec a, float s) { return _mm256_mul_ps(a, _mm256_set1_ps(s)); }
FD_TARGET inline Vec vfma(Vec a, float s, Vec c) { return _mm256_fmadd_ps(a, _mm256_set1_ps(s), c); }
FD_TARGET inline Vec vfnma(Vec a, float s, Vec c) { return _mm256_fnmadd_ps(a, _mm256_set1_ps(s), c); }
