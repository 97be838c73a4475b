/// \file
/// cnf/io/files.h — reading and writing the files cnf uses: NPY, CSV, text.
///
/// Every writer is atomic: it writes `path.tmp-<pid>` in the same folder, flushes and
/// fsyncs it, then renames it over `path`, so a crash never leaves a half-written file.
/// Every reader names the file and the offending row/column/field in its error.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <iosfwd>
#include <string>

/// Files and output of the command line: NPY, CSV and text (written atomically), TOML
/// configs, PNG plots and image grids, progress reports.
namespace cnf::io {

/// Writes through `writer` into a temporary file beside `path`, then renames it to `path`.
/// Throws cnf::Error naming the path when the folder is missing, not writable, or the
/// disk is full; the temporary file is removed on failure.
void write_atomic(const std::string& path, const std::function<void(std::ostream&)>& writer);
/// Writes `text` to `path` atomically (see write_atomic).
void write_text_atomic(const std::string& path, const std::string& text);
/// Removes the temporary files `*.tmp-<pid>` in `folder` that write_atomic left behind in a
/// process killed mid-write (SIGKILL, power loss) — only those whose process is gone, so a
/// writer still running keeps its file. Returns how many were removed.
int remove_stale_temp_files(const std::string& folder);
/// The whole file at `path`; errors name the path (missing, a folder, unreadable).
std::string read_text(const std::string& path);

/// Reads a NumPy .npy file (format 1.0/2.0/3.0, C or Fortran order, little- or big-endian
/// float32/float64/int8..int64/uint8/bool). Returns a contiguous CPU tensor of the stored
/// dtype (float16 and complex are rejected with a clear error).
at::Tensor read_npy(const std::string& path);

/// Writes a CPU (or any-device, copied to CPU) tensor as .npy (format 1.0, C order).
void write_npy(const std::string& path, const at::Tensor& x);

/// Reads a numeric CSV table into float64 [rows, cols]. A first row that is not numeric
/// is taken as a header. Separators: ',', ';', tab or whitespace. Empty lines are
/// skipped. Errors name file, line and column (ragged rows, non-numbers, no rows).
at::Tensor read_csv(const std::string& path);

/// A table of samples from .npy or .csv (by extension), as float64 [N, D]; 1-D arrays
/// become [N, 1]. NaN/Inf entries are rejected naming row and column.
at::Tensor read_table(const std::string& path);

}  // namespace cnf::io
