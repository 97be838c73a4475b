// Fused CPU MLP kernels: products by oneDNN's sgemm (float; JIT-dispatched to the CPU's
// widest vectors) or Eigen (double), bias and activation fused in one pass over each
// cache block of rows. This file is compiled with -mavx2 -mfma (see CMakeLists.txt) so
// Eigen vectorizes the activations 8 floats at a time; it uses only Eigen types (no
// standard containers), so no AVX2 code can leak into inline functions that other files
// share. Callers check the CPU first (fast_mlp.cpp).
#include "fast_mlp_kernels.h"

#include <dnnl.h>
#include <immintrin.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <unsupported/Eigen/SpecialFunctions>
#include <vector>

namespace cnf::nn::fast::kernel {

namespace {

template <class T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using MapM = Eigen::Map<Mat<T>, 0, Eigen::OuterStride<>>;
template <class T>
using CMapM = Eigen::Map<const Mat<T>, 0, Eigen::OuterStride<>>;
template <class T>
using Vec = Eigen::Array<T, Eigen::Dynamic, 1>;
template <class T>
using MapV = Eigen::Map<Vec<T>>;
template <class T>
using CMapV = Eigen::Map<const Vec<T>>;

inline int64_t lo(int64_t a, int64_t b) { return a < b ? a : b; }

// C[m, n] = alpha op(A) op(B) + beta C, all row-major with leading dimensions.
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <class L, class R>
void eigen_product(MapM<double>& c, const L& l, const R& r, double alpha, double beta) {
  if (beta == 0) {
    c.noalias() = alpha * (l * r);
  } else {
    if (beta != 1) c *= beta;
    c.noalias() += alpha * (l * r);
  }
}

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
          int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  MapM<double> cm(c, m, n, Eigen::OuterStride<>(ldc));
  CMapM<double> am(a, ta ? k : m, ta ? m : k, Eigen::OuterStride<>(lda));
  CMapM<double> bm(b, tb ? n : k, tb ? k : n, Eigen::OuterStride<>(ldb));
  if (!ta && !tb) eigen_product(cm, am, bm, alpha, beta);
  if (!ta && tb) eigen_product(cm, am, bm.transpose(), alpha, beta);
  if (ta && !tb) eigen_product(cm, am.transpose(), bm, alpha, beta);
  if (ta && tb) eigen_product(cm, am.transpose(), bm.transpose(), alpha, beta);
}

// SELU constants (Klambauer et al. 2017), as LibTorch uses them.
constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;

// Bias, activation and derivative of one row in a single pass, 8 floats at a time, for
// the activations the benchmarks use (Eigen's select on boolean arrays is not vectorized
// and cost as much as the exp): z <- act(z + b), d <- act'(z + b) when d is not null.
// Returns false for the other activations.
bool bias_act_avx2(Act act, float* z, const float* b, float* d, int64_t n) {
  namespace ei = Eigen::internal;
  if (act != Act::selu && act != Act::tanh) return false;
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.f);
  const __m256 scale = _mm256_set1_ps(float(kSeluScale)),
               sa = _mm256_set1_ps(float(kSeluScale * kSeluAlpha));
  int64_t i = 0;
  if (act == Act::selu) {
    for (; i + 8 <= n; i += 8) {
      const __m256 x = _mm256_add_ps(_mm256_loadu_ps(z + i), _mm256_loadu_ps(b + i));
      const __m256 e = ei::pexp<ei::Packet8f>(_mm256_min_ps(x, zero));
      const __m256 pos = _mm256_cmp_ps(x, zero, _CMP_GT_OQ);
      _mm256_storeu_ps(z + i, _mm256_blendv_ps(_mm256_mul_ps(sa, _mm256_sub_ps(e, one)),
                                               _mm256_mul_ps(scale, x), pos));
      if (d) _mm256_storeu_ps(d + i, _mm256_blendv_ps(_mm256_mul_ps(sa, e), scale, pos));
    }
    for (; i < n; ++i) {
      const float x = z[i] + b[i], e = std::exp(x < 0 ? x : 0.f);
      z[i] = x > 0 ? float(kSeluScale) * x : float(kSeluScale * kSeluAlpha) * (e - 1);
      if (d) d[i] = x > 0 ? float(kSeluScale) : float(kSeluScale * kSeluAlpha) * e;
    }
    return true;
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 a =
        ei::ptanh<ei::Packet8f>(_mm256_add_ps(_mm256_loadu_ps(z + i), _mm256_loadu_ps(b + i)));
    _mm256_storeu_ps(z + i, a);
    if (d) _mm256_storeu_ps(d + i, _mm256_fnmadd_ps(a, a, one));
  }
  for (; i < n; ++i) {
    z[i] = std::tanh(z[i] + b[i]);
    if (d) d[i] = 1 - z[i] * z[i];
  }
  return true;
}

