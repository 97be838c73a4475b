// Fuzzes the .npy reader (io/files.h): header dict, dtype, shape, payload size.
#include "cnf/io/files.h"
#include "fuzz/fuzz.h"

CNF_FUZZ_TARGET(npy) {
  // read_table adds the [N, D] and finiteness checks on top of read_npy.
  cnf::io::read_table(cnf_fuzz::write_input(data, size, "input.npy"));
}
