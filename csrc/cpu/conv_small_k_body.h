// The instruction-set-independent part of the few-output-channel 3x3 convolution
// (conv_small_k.cpp), included once per instruction set inside a namespace that first defines:
//   FD_TARGET              the function attribute enabling that instruction set
//   T, kChunk              the activation type and the input channels one weight step covers
//   WVec, vloadw(const T*) kChunk activations or weights as the dot product's operand
//   vdot(acc, a, b)        acc + the products of a and b, summed within each float32 lane
//   vstore_n(T*, __m512, n) the first n float32 lanes, rounded to T
// No include guard: it is meant to be included more than once.

// Lane i of the result: the sum of v[i]'s 16 lanes.
FD_TARGET inline __m512 reduce16(const __m512* v) {
  __m512 a[8], b[4], c[2];
  for (int i = 0; i < 8; ++i)  // per 128-bit block: (v[2i], v[2i+1], v[2i], v[2i+1]) partial sums
    a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i)  // per 128-bit block: v[4i .. 4i+3]
    b[i] = _mm512_add_ps(_mm512_shuffle_ps(a[2 * i], a[2 * i + 1], 0x44), _mm512_shuffle_ps(a[2 * i], a[2 * i + 1], 0xEE));
  for (int i = 0; i < 2; ++i)  // blocks (v[8i..8i+3], v[8i..8i+3], v[8i+4..8i+7], v[8i+4..8i+7])
    c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], 0x88), _mm512_shuffle_f32x4(c[0], c[1], 0xDD));
}

// Output row y of one image: out[y][x][0:K] = bias + sum over the 3x3 taps and C channels, for
// 4 pixels at a time (16 accumulators: 4 pixels x 4 output channels, K <= 4 of them real).
// img: [H, W, C]; w: [9][4][C] (taps row-major, output channels padded to 4 with zeros).
FD_TARGET void small_k_row(const T* img, const T* w, const float* bias, T* out, int64_t H, int64_t W, int64_t C,
                           int64_t K, int64_t y) {
  alignas(64) float bl[16] = {};
  for (int p = 0; p < 4; ++p)
    for (int k = 0; k < K; ++k) bl[p * 4 + k] = bias[k];
  const __m512 bvec = _mm512_load_ps(bl);
  __mmask16 keep = 0;  // lanes p * 4 + k with k < K
  for (int p = 0; p < 4; ++p) keep |= static_cast<__mmask16>(((1u << K) - 1) << (4 * p));
  for (int64_t x0 = 0; x0 < W; x0 += 4) {
    const int np = static_cast<int>(std::min<int64_t>(4, W - x0));
    __m512 acc[16];
    for (auto& a : acc) a = _mm512_setzero_ps();
    for (int dy = -1; dy <= 1; ++dy) {
      const int64_t yy = y + dy;
      if (yy < 0 || yy >= H) continue;
      const T* row = img + yy * W * C;
      for (int dx = -1; dx <= 1; ++dx) {
        const T* wt = w + ((dy + 1) * 3 + (dx + 1)) * 4 * C;
        for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
          WVec wv[4];
          for (int k = 0; k < 4; ++k) wv[k] = vloadw(wt + k * C + c0);
          for (int p = 0; p < 4; ++p) {
            const int64_t xx = x0 + p + dx;
            if (p >= np || xx < 0 || xx >= W) continue;
            const WVec xv = vloadw(row + xx * C + c0);
            for (int k = 0; k < 4; ++k) acc[p * 4 + k] = vdot(acc[p * 4 + k], xv, wv[k]);
          }
        }
      }
    }
    const __m512 r = _mm512_add_ps(reduce16(acc), bvec);
    const __mmask16 lanes = np == 4 ? keep : static_cast<__mmask16>(keep & ((1u << (4 * np)) - 1));
    vstore_n(out + (y * W + x0) * K, _mm512_maskz_compress_ps(lanes, r), np * static_cast<int>(K));
  }
}
