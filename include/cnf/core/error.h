// cnf/core/error.h — the one error type of cnf and the checks that throw it.
//
// Every message says what was wrong, with the offending value, and how to fix it:
//   CNF_CHECK(rtol > 0, "rtol must be > 0, got ", rtol);
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace cnf {

/// The error every cnf routine throws for bad input or an impossible request.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  os.precision(10);
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

/// Throws cnf::Error with the concatenation of `args`.
template <class... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(detail::concat(std::forward<Args>(args)...));
}

}  // namespace cnf

/// Throws cnf::Error built from the remaining arguments when `cond` is false.
#define CNF_CHECK(cond, ...)            \
  do {                                  \
    if (!(cond)) ::cnf::fail(__VA_ARGS__); \
  } while (0)
