/// \file
/// cnf/io/config.h — TOML configuration files for the command line.
///
/// A config file is a flat TOML table (`steps = 2000`, `data = "moons"`); keys are the
/// long option names of a `cnf` verb, with '-' or '_' alike. Sections are allowed and
/// flattened ([train] steps = 10 is steps = 10). The file is turned into `--key=value`
/// arguments that the command line placed after them overrides (a flag beats the file).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace cnf::io {

/// One `key = value` setting of a config file.
struct ConfigEntry {
  std::string key;    ///< normalized: '_' replaced by '-'
  std::string value;  ///< as the command line would spell it
  int line = 0;       ///< line in the file, for messages
};

/// Parses `path` with toml++; a syntax error names file, line and column. Arrays and
/// inline tables are rejected with their key and line.
std::vector<ConfigEntry> read_config(const std::string& path);

}  // namespace cnf::io
