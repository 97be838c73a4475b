// src/train/archive.h — reading cnf checkpoints' archives (internal to the library; used by
// checkpoint.cpp to load and by trainer.cpp to resume).
#pragma once

#include <torch/serialize/input-archive.h>

#include <string>

namespace torch::nn {
class Module;
}

namespace cnf::train {

/// The archive at `path`, checked (archive_check.h) and of format cnf-checkpoint-1; errors
/// name the file and what to pass instead.
torch::serialize::InputArchive open_archive(const std::string& path);
/// The string field `key`; fails naming the file when it is missing.
std::string read_string(torch::serialize::InputArchive& ar, const std::string& key,
                        const std::string& path);
/// Loads the weights stored under `key` into `m`; fails naming the file when they are missing
/// or do not fit.
void load_module(torch::serialize::InputArchive& ar, const std::string& key, torch::nn::Module& m,
                 const std::string& path);

}  // namespace cnf::train
