// Exact discrete OT by LEMON's network simplex (Kovacs 2015, "Minimum-cost flow
// algorithms: an experimental evaluation"; Bonneel et al. 2011, "Displacement
// interpolation using Lagrangian mass transport", for its use in OT).
//
// The transport problem is a min-cost flow on the complete bipartite digraph with one
// arc i -> j per pair. Supplies and costs are both handed to LEMON as integers:
//  - supplies, because the network simplex moves integer flow;
//  - costs, because LEMON's pivot rules test reduced costs with an exact `c < 0`. With
//    floating costs, round-off makes reduced costs that are zero in exact arithmetic
//    come out as -1e-16 and the simplex pivots forever on degenerate problems (it hung on
//    the 1-D Euclidean cost, which has many tied plans). Integer costs are exact.

// LEMON's `INVALID` is defined in liblemon unless header-only mode is asked for; the
// parts we use (StaticDigraph, NetworkSimplex) are templates, so no library is linked.
#ifndef LEMON_ONLY_TEMPLATES
#define LEMON_ONLY_TEMPLATES
#endif

#include "cnf/ot/emd.h"

#include <lemon/network_simplex.h>
#include <lemon/static_graph.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "cnf/core/error.h"
#include "cnf/core/memory.h"
#include "cnf/core/runtime.h"

namespace cnf::ot {

namespace {

using Digraph = lemon::StaticDigraph;
using Solver = lemon::NetworkSimplex<Digraph, int64_t, int64_t>;

// Weights are quantized to multiples of 1 / kWeightScale. 2^40 keeps every flow and
// supply far below int64's 9.2e18 while each weight is off by at most 2^-40 ~ 9.1e-13.
constexpr int64_t kWeightScale = int64_t{1} << 40;

// Costs are mapped affinely onto the integers [0, K] with K = 2^56 / (number of nodes).
// LEMON starts its potentials at 2^62 (max / 2 + 1 for exact types) and they drift by at
// most (nodes) * K = 2^56 from there, so no reduced cost overflows int64. Rounding moves
// each cost by at most half a step, so the plan found is optimal for the true costs to
// within one step per unit mass: (max C - min C) * nodes * 2^-56, e.g. 5.6e-14 of the
// cost range for 2000 + 2000 points. The reported cost is recomputed from the true costs.
std::vector<int64_t> integer_costs(const at::Tensor& cost, int64_t nodes) {
  const double lo = cost.min().item<double>();
  const double hi = cost.max().item<double>();
  const double steps = static_cast<double>((int64_t{1} << 56) / nodes);
  // Subtracting a constant changes every plan's cost by the same amount (the total mass
  // is fixed), so the optimal plan is unchanged.
  const double to_int = hi > lo ? steps / (hi - lo) : 0.0;
  const double* c = cost.data_ptr<double>();
  std::vector<int64_t> q(static_cast<size_t>(cost.numel()));
  for (size_t k = 0; k < q.size(); ++k) q[k] = std::llround((c[k] - lo) * to_int);
  return q;
}

// Arc k is pair (k / m, k % m): LEMON reads costs straight from the row-major buffer.
struct CostLookup {
  using Key = Digraph::Arc;
  using Value = int64_t;
  const int64_t* data;
  int64_t operator[](const Key& arc) const { return data[Digraph::index(arc)]; }
};

struct FlowResult {
  std::vector<int64_t> flow;  // [n * m], row-major
  double total = 0;           // sum flow_ij * C_ij, not yet normalized
};

// Solves min sum f_ij C_ij s.t. sum_j f_ij = supply_i, sum_i f_ij = demand_j, f >= 0,
// with sum(supply) == sum(demand). `cost` is a contiguous CPU float64 [n, m] tensor.
FlowResult solve_flow(const std::vector<int64_t>& supply, const std::vector<int64_t>& demand,
                      const at::Tensor& cost) {
  const int64_t n = static_cast<int64_t>(supply.size());
  const int64_t m = static_cast<int64_t>(demand.size());
  // LEMON indexes arcs with int.
  CNF_CHECK(n * m <= std::numeric_limits<int>::max(), "EMD of ", n, " x ", m,
            " points needs more arcs than LEMON can index (", std::numeric_limits<int>::max(),
            "); subsample the point sets or use an entropic solver");

  std::vector<std::pair<int, int>> arcs;
  arcs.reserve(static_cast<size_t>(n * m));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) arcs.emplace_back(static_cast<int>(i), static_cast<int>(n + j));
  Digraph graph;
  graph.build(static_cast<int>(n + m), arcs.begin(), arcs.end());
  arcs.clear();
  arcs.shrink_to_fit();

  Digraph::NodeMap<int64_t> node_supply(graph);
  for (int64_t i = 0; i < n; ++i) node_supply[Digraph::node(static_cast<int>(i))] = supply[i];
  for (int64_t j = 0; j < m; ++j) node_supply[Digraph::node(static_cast<int>(n + j))] = -demand[j];

