/// \file
/// cnf/core/error.h — the one error type of cnf and the checks that throw it.
///
/// Every message says what was wrong, with the offending value, and how to fix it:
///   CNF_CHECK(rtol > 0, "rtol must be > 0, got ", rtol);
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

/// Continuous normalizing flows and flow matching on LibTorch. Time runs from data at t = 0
/// to noise N(0, I) at t = 1 (DESIGN.md §1); each part of the library has a namespace of its own.
namespace cnf {

/// The error every cnf routine throws for bad input or an impossible request.
class Error : public std::runtime_error {
 public:
  /// An error whose message is `what`.
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// Helpers of the public headers; not part of the API.
namespace detail {
/// The arguments streamed into one string (numbers with 10 significant digits).
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
#define CNF_CHECK(cond, ...)               \
  do {                                     \
    if (!(cond)) ::cnf::fail(__VA_ARGS__); \
  } while (0)
