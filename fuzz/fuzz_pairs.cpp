// Fuzzes the rectify pairs manifest (pairs.json) as load_pairs reads it.
#include "cnf/rectify/rectify.h"
#include "fuzz/fuzz.h"

CNF_FUZZ_TARGET(pairs) {
  const std::string file = cnf_fuzz::write_input(data, size, "pairs.json");
  cnf::rectify::load_pairs(cnf_fuzz::scratch_dir().string());
}
