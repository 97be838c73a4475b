#include "cnf/io/train_log.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "cnf/core/error.h"
#include "cnf/io/files.h"

namespace cnf::io {
namespace {

// Shortest text that reads back as v ("0.5", "1e-05", "2711.49..."); whole numbers (steps,
// NFE) as integers.
std::string number_text(double v) {
  char buf[32];
  if (v == std::floor(v) && std::abs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v));
    return buf;
  }
  for (int digits : {6, 10, 17}) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, v);
    if (digits == 17 || std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

std::vector<std::string> split_commas(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream in(line);
  std::string field;
  while (std::getline(in, field, ',')) out.push_back(field);
  return out;
}

// The complete lines of `text` (a torn last line without '\n' is dropped).
std::vector<std::string> complete_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1)
    lines.push_back(text.substr(start, end - start));
  return lines;
}

// The step a row starts with: the CSV's first field, or the JSON line's "step" value; -1 when
// the line has none (a torn or foreign line, dropped).
int64_t csv_step(const std::string& line) {
  char* end = nullptr;
  const long long s = std::strtoll(line.c_str(), &end, 10);
  return end != line.c_str() && (*end == ',' || *end == '\0') ? s : -1;
}
int64_t json_step(const std::string& line) {
  const std::string key = "{\"step\":";
  if (line.compare(0, key.size(), key) != 0 || line.back() != '}') return -1;
  return csv_step(line.substr(key.size()));
}

std::FILE* open_append(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "ab");
  if (!f) fail("cannot write the training log '", path, "': ", std::strerror(errno));
  return f;
}

void write_line(std::FILE* f, const std::string& line, const std::string& path) {
  if (std::fputs(line.c_str(), f) < 0 || std::fputc('\n', f) == EOF || std::fflush(f) != 0)
    fail("cannot write the training log '", path, "': ", std::strerror(errno));
}

}  // namespace

TrainLog::TrainLog(const std::string& folder, int64_t resume_step)
    : csv_path_((std::filesystem::path(folder) / "train_log.csv").string()),
      jsonl_path_((std::filesystem::path(folder) / "train_log.jsonl").string()) {
  std::string csv_kept, jsonl_kept;
  std::error_code ec;
  if (resume_step >= 0 && std::filesystem::exists(csv_path_, ec)) {
    // Keep the header and the rows up to the resumed step, each step once.
    const auto lines = complete_lines(read_text(csv_path_));
    if (!lines.empty() && split_commas(lines[0]).size() >= 1 &&
        split_commas(lines[0])[0] == "step") {
      columns_ = split_commas(lines[0]);
      csv_kept = lines[0] + "\n";
      int64_t last = -1;
      for (size_t i = 1; i < lines.size(); ++i) {
        const int64_t s = csv_step(lines[i]);
        if (s > last && s <= resume_step) {
          csv_kept += lines[i] + "\n";
          last = s;
        }
      }
    }
    if (std::filesystem::exists(jsonl_path_, ec)) {
      int64_t last = -1;
      for (const auto& line : complete_lines(read_text(jsonl_path_))) {
        const int64_t s = json_step(line);
        if (s > last && s <= resume_step) {
          jsonl_kept += line + "\n";
          last = s;
        }
      }
    }
  }
  // Rewritten atomically, then appended to: a crash here leaves the old log or the kept one.
  write_text_atomic(csv_path_, csv_kept);
  write_text_atomic(jsonl_path_, jsonl_kept);
  csv_ = open_append(csv_path_);
  jsonl_ = open_append(jsonl_path_);
}

TrainLog::~TrainLog() {
  if (csv_) std::fclose(csv_);
  if (jsonl_) std::fclose(jsonl_);
}

void TrainLog::append(const std::map<std::string, double>& row) {
  CNF_CHECK(row.count("step") == 1, "a training log row needs a step");
  if (columns_.empty()) {
    columns_.push_back("step");
    for (const auto& [name, value] : row)
      if (name != "step") columns_.push_back(name);
    std::string header;
    for (const auto& c : columns_) header += (header.empty() ? "" : ",") + c;
    write_line(csv_, header, csv_path_);
  }
  // A name the header lacks (a resumed run that added --eval-every, say) extends the header;
  // the rows already written get empty cells for it. Rewritten atomically, then appended to.
  std::vector<std::string> added;
  for (const auto& [name, value] : row)
    if (std::find(columns_.begin(), columns_.end(), name) == columns_.end()) added.push_back(name);
  if (!added.empty()) {
    std::fclose(csv_);
    csv_ = nullptr;
    const auto lines = complete_lines(read_text(csv_path_));
    columns_.insert(columns_.end(), added.begin(), added.end());
    std::string text;
    for (const auto& c : columns_) text += (text.empty() ? "" : ",") + c;
    text += "\n";
    for (size_t i = 1; i < lines.size(); ++i)
      text += lines[i] + std::string(added.size(), ',') + "\n";
    write_text_atomic(csv_path_, text);
    csv_ = open_append(csv_path_);
  }
  std::string csv;
  for (size_t i = 0; i < columns_.size(); ++i) {
    if (i > 0) csv += ",";
    auto it = row.find(columns_[i]);
    if (it != row.end() && std::isfinite(it->second)) csv += number_text(it->second);
  }
  write_line(csv_, csv, csv_path_);
  // JSON Lines: "step" first (json_step reads it back), then the other names in order.
  std::string json = "{\"step\":" + number_text(row.at("step"));
  for (const auto& [name, value] : row) {
    if (name == "step") continue;
    json += ",\"" + name + "\":" + (std::isfinite(value) ? number_text(value) : "null");
  }
  write_line(jsonl_, json + "}", jsonl_path_);
}

}  // namespace cnf::io
