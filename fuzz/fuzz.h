// fuzz/fuzz.h — one fuzz target per parser, usable two ways.
//
// Each fuzz/fuzz_<name>.cpp defines its body with CNF_FUZZ_TARGET(name). Built with
// CNF_LIBFUZZER (cmake -DCNF_FUZZ=ON, clang), the file becomes a libFuzzer binary
// `fuzz_<name>`; in every other build it is compiled into cnf_tests, which replays the seed
// corpus fuzz/corpus/<name>/ and the regression inputs tests/fuzz/<name>/ through it.
//
// The contract a parser must keep: for any bytes it either returns or throws cnf::Error
// (a clear message for the user). Any other exception, a crash, a sanitizer report, a
// hang or a runaway allocation is a bug.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>

#include "cnf/core/error.h"

namespace cnf_fuzz {

using Body = void (*)(const uint8_t* data, size_t size);

/// Runs `body` on one input; returns "" when it returned or threw cnf::Error, otherwise a
/// description of the escaped exception.
inline std::string run_one(Body body, const uint8_t* data, size_t size) {
  try {
    body(data, size);
  } catch (const cnf::Error&) {
    // The expected outcome for bad input.
  } catch (const std::exception& e) {
    return std::string("an exception other than cnf::Error escaped: ") + e.what();
  } catch (...) {
    return "a non-std exception escaped";
  }
  return "";
}

/// A private scratch folder per process (parsers read paths, not buffers), removed at exit;
/// its files are overwritten input after input.
class ScratchDir {
 public:
  ScratchDir() {
    const char* shm = "/dev/shm";  // tmpfs: no disk traffic per input
    const std::filesystem::path base = std::filesystem::is_directory(shm)
                                           ? std::filesystem::path(shm)
                                           : std::filesystem::temp_directory_path();
    path_ = base / ("cnf-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline const std::filesystem::path& scratch_dir() {
  static const ScratchDir dir;
  return dir.path();
}

/// Writes the input to `scratch_dir()/name` and returns that path.
inline std::string write_input(const uint8_t* data, size_t size, const std::string& name) {
  const auto path = (scratch_dir() / name).string();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) {
    std::fprintf(stderr, "fuzz harness: cannot write %s\n", path.c_str());
    std::abort();
  }
  return path;
}

}  // namespace cnf_fuzz

#ifdef CNF_LIBFUZZER
#define CNF_FUZZ_ENTRY_POINT(name)                                               \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {      \
    const std::string problem = cnf_fuzz::run_one(&cnf_fuzz_##name, data, size); \
    if (!problem.empty()) {                                                      \
      std::fprintf(stderr, "fuzz_%s: %s\n", #name, problem.c_str());             \
      std::abort();                                                              \
    }                                                                            \
    return 0;                                                                    \
  }
#else
#define CNF_FUZZ_ENTRY_POINT(name)
#endif

/// Declares the fuzz body `void cnf_fuzz_<name>(const uint8_t* data, size_t size)`.
#define CNF_FUZZ_TARGET(name)                             \
  void cnf_fuzz_##name(const uint8_t* data, size_t size); \
  CNF_FUZZ_ENTRY_POINT(name)                              \
  void cnf_fuzz_##name(const uint8_t* data, size_t size)
