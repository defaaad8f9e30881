// The AVX-512 half of the few-output-channel convolution's instruction-set layer
// (conv_small_k.cpp), shared by its bfloat16 and float32 kernels: 4 pixels x 4 output channels
// in 16 accumulators. Included inside a namespace that first defines FD_TARGET and includes
// vec_f32_avx512.h; no include guard.

// Lane i of the result: the sum of v[i]'s 16 lanes, by a transposing tree (unpack, shuffle, then
// two rounds of 128-bit block shuffles), adding at each step.
FD_TARGET inline Vec reduce(const Vec* v) {
  Vec a[8], b[4], c[2];
  for (int i = 0; i < 8; ++i)  // per 128-bit block: (v[2i], v[2i+1], v[2i], v[2i+1]) partial sums
    a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i)  // per 128-bit block: v[4i .. 4i+3]
    b[i] = _mm512_add_ps(_mm512_shuffle_ps(a[2 * i], a[2 * i + 1], 0x44),
                         _mm512_shuffle_ps(a[2 * i], a[2 * i + 1], 0xEE));
  for (int i = 0; i < 2; ++i)  // blocks: v[8i .. 8i+3] twice, then v[8i+4 .. 8i+7] twice
    c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], 0x88), _mm512_shuffle_f32x4(c[0], c[1], 0xDD));
}

// Lanes p * 4 + k (p < np, k < K) packed to the front, in that order: the row's output memory.
FD_TARGET inline Vec compress_k(Vec r, int np, int K) {
  const unsigned keep = (0x1111u * ((1u << K) - 1)) & ((1u << (4 * np)) - 1);
  return _mm512_maskz_compress_ps(static_cast<__mmask16>(keep), r);
}