// z[0, n) <- act(z); d[0, n) <- act'(z) when d is not null. n <= 256 (the widest
// hidden layer the fast path takes), so scratch lives on the stack.
template <class T>
void activate(Act act, T* zp, T* dp, int64_t n) {
  MapV<T> z(zp, n);
  T scratch[256];
  MapV<T> s(dp ? dp : scratch, n);  // act'(z), or scratch when not wanted
  const T scale = T(kSeluScale), sa = T(kSeluScale * kSeluAlpha);
  switch (act) {
    case Act::tanh:
      z = z.tanh();
      if (dp) s = T(1) - z.square();
      return;
    case Act::relu:
      if (dp) s = (z > T(0)).template cast<T>();
      z = z.max(T(0));
      return;
    case Act::silu:
      s = (T(1) + (-z).exp()).inverse();  // sigmoid
      z = z * s;                          // silu; then act' = s + silu (1 - s)
      if (dp) s = s + z * (T(1) - s);
      return;
    case Act::selu: {
      // exp(min(z, 0)) - 1: no overflow for large z. (Eigen's expm1 is not vectorized and
      // costs 6x more; the cancellation near 0 is below float resolution of the output.)
      s = z.min(T(0)).exp() - T(1);
      z = (z > T(0)).select(scale * z, sa * s);
      if (dp) s = (z > T(0)).select(Vec<T>::Constant(n, scale), sa * (s + T(1)));
      return;
    }
    case Act::gelu: {
      // Exact (erf) GELU: a = z Phi(z), act' = Phi(z) + z phi(z).
      const T r2 = T(0.70710678118654752440), rpi = T(0.39894228040143267794);
      T scratch2[256];
      MapV<T> cdf(scratch2, n);
      cdf = T(0.5) * (T(1) + (z * r2).erf());
      if (dp) s = cdf + z * (T(-0.5) * z.square()).exp() * rpi;
      z = z * cdf;
      return;
    }
    case Act::softplus:
      // LibTorch's softplus (beta 1, threshold 20): z above the threshold passes through.
      s = (T(1) + (-z).exp()).inverse();  // sigmoid = act'
      z = (z > T(20)).select(z, z.exp().log1p());
      return;
  }
}

// The input block [x, embed(t)] of rows [i0, i0 + r) into a [r, in0] (row-major).
template <class T>
void embed(const Net<T>& net, const Rows<T>& rows, int64_t i0, int64_t r, T* a) {
  const int64_t d = net.dim, in0 = net.in(0);
  for (int64_t i = 0; i < r; ++i) {
    T* row = a + i * in0;
    const T* xi = rows.x + (i0 + i) * d;
    for (int64_t j = 0; j < d; ++j) row[j] = xi[j];
    const T ti = rows.t[(i0 + i) * rows.t_stride];
    if (!net.fourier) {
      row[d] = ti;
      continue;
    }
    MapV<T> sn(row + d, net.fourier), cs(row + d + net.fourier, net.fourier);
    CMapV<T> f(net.freq, net.fourier);
    sn = (ti * f).sin();
    cs = (ti * f).cos();
  }
}

// z[r, n] (leading dimension ldz) += bias, then the activation (and derivative into
// d with leading dimension ldd) when `hidden`.
template <class T>
void bias_act(const Net<T>& net, const T* bias, int64_t r, int64_t n, T* z, int64_t ldz,
              bool hidden, T* d, int64_t ldd) {
  CMapV<T> b(bias, n);
  if constexpr (std::is_same_v<T, float>) {
    if (hidden && bias_act_avx2(net.act, z, bias, d, n)) {
      for (int64_t i = 1; i < r; ++i)
        bias_act_avx2(net.act, z + i * ldz, bias, d ? d + i * ldd : nullptr, n);
      return;
    }
  }
  for (int64_t i = 0; i < r; ++i) {
    MapV<T> zi(z + i * ldz, n);
    zi += b;
    if (hidden) activate(net.act, z + i * ldz, d ? d + i * ldd : nullptr, n);
  }
}

}  // namespace

