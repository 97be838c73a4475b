#include "cnf/coupling/coupling.h"

#include "cnf/core/registry.h"

namespace cnf::coupling {

namespace {
using Factory = CouplingPtr (*)();
const Registry<Factory>& couplings() {
  static const Registry<Factory> r(
      "coupling", {{"independent", [] { return CouplingPtr(std::make_shared<Independent>()); }}});
  return r;
}
}  // namespace

CouplingPtr make_coupling(const std::string& name) { return couplings().get(name)(); }
std::vector<std::string> coupling_names() { return couplings().names(); }

}  // namespace cnf::coupling
