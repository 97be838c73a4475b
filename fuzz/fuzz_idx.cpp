// Fuzzes the IDX reader (data/images.h): gzip layer, magic, dtype, rank, dimensions and
// payload size of the Fashion-MNIST files.
#include "cnf/data/images.h"
#include "fuzz/fuzz.h"

CNF_FUZZ_TARGET(idx) { cnf::data::read_idx(cnf_fuzz::write_input(data, size, "input.idx")); }