int64_t block_rows(int64_t width) { return width <= 64 ? 256 : width <= 128 ? 128 : 64; }

void warm_up_gemm() {
  constexpr int64_t k = 16;
  std::vector<float> a(k * k, 0.f), b(k * k, 0.f), c(k * k, 0.f);
  // The forward product only: every verb's first evaluation needs it. The two products of
  // the backward pass are left to their first use: oneDNN generates code under one lock,
  // so warming them here too made a sampling verb's first forward product wait for them
  // (first Euler step 29-33 ms instead of 13-17).
  gemm(false, true, k, k, k, 1.f, a.data(), k, b.data(), k, 0.f, c.data(), k);
}

template <class T>
void forward(const Net<T>& net, const Rows<T>& rows, T* out, T* saved) {
  const int64_t w = net.width, in0 = net.in(0), big = block_rows(w);
  const int64_t ld_saved = 2 * (net.layers - 1) * w;
  Mat<T> a0(big, in0), buf0(big, w), buf1(big, w);
  for (int64_t i0 = 0; i0 < rows.rows; i0 += big) {
    const int64_t r = lo(big, rows.rows - i0);
    embed(net, rows, i0, r, a0.data());
    const T* a = a0.data();
    int64_t lda = in0;
    for (int k = 0; k < net.layers; ++k) {
      const bool last = k + 1 == net.layers;
      T* z;
      int64_t ldz;
      T* d = nullptr;
      if (last) {
        z = out + i0 * net.dim;
        ldz = net.dim;
      } else if (saved) {
        z = saved + i0 * ld_saved + 2 * k * w;
        d = z + w;
        ldz = ld_saved;
      } else {
        z = (k % 2 ? buf1 : buf0).data();
        ldz = w;
      }
      gemm(false, true, r, net.out(k), net.in(k), T(1), a, lda, net.w[k], net.in(k), T(0), z, ldz);
      bias_act(net, net.b[k], r, net.out(k), z, ldz, !last, d, ldz);
      a = z;
      lda = ldz;
    }
  }
}

template <class T>
void backward(const Net<T>& net, const Rows<T>& rows, const T* saved, const T* grad_out,
              T* const* grad_w, T* const* grad_b, T* grad_x) {
  const int64_t w = net.width, in0 = net.in(0), big = block_rows(w), d = net.dim;
  const int64_t ld_saved = 2 * (net.layers - 1) * w;
  Mat<T> a0(big, in0), g0(big, w), g1(big, w);
  for (int64_t i0 = 0; i0 < rows.rows; i0 += big) {
    const int64_t r = lo(big, rows.rows - i0);
    embed(net, rows, i0, r, a0.data());
    const T* g = grad_out + i0 * d;
    int64_t ldg = d;
    const T* sv = saved + i0 * ld_saved;
    for (int k = net.layers - 1; k >= 0; --k) {
      const int64_t n_out = net.out(k), n_in = net.in(k);
      const T* a = k == 0 ? a0.data() : sv + 2 * (k - 1) * w;
      const int64_t lda = k == 0 ? in0 : ld_saved;
      // dW_k += G^T A_k, db_k += sum over rows of G.
      gemm(true, false, n_out, n_in, r, T(1), g, ldg, a, lda, T(1), grad_w[k], n_in);
      MapV<T> gb(grad_b[k], n_out);
      for (int64_t i = 0; i < r; ++i) gb += CMapV<T>(g + i * ldg, n_out);
      if (k == 0) {
        // Only the x-columns of W_0: dL/dx = G W_0[:, :dim].
        if (grad_x)
          gemm(false, false, r, d, n_out, T(1), g, ldg, net.w[0], n_in, T(0), grad_x + i0 * d, d);
        break;
      }
      // G <- (G W_k) * act'(z_{k-1}).
      T* gn = (k % 2 ? g1 : g0).data();
      gemm(false, false, r, n_in, n_out, T(1), g, ldg, net.w[k], n_in, T(0), gn, w);
      const T* dk = sv + (2 * (k - 1) + 1) * w;
      for (int64_t i = 0; i < r; ++i) MapV<T>(gn + i * w, w) *= CMapV<T>(dk + i * ld_saved, w);
      g = gn;
      ldg = w;
    }
  }
}

