// Fuzzes the TOML config reader (io/config.h) as `cnf --config FILE` uses it.
#include "cnf/io/config.h"
#include "fuzz/fuzz.h"

CNF_FUZZ_TARGET(config) { cnf::io::read_config(cnf_fuzz::write_input(data, size, "input.toml")); }
