// python/src/flows.cpp — fields, solves, likelihoods and trained flows for Python: cnf.Field
// (a TorchScript module or a Python callable (x, t) -> v), cnf.solve, cnf.log_likelihood and
// cnf.Flow (cnf.load of a checkpoint of `cnf train`, or a TorchScript module).
//
// The GIL is released for all C++ work; a Python callable takes it back only while it runs.
// An exception it raises unwinds through the solver and reaches Python unchanged.
#include <pybind11/stl.h>
#include <torch/script.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/data/sources.h"
#include "cnf/density/density.h"
#include "cnf/interop/torchscript.h"
#include "cnf/ode/solve.h"
#include "cnf/path/affine.h"
#include "cnf/path/schedule.h"
#include "cnf/sde/samplers.h"
#include "cnf/train/trainer.h"
#include "common.h"

namespace cnf::python {
namespace {

// ------------------------------------------------------------------------ Field

// A velocity field v_t(x) given from Python: forward(x, t) with x [B, ...] and t [B].
class Field {
 public:
  static std::shared_ptr<Field> from_torchscript(const py::bytes& data, const std::string& name) {
    auto f = std::make_shared<Field>();
    f->kind_ = "torchscript";
    f->name_ = name;
    std::istringstream in(std::string(data), std::ios::binary);
    try {
      f->module_ = torch::jit::load(in);
    } catch (const std::exception& e) {
      std::string why = e.what();
      fail(name, " is not a TorchScript module: ", why.substr(0, why.find('\n')));
    }
    CNF_CHECK(f->module_.find_method("forward").has_value(), name,
              " has no forward method; a field needs forward(x, t) -> v of x's shape");
    f->module_.eval();
    return f;
  }
  static std::shared_ptr<Field> from_callable(py::function fn, const std::string& name) {
    auto f = std::make_shared<Field>();
    f->kind_ = "callable";
    f->name_ = name;
    f->fn_ = std::move(fn);
    return f;
  }
  ~Field() {
    if (fn_) {  // a py::function is released with the GIL held
      py::gil_scoped_acquire gil;
      fn_ = py::function();
    }
  }

  // v = field(x, t), checked: a tensor of x's shape and dtype. Called without the GIL.
  at::Tensor operator()(const at::Tensor& x, const at::Tensor& t) const {
    at::Tensor v;
    if (kind_ == "torchscript") {
      c10::IValue out;
      try {
        out = const_cast<torch::jit::Module&>(module_).forward({x, t});
      } catch (const c10::Error& e) {
        std::string why = e.what_without_backtrace();
        fail(name_, " failed in forward(x, t) with x ", x.sizes(), ", t ", t.sizes(), ": ",
             why.substr(0, why.find('\n')));
      } catch (const std::exception& e) {
        // TorchScript's interpreter errors: a traceback, the cause on the last line.
        std::string why = e.what();
        while (!why.empty() && why.back() == '\n') why.pop_back();
        fail(name_, " failed in forward(x, t) with x ", x.sizes(), " (", x.scalar_type(), "), t ",
             t.sizes(), ": ", why.substr(why.rfind('\n') + 1));
      }
      CNF_CHECK(out.isTensor(), name_, ": forward(x, t) returned ", out.tagKind(),
                ", not a Tensor");
      v = out.toTensor();
    } else {
      py::gil_scoped_acquire gil;
      py::object out = fn_(x, t);  // a Python exception propagates as py::error_already_set
      CNF_CHECK(THPVariable_Check(out.ptr()), name_, " returned ",
                std::string(py::str(py::type::of(out).attr("__name__"))),
                ", not a torch.Tensor; a field maps (x [B, ...], t [B]) to v of x's shape");
      v = out.cast<at::Tensor>();
    }
    CNF_CHECK(v.sizes() == x.sizes(), name_, " returned shape ", v.sizes(), " for x of shape ",
              x.sizes(), "; a field returns one value per coordinate of x");
    CNF_CHECK(v.scalar_type() == x.scalar_type(), name_, " returned ", v.scalar_type(), " for ",
              x.scalar_type(), " x; return the state's dtype");
    return v;
  }
  const std::string& kind() const { return kind_; }
  const std::string& name() const { return name_; }

 private:
  std::string kind_, name_;
  torch::jit::Module module_;
  py::function fn_;
};

// The field as a cnf network (for the likelihood code), borrowing it for one call.
class FieldNetwork : public nn::VelocityFieldImpl {
 public:
  FieldNetwork(const Field& f, std::vector<int64_t> shape) : f_(f), shape_(std::move(shape)) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) override {
    return f_(x, t);
  }
  std::vector<int64_t> sample_shape() const override { return shape_; }