template <class T>
void divergence(const Net<T>& net, const Rows<T>& rows, T* out, T* div) {
  const int64_t w = net.width, in0 = net.in(0), d = net.dim, L = net.layers;
  // Each block carries (1 + d) rows per point: the activations, then d rows of the
  // transposed Jacobian (dh/dx_j, j-major), so one product per layer serves both.
  int64_t big = 2 * block_rows(w) / (1 + d);
  if (big < 8) big = 8;
  Mat<T> a0(big, in0), s0((1 + d) * big, w), s1((1 + d) * big, w), dz(big, w), wx(d, w);
  for (int64_t j = 0; j < d; ++j)
    for (int64_t h = 0; h < w; ++h) wx(j, h) = net.w[0][h * in0 + j];  // W_0[:, j]
  Mat<T> vbuf(big, d);
  for (int64_t i0 = 0; i0 < rows.rows; i0 += big) {
    const int64_t r = lo(big, rows.rows - i0);
    embed(net, rows, i0, r, a0.data());
    // Layer 0: activations, and dh/dx_j = act'(z) * W_0[:, j].
    T* s = s0.data();
    gemm(false, true, r, w, in0, T(1), a0.data(), in0, net.w[0], in0, T(0), s, w);
    bias_act(net, net.b[0], r, w, s, w, true, dz.data(), w);
    for (int64_t j = 0; j < d; ++j)
      for (int64_t i = 0; i < r; ++i)
        MapV<T>(s + ((1 + j) * r + i) * w, w) =
            CMapV<T>(dz.data() + i * w, w) * CMapV<T>(wx.data() + j * w, w);
    for (int k = 1; k + 1 < L; ++k) {
      T* sn = (k % 2 ? s1 : s0).data();
      gemm(false, true, (1 + d) * r, w, w, T(1), s, w, net.w[k], w, T(0), sn, w);
      bias_act(net, net.b[k], r, w, sn, w, true, dz.data(), w);
      for (int64_t j = 0; j < d; ++j)
        for (int64_t i = 0; i < r; ++i)
          MapV<T>(sn + ((1 + j) * r + i) * w, w) *= CMapV<T>(dz.data() + i * w, w);
      s = sn;
    }
    // Output layer: v = W h + b; div = sum_j W[j, :] . dh/dx_j.
    const T* wl = net.w[L - 1];
    if (out) {
      gemm(false, true, r, d, w, T(1), s, w, wl, w, T(0), out + i0 * d, d);
      bias_act(net, net.b[L - 1], r, d, out + i0 * d, d, false, static_cast<T*>(nullptr), 0);
    }
    // One matrix-vector product per input dimension: [r, w] (dh/dx_j) times W[j, :].
    Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>> dv(div + i0, r);
    dv.setZero();
    for (int64_t j = 0; j < d; ++j)
      dv.noalias() += CMapM<T>(s + (1 + j) * r * w, r, w, Eigen::OuterStride<>(w)) *
                      Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>(wl + j * w, w);
  }
}

int64_t jvp_saved_per_row(int layers, int64_t width) { return 4 * (layers - 1) * width; }

