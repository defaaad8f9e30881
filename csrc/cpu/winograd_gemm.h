// The GEMM micro-kernel of the Winograd kernel (see winograd_body.h), one for every instruction
// set: M[MR][NV * kLanes] = A[MR][C] . B for one NR-wide panel B of the packed weights
// (NR = NV * kLanes), calling tick() after each step (the pipelined loop does a piece of the
// transforms there; everything is inlined, so the accumulators stay in registers). The weights
// are packed [C / kPair][NR][kPair] per panel: each step broadcasts kPair consecutive input
// channels of a row of A and multiplies them into NR accumulators (bfloat16's vdpbf16ps takes
// pairs, float32's FMA one channel). winograd.cpp includes it in a namespace that first defines
// FD_TARGET, FD_INLINE, T, Vec, kLanes, vzero, vstoref and:
//   kPair, WVec                 input channels per step, and the vector type of a weight step
//   vloadw(const T*)            kLanes * kPair weights of one step
//   vbcastw(const T*)           kPair activations, broadcast to every lane
//   vdot(acc, a, b)             acc + the kPair products of a and b, lane by lane
// No include guard: it is meant to be included more than once.

template <int MR, int NV, typename Tick>
FD_TARGET FD_INLINE void micro_kernel(const T* A, int64_t lda, const T* B, int64_t C, float* M, int64_t ldm,
                                      Tick& tick) {
  Vec acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = vzero();
  for (int64_t c = 0; c < C; c += kPair) {
    WVec b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = vloadw(B + (c * NV + v * kPair) * kLanes);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const WVec a = vbcastw(A + r * lda + c);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = vdot(acc[r][v], a, b[v]);
    }
    tick();
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) vstoref(M + r * ldm + v * kLanes, acc[r][v]);
}
