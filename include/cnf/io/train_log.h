/// \file
/// cnf/io/train_log.h — the record of a training run over time: `train_log.csv` and its JSON
/// Lines twin `train_log.jsonl`, one row every N steps.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace cnf::io {

/// Appends rows of named numbers to `<folder>/train_log.csv` and `<folder>/train_log.jsonl`.
/// Every row has a `step`; the CSV's columns are those of the first row written (or the
/// header of the log being continued), a value a row lacks is left empty (CSV) or left out
/// (JSON), and a name the header lacks extends it (the earlier rows get an empty cell). Each row is
/// flushed when written, so a killed run loses at most the row it was writing.
///
/// A resumed run continues the same log: opening it with `resume_step` = the checkpoint's
/// step keeps the rows up to that step and drops those after it (written by the killed run
/// after its last checkpoint, and about to be written again), along with a torn last line,
/// so the log has each step once.
///
/// Example:
/// \code
///   cnf::io::TrainLog log("runs/a", /*resume_step=*/-1);
///   log.append({{"step", 100}, {"loss", 0.93}, {"lr", 1e-3}});
/// \endcode
class TrainLog {
 public:
  /// Opens the log in `folder` (which must exist). `resume_step` < 0 starts a new log
  /// (replacing an old one); >= 0 continues the existing one after that step (a new log
  /// when there is none).
  TrainLog(const std::string& folder, int64_t resume_step);
  ~TrainLog();
  TrainLog(const TrainLog&) = delete;
  TrainLog& operator=(const TrainLog&) = delete;

  /// Writes one row; `row` must contain "step". Numbers that are not finite are written as
  /// empty (CSV) and null (JSON).
  void append(const std::map<std::string, double>& row);

  /// The CSV file's path.
  const std::string& csv_path() const { return csv_path_; }
  /// The JSON Lines file's path.
  const std::string& jsonl_path() const { return jsonl_path_; }
  /// The CSV's columns ("step" first), empty before the first row of a new log.
  const std::vector<std::string>& columns() const { return columns_; }

 private:
  std::string csv_path_, jsonl_path_;
  std::vector<std::string> columns_;
  std::FILE* csv_ = nullptr;
  std::FILE* jsonl_ = nullptr;
};

}  // namespace cnf::io
