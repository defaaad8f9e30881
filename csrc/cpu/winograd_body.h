// The instruction-set-independent part of the Winograd F(2x2, 3x3) kernel: transforms, block
// GEMM loop and the per-thread block loop. winograd.cpp includes it once per instruction set,
// inside a namespace that first defines:
//   FD_TARGET                          the function attribute enabling that instruction set
//   T                                  the activation type (at::BFloat16 or float)
//   Vec, kLanes                        a float32 vector and its lane count
//   vload(const T*), vstore(T*, Vec)   activations <-> float32 vectors (rounding on the way out)
//   vloadf(const float*), vadd, vsub, vmax, vzero
//   micro_kernel<MR, NV>(A, lda, B, C, M, ldm)
//                                      M[MR][NV * kLanes] = A[MR][C] . B, B one NR-wide panel of
//                                      the packed weights (NR = NV * kLanes): winograd_gemm.h
// No include guard: it is meant to be included more than once.

// V[xi][m][c0:c0+kLanes] of tile m from the 4x4 input tile whose top-left pixel is (y0, x0);
// pixels outside the image read zeros.
FD_TARGET void input_tile(const T* img, int64_t H, int64_t W, int64_t C, int64_t y0, int64_t x0, T* V,
                          int64_t vstride) {
  for (int64_t c0 = 0; c0 < C; c0 += kLanes) {
    Vec d[4][4];
    for (int i = 0; i < 4; ++i) {
      const int64_t y = y0 + i;
      for (int j = 0; j < 4; ++j) {
        const int64_t x = x0 + j;
        d[i][j] = (y >= 0 && y < H && x >= 0 && x < W) ? vload(img + (y * W + x) * C + c0) : vzero();
      }
    }
    // B^T d: rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
    Vec t[4][4];
    for (int j = 0; j < 4; ++j) {
      t[0][j] = vsub(d[0][j], d[2][j]);
      t[1][j] = vadd(d[1][j], d[2][j]);
      t[2][j] = vsub(d[2][j], d[1][j]);
      t[3][j] = vsub(d[1][j], d[3][j]);
    }
    // (B^T d) B: the same on columns
    for (int i = 0; i < 4; ++i) {
      T* v = V + (i * 4) * vstride + c0;
      vstore(v + 0 * vstride, vsub(t[i][0], t[i][2]));
      vstore(v + 1 * vstride, vadd(t[i][1], t[i][2]));
      vstore(v + 2 * vstride, vsub(t[i][2], t[i][1]));
      vstore(v + 3 * vstride, vsub(t[i][1], t[i][3]));
    }
  }
}

// M[xi] = V[xi] . U[xi] for the 16 positions xi of a block of MR tiles; U[xi] is [K/NR] panels of
// C x NR.
template <int MR, int NV>
FD_TARGET void block_gemm(const T* V, const T* U, int64_t C, int64_t K, float* M) {
  constexpr int64_t KB = MR;
  constexpr int64_t NR = NV * kLanes;
  for (int64_t xi = 0; xi < 16; ++xi) {
    const T* Vx = V + xi * KB * C;
    const T* Ux = U + xi * C * K;
    float* Mx = M + xi * KB * K;
    for (int64_t nb = 0; nb < K / NR; ++nb) {
      const T* Ub = Ux + nb * C * NR;
      micro_kernel<MR, NV>(Vx, C, Ub, C, Mx + nb * NR, K);
    }
  }
}

// Y = A^T M A for tile m (2x2 outputs at (y0, x0)), + bias, ReLU, + residual, stored if inside.
FD_TARGET void output_tile(const float* M, int64_t mstride, const float* bias, bool relu, const T* add, T* out,
                           int64_t H, int64_t W, int64_t K, int64_t y0, int64_t x0) {
  for (int64_t k0 = 0; k0 < K; k0 += kLanes) {
    Vec m[4][4];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) m[i][j] = vloadf(M + (i * 4 + j) * mstride + k0);
    // A^T m: rows (m0 + m1 + m2, m1 - m2 - m3)
    Vec s[2][4];
    for (int j = 0; j < 4; ++j) {
      s[0][j] = vadd(vadd(m[0][j], m[1][j]), m[2][j]);
      s[1][j] = vsub(vsub(m[1][j], m[2][j]), m[3][j]);
    }
    const Vec b = vloadf(bias + k0);
    for (int i = 0; i < 2; ++i) {
      const int64_t y = y0 + i;
      if (y >= H) break;
      Vec o[2] = {vadd(vadd(s[i][0], s[i][1]), s[i][2]), vsub(vsub(s[i][1], s[i][2]), s[i][3])};
      for (int j = 0; j < 2; ++j) {
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
template <int MR, int NV>
FD_TARGET void conv_blocks(const T* x, const T* U, const float* bias, bool relu, const T* add, T* out, int64_t H,
                           int64_t W, int64_t C, int64_t K, int64_t begin, int64_t end) {
  constexpr int64_t KB = MR;
  const int64_t th = (H + 1) / 2, tw = (W + 1) / 2, bpr = (tw + KB - 1) / KB;
  std::vector<T> V(16 * KB * C);
  std::vector<float> M(16 * KB * K);
  for (int64_t blk = begin; blk < end; ++blk) {
    const int64_t n = blk / (th * bpr), ti = (blk / bpr) % th, t0 = (blk % bpr) * KB;
    const int64_t tn = std::min(KB, tw - t0);
    const T* img = x + n * H * W * C;
    for (int64_t m = 0; m < KB; ++m) {
      if (m < tn) {
        input_tile(img, H, W, C, 2 * ti - 1, 2 * (t0 + m) - 1, V.data() + m * C, KB * C);
      } else {  // past the row's last tile: zeros (computed, never stored)
        for (int64_t xi = 0; xi < 16; ++xi) std::memset(V.data() + (xi * KB + m) * C, 0, C * sizeof(T));
      }
    }
    block_gemm<MR, NV>(V.data(), U, C, K, M.data());
    const T* a = add ? add + n * H * W * K : nullptr;
    T* o = out + n * H * W * K;
    for (int64_t m = 0; m < tn; ++m)
      output_tile(M.data() + m * K, KB * K, bias, relu, a, o, H, W, K, 2 * ti, 2 * (t0 + m));
  }
}
