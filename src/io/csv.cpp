#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "cnf/core/error.h"
#include "cnf/io/files.h"

// CSV/TSV/whitespace tables of numbers: read_csv.
namespace cnf::io {
namespace {

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

std::vector<std::string> split_fields(const std::string& line, char sep) {
  std::vector<std::string> fields;
  if (sep == ' ') {
    std::istringstream in(line);
    std::string field;
    while (in >> field) fields.push_back(field);
    return fields;
  }
  size_t start = 0;
  while (true) {
    size_t end = line.find(sep, start);
    std::string field = trim(line.substr(start, end == std::string::npos ? end : end - start));
    // Spreadsheets quote some fields; a quoted number is still a number.
    if (field.size() >= 2 && field.front() == '"' && field.back() == '"')
      field = trim(field.substr(1, field.size() - 2));
    fields.push_back(field);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return fields;
}

// from_chars, unlike strtod, ignores the C locale (a German locale would read "1,5").
bool parse_number(const std::string& field, double& value) {
  const char* begin = field.data();
  const char* end = begin + field.size();
  if (begin != end && *begin == '+') ++begin;
  if (begin == end) return false;
  auto [stop, ec] = std::from_chars(begin, end, value);
  return ec == std::errc() && stop == end;
}

}  // namespace

at::Tensor read_csv(const std::string& path) {
  std::string text = read_text(path);
  // Spreadsheet exports often begin with a UTF-8 byte-order mark.
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.erase(0, 3);

  char sep = 0;
  size_t cols = 0;
  int64_t first_data_line = 0;
  std::vector<double> values;
  int64_t rows = 0;
  bool seen_first_row = false;

  std::istringstream in(text);
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (trim(line).empty()) continue;
    if (sep == 0) {
      // The first non-empty line decides the separator for the whole file.
      if (line.find(',') != std::string::npos) {
        sep = ',';
      } else if (line.find(';') != std::string::npos) {
        sep = ';';
      } else if (line.find('\t') != std::string::npos) {
        sep = '\t';
      } else {
        sep = ' ';
      }
    }
    const std::vector<std::string> fields = split_fields(line, sep);
    std::vector<double> row(fields.size());
    size_t bad_column = 0;
    for (size_t c = 0; c < fields.size(); ++c) {
      if (!parse_number(fields[c], row[c])) {
        bad_column = c + 1;
        break;
      }
    }
    if (!seen_first_row) {
      seen_first_row = true;
      cols = fields.size();
      // A first row with a word in it is the header; one with only a gap ("1,,2") is a
      // broken data row, reported below.
      const bool has_word = std::any_of(fields.begin(), fields.end(), [](const std::string& f) {
        double unused;
        return !f.empty() && !parse_number(f, unused);
      });
      if (has_word) continue;
    }
    if (fields.size() != cols)
      fail("'", path, "' line ", line_no, ": ", fields.size(), " fields, but ",
           first_data_line ? "line " + std::to_string(first_data_line) : std::string("the header"),
           " has ", cols, "; every row needs the same number of columns");
    if (bad_column != 0) {
      const std::string& field = fields[bad_column - 1];
      fail("'", path, "' line ", line_no, ", column ", bad_column, ": ",
           field.empty() ? std::string("the field is empty") : "'" + field + "' is not a number",
           field.find(',') != std::string::npos ? " (decimal commas are not supported; use '.')"
                                                : "",
           "; fix or remove that entry");
    }
    if (first_data_line == 0) first_data_line = line_no;
    values.insert(values.end(), row.begin(), row.end());
    ++rows;
  }
  if (rows == 0)
    fail("'", path, "' has no data rows", seen_first_row ? " (only a header)" : " (it is empty)",
         "; a table needs at least one row of numbers");
  return torch::tensor(values, torch::kDouble).reshape({rows, static_cast<int64_t>(cols)});
}

}  // namespace cnf::io
