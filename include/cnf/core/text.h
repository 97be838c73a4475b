/// \file
/// cnf/core/text.h — numbers as text for generated source (TorchScript export).
#pragma once

#include <string>

namespace cnf {

/// A decimal literal that reads back to exactly `v` (17 significant digits) and always
/// reads as a float, not an int: 1 -> "1.0", 1e-05 -> "1.0000000000000001e-05".
std::string float_literal(double v);

}  // namespace cnf
