// The extension point: a velocity field of the program's own (any torch::nn::Module that
// derives from cnf::nn::VelocityFieldImpl), trained by cnf's trainer and sampled by cnf's
// samplers. Here a residual MLP with sinusoidal time features learns the 8-Gaussians set.
// Usage: custom_field [STEPS]
#include <cnf/core/runtime.h>
#include <cnf/data/sources.h>
#include <cnf/metrics/distances.h>
#include <cnf/nn/velocity.h>
#include <cnf/sde/samplers.h>
#include <cnf/train/flow.h>
#include <cnf/train/trainer.h>
#include <torch/torch.h>

#include <cstdio>
#include <string>

//! [field]
// v_t(x) = out(h), h = in([x, sin(w t), cos(w t)]) + sum of residual blocks.
class ResidualField : public cnf::nn::VelocityFieldImpl {
 public:
  ResidualField(int64_t dim, int64_t width) : dim_(dim) {
    freqs_ = register_buffer("freqs", torch::arange(1, 5, torch::kFloat32) * M_PI);
    in_ = register_module("input", torch::nn::Linear(dim + 8, width));
    for (int k = 0; k < 2; ++k)
      blocks_.push_back(
          register_module("block" + std::to_string(k), torch::nn::Linear(width, width)));
    out_ = register_module("output", torch::nn::Linear(width, dim));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) override {
    auto wt = t.to(x.dtype()).unsqueeze(1) * freqs_.to(x.dtype());
    auto h = torch::silu(in_(torch::cat({x, torch::sin(wt), torch::cos(wt)}, 1)));
    for (auto& b : blocks_) h = h + torch::silu(b(h));
    return out_(h);
  }
  std::vector<int64_t> sample_shape() const override { return {dim_}; }

 private:
  int64_t dim_;
  torch::Tensor freqs_;
  torch::nn::Linear in_{nullptr}, out_{nullptr};
  std::vector<torch::nn::Linear> blocks_;
};
//! [field]

int main(int argc, char** argv) try {
  const int64_t steps = argc > 1 ? std::stoll(argv[1]) : 3000;
  //! [train]
  cnf::train::NetworkFactory factory = [](const cnf::nn::ModelSpec& spec) {
    return std::make_shared<ResidualField>(spec.dim, 128);
  };
  auto data = cnf::data::make_source("8gaussians");
  auto prior = cnf::data::make_source("normal", 2);
  cnf::train::TrainOptions options;
  options.steps = steps;
  options.lr = 2e-3;
  options.lr_schedule = cnf::train::LrSchedule::cosine;
  options.coupling = "exact";  // minibatch OT-CFM pairs
  cnf::train::Trainer trainer(cnf::train::FlowSpec{}, options, data, prior, factory);
  trainer.run();
  trainer.save("custom.pt");
  auto flow = cnf::train::load_checkpoint("custom.pt", torch::kCPU, factory);
  //! [train]

  //! [sample]
  at::Generator gen = cnf::make_generator(7);
  auto reference = data->sample(2000, gen);
  auto schedule = flow.spec.make_schedule();
  auto noise = torch::randn({2000, 2});
  cnf::ode::SolveOptions euler;  // 8 Euler steps: OT-CFM paths are nearly straight
  euler.method = "euler";
  euler.steps = 8;
  auto few = cnf::train::generate(*flow.model, *schedule, noise, euler);
  cnf::sde::SamplerOptions dpm;  // DPM-Solver++(2M) on the same network
  dpm.steps = 10;
  auto d = cnf::sde::sample(*flow.network, flow.spec.network_param(), *schedule,
                            cnf::sde::start_scale(*schedule, dpm) * noise, dpm, gen);
  //! [sample]
  std::printf("custom field, %lld parameters, %lld steps\n",
              static_cast<long long>(cnf::nn::count_parameters(*flow.network)),
              static_cast<long long>(trainer.steps_done()));
  std::printf("W2 to data: euler x8 %.4f, dpm++2m x10 %.4f, prior %.4f\n",
              cnf::metrics::w2(few.y[0], reference), cnf::metrics::w2(d.x, reference),
              cnf::metrics::w2(noise, reference));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "custom_field: %s\n", e.what());
  return 1;
}