namespace {

// Activations whose act'' needs the pre-activation z (tanh, relu and SELU get it from
// act and act').
bool second_derivative_needs_z(Act act) {
  return act == Act::silu || act == Act::gelu || act == Act::softplus;
}

// One hidden row of the JVP: given z (pre-activation, with bias; read only when
// second_derivative_needs_z), h = act(z), s1 = act'(z) and the pre-activation tangent zd,
// writes q = act''(z) zd and turns zd into the output tangent s1 zd.
template <class T>
void jvp_tangent_row(Act act, const T* zp, const T* hp, const T* s1p, T* zdp, T* qp, int64_t n) {
  CMapV<T> h(hp, n), s1(s1p, n);
  MapV<T> zd(zdp, n), q(qp, n);
  switch (act) {
    case Act::tanh:
      q = T(-2) * h * s1 * zd;
      break;  // tanh'' = -2 tanh tanh'
    case Act::relu:
      q.setZero();
      break;
    case Act::selu:
      q = (h > T(0)).select(T(0), s1 * zd);
      break;  // z <= 0: selu'' = selu'
    case Act::silu: {
      CMapV<T> z(zp, n);
      const Vec<T> sg = (T(1) + (-z).exp()).inverse();
      q = sg * (T(1) - sg) * (T(2) + z * (T(1) - T(2) * sg)) * zd;
      break;
    }
    case Act::gelu: {
      CMapV<T> z(zp, n);
      q = (T(-0.5) * z.square()).exp() * T(0.39894228040143267794) * (T(2) - z.square()) * zd;
      break;
    }
    case Act::softplus: {
      CMapV<T> z(zp, n);
      const Vec<T> sg = (T(1) + (-z).exp()).inverse();
      q = sg * (T(1) - sg) * zd;  // as act' = sigmoid, also above LibTorch's threshold
      break;
    }
  }
  zd *= s1;
}

// Top r rows of xs [2r, in0]: the embedded input of rows [i0, i0 + r); bottom r rows: its
// tangent [u, 0] (time features do not move).
template <class T>
void jvp_input(const Net<T>& net, const Rows<T>& rows, const T* u, int64_t i0, int64_t r, T* xs) {
  const int64_t in0 = net.in(0), d = net.dim;
  embed(net, rows, i0, r, xs);
  for (int64_t i = 0; i < r; ++i) {
    T* row = xs + (r + i) * in0;
    const T* ui = u + (i0 + i) * d;
    for (int64_t j = 0; j < d; ++j) row[j] = ui[j];
    for (int64_t j = d; j < in0; ++j) row[j] = T(0);
  }
}

}  // namespace

// Values and tangents of a block travel stacked ([2r, width]: r value rows, then r tangent
// rows), so each layer is one product for both.
template <class T>
void jvp_forward(const Net<T>& net, const Rows<T>& rows, const T* u, T* v, T* jv, T* saved) {
  const int64_t w = net.width, in0 = net.in(0), d = net.dim, big = block_rows(w), L = net.layers;
  const int64_t ld_saved = jvp_saved_per_row(net.layers, w);
  // Scratch only where needed: pre-activation copies for act'' (silu, gelu, softplus),
  // and two alternating layers' worth when nothing is saved for backward.
  const bool need_z = second_derivative_needs_z(net.act);
  Mat<T> xs(2 * big, in0), out(2 * big, d), zcopy(need_z ? big : 0, w),
      work(saved ? 0 : 2, 4 * big * w);
  for (int64_t i0 = 0; i0 < rows.rows; i0 += big) {
    const int64_t r = lo(big, rows.rows - i0);
    jvp_input(net, rows, u, i0, r, xs.data());
    const T* x = xs.data();
    int64_t ldx = in0;
    for (int k = 0; k + 1 < L; ++k) {
      T* layer =
          saved ? saved + i0 * ld_saved + k * 4 * r * w : work.data() + (k % 2) * 4 * big * w;
      T* z = layer;               // [2r, w]: z then zd; after the activation h then hd
      T* s1 = layer + 2 * r * w;  // [r, w]
      T* q = layer + 3 * r * w;   // [r, w]
      gemm(false, true, 2 * r, w, net.in(k), T(1), x, ldx, net.w[k], net.in(k), T(0), z, w);
      if (need_z) {
        CMapV<T> b(net.b[k], w);
        for (int64_t i = 0; i < r; ++i)
          MapV<T>(zcopy.data() + i * w, w) = CMapV<T>(z + i * w, w) + b;
      }
      bias_act(net, net.b[k], r, w, z, w, true, s1, w);
      for (int64_t i = 0; i < r; ++i)
        jvp_tangent_row(net.act, need_z ? zcopy.data() + i * w : nullptr, z + i * w, s1 + i * w,
                        z + (r + i) * w, q + i * w, w);
      x = z;
      ldx = w;
    }
    gemm(false, true, 2 * r, d, net.in(L - 1), T(1), x, ldx, net.w[L - 1], net.in(L - 1), T(0),
         out.data(), d);
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < d; ++j) {
        v[(i0 + i) * d + j] = out(i, j) + net.b[L - 1][j];
        jv[(i0 + i) * d + j] = out(r + i, j);
      }
  }
}

