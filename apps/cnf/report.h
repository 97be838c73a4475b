// apps/cnf/report.h — seeing runs: loss.png from a training log, and `cnf report DIR...`, one
// self-contained HTML page (images inlined, no network) over every run found under folders.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace cnf::app {

/// One column of a training log over the steps where it has a value.
struct Curve {
  std::vector<double> step, value;
};

/// Every column of `<folder>/train_log.jsonl` by name (rows with a value only); empty when
/// the folder has no log. A torn last line (a killed run) is skipped.
std::map<std::string, Curve> read_train_log(const std::string& folder);

/// `<folder>/loss.png`: the loss of each logged interval and its running mean, on a log axis
/// when every value is positive. Returns false (writing nothing) when there is no log.
bool write_loss_plot(const std::string& folder);

/// Writes `out` (atomically): for each run under `folders` (a folder holding metrics.json,
/// results.json or train_log.jsonl, searched 8 levels deep) its configuration, metrics,
/// loss curve, study tables and plots; with several runs first a sortable table of their
/// metrics and their loss curves overlaid. Fails naming a folder that does not exist or holds
/// no run. Returns the number of runs.
int write_report(const std::vector<std::string>& folders, const std::string& out,
                 const std::string& title = "cnf report");

/// After a verb that wrote an output folder (`train`, `demo`, `experiment *`) succeeded: its
/// report.html there (rank 0 of a training group only). Never fails the verb: a problem is
/// printed as a warning.
void report_after(const std::string& folder);

}  // namespace cnf::app
