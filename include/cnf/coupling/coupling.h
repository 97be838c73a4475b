/// \file
/// cnf/coupling/coupling.h — how data x_0 and noise x_1 are paired in a minibatch.
///
/// A coupling reorders (or resamples) the noise so that the pairs (x_0[i], x_1[i]) follow
/// the joint it defines:
///  - independent: the identity (I-CFM; Lipman et al. 2023; Tong et al. 2023).
///  - exact: the minibatch optimal transport plan for the squared Euclidean cost (OT-CFM;
///    Tong et al. 2023, "Improving and generalizing flow-based generative models with
///    minibatch optimal transport"; Pooladian et al. 2023). With equal batch sizes the plan
///    is a permutation / B, so x_1 is permuted by the optimal assignment.
///  - sinkhorn: the entropic plan P_epsilon of the minibatch; each x_0[i] keeps its place
///    and draws its partner j with probability P_ij / a_i, so the pairs follow P_epsilon.
///  - sb: Schrodinger-bridge CFM (Tong et al. 2024, "Simulation-free Schrodinger bridges via
///    score and flow matching"): the entropic plan with epsilon = 2 sigma^2 (the static SB
///    between the two marginals for Brownian motion with diffusion sigma), used with the
///    Brownian-bridge path x_t = (1 - t) x_0 + t x_1 + sigma sqrt(t (1 - t)) z, which the
///    flow-matching objective adds when bridge_sigma() > 0.
/// Costs are squared Euclidean distances between the flattened samples.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

/// Couplings: how a minibatch pairs data x_0 with noise x_1 (I-CFM, OT-CFM, entropic OT,
/// Schrodinger-bridge CFM).
namespace cnf::coupling {

/// How a minibatch pairs data x_0 with noise x_1 (see the file comment); make_coupling
/// builds one by name.
class Coupling {
 public:
  virtual ~Coupling() = default;
  /// Returns the paired (x_0, x_1).
  virtual std::pair<at::Tensor, at::Tensor> pair(const at::Tensor& x_0, const at::Tensor& x_1,
                                                 at::Generator& gen) const = 0;
  /// The registry name: "independent", "exact", "sinkhorn" or "sb".
  virtual std::string name() const = 0;
  /// The canonical spec: the name and the parameters that differ from their defaults, e.g.
  /// "sb:sigma=0.3" ("sb" at sigma 0.5); make_coupling reads it back, and a checkpoint stores
  /// it so that a resumed run must use the same coupling.
  virtual std::string describe() const { return name(); }
  /// sigma of the Brownian-bridge noise the objective adds to the path (0: none).
  virtual double bridge_sigma() const { return 0.0; }
  /// Whether it keeps the independent draws as they are (objectives that need independent
  /// noise, and class labels riding with their images, accept only such a coupling).
  virtual bool keeps_draws() const { return false; }
  /// One line for a training report about the plans solved so far (e.g. how many did not
  /// converge), or "" when there is nothing to say.
  virtual std::string report() const { return ""; }
};
/// A shared, immutable coupling.
using CouplingPtr = std::shared_ptr<const Coupling>;

/// Parameters of the couplings that have any.
struct CouplingOptions {
  /// Entropic regularization of `sinkhorn`, in units of the squared distance (> 0).
  double epsilon = 0.1;
  /// Brownian-bridge sigma of `sb` (> 0); its plan uses epsilon = 2 sigma^2.
  double sigma = 0.5;
  /// Sinkhorn stopping rule inside the couplings: a minibatch plan needs no more.
  double tol = 1e-4;
  /// Sinkhorn iteration limit inside the couplings. Partners are drawn row by row from
  /// P[i, :] / (P 1)_i, so the pairs' x_0 marginal is exact but their x_1 marginal is
  /// q_j = (1/n) sum_i P_ij / (P 1)_i, which is uniform only when the plan converged.
  int64_t max_iter = 2000;
  /// Largest relative error max_j |m q_j - 1| of the pairs' x_1 marginal that an
  /// unconverged plan may have; such plans are used and counted (report()), a worse one stops
  /// training with an error saying what to change.
  double max_marginal_error = 0.05;
};

/// Independent pairing (I-CFM): the batches as they are, nothing drawn.
class Independent final : public Coupling {
 public:
  std::pair<at::Tensor, at::Tensor> pair(const at::Tensor& x_0, const at::Tensor& x_1,
                                         at::Generator&) const override {
    return {x_0, x_1};
  }
  std::string name() const override { return "independent"; }
  bool keeps_draws() const override { return true; }
};

/// Minibatch exact OT (OT-CFM). Deterministic: draws nothing from the generator when the
/// batches have equal sizes; otherwise samples partners from the network-simplex plan.
class ExactOT final : public Coupling {
 public:
  std::pair<at::Tensor, at::Tensor> pair(const at::Tensor& x_0, const at::Tensor& x_1,
                                         at::Generator& gen) const override;
  std::string name() const override { return "exact"; }
};

/// Minibatch entropic OT: partners sampled from the Sinkhorn plan at `epsilon`.
class EntropicOT : public Coupling {
 public:
  /// Throws cnf::Error unless options.epsilon is finite and > 0.
  explicit EntropicOT(CouplingOptions options);
  std::pair<at::Tensor, at::Tensor> pair(const at::Tensor& x_0, const at::Tensor& x_1,
                                         at::Generator& gen) const override;
  std::string name() const override { return "sinkhorn"; }
  std::string describe() const override;
  /// "N of M minibatch plans did not converge (largest x_1 marginal error E)" once any did.
  std::string report() const override;

