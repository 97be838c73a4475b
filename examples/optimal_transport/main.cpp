// Exact optimal transport and Sinkhorn between two point clouds, then uses the plans: the
// exact plan's assignment moves each source point to its partner, and the entropic plan's
// barycentric projection gives a smooth transport map.
// Usage: optimal_transport [N]
#include <cnf/ot/emd.h>
#include <cnf/ot/sinkhorn.h>
#include <torch/torch.h>

#include <cstdio>
#include <string>

int main(int argc, char** argv) try {
  const int64_t n = argc > 1 ? std::stoll(argv[1]) : 512;
  torch::manual_seed(0);
  // Source: N(0, I); target: N(m, diag(s^2)). Their exact W2^2 is |m|^2 + sum (s - 1)^2.
  auto x = torch::randn({n, 2}, torch::kFloat64);
  auto m = torch::tensor({3.0, -1.0}, torch::kFloat64),
       s = torch::tensor({0.5, 2.0}, torch::kFloat64);
  auto y = m + s * torch::randn({n, 2}, torch::kFloat64);

  //! [exact]
  cnf::ot::SolveOptions exact;  // network simplex / assignment, squared Euclidean cost
  cnf::ot::Solution plan = cnf::ot::solve(x, y, exact);
  auto moved = y.index_select(0, plan.assignment);  // x[i] -> y[assignment[i]]
  //! [exact]

  //! [sinkhorn]
  cnf::ot::SolveOptions entropic;
  entropic.method = cnf::ot::Method::sinkhorn;
  entropic.sinkhorn.set_epsilon(0.05).set_tol(1e-6);
  cnf::ot::Solution soft = cnf::ot::solve(x, y, entropic);
  // Barycentric projection: T(x_i) = sum_j P_ij y_j / sum_j P_ij.
  auto mapped = soft.plan.matmul(y) / soft.plan.sum(1, true);
  //! [sinkhorn]

  const double truth = (m * m).sum().item<double>() + ((s - 1) * (s - 1)).sum().item<double>();
  std::printf("exact OT:  cost %.4f (mean |x - T x|^2 %.4f)\n", plan.cost,
              (x - moved).pow(2).sum(1).mean().item<double>());
  std::printf("sinkhorn:  cost %.4f after %lld iterations (converged: %s)\n", soft.cost,
              static_cast<long long>(soft.iterations), soft.converged ? "yes" : "no");
  std::printf("population W2^2 = %.4f; barycentric map's mean |x - T x|^2 %.4f\n", truth,
              (x - mapped).pow(2).sum(1).mean().item<double>());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "optimal_transport: %s\n", e.what());
  return 1;
}