  const std::vector<int64_t> int_cost = integer_costs(cost, n + m + 1);  // + LEMON's root
  Solver solver(graph);
  solver.costMap(CostLookup{int_cost.data()}).supplyMap(node_supply);
  const Solver::ProblemType status = solver.run();
  if (status != Solver::OPTIMAL) {
    fail("network simplex did not find an optimal plan (status ",
         status == Solver::INFEASIBLE ? "INFEASIBLE" : "UNBOUNDED",
         "); this is a bug for a balanced transport problem with finite costs, please report it");
  }

  FlowResult result;
  result.flow.resize(static_cast<size_t>(n * m));
  const double* c = cost.data_ptr<double>();
  for (int64_t k = 0; k < n * m; ++k) {
    const int64_t f = solver.flow(Digraph::arc(static_cast<int>(k)));
    result.flow[k] = f;
    if (f != 0) result.total += static_cast<double>(f) * c[k];
  }
  return result;
}

void check_points(const at::Tensor& p, const char* name) {
  CNF_CHECK(p.defined(), name, " is an undefined tensor; pass a [n, d] tensor of points");
  CNF_CHECK(p.dim() == 2, name, " must be a 2-D tensor [n, d] of points, got ", p.dim(),
            "-D with shape ", p.sizes(), "; reshape it with .reshape({n, -1})");
  CNF_CHECK(p.size(0) > 0, name, " is empty (shape ", p.sizes(),
            "); OT needs at least one point on each side");
  CNF_CHECK(p.size(1) > 0, name, " has no features (shape ", p.sizes(),
            "); points need at least one coordinate");
  check_finite(p, name);
}

// Largest-remainder rounding of w * scale (w nonnegative, summing to ~1) to integers
// that sum to exactly `scale`, so the integer problem stays balanced.
std::vector<int64_t> quantize(const at::Tensor& w, int64_t scale) {
  const auto acc = w.accessor<double, 1>();
  const int64_t n = w.size(0);
  std::vector<int64_t> q(static_cast<size_t>(n));
  std::vector<double> remainder(static_cast<size_t>(n));
  int64_t sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = acc[i] * static_cast<double>(scale);
    q[i] = static_cast<int64_t>(std::floor(v));
    remainder[i] = v - static_cast<double>(q[i]);
    sum += q[i];
  }
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return remainder[a] > remainder[b]; });
  // After renormalization the floors fall short by fewer than n units (plus rounding),
  // so the loop hands out at most one unit per entry, more only in degenerate cases.
  for (int64_t k = 0; sum < scale; k = (k + 1) % n) {
    ++q[order[k]];
    ++sum;
  }
  for (int64_t k = n - 1; sum > scale; k = (k + n - 1) % n) {
    if (q[order[k]] > 0) {
      --q[order[k]];
      --sum;
    }
  }
  return q;
}

}  // namespace

at::Tensor checked_weights(const at::Tensor& w, const char* name, int64_t expected) {
  CNF_CHECK(w.defined(), name, " is an undefined tensor; pass a 1-D tensor of weights");
  CNF_CHECK(w.dim() == 1, name, " must be a 1-D tensor of weights, got shape ", w.sizes());
  CNF_CHECK(w.size(0) == expected, name, " has ", w.size(0), " weights but the cost matrix has ",
            expected, " along that side; pass one weight per point");
  check_finite(w, name);
  at::Tensor w64 = w.to(torch::kCPU, torch::kFloat64).contiguous();
  const double min_w = w64.min().item<double>();
  CNF_CHECK(min_w >= 0, name, " has a negative weight (", min_w,
            "); weights must be nonnegative probabilities");
  const double total = w64.sum().item<double>();
  CNF_CHECK(std::abs(total - 1.0) <= 1e-6, name, " weights sum to ", total,
            " but must sum to 1 (within 1e-6); divide them by their sum");
  return w64 / total;
}

Cost parse_cost(const std::string& name) {
  if (name == "sqeuclidean") return Cost::sqeuclidean;
  if (name == "euclidean") return Cost::euclidean;
  fail("unknown OT cost '", name, "'; valid costs are: sqeuclidean, euclidean");
}

