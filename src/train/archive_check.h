// src/train/archive_check.h — checks a checkpoint's zip archive before LibTorch parses it
// (internal to the library).
#pragma once

#include <string>

namespace cnf::train {

/// Throws cnf::Error naming `path` and what is wrong unless the zip archive at `path` is
/// intact and holds only what cnf's checkpoints hold. LibTorch 1.13 checks no CRC-32 of the
/// entries it reads, and its TorchScript importer crashes (SEGV) on some damaged or crafted
/// archives (found by fuzz/fuzz_checkpoint.cpp; inputs in tests/fuzz/checkpoint/). So:
///  - every entry is stored or deflated, its data lies inside the file, and its CRC-32 (of
///    the inflated bytes for deflated entries) matches; no zip64 records (cnf writes none);
///  - the TorchScript sources in `code/` may only declare module classes with typed
///    attributes (the form LibTorch writes for a serialize::OutputArchive): a class line,
///    `name : Type`, `__parameters__` / `__buffers__` lists and `__annotations__` entries.
///    Methods, constants and any other statement are refused, so a crafted checkpoint cannot
///    reach the parts of the importer that crashed, nor run code.
void check_checkpoint_archive(const std::string& path);

/// The first of those checks alone (entries intact), for any zip archive LibTorch is about
/// to read; `what` names the file's kind in the error ("TorchScript module").
void check_zip_integrity(const std::string& path, const std::string& what);

}  // namespace cnf::train
