// The instruction-set-independent part of the Winograd kernels: transforms, block GEMM loop and
// the per-thread block loop, templated on the variant VAR (Tiles<VAR> in winograd.cpp: F(2x2, 3x3),
// F(4x4, 3x3), F(6x6, 3x3), the complex F(4x4, 3x3) and F(8x8, 3x3), the 4x4 stride-2 transposed
// convolution as four F(3x3, 2x2) phases, or the 3x3 stride-2 convolution, polyphase).
// winograd.cpp includes it once per instruction set, inside a namespace that first defines:
//   FD_TARGET                          the function attribute enabling that instruction set
//   T                                  the activation type (at::BFloat16 or float)
//   Vec, kLanes, vloadf, vstoref, vadd, vsub, vmax, vzero, vfma, vfnma
//                                      float32 vectors (vec_f32_avx512.h or vec_f32_avx2.h)
//   vload(const T*), vstore(T*, Vec)   activations <-> float32 vectors (rounding on the way out)
//   vstore_out(T*, Vec, stream)        vstore, or where the vector is a whole cache line (float32,
//                                      AVX-512) and stream is set, a non-temporal store
//   vstore_out2(T*, Vec a, Vec b, stream)
//                                      a and b to p[0:kLanes] and p[kLanes:2 kLanes] (a whole line
//                                      in bfloat16), non-temporal where stream is set
//   micro_kernel<MR, NV>(A, lda, B, C, M, ldm, tick)
//                                      M[MR][NV * kLanes] = A[MR][C] . B, B one NR-wide panel of
//                                      the packed weights (NR = NV * kLanes), calling tick() after
//                                      each step: winograd_gemm.h
//   kPipelined                         whether conv_blocks overlaps the transforms with the GEMMs
// No include guard: it is meant to be included more than once.

// The complex variants' conjugate pairs of points besides the real ones (0, 1, -1, infinity):
// kC4 has i, kC8 i, e^(-i pi/4) and e^(3i pi/4); 0 for the real variants.
template <int VAR>
constexpr int kPairs = VAR == kC4 ? 1 : VAR == kC8 ? 3 : 0;
constexpr float kHalfSqrt2 = 0.707106781186547524f;

// F(3, 2) with points 0, 1, -1 and infinity, the 2-tap correlation of both stride-2 kinds: B^T e of
// four values and A^T m of four products.
FD_TARGET FD_INLINE void bt_f3x2(Vec e0, Vec e1, Vec e2, Vec e3, Vec* v) {
  v[0] = vsub(e2, e0);
  v[1] = vadd(e1, e2);
  v[2] = vsub(e2, e1);
  v[3] = vsub(e3, e1);
}
FD_TARGET FD_INLINE void at_f3x2(const Vec* m, Vec& y0, Vec& y1, Vec& y2) {
  const Vec a = vadd(m[1], m[2]);
  y0 = vadd(m[0], a);
  y1 = vsub(m[1], m[2]);
  y2 = vadd(a, m[3]);
}

