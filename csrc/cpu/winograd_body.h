// The instruction-set-independent part of the Winograd kernels: transforms, block GEMM loop and
// the per-thread block loop, templated on the variant VAR (Tiles<VAR> in winograd.cpp: F(2x2, 3x3),
// F(4x4, 3x3), or the 4x4 stride-2 transposed convolution as four F(2x2, 2x2) phases).
// winograd.cpp includes it once per instruction set, inside a namespace that first defines:
//   FD_TARGET                          the function attribute enabling that instruction set
//   T                                  the activation type (at::BFloat16 or float)
//   Vec, kLanes, vloadf, vstoref, vadd, vsub, vmax, vzero, vfma, vfnma
//                                      float32 vectors (vec_f32_avx512.h or vec_f32_avx2.h)
//   vload(const T*), vstore(T*, Vec)   activations <-> float32 vectors (rounding on the way out)
//   micro_kernel<MR, NV>(A, lda, B, C, M, ldm)
//                                      M[MR][NV * kLanes] = A[MR][C] . B, B one NR-wide panel of
//                                      the packed weights (NR = NV * kLanes): winograd_gemm.h
// No include guard: it is meant to be included more than once.

// B^T d of one column (or row) of an input tile: Tiles<VAR>::in values to ::pos.
// F(2x2, 3x3): (d0 - d2, d1 + d2, d2 - d1, d1 - d3).
// F(4x4, 3x3) (Lavin and Gray's, points 0, +-1, +-2):
//   (4 d0 - 5 d2 + d4, -4 d1 - 4 d2 + d3 + d4, 4 d1 - 4 d2 - d3 + d4,
//    -2 d1 - d2 + 2 d3 + d4, 2 d1 - d2 - 2 d3 + d4, 4 d1 - 5 d3 + d5).
// Transposed 4x4 stride 2: input row i feeds output rows 2i - 1 + ky, so output row 2i + p takes
// input rows (i - 1, i) for p = 0 (kernel rows 3, 1) and (i, i + 1) for p = 1 (kernel rows 2, 0):
// two 2-tap correlations, each F(2x2, 2x2) with points 1, -1 and infinity (B^T = (d0 + d1,
// d1 - d0, d2 - d0)), on input rows 0-2 (phase 0) and 1-3 (phase 1) of the tile.
template <int VAR>
FD_TARGET inline void bt(const Vec* d, Vec* v) {
  if constexpr (VAR == kF2) {
    v[0] = vsub(d[0], d[2]);
    v[1] = vadd(d[1], d[2]);
    v[2] = vsub(d[2], d[1]);
    v[3] = vsub(d[1], d[3]);
  } else if constexpr (VAR == kF4) {
    const Vec a = vfnma(d[2], 4.f, d[4]), b = vfnma(d[1], 4.f, d[3]);  // d4 - 4 d2, d3 - 4 d1
    const Vec c = vsub(d[4], d[2]), e = vsub(d[3], d[1]);
    v[0] = vfma(d[0], 4.f, vfnma(d[2], 5.f, d[4]));
    v[1] = vadd(a, b);
    v[2] = vsub(a, b);
    v[3] = vfma(e, 2.f, c);
    v[4] = vfnma(e, 2.f, c);
    v[5] = vfma(d[1], 4.f, vfnma(d[3], 5.f, d[5]));
  } else {
    for (int p = 0; p < 2; ++p) {
      v[3 * p] = vadd(d[p], d[p + 1]);
      v[3 * p + 1] = vsub(d[p + 1], d[p]);
      v[3 * p + 2] = vsub(d[p + 2], d[p]);
    }
  }
}

// A^T m of one column (or row) of a transformed output tile: ::pos values to ::out.
// F(2x2, 3x3): (m0 + m1 + m2, m1 - m2 - m3).
// F(4x4, 3x3): (m0 + m1 + m2 + m3 + m4, m1 - m2 + 2 (m3 - m4), m1 + m2 + 4 (m3 + m4),
//               m1 - m2 + 8 (m3 - m4) + m5).
// Transposed: phase p's two outputs (m0 + m1, m0 - m1 + m2) of its m[3p:3p+3], interleaved into
// output rows (phase 0, phase 1, phase 0, phase 1).
template <int VAR>
FD_TARGET inline void at(const Vec* m, Vec* y) {
  if constexpr (VAR == kF2) {
    y[0] = vadd(vadd(m[0], m[1]), m[2]);
    y[1] = vsub(vsub(m[1], m[2]), m[3]);
  } else if constexpr (VAR == kF4) {
    const Vec a = vadd(m[1], m[2]), b = vsub(m[1], m[2]), c = vadd(m[3], m[4]), e = vsub(m[3], m[4]);
    y[0] = vadd(vadd(m[0], a), c);
    y[1] = vfma(e, 2.f, b);
    y[2] = vfma(c, 4.f, a);
    y[3] = vadd(vfma(e, 8.f, b), m[5]);
  } else {
    for (int p = 0; p < 2; ++p) {
      y[p] = vadd(m[3 * p], m[3 * p + 1]);
      y[2 + p] = vadd(vsub(m[3 * p], m[3 * p + 1]), m[3 * p + 2]);
    }
  }
}

