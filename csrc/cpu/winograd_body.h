// The instruction-set-independent part of the Winograd kernels F(2x2, 3x3) and F(4x4, 3x3):
// transforms, block GEMM loop and the per-thread block loop, templated on the output tile's side
// TM (2 or 4; the input tile's side is TN = TM + 2, and the GEMMs are TN * TN). winograd.cpp
// includes it once per instruction set, inside a namespace that first defines:
//   FD_TARGET                          the function attribute enabling that instruction set
//   T                                  the activation type (at::BFloat16 or float)
//   Vec, kLanes                        a float32 vector and its lane count
//   vload(const T*), vstore(T*, Vec)   activations <-> float32 vectors (rounding on the way out)
//   vloadf(const float*), vadd, vsub, vmax, vzero
//   vfma(a, s, c), vfnma(a, s, c)      c + a * s and c - a * s for a float scalar s
//   micro_kernel<MR, NV>(A, lda, B, C, M, ldm)
//                                      M[MR][NV * kLanes] = A[MR][C] . B, B one NR-wide panel of
//                                      the packed weights (NR = NV * kLanes): winograd_gemm.h
// No include guard: it is meant to be included more than once.

// B^T d of one column (or row) of an input tile.
// F(2x2, 3x3): (d0 - d2, d1 + d2, d2 - d1, d1 - d3).
// F(4x4, 3x3) (Lavin and Gray's, points 0, +-1, +-2):
//   (4 d0 - 5 d2 + d4, -4 d1 - 4 d2 + d3 + d4, 4 d1 - 4 d2 - d3 + d4,
//    -2 d1 - d2 + 2 d3 + d4, 2 d1 - d2 - 2 d3 + d4, 4 d1 - 5 d3 + d5).
template <int TM>
FD_TARGET inline void bt(const Vec* d, Vec* v) {
  if constexpr (TM == 2) {
    v[0] = vsub(d[0], d[2]);
    v[1] = vadd(d[1], d[2]);
    v[2] = vsub(d[2], d[1]);
    v[3] = vsub(d[1], d[3]);
  } else {
    const Vec a = vfnma(d[2], 4.f, d[4]), b = vfnma(d[1], 4.f, d[3]);  // d4 - 4 d2, d3 - 4 d1
    const Vec c = vsub(d[4], d[2]), e = vsub(d[3], d[1]);
    v[0] = vfma(d[0], 4.f, vfnma(d[2], 5.f, d[4]));
    v[1] = vadd(a, b);
    v[2] = vsub(a, b);
    v[3] = vfma(e, 2.f, c);
    v[4] = vfnma(e, 2.f, c);
    v[5] = vfma(d[1], 4.f, vfnma(d[3], 5.f, d[5]));
  }
}

// A^T m of one column (or row) of a transformed output tile.
// F(2x2, 3x3): (m0 + m1 + m2, m1 - m2 - m3).
// F(4x4, 3x3): (m0 + m1 + m2 + m3 + m4, m1 - m2 + 2 (m3 - m4), m1 + m2 + 4 (m3 + m4),
//               m1 - m2 + 8 (m3 - m4) + m5).
template <int TM>
FD_TARGET inline void at(const Vec* m, Vec* y) {
  if constexpr (TM == 2) {
    y[0] = vadd(vadd(m[0], m[1]), m[2]);
    y[1] = vsub(vsub(m[1], m[2]), m[3]);
  } else {
    const Vec a = vadd(m[1], m[2]), b = vsub(m[1], m[2]), c = vadd(m[3], m[4]), e = vsub(m[3], m[4]);
    y[0] = vadd(vadd(m[0], a), c);
    y[1] = vfma(e, 2.f, b);
    y[2] = vfma(c, 4.f, a);
    y[3] = vadd(vfma(e, 8.f, b), m[5]);
  }
}