  /// The plans solved so far (by every thread of this object).
  struct PlanStats {
    /// \var plans
    /// Plans solved.
    /// \var unconverged
    /// Plans that stopped at max_iter before reaching tol.
    int64_t plans = 0, unconverged = 0;
    /// Largest relative error of the pairs' x_1 marginal among the unconverged plans.
    double max_marginal_error = 0;
  };
  /// What the plans solved so far did.
  PlanStats stats() const;

 protected:
  /// The options; options_.epsilon regularizes the plan.
  CouplingOptions options_;

 private:
  mutable std::mutex mutex_;
  mutable PlanStats stats_;
};

/// Schrodinger-bridge CFM: the entropic plan at epsilon = 2 sigma^2, plus bridge noise.
class SchrodingerBridge final : public EntropicOT {
 public:
  /// Throws cnf::Error unless options.sigma is finite and > 0; the plan uses epsilon = 2 sigma^2.
  explicit SchrodingerBridge(CouplingOptions options);
  std::string name() const override { return "sb"; }
  std::string describe() const override;
  double bridge_sigma() const override { return sigma_; }

 private:
  double sigma_;
};

/// Builds a coupling from a spec `name` or `name:key=value` (core/spec.h): independent,
/// exact, sinkhorn:eps=E, sb:sigma=S. A key the spec sets overrides `options`; the others
/// come from `options`. describe() prints the canonical spec, which builds the same coupling.
/// Unknown names and keys list the valid ones; bad values say which.
///
/// Example (pairs a minibatch by minibatch OT):
/// \code
///   auto coupling = cnf::coupling::make_coupling("exact");
///   at::Generator gen = cnf::make_generator(0);
///   auto [x_0, x_1] = coupling->pair(data, noise, gen);  // noise permuted to its OT partners
/// \endcode
CouplingPtr make_coupling(const std::string& spec, const CouplingOptions& options = {});
/// The canonical spec of a coupling's text: spec text, or the form checkpoints stored before
/// couplings were spec text ("sinkhorn(epsilon=0.3)", "sb(sigma=0.5)").
std::string canonical_coupling(const std::string& text);
/// The registered names: independent, exact, sinkhorn, sb.
std::vector<std::string> coupling_names();

}  // namespace cnf::coupling