// B^T d of one column (or row) of an input tile: Tiles<VAR>::in values to ::pos.
// F(2x2, 3x3): (d0 - d2, d1 + d2, d2 - d1, d1 - d3).
// F(4x4, 3x3) (Lavin and Gray's, points 0, +-1, +-2):
//   (4 d0 - 5 d2 + d4, -4 d1 - 4 d2 + d3 + d4, 4 d1 - 4 d2 - d3 + d4,
//    -2 d1 - d2 + 2 d3 + d4, 2 d1 - d2 - 2 d3 + d4, 4 d1 - 5 d3 + d5).
// F(6x6, 3x3) (points 0, 1, -1, 2, -2, 1/2, -1/2, infinity; float32): (d6 - d0 + 5.25 (d2 - d4),
//   e1 + o1, e1 - o1, e2 + o2, e2 - o2, e3 + o3, e3 - o3, d7 - d1 + 5.25 (d3 - d5)), each pair of
//   points +-p sharing the sums of the even (e) and the odd (o) inputs: e1 = d2 + d6 - 4.25 d4,
//   o1 = d1 + d5 - 4.25 d3, e2 = 0.25 d2 - 1.25 d4 + d6, o2 = 0.5 d1 - 2.5 d3 + 2 d5,
//   e3 = 4 d2 - 5 d4 + d6, o3 = 2 d1 - 2.5 d3 + 0.5 d5.
// Complex F(4x4, 3x3) (points 0, 1, -1, infinity, i; real-form values, see below):
//   (d0 - d4, d1 + d2 + d3 + d4, d2 + d4 - d1 - d3, d5 - d1, d4 - d2, d3 - d1).
// Complex F(8x8, 3x3) (0, 1, -1, infinity, then the real and imaginary parts at i, e^(-i pi/4),
// e^(3i pi/4)): with a_k = d_k + d_(k+4), b_k = d_k - d_(k+4) (k = 1-3), a4 = d8 + d4,
// b4 = d8 - d4 and r = sqrt(1/2): (d0 - d8, a1 + a2 + a3 + a4, a2 + a4 - a1 - a3, d9 - d1,
//   a4 - a2, a3 - a1, b4 + r (b1 - b3), b2 + r (b1 + b3), b4 - r (b1 - b3), b2 - r (b1 + b3)).
// Stride-2 3x3 (polyphase): output row r of a tile takes input rows 2r + a, a = 0-2, of its 7-row
// input tile; taps a = 0 and 2 see the even rows e_k = d_2k, a 2-tap correlation done as F(3, 2)
// with points 0, 1, -1 and infinity (B^T e = (e2 - e0, e1 + e2, e2 - e1, e3 - e1)), and tap 1
// sees the odd rows, passed through: (e2 - e0, e1 + e2, e2 - e1, e3 - e1, d1, d3, d5).
// Transposed 4x4 stride 2: input row i feeds output rows 2i - 1 + ky, so output row 2i + p takes
// input rows (i - 1, i) for p = 0 (kernel rows 3, 1) and (i, i + 1) for p = 1 (kernel rows 2, 0):
// two 2-tap correlations, each F(3, 2) as above, on input rows 0-3 (phase 0) and 1-4 (phase 1)
// of the tile's 5: (B^T d[0:4], B^T d[1:5]).
template <int VAR>
FD_TARGET inline void bt(const Vec* d, Vec* v) {
  if constexpr (VAR == kF2) {
    v[0] = vsub(d[0], d[2]);
    v[1] = vadd(d[1], d[2]);
    v[2] = vsub(d[2], d[1]);
    v[3] = vsub(d[1], d[3]);
  } else if constexpr (VAR == kC4) {
    const Vec a = vadd(d[1], d[3]), b = vadd(d[2], d[4]);
    v[0] = vsub(d[0], d[4]);
    v[1] = vadd(b, a);
    v[2] = vsub(b, a);
    v[3] = vsub(d[5], d[1]);
    v[4] = vsub(d[4], d[2]);
    v[5] = vsub(d[3], d[1]);
  } else if constexpr (VAR == kC8) {
    const Vec a1 = vadd(d[1], d[5]), a2 = vadd(d[2], d[6]), a3 = vadd(d[3], d[7]), a4 = vadd(d[8], d[4]);
    const Vec b1 = vsub(d[1], d[5]), b2 = vsub(d[2], d[6]), b3 = vsub(d[3], d[7]), b4 = vsub(d[8], d[4]);
    const Vec s13 = vadd(a1, a3), s24 = vadd(a2, a4), p = vsub(b1, b3), q = vadd(b1, b3);
    v[0] = vsub(d[0], d[8]);
    v[1] = vadd(s24, s13);
    v[2] = vsub(s24, s13);
    v[3] = vsub(d[9], d[1]);
    v[4] = vsub(a4, a2);
    v[5] = vsub(a3, a1);
    v[6] = vfma(p, kHalfSqrt2, b4);
    v[7] = vfma(q, kHalfSqrt2, b2);
    v[8] = vfnma(p, kHalfSqrt2, b4);
    v[9] = vfnma(q, kHalfSqrt2, b2);
  } else if constexpr (VAR == kF4) {
    const Vec a = vfnma(d[2], 4.f, d[4]), b = vfnma(d[1], 4.f, d[3]);  // d4 - 4 d2, d3 - 4 d1
    const Vec c = vsub(d[4], d[2]), e = vsub(d[3], d[1]);
    v[0] = vfma(d[0], 4.f, vfnma(d[2], 5.f, d[4]));
    v[1] = vadd(a, b);
    v[2] = vsub(a, b);
    v[3] = vfma(e, 2.f, c);
    v[4] = vfnma(e, 2.f, c);
    v[5] = vfma(d[1], 4.f, vfnma(d[3], 5.f, d[5]));
  } else if constexpr (VAR == kF6) {
    const Vec e1 = vfnma(d[4], 4.25f, vadd(d[2], d[6])), o1 = vfnma(d[3], 4.25f, vadd(d[1], d[5]));
    const Vec e2 = vfnma(d[4], 1.25f, vfma(d[2], 0.25f, d[6]));
    const Vec o2 = vfma(d[5], 2.f, vfnma(d[3], 2.5f, vmul(d[1], 0.5f)));
    const Vec e3 = vfnma(d[4], 5.f, vfma(d[2], 4.f, d[6])), o3 = vfma(d[5], 0.5f, vfnma(d[3], 2.5f, vmul(d[1], 2.f)));
    v[0] = vfma(vsub(d[2], d[4]), 5.25f, vsub(d[6], d[0]));
    v[1] = vadd(e1, o1);
    v[2] = vsub(e1, o1);
    v[3] = vadd(e2, o2);
    v[4] = vsub(e2, o2);
    v[5] = vadd(e3, o3);
    v[6] = vsub(e3, o3);
    v[7] = vfma(vsub(d[3], d[5]), 5.25f, vsub(d[7], d[1]));
  } else if constexpr (VAR == kS2) {
    bt_f3x2(d[0], d[2], d[4], d[6], v);
    v[4] = d[1];
    v[5] = d[3];
    v[6] = d[5];
  } else {
    bt_f3x2(d[0], d[1], d[2], d[3], v);
    bt_f3x2(d[1], d[2], d[3], d[4], v + 4);
  }
}

// A^T m of one column (or row) of a transformed output tile: ::pos values to ::out.
// F(2x2, 3x3): (m0 + m1 + m2, m1 - m2 - m3).
// F(4x4, 3x3): (m0 + m1 + m2 + m3 + m4, m1 - m2 + 2 (m3 - m4), m1 + m2 + 4 (m3 + m4),
//               m1 - m2 + 8 (m3 - m4) + m5).
// F(6x6, 3x3): with a, b = m1 +- m2, c, d = m3 +- m4, e, f = m5 +- m6: (m0 + a + c + e,
//   b + 2 d + f / 2, a + 4 c + e / 4, b + 8 d + f / 8, a + 16 c + e / 16, b + 32 d + f / 32 + m7).
// Complex F(4x4) and F(8x8): y_k = the finite real points' m times p^k (infinity's m adds to the
// last output only), plus Re(z^k (re + i im)) for each pair's representative z (the weights carry
// the factor 2 of the conjugate's equal share).
// Stride 2: F(3, 2)'s outputs (m0 + m1 + m2, m1 - m2, m1 + m2 + m3) plus the odd rows' m4-m6.
// Transposed: phase p's three F(3, 2) outputs of its m[4p:4p+4], interleaved into output rows
// (phase 0, phase 1, phase 0, phase 1, phase 0, phase 1).
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
  } else if constexpr (VAR == kC4) {
    const Vec a = vadd(m[1], m[2]), b = vsub(m[1], m[2]);
    y[0] = vadd(vadd(m[0], a), m[4]);
    y[1] = vsub(b, m[5]);
    y[2] = vsub(a, m[4]);
    y[3] = vadd(vadd(b, m[3]), m[5]);
  } else if constexpr (VAR == kC8) {
    const Vec s = vadd(m[1], m[2]), d = vsub(m[1], m[2]);
    const Vec u = vsub(d, m[5]), v = vadd(d, m[5]), sr = vadd(s, m[4]), sm = vsub(s, m[4]);
    const Vec g = vadd(m[6], m[8]), h = vadd(m[7], m[9]);
    const Vec e = vsub(vadd(m[6], m[7]), vadd(m[8], m[9])), f = vsub(vsub(m[8], m[9]), vsub(m[6], m[7]));
    y[0] = vadd(vadd(m[0], sr), g);
    y[1] = vfma(e, kHalfSqrt2, u);
    y[2] = vadd(sm, h);
    y[3] = vfma(f, kHalfSqrt2, v);
    y[4] = vsub(sr, g);
    y[5] = vfnma(e, kHalfSqrt2, u);
    y[6] = vsub(sm, h);
    y[7] = vadd(vfnma(f, kHalfSqrt2, v), m[3]);
  } else if constexpr (VAR == kF6) {
    const Vec a = vadd(m[1], m[2]), b = vsub(m[1], m[2]), c = vadd(m[3], m[4]), d = vsub(m[3], m[4]);
    const Vec e = vadd(m[5], m[6]), f = vsub(m[5], m[6]);
    y[0] = vadd(vadd(m[0], a), vadd(c, e));
    y[1] = vfma(f, 0.5f, vfma(d, 2.f, b));
    y[2] = vfma(e, 0.25f, vfma(c, 4.f, a));
    y[3] = vfma(f, 0.125f, vfma(d, 8.f, b));
    y[4] = vfma(e, 0.0625f, vfma(c, 16.f, a));
    y[5] = vadd(vfma(f, 0.03125f, vfma(d, 32.f, b)), m[7]);
  } else if constexpr (VAR == kS2) {
    at_f3x2(m, y[0], y[1], y[2]);
    y[0] = vadd(y[0], m[4]);
    y[1] = vadd(y[1], m[5]);
    y[2] = vadd(y[2], m[6]);
  } else {
    at_f3x2(m, y[0], y[2], y[4]);
    at_f3x2(m + 4, y[1], y[3], y[5]);
  }
}