 private:
  const Field& f_;
  std::vector<int64_t> shape_;
};

// ------------------------------------------------------------------------ solve

struct SolveResult {
  at::Tensor x;  // the state at t1
  int64_t nfe = 0, n_accepted = 0, n_rejected = 0;
  std::vector<double> ts;  // save_at times
  at::Tensor xs;           // [T, B, ...] states at ts (undefined without save_at)
};

ode::SolveOptions solve_options(const std::string& method, int64_t steps, double rtol, double atol,
                                int64_t max_steps) {
  ode::tableaus().get(method);  // an unknown name lists the valid ones
  CNF_CHECK(steps >= 1, "steps must be >= 1, got ", steps);
  CNF_CHECK(rtol > 0 && atol > 0, "rtol and atol must be > 0, got rtol = ", rtol,
            ", atol = ", atol);
  CNF_CHECK(max_steps >= 1, "max_steps must be >= 1, got ", max_steps);
  ode::SolveOptions o;
  o.method = method;
  o.steps = steps;
  o.adaptive.rtol = rtol;
  o.adaptive.atol = atol;
  o.adaptive.max_steps = max_steps;
  return o;
}

// The step-size controller's settings by name (AdaptiveOptions), e.g. {"beta1": 1.0}.
void set_controller(ode::AdaptiveOptions& a, const std::map<std::string, double>& settings) {
  const std::map<std::string, double*> fields = {
      {"safety", &a.safety},         {"beta1", &a.beta1},           {"beta2", &a.beta2},
      {"min_factor", &a.min_factor}, {"max_factor", &a.max_factor}, {"first_step", &a.first_step}};
  for (const auto& [key, value] : settings) {
    auto it = fields.find(key);
    if (it == fields.end()) {
      std::string valid;
      for (const auto& kv : fields) valid += (valid.empty() ? "" : ", ") + kv.first;
      fail("unknown controller setting '", key, "'; valid: ", valid);
    }
    *it->second = value;
  }
  ode::AdaptiveController check(a);  // validates the values
}

SolveResult solve(const Field& f, const at::Tensor& x, double t0, double t1,
                  const std::string& method, int64_t steps, double rtol, double atol,
                  int64_t max_steps, const std::vector<double>& save_at,
                  const std::map<std::string, double>& controller) {
  auto y0 = checked(x, "x", 2, true, /*keep_grad=*/true);
  CNF_CHECK(std::isfinite(t0) && std::isfinite(t1) && t0 != t1, "t0 and t1 must be finite and ",
            "differ, got t0 = ", t0, ", t1 = ", t1);
  auto o = solve_options(method, steps, rtol, atol, max_steps);
  set_controller(o.adaptive, controller);
  o.save_at = save_at;
  ode::Rhs rhs = [&f](double t, const ode::State& y) {
    return ode::State{f(y[0], at::full({y[0].size(0)}, t, y[0].options()))};
  };
  py::gil_scoped_release release;
  auto sol = ode::solve(rhs, {y0}, t0, t1, o);
  SolveResult r;
  r.x = sol.y[0];
  r.nfe = sol.nfe;
  r.n_accepted = sol.n_accepted;
  r.n_rejected = sol.n_rejected;
  r.ts = sol.ts;
  if (!sol.ys.empty()) {
    std::vector<at::Tensor> states;
    for (const auto& s : sol.ys) states.push_back(s[0]);
    r.xs = at::stack(states);
  }
  return r;
}

// ------------------------------------------------------------------------ likelihoods

density::LikelihoodOptions likelihood_options(const std::string& divergence, int64_t probes,
                                              bool gaussian_probes, const std::string& method,
                                              int64_t steps, double rtol, double atol,
                                              double t_start, bool analytic_ok) {
  density::LikelihoodOptions o;
  o.solve = solve_options(method, steps, rtol, atol, 100000);
  o.divergence.method = density::parse_divergence(divergence);
  // The analytic route exists for cnf's MLP and hollow networks; others use autograd.
  if (o.divergence.method == density::Divergence::analytic && !analytic_ok)
    o.divergence.method = density::Divergence::exact;
  CNF_CHECK(probes >= 1, "probes must be >= 1, got ", probes);
  o.divergence.probes = probes;
  o.divergence.gaussian = gaussian_probes;
  CNF_CHECK(t_start >= 0 && t_start < 1, "t_start must be in [0, 1), got ", t_start);
  o.t_start = t_start;
  return o;
}

std::vector<int64_t> row_shape(const at::Tensor& x) {
  return std::vector<int64_t>(x.sizes().begin() + 1, x.sizes().end());
}

// ------------------------------------------------------------------------ Flow

// A trained flow: the network, what it predicts, its schedule and prior, loaded once.
class Flow {
 public:
  Flow(train::Checkpoint c, std::string origin, bool from_checkpoint)
      : c_(std::move(c)), origin_(std::move(origin)), from_checkpoint_(from_checkpoint) {
    schedule_ = c_.spec.make_schedule();
    prior_ = data::make_source(c_.spec.prior, c_.spec.model.dim);
  }

