/// \file
/// cnf/io/progress.h — a progress report on stderr: a redrawn bar on a terminal, plain
/// log lines (every ~10% or `min_interval` seconds) otherwise. For the command line only;
/// nothing in the library below `apps/` prints progress.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace cnf::io {

/// A progress report on stderr (see the file comment).
class Progress {
 public:
  /// `total` units of work, shown with `label`.
  Progress(int64_t total, std::string label, bool enabled = true);
  ~Progress();
  /// Marks `done` units complete, with an optional status text (e.g. "loss 0.123").
  void update(int64_t done, const std::string& status = "");
  /// Final line (newline on a terminal).
  void finish(const std::string& status = "");

 private:
  int64_t total_;
  std::string label_;
  bool enabled_, tty_, finished_ = false;
  int64_t last_reported_ = -1;
  std::chrono::steady_clock::time_point start_, last_print_;
};

}  // namespace cnf::io
