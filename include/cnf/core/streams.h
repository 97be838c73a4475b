/// \file
/// cnf/core/streams.h — the named random streams of a run.
///
/// Every random draw outside the training loop (which keeps one generator per shard, see
/// train/trainer.h) takes a generator of its own, derived from the run's seed and a named
/// stream, so that one part's draws never shift another's and a stream is found by name,
/// not by a number typed at the call. The offsets are part of the results (the same seed
/// gives the same samples across releases): never renumber them, only add new ones.
#pragma once

#include <ATen/core/Generator.h>

#include <cstdint>

#include "cnf/core/runtime.h"

namespace cnf {

/// The streams, each an offset from the run's seed.
enum class Stream : uint64_t {
  /// Prior draws x_1 of `cnf sample` (the seed itself).
  sampling = 0,
  /// Prior draws x_1 of a held-out evaluation (train, demo, eval).
  evaluation = 1,
  /// The noise of stochastic samplers in the sampler study.
  sampler_noise = 2,
  /// Dequantization noise and Hutchinson probes of likelihoods (nll, studies).
  likelihood = 3,
  /// Prior draws of the error-versus-NFE study.
  nfe_study = 7,
  /// Prior draws of a rectified flow's report (straightness, W2).
  rectify_report = 11,
  /// Prior draws of a rectified flow's trajectory plot.
  rectify_plot = 13,
  /// Prior draws of the couplings study's evaluation.
  couplings_eval = 17,
  /// Prior draws and likelihood probes of the time-weighting study.
  time_study = 19,
  /// Dequantization noise and probes of the image study's bits/dim.
  images_bpd = 101,
  /// Prior draws of the image study's samples (the same for every method).
  images_samples = 202,
};

/// The generator of `stream` for the run seeded `seed`, on data-parallel rank `rank` (rank 0
/// draws what a one-process run draws; rank r is offset by r * 1000003).
inline at::Generator stream_generator(uint64_t seed, Stream stream, uint64_t rank = 0) {
  return make_generator(seed + static_cast<uint64_t>(stream) + 1000003ull * rank);
}

}  // namespace cnf
