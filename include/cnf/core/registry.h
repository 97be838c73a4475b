/// \file
/// cnf/core/registry.h — explicit name -> value tables.
///
/// Registries are plain lists written out in one function per part (no self-registering
/// statics: they vanish from static libraries). Looking up an unknown name fails with
/// the list of valid names.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "cnf/core/error.h"

namespace cnf {

/// A fixed, ordered table of named values of type T: how cnf turns names into types
/// (schedules, tableaux, samplers, objectives). An unknown name fails listing the valid ones.
template <class T>
class Registry {
 public:
  /// The table `entries`, in order; `kind` (e.g. "schedule") names the values in errors.
  Registry(std::string kind, std::vector<std::pair<std::string, T>> entries)
      : kind_(std::move(kind)), entries_(std::move(entries)) {}

  /// The entry named `name`; throws cnf::Error listing the valid names otherwise.
  const T& get(const std::string& name) const {
    for (const auto& e : entries_)
      if (e.first == name) return e.second;
    fail("unknown ", kind_, " '", name, "'; valid names: ", joined_names());
  }

  /// The name of `value` (its first entry); throws cnf::Error for a value not in the table.
  /// Only for value types with ==, such as the enums of options.
  const std::string& name_of(const T& value) const {
    for (const auto& e : entries_)
      if (e.second == value) return e.first;
    fail("a ", kind_, " value that has no name in its registry");
  }

  /// Whether an entry is named `name`.
  bool contains(const std::string& name) const {
    for (const auto& e : entries_)
      if (e.first == name) return true;
    return false;
  }

  /// The names, in table order.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : entries_) out.push_back(e.first);
    return out;
  }

  /// The names joined by ", ", as errors list them.
  std::string joined_names() const {
    std::string s;
    for (const auto& e : entries_) s += (s.empty() ? "" : ", ") + e.first;
    return s;
  }

  /// Every (name, value) pair, in table order.
  const std::vector<std::pair<std::string, T>>& entries() const { return entries_; }
  /// Appends `value` under `name`, which must be new (a program's or a test's own entry; see
  /// path::add_schedule, sde::add_sampler). Not synchronized: add before any lookup runs.
  void add(std::string name, T value) {
    CNF_CHECK(!name.empty() && !contains(name), "cannot add the ", kind_, " '", name,
              "': the name is empty or taken; valid names so far: ", joined_names());
    entries_.emplace_back(std::move(name), std::move(value));
  }
  /// What the values are, e.g. "schedule" or "ODE method".
  const std::string& kind() const { return kind_; }

 private:
  std::string kind_;
  std::vector<std::pair<std::string, T>> entries_;
};

}  // namespace cnf