// Row y of an output tile: its Tiles<VAR>::out values o, at columns x0.. of the W-wide output,
// channels k0..k0 + kLanes: + bias b, ReLU, + residual, rounded and stored where inside
// (non-temporally where stream is set and a vector is a whole line: vstore_out).
template <int VAR>
FD_TARGET FD_INLINE void store_row(const Vec* o, Vec b, bool relu, const T* add, T* out, bool stream, int64_t W,
                                   int64_t K, int64_t y, int64_t x0, int64_t k0) {
  for (int j = 0; j < Tiles<VAR>::out; ++j) {
    const int64_t x = x0 + j;
    if (x >= W) break;
    Vec v = vadd(o[j], b);
    if (relu) v = vmax(v, vzero());
    const int64_t off = (y * W + x) * K + k0;
    if (add) v = vadd(v, vload(add + off));
    vstore_out(out + off, v, stream);
  }
}

// store_row for two channel vectors, k0.. and k0 + kLanes.., each pixel's stored together
// (vstore_out2); bias at bias[k0:k0 + 2 kLanes].
template <int VAR>
FD_TARGET FD_INLINE void store_row2(const Vec* o0, const Vec* o1, const float* bias, bool relu, const T* add, T* out,
                                    bool stream, int64_t W, int64_t K, int64_t y, int64_t x0, int64_t k0) {
  const Vec b0 = vloadf(bias), b1 = vloadf(bias + kLanes);
  for (int j = 0; j < Tiles<VAR>::out; ++j) {
    const int64_t x = x0 + j;
    if (x >= W) break;
    Vec v = vadd(o0[j], b0), w = vadd(o1[j], b1);
    if (relu) {
      v = vmax(v, vzero());
      w = vmax(w, vzero());
    }
    const int64_t off = (y * W + x) * K + k0;
    if (add) {
      v = vadd(v, vload(add + off));
      w = vadd(w, vload(add + off + kLanes));
    }
    vstore_out2(out + off, v, w, stream);
  }
}

// The pipelined loop's transforms (below), whose column pass the sequential loop's input_tile
// shares.
template <int VAR>
struct Side;

// V[xi][m][c0:c0+kLanes] of tile m from the TI x TI input tile whose top-left pixel is (y0, x0);
// pixels outside the image read zeros. The column pass goes through a scratch tile in L1 (as
// output_tile's does): held in registers, F(6x6)'s 8 x 8 values and their transforms were spilled
// and reloaded in the compiler's order (float32, 2 Zen 4 cores, a 720p level's convolution:
// 32 channels 30-34 -> 28 ms, 64 channels 25-26 -> 24, same bits; a 720p frame 2.42-2.51 -> 2.33 s).
template <int VAR>
FD_TARGET void input_tile(const T* img, int64_t H, int64_t W, int64_t C, int64_t y0, int64_t x0, T* V,
                          int64_t vstride) {
  constexpr int TI = Tiles<VAR>::in, TP = Tiles<VAR>::pos;
  static_assert(kPairs<VAR> == 0, "the complex variants run the pipelined loop only");
  const bool inside = y0 >= 0 && y0 + TI <= H && x0 >= 0 && x0 + TI <= W;
  alignas(64) float t[TI][TP][kLanes];  // B^T d, transposed: t[j][i] = (B^T d)[i][j], through L1
  for (int64_t c0 = 0; c0 < C; c0 += kLanes) {
    for (int j = 0; j < TI; ++j) {  // column j: B^T over its rows
      const int64_t x = x0 + j;
      const T* p = img + (y0 * W + x) * C + c0;
      Side<VAR>::column_pass(
          [&](int i) FD_TARGET FD_INLINE_LAMBDA {
            const int64_t y = y0 + i;
            return (inside || (y >= 0 && y < H && x >= 0 && x < W)) ? vload(p + i * W * C) : vzero();
          },
          t[j][0]);
    }
    // one row at a time, not through Side's row_pass: its two rows at once (and out_column_pass's
    // two columns in output_tile) spill with AVX2's 16 registers (both shared: a float32 AVX2
    // deblur() 2.4% slower, same bits)
    for (int i = 0; i < TP; ++i) {
      Vec row[TI], v[TP];
      for (int j = 0; j < TI; ++j) row[j] = vloadf(t[j][i]);
      bt<VAR>(row, v);  // row i of (B^T d) B
      for (int j = 0; j < TP; ++j) vstore(V + (i * TP + j) * vstride + c0, v[j]);
    }
  }
}

// M[xi] = V[xi] . U[xi] for the NP positions xi of a block of MR tiles; U[xi] is [K/NR] panels of
// C x NR.
template <int VAR, int MR, int NV>
FD_TARGET void block_gemm(const T* V, const T* U, int64_t C, int64_t K, float* M) {
  constexpr int64_t KB = MR, NP = Tiles<VAR>::np;
  constexpr int64_t NR = NV * kLanes;
  auto none = []() FD_TARGET FD_INLINE_LAMBDA {};
  for (int64_t xi = 0; xi < NP; ++xi) {
    const T* Vx = V + xi * KB * C;
    const T* Ux = U + xi * C * K;
    float* Mx = M + xi * KB * K;
    for (int64_t nb = 0; nb < K / NR; ++nb) {
      const T* Ub = Ux + nb * C * NR;
      micro_kernel<MR, NV>(Vx, C, Ub, C, Mx + nb * NR, K, none);
    }
  }
}

