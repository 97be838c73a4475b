/// \file
/// cnf/core/spec.h — spec text `name` or `name:key=value,key=value` for things with numeric
/// parameters (schedules: `vp:beta_min=0.1,beta_max=20`, `ve:sigma_max=50`).
///
/// A spec names a registry entry and sets some of its parameters; the others keep their
/// defaults. The canonical text lists the name and only the parameters that differ from
/// their defaults, in the entry's order, each number in the shortest form that reads back
/// exactly: so a default object's spec is its bare name (what checkpoints have always
/// stored), and parsing the canonical text gives back an equal object.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace cnf {

/// A numeric parameter of a spec: its key and default value.
struct SpecParam {
  /// The key, e.g. "beta_min".
  std::string key;
  /// The value when the spec does not set it.
  double fallback;
};

/// A spec split into its name and `key=value` items (values still text).
struct SpecText {
  /// The registry name, before ':'.
  std::string name;
  /// The items after ':', in the order given.
  std::vector<std::pair<std::string, std::string>> items;
};

/// Splits `text` into name and items. `kind` (e.g. "schedule") names it in errors, which
/// say what is malformed (an empty name, an item without '=', an empty key or value, a key
/// given twice).
SpecText split_spec(const std::string& text, const std::string& kind);

/// The values of `params` from `spec`'s items, defaults for the keys it leaves out. Throws
/// cnf::Error for a key that is not among `params` (listing the valid keys) or a value that
/// is not a finite number, naming the spec.
std::vector<double> spec_values(const SpecText& spec, const std::vector<SpecParam>& params,
                                const std::string& kind);

/// The canonical text: `name`, then `:key=value` for each parameter whose value differs from
/// its default, joined by ','.
std::string canonical_spec(const std::string& name, const std::vector<SpecParam>& params,
                           const std::vector<double>& values);

/// The shortest decimal text that reads back to exactly `v` ("0.1", "20", "1e-05").
std::string shortest_number(double v);

}  // namespace cnf
