// Loads a checkpoint written by `cnf train` (or examples/train_own_data), samples it with
// DPM-Solver++(2M) and with adaptive dopri5, and computes exact log-likelihoods of points.
// Usage: sample_checkpoint MODEL.pt
#include <cnf/core/runtime.h>
#include <cnf/data/sources.h>
#include <cnf/density/density.h>
#include <cnf/metrics/distances.h>
#include <cnf/sde/samplers.h>
#include <cnf/train/flow.h>
#include <cnf/train/trainer.h>
#include <torch/torch.h>

#include <cstdio>

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::fprintf(stderr, "usage: sample_checkpoint MODEL.pt\n");
    return 2;
  }
  //! [load]
  const cnf::train::Checkpoint flow = cnf::train::load_checkpoint(argv[1]);
  const auto schedule = flow.spec.make_schedule();
  const int64_t dim = flow.spec.model.dim;
  auto prior = cnf::data::make_source(flow.spec.prior, dim);
  at::Generator gen = cnf::make_generator(1);  // every random draw names its stream
  //! [load]

  //! [samplers]
  // DPM-Solver++(2M): 20 network evaluations; it takes the raw network and what it predicts.
  cnf::sde::SamplerOptions fast;
  fast.sampler = cnf::sde::Sampler::dpmpp_2m;
  fast.steps = 20;
  auto noise = torch::randn({2000, dim});
  auto x_start = cnf::sde::start_scale(*schedule, fast) * noise;
  auto dpm =
      cnf::sde::sample(*flow.network, flow.spec.network_param(), *schedule, x_start, fast, gen);

  // dopri5 on the probability-flow ODE of the velocity field, to rtol = atol = 1e-5.
  cnf::ode::SolveOptions adaptive;
  adaptive.method = "dopri5";
  adaptive.adaptive.rtol = adaptive.adaptive.atol = 1e-5;
  auto ode = cnf::train::generate(*flow.model, *schedule, noise, adaptive);
  //! [samplers]
  std::printf("DPM-Solver++(2M): %lld NFE, dopri5: %lld NFE; W2 between them %.4f\n",
              static_cast<long long>(dpm.nfe), static_cast<long long>(ode.nfe),
              cnf::metrics::w2(dpm.x, ode.y[0]));

  //! [likelihood]
  // log rho_0 of given points, exact divergence (one autograd pass per dimension).
  cnf::density::LikelihoodOptions lik;
  lik.divergence.method = cnf::density::Divergence::exact;
  auto points = ode.y[0].slice(0, 0, 5);
  auto result = cnf::density::log_likelihood(*flow.model, *schedule, *prior, points, lik, gen);
  //! [likelihood]
  for (int64_t i = 0; i < points.size(0); ++i)
    std::printf("log rho_0(%+.3f, %+.3f) = %.4f\n", points[i][0].item<double>(),
                points[i][1 % dim].item<double>(), result.log_prob[i].item<double>());
  std::printf("likelihood NFE %lld\n", static_cast<long long>(result.nfe));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "sample_checkpoint: %s\n", e.what());
  return 1;
}