// Y = A^T M A for tile m (TO x TO outputs at (y0, x0) of the H x W output), + bias, ReLU,
// + residual, stored if inside. Channel vectors go two at a time (an odd one last), each pixel's
// two stored together (store_row2): a whole line with AVX2's 8 lanes, which may then be streamed.
template <int VAR>
FD_TARGET void output_tile(const float* M, int64_t mstride, const float* bias, bool relu, const T* add, T* out,
                           bool stream, int64_t H, int64_t W, int64_t K, int64_t y0, int64_t x0) {
  constexpr int TP = Tiles<VAR>::pos, TO = Tiles<VAR>::out;
  static_assert(kPairs<VAR> == 0, "the complex variants run the pipelined loop only");
  alignas(64) float s[2][TP][TO][kLanes];  // s[h][j] = column j of A^T m for vector h, through L1
  for (int64_t k0 = 0; k0 < K; k0 += 2 * kLanes) {
    const int nv = k0 + 2 * kLanes <= K ? 2 : 1;
    for (int h = 0; h < nv; ++h) {
      for (int j = 0; j < TP; ++j) {  // one column at a time, not through out_column_pass (input_tile)
        Vec col[TP], c[TO];
        for (int i = 0; i < TP; ++i) col[i] = vloadf(M + (i * TP + j) * mstride + k0 + h * kLanes);
        at<VAR>(col, c);
        for (int i = 0; i < TO; ++i) vstoref(s[h][j][i], c[i]);
      }
    }
    for (int i = 0; i < TO; ++i) {
      const int64_t y = y0 + i;
      if (y >= H) break;
      Vec o[2][TO];
      for (int h = 0; h < nv; ++h) {
        Vec row[TP];
        for (int j = 0; j < TP; ++j) row[j] = vloadf(s[h][j][i]);
        at<VAR>(row, o[h]);  // row i of A^T m A
      }
      if (nv == 2)
        store_row2<VAR>(o[0], o[1], bias + k0, relu, add, out, stream, W, K, y, x0, k0);
      else
        store_row<VAR>(o[0], vloadf(bias + k0), relu, add, out, stream, W, K, y, x0, k0);
    }
  }
}

// conv_blocks (below) one block at a time: input transforms, GEMMs, output transforms.
template <int VAR, int MR, int NV>
FD_TARGET void conv_blocks_sequential(const T* x, const T* U, const float* bias, bool relu, const T* add, T* out,
                                      bool stream, int64_t H, int64_t W, int64_t C, int64_t K, int64_t begin,
                                      int64_t end) {
  using S = Tiles<VAR>;
  constexpr int64_t KB = MR, NP = S::np;
  const BlockGrid grid(H, W, S::step, KB);
  const int64_t Ho = out_size<VAR>(H), Wo = out_size<VAR>(W);
  Buffer<T> V(NP * KB * C);
  Buffer<float> M(NP * KB * K);
  for (int64_t blk = begin; blk < end; ++blk) {
    const auto [n, ti, t0, tn] = grid.at(blk);
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
      output_tile<VAR>(M.data() + m * K, KB * K, bias, relu, a, o, stream, Ho, Wo, K, S::out * ti, S::out * (t0 + m));
  }
}

// The complex F(4x4, 3x3) (kC4) and F(8x8, 3x3) (kC8). Their points 0, 1, -1, infinity and the
// other 4th (kC4: i, -i) or 8th (kC8) roots of unity keep the transforms' coefficients at 0 and
// +-1 (kC8: and +-sqrt(1/2)), so their rounding error stays within F(2x2, 3x3)'s (the real
// F(4x4, 3x3)'s 4s, 5s and 8s are what make it too coarse for bfloat16; a real F(8x8) would be
// far worse). kC4 does 46 GEMMs per 4x4 output tile, where F(2x2, 3x3) needs 64 (4 tiles of 16);
// kC8 142 per 8x8 tile, where kC4 needs 184 (4 tiles of 46). A real input transforms to complex
// values at each complex point and their conjugates at its conjugate, so bt and at work on real
// vectors: the values at 0, 1, -1 and infinity, then the real and the imaginary part at each of
// the P = kPairs<VAR> representatives z. Of the tile's (4 + 2P)^2 such values, rows and columns
// 0-3 are 16 real products; the rest are complex ones: (x + iy) at (p, z) for the four real
// points p and each z, at (z, q) likewise, and two from each 2 x 2 block (a b; c d) of real and
// imaginary parts of a pair (z, w): (a - d) + i (b + c) at (z, w) and (a + d) + i (c - b) at
// (z, conj(w)). Each complex product (x + iy)(u + iv) takes 3 real ones (Gauss): k0 = x (u + v),
// k1 = y (v - u), k2 = (x + y) v give re = k0 - k2 and im = k2 - k1 (of the three such forms,
// this one rounded least). The GEMM positions: 4 + 3P per real row i (4 real, then x, y, x + y of
// (i, z) for each z), rows i = 0-3; then 3 per (z, q), q = 0-3, for each z; then 6 per pair
// (z, w): (z, w) and (z, conj(w)). The weights (fastdeblur/models/winograd.py) carry the
// matching (u + v, v - u, v), and the factor 2 that at's conjugate pairs need.
template <int VAR>
struct Complex {
  static constexpr int P = kPairs<VAR>, kRow = 4 + 3 * P;  // pairs; positions per real row
  static constexpr int kPairCol = 4 * kRow, kPairPair = kPairCol + 12 * P;  // where (z, q), (z, w) start
  static_assert(kPairPair + 6 * P * P == Tiles<VAR>::np, "the positions of Tiles<VAR>::np");
};

