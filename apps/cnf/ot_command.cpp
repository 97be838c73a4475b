// cnf ot — optimal transport between two point sets: exact (network simplex, or the
// assignment solver for equal uniform sets), entropic (log-domain Sinkhorn), or neural
// estimates (ICNN map for W2, WGAN-GP critic for W1).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>

#include "apps/cnf/common.h"
#include "cnf/ot/emd.h"
#include "cnf/ot/neural.h"
#include "cnf/ot/sinkhorn.h"

namespace cnf::app {

namespace {

struct OtArgs {
  Common common;
  std::string a, b, wa, wb;
  std::string method = "emd";
  std::string cost = "sqeuclidean";
  double eps = 0.05;
  double tol = 1e-6;
  int64_t max_iter = 10000;
  bool log_domain = false;
  int64_t steps = 0;
  std::string plan, assignment, map;
};

bool ends_with_npy(const std::string& p) {
  return p.size() > 4 && p.substr(p.size() - 4) == ".npy";
}

// The neural estimates: an ICNN map for W2 (--method icnn), a Lipschitz critic for W1
// (--method critic).
int run_neural_ot(const OtArgs& o, const torch::Tensor& a, const torch::Tensor& b, json& j,
                  const std::function<double()>& seconds) {
  if (o.method == "icnn") {
    CNF_CHECK(o.cost == "sqeuclidean", "--method icnn estimates W2 (sqeuclidean cost), got --cost ",
              o.cost);
    ot::NeuralW2Options no;
    no.seed = o.common.seed;
    if (o.steps > 0) no.steps = o.steps;
    auto r = ot::neural_w2(a, b, no);
    j["w2"] = r.w2;
    j["map_cost"] = r.map_cost;
    j["seconds"] = seconds();
    std::printf("W2 (ICNN dual estimate) = %.6g   cost of the learned map = %.6g   (%.2f s)\n",
                r.w2, r.map_cost, seconds());
    if (!o.map.empty()) {
      io::write_npy(o.map, r.map(a).to(torch::kCPU));
      std::printf("wrote the map of each point of --a to %s\n", o.map.c_str());
    }
  } else {
    CNF_CHECK(o.cost == "euclidean", "--method critic estimates W1: pass --cost euclidean");
    ot::CriticW1Options co;
    co.seed = o.common.seed;
    if (o.steps > 0) co.steps = o.steps;
    auto r = ot::critic_w1(a, b, co);
    j["w1"] = r.w1;
    j["critic_gap"] = r.gap;
    j["critic_slope"] = r.slope;
    j["seconds"] = seconds();
    std::printf("W1 (critic estimate) = %.6g   raw gap %.6g, mean slope %.4g   (%.2f s)\n", r.w1,
                r.gap, r.slope, seconds());
  }
  write_json(o.common.json, j);
  return 0;
}

// The exact or entropic plan's files: --plan and --assignment.
void write_plan_files(const OtArgs& o, const ot::Solution& s, int64_t n_a, int64_t n_b) {
  if (!o.plan.empty()) {
    io::write_npy(o.plan, s.plan.to(torch::kCPU));
    std::printf("wrote the plan [%lld, %lld] to %s\n", static_cast<long long>(n_a),
                static_cast<long long>(n_b), o.plan.c_str());
  }
  if (!o.assignment.empty()) {
    io::write_npy(o.assignment, s.assignment);
    std::printf("wrote the assignment (row i of --a goes to row assignment[i] of --b) to %s\n",
                o.assignment.c_str());
  }
}

int run_ot(const OtArgs& o) {
  auto device = setup(o.common);
  for (const auto* p : {&o.plan, &o.assignment, &o.map})
    CNF_CHECK(p->empty() || ends_with_npy(*p), "output files must end in .npy, got '", *p, "'");
  const torch::Tensor a = io::read_table(o.a).to(device);
  const torch::Tensor b = io::read_table(o.b).to(device);
  CNF_CHECK(a.size(1) == b.size(1), "points in '", o.a, "' have ", a.size(1),
            " columns but those in '", o.b, "' have ", b.size(1),
            "; both sets must live in the same space");
  const torch::Tensor wa = o.wa.empty() ? torch::Tensor() : io::read_table(o.wa).reshape({-1});
  const torch::Tensor wb = o.wb.empty() ? torch::Tensor() : io::read_table(o.wb).reshape({-1});
  json j = {{"method", o.method}, {"cost_name", o.cost}, {"n_a", a.size(0)}, {"n_b", b.size(0)}};
  auto t0 = std::chrono::steady_clock::now();
  const std::function<double()> seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  if (o.method == "icnn" || o.method == "critic") {
    CNF_CHECK(o.plan.empty() && o.assignment.empty() && !wa.defined() && !wb.defined(),
              "--plan, --assignment, --wa and --wb apply to emd and sinkhorn, not to ", o.method);
    return run_neural_ot(o, a, b, j, seconds);
  }

  CNF_CHECK(o.map.empty(), "--map applies to --method icnn only");
  ot::SolveOptions so;
  so.method = ot::parse_method(o.method);
  so.cost = ot::parse_cost(o.cost);
  so.sinkhorn.epsilon = o.eps;
  so.sinkhorn.tol = o.tol;
  so.sinkhorn.max_iter = o.max_iter;
  so.sinkhorn.log_domain = o.log_domain;
  so.sinkhorn.validate();
  if (!o.assignment.empty())
    CNF_CHECK(
        so.method == ot::Method::emd && a.size(0) == b.size(0) && !wa.defined() && !wb.defined(),
        "--assignment needs --method emd and two sets of equal size with uniform weights, "
        "got ",
        o.method, " with ", a.size(0), " and ", b.size(0), " points");
  const ot::Solution s = ot::solve(a, b, so, wa, wb);
  const double secs = seconds();
  j["cost"] = s.cost;
  j["seconds"] = secs;
  if (so.method == ot::Method::sinkhorn) {
    j["epsilon"] = o.eps;
    j["iterations"] = s.iterations;
    j["marginal_error"] = s.marginal_error;
    j["converged"] = s.converged;
  }
  std::printf("OT cost (%s, %s) = %.10g   (%lld x %lld points, %.3f s)\n", o.method.c_str(),
              o.cost.c_str(), s.cost, static_cast<long long>(a.size(0)),
              static_cast<long long>(b.size(0)), secs);
  if (!s.report.empty()) std::fprintf(stderr, "%s\n", s.report.c_str());
  write_plan_files(o, s, a.size(0), b.size(0));
  write_json(o.common.json, j);
  // A plan that misses its marginals is no answer: fail after reporting it.
  CNF_CHECK(s.converged, s.report);
  return 0;
}

}  // namespace

std::function<int()> add_ot_command(CLI::App& app) {
  auto args = std::make_shared<OtArgs>();
  auto* sub = app.add_subcommand(
      "ot",
      "Optimal transport between two point sets: prints the cost (W2^2 for sqeuclidean, "
      "W1 for euclidean); saves the plan or assignment");
  add_common(sub, args->common);
  sub->add_option("--a", args->a, "Source points (.npy or .csv, [n, d])")->required();
  sub->add_option("--b", args->b, "Target points (.npy or .csv, [m, d])")->required();
  sub->add_option("--wa", args->wa, "Weights of --a (.npy/.csv, n values summing to 1)");
  sub->add_option("--wb", args->wb, "Weights of --b (.npy/.csv, m values summing to 1)");
  sub->add_option("--method", args->method,
                  "emd (exact), sinkhorn (entropic, log domain), icnn (neural W2 and map), "
                  "critic (neural W1)")
      ->capture_default_str()
      ->check(one_of({"emd", "sinkhorn", "icnn", "critic"}, "OT method"));
  sub->add_option("--cost", args->cost, "Ground cost: sqeuclidean or euclidean")
      ->capture_default_str()
      ->check(parsed_by([](const std::string& v) { ot::parse_cost(v); }));
  sub->add_option("--eps", args->eps, "Sinkhorn epsilon (cost units)")->capture_default_str();
  sub->add_option("--tol", args->tol, "Sinkhorn tolerance on the L1 marginal error")
      ->capture_default_str();
  sub->add_option("--max-iter", args->max_iter, "Sinkhorn iterations before giving up")
      ->capture_default_str();
  sub->add_flag("--log-domain", args->log_domain,
                "Sinkhorn: log-sum-exp half-steps throughout instead of the stabilized kernel "
                "(same iterates, ~10x slower)");
  sub->add_option("--steps", args->steps, "Training steps of icnn/critic (0: their default)")
      ->capture_default_str();
  sub->add_option("--plan", args->plan, "Write the plan [n, m] to this .npy file");
  sub->add_option("--assignment", args->assignment,
                  "Write the optimal permutation [n] (emd, equal sizes) to this .npy file");
  sub->add_option("--map", args->map, "Write the ICNN map of each point of --a to this .npy file");
  return [sub, args] { return sub->parsed() ? run_ot(*args) : -1; };
}

}  // namespace cnf::app
