/// \file
/// cnf/core/runtime.h — seeding, thread settings, devices and tensor checks.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <string>

namespace cnf {

/// A generator of its own for reproducible streams that a checkpoint can save.
/// Every random draw in cnf takes a generator explicitly.
at::Generator make_generator(uint64_t seed);

/// Seeds LibTorch's global generator (for code outside cnf that uses it).
void seed_global(uint64_t seed);

/// Thread settings. `threads` LibTorch intra-op threads (>= 1); OpenBLAS is held at one
/// thread so that its pthreads do not fight LibTorch's OpenMP threads for the cores
/// (small-network work is per-op bound; see README "Threads"). Also flushes subnormal
/// floats to zero, and keeps large temporaries on the heap (glibc mallopt) instead of
/// mapping and page-faulting them anew for every tensor.
void set_threads(int threads);

/// Parses "cpu", "cuda", "cuda:1"; a clear error when the device is unknown or absent.
c10::Device parse_device(const std::string& name);

/// Throws cnf::Error naming `what` when `x` has a NaN or Inf entry.
void check_finite(const at::Tensor& x, const std::string& what);

}  // namespace cnf
