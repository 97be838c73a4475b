// Fuzzes the CSV reader (io/files.h): separators, header row, quoting, ragged rows, numbers.
#include "cnf/io/files.h"
#include "fuzz/fuzz.h"

CNF_FUZZ_TARGET(csv) { cnf::io::read_table(cnf_fuzz::write_input(data, size, "input.csv")); }
