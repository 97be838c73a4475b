// Fuzzes the flow spec text stored in every checkpoint (FlowSpec::parse) and the network it
// describes. Inside a checkpoint the zip's CRCs shield this parser from byte mutations, so it
// gets its own target.
#include "cnf/nn/velocity.h"
#include "cnf/train/trainer.h"
#include "fuzz/fuzz.h"

CNF_FUZZ_TARGET(flowspec) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto spec = cnf::train::FlowSpec::parse(text, "fuzz input");
  spec.serialize();
  spec.make_schedule();
  spec.network_param();
}