// V[xi][m][c0:c0+kLanes] of tile m from the TN x TN input tile whose top-left pixel is (y0, x0);
// pixels outside the image read zeros.
template <int TM>
FD_TARGET void input_tile(const T* img, int64_t H, int64_t W, int64_t C, int64_t y0, int64_t x0, T* V,
                          int64_t vstride) {
  constexpr int TN = TM + 2;
  for (int64_t c0 = 0; c0 < C; c0 += kLanes) {
    Vec d[TN][TN], t[TN][TN];  // d, then (B^T d) transposed, column by column
    for (int i = 0; i < TN; ++i) {
      const int64_t y = y0 + i;
      for (int j = 0; j < TN; ++j) {
        const int64_t x = x0 + j;
        d[j][i] = (y >= 0 && y < H && x >= 0 && x < W) ? vload(img + (y * W + x) * C + c0) : vzero();
      }
    }
    for (int j = 0; j < TN; ++j) bt<TM>(d[j], t[j]);  // t[j][i] = (B^T d)[i][j]
    for (int i = 0; i < TN; ++i) {
      Vec col[TN], v[TN];
      for (int j = 0; j < TN; ++j) col[j] = t[j][i];
      bt<TM>(col, v);  // row i of (B^T d) B
      for (int j = 0; j < TN; ++j) vstore(V + (i * TN + j) * vstride + c0, v[j]);
    }
  }
}

// M[xi] = V[xi] . U[xi] for the TN * TN positions xi of a block of MR tiles; U[xi] is [K/NR]
// panels of C x NR.
template <int TM, int MR, int NV>
FD_TARGET void block_gemm(const T* V, const T* U, int64_t C, int64_t K, float* M) {
  constexpr int64_t KB = MR, NP = (TM + 2) * (TM + 2);
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

// Y = A^T M A for tile m (TM x TM outputs at (y0, x0)), + bias, ReLU, + residual, stored if inside.
template <int TM>
FD_TARGET void output_tile(const float* M, int64_t mstride, const float* bias, bool relu, const T* add, T* out,
                           int64_t H, int64_t W, int64_t K, int64_t y0, int64_t x0) {
  constexpr int TN = TM + 2;
  for (int64_t k0 = 0; k0 < K; k0 += kLanes) {
    Vec s[TN][TM];  // s[j] = column j of A^T m
    for (int j = 0; j < TN; ++j) {
      Vec col[TN];
      for (int i = 0; i < TN; ++i) col[i] = vloadf(M + (i * TN + j) * mstride + k0);
      at<TM>(col, s[j]);
    }
    const Vec b = vloadf(bias + k0);
    for (int i = 0; i < TM; ++i) {
      const int64_t y = y0 + i;
      if (y >= H) break;
      Vec row[TN], o[TM];
      for (int j = 0; j < TN; ++j) row[j] = s[j][i];
      at<TM>(row, o);  // row i of A^T m A
      for (int j = 0; j < TM; ++j) {
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
template <int TM, int MR, int NV>
FD_TARGET void conv_blocks(const T* x, const T* U, const float* bias, bool relu, const T* add, T* out, int64_t H,
                           int64_t W, int64_t C, int64_t K, int64_t begin, int64_t end) {
  constexpr int64_t KB = MR, NP = (TM + 2) * (TM + 2);
  const int64_t th = (H + TM - 1) / TM, tw = (W + TM - 1) / TM, bpr = (tw + KB - 1) / KB;
  std::vector<T> V(NP * KB * C);
  std::vector<float> M(NP * KB * K);
  for (int64_t blk = begin; blk < end; ++blk) {
    const int64_t n = blk / (th * bpr), ti = (blk / bpr) % th, t0 = (blk % bpr) * KB;
    const int64_t tn = std::min(KB, tw - t0);
    const T* img = x + n * H * W * C;
    for (int64_t m = 0; m < KB; ++m) {
      if (m < tn) {
        input_tile<TM>(img, H, W, C, TM * ti - 1, TM * (t0 + m) - 1, V.data() + m * C, KB * C);
      } else {  // past the row's last tile: zeros (computed, never stored)
        for (int64_t xi = 0; xi < NP; ++xi) std::memset(V.data() + (xi * KB + m) * C, 0, C * sizeof(T));
      }
    }
    block_gemm<TM, MR, NV>(V.data(), U, C, K, M.data());
    const T* a = add ? add + n * H * W * K : nullptr;
    T* o = out + n * H * W * K;
    for (int64_t m = 0; m < tn; ++m)
      output_tile<TM>(M.data() + m * K, KB * K, bias, relu, a, o, H, W, K, TM * ti, TM * (t0 + m));
  }
}
