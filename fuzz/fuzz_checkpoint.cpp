// Fuzzes checkpoint loading (train/trainer.h, load_checkpoint): LibTorch's zip archive, our
// fields in it, the flow spec text and the weights' shapes. Seeds are small real checkpoints.
#include "cnf/train/trainer.h"
#include "fuzz/fuzz.h"

CNF_FUZZ_TARGET(checkpoint) {
  cnf::train::load_checkpoint(cnf_fuzz::write_input(data, size, "input.pt"));
}
