#include "cnf/io/config.h"

#include <toml++/toml.h>

#include <fstream>
#include <sstream>

#include "cnf/core/error.h"

namespace cnf::io {

namespace {
void flatten(const toml::table& table, const std::string& path, std::vector<ConfigEntry>& out) {
  for (const auto& [k, node] : table) {
    std::string key(k.str());
    for (auto& c : key)
      if (c == '_') c = '-';
    const int line = static_cast<int>(node.source().begin.line);
    if (const auto* sub = node.as_table()) {
      flatten(*sub, path, out);
      continue;
    }
    std::string value;
    if (const auto* s = node.as_string())
      value = s->get();
    else if (const auto* i = node.as_integer())
      value = std::to_string(i->get());
    else if (const auto* d = node.as_floating_point()) {
      std::ostringstream os;
      os.precision(17);
      os << d->get();
      value = os.str();
    } else if (const auto* b = node.as_boolean())
      value = b->get() ? "true" : "false";
    else
      fail("config file '", path, "' line ", line, ": key '", key,
           "' must be a string, number or boolean (arrays, dates and inline tables are not "
           "options of cnf)");
    out.push_back({key, value, line});
  }
}
}  // namespace

std::vector<ConfigEntry> read_config(const std::string& path) {
  std::ifstream in(path);
  CNF_CHECK(in.good(), "cannot open config file '", path, "'; check the path given to --config");
  std::stringstream buf;
  buf << in.rdbuf();
  toml::table table;
  try {
    table = toml::parse(buf.str(), path);
  } catch (const toml::parse_error& e) {
    fail("config file '", path, "' line ", e.source().begin.line, ", column ",
         e.source().begin.column, ": ", e.description(), "; fix the TOML syntax there");
  }
  std::vector<ConfigEntry> out;
  flatten(table, path, out);
  return out;
}

}  // namespace cnf::io