// The positions of rows 2 ip, 2 ip + 1 of a complex variant's tile's transformed values v, each
// handed to put(xi, value) in turn.
template <int VAR, typename Put>
FD_TARGET FD_INLINE void complex_rows(const Vec (*v)[Tiles<VAR>::pos], int ip, Put&& put) {
  using X = Complex<VAR>;
  auto cplx = [&](int xi, Vec x, Vec y) FD_TARGET FD_INLINE_LAMBDA {
    put(xi, x);
    put(xi + 1, y);
    put(xi + 2, vadd(x, y));
  };
  if (ip < 2) {
    for (int g = 0; g < 2; ++g) {
      const int xi = X::kRow * (2 * ip + g);
      for (int j = 0; j < 4; ++j) put(xi + j, v[g][j]);
      for (int w = 0; w < X::P; ++w) cplx(xi + 4 + 3 * w, v[g][4 + 2 * w], v[g][5 + 2 * w]);
    }
  } else {  // the real and imaginary rows at pair z
    const int z = ip - 2;
    for (int j = 0; j < 4; ++j) cplx(X::kPairCol + 3 * (4 * z + j), v[0][j], v[1][j]);
    for (int w = 0; w < X::P; ++w) {
      const Vec a = v[0][4 + 2 * w], b = v[0][5 + 2 * w], c = v[1][4 + 2 * w], d = v[1][5 + 2 * w];
      const int xi = X::kPairPair + 6 * (X::P * z + w);
      cplx(xi, vsub(a, d), vadd(b, c));
      cplx(xi + 3, vadd(a, d), vsub(c, b));
    }
  }
}

// f(std::integral_constant<int, i>()) for i = 0 .. N - 1, unrolled: i is a compile-time constant in f.
template <typename F, int... I>
FD_TARGET FD_INLINE void unrolled(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>()), ...);
}
template <int N, typename F>
FD_TARGET FD_INLINE void unrolled(F&& f) {
  unrolled(f, std::make_integer_sequence<int, N>());
}

// Columns 2 op, 2 op + 1 of a complex variant's tile's products, as at takes them, from its
// positions at Mt (ms apart).
template <int VAR>
FD_TARGET FD_INLINE void complex_load_columns(const float* Mt, int64_t ms, int op, Vec (*col)[Tiles<VAR>::pos]) {
  using X = Complex<VAR>;
  auto get = [&](int xi) FD_TARGET FD_INLINE_LAMBDA { return vloadf(Mt + xi * ms); };
  auto cplx = [&](int xi, Vec& re, Vec& im) FD_TARGET FD_INLINE_LAMBDA {
    const Vec k0 = get(xi), k1 = get(xi + 1), k2 = get(xi + 2);
    re = vsub(k0, k2);
    im = vsub(k2, k1);
  };
  if (op < 2) {
    for (int g = 0; g < 2; ++g) {
      const int j = 2 * op + g;
      for (int i = 0; i < 4; ++i) col[g][i] = get(X::kRow * i + j);
      for (int z = 0; z < X::P; ++z) cplx(X::kPairCol + 3 * (4 * z + j), col[g][4 + 2 * z], col[g][5 + 2 * z]);
    }
  } else {  // the real and imaginary columns at pair w
    const int w = op - 2;
    for (int i = 0; i < 4; ++i) cplx(X::kRow * i + 4 + 3 * w, col[0][i], col[1][i]);
    for (int z = 0; z < X::P; ++z) {
      const int xi = X::kPairPair + 6 * (X::P * z + w);
      Vec pr, pi, qr, qi;
      cplx(xi, pr, pi);
      cplx(xi + 3, qr, qi);
      col[0][4 + 2 * z] = vadd(pr, qr);
      col[0][5 + 2 * z] = vadd(pi, qi);
      col[1][4 + 2 * z] = vsub(pi, qi);
      col[1][5 + 2 * z] = vsub(qr, pr);
    }
  }
}

// The transforms of one block of MR tiles, cut into pieces of a few vector operations each, for
// one vector of channels: two columns of a block's input (B^T d over their rows, shared by the
// tiles that overlap there), two rows of an input tile, two columns or two rows of an output
// tile. Both jobs go tile by tile, every vector of channels of a tile before the next tile, so
// that what a tile reads and writes stays in the L1 cache (F(4x4, 3x3)'s blocks outgrow it).
// conv_blocks does them between the steps of another block's GEMMs: the GEMM keeps the FMA pipes
// busy, while the transforms need the others (adds, conversions, loads, stores), and an
// out-of-order core overlaps the two only when they are interleaved this finely (a whole tile's
// transforms at a time did not overlap at all). The passes go through small float32 scratch
// buffers, so the results are those of doing each transform at once. The complex F(8x8)'s pieces
// run between the micro-kernel's calls (kBetweenCalls), where their size does not matter: it does
// each tile's channel vector that lies inside the image whole, in one piece (in_unit, out_unit).
//   input job:  V[xi][m][c] = (B^T d B)[xi] of tile m of a block; pixels outside the image read
//               zeros; tiles past the row's last one get zeros (computed, never stored).
//   output job: A^T M A of tile m of a block, + bias, ReLU, + residual, stored if inside.
template <int VAR>
struct Side {
  using S = Tiles<VAR>;
  static constexpr int TI = S::in, TP = S::pos, TO = S::out;
  static constexpr int kOutPieces = (TP + 1) / 2 + (TO + 1) / 2;  // per output tile and vector of channels
  // whether row or column r of the transformed tile exists: pieces go two at a time, and an odd
  // TP's last piece has one (the check folds away for even TP)
  static constexpr bool has_pos(int r) { return TP % 2 == 0 || r < TP; }
  // the call's tensors: x [N, H, W, C]; out and add [N, Ho, Wo, K]
  const T* x;
  const float* bias;
  bool relu;
  const T* add;
  T* out;
  bool stream;
  int64_t H, W, C, K, KB;
  BlockGrid grid;
  // the input job: tile im, channels ic, its new input column pairs done cdone, row pair ip
  const T* img = nullptr;
  T* V = nullptr;
  int64_t in_y0 = 0, in_x0 = 0, in_tn = 0, im = 0, ic = 0, cdone = 0;
  int ip = 0;
  bool in_busy = false;
  // the output job: tile om, channels ok, piece op
  const float* M = nullptr;
  const T* oadd = nullptr;
  T* oout = nullptr;
  int64_t oy0 = 0, ox0 = 0, out_tn = 0, om = 0, ok = 0;
  int op = 0;
  bool out_busy = false;
  static constexpr int kRing = TI <= 8 ? 8 : 16;  // >= TI: a tile's columns, then the next one's new ones
  Buffer<float> sc;                               // input columns c % kRing: [kRing][C][TP] vectors
  alignas(64) float so[2 * TP * TO * kLanes] = {};  // an output tile's column pass, [TP][TO] vectors (2: out_unit)

