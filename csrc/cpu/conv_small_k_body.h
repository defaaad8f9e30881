// The instruction-set-independent part of the few-output-channel 3x3 convolution
// (conv_small_k.cpp), included once per instruction set inside a namespace that first defines:
//   FD_TARGET               the function attribute enabling that instruction set
//   T, kChunk               the activation type and the input channels one weight step covers
//   Vec, kLanes, vzero(), vloadf(const float*), vadd(a, b)
//                           a float32 vector and its lanes (16 or 8: vec_f32_avx512.h or
//                           vec_f32_avx2.h); kPix = kLanes / 4 pixels a group, with 4 output
//                           channels each (16 or 8 accumulators)
//   WVec, vloadw(const T*)  kChunk activations or weights as the dot product's operand
//   vdot(acc, a, b)         acc + the products of a and b, summed within each float32 lane
//   reduce(const Vec* v)    lane i = the sum of v[i]'s lanes (i < kLanes)
//   store_k(T*, Vec r, np, K)  for p < np, k < K: out[p * K + k] = r[p * 4 + k], rounded to T
//   kGroups<K>              groups of kPix pixels a step takes (as many as fit the registers)
// No include guard: it is meant to be included more than once.

// Output row y of one image: out[y][x][0:K] = bias + sum over the 3x3 taps and C channels, for
// kGroups<K> x kPix pixels at a time (kPix x 4 accumulators a group: 4 output channels each, the
// first K of them computed; the others stay zero through the reduction, so the decoders' 3
// channels cost 3 dot products a pixel and tap, not 4). Each group's kLanes accumulators reduce
// to its kPix pixels' outputs; more than one group shares each tap's setup and weight loads.
// img: [H, W, C]; w: [9][4][C] (taps row-major, output channels padded to 4 with zeros).
template <int K>
FD_TARGET void small_k_row(const T* img, const T* w, const float* bias, T* out, int64_t H, int64_t W, int64_t C,
                           int64_t y) {
  constexpr int kPix = kLanes / 4, kG = kGroups<K>, kStep = kG * kPix;
  alignas(64) float bl[kLanes] = {};
  for (int p = 0; p < kPix; ++p)
    for (int k = 0; k < K; ++k) bl[p * 4 + k] = bias[k];
  const Vec bvec = vloadf(bl);
  for (int64_t x0 = 0; x0 < W; x0 += kStep) {
    const int np = static_cast<int>(std::min<int64_t>(kStep, W - x0));
    Vec acc[kG * kLanes];
    for (auto& a : acc) a = vzero();
    for (int dy = -1; dy <= 1; ++dy) {
      const int64_t yy = y + dy;
      if (yy < 0 || yy >= H) continue;
      const T* row = img + yy * W * C;
      for (int dx = -1; dx <= 1; ++dx) {
        const T* wt = w + ((dy + 1) * 3 + (dx + 1)) * 4 * C;
        for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
          WVec wv[K];
          for (int k = 0; k < K; ++k) wv[k] = vloadw(wt + k * C + c0);
          for (int p = 0; p < kStep; ++p) {
            const int64_t xx = x0 + p + dx;
            if (p >= np || xx < 0 || xx >= W) continue;
            const WVec xv = vloadw(row + xx * C + c0);
            for (int k = 0; k < K; ++k) acc[p * 4 + k] = vdot(acc[p * 4 + k], xv, wv[k]);
          }
        }
      }
    }
    for (int g = 0; g < kG && g * kPix < np; ++g)
      store_k(out + (y * W + x0 + g * kPix) * K, vadd(reduce(acc + g * kLanes), bvec), std::min(np - g * kPix, kPix),
              K);
  }
}
