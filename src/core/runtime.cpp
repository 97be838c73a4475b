#include "cnf/core/runtime.h"

#include <ATen/CPUGeneratorImpl.h>
#include <dlfcn.h>
#include <malloc.h>
#include <torch/torch.h>

#include "cnf/core/error.h"

namespace cnf {

at::Generator make_generator(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

void seed_global(uint64_t seed) { torch::manual_seed(seed); }

void set_threads(int threads) {
  CNF_CHECK(threads >= 1, "threads must be >= 1, got ", threads);
  torch::set_num_threads(threads);
  // Trained networks push activations (SELU's exp, tiny gradients) into subnormal floats,
  // which cost ~100x per operation on x86; flushing them to zero is what GPU kernels do.
  at::globalContext().setFlushDenormal(true);
  // Batch activations (e.g. 10,000 x 64 floats = 2.5 MB) exceed glibc's mmap threshold, so
  // every temporary was mmapped, page-faulted in and unmapped again: perf showed 20-40% of
  // sampling time in page faults. Keep such blocks on the heap and do not trim it.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  // OpenBLAS exports openblas_set_num_threads; the reference BLAS does not. Look it up
  // at run time so cnf works (slowly) with either behind libblas.so.3.
  using SetThreads = void (*)(int);
  if (auto* fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads")))
    fn(1);
}

c10::Device parse_device(const std::string& name) {
  c10::Device device(c10::kCPU);
  try {
    device = c10::Device(name);
  } catch (const std::exception&) {
    fail("unknown device '", name, "'; use 'cpu', 'cuda' or 'cuda:N'");
  }
  if (device.is_cuda())
    CNF_CHECK(torch::cuda::is_available(), "device '", name,
              "' requested but this LibTorch build has no usable CUDA device; use --device cpu");
  return device;
}

void check_finite(const at::Tensor& x, const std::string& what) {
  if (!x.defined() || x.numel() == 0) return;
  if (!x.is_floating_point()) return;
  // One read pass and no [n, ...] temporaries: a NaN or Inf makes the sum non-finite. A
  // finite tensor whose sum overflows falls through to the full check (and passes).
  if (std::isfinite(x.sum().item<double>())) return;
  auto bad = torch::logical_not(torch::isfinite(x));
  if (!bad.any().item<bool>()) return;
  auto idx = bad.nonzero()[0];
  std::string at_str;
  for (int64_t k = 0; k < idx.size(0); ++k)
    at_str += (k ? "," : "") + std::to_string(idx[k].item<int64_t>());
  fail(what, " contains a non-finite value (", x.index({bad}).view(-1)[0].item<double>(),
       ") at index [", at_str, "]; remove or replace NaN/Inf values");
}

}  // namespace cnf
