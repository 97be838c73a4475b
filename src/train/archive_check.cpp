#include "archive_check.h"

#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <regex>
#include <sstream>

#include "cnf/core/error.h"
#include "cnf/io/files.h"

namespace cnf::train {

namespace {

// One line of the class-declaration subset of TorchScript that LibTorch writes for the
// modules of a serialize::OutputArchive (see the header).
bool declaration_line(const std::string& line) {
  // A type: Tensor, str, __torch__.___torch_mangle_3.Module, Tuple[float, float], ...
  static const std::string type = R"(([A-Za-z_][A-Za-z0-9_.]*)(\[[A-Za-z0-9_., \[\]]*\])?)";
  static const std::string quoted = R"("[A-Za-z0-9_./-]*")";
  static const std::regex forms[] = {
      std::regex(R"(class [A-Za-z_][A-Za-z0-9_]*\([A-Za-z_][A-Za-z0-9_.]*\):)"),
      std::regex("  __(parameters|buffers)__ = \\[(" + quoted + ", )*\\]"),
      std::regex(R"(  __annotations__ = \[\])"),
      std::regex("  __annotations__\\[" + quoted + "\\] = " + type),
      std::regex("  [A-Za-z_][A-Za-z0-9_]* : " + type),
  };
  if (line.empty()) return true;
  // libstdc++'s regex matcher recurses per character: bound the line before matching (the
  // longest line LibTorch writes for a module is a few dozen parameter names).
  if (line.size() > 1024) return false;
  for (const auto& form : forms)
    if (std::regex_match(line, form)) return true;
  return false;
}

uint32_t crc32_of(const std::string& bytes) {
  return static_cast<uint32_t>(
      ::crc32(0L, reinterpret_cast<const Bytef*>(bytes.data()), static_cast<uInt>(bytes.size())));
}

// Inflates raw deflate data (zip method 8) that should give `size` bytes; false on error.
bool inflate_raw(const char* data, size_t n, size_t size, std::string& out) {
  out.assign(size, '\0');
  z_stream zs{};
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) return false;
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data));
  zs.avail_in = static_cast<uInt>(n);
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(size);
  const int rc = inflate(&zs, Z_FINISH);
  const bool ok = rc == Z_STREAM_END && zs.total_out == size;
  inflateEnd(&zs);
  return ok;
}

}  // namespace

namespace {

// `what` names the file's kind in errors; `declarations_only` restricts the TorchScript
// sources to module declarations (cnf's checkpoints).
void check_archive(const std::string& path, const std::string& what, bool declarations_only) {
  const std::string z = io::read_text(path);
  auto bad = [&](const std::string& why) {
    fail(what, " '", path, "' is truncated or damaged (", why, "); use an intact file",
         declarations_only ? " written by cnf train" : "");
  };
  auto u16 = [&](size_t at) -> uint32_t {
    return static_cast<unsigned char>(z[at]) | static_cast<unsigned char>(z[at + 1]) << 8;
  };
  auto u32 = [&](size_t at) -> uint32_t { return u16(at) | u16(at + 2) << 16; };
  if (z.size() < 22) bad("too short for a zip archive");
  // The end-of-central-directory record: 22 bytes plus a comment of up to 65535.
  size_t eocd = std::string::npos;
  for (size_t at = z.size() - 22 + 1; at-- > 0 && z.size() - at <= 22 + 65535;) {
    if (u32(at) == 0x06054b50u) {
      eocd = at;
      break;
    }
  }
  if (eocd == std::string::npos) bad("no zip end-of-central-directory record");
  const uint32_t entries = u16(eocd + 10), cd_size = u32(eocd + 12), cd_at = u32(eocd + 16);
  if (entries == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_at == 0xFFFFFFFFu)
    bad("zip64 records; cnf reads archives below 4 GiB only");
  if (static_cast<uint64_t>(cd_at) + cd_size > eocd) bad("central directory out of range");
  size_t at = cd_at;
  std::string inflated;
  for (uint32_t e = 0; e < entries; ++e) {
    if (at + 46 > eocd || u32(at) != 0x02014b50u)
      bad("central directory entry " + std::to_string(e));
    const uint32_t method = u16(at + 10), crc = u32(at + 16);
    const uint32_t packed = u32(at + 20), size = u32(at + 24);
    const uint32_t name_len = u16(at + 28), extra_len = u16(at + 30), comment_len = u16(at + 32);
    const uint32_t local = u32(at + 42);
    if (at + 46 + name_len > eocd) bad("central directory entry " + std::to_string(e));
    const std::string name = z.substr(at + 46, name_len);
    at += 46 + static_cast<size_t>(name_len) + extra_len + comment_len;
    if (packed == 0xFFFFFFFFu || size == 0xFFFFFFFFu || local == 0xFFFFFFFFu)
      bad("entry '" + name + "' has zip64 fields; cnf reads archives below 4 GiB only");
    if (static_cast<uint64_t>(local) + 30 > z.size() || u32(local) != 0x04034b50u)
      bad("entry '" + name + "' has no local header");
    const uint64_t data_at = static_cast<uint64_t>(local) + 30 + u16(local + 26) + u16(local + 28);
    if (data_at + packed > z.size()) bad("entry '" + name + "' runs past the end of the file");
    const char* data = z.data() + data_at;
    if (method == 0) {
      if (packed != size) bad("stored entry '" + name + "' has two different sizes");
      inflated.assign(data, size);
    } else if (method == 8) {
      // LibTorch deflates only small entries (the TorchScript sources). Deflate expands at
      // most 1032:1, and nothing deflated in a checkpoint nears 16 MiB: a larger recorded
      // size is damage, refused before anything is allocated for it.
      const uint64_t most = std::min<uint64_t>(16u << 20, 1032ull * packed + 64);
      if (size > most || !inflate_raw(data, packed, size, inflated))
        bad("entry '" + name + "' does not inflate to its recorded size");
    } else {
      bad("entry '" + name + "' uses zip compression method " + std::to_string(method) +
          "; LibTorch writes only stored and deflated entries");
    }
    if (crc32_of(inflated) != crc) bad("entry '" + name + "' fails its CRC-32 check");
    const bool source = name.find("/code/") != std::string::npos && name.size() > 3 &&
                        name.compare(name.size() - 3, 3, ".py") == 0;
    if (!source || !declarations_only) continue;
    std::istringstream lines(inflated);
    std::string line;
    for (int64_t n = 1; std::getline(lines, line); ++n)
      if (!declaration_line(line))
        fail("checkpoint '", path, "' holds TorchScript code that cnf's checkpoints never hold (",
             name, ", line ", n, "); cnf loads only checkpoints written by cnf train");
  }
}

}  // namespace

void check_checkpoint_archive(const std::string& path) { check_archive(path, "checkpoint", true); }

void check_zip_integrity(const std::string& path, const std::string& what) {
  check_archive(path, what, false);
}

}  // namespace cnf::train