  Side(const T* x_, const float* bias_, bool relu_, const T* add_, T* out_, bool stream_, int64_t H_, int64_t W_,
       int64_t C_, int64_t K_, int64_t KB_)
      : x(x_), bias(bias_), relu(relu_), add(add_), out(out_), stream(stream_), H(H_), W(W_), C(C_), K(K_), KB(KB_),
        grid(H_, W_, S::step, KB_),
        sc(kRing * C_ * TP) {}

  // pieces of the jobs start_in and start_out begin (at most: kC8's units inside the image take one)
  int64_t in_pieces() const {  // the first tile's TI input columns, then step new ones a tile, two a piece
    const int64_t col_pieces = (TI + 1) / 2 + (in_tn - 1) * ((S::step + 1) / 2);
    return (C / kLanes) * (col_pieces + in_tn * ((TP + 1) / 2) + (KB - in_tn));
  }
  int64_t out_pieces() const { return (K / kLanes) * out_tn * kOutPieces; }
  void start_in(int64_t blk, T* dst) {
    const auto [n, ti, t0, tn] = grid.at(blk);
    in_tn = tn;
    img = x + n * H * W * C;
    in_y0 = S::step * ti - 1;
    in_x0 = S::step * t0 - 1;
    V = dst;
    im = ic = cdone = ip = 0;
    in_busy = true;
  }
  void start_out(int64_t blk, const float* src) {
    const auto [n, ti, t0, tn] = grid.at(blk);
    out_tn = tn;
    const int64_t Ho = out_size<VAR>(H), Wo = out_size<VAR>(W);
    oadd = add ? add + n * Ho * Wo * K : nullptr;
    oout = out + n * Ho * Wo * K;
    oy0 = S::out * ti;
    ox0 = S::out * t0;
    M = src;
    om = ok = op = 0;
    out_busy = true;
  }
  bool busy() const { return in_busy || out_busy; }

  // the tile's input column c's (B^T d)[i] for channels ic..: in a ring of columns
  float* column(int64_t c, int i) { return sc.data() + (c % kRing) * C * TP + ic * TP + i * kLanes; }

  FD_TARGET FD_INLINE void next_in_channels() {
    cdone = 0;
    ic += kLanes;
    if (ic < C) return;
    ic = 0;
    in_busy = ++im < KB;
  }

  // B^T over one input column's rows, d[i] = load(i), to dst + i kLanes (i < TP): the input job's
  // column pass, in pieces and in in_unit.
  template <typename Load>
  FD_TARGET static FD_INLINE void column_pass(Load&& load, float* dst) {
    Vec d[TI], v[TP];
    for (int i = 0; i < TI; ++i) d[i] = load(i);
    bt<VAR>(d, v);
    for (int i = 0; i < TP; ++i) vstoref(dst + i * kLanes, v[i]);
  }

  // Rows 2 ip, 2 ip + 1 (an odd TP's last: 2 ip only) of a tile's (B^T d) B, its (B^T d) values
  // at where(j, i) (column j, row i), to positions xi of V at Vt + xi * vstride: the input job's
  // row pass, in pieces and in in_unit.
  template <typename Where>
  FD_TARGET static FD_INLINE void row_pass(Where&& where, int ip, T* Vt, int64_t vstride) {
    Vec v[2][TP];
    for (int g = 0; g < 2 && has_pos(2 * ip + g); ++g) {
      Vec row[TI];
      for (int j = 0; j < TI; ++j) row[j] = vloadf(where(j, 2 * ip + g));
      bt<VAR>(row, v[g]);
    }
    if constexpr (kPairs<VAR> > 0) {
      complex_rows<VAR>(v, ip, [&](int xi, Vec a) FD_TARGET FD_INLINE_LAMBDA { vstore(Vt + xi * vstride, a); });
    } else {
      for (int g = 0; g < 2 && has_pos(2 * ip + g); ++g)
        for (int j = 0; j < TP; ++j) vstore(Vt + ((2 * ip + g) * TP + j) * vstride, v[g][j]);
    }
  }

  // Columns 2 op, 2 op + 1 (but past an odd TP) of an output tile's products at Mt (positions ms
  // apart): A^T m over their rows, to s ([TP][TO] vectors): the output job's column pass, in
  // pieces and in out_unit.
  FD_TARGET static FD_INLINE void out_column_pass(const float* Mt, int64_t ms, int op, float* s) {
    Vec col[2][TP];
    if constexpr (kPairs<VAR> > 0) {
      complex_load_columns<VAR>(Mt, ms, op, col);
    } else {
      for (int g = 0; g < 2 && has_pos(2 * op + g); ++g)
        for (int i = 0; i < TP; ++i) col[g][i] = vloadf(Mt + (i * TP + 2 * op + g) * ms);
    }
    for (int g = 0; g < 2 && has_pos(2 * op + g); ++g) {
      Vec t[TO];
      at<VAR>(col[g], t);
      for (int i = 0; i < TO; ++i) vstoref(s + ((2 * op + g) * TO + i) * kLanes, t[i]);
    }
  }

  // Whether every input pixel of tile im lies inside the image.
  bool inside(int64_t m) const {
    const int64_t x0 = in_x0 + m * S::step;
    return in_y0 >= 0 && in_y0 + TI <= H && x0 >= 0 && x0 + TI <= W;
  }

