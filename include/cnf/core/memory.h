/// \file
/// cnf/core/memory.h — large CPU buffers backed by transparent huge pages.
///
/// A fresh buffer's pages are faulted in one at a time on first touch. On this project's
/// virtual machine a 4 KB page fault costs several microseconds, so touching a 128 MB
/// matrix (an exact-OT cost matrix at 4,096 points) took ~0.55 s, as long as the solve
/// itself; faulted in 2 MB pages it took ~0.04-0.3 s, and huge pages also spare the TLB
/// when a matrix is streamed many times (Sinkhorn's kernel).
///   - large_empty: buffers that will be written in full, from kLargeBufferBytes on, are
///     mapped directly and advised for huge pages (madvise(MADV_HUGEPAGE), effective where
///     the kernel's THP mode is "always" or "madvise").
///   - large_zeros: buffers that stay mostly zero (a transport plan with one entry per
///     row), from kLargeZerosBytes on, are mapped without touching them: the kernel's
///     zero pages appear on first write, so pages never written cost nothing (LibTorch's
///     zeros would write all of them). Below that size glibc reuses freed heap memory,
///     which is cheaper for repeated calls.
/// Smaller buffers, and other devices, go to LibTorch's allocator.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace cnf {

/// large_empty maps buffers from this size on, for huge pages.
constexpr int64_t kLargeBufferBytes = int64_t{4} << 20;
/// large_zeros maps buffers from this size on (glibc's largest mmap threshold: larger
/// allocations are fresh mappings whatever we do).
constexpr int64_t kLargeZerosBytes = int64_t{32} << 20;

/// An uninitialized tensor of `sizes` and `dtype` on `device`.
at::Tensor large_empty(at::IntArrayRef sizes, at::ScalarType dtype, at::Device device = at::kCPU);

/// The same, filled with zeros (free for mapped buffers: fresh pages are zero).
at::Tensor large_zeros(at::IntArrayRef sizes, at::ScalarType dtype, at::Device device = at::kCPU);

}  // namespace cnf
