// python/src/flow.cpp — cnf.Flow: a trained flow loaded once (cnf.load of a checkpoint of
// `cnf train`, or cnf.load_torchscript of a module): sampling, log-densities, scores and the
// velocity, each the command's own computation. The GIL is released while C++ works.
#include <pybind11/stl.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "cnf/core/error.h"
#include "cnf/core/runtime.h"
#include "cnf/data/sources.h"
#include "cnf/density/density.h"
#include "cnf/interop/torchscript.h"
#include "cnf/path/affine.h"
#include "cnf/path/schedule.h"
#include "cnf/sde/samplers.h"
#include "cnf/train/trainer.h"
#include "common.h"

namespace cnf::python {
namespace {

// A trained flow: the network, what it predicts, its schedule and prior, loaded once.
class Flow {
 public:
  Flow(train::Checkpoint c, std::string origin, bool from_checkpoint)
      : c_(std::move(c)), origin_(std::move(origin)), from_checkpoint_(from_checkpoint) {}

  at::Tensor sample(const py::object& n, const py::object& noise, const std::string& sampler,
                    const std::string& method, int64_t steps, double rtol, double atol, double eta,
                    const std::string& spacing, uint64_t seed, double rho, bool lower_order_final,
                    double threshold, double threshold_bound, double churn, int64_t train_steps,
                    bool per_row) {
    check_unconditional();
    sde::SamplerOptions so;
    so.sampler = sde::samplers().get(sampler);
    so.steps = steps;
    so.eta = eta;
    so.spacing = sde::parse_spacing(spacing);
    so.rho = rho;
    so.lower_order_final = lower_order_final;
    so.threshold = threshold;
    so.threshold_bound = threshold_bound;
    so.churn = churn;
    so.train_steps = train_steps;
    so.ode = ode::SolveOptions::of(method, steps, rtol, atol);
    so.per_row = per_row;
    so.validate();
    auto gen = make_generator(seed);
    auto x_1 = prior_draws(n, noise, gen);
    py::gil_scoped_release release;
    torch::NoGradGuard no_grad;
    auto r = sde::sample(*c_.network, c_.spec.network_param(), *c_.schedule,
                         x_1 * sde::start_scale(*c_.schedule, so), so, gen);
    last_nfe_ = r.nfe;
    last_nfe_per_row_ = r.nfe_per_row;
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
    auto r = density::sample_with_log_prob(*c_.model, *c_.schedule, *c_.prior, x_1, o, gen);
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
    auto r = density::log_likelihood(*c_.model, *c_.schedule, *c_.prior, pts, o, gen);
    last_nfe_ = r.nfe;
    return r.log_prob;
  }

  at::Tensor score(const at::Tensor& x, double t, const std::string& method, double rtol,
                   double atol) {
    auto pts = points(x);
    CNF_CHECK(t >= 0 && t < 1, "t must be in [0, 1), got ", t);
    auto o = likelihood_options("exact", 1, false, method, 100, rtol, atol, 0.0, false);
    py::gil_scoped_release release;
    return density::score(*c_.model, *c_.schedule, *c_.prior, pts, t, o);
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
  const path::Schedule& schedule() const { return *c_.schedule; }
  const std::string& origin() const { return origin_; }
  int64_t last_nfe() const { return last_nfe_; }
  double last_nfe_per_row() const { return last_nfe_per_row_; }
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
    return c_.prior->sample(count, gen);
  }

  train::Checkpoint c_;
  std::string origin_;
  bool from_checkpoint_;
  std::atomic<int64_t> last_nfe_{0};
  std::atomic<double> last_nfe_per_row_{0};
};

}  // namespace

void bind_flow(py::module_& m) {
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
           py::arg("spacing") = "auto", py::arg("seed") = 0, py::arg("rho") = 7.0,
           py::arg("lower_order_final") = true, py::arg("threshold") = 0.0,
           py::arg("threshold_bound") = 1.0, py::arg("churn") = 0.0, py::arg("train_steps") = 0,
           py::arg("per_row") = false,
           "Samples [n, ...] (or from given prior draws `noise`, unscaled), with the defaults "
           "of `cnf sample`: sampler='ode' (the velocity ODE by `method` in `steps` steps, or "
           "adaptive to rtol/atol), or a diffusion sampler (cnf.samplers()) in `steps` steps "
           "on the `spacing` grid (karras: exponent `rho`; leading/trailing/linspace: of "
           "`train_steps` training timesteps, 0: the schedule's own); multistep samplers lower "
           "their order "
           "at the end of short runs (`lower_order_final`); `threshold` > 0 is dynamic "
           "thresholding at that quantile with data bound `threshold_bound`; `churn` is heun's "
           "S_churn; `per_row` gives every row its own adaptive steps (an adaptive `method`, "
           "sampler='ode'). The NFE is in last_nfe, the evaluations per row in "
           "last_nfe_per_row.")
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
      .def_property_readonly("last_nfe_per_row", &Flow::last_nfe_per_row,
                             "Rows evaluated per sample in the last sample call (below last_nfe "
                             "when per_row let finished rows leave the batch)")
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
