// Adding a schedule and a sampler takes one class or value and one registry row: this file
// registers a test-only schedule with a parameter and a test-only sampler when the test
// binary starts (before Google Test lists its parameterized cases), so the generic suites
// that iterate the registries (ScheduleTest.*, ScheduleSpec.*, ScheduleTorchScript.*,
// SdeSamplerTest.*, the diffusion tests over every schedule) run over them unchanged.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <memory>

#include "cnf/core/error.h"
#include "cnf/core/spec.h"
#include "cnf/core/text.h"
#include "cnf/path/schedule.h"
#include "cnf/sde/samplers.h"

using namespace cnf;

namespace {

// alpha_t = 1 - t^p, sigma_t = t (p = 1 is condot with sigma_min 0): a schedule with a
// parameter, written against the public interface only.
class PowerSchedule final : public path::Schedule {
 public:
  explicit PowerSchedule(double p) : p_(p) {
    CNF_CHECK(p >= 1 && p <= 10, "test_power needs p in [1, 10], got ", p);
  }
  path::ScheduleValues operator()(const at::Tensor& t) const override {
    return {1 - t.pow(p_), t.clone(), -p_ * t.pow(p_ - 1), torch::ones_like(t)};
  }
  std::string describe() const override {
    return canonical_spec("test_power", path::schedules().get("test_power").params, {p_});
  }
  std::string torchscript() const override {
    return "alpha = 1.0 - torch.pow(t, " + float_literal(p_) + ")\nsigma = t.clone()\n" +
           "d_alpha = -" + float_literal(p_) + " * torch.pow(t, " + float_literal(p_ - 1) +
           ")\nd_sigma = torch.ones_like(t)\n";
  }

 private:
  double p_;
};

// Heun's method (explicit trapezoid) on the model's velocity, uniform in t: two evaluations
// per step, order 2.
at::Tensor heun(sde::Denoiser& m, at::Tensor x, const std::vector<double>& ts,
                const sde::SamplerOptions&, at::Generator&) {
  for (size_t k = 0; k + 1 < ts.size(); ++k) {
    const double t = ts[k], h = ts[k + 1] - ts[k];
    auto k1 = m(x, t, path::Param::velocity);
    auto k2 = m(x + h * k1, ts[k + 1], path::Param::velocity);
    x = x + 0.5 * h * (k1 + k2);
  }
  return x;
}
int64_t two(const sde::SamplerOptions&) { return 2; }
const sde::SamplerMethod kHeun{
    "test-only: Heun on the velocity", false, false, false, 2, sde::Spacing::time, two, heun};

const bool registered = [] {
  path::add_schedule("test_power",
                     {{{"p", 2.0}}, [](const std::vector<double>& v) {
                        return path::SchedulePtr(std::make_shared<PowerSchedule>(v[0]));
                      }});
  sde::add_sampler("test_heun", &kHeun);
  return true;
}();

}  // namespace

TEST(Registration, TestOnlyPartsAreRegisteredAndNamesStayUnique) {
  ASSERT_TRUE(registered);
  EXPECT_TRUE(path::schedules().contains("test_power"));
  EXPECT_EQ(path::make_schedule("test_power:p=3")->describe(), "test_power:p=3");
  EXPECT_EQ(sde::sampler_name(sde::samplers().get("test_heun")), "test_heun");
  EXPECT_EQ(&sde::samplers().get("test_heun").method(), &kHeun);
  // A taken name is refused for schedules and samplers alike, naming it.
  try {
    path::add_schedule("vp", path::schedules().get("vp"));
    ADD_FAILURE() << "a second vp was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'vp'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(sde::add_sampler("test_heun", &kHeun), Error);
  static const sde::SamplerMethod no_loop{};  // neither a run function nor a cost
  EXPECT_THROW(sde::add_sampler("incomplete", &no_loop), Error);
  EXPECT_THROW(sde::add_sampler("none", nullptr), Error);
}