  at::Tensor sample(const py::object& n, const py::object& noise, const std::string& sampler,
                    const std::string& method, int64_t steps, double rtol, double atol, double eta,
                    const std::string& spacing, uint64_t seed) {
    check_unconditional();
    sde::SamplerOptions so;
    so.sampler = sde::samplers().get(sampler);
    so.steps = steps;
    so.eta = eta;
    so.spacing = sde::parse_spacing(spacing);
    so.ode = solve_options(method, steps, rtol, atol, 100000);
    so.validate();
    auto gen = make_generator(seed);
    auto x_1 = prior_draws(n, noise, gen);
    py::gil_scoped_release release;
    torch::NoGradGuard no_grad;
    auto r = sde::sample(*c_.network, c_.spec.network_param(), *schedule_,
                         x_1 * sde::start_scale(*schedule_, so), so, gen);
    last_nfe_ = r.nfe;
    return r.x;
  }

  std::pair<at::Tensor, at::Tensor> sample_with_log_prob(const py::object& n,
                                                         const py::object& noise,
                                                         const std::string& divergence,
                                                         int64_t probes, const std::string& method,
                                                         int64_t steps, double rtol, double atol,
                                                         const py::object& t_start, uint64_t seed) {
    check_unconditional();
    auto o = likelihood_options(divergence, probes, false, method, steps, rtol, atol,
                                start(t_start), c_.model->has_analytic_divergence());
    auto gen = make_generator(seed);
    auto x_1 = prior_draws(n, noise, gen);
    py::gil_scoped_release release;
    auto r = density::sample_with_log_prob(*c_.model, *schedule_, *prior_, x_1, o, gen);
    last_nfe_ = r.nfe;
    return {r.x, r.log_prob};
  }

  at::Tensor log_prob(const at::Tensor& x, const std::string& divergence, int64_t probes,
                      bool gaussian_probes, const std::string& method, int64_t steps, double rtol,
                      double atol, const py::object& t_start, uint64_t seed) {
    auto pts = points(x);
    auto o = likelihood_options(divergence, probes, gaussian_probes, method, steps, rtol, atol,
                                start(t_start), c_.model->has_analytic_divergence());
    auto gen = make_generator(seed);
    py::gil_scoped_release release;
    auto r = density::log_likelihood(*c_.model, *schedule_, *prior_, pts, o, gen);
    last_nfe_ = r.nfe;
    return r.log_prob;
  }

  at::Tensor score(const at::Tensor& x, double t, const std::string& method, double rtol,
                   double atol) {
    auto pts = points(x);
    CNF_CHECK(t >= 0 && t < 1, "t must be in [0, 1), got ", t);
    auto o = likelihood_options("exact", 1, false, method, 100, rtol, atol, 0.0, false);
    py::gil_scoped_release release;
    return density::score(*c_.model, *schedule_, *prior_, pts, t, o);
  }

  // The velocity field (or the raw network) at x and t (a number or one time per row).
  at::Tensor evaluate(bool raw, const at::Tensor& x, const py::object& t) {
    auto pts = points(x);
    at::Tensor tt;
    if (py::isinstance<py::float_>(t) || py::isinstance<py::int_>(t)) {
      tt = at::full({pts.size(0)}, t.cast<double>(), pts.options());
    } else {
      tt = checked(t.cast<at::Tensor>(), "t", 1).to(pts.scalar_type());
      CNF_CHECK(tt.size(0) == pts.size(0), "t has ", tt.size(0), " entries for ", pts.size(0),
                " rows of x; give one time per row or a number");
    }
    py::gil_scoped_release release;
    torch::NoGradGuard no_grad;
    return raw ? c_.network->forward(pts, tt) : c_.model->forward(pts, tt);
  }

