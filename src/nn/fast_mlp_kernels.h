// Kernels of the fused CPU MLP (see include/cnf/nn/fast_mlp.h). Plain C++ on raw
// row-major arrays: no LibTorch here. fast_mlp_kernels.cpp is compiled for AVX2 + FMA
// and is only called after a run-time check that the CPU has them.
#pragma once

#include <cstdint>

namespace cnf::nn::fast::kernel {

/// Same order as cnf::nn::Activation.
enum class Act : int { tanh, relu, silu, selu, gelu, softplus };

constexpr int kMaxLayers = 9;  // depth up to 8 hidden layers, plus the output layer

/// One MLP: input [x, embed(t)] -> layers. Weights are LibTorch's Linear layout
/// ([out, in], row-major), biases [out].
template <class T>
struct Net {
  int64_t dim = 0;          // x features
  int64_t fourier = 0;      // 0: time appended as one input; F: sin/cos of F frequencies
  const T* freq = nullptr;  // [F] (fourier only)
  int layers = 0;           // linear maps (hidden layers + 1)
  int64_t width = 0;        // hidden units (all hidden layers have this width)
  Act act = Act::tanh;
  const T* w[kMaxLayers] = {};
  const T* b[kMaxLayers] = {};
  int64_t in(int k) const { return k == 0 ? dim + (fourier ? 2 * fourier : 1) : width; }
  int64_t out(int k) const { return k + 1 == layers ? dim : width; }
};

/// Rows [0, rows) of x [rows, dim] and times t (t[i * t_stride]; stride 0 broadcasts one
/// time). Row-major everywhere; ld* are leading dimensions (elements per row).
template <class T>
struct Rows {
  int64_t rows = 0;
  const T* x = nullptr;
  const T* t = nullptr;
  int64_t t_stride = 1;
};

/// v = net(x, t) into out [rows, dim]. When `saved` is not null the hidden activations
/// and the activation derivatives of every hidden layer are kept for backward():
/// saved[i * ld_saved + (2k) * width ...] = a_{k+1} (the input of layer k+1) and
/// saved[i * ld_saved + (2k+1) * width ...] = act'(z_k), with ld_saved = 2 (L-1) width.
template <class T>
void forward(const Net<T>& net, const Rows<T>& r, T* out, T* saved);

/// z[0, n) <- act(z) and, when d is not null, d[0, n) <- act'(z): the kernels' vectorized
/// activations on any contiguous array.
template <class T>
void activate_array(Act act, T* z, T* d, int64_t n);

/// Backward pass for rows [0, rows) given grad_out [rows, dim] and forward()'s `saved`:
/// adds the parameter gradients into grad_w[k] ([out, in]) and grad_b[k] ([out]), and
/// writes the input gradient into grad_x [rows, dim] when it is not null.
template <class T>
void backward(const Net<T>& net, const Rows<T>& r, const T* saved, const T* grad_out,
              T* const* grad_w, T* const* grad_b, T* grad_x);

/// v (into out, when not null) and the exact divergence tr(dv/dx) into div [rows], by
/// carrying the Jacobian dh/dx through the layers alongside the activations.
template <class T>
void divergence(const Net<T>& net, const Rows<T>& r, T* out, T* div);

/// Forward-mode Jacobian-vector product (MLPVelocity::forward_with_jvp): v = net(x, t)
/// into v [rows, dim] and jv = (dv/dx) u into jv [rows, dim], for rows [0, rows) of x and
/// of the direction u [rows, dim] (t gets a zero tangent). Cache blocks are
/// [i0, i0 + block_rows) from the first row, so callers that split a batch must split it
/// at multiples of block_rows. When `saved` is not null (jvp_saved_per_row elements per
/// row) it keeps what jvp_backward needs: per block and hidden layer, the layer's output
/// and its tangent stacked, act'(z), and act''(z) times the pre-activation tangent.
template <class T>
void jvp_forward(const Net<T>& net, const Rows<T>& r, const T* u, T* v, T* jv, T* saved);

int64_t jvp_saved_per_row(int layers, int64_t width);

/// Backward pass of jvp_forward given the adjoints gv and gjv of v and jv ([rows, dim]
/// each; null means zero): adds the parameter gradients into grad_w[k] and grad_b[k] and
/// writes dL/dx into grad_x [rows, dim] when it is not null. u gets no gradient.
template <class T>
void jvp_backward(const Net<T>& net, const Rows<T>& r, const T* u, const T* saved, const T* gv,
                  const T* gjv, T* const* grad_w, T* const* grad_b, T* grad_x);

/// Rows per cache block (a power of two).
int64_t block_rows(int64_t width);

/// Runs one small float product of the forward pass's kind (x W^T). oneDNN sets itself up
/// and generates the code of each kind of product on its first call, ~20-40 ms apiece on
/// this machine; this pays it ahead for the forward pass (fast::Prewarm runs it on
/// another thread).
void warm_up_gemm();

}  // namespace cnf::nn::fast::kernel
