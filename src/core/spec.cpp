#include "cnf/core/spec.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "cnf/core/error.h"

namespace cnf {

namespace {
std::string keys_of(const std::vector<SpecParam>& params) {
  std::string s;
  for (const auto& p : params) s += (s.empty() ? "" : ", ") + p.key;
  return s.empty() ? std::string("none (it takes no parameters)") : s;
}
}  // namespace

SpecText split_spec(const std::string& text, const std::string& kind) {
  SpecText out;
  const auto colon = text.find(':');
  out.name = text.substr(0, colon);
  CNF_CHECK(!out.name.empty(), kind, " spec '", text, "' has no name; write name or ",
            "name:key=value,key=value");
  if (colon == std::string::npos) return out;
  const std::string rest = text.substr(colon + 1);
  size_t start = 0;
  while (start <= rest.size()) {
    const size_t end = std::min(rest.find(',', start), rest.size());
    const std::string item = rest.substr(start, end - start);
    const auto eq = item.find('=');
    CNF_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < item.size(), kind, " spec '", text,
              "': '", item, "' is not key=value");
    const std::string key = item.substr(0, eq);
    for (const auto& [k, v] : out.items)
      CNF_CHECK(k != key, kind, " spec '", text, "' sets ", key, " twice");
    out.items.emplace_back(key, item.substr(eq + 1));
    start = end + 1;
  }
  return out;
}

std::vector<double> spec_values(const SpecText& spec, const std::vector<SpecParam>& params,
                                const std::string& kind) {
  std::vector<double> values;
  for (const auto& p : params) values.push_back(p.fallback);
  for (const auto& [key, text] : spec.items) {
    size_t i = 0;
    while (i < params.size() && params[i].key != key) ++i;
    CNF_CHECK(i < params.size(), "unknown parameter '", key, "' of ", kind, " ", spec.name,
              "; valid keys: ", keys_of(params));
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    CNF_CHECK(end != text.c_str() && *end == '\0' && std::isfinite(v), kind, " ", spec.name, ": ",
              key, "=", text, " is not a finite number");
    values[i] = v;
  }
  return values;
}

std::string canonical_spec(const std::string& name, const std::vector<SpecParam>& params,
                           const std::vector<double>& values) {
  CNF_CHECK(params.size() == values.size(), "canonical_spec: ", params.size(), " parameters but ",
            values.size(), " values");
  std::string items;
  for (size_t i = 0; i < params.size(); ++i)
    if (values[i] != params[i].fallback)
      items += (items.empty() ? "" : ",") + params[i].key + "=" + shortest_number(values[i]);
  return items.empty() ? name : name + ":" + items;
}

std::string shortest_number(double v) {
  // The fewest significant digits that read back exactly; then, for ordinary magnitudes,
  // plain decimals ("20", not "2e+01").
  char buf[48];
  int digits = 1;
  for (; digits < 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  const double mag = std::fabs(v);
  if (std::string(buf).find('e') != std::string::npos && mag >= 1e-4 && mag < 1e15) {
    const int exponent = static_cast<int>(std::floor(std::log10(mag)));
    std::snprintf(buf, sizeof buf, "%.*f", std::max(0, digits - 1 - exponent), v);
  }
  return buf;
}

}  // namespace cnf