  void export_module(const std::string& out, const std::string& weights,
                     const std::string& format) const {
    CNF_CHECK(from_checkpoint_, "export needs a flow loaded from a checkpoint of cnf train; ",
              origin_, " is a TorchScript module already");
    interop::ExportOptions o;
    o.weights = interop::parse_weights(weights);
    o.format = interop::parse_export_format(format);
    py::gil_scoped_release release;
    interop::export_torchscript(origin_, out, o);
  }

  const train::Checkpoint& checkpoint() const { return c_; }
  const path::Schedule& schedule() const { return *schedule_; }
  const std::string& origin() const { return origin_; }
  int64_t last_nfe() const { return last_nfe_; }
  std::vector<int64_t> shape() const { return c_.network->sample_shape(); }

 private:
  double start(const py::object& t_start) const {
    return t_start.is_none() ? c_.spec.likelihood_start() : t_start.cast<double>();
  }
  void check_unconditional() const {
    CNF_CHECK(c_.spec.model.classes == 0, origin_, " is class-conditional (", c_.spec.model.classes,
              " classes); the Python module samples unconditional "
              "flows only: use `cnf sample --label` for this one");
  }
  // Rows of x as the network's samples ([B, ...shape], flat [B, dim] accepted).
  at::Tensor points(const at::Tensor& x) const {
    auto pts = checked(x, "x", 2, true);
    const auto want = shape();
    int64_t dim = 1;
    for (auto s : want) dim *= s;
    CNF_CHECK(row_shape(pts) == want || (pts.dim() == 2 && pts.size(1) == dim), "x has shape ",
              pts.sizes(), " but the flow's samples have shape ", at::IntArrayRef(want),
              " (dimension ", dim, ")");
    return pts.to(at::kFloat);
  }
  at::Tensor prior_draws(const py::object& n, const py::object& noise, at::Generator& gen) {
    CNF_CHECK(n.is_none() != noise.is_none(), "give either n (prior draws) or noise (given prior ",
              "draws x_1, unscaled), not ", n.is_none() ? "neither" : "both");
    if (!noise.is_none()) return points(noise.cast<at::Tensor>());
    const auto count = n.cast<int64_t>();
    CNF_CHECK(count >= 1, "n must be >= 1, got ", count);
    return prior_->sample(count, gen);
  }

  train::Checkpoint c_;
  path::SchedulePtr schedule_;
  data::SourcePtr prior_;
  std::string origin_;
  bool from_checkpoint_;
  std::atomic<int64_t> last_nfe_{0};
};

}  // namespace

