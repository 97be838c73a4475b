// cnf/core/registry.h — explicit name -> value tables.
//
// Registries are plain lists written out in one function per part (no self-registering
// statics: they vanish from static libraries). Looking up an unknown name fails with
// the list of valid names.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "cnf/core/error.h"

namespace cnf {

template <class T>
class Registry {
 public:
  Registry(std::string kind, std::vector<std::pair<std::string, T>> entries)
      : kind_(std::move(kind)), entries_(std::move(entries)) {}

  /// The entry named `name`; throws cnf::Error listing the valid names otherwise.
  const T& get(const std::string& name) const {
    for (const auto& e : entries_)
      if (e.first == name) return e.second;
    fail("unknown ", kind_, " '", name, "'; valid names: ", joined_names());
  }

  bool contains(const std::string& name) const {
    for (const auto& e : entries_)
      if (e.first == name) return true;
    return false;
  }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : entries_) out.push_back(e.first);
    return out;
  }

  std::string joined_names() const {
    std::string s;
    for (const auto& e : entries_) s += (s.empty() ? "" : ", ") + e.first;
    return s;
  }

  const std::vector<std::pair<std::string, T>>& entries() const { return entries_; }
  const std::string& kind() const { return kind_; }

 private:
  std::string kind_;
  std::vector<std::pair<std::string, T>> entries_;
};

}  // namespace cnf
