// cnf/coupling/coupling.h — how data x_0 and noise x_1 are paired in a minibatch.
//
// A coupling reorders (or resamples) the noise so that the pairs (x_0[i], x_1[i]) follow
// the joint it defines. Independent coupling is the identity (I-CFM, Lipman et al. 2023;
// Tong et al. 2023). Optimal-transport couplings live beside it (issue: optimal transport).
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace cnf::coupling {

class Coupling {
 public:
  virtual ~Coupling() = default;
  /// Returns the paired (x_0, x_1).
  virtual std::pair<at::Tensor, at::Tensor> pair(const at::Tensor& x_0, const at::Tensor& x_1,
                                                 at::Generator& gen) const = 0;
  virtual std::string name() const = 0;
};
using CouplingPtr = std::shared_ptr<const Coupling>;

class Independent final : public Coupling {
 public:
  std::pair<at::Tensor, at::Tensor> pair(const at::Tensor& x_0, const at::Tensor& x_1,
                                         at::Generator&) const override {
    return {x_0, x_1};
  }
  std::string name() const override { return "independent"; }
};

/// Builds a coupling by name; unknown names list the valid ones.
CouplingPtr make_coupling(const std::string& name);
std::vector<std::string> coupling_names();

}  // namespace cnf::coupling
