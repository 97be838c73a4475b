// Trains flow matching on points this program makes itself (a noisy ring, not a built-in
// data set), saves the checkpoint, samples it with RK4 and prints W2 to held-out points.
// Usage: train_own_data [OUT.pt] [STEPS]
#include <cnf/data/sources.h>
#include <cnf/metrics/distances.h>
#include <cnf/train/flow.h>
#include <cnf/train/trainer.h>
#include <cnf/version.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <string>

int main(int argc, char** argv) try {
  const std::string out = argc > 1 ? argv[1] : "ring.pt";
  const int64_t steps = argc > 2 ? std::stoll(argv[2]) : 3000;
  torch::manual_seed(0);

  //! [train]
  // The data: 5,000 points on a ring of radius 2, float32 [N, 2].
  auto angle = torch::rand({5000}) * 2 * M_PI;
  auto radius = 2 + 0.1 * torch::randn({5000});
  auto points = torch::stack({radius * torch::cos(angle), radius * torch::sin(angle)}, 1);
  auto train_rows = points.slice(0, 0, 4000), held_out = points.slice(0, 4000);

  auto data = std::make_shared<cnf::data::Table>(train_rows, "ring");
  auto prior = std::make_shared<cnf::data::StandardNormal>(2);
  cnf::train::FlowSpec spec;  // an MLP velocity field on the OT path (condot)
  cnf::train::TrainOptions options;
  options.steps = steps;
  options.lr = 2e-3;
  options.lr_schedule = cnf::train::LrSchedule::cosine;
  options.ema_decay = 0.999;
  cnf::train::Trainer trainer(spec, options, data, prior);
  trainer.run();
  trainer.save(out);  // atomic: a temporary file renamed into place
  //! [train]

  //! [sample]
  auto flow = cnf::train::load_checkpoint(out);
  cnf::ode::SolveOptions solver;
  solver.method = "rk4";
  solver.steps = 20;
  auto noise = torch::randn({1000, 2});
  auto solution = cnf::train::generate(*flow.model, *flow.spec.make_schedule(), noise, solver);
  const at::Tensor samples = solution.y[0];
  //! [sample]

  std::printf("cnf %s: trained %lld steps, wrote %s\n", CNF_VERSION,
              static_cast<long long>(trainer.steps_done()), out.c_str());
  std::printf("W2(samples, held-out) = %.4f  (NFE %lld)\n", cnf::metrics::w2(samples, held_out),
              static_cast<long long>(solution.nfe));
  std::printf("W2(prior, held-out)   = %.4f\n", cnf::metrics::w2(noise, held_out));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "train_own_data: %s\n", e.what());
  return 1;
}
