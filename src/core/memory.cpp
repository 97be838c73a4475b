#include "cnf/core/memory.h"

#include <torch/types.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "cnf/core/error.h"

namespace cnf {

namespace {

constexpr size_t kHugePage = size_t{2} << 20;

int64_t byte_size(at::IntArrayRef sizes, at::ScalarType dtype) {
  int64_t n = 1;
  for (int64_t s : sizes) {
    CNF_CHECK(s >= 0, "large_empty: negative size ", s, " in ", sizes);
    n *= s;
  }
  return n * static_cast<int64_t>(c10::elementSize(dtype));
}

// A zero-filled mapping of `bytes`, its start aligned to a huge page and advised for huge
// pages; undefined when the mapping fails (the caller falls back to LibTorch).
at::Tensor mapped(at::IntArrayRef sizes, at::ScalarType dtype, int64_t bytes, bool huge) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const size_t len = static_cast<size_t>(bytes) + kHugePage;
  void* base = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return {};
  const auto start =
      (reinterpret_cast<uintptr_t>(base) + kHugePage - 1) & ~(uintptr_t{kHugePage} - 1);
  void* data = reinterpret_cast<void*>(start);
  // Advice only: without THP the pages come 4 KB at a time, as from malloc.
  if (huge) madvise(data, static_cast<size_t>(bytes), MADV_HUGEPAGE);
  return torch::from_blob(
      data, sizes, [base, len](void*) { munmap(base, len); }, torch::TensorOptions().dtype(dtype));
#else
  (void)sizes;
  (void)dtype;
  (void)bytes;
  (void)huge;
  return {};
#endif
}

}  // namespace

namespace {

at::Tensor allocate(at::IntArrayRef sizes, at::ScalarType dtype, at::Device device, bool zero) {
  const int64_t bytes = byte_size(sizes, dtype);
  if (device.is_cpu() && bytes >= (zero ? kLargeZerosBytes : kLargeBufferBytes)) {
    // Zeros that are mostly left zero (a sparse plan) are best faulted in small pages:
    // pages never written are never touched. Buffers written in full take huge pages.
    auto t = mapped(sizes, dtype, bytes, /*huge=*/!zero);
    if (t.defined()) return t;  // fresh pages are zero
  }
  const auto options = torch::TensorOptions().dtype(dtype).device(device);
  return zero ? torch::zeros(sizes, options) : torch::empty(sizes, options);
}

}  // namespace

at::Tensor large_empty(at::IntArrayRef sizes, at::ScalarType dtype, at::Device device) {
  return allocate(sizes, dtype, device, false);
}

at::Tensor large_zeros(at::IntArrayRef sizes, at::ScalarType dtype, at::Device device) {
  return allocate(sizes, dtype, device, true);
}

}  // namespace cnf