void bind_flows(py::module_& m) {
  py::class_<Field, std::shared_ptr<Field>>(
      m, "Field",
      "A velocity field v_t(x) for cnf's solvers, in cnf's time convention (data at t = 0, "
      "noise at t = 1): a TorchScript module with forward(x, t) or a Python callable "
      "f(x, t) -> v, with x [B, ...] and t [B] (one time per row).")
      .def_static("from_torchscript", &Field::from_torchscript, py::arg("data"),
                  py::arg("name") = "TorchScript module",
                  "A field from a module's bytes (torch.jit.save to a buffer).")
      .def_static("from_callable", &Field::from_callable, py::arg("fn"),
                  py::arg("name") = "the field",
                  "A field calling fn(x, t) with the GIL held; its autograd graph is kept "
                  "(the exact divergence differentiates through it).")
      .def_property_readonly("kind", &Field::kind, "'torchscript' or 'callable'")
      .def("__call__", [](const Field& f, const at::Tensor& x, const at::Tensor& t) {
        py::gil_scoped_release release;
        return f(x, t);
      });

  py::class_<SolveResult>(m, "Solution", "The result of cnf.solve")
      .def_readonly("x", &SolveResult::x, "the state at t1")
      .def_readonly("nfe", &SolveResult::nfe, "evaluations of the field")
      .def_readonly("n_accepted", &SolveResult::n_accepted, "accepted steps")
      .def_readonly("n_rejected", &SolveResult::n_rejected, "rejected steps (adaptive methods)")
      .def_readonly("ts", &SolveResult::ts, "the save_at times")
      .def_property_readonly(
          "xs", [](const SolveResult& r) { return r.xs.defined() ? py::cast(r.xs) : py::none(); },
          "[T, B, ...] states at the save_at times (None without save_at)")
      .def("__repr__", [](const SolveResult& r) {
        return "Solution(nfe=" + std::to_string(r.nfe) +
               ", accepted=" + std::to_string(r.n_accepted) +
               ", rejected=" + std::to_string(r.n_rejected) + ")";
      });
  m.def("_solve", &solve, py::arg("field"), py::arg("x"), py::arg("t0"), py::arg("t1"),
        py::arg("method"), py::arg("steps"), py::arg("rtol"), py::arg("atol"), py::arg("max_steps"),
        py::arg("save_at"), py::arg("controller"));
  m.def(
      "methods", [] { return ode::tableaus().names(); }, "The ODE methods cnf.solve accepts.");
  m.def(
      "samplers", [] { return sde::samplers().names(); }, "The samplers Flow.sample accepts.");

  py::class_<density::LikelihoodResult>(m, "Likelihood", "The result of cnf.log_likelihood")
      .def_readonly("log_prob", &density::LikelihoodResult::log_prob,
                    "[B] log rho_0(x) (the mean over probes for Hutchinson)")
      .def_property_readonly(
          "log_prob_probes",
          [](const density::LikelihoodResult& r) {
            return r.log_prob_probes.defined() ? py::cast(r.log_prob_probes) : py::none();
          },
          "[K, B] per-probe estimates (Hutchinson), else None")
      .def_readonly("x1", &density::LikelihoodResult::x, "the other end of each trajectory")
      .def_readonly("nfe", &density::LikelihoodResult::nfe, "evaluations of the field");
  m.def(
      "_log_likelihood",
      [](const Field& f, const at::Tensor& x, const std::string& schedule, double sigma_min,
         const std::string& prior, const std::string& divergence, int64_t probes,
         bool gaussian_probes, const std::string& method, int64_t steps, double rtol, double atol,
         double t_start, uint64_t seed) {
        auto pts = checked(x, "x", 2, true);
        auto sched = path::make_schedule(schedule, sigma_min);
        auto source = data::make_source(prior, pts[0].numel());
        auto o = likelihood_options(divergence, probes, gaussian_probes, method, steps, rtol, atol,
                                    t_start, false);
        auto gen = make_generator(seed);
        FieldNetwork net(f, row_shape(pts));
        py::gil_scoped_release release;
        return density::log_likelihood(net, *sched, *source, pts, o, gen);
      },
      py::arg("field"), py::arg("x"), py::arg("schedule"), py::arg("sigma_min"), py::arg("prior"),
      py::arg("divergence"), py::arg("probes"), py::arg("gaussian_probes"), py::arg("method"),
      py::arg("steps"), py::arg("rtol"), py::arg("atol"), py::arg("t_start"), py::arg("seed"));

  py::class_<Flow>(m, "Flow",
                   "A trained flow (cnf.load / cnf.load_torchscript): the network, what it "
                   "predicts, its schedule and prior. Time runs from data at t = 0 to noise at "
                   "t = 1.")
      .def_static(
          "_load",
          [](const std::string& path) {
            py::gil_scoped_release release;
            return std::make_unique<Flow>(interop::load_flow(path), path, true);
          },
          py::arg("path"))
      .def_static(
          "_import",
          [](const std::string& file, const std::string& predicts, const std::string& schedule,
             double sigma_min, const std::string& time, int64_t dim, const std::string& fuse) {
            interop::ImportOptions o;
            o.file = file;
            o.predicts = path::parse_param(predicts);
            o.schedule = schedule;
            o.sigma_min = sigma_min;
            o.time = interop::parse_time_convention(time);
            o.dim = dim;
            o.fuse = fuse;
            py::gil_scoped_release release;
            return std::make_unique<Flow>(interop::import_torchscript(o), file, false);
          },
          py::arg("file"), py::arg("predicts"), py::arg("schedule"), py::arg("sigma_min"),
          py::arg("time"), py::arg("dim"), py::arg("fuse"))
      .def("sample", &Flow::sample, py::arg("n") = py::none(), py::arg("noise") = py::none(),
           py::arg("sampler") = "ode", py::arg("method") = "euler", py::arg("steps") = 100,
           py::arg("rtol") = 1e-5, py::arg("atol") = 1e-5, py::arg("eta") = 0.0,
           py::arg("spacing") = "auto", py::arg("seed") = 0,
           "Samples [n, ...] (or from given prior draws `noise`, unscaled), with the defaults "
           "of `cnf sample`: sampler='ode' (the velocity ODE by `method` in `steps` steps, or "
           "adaptive to rtol/atol), or a diffusion sampler (cnf.samplers()) in `steps` steps. "
           "The NFE is in last_nfe.")
      .def("sample_with_log_prob", &Flow::sample_with_log_prob, py::arg("n") = py::none(),
           py::arg("noise") = py::none(), py::arg("divergence") = "analytic", py::arg("probes") = 1,
           py::arg("method") = "dopri5", py::arg("steps") = 100, py::arg("rtol") = 1e-5,
           py::arg("atol") = 1e-5, py::arg("t_start") = py::none(), py::arg("seed") = 0,
           "(samples, log rho_0 of each) from the same trajectories (cnf sample --with-logp).")
      .def("log_prob", &Flow::log_prob, py::arg("x"), py::arg("divergence") = "analytic",
           py::arg("probes") = 1, py::arg("gaussian_probes") = false, py::arg("method") = "dopri5",
           py::arg("steps") = 100, py::arg("rtol") = 1e-5, py::arg("atol") = 1e-5,
           py::arg("t_start") = py::none(), py::arg("seed") = 0,
           "[B] log-density of the model at x, as `cnf nll` computes it: divergence "
           "'analytic' (cnf's MLP and hollow networks; others fall back to 'exact'), 'exact' "
           "or 'hutchinson' (probes); from t_start (None: where the network was trained, "
           "Flow.likelihood_start) to 1.")
      .def("score", &Flow::score, py::arg("x"), py::arg("t"), py::arg("method") = "dopri5",
           py::arg("rtol") = 1e-5, py::arg("atol") = 1e-5,
           "grad_x log rho_t(x) of the flow's marginal at time t in [0, 1), carried back from "
           "the prior along the trajectory (instantaneous change of score).")
      .def(
          "velocity",
          [](Flow& f, const at::Tensor& x, const py::object& t) { return f.evaluate(false, x, t); },
          py::arg("x"), py::arg("t"),
          "v_t(x), the flow's velocity (dx/dt, data at t = 0); t a number or [B].")
      .def(
          "network",
          [](Flow& f, const at::Tensor& x, const py::object& t) { return f.evaluate(true, x, t); },
          py::arg("x"), py::arg("t"), "The raw network output (what Flow.predicts says).")
      .def("export", &Flow::export_module, py::arg("out"), py::arg("weights") = "ema",
           py::arg("format") = "torchscript",
           "Writes the flow as a TorchScript module (as `cnf export`) that plain PyTorch runs.")
      .def_property_readonly("last_nfe", &Flow::last_nfe, "NFE of the last sample/log_prob call")
      .def_property_readonly(
          "dim", [](const Flow& f) { return f.checkpoint().spec.model.dim; },
          "dimension of one sample")
      .def_property_readonly("shape", &Flow::shape, "shape of one sample")
      .def_property_readonly(
          "schedule", [](const Flow& f) { return f.schedule().describe(); },
          "the schedule (path) it was trained on")
      .def_property_readonly(
          "predicts",
          [](const Flow& f) { return path::param_name(f.checkpoint().spec.network_param()); },
          "what the network predicts: velocity, score, data or noise")
      .def_property_readonly(
          "prior", [](const Flow& f) { return f.checkpoint().spec.prior; }, "the prior at t = 1")
      .def_property_readonly(
          "data", [](const Flow& f) { return f.checkpoint().spec.data; },
          "the data it was trained on")
      .def_property_readonly(
          "step", [](const Flow& f) { return f.checkpoint().step; }, "training steps done")
      .def_property_readonly(
          "sigma_1", [](const Flow& f) { return f.schedule().sigma_1(); },
          "sampling starts from sigma_1 * prior draws (1 except for VE)")
      .def_property_readonly(
          "likelihood_start", [](const Flow& f) { return f.checkpoint().spec.likelihood_start(); },
          "where log_prob starts by default: the smallest time the network was trained at")
      .def_property_readonly(
          "spec", [](const Flow& f) { return f.checkpoint().spec.serialize(); },
          "the flow spec text the checkpoint stores")
      .def("__repr__", [](const Flow& f) {
        const auto& s = f.checkpoint().spec;
        return "Flow('" + f.origin() + "', dim=" + std::to_string(s.model.dim) + ", schedule='" +
               f.schedule().describe() + "', predicts='" + path::param_name(s.network_param()) +
               "', step=" + std::to_string(f.checkpoint().step) + ")";
      });
}

}  // namespace cnf::python