  // Channels ic.. of tile im whole, as one piece, with no bounds checks: its new input columns,
  // then its rows. The pieces' operations in their order, so the same results; for kC8, whose
  // pieces run between the micro-kernel's calls, where a piece's size does not matter. Done so
  // (and out_unit likewise), with the rows' positions known at compile time and the state in
  // locals, a 720p level's 32-, 64- and 128-channel convolution with residual add took 19.0-19.6,
  // 16.3-16.9 and 14.2-14.3 ms on 2 Zen 4 cores, against 20.1-20.9, 17.5-18.3 and 14.7-15.1 in
  // two-column and two-row pieces (their bounds checks and bookkeeping), with the same bits.
  FD_TARGET FD_INLINE void in_unit() {
    // locals only: the vector stores may alias this object's members as far as the compiler knows
    const int64_t w = W, c = C, c0 = im * S::step, c_new = im == 0 ? 0 : c0 - S::step + TI;
    float* const ring = sc.data() + ic * TP;  // column k's (B^T d)[i] at ring + (k % kRing) * c * TP + i * kLanes
    auto column_at = [ring, c](int64_t k, int i) { return ring + (k % kRing) * c * TP + i * kLanes; };
    const T* p = img + (in_y0 * w + in_x0 + c_new) * c + ic;
    for (int64_t col = c_new; col < c0 + TI; ++col, p += c)
      column_pass([p, w, c](int i) FD_TARGET FD_INLINE_LAMBDA { return vload(p + i * w * c); }, column_at(col, 0));
    const float* cols[TI];
    for (int j = 0; j < TI; ++j) cols[j] = column_at(c0 + j, 0);
    T* const Vt = V + im * c + ic;
    const int64_t vs = KB * c;
    unrolled<(TP + 1) / 2>([&](auto IP) FD_TARGET FD_INLINE_LAMBDA {  // rows 2 r, 2 r + 1
      row_pass([&cols](int j, int i) { return cols[j] + i * kLanes; }, decltype(IP)::value, Vt, vs);
    });
  }

  FD_TARGET FD_INLINE void in_piece() {
    const int64_t vstride = KB * C;
    T* Vt = V + im * C + ic;  // position xi of this tile and channel vector at Vt + xi * vstride
    // the input columns tile im adds to the previous tile's: from c_new to its last, TI - 1 on
    const int64_t c0 = im * S::step, c_new = im == 0 ? 0 : c0 - S::step + TI;
    if constexpr (VAR == kC8) {
      if (im < in_tn && cdone == 0 && ip == 0 && inside(im)) {  // a whole unit: in_unit
        in_unit();
        next_in_channels();
        return;
      }
    }
    if (im >= in_tn) {  // past the row's last tile
      for (int xi = 0; xi < S::np; ++xi) vstore(Vt + xi * vstride, vzero());
      next_in_channels();
    } else if (c_new + 2 * cdone < c0 + TI) {  // the next two new input columns: B^T d over their rows
      for (int g = 0; g < 2; ++g) {
        const int64_t col = c_new + 2 * cdone + g, xx = in_x0 + col;
        const bool inside = xx >= 0 && xx < W;
        column_pass(
            [&](int i) FD_TARGET FD_INLINE_LAMBDA {
              const int64_t y = in_y0 + i;
              return (inside && y >= 0 && y < H) ? vload(img + (y * W + xx) * C + ic) : vzero();
            },
            column(col, 0));
      }
      ++cdone;
    } else {  // rows 2 ip, 2 ip + 1 (an odd TP's last: 2 ip only) of tile im's (B^T d) B, to V
      row_pass([&](int j, int i) { return column(c0 + j, i); }, ip, Vt, vstride);
      if (++ip == (TP + 1) / 2) {
        ip = 0;
        next_in_channels();
      }
    }
  }

  // Whether every output pixel of tile om lies inside the output.
  bool out_inside(int64_t m) const {
    return oy0 + TO <= out_size<VAR>(H) && ox0 + S::out * m + TO <= out_size<VAR>(W);
  }

  // Channels ok..ok + 2 kLanes of output tile om whole, as one piece (in_unit's counterpart): for
  // each of the two channel vectors its columns, then its rows, + bias, ReLU (RELU), + residual
  // (ADD); each pixel's two vectors stored together by store_row2 (vstore_out2: in bfloat16 a
  // whole cache line, which may go non-temporally, NT).
  template <bool RELU, bool ADD, bool NT>
  FD_TARGET FD_INLINE void out_unit() {
    const int64_t k = K, wo = out_size<VAR>(W), ms = KB * k, y0 = oy0, x0 = ox0 + S::out * om, k0 = ok;
    float* const s = so;  // [2][TP][TO] vectors
    for (int h = 0; h < 2; ++h) {
      const float* const Mt = M + om * k + k0 + h * kLanes;
      float* const sh = s + h * TP * TO * kLanes;
      unrolled<(TP + 1) / 2>([&](auto OP) FD_TARGET FD_INLINE_LAMBDA {  // columns 2 r, 2 r + 1
        out_column_pass(Mt, ms, decltype(OP)::value, sh);
      });
    }
    const T* const a = ADD ? oadd : nullptr;  // RELU, ADD and NT known here: store_row2's tests fold away
    T* const o = oout;
    for (int i = 0; i < TO; ++i) {
      Vec y[2][TO];
      for (int h = 0; h < 2; ++h) {
        Vec row[TP];
        for (int j = 0; j < TP; ++j) row[j] = vloadf(s + ((h * TP + j) * TO + i) * kLanes);
        at<VAR>(row, y[h]);
      }
      store_row2<VAR>(y[0], y[1], bias + k0, RELU, a, o, NT, wo, k, y0 + i, x0, k0);
    }
  }

  FD_TARGET FD_INLINE void out_piece() {
    if constexpr (VAR == kC8) {
      if (op == 0 && ok % (2 * kLanes) == 0 && ok + 2 * kLanes <= K && out_inside(om)) {  // out_unit
        if (oadd)
          relu ? out_unit<true, true, false>() : out_unit<false, true, false>();
        else if (stream)
          relu ? out_unit<true, false, true>() : out_unit<false, false, true>();
        else
          relu ? out_unit<true, false, false>() : out_unit<false, false, false>();
        ok += kLanes;  // two channel vectors done, each one's last piece: on to the next unit
        op = kOutPieces - 1;
        next_out_piece();
        return;
      }
    }
    const float* Mt = M + om * K + ok;  // position xi at Mt + xi * KB * K
    if (op < (TP + 1) / 2) {  // columns 2 op, 2 op + 1 (but past an odd TP): A^T m over their rows, to so
      out_column_pass(Mt, KB * K, op, so);
    } else {  // output rows i, i + 1 (but past an odd TO): of (A^T m) A, + bias, ReLU, + residual
      const int64_t Ho = out_size<VAR>(H), Wo = out_size<VAR>(W);
      const Vec b = vloadf(bias + ok);
      for (int g = 0; g < 2; ++g) {
        const int i = 2 * (op - (TP + 1) / 2) + g;
        const int64_t y = oy0 + i;
        if ((TO % 2 != 0 && i >= TO) || y >= Ho) break;
        Vec row[TP], o[TO];
        for (int j = 0; j < TP; ++j) row[j] = vloadf(so + (j * TO + i) * kLanes);
        at<VAR>(row, o);
        store_row<VAR>(o, b, relu, oadd, oout, false, Wo, K, y, ox0 + S::out * om, ok);
      }
    }
    next_out_piece();
  }

