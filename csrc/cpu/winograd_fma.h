// The float32 GEMM micro-kernel of the Winograd kernel (see winograd_body.h), for the instruction
// sets whose namespace in winograd.cpp defines FD_TARGET, T (float), Vec, kLanes, vloadf, vstoref,
// vzero, vbcast(const float*) and vfma(a, b, c) = a * b + c. Weights are packed [C][NR] per panel
// (NR = NV * kLanes); each input channel is one broadcast activation per FMA row.
// No include guard: it is meant to be included more than once.

template <int MR, int NV>
FD_TARGET void micro_kernel(const T* A, int64_t lda, const T* B, int64_t C, float* M, int64_t ldm) {
  Vec acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = vzero();
  for (int64_t c = 0; c < C; ++c) {
    Vec b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = vloadf(B + (c * NV + v) * kLanes);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const Vec a = vbcast(A + r * lda + c);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = vfma(a, b[v], acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) vstoref(M + r * ldm + v * kLanes, acc[r][v]);
}
