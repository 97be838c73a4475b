// cnf — the command line. Thin: parses flags and config files, builds options, calls the
// library, prints results to stdout and progress to stderr (DESIGN.md section 5). Each verb
// lives in its own file and registers itself in the table below (apps/cnf/verbs.h).
#include <c10/util/Exception.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "apps/cnf/launch.h"
#include "apps/cnf/report.h"
#include "apps/cnf/verbs.h"
#include "cnf/core/error.h"
#include "cnf/io/config.h"
#include "cnf/nn/fast_mlp.h"
#include "cnf/version.h"

using namespace cnf;

namespace {

// ------------------------------------------------------------------- config files

// Places the config file's entries (as --key=value) before the command line's own
// arguments, so that with TakeLast a flag given on the command line wins.
std::vector<std::string> expand_config(const std::vector<std::string>& args, CLI::App& app) {
  if (args.size() < 2) return args;
  std::string path;
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) path = args[i + 1];
    if (args[i].rfind("--config=", 0) == 0) path = args[i].substr(9);
  }
  if (path.empty()) return args;
  CLI::App* sub = nullptr;
  for (auto* s : app.get_subcommands({}))
    if (s->get_name() == args[1]) sub = s;
  CNF_CHECK(sub != nullptr, "--config needs a verb first, e.g. cnf train --config ", path);
  size_t verb_words = 2;  // "cnf train", or "cnf experiment nfe-error"
  if (args.size() > 2)
    for (auto* s : sub->get_subcommands({}))
      if (s->get_name() == args[2]) {
        sub = s;
        verb_words = 3;
      }
  std::vector<std::string> out(args.begin(), args.begin() + static_cast<long>(verb_words));
  for (const auto& e : io::read_config(path)) {
    // An empty string is every option's unset state; "--key=" would swallow the next word.
    if (e.key == "config" || e.value.empty()) continue;
    if (sub->get_option_no_throw("--" + e.key) == nullptr) {
      std::string valid;
      for (const auto* o : sub->get_options())
        if (!o->get_lnames().empty() && o->get_lnames()[0] != "help")
          valid += (valid.empty() ? "" : ", ") + o->get_lnames()[0];
      fail("config file '", path, "' line ", e.line, ": '", e.key, "' is not an option of cnf ",
           args[1], "; valid keys: ", valid);
    }
    out.push_back("--" + e.key + "=" + e.value);
  }
  out.insert(out.end(), args.begin() + static_cast<long>(verb_words), args.end());
  return out;
}

// The output folder of the verb that ran, when it is one that writes a run folder (train,
// demo, reflow, distill, every experiment); empty otherwise.
std::string output_folder(CLI::App& app) {
  for (auto* verb : app.get_subcommands()) {
    CLI::App* v = verb;
    const std::string name = verb->get_name();
    if (name == "experiment") {
      const auto subs = verb->get_subcommands();
      if (subs.empty()) return {};
      v = subs.front();
    } else if (name != "train" && name != "demo" && name != "reflow" && name != "distill") {
      return {};
    }
    const auto* out = v->get_option_no_throw("--out");
    if (out == nullptr) return {};
    return out->count() > 0 ? out->as<std::string>() : out->get_default_str();
  }
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "cnf: continuous normalizing flows and flow matching.\n"
      "Time runs from data (t = 0) to noise (t = 1); sampling integrates dx/dt = v_t(x) "
      "from 1 to 0."};
  app.set_version_flag("--version", "cnf " CNF_VERSION);
  app.require_subcommand(1);
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app::set_command_line(argv);

  // The table of verbs, in the order `cnf --help` lists them.
  std::vector<app::Runner> verbs = {app::add_train_commands(app), app::add_flow_commands(app)};
  auto* experiment = app.add_subcommand("experiment", "Reproducible studies comparing the methods");
  experiment->require_subcommand(1);
  for (auto run :
       {app::add_experiments(experiment), app::add_rectify_commands(app, experiment),
        app::add_mle_experiment(experiment), app::add_couplings_experiment(experiment),
        app::add_images_experiment(experiment), app::add_training_studies(experiment),
        app::add_ot_command(app), app::add_export_command(app), app::add_report_command(app)})
    verbs.push_back(run);

  try {
    std::vector<std::string> args(argv, argv + argc);
    args = expand_config(args, app);
    std::vector<const char*> cargs;
    for (const auto& s : args) cargs.push_back(s.c_str());
    try {
      app.parse(static_cast<int>(cargs.size()), cargs.data());
    } catch (const CLI::ParseError& e) {
      // Help and version exit 0; every bad flag, like every other error, exits 1.
      return app.exit(e) == 0 ? 0 : 1;
    }
    // oneDNN's start-up on another thread while the verb loads its checkpoint or data
    // (joined when this block ends, before exit destroys oneDNN's state).
    cnf::nn::fast::Prewarm prewarm;
    for (const auto& run : verbs)
      if (const int rc = run(); rc >= 0) {
        if (rc == 0) app::report_after(output_folder(app));
        return rc;
      }
  } catch (const Error& e) {
    std::fprintf(stderr, "cnf: error: %s\n", e.what());
    return 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "cnf: error inside LibTorch: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cnf: error: %s\n", e.what());
    return 1;
  }
  return 1;
}