  // past the output job's piece op: on to the next one
  FD_TARGET FD_INLINE void next_out_piece() {
    if (++op == kOutPieces) {
      op = 0;
      ok += kLanes;
      if (ok == K) {
        ok = 0;
        out_busy = ++om < out_tn;
      }
    }
  }

  FD_TARGET FD_INLINE void piece() {
    if (in_busy)
      in_piece();
    else if (out_busy)
      out_piece();
  }
};

// Whether conv_blocks_pipelined does the transform pieces between micro-kernel calls instead of
// between their steps: the complex F(8x8)'s pieces (ten-value columns and rows) need more
// registers than the micro-kernel leaves, so the compiler spills its accumulators around each
// one; done between calls, where the accumulators are stored anyway, they cost less (2 Zen 4
// cores, a 720p level's convolution: 32 channels 20.2-21.2 -> 19.0-19.7 ms, 64 channels
// 18.5-19.3 -> 16.4-17.4, 128 channels 14.9-15.1 -> 13.9-14.5). The other variants' smaller
// pieces overlap the GEMM better between its steps (one thread's half of the 32-channel
// convolution, complex F(4x4): 20.8 ms so against 23.3 between calls; F(2x2) and the
// transposed convolution 24-34% slower between calls).
template <int VAR>
constexpr bool kBetweenCalls = VAR == kC8;

// conv_blocks (below) software-pipelined: while the NP GEMMs M[xi] = V[xi] . U[xi] of block b
// run, the input transforms of block b + 1 and the output transforms of block b - 1 are done
// piece by piece (Side) between the micro-kernel's steps, one every steps / pieces of them (a
// branch with a short fixed period; the last steps may run without), or, with more pieces than
// half the steps, spread by a running credit (F(2x2, 3x3) at 32 channels: 13% faster so); the
// complex F(8x8)'s between the micro-kernel's calls instead (kBetweenCalls). V and M are
// double-buffered.
template <int VAR, int MR, int NV>
FD_TARGET void conv_blocks_pipelined(const T* x, const T* U, const float* bias, bool relu, const T* add, T* out,
                                     bool stream, int64_t H, int64_t W, int64_t C, int64_t K, int64_t begin,
                                     int64_t end) {
  constexpr int64_t KB = MR, NP = Tiles<VAR>::np, NR = NV * kLanes;
  if (begin >= end) return;
  Buffer<T> Vbuf(2 * NP * KB * C);
  Buffer<float> Mbuf(2 * NP * KB * K);
  Side<VAR> sd(x, bias, relu, add, out, stream, H, W, C, K, KB);
  // what a block's pieces are spread over: the GEMM's steps, or (kBetweenCalls) its calls
  const int64_t units = NP * (K / NR) * (kBetweenCalls<VAR> ? 1 : C / kPair);
  sd.start_in(begin, Vbuf.data());
  while (sd.busy()) sd.piece();
  for (int64_t blk = begin; blk < end; ++blk) {
    const int64_t cur = (blk - begin) & 1;
    const T* V = Vbuf.data() + cur * NP * KB * C;
    float* M = Mbuf.data() + cur * NP * KB * K;
    int64_t pieces = 0;
    if (blk + 1 < end) {
      sd.start_in(blk + 1, Vbuf.data() + (1 - cur) * NP * KB * C);
      pieces += sd.in_pieces();
    }
    if (blk > begin) {
      sd.start_out(blk - 1, Mbuf.data() + (1 - cur) * NP * KB * K);
      pieces += sd.out_pieces();
    }
    // a piece every `every` units; with more pieces than half the units (or between calls), by a
    // running credit
    const bool dense = kBetweenCalls<VAR> || 2 * pieces > units;
    const int64_t every = pieces > 0 ? std::max<int64_t>(1, units / pieces) : units + 1;
    int64_t count = 0;
    auto tick = [&]() FD_TARGET FD_INLINE_LAMBDA {
      if (dense) {
        count += pieces;
        while (count >= units) {
          count -= units;
          sd.piece();
        }
      } else if (++count == every) {
        count = 0;
        sd.piece();
      }
    };
    auto none = []() FD_TARGET FD_INLINE_LAMBDA {};
    auto& step_tick = [&]() -> auto& {
      if constexpr (kBetweenCalls<VAR>)
        return none;
      else
        return tick;
    }();
    for (int64_t xi = 0; xi < NP; ++xi)
      for (int64_t nb = 0; nb < K / NR; ++nb) {
        micro_kernel<MR, NV>(V + xi * KB * C, C, U + xi * C * K + nb * C * NR, C, M + xi * KB * K + nb * NR, K,
                             step_tick);
        if constexpr (kBetweenCalls<VAR>) tick();
      }
    while (sd.busy()) sd.piece();
  }
  sd.start_out(end - 1, Mbuf.data() + ((end - 1 - begin) & 1) * NP * KB * K);
  while (sd.busy()) sd.piece();
}

// Blocks begin..end of MR tiles (a tile row's tiles in order, rows in order, images in order).
// x: [N, H, W, C]; out and add: [N, up * H, up * W, K]; stream: out's whole lines may be written
// non-temporally (vstore_out, vstore_out2; run decides). Pipelined where that measured faster:
// bfloat16, whose transforms are adds, conversions, loads and stores. In float32 the pipelined
// loop ran 5-12% slower than the sequential one (F(4x4)'s transforms need the FMA pipes too), so
// float32 keeps the sequential loop.
template <int VAR, int MR, int NV>
FD_TARGET void conv_blocks(const T* x, const T* U, const float* bias, bool relu, const T* add, T* out, bool stream,
                           int64_t H, int64_t W, int64_t C, int64_t K, int64_t begin, int64_t end) {
  if constexpr (kPipelined)
    conv_blocks_pipelined<VAR, MR, NV>(x, U, bias, relu, add, out, stream, H, W, C, K, begin, end);
  else
    conv_blocks_sequential<VAR, MR, NV>(x, U, bias, relu, add, out, stream, H, W, C, K, begin, end);
  if (stream) _mm_sfence();  // the non-temporal stores visible before the caller's next step
}
