// Replays every fuzz target's seed corpus (fuzz/corpus/<name>/) and the inputs that once
// broke a parser (tests/fuzz/<name>/, named after what they broke) in the ordinary test
// run: each must parse or fail with cnf::Error. Under `make sanitize` the same replay runs
// with ASan + UBSan, so a regression that only corrupts memory is caught too.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz/fuzz.h"

#define CNF_FUZZ_ENTRY(name) void cnf_fuzz_##name(const uint8_t* data, size_t size);
#include "cnf_fuzz_targets.inc"
#undef CNF_FUZZ_ENTRY

namespace {

namespace fs = std::filesystem;

struct Target {
  std::string name;
  cnf_fuzz::Body body;
};

std::vector<Target> targets() {
#define CNF_FUZZ_ENTRY(name) {#name, &cnf_fuzz_##name},
  return {
#include "cnf_fuzz_targets.inc"
  };
#undef CNF_FUZZ_ENTRY
}

std::vector<fs::path> inputs_in(const fs::path& dir) {
  std::vector<fs::path> files;
  if (!fs::is_directory(dir)) return files;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_regular_file()) files.push_back(entry.path());
  return files;
}

std::string bytes_of(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST(FuzzRegressions, EveryTargetHasSeeds) {
  for (const auto& t : targets())
    EXPECT_FALSE(inputs_in(fs::path(CNF_SOURCE_DIR) / "fuzz" / "corpus" / t.name).empty())
        << "fuzz target '" << t.name << "' has no seed inputs in fuzz/corpus/" << t.name;
}

TEST(FuzzRegressions, SeedsAndRegressionInputsParseOrFailCleanly) {
  int replayed = 0;
  for (const auto& t : targets()) {
    for (const char* where : {"fuzz/corpus", "tests/fuzz"}) {
      for (const auto& file : inputs_in(fs::path(CNF_SOURCE_DIR) / where / t.name)) {
        const std::string bytes = bytes_of(file);
        const std::string problem =
            cnf_fuzz::run_one(t.body, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
        EXPECT_EQ(problem, "") << t.name << " on " << file;
        ++replayed;
      }
    }
  }
  EXPECT_GT(replayed, 0);
}