// Reverse pass, from the adjoints A = [a; ad] of (z, zd) of a layer (stacked like the
// forward pass) to those of the layer below:
//   grad W += A^T [h; hd],  grad b += sum of the rows of a,
//   [ah; ahd] = A W,  a_below = s1 ah + q ahd,  ad_below = s1 ahd.
template <class T>
void jvp_backward(const Net<T>& net, const Rows<T>& rows, const T* u, const T* saved, const T* gv,
                  const T* gjv, T* const* grad_w, T* const* grad_b, T* grad_x) {
  const int64_t w = net.width, in0 = net.in(0), d = net.dim, big = block_rows(w), L = net.layers;
  const int64_t ld_saved = jvp_saved_per_row(net.layers, w), wmax = w > d ? w : d;
  Mat<T> xs(2 * big, in0), a0(2 * big, wmax), a1(2 * big, wmax);
  for (int64_t i0 = 0; i0 < rows.rows; i0 += big) {
    const int64_t r = lo(big, rows.rows - i0);
    T* a = a0.data();
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < d; ++j) {
        a[i * d + j] = gv ? gv[(i0 + i) * d + j] : T(0);
        a[(r + i) * d + j] = gjv ? gjv[(i0 + i) * d + j] : T(0);
      }
    int64_t lda = d;
    const T* block = saved + i0 * ld_saved;
    for (int k = L - 1; k >= 0; --k) {
      const int64_t n_out = net.out(k), n_in = net.in(k);
      const T* x;
      if (k == 0) {
        jvp_input(net, rows, u, i0, r, xs.data());
        x = xs.data();
      } else {
        x = block + (k - 1) * 4 * r * w;
      }
      gemm(true, false, n_out, n_in, 2 * r, T(1), a, lda, x, n_in, T(1), grad_w[k], n_in);
      MapV<T> gb(grad_b[k], n_out);
      for (int64_t i = 0; i < r; ++i) gb += CMapV<T>(a + i * lda, n_out);
      if (k == 0) {
        // Only the x-columns of W_0: dL/dx = a W_0[:, :dim].
        if (grad_x)
          gemm(false, false, r, d, n_out, T(1), a, lda, net.w[0], n_in, T(0), grad_x + i0 * d, d);
        break;
      }
      T* an = a == a0.data() ? a1.data() : a0.data();
      gemm(false, false, 2 * r, w, n_out, T(1), a, lda, net.w[k], n_in, T(0), an, w);
      const T* below = block + (k - 1) * 4 * r * w;
      const T* s1 = below + 2 * r * w;
      const T* q = below + 3 * r * w;
      for (int64_t i = 0; i < r; ++i) {
        MapV<T> ah(an + i * w, w), ahd(an + (r + i) * w, w);
        CMapV<T> s(s1 + i * w, w), qi(q + i * w, w);
        ah = s * ah + qi * ahd;
        ahd *= s;
      }
      a = an;
      lda = w;
    }
  }
}

template <class T>
void activate_array(Act act, T* z, T* d, int64_t n) {
  static const float zeros[256] = {};
  for (int64_t i = 0; i < n; i += 256) {
    const int64_t m = std::min<int64_t>(256, n - i);
    if constexpr (std::is_same_v<T, float>)
      if (bias_act_avx2(act, z + i, zeros, d ? d + i : nullptr, m)) continue;
    activate<T>(act, z + i, d ? d + i : nullptr, m);
  }
}

template void activate_array<float>(Act, float*, float*, int64_t);
template void activate_array<double>(Act, double*, double*, int64_t);
template void forward<float>(const Net<float>&, const Rows<float>&, float*, float*);
template void forward<double>(const Net<double>&, const Rows<double>&, double*, double*);
template void backward<float>(const Net<float>&, const Rows<float>&, const float*, const float*,
                              float* const*, float* const*, float*);
template void backward<double>(const Net<double>&, const Rows<double>&, const double*,
                               const double*, double* const*, double* const*, double*);
template void divergence<float>(const Net<float>&, const Rows<float>&, float*, float*);
template void divergence<double>(const Net<double>&, const Rows<double>&, double*, double*);
template void jvp_forward<float>(const Net<float>&, const Rows<float>&, const float*, float*,
                                 float*, float*);
template void jvp_forward<double>(const Net<double>&, const Rows<double>&, const double*, double*,
                                  double*, double*);
template void jvp_backward<float>(const Net<float>&, const Rows<float>&, const float*, const float*,
                                  const float*, const float*, float* const*, float* const*, float*);
template void jvp_backward<double>(const Net<double>&, const Rows<double>&, const double*,
                                   const double*, const double*, const double*, double* const*,
                                   double* const*, double*);

}  // namespace cnf::nn::fast::kernel