// V[xi][m][c0:c0+kLanes] of tile m from the TI x TI input tile whose top-left pixel is (y0, x0);
// pixels outside the image read zeros.
template <int VAR>
FD_TARGET void input_tile(const T* img, int64_t H, int64_t W, int64_t C, int64_t y0, int64_t x0, T* V,
                          int64_t vstride) {
  constexpr int TI = Tiles<VAR>::in, TP = Tiles<VAR>::pos;
  for (int64_t c0 = 0; c0 < C; c0 += kLanes) {
    Vec d[TI][TI], t[TI][TP];  // d column by column, then B^T d transposed: t[j][i] = (B^T d)[i][j]
    for (int i = 0; i < TI; ++i) {
      const int64_t y = y0 + i;
      for (int j = 0; j < TI; ++j) {
        const int64_t x = x0 + j;
        d[j][i] = (y >= 0 && y < H && x >= 0 && x < W) ? vload(img + (y * W + x) * C + c0) : vzero();
      }
    }
    for (int j = 0; j < TI; ++j) bt<VAR>(d[j], t[j]);
    for (int i = 0; i < TP; ++i) {
      Vec row[TI], v[TP];
      for (int j = 0; j < TI; ++j) row[j] = t[j][i];
      bt<VAR>(row, v);  // row i of (B^T d) B
      for (int j = 0; j < TP; ++j) vstore(V + (i * TP + j) * vstride + c0, v[j]);
    }
  }
}

// M[xi] = V[xi] . U[xi] for the NP = pos * pos positions xi of a block of MR tiles; U[xi] is
// [K/NR] panels of C x NR.
template <int VAR, int MR, int NV>
FD_TARGET void block_gemm(const T* V, const T* U, int64_t C, int64_t K, float* M) {
  constexpr int64_t KB = MR, NP = Tiles<VAR>::pos * Tiles<VAR>::pos;
  constexpr int64_t NR = NV * kLanes;
  for (int64_t xi = 0; xi < NP; ++xi) {
    const T* Vx = V + xi * KB * C;
    const T* Ux = U + xi * C * K;
    float* Mx = M + xi * KB * K;
    for (int64_t nb = 0; nb < K / NR; ++nb) {
      const T* Ub = Ux + nb * C * NR;
      micro_kernel<MR, NV>(Vx, C, Ub, C, Mx + nb * NR, K);
    }
  }
}

// Y = A^T M A for tile m (TO x TO outputs at (y0, x0) of the H x W output), + bias, ReLU,
// + residual, stored if inside.
template <int VAR>
FD_TARGET void output_tile(const float* M, int64_t mstride, const float* bias, bool relu, const T* add, T* out,
                           int64_t H, int64_t W, int64_t K, int64_t y0, int64_t x0) {
  constexpr int TP = Tiles<VAR>::pos, TO = Tiles<VAR>::out;
  for (int64_t k0 = 0; k0 < K; k0 += kLanes) {
    Vec s[TP][TO];  // s[j] = column j of A^T m
    for (int j = 0; j < TP; ++j) {
      Vec col[TP];
      for (int i = 0; i < TP; ++i) col[i] = vloadf(M + (i * TP + j) * mstride + k0);
      at<VAR>(col, s[j]);
    }
    const Vec b = vloadf(bias + k0);
    for (int i = 0; i < TO; ++i) {
      const int64_t y = y0 + i;
      if (y >= H) break;
      Vec row[TP], o[TO];
      for (int j = 0; j < TP; ++j) row[j] = s[j][i];
      at<VAR>(row, o);  // row i of A^T m A
      for (int j = 0; j < TO; ++j) {
        const int64_t x = x0 + j;
        if (x >= W) break;
        Vec v = vadd(o[j], b);
        if (relu) v = vmax(v, vzero());
        const int64_t off = (y * W + x) * K + k0;
        if (add) v = vadd(v, vload(add + off));
        vstore(out + off, v);
      }
    }
  }
}

// Blocks begin..end of MR tiles (a tile row's tiles in order, rows in order, images in order).
// x: [N, H, W, C]; out and add: [N, up * H, up * W, K].
template <int VAR, int MR, int NV>
FD_TARGET void conv_blocks(const T* x, const T* U, const float* bias, bool relu, const T* add, T* out, int64_t H,
                           int64_t W, int64_t C, int64_t K, int64_t begin, int64_t end) {
  using S = Tiles<VAR>;
  constexpr int64_t KB = MR, NP = S::pos * S::pos;
  const int64_t th = (H + S::step - 1) / S::step, tw = (W + S::step - 1) / S::step, bpr = (tw + KB - 1) / KB;
  const int64_t Ho = S::up * H, Wo = S::up * W;
  std::vector<T> V(NP * KB * C);
  std::vector<float> M(NP * KB * K);
  for (int64_t blk = begin; blk < end; ++blk) {
    const int64_t n = blk / (th * bpr), ti = (blk / bpr) % th, t0 = (blk % bpr) * KB;
    const int64_t tn = std::min(KB, tw - t0);
    const T* img = x + n * H * W * C;
    for (int64_t m = 0; m < KB; ++m) {
      if (m < tn) {
        input_tile<VAR>(img, H, W, C, S::step * ti - 1, S::step * (t0 + m) - 1, V.data() + m * C, KB * C);
      } else {  // past the row's last tile: zeros (computed, never stored)
        for (int64_t xi = 0; xi < NP; ++xi) std::memset(V.data() + (xi * KB + m) * C, 0, C * sizeof(T));
      }
    }
    block_gemm<VAR, MR, NV>(V.data(), U, C, K, M.data());
    const T* a = add ? add + n * Ho * Wo * K : nullptr;
    T* o = out + n * Ho * Wo * K;
    for (int64_t m = 0; m < tn; ++m)
      output_tile<VAR>(M.data() + m * K, KB * K, bias, relu, a, o, Ho, Wo, K, S::out * ti, S::out * (t0 + m));
  }
}
