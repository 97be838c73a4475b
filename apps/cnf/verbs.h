// apps/cnf/verbs.h — the table of verbs. Each file registers its verbs (subcommands and
// their flags) on the app and returns a Runner that runs the verb the command line chose.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace cnf::app {

/// Runs the parsed verb of a registration and returns its exit code, or -1 when none of
/// its verbs was chosen.
using Runner = std::function<int()>;

/// `cnf train` and `cnf demo` (apps/cnf/train_command.cpp).
Runner add_train_commands(CLI::App& app);
/// `cnf sample`, `cnf eval`, `cnf nll`, `cnf score` and `cnf entropy`
/// (apps/cnf/flow_commands.cpp).
Runner add_flow_commands(CLI::App& app);
/// `cnf reflow`, `cnf distill` and `cnf experiment reflow` (apps/cnf/rectify_command.cpp).
Runner add_rectify_commands(CLI::App& app, CLI::App* experiment);
/// `cnf ot` (apps/cnf/ot_command.cpp).
Runner add_ot_command(CLI::App& app);
/// `cnf export` (apps/cnf/interop_command.cpp).
Runner add_export_command(CLI::App& app);
/// `cnf report` (apps/cnf/report.cpp).
Runner add_report_command(CLI::App& app);
/// `cnf experiment nfe-error` and `samplers` (apps/cnf/experiments.cpp,
/// apps/cnf/diffusion_command.cpp).
Runner add_experiments(CLI::App* experiment);
Runner add_sampler_experiment(CLI::App* experiment);
/// `cnf experiment mle` (apps/cnf/mle_experiment.cpp).
Runner add_mle_experiment(CLI::App* experiment);
/// `cnf experiment couplings` (apps/cnf/couplings_experiment.cpp).
Runner add_couplings_experiment(CLI::App* experiment);
/// `cnf experiment images` (apps/cnf/images_experiment.cpp).
Runner add_images_experiment(CLI::App* experiment);
/// `cnf experiment time-weighting`, `schedules`, `parameterizations` and `bridge`
/// (apps/cnf/time_weighting_experiment.cpp).
Runner add_training_studies(CLI::App* experiment);

}  // namespace cnf::app