at::Tensor cost_matrix(const at::Tensor& x, const at::Tensor& y, Cost cost) {
  check_points(x, "x");
  check_points(y, "y");
  CNF_CHECK(x.size(1) == y.size(1), "x and y must have the same number of features, got x ",
            x.sizes(), " and y ", y.sizes());
  at::Tensor x64 = x.to(torch::kFloat64);
  at::Tensor y64 = y.to(x64.device(), torch::kFloat64);
  // The expansion ||x||^2 + ||y||^2 - 2 x.y loses absolute accuracy ~eps * ||x||^2; the
  // cost is translation invariant, so centering both sets on their pooled mean keeps that
  // error relative to the spread of the data rather than its offset from the origin.
  const at::Tensor center = torch::cat({x64, y64}, 0).mean(0, /*keepdim=*/true);
  x64 = x64 - center;
  y64 = y64 - center;
  const at::Tensor xx = x64.pow(2).sum(1, /*keepdim=*/true);      // [n, 1]
  const at::Tensor yy = y64.pow(2).sum(1, /*keepdim=*/true).t();  // [1, m]
  // In place in one [n, m] buffer (huge pages on the CPU): each fresh large temporary
  // costs its page faults.
  at::Tensor d2 = large_empty({x64.size(0), y64.size(0)}, torch::kFloat64, x64.device());
  at::add_out(d2, xx, yy).addmm_(x64, y64.t(), /*beta=*/1, /*alpha=*/-2).clamp_min_(0);
  switch (cost) {
    case Cost::sqeuclidean:
      return d2;
    case Cost::euclidean:
      return d2.sqrt_();
  }
  fail("unhandled OT cost enum value ", static_cast<int>(cost));
}

EmdResult emd(const at::Tensor& x, const at::Tensor& y, Cost cost, ExactSolver solver) {
  const at::Tensor c = cost_matrix(x, y, cost).to(torch::kCPU).contiguous();
  const int64_t n = c.size(0);
  const int64_t m = c.size(1);
  CNF_CHECK(solver != ExactSolver::assignment || n == m,
            "the assignment solver needs as many points in x as in y, got ", n, " and ", m,
            "; use the network simplex (ExactSolver::automatic) for unequal sizes");
  EmdResult result;
  if (n == m && solver != ExactSolver::network_simplex) {
    result.assignment = assignment(c);
    const int64_t* perm = result.assignment.data_ptr<int64_t>();
    result.plan = large_zeros({n, n}, torch::kFloat64);
    double* plan = result.plan.data_ptr<double>();
    const double* cc = c.data_ptr<double>();
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      plan[i * n + perm[i]] = 1.0 / static_cast<double>(n);
      total += cc[i * n + perm[i]];
    }
    result.cost = total / static_cast<double>(n);
    return result;
  }
  // Uniform 1/n and 1/m are exact in integers after multiplying by n*m: a_i = m, b_j = n.
  const FlowResult flow = solve_flow(std::vector<int64_t>(static_cast<size_t>(n), m),
                                     std::vector<int64_t>(static_cast<size_t>(m), n), c);
  const double total_mass = static_cast<double>(n) * static_cast<double>(m);

  result.cost = flow.total / total_mass;
  result.plan = large_empty({n, m}, torch::kFloat64);
  double* plan = result.plan.data_ptr<double>();
  for (int64_t k = 0; k < n * m; ++k) plan[k] = static_cast<double>(flow.flow[k]) / total_mass;

  if (n == m) {
    // Network simplex ends at a vertex of the transport polytope, and with equal uniform
    // marginals those vertices are n times permutation matrices (Birkhoff-von Neumann),
    // so each row carries its whole supply n on one arc.
    result.assignment = torch::empty({n}, torch::kInt64);
    int64_t* perm = result.assignment.data_ptr<int64_t>();
    std::vector<bool> taken(static_cast<size_t>(n), false);
    for (int64_t i = 0; i < n; ++i) {
      perm[i] = -1;
      for (int64_t j = 0; j < m; ++j) {
        if (flow.flow[i * m + j] == n) {
          perm[i] = j;
          break;
        }
      }
      CNF_CHECK(perm[i] >= 0 && !taken[perm[i]], "internal error: the EMD plan of row ", i,
                " is not a permutation vertex; please report this with the inputs");
      taken[perm[i]] = true;
    }
  }
  return result;
}

EmdResult emd_weighted(const at::Tensor& a, const at::Tensor& b, const at::Tensor& cost) {
  CNF_CHECK(cost.defined(), "cost is an undefined tensor; pass an [n, m] cost matrix");
  CNF_CHECK(cost.dim() == 2, "cost must be a 2-D [n, m] matrix, got shape ", cost.sizes());
  CNF_CHECK(cost.size(0) > 0 && cost.size(1) > 0, "cost matrix is empty (shape ", cost.sizes(),
            "); OT needs at least one point on each side");
  check_finite(cost, "cost");
  const at::Tensor a64 = checked_weights(a, "a", cost.size(0));
  const at::Tensor b64 = checked_weights(b, "b", cost.size(1));
  const at::Tensor c = cost.to(torch::kCPU, torch::kFloat64).contiguous();
  const int64_t n = c.size(0);
  const int64_t m = c.size(1);

  const FlowResult flow = solve_flow(quantize(a64, kWeightScale), quantize(b64, kWeightScale), c);
  const double scale = static_cast<double>(kWeightScale);

  EmdResult result;
  result.cost = flow.total / scale;
  result.plan = large_empty({n, m}, torch::kFloat64);
  double* plan = result.plan.data_ptr<double>();
  for (int64_t k = 0; k < n * m; ++k) plan[k] = static_cast<double>(flow.flow[k]) / scale;
  return result;
}

}  // namespace cnf::ot
